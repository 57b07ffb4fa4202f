//! The keys of an encrypted repository, as the handle uses them (docs/ENCRYPTION.md): unlocking
//! at open with a passphrase the caller supplies on demand, and `cairn key list | add | remove
//! | passwd`.

use std::sync::Arc;

use crate::backend::{FileKind, Storage};
use crate::crypto::keyfile::{KdfParams, KeyFile, KeyInfo};
use crate::crypto::{MasterKeys, Passphrase, SealedFrames};
use crate::error::{Error, Result};
use crate::repo::{OpenOptions, Repo};

/// Where a passphrase comes from, asked only when the repository turns out to be encrypted
/// (a file, a command, a prompt: the CLI's to decide). Its error says why there is none.
#[derive(Clone)]
pub struct PassphraseSource(Arc<dyn Fn() -> std::result::Result<Passphrase, String> + Send + Sync>);

impl PassphraseSource {
    /// A source that calls `f` each time a passphrase is needed.
    pub fn new(f: impl Fn() -> std::result::Result<Passphrase, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn get(&self) -> Result<Passphrase> {
        (self.0)().map_err(|reason| Error::KeyNeeded { reason })
    }
}

impl std::fmt::Debug for PassphraseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassphraseSource(..)")
    }
}

/// The keys an open repository holds: the key set, and which key file gave it.
#[derive(Clone)]
pub(crate) struct Unlocked {
    pub(crate) keys: MasterKeys,
    pub(crate) key_name: String,
}

/// Key files by name, and what is wrong with the damaged ones.
type KeyFiles = (Vec<(String, KeyFile)>, Vec<String>);

/// The key files of the repository, decoded, newest first; damaged ones are named apart.
fn key_files(storage: &Storage) -> Result<KeyFiles> {
    let mut files = Vec::new();
    let mut damaged = Vec::new();
    for info in storage.backend.list(FileKind::Key)? {
        match storage.backend.get(FileKind::Key, &info.name).and_then(|b| KeyFile::decode(&info.name, &b)) {
            Ok(f) => files.push((info.name, f)),
            Err(e) if e.is_not_found() => {}
            Err(e) => damaged.push(e.to_string()),
        }
    }
    files.sort_by_key(|(name, f)| (std::cmp::Reverse(f.created()), name.clone()));
    Ok((files, damaged))
}

/// Unlocks an encrypted repository before anything else is done with it: no lock, session or
/// index is touched until a key file opens. `None` for an unencrypted repository; refused
/// when the caller brought a passphrase to a repository that is not encrypted (its config
/// may have been replaced to make an unattended job write in clear).
pub(crate) fn unlock(storage: &Storage, opts: &OpenOptions) -> Result<Option<Unlocked>> {
    let (config, _) = crate::repo::load_config(&storage.location, storage.backend.as_ref(), false)?;
    if config.encryption.is_none() {
        if opts.expect_encrypted {
            return Err(Error::KeyNeeded {
                reason: format!(
                    "a passphrase was given, but the repository {} is not encrypted: refusing to use it \
                     (if it should be encrypted, its config was replaced)",
                    storage.location
                ),
            });
        }
        return Ok(None);
    }
    let (files, damaged) = key_files(storage)?;
    for d in &damaged {
        log::warn!("{d}; skipped");
    }
    if files.is_empty() {
        return Err(Error::KeyNeeded {
            reason: format!(
                "the repository {} is encrypted but holds no usable key file (keys/){}",
                storage.location,
                if damaged.is_empty() { String::new() } else { format!(": {}", damaged.join("; ")) }
            ),
        });
    }
    let Some(source) = &opts.passphrase else {
        return Err(Error::KeyNeeded {
            reason: format!(
                "the repository {} is encrypted: give its passphrase (--password-file, CAIRN_PASSWORD_FILE, \
                 --password-command, or a terminal)",
                storage.location
            ),
        });
    };
    let pass = source.get()?;
    for (name, file) in &files {
        if let Some(keys) = file.unwrap_keys(&format!("key file {name}"), &pass)? {
            return Ok(Some(Unlocked { keys, key_name: name.clone() }));
        }
    }
    Err(Error::WrongPassphrase { tried: files.len() })
}

fn host_and_user() -> (String, String) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let user = uzers::get_current_username().map_or_else(|| "?".to_owned(), |u| u.to_string_lossy().into_owned());
    (host, user)
}

/// Writes a key file wrapping `keys` under `pass`; returns its name.
pub(crate) fn write_key_file(
    storage: &Storage,
    keys: &MasterKeys,
    pass: &Passphrase,
    kdf: KdfParams,
) -> Result<String> {
    let (host, user) = host_and_user();
    let (name, bytes) = KeyFile::wrap(keys, pass, kdf, &host, &user)?;
    storage.backend.put(FileKind::Key, &name, &bytes)?;
    Ok(name)
}

impl Repo {
    /// Gives the handle its keys: the sealing codec and the key file it was opened with.
    pub(crate) fn install_keys(&mut self, unlocked: Option<Unlocked>) -> Result<()> {
        if let Some(u) = unlocked {
            self.frames = Arc::new(SealedFrames::new(u.keys.clone(), self.config.compression_level)?);
            self.unlocked = Some(u);
        }
        Ok(())
    }

    /// True for an encrypted repository.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_some()
    }

    /// True when the repository was opened with a put-only key.
    #[must_use]
    pub fn is_put_only(&self) -> bool {
        self.unlocked.as_ref().is_some_and(|u| u.keys.is_put_only())
    }

    /// Fails, before any work, when the key in use is put-only and `what` needs to read.
    pub(crate) fn need_full_key(&self, what: &str) -> Result<()> {
        if self.is_put_only() {
            return Err(Error::PutOnly { what: what.to_owned() });
        }
        Ok(())
    }

    fn storage(&self) -> Storage {
        Storage {
            location: self.location.clone(),
            backend: Arc::clone(&self.backend),
            state: self.state.clone(),
            locks: Arc::clone(&self.locks),
        }
    }

    fn unlocked_keys(&self) -> Result<&Unlocked> {
        self.unlocked.as_ref().ok_or_else(|| {
            Error::InvalidInput(format!("the repository {} is not encrypted: it has no keys", self.location))
        })
    }

    /// The key files (`cairn key list`), newest first; damaged ones are left out with a warning.
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let current = self.unlocked_keys()?.key_name.clone();
        let (files, damaged) = key_files(&self.storage())?;
        for d in damaged {
            log::warn!("{d}");
        }
        Ok(files.iter().map(|(name, f)| f.info(name, *name == current)).collect())
    }

    /// Adds a key file with passphrase `pass`: a full key (the key in use must be full) or a
    /// put-only one. Returns it.
    pub fn add_key(&self, pass: &Passphrase, put_only: bool, kdf: KdfParams) -> Result<KeyInfo> {
        let unlocked = self.unlocked_keys()?;
        self.writable("adding a key")?;
        if !put_only {
            self.need_full_key("make a full key")?;
        }
        let keys = if put_only { unlocked.keys.put_only() } else { unlocked.keys.clone() };
        let name = write_key_file(&self.storage(), &keys, pass, kdf)?;
        self.key_info(&name)
    }

    fn key_info(&self, name: &str) -> Result<KeyInfo> {
        let bytes = self.backend.get(FileKind::Key, name)?;
        let current = self.unlocked_keys()?.key_name == name;
        Ok(KeyFile::decode(name, &bytes)?.info(name, current))
    }

    /// Removes a key file, named by its name or a unique prefix. The last key, and the last
    /// full key, are never removed: without them nothing stored could be read again.
    pub fn remove_key(&self, spec: &str) -> Result<KeyInfo> {
        self.unlocked_keys()?;
        self.writable("removing a key")?;
        self.need_full_key("remove keys")?;
        let (files, _) = key_files(&self.storage())?;
        let matching: Vec<&(String, KeyFile)> = files.iter().filter(|(n, _)| n.starts_with(spec)).collect();
        let (name, file) = match matching.as_slice() {
            [one] => *one,
            [] => return Err(Error::InvalidInput(format!("no key file {spec} in this repository"))),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{spec} names {} key files: give more of its name",
                    matching.len()
                )))
            }
        };
        let full_left = files.iter().filter(|(n, f)| n != name && !f.is_put_only()).count();
        if files.len() == 1 || (!file.is_put_only() && full_left == 0) {
            return Err(Error::Refused {
                reason: format!(
                    "key {} is the repository's last {}key: without it nothing stored could be read again",
                    &name[..8.min(name.len())],
                    if files.len() == 1 { "" } else { "full " }
                ),
            });
        }
        let info = file.info(name, self.unlocked_keys()?.key_name == *name);
        self.backend.remove(FileKind::Key, name)?;
        Ok(info)
    }

    /// Changes the passphrase of the key in use: a new key file with the same keys (and KDF
    /// parameters unless given) is written, then the old one is removed.
    pub fn change_passphrase(&mut self, pass: &Passphrase, kdf: Option<KdfParams>) -> Result<KeyInfo> {
        let unlocked = self.unlocked_keys()?.clone();
        self.writable("changing a passphrase")?;
        let bytes = self.backend.get(FileKind::Key, &unlocked.key_name)?;
        let old = KeyFile::decode(&unlocked.key_name, &bytes)?;
        let name = write_key_file(&self.storage(), &unlocked.keys, pass, kdf.unwrap_or_else(|| old.kdf_params()))?;
        self.backend.remove(FileKind::Key, &unlocked.key_name)?;
        self.unlocked = Some(Unlocked { keys: unlocked.keys, key_name: name.clone() });
        self.key_info(&name)
    }
}
