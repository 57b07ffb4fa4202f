//! `cairn init`

use anyhow::{Context, Result};
use cairn_store::Repo;
use serde::Serialize;

use crate::args::{Cli, InitArgs};
use crate::exit;
use crate::lower;
use crate::output::{self, outln, Quiet};

#[derive(Serialize)]
struct Initialised {
    repository: String,
    repo_id: String,
    chunker: cairn_store::ChunkerParams,
    compression_level: i32,
    encrypted: bool,
}

pub fn run(cli: &Cli, args: &InitArgs) -> Result<u8> {
    let (location, _) = super::repo_location(cli)?;
    let mut opts = lower::init_options(args)?;
    if args.encrypt {
        opts.encrypt = Some(crate::password::for_init(cli)?);
    }
    let repo = Repo::init(&location, &opts).with_context(|| format!("cannot create repository {location}"))?;
    super::note_requests(&repo);
    let report = Initialised {
        repository: location.to_string(),
        repo_id: repo.config().repo_id.clone(),
        chunker: repo.config().chunker,
        compression_level: repo.config().compression_level,
        encrypted: repo.is_encrypted(),
    };
    output::report(cli, &report, Quiet::Silences, |r| {
        outln!(
            "created {}cairn repository {} at {}",
            if r.encrypted { "encrypted " } else { "" },
            &r.repo_id[..8],
            r.repository
        )
    })?;
    Ok(exit::OK)
}
