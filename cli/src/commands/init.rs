//! `cairn init`

use anyhow::{Context, Result};
use cairn_store::{InitOptions, Repo};
use serde::Serialize;

use crate::args::{Cli, InitArgs};
use crate::exit;
use crate::output::{self, outln};

#[derive(Serialize)]
struct Initialised {
    repository: String,
    repo_id: String,
    chunker: cairn_store::ChunkerParams,
    compression_level: i32,
}

pub fn run(cli: &Cli, args: &InitArgs) -> Result<u8> {
    let (path, _) = super::repo_path(cli)?;
    let mut opts = InitOptions::default();
    opts.compression_level = args.compression;
    if !args.chunk_size.is_power_of_two() || !(1024..=4 << 20).contains(&args.chunk_size) {
        anyhow::bail!("--chunk-size must be a power of two from 1024 to 4194304, not {}", args.chunk_size);
    }
    if !(64 << 10..=1 << 30).contains(&args.pack_size) {
        anyhow::bail!("--pack-size must be between 64K and 1G");
    }
    opts.pack_size = args.pack_size as u32;
    opts.group_readable = args.group_readable;
    opts.chunker = cairn_store::ChunkerParams {
        min_size: args.chunk_size / 4,
        avg_size: args.chunk_size,
        max_size: args.chunk_size * 8,
    };
    let repo = Repo::init(&cairn_store::Location::local(&path), &opts)
        .with_context(|| format!("cannot create repository {}", path.display()))?;
    let report = Initialised {
        repository: path.display().to_string(),
        repo_id: repo.config().repo_id.clone(),
        chunker: repo.config().chunker,
        compression_level: repo.config().compression_level,
    };
    if cli.json {
        output::json(&report)?;
    } else if !cli.quiet {
        outln!("created cairn repository {} at {}", &report.repo_id[..8], report.repository)?;
    }
    Ok(exit::OK)
}
