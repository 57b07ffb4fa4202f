//! `cairn completions` and `cairn man`: shell completions and man pages generated from the
//! same clap definitions as `--help`, so neither can drift from the real flags.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs, ManArgs};
use crate::exit;

/// Prints the completion script for a shell on stdout, e.g.
/// `cairn completions bash > /usr/share/bash-completion/completions/cairn`.
pub fn completions(args: &CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = crate::output::stdout();
    clap_complete::aot::generate(args.shell, &mut cmd, "cairn", &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(exit::OK)
}

/// Writes `cairn.1` and a page per subcommand (`cairn-snapshot.1`, `cairn-repair-index.1`, ...)
/// into the directory. clap_mangen builds the command itself: building it first would add
/// pages for `help`.
pub fn man(args: &ManArgs) -> Result<u8> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.out)
        .with_context(|| format!("cannot write man pages into {}", args.out.display()))?;
    Ok(exit::OK)
}
