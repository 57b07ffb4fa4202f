//! Key files (`keys/<64 hex>`, docs/FORMAT.md "Key files"): the master key set, or its put-only
//! part, wrapped by a key derived from a passphrase with Argon2id.
//!
//! Framed like the config (`CAIRNKEY` ‖ version ‖ bincode body ‖ BLAKE3), named by the BLAKE3 of
//! the whole file. The KDF's parameters and `put_only` are in clear, and bound to the wrapped
//! secrets as associated data: a key file whose parameters were lowered does not open.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{random, MasterKeys, Passphrase, KEY_LEN};
use crate::codec;
use crate::error::{Error, Result};
use crate::id::PackId;

const MAGIC: &[u8; 8] = b"CAIRNKEY";
/// Newest key file format this build reads and the one it writes.
pub const KEY_FILE_VERSION: u32 = 1;
const ARGON2ID_V13: u32 = 1;
const WRAP_AAD: &[u8] = b"cairn key v1";
/// Bounds a key file's KDF parameters must keep: a hostile file must not make cairn allocate
/// more than 1 GiB or spin for minutes.
const MAX_MEMORY_KIB: u32 = 1 << 20;
const MAX_ITERATIONS: u32 = 64;
const MAX_LANES: u32 = 16;

/// How a passphrase is stretched into the key that wraps the master key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KdfParams {
    /// Argon2id memory, KiB.
    pub memory_kib: u32,
    /// Argon2id passes.
    pub iterations: u32,
    /// Argon2id lanes.
    pub lanes: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.3 s on the benchmark machine, per key file tried.
    fn default() -> Self {
        Self { memory_kib: 64 * 1024, iterations: 3, lanes: 1 }
    }
}

impl KdfParams {
    /// `memory_mib` MiB and `iterations` passes, one lane.
    #[must_use]
    pub fn new(memory_mib: u32, iterations: u32) -> Self {
        Self { memory_kib: memory_mib.saturating_mul(1024), iterations, lanes: 1 }
    }

    /// Refuses parameters outside what cairn reads back (8 KiB..1 GiB, 1..64 passes, 1..16 lanes).
    pub fn validate(&self) -> Result<()> {
        let ok = (8 * self.lanes.max(1)..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_ITERATIONS).contains(&self.iterations)
            && (1..=MAX_LANES).contains(&self.lanes);
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "unusable key derivation parameters: {} KiB, {} passes, {} lanes (memory 8 KiB..1 GiB, 1..64 passes)",
                self.memory_kib, self.iterations, self.lanes
            )))
        }
    }
}

/// The clear part of the KDF as a key file stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Kdf {
    algorithm: u32,
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    salt: [u8; KEY_LEN],
}

/// A key file's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyFile {
    created: i64,
    host: String,
    user: String,
    put_only: bool,
    kdf: Kdf,
    nonce: [u8; 24],
    wrapped: Vec<u8>,
}

/// What `cairn key list` shows of a key file (nothing secret).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key file's name (64 hex digits).
    pub name: String,
    /// When it was made, Unix seconds.
    pub created: i64,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub user: String,
    /// It can add snapshots only.
    pub put_only: bool,
    /// Argon2id memory, KiB.
    pub memory_kib: u32,
    /// Argon2id passes.
    pub iterations: u32,
    /// The key this process opened the repository with.
    pub current: bool,
}

fn kek(pass: &Passphrase, kdf: &Kdf) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(KEY_LEN))
        .map_err(|e| Error::corrupt("key file", format!("unusable key derivation parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(pass.bytes(), &kdf.salt, &mut out[..])
        .map_err(|e| Error::corrupt("key file", format!("key derivation failed: {e}")))?;
    Ok(out)
}

fn aad(put_only: bool, kdf: &Kdf) -> Vec<u8> {
    let mut aad = WRAP_AAD.to_vec();
    aad.push(u8::from(put_only));
    aad.extend_from_slice(&codec::encode(kdf));
    aad
}

impl KeyFile {
    /// Wraps `keys` under `pass`; returns the file's name and bytes.
    pub(crate) fn wrap(
        keys: &MasterKeys,
        pass: &Passphrase,
        params: KdfParams,
        host: &str,
        user: &str,
    ) -> Result<(String, Vec<u8>)> {
        params.validate()?;
        let kdf = Kdf {
            algorithm: ARGON2ID_V13,
            memory_kib: params.memory_kib,
            iterations: params.iterations,
            lanes: params.lanes,
            salt: random()?,
        };
        let put_only = keys.is_put_only();
        let nonce: [u8; 24] = random()?;
        let kek = kek(pass, &kdf)?;
        let mut wrapped = Zeroizing::new(codec::encode(keys));
        let cipher = XChaCha20Poly1305::new(&(*kek).into());
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), &aad(put_only, &kdf), wrapped.as_mut_slice().into())
            .map_err(|_| Error::InvalidInput("key set too long to wrap".into()))?;
        let mut sealed = wrapped.to_vec();
        sealed.extend_from_slice(&tag);
        let file = Self {
            created: crate::repo::now_secs(),
            host: host.to_owned(),
            user: user.to_owned(),
            put_only,
            kdf,
            nonce,
            wrapped: sealed,
        };
        let bytes = codec::frame(MAGIC, KEY_FILE_VERSION, &codec::encode(&file));
        Ok((PackId::of(&bytes).to_hex(), bytes))
    }

    /// Decodes a key file named `name` and checks it (hash, checksum, bounds). Any damage is
    /// an error naming it.
    pub(crate) fn decode(name: &str, bytes: &[u8]) -> Result<Self> {
        let what = format!("key file {name}");
        if PackId::of(bytes).to_hex() != name {
            return Err(Error::corrupt(what, "content does not hash to its name"));
        }
        Self::decode_unnamed(&what, bytes)
    }

    /// Decodes a key file's bytes without checking its name (the fuzz target's entry).
    pub(crate) fn decode_unnamed(what: &str, bytes: &[u8]) -> Result<Self> {
        let (_, body) = codec::unframe(what, bytes, MAGIC, KEY_FILE_VERSION)?;
        let file: Self = codec::decode(what, body)?;
        if file.kdf.algorithm != ARGON2ID_V13 {
            return Err(Error::UnsupportedVersion {
                what: format!("{what}'s key derivation"),
                found: file.kdf.algorithm,
                supported: ARGON2ID_V13,
            });
        }
        KdfParams { memory_kib: file.kdf.memory_kib, iterations: file.kdf.iterations, lanes: file.kdf.lanes }
            .validate()
            .map_err(|e| Error::corrupt(what, e.to_string()))?;
        if file.wrapped.len() < 16 {
            return Err(Error::corrupt(what, "wrapped keys too short"));
        }
        Ok(file)
    }

    /// The keys this file wraps, when `pass` is its passphrase; `None` when it is not (or the
    /// file's clear part was changed).
    pub(crate) fn unwrap_keys(&self, what: &str, pass: &Passphrase) -> Result<Option<MasterKeys>> {
        let kek = kek(pass, &self.kdf)?;
        let (body, tag) = self.wrapped.split_at(self.wrapped.len() - 16);
        let mut tag_bytes = [0u8; 16];
        tag_bytes.copy_from_slice(tag);
        let mut plain = Zeroizing::new(body.to_vec());
        let cipher = XChaCha20Poly1305::new(&(*kek).into());
        if cipher
            .decrypt_inout_detached(
                &self.nonce.into(),
                &aad(self.put_only, &self.kdf),
                plain.as_mut_slice().into(),
                &tag_bytes.into(),
            )
            .is_err()
        {
            return Ok(None);
        }
        let keys: MasterKeys = codec::decode(what, &plain)?;
        if keys.is_put_only() != self.put_only || !keys.consistent() {
            return Err(Error::corrupt(what, "wrapped keys do not match what the file says of them"));
        }
        Ok(Some(keys))
    }

    /// What `key list` shows.
    pub(crate) fn info(&self, name: &str, current: bool) -> KeyInfo {
        KeyInfo {
            name: name.to_owned(),
            created: self.created,
            host: self.host.clone(),
            user: self.user.clone(),
            put_only: self.put_only,
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            current,
        }
    }

    pub(crate) fn created(&self) -> i64 {
        self.created
    }

    pub(crate) fn is_put_only(&self) -> bool {
        self.put_only
    }

    pub(crate) fn kdf_params(&self) -> KdfParams {
        KdfParams { memory_kib: self.kdf.memory_kib, iterations: self.kdf.iterations, lanes: self.kdf.lanes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_key_file_opens_with_its_passphrase_only() {
        let keys = MasterKeys::generate().unwrap();
        let pass = Passphrase::new(b"correct horse".to_vec());
        let small = KdfParams::new(1, 1);
        let (name, bytes) = KeyFile::wrap(&keys, &pass, small, "h", "u").unwrap();
        let file = KeyFile::decode(&name, &bytes).unwrap();
        let back = file.unwrap_keys("k", &pass).unwrap().unwrap();
        assert_eq!(
            (back.id_key, back.psk, back.public, back.secret),
            (keys.id_key, keys.psk, keys.public, keys.secret)
        );
        assert!(file.unwrap_keys("k", &Passphrase::new(b"wrong".to_vec())).unwrap().is_none());
        // A put key holds no secret, and says so.
        let (pname, pbytes) = KeyFile::wrap(&keys.put_only(), &pass, small, "h", "u").unwrap();
        let put = KeyFile::decode(&pname, &pbytes).unwrap();
        assert!(put.is_put_only());
        assert!(put.unwrap_keys("k", &pass).unwrap().unwrap().secret.is_none());
        // Any flipped byte: the name, the checksum, or (re-hashed) the wrap catches it.
        for at in [0, 9, 20, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(KeyFile::decode(&name, &bad).is_err(), "byte {at}");
        }
        // Lowering the KDF's memory (and fixing up the hashes) makes the file not open.
        let mut weaker = file.clone();
        weaker.kdf.memory_kib = 8;
        assert!(weaker.unwrap_keys("k", &pass).unwrap().is_none());
        let mut promoted = put.clone();
        promoted.put_only = false;
        assert!(promoted.unwrap_keys("k", &pass).unwrap().is_none());
    }

    #[test]
    fn crypto_key_file_refuses_hostile_parameters() {
        let keys = MasterKeys::generate().unwrap();
        let pass = Passphrase::new(b"p".to_vec());
        assert!(KeyFile::wrap(&keys, &pass, KdfParams::new(4096, 0), "h", "u").is_err());
        let (_, bytes) = KeyFile::wrap(&keys, &pass, KdfParams::new(1, 1), "h", "u").unwrap();
        let (_, body) = codec::unframe("k", &bytes, MAGIC, KEY_FILE_VERSION).unwrap();
        let mut file: KeyFile = codec::decode("k", body).unwrap();
        file.kdf.memory_kib = u32::MAX;
        let hostile = codec::frame(MAGIC, KEY_FILE_VERSION, &codec::encode(&file));
        assert!(KeyFile::decode_unnamed("k", &hostile).is_err());
    }
}
