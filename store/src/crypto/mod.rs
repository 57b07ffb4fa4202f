//! Encryption at rest (docs/ENCRYPTION.md): the master key set, session keys sealed to its
//! X25519 public key, and [`SealedFrames`], the frame codec of an encrypted repository (keyed
//! BLAKE3 IDs; XChaCha20-Poly1305 on frames, pack trailers and snapshot records).
//!
//! Every sealed object is `epk (32) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. The writer's session
//! key comes from an ephemeral X25519 key pair and the repository's public key, so a put-only
//! key (no X25519 secret) seals what it writes and opens nothing, not even its own output once
//! its process has ended.

pub(crate) mod keyfile;
pub(crate) mod putcache;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::frame::{Domain, FrameCodec, ZstdFrames};
use crate::id::BlobId;
use crate::pack::{BlobKind, PackEntry, SealedFrame};

/// Length of every key and secret.
pub const KEY_LEN: usize = 32;
const EPK_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// What sealing adds to an object: ephemeral public key, nonce, tag.
pub const SEAL_OVERHEAD: usize = EPK_LEN + NONCE_LEN + TAG_LEN;
/// The encryption scheme an encrypted config names (config version 2, `encryption` = 1).
pub const SCHEME_V1: u32 = 1;
const SESSION_CONTEXT: &str = "cairn 2026-12 session key v1";
const NONCE_CONTEXT: &str = "cairn 2026-12 nonce v1";

/// A passphrase, wiped from memory when dropped; never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Takes the bytes (a trailing newline is the caller's to drop).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for an empty passphrase.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// `n` bytes from the operating system's random number generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| Error::io("the system's random number generator", std::io::Error::other(e)))?;
    Ok(out)
}

/// The master key set of a repository, or the part of it a put-only key holds (no `secret`).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MasterKeys {
    /// Keys the BLAKE3 of every chunk and tree ID.
    pub(crate) id_key: [u8; KEY_LEN],
    /// Mixed into every session key.
    pub(crate) psk: [u8; KEY_LEN],
    /// X25519 public key every session seals to.
    pub(crate) public: [u8; KEY_LEN],
    /// X25519 secret that opens what sessions sealed; absent from a put-only key.
    pub(crate) secret: Option<[u8; KEY_LEN]>,
}

impl MasterKeys {
    /// A new random key set.
    pub(crate) fn generate() -> Result<Self> {
        let secret: [u8; KEY_LEN] = random()?;
        let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
        Ok(Self { id_key: random()?, psk: random()?, public, secret: Some(secret) })
    }

    /// A set whose keys are public constants (fuzz targets only).
    pub(crate) fn fixed_for_fuzzing() -> Self {
        let secret = [3u8; KEY_LEN];
        let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
        Self { id_key: [1; KEY_LEN], psk: [2; KEY_LEN], public, secret: Some(secret) }
    }

    /// The same set less the secret.
    pub(crate) fn put_only(&self) -> Self {
        Self { secret: None, ..self.clone() }
    }

    pub(crate) fn is_put_only(&self) -> bool {
        self.secret.is_none()
    }

    /// True when the secret matches the public key (a key file is only trusted whole).
    pub(crate) fn consistent(&self) -> bool {
        self.secret.is_none_or(|s| x25519_dalek::x25519(s, x25519_dalek::X25519_BASEPOINT_BYTES) == self.public)
    }

    fn session_key(&self, shared: &[u8; KEY_LEN], epk: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut material = Zeroizing::new([0u8; 4 * KEY_LEN]);
        material[..32].copy_from_slice(shared);
        material[32..64].copy_from_slice(epk);
        material[64..96].copy_from_slice(&self.public);
        material[96..].copy_from_slice(&self.psk);
        Zeroizing::new(blake3::derive_key(SESSION_CONTEXT, &material[..]))
    }
}

/// The sealing half of one writing session: an ephemeral key pair's public part and the key
/// derived from it. Nonces come from a seed the session drew from the OS and a counter (keyed
/// BLAKE3): never repeated under the session's key, which is itself new for every process.
struct Session {
    epk: [u8; KEY_LEN],
    key: Zeroizing<[u8; KEY_LEN]>,
    nonce_seed: Zeroizing<[u8; KEY_LEN]>,
    counter: AtomicU64,
}

/// The frame codec of an encrypted repository (docs/ENCRYPTION.md): zstd as the plain codec,
/// then XChaCha20-Poly1305 under the session key; blob IDs keyed BLAKE3.
pub struct SealedFrames {
    keys: MasterKeys,
    plain: ZstdFrames,
    session: Session,
    /// Session keys of the writers whose objects this process opened, by their `epk`.
    readers: RwLock<HashMap<[u8; KEY_LEN], Zeroizing<[u8; KEY_LEN]>>>,
}

impl SealedFrames {
    /// A codec for a key set; a new session (ephemeral key pair) for what it seals.
    pub(crate) fn new(keys: MasterKeys, level: i32) -> Result<Self> {
        let esk = Zeroizing::new(random::<KEY_LEN>()?);
        let epk = x25519_dalek::x25519(*esk, x25519_dalek::X25519_BASEPOINT_BYTES);
        let shared = Zeroizing::new(x25519_dalek::x25519(*esk, keys.public));
        let key = keys.session_key(&shared, &epk);
        let session = Session { epk, key, nonce_seed: Zeroizing::new(random()?), counter: AtomicU64::new(0) };
        Ok(Self { keys, plain: ZstdFrames::new(level), session, readers: RwLock::new(HashMap::new()) })
    }

    /// True for a put-only key.
    pub(crate) fn is_put_only(&self) -> bool {
        self.keys.is_put_only()
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let n = self.session.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; NONCE_LEN];
        let mut xof = blake3::Hasher::new_keyed(&self.session.nonce_seed);
        xof.update(NONCE_CONTEXT.as_bytes()).update(&n.to_le_bytes());
        xof.finalize_xof().fill(&mut out);
        out
    }

    /// Seals `plain` under this session's key: `epk ‖ nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce();
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&self.session.epk);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let cipher = XChaCha20Poly1305::new(&(*self.session.key).into());
        let body = &mut out[EPK_LEN + NONCE_LEN..];
        // Only a message past 256 GiB makes ChaCha20 refuse: frames stop at 256 MiB.
        let tag = cipher.encrypt_inout_detached(&nonce.into(), aad, body.into()).map(<[u8; TAG_LEN]>::from);
        out.extend_from_slice(&tag.unwrap_or_default());
        out
    }

    /// The session key of the writer that sealed with `epk`.
    fn reader_key(&self, epk: &[u8; KEY_LEN]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        if let Some(k) = self.readers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(epk) {
            return Ok(k.clone());
        }
        let Some(secret) = self.keys.secret else {
            return Err(Error::PutOnly { what: "read what the repository stores".into() });
        };
        let shared = Zeroizing::new(x25519_dalek::x25519(secret, *epk));
        let key = self.keys.session_key(&shared, epk);
        self.readers.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(*epk, key.clone());
        Ok(key)
    }

    /// Opens what `seal_bytes` sealed with the same `aad`. `Ok(None)` when it does not
    /// authenticate (damaged, truncated, or sealed for another repository); `Err` only for a
    /// put-only key, which opens nothing.
    pub(crate) fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Result<Option<Vec<u8>>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Ok(None);
        }
        let (head, rest) = sealed.split_at(EPK_LEN + NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut epk = [0u8; EPK_LEN];
        epk.copy_from_slice(&head[..EPK_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&head[EPK_LEN..]);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let key = self.reader_key(&epk)?;
        let cipher = XChaCha20Poly1305::new(&(*key).into());
        let mut out = body.to_vec();
        let opened =
            cipher.decrypt_inout_detached(&nonce.into(), aad, out.as_mut_slice().into(), &tag_bytes.into()).is_ok();
        Ok(opened.then_some(out))
    }
}

/// The associated data of a frame: its plaintext length and encoding, as its trailer entry
/// says them, so that no entry describes a frame it was not written with.
fn frame_aad(frame_len: u32, compression: u8) -> [u8; 16] {
    let mut aad = [0u8; 16];
    aad[..11].copy_from_slice(b"cairn frame");
    aad[11..15].copy_from_slice(&frame_len.to_le_bytes());
    aad[15] = compression;
    aad
}

impl FrameCodec for SealedFrames {
    fn id_of(&self, plaintext: &[u8]) -> BlobId {
        BlobId::from_hash(blake3::keyed_hash(&self.keys.id_key, plaintext))
    }

    fn seal(&self, blobs: &[(BlobKind, BlobId, &[u8])]) -> SealedFrame {
        let mut frame = self.plain.seal(blobs);
        frame.data = self.seal_bytes(&frame_aad(frame.raw_len, frame.compression as u8), &frame.data);
        frame
    }

    fn frame_format(&self) -> String {
        // The key set's fingerprint (public key keyed by the pre-shared key): repositories
        // sharing a key set open each other's frames; no secret can be learnt from it.
        format!("sealed-v1:{}", blake3::keyed_hash(&self.keys.psk, &self.keys.public).to_hex())
    }

    fn open(&self, entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
        let damaged = |why: &str| Error::HashMismatch { what: "blob", id: format!("{} ({why})", entry.id) };
        if stored.len() != entry.stored_len as usize {
            return Err(damaged("short read of its frame"));
        }
        let aad = frame_aad(entry.frame_len, entry.compression as u8);
        let Some(inner) = self.open_bytes(&aad, stored)? else {
            return Err(damaged("its frame does not open with this repository's key"));
        };
        let mut plain_entry = *entry;
        plain_entry.stored_len = u32::try_from(inner.len()).unwrap_or(u32::MAX);
        self.plain.open(&plain_entry, &inner)
    }

    fn seal_object(&self, domain: Domain, plain: Vec<u8>) -> Vec<u8> {
        self.seal_bytes(domain.aad(), &plain)
    }

    fn open_object<'a>(&self, domain: Domain, what: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        match self.open_bytes(domain.aad(), stored)? {
            Some(plain) => Ok(Cow::Owned(plain)),
            None => {
                Err(Error::corrupt(what, "does not open with this repository's key (damaged, or not written for it)"))
            }
        }
    }

    fn encrypted(&self) -> bool {
        true
    }

    fn put_only(&self) -> bool {
        self.is_put_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_of(frame: &SealedFrame, i: usize) -> PackEntry {
        let m = frame.members[i];
        PackEntry {
            kind: m.kind,
            id: m.id,
            offset: 0,
            stored_len: u32::try_from(frame.data.len()).unwrap(),
            frame_len: frame.raw_len,
            frame_offset: m.offset,
            raw_len: m.len,
            compression: frame.compression,
        }
    }

    #[test]
    fn crypto_sealed_frames_open_with_the_full_key_only() {
        let keys = MasterKeys::generate().unwrap();
        let writer = SealedFrames::new(keys.clone(), 3).unwrap();
        let reader = SealedFrames::new(keys.clone(), 3).unwrap();
        let put = SealedFrames::new(keys.put_only(), 3).unwrap();
        let other = SealedFrames::new(MasterKeys::generate().unwrap(), 3).unwrap();
        let marker = b"CAIRN-MARKER-0123456789 ".repeat(200);
        let small = b"tiny".to_vec();
        // IDs: keyed, the same for every holder of the key set, put keys included.
        let id = writer.id_of(&marker);
        assert_eq!(id, put.id_of(&marker));
        assert_ne!(id, BlobId::of(&marker));
        assert_ne!(id, other.id_of(&marker));
        for sealer in [&writer, &put] {
            let frame = sealer.seal(&[(BlobKind::Chunk, id, &marker), (BlobKind::Chunk, writer.id_of(&small), &small)]);
            assert!(!frame.data.windows(12).any(|w| w == b"CAIRN-MARKER"), "no plaintext in a sealed frame");
            let e = entry_of(&frame, 0);
            assert_eq!(reader.open_blob(&e, &frame.data).unwrap(), marker);
            assert_eq!(reader.open_blob(&entry_of(&frame, 1), &frame.data).unwrap(), small);
            assert!(matches!(put.open(&e, &frame.data), Err(Error::PutOnly { .. })));
            assert!(matches!(other.open(&e, &frame.data), Err(Error::HashMismatch { .. })));
            for at in [0, 40, frame.data.len() / 2, frame.data.len() - 1] {
                let mut bad = frame.data.clone();
                bad[at] ^= 1;
                assert!(matches!(reader.open(&e, &bad), Err(Error::HashMismatch { .. })), "byte {at}");
            }
            // The entry is bound to the frame: another length or encoding does not open.
            let mut lying = e;
            lying.frame_len += 1;
            assert!(reader.open(&lying, &frame.data).is_err());
        }
        // Objects: one domain never opens as another.
        let sealed = writer.seal_object(Domain::Record, b"record body".to_vec());
        assert_eq!(&*reader.open_object(Domain::Record, "r", &sealed).unwrap(), b"record body");
        assert!(reader.open_object(Domain::Trailer, "r", &sealed).is_err());
        assert!(reader.open_object(Domain::Record, "r", &sealed[..10]).is_err());
        assert!(matches!(put.open_object(Domain::Record, "r", &sealed), Err(Error::PutOnly { .. })));
    }

    #[test]
    fn crypto_nonces_never_repeat_in_a_session() {
        let s = SealedFrames::new(MasterKeys::generate().unwrap(), 3).unwrap();
        let a = s.seal_bytes(b"x", b"same");
        let b = s.seal_bytes(b"x", b"same");
        assert_eq!(a[..32], b[..32], "one session, one epk");
        assert_ne!(a[32..56], b[32..56]);
        assert_ne!(a, b);
        let t = SealedFrames::new(s.keys.clone(), 3).unwrap();
        assert_ne!(t.seal_bytes(b"x", b"same")[..32], a[..32], "a new session has a new epk");
    }
}
