//! `cairn key list | add | remove | passwd`: the key files of an encrypted repository.

use anyhow::Result;
use cairn_store::{KdfParams, KeyInfo};
use serde::Serialize;

use crate::args::{Cli, KeyCommand, NewKeyArgs};
use crate::exit;
use crate::output::{self, outln, Quiet};
use crate::password;

#[derive(Serialize)]
struct Changed<'a> {
    action: &'a str,
    key: KeyInfo,
}

fn kdf(args: &NewKeyArgs) -> KdfParams {
    KdfParams::new(args.kdf_memory, args.kdf_time)
}

fn describe(k: &KeyInfo) -> String {
    format!(
        "{} {}{} made {} by {}@{} (argon2id {} MiB, {} passes)",
        &k.name[..12],
        if k.put_only { "put-only" } else { "full" },
        if k.current { ", in use," } else { "" },
        jiff::Timestamp::from_second(k.created).map_or_else(|_| k.created.to_string(), |t| t.to_string()),
        k.user,
        k.host,
        k.memory_kib / 1024,
        k.iterations
    )
}

pub fn run(cli: &Cli, command: &KeyCommand) -> Result<u8> {
    let mut repo = super::open(cli)?;
    match command {
        KeyCommand::List => {
            let keys = repo.keys()?;
            output::report(cli, &keys, Quiet::Silences, |keys| {
                for k in keys {
                    outln!("{}", describe(k))?;
                }
                Ok::<(), std::io::Error>(())
            })?;
        }
        KeyCommand::Add(a) => {
            let pass = password::new_from(a.new.new_password_file.as_deref())?;
            let key = repo.add_key(&pass, a.put_only, kdf(&a.new))?;
            output::report(cli, &Changed { action: "added", key }, Quiet::Silences, |c| {
                outln!("added key {}", describe(&c.key))
            })?;
        }
        KeyCommand::Remove(a) => {
            let key = repo.remove_key(&a.key)?;
            output::report(cli, &Changed { action: "removed", key }, Quiet::Silences, |c| {
                outln!("removed key {}", describe(&c.key))
            })?;
        }
        KeyCommand::Passwd(a) => {
            let pass = password::new_from(a.new.new_password_file.as_deref())?;
            let explicit = a.new.kdf_memory != crate::choices::default_kdf_memory()
                || a.new.kdf_time != crate::choices::default_kdf_time();
            let key = repo.change_passphrase(&pass, explicit.then(|| kdf(&a.new)))?;
            output::report(cli, &Changed { action: "changed", key }, Quiet::Silences, |c| {
                outln!("passphrase changed: key {}", describe(&c.key))
            })?;
        }
    }
    Ok(exit::OK)
}
