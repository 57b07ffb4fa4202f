//! Writing objects to the bucket: one PUT, or a multipart upload for an object larger than
//! [`Multipart::threshold`] (a pack of a repository made with a large `--pack-size`, or holding
//! huge chunks); every body carries a `Content-MD5`, so the server refuses bytes damaged on the
//! way (`400 BadDigest`) instead of storing them; data packs go to the storage class asked for
//! (`x-amz-storage-class`), everything else stays STANDARD; incomplete multipart uploads are
//! this backend's temporaries, removed by gc once abandoned.
//!
//! The headers are signed with the request (presigned URLs sign the headers named in them), so
//! a server that checks signatures sees exactly what was signed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, S3Action};

use super::{xml_field, S3Backend, SIGNED_FOR};
use crate::backend::{relative_path, FileKind, ObjectInfo};
use crate::error::{BackendError, BackendErrorKind, Error, Result};
use crate::pack::BlobKind;

/// Objects larger than this are uploaded in parts. A pack is about 16 MiB unless the repository
/// was made with a larger `--pack-size` (up to 1 GiB) or a chunk is huge (up to 16 MiB).
pub(super) const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The size of a part (S3 wants 5 MiB at least, except for the last, and 10,000 parts at most).
pub(super) const PART_SIZE: u64 = 16 << 20;
/// S3's smallest part but the last.
#[cfg(test)]
const MIN_PART: u64 = 5 << 20;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Parts of one object uploaded at once (they are slices of the object, already in memory).
const PART_UPLOADS: usize = 4;

/// The storage classes S3 (AWS) names; any other name is refused before anything is written.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// Reads `--s3-storage-class`: one of [`STORAGE_CLASSES`], in any case (sent upper-case).
pub fn parse_storage_class(text: &str) -> Result<String> {
    let class = text.trim().to_ascii_uppercase();
    if STORAGE_CLASSES.contains(&class.as_str()) {
        Ok(class)
    } else {
        Err(Error::InvalidInput(format!(
            "{text:?} is not an S3 storage class (one of {})",
            STORAGE_CLASSES.join(", ").to_lowercase()
        )))
    }
}

/// When an object is uploaded in parts, and how large they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Multipart {
    pub(super) threshold: u64,
    pub(super) part_size: u64,
}

impl Default for Multipart {
    fn default() -> Self {
        Self { threshold: MULTIPART_THRESHOLD, part_size: PART_SIZE }
    }
}

/// The base64 MD5 of a body, as `Content-MD5` carries it.
fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// True for a pack holding chunks only. Tree packs are what every later snapshot, `ls`, `diff`
/// and restore read first, so they stay STANDARD whatever class data goes to; a pack whose
/// trailer does not parse is not judged data either. Nor is a sealed pack (an encrypted
/// repository's): its trailer names its blobs' kinds only to the key, so all its packs stay in
/// the bucket's default class.
fn is_data_pack(name: &str, bytes: &[u8]) -> bool {
    crate::pack::check_pack_layout(name, bytes, &crate::frame::ZstdFrames::PLAIN)
        .is_ok_and(|e| e.iter().all(|e| e.kind == BlobKind::Chunk))
}

impl S3Backend {
    /// New data packs go to storage class `class` (checked by [`parse_storage_class`]); `None`
    /// leaves the bucket's default (STANDARD on AWS).
    pub fn with_storage_class(mut self, class: Option<&str>) -> Result<Self> {
        self.storage_class = class.map(parse_storage_class).transpose()?;
        Ok(self)
    }

    /// Objects over `threshold` bytes are uploaded in parts of `part_size` (at least 5 MiB, as
    /// S3 wants): a test lowers them to try multipart with small objects.
    #[cfg(test)]
    #[must_use]
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> Self {
        self.multipart = Multipart { threshold, part_size: part_size.max(MIN_PART) };
        self
    }

    /// The storage class header an object gets: data packs only, and only when one was asked.
    fn class_header(&self, kind: FileKind, name: &str, data: &[u8]) -> Option<(&'static str, String)> {
        let class = self.storage_class.as_ref()?;
        (kind == FileKind::Pack && is_data_pack(name, data)).then(|| ("x-amz-storage-class", class.clone()))
    }

    /// The signed URL and headers of a single PUT of `data` as `kind`/`name` (at `key`).
    pub(super) fn put_request(
        &self,
        kind: FileKind,
        name: &str,
        key: &str,
        data: &[u8],
    ) -> (url::Url, Vec<(&'static str, String)>) {
        let mut headers = vec![("content-md5", content_md5(data))];
        headers.extend(self.class_header(kind, name, data));
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        for (k, v) in &headers {
            action.headers_mut().insert(*k, v.clone());
        }
        (action.sign(SIGNED_FOR), headers)
    }

    /// Stores `data` at `key`: one PUT, or in parts when it is large.
    pub(super) fn put_object(&self, kind: FileKind, name: &str, key: &str, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.multipart.threshold {
            return self.put_multipart(kind, name, key, data);
        }
        let (url, headers) = self.put_request(kind, name, key, data);
        let mut request = self.agent.put(url.as_str());
        for (k, v) in &headers {
            request = request.header(*k, v);
        }
        self.requests.sent(data.len() as u64);
        let reply = self.send("PUT", key, request.send(data))?;
        if (200..300).contains(&reply.status) {
            Ok(())
        } else {
            Err(self.status_error("PUT", key, &reply).about(kind, name).into())
        }
    }

    /// A multipart upload: create, parts (a few at once), complete. Any failure aborts the
    /// upload, so its parts are not left behind (when the abort cannot reach the server either,
    /// the upload is a temporary that gc removes once it is an hour old).
    fn put_multipart(&self, kind: FileKind, name: &str, key: &str, data: &[u8]) -> Result<()> {
        let upload_id = self.create_upload(kind, name, key, data)?;
        let done = self.upload_parts(key, &upload_id, data).and_then(|etags| self.complete(key, &upload_id, &etags));
        if done.is_err() {
            let abort = self.bucket.abort_multipart_upload(Some(&self.credentials), key, &upload_id);
            if let Err(e) = self.send("DELETE upload", key, self.agent.delete(abort.sign(SIGNED_FOR).as_str()).call()) {
                log::debug!("{key}: the failed multipart upload {upload_id} is left for gc: {e}");
            }
        }
        done.map_err(|e| match e {
            Error::Backend(b) => (*b).about(kind, name).into(),
            other => other,
        })
    }

    /// Starts a multipart upload of `data` (its storage class is given here); its ID.
    fn create_upload(&self, kind: FileKind, name: &str, key: &str, data: &[u8]) -> Result<String> {
        let mut create = self.bucket.create_multipart_upload(Some(&self.credentials), key);
        let class = self.class_header(kind, name, data);
        if let Some((k, v)) = &class {
            create.headers_mut().insert(*k, v.clone());
        }
        let mut request = self.agent.post(create.sign(SIGNED_FOR).as_str());
        if let Some((k, v)) = &class {
            request = request.header(*k, v);
        }
        let reply = self.send("POST uploads", key, request.send_empty())?;
        if reply.status != 200 {
            return Err(self.status_error("POST uploads", key, &reply).about(kind, name).into());
        }
        let text = String::from_utf8_lossy(&reply.body);
        let upload = CreateMultipartUpload::parse_response(&text).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Transient,
                self.where_is(key),
                format!("POST uploads: unreadable reply: {e}"),
            )
        })?;
        Ok(upload.upload_id().to_owned())
    }

    /// Uploads the parts of `data`; their ETags, in part order.
    fn upload_parts(&self, key: &str, upload_id: &str, data: &[u8]) -> Result<Vec<String>> {
        let len = data.len() as u64;
        let part = self.multipart.part_size.max(len.div_ceil(MAX_PARTS));
        let parts: Vec<&[u8]> = data.chunks(usize::try_from(part).unwrap_or(usize::MAX)).collect();
        let next = AtomicUsize::new(0);
        let etags: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; parts.len()]);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PART_UPLOADS.min(parts.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= parts.len() || crate::workers::lock(&failure).is_some() {
                        return;
                    }
                    match self.upload_part(key, upload_id, i, parts[i]) {
                        Ok(etag) => crate::workers::lock(&etags)[i] = Some(etag),
                        Err(e) => {
                            crate::workers::lock(&failure).get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = crate::workers::into_inner(failure) {
            return Err(e);
        }
        crate::workers::into_inner(etags)
            .into_iter()
            .map(|e| {
                e.ok_or_else(|| {
                    BackendError::new(BackendErrorKind::Transient, self.where_is(key), "PUT part: no ETag").into()
                })
            })
            .collect()
    }

    /// Uploads part `i` (0-based; S3 numbers them from 1); its ETag.
    fn upload_part(&self, key: &str, upload_id: &str, i: usize, bytes: &[u8]) -> Result<String> {
        let number = u16::try_from(i + 1).unwrap_or(u16::MAX);
        let md5 = content_md5(bytes);
        let mut action = self.bucket.upload_part(Some(&self.credentials), key, number, upload_id);
        action.headers_mut().insert("content-md5", md5.clone());
        let what = format!("PUT part {number}");
        self.requests.sent(bytes.len() as u64);
        let reply = self.send(
            &what,
            key,
            self.agent.put(action.sign(SIGNED_FOR).as_str()).header("content-md5", &md5).send(bytes),
        )?;
        if !(200..300).contains(&reply.status) {
            return Err(self.status_error(&what, key, &reply).into());
        }
        reply.etag.ok_or_else(|| {
            BackendError::new(BackendErrorKind::Transient, self.where_is(key), format!("{what}: no ETag in the reply"))
                .into()
        })
    }

    /// Completes an upload. S3 may answer 200 and still have failed: the body says.
    fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<()> {
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let reply = self.send("POST complete", key, self.agent.post(url.as_str()).send(body.as_bytes()))?;
        let text = String::from_utf8_lossy(&reply.body);
        if reply.status == 200 && xml_field(&text, "Code").is_none() {
            return Ok(());
        }
        let mut reply = reply;
        if reply.status == 200 {
            reply.status = 500; // an error in a 200 is S3's way of saying "try again"
        }
        Err(self.status_error("POST complete", key, &reply).into())
    }

    /// Incomplete multipart uploads of packs under this repository's prefix, named
    /// `packs/ab/<id>#<upload ID>`, with the time each was started.
    pub(super) fn multipart_temporaries(&self) -> Result<Vec<ObjectInfo>> {
        let prefix = self.location.key("packs/");
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        // Bounded: a thousand uploads a page, and a million pages is a bug.
        for _page in 0..1_000_000 {
            let mut query: Vec<(&str, &str)> = vec![("prefix", prefix.as_str()), ("uploads", "")];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", id));
            }
            query.sort_unstable();
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                self.bucket.base_url().clone(),
                self.credentials.key(),
                self.credentials.secret(),
                self.credentials.token(),
                self.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            );
            let reply = self.send("LIST uploads", &prefix, self.agent.get(url.as_str()).call())?;
            if reply.status != 200 {
                return Err(self.status_error("LIST uploads", &prefix, &reply).into());
            }
            let text = String::from_utf8_lossy(&reply.body);
            for upload in text.split("<Upload>").skip(1) {
                let (Some(key), Some(id)) = (xml_field(upload, "Key"), xml_field(upload, "UploadId")) else { continue };
                let Some(rel) = key.strip_prefix(self.location.key("").as_str()) else { continue };
                let started = xml_field(upload, "Initiated")
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .and_then(|t| i64::try_from(t.as_nanosecond()).ok());
                out.push(ObjectInfo::new(format!("{rel}#{id}"), 0, started));
            }
            let truncated = xml_field(&text, "IsTruncated") == Some("true");
            let next = (xml_field(&text, "NextKeyMarker"), xml_field(&text, "NextUploadIdMarker"));
            match (truncated, next) {
                (true, (Some(k), Some(i))) => markers = Some((k.to_owned(), i.to_owned())),
                _ => return Ok(out),
            }
        }
        Err(BackendError::new(
            BackendErrorKind::Permanent,
            self.where_is(&prefix),
            "LIST uploads: the listing never ended",
        )
        .into())
    }

    /// Aborts an incomplete upload named as [`Self::multipart_temporaries`] names it; anything
    /// else (not a pack's upload) is left alone.
    pub(super) fn abort_temporary(&self, name: &str) -> Result<()> {
        let Some((rel, upload_id)) = name.split_once('#') else { return Ok(()) };
        let pack = rel.rsplit('/').next().unwrap_or("");
        if upload_id.is_empty() || !crate::backend::is_id_name(pack) || rel != relative_path(FileKind::Pack, pack) {
            return Ok(());
        }
        let key = self.location.key(rel);
        let abort = self.bucket.abort_multipart_upload(Some(&self.credentials), &key, upload_id);
        let reply = self.send("DELETE upload", &key, self.agent.delete(abort.sign(SIGNED_FOR).as_str()).call())?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.status_error("DELETE upload", &key, &reply).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::backend::{epoch_ns, Backend, S3Location};
    use crate::id::BlobId;
    use crate::pack::PackWriter;

    fn backend() -> S3Backend {
        let location = S3Location::parse("http://127.0.0.1:9/bucket/prefix").expect("location");
        S3Backend::new(&location, rusty_s3::Credentials::new("key", "secret"), "garage".into()).expect("backend")
    }

    /// A finished pack holding one blob of `kind`: (name, bytes).
    fn pack(kind: BlobKind) -> (String, Vec<u8>) {
        let data = b"some bytes of a blob".repeat(20);
        let mut w = PackWriter::new();
        w.add(&crate::frame::seal_frame(&[(kind, BlobId::of(&data), &data)], 3));
        let (id, bytes, _) = w.finish();
        (id.to_hex(), bytes)
    }

    fn signed_headers(url: &url::Url) -> String {
        url.query_pairs().find(|(k, _)| k == "X-Amz-SignedHeaders").map(|(_, v)| v.into_owned()).unwrap_or_default()
    }

    #[test]
    fn storage_classes_are_checked_and_sent_upper_case() {
        assert_eq!(parse_storage_class("glacier_ir").expect("known"), "GLACIER_IR");
        assert_eq!(parse_storage_class(" DEEP_ARCHIVE ").expect("known"), "DEEP_ARCHIVE");
        let e = parse_storage_class("freezer").expect_err("unknown").to_string();
        assert!(e.contains("\"freezer\" is not an S3 storage class") && e.contains("standard_ia"), "{e}");
        assert!(backend().with_storage_class(Some("cold")).is_err(), "the backend refuses it too");
    }

    #[test]
    fn a_data_pack_is_put_in_its_class_with_its_md5_and_nothing_else_is() {
        let b = backend().with_storage_class(Some("glacier")).expect("class");
        let (name, bytes) = pack(BlobKind::Chunk);
        let (url, headers) = b.put_request(FileKind::Pack, &name, "prefix/packs/xx/p", &bytes);
        assert!(headers.contains(&("x-amz-storage-class", "GLACIER".to_owned())), "{headers:?}");
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
        assert!(headers.contains(&("content-md5", md5)), "{headers:?}");
        // Signed, as a presigned URL must sign every x-amz- header it is sent with.
        assert_eq!(signed_headers(&url), "content-md5;host;x-amz-storage-class");

        // Tree packs, snapshot records, leases and the config stay STANDARD.
        let (tree_name, tree_bytes) = pack(BlobKind::Tree);
        for (kind, name, data) in [
            (FileKind::Pack, tree_name.as_str(), tree_bytes.as_slice()),
            (FileKind::Snapshot, name.as_str(), b"record".as_slice()),
            (FileKind::SessionLease, name.as_str(), b"lease".as_slice()),
            (FileKind::Config, "config", b"config".as_slice()),
        ] {
            let (url, headers) = b.put_request(kind, name, "k", data);
            assert!(headers.iter().all(|(k, _)| *k != "x-amz-storage-class"), "{kind:?}: {headers:?}");
            assert_eq!(signed_headers(&url), "content-md5;host", "{kind:?}");
        }
        // Without a class, no header at all.
        let (_, headers) = backend().put_request(FileKind::Pack, &name, "k", &bytes);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==", "MD5 of nothing, base64");
    }

    #[test]
    fn an_archived_object_is_reported_as_one_to_restore_first() {
        let b = backend();
        let reply = super::super::Reply {
            status: 403,
            body: b"<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message></Error>".to_vec(),
            etag: None,
        };
        let e = b.status_error("GET", "prefix/packs/ab/x", &reply).to_string();
        assert!(e.contains("HTTP 403 (InvalidObjectState: The operation is not valid"), "{e}");
        assert!(e.contains("archive storage class") && e.contains("restore-object"), "{e}");
        let denied =
            super::super::Reply { status: 403, body: b"<Error><Code>AccessDenied</Code></Error>".to_vec(), etag: None };
        assert!(!b.status_error("GET", "k", &denied).to_string().contains("archive"));
    }

    /// The test bucket of the Garage cluster, under a fresh prefix; `None` to skip.
    fn on_cluster(test: &str) -> Option<S3Backend> {
        let Ok(url) = std::env::var("CAIRN_TEST_S3_URL") else {
            eprintln!("{test}: skipped (set CAIRN_TEST_S3_URL; scripts/garage-cluster.sh up prints it)");
            return None;
        };
        let rest = url.strip_prefix("s3:").expect("CAIRN_TEST_S3_URL starts with s3:");
        let run = format!("{test}-{}-{}", std::process::id(), epoch_ns(SystemTime::now()).unwrap_or(0));
        let location = S3Location::parse(&format!("{}/{run}", rest.trim_end_matches('/'))).expect("location");
        Some(S3Backend::from_env(&location).expect("credentials"))
    }

    #[test]
    fn a_large_object_goes_up_in_parts_and_reads_back_whole() -> Result<()> {
        // 6 MiB threshold, 5 MiB parts: 13 MiB makes three parts (5, 5, 3).
        let Some(b) = on_cluster("multipart") else { return Ok(()) };
        let b = b.with_multipart(6 << 20, 5 << 20);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let data: Vec<u8> = (0..13 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let name = hex::encode(blake3::hash(&data).as_bytes());
        b.put(FileKind::Pack, &name, &data)?;
        assert!(b.get(FileKind::Pack, &name)? == data, "read back whole");
        assert_eq!(b.size(FileKind::Pack, &name)?, data.len() as u64);
        assert_eq!(b.get_range(FileKind::Pack, &name, (10 << 20) + 7, 100)?, &data[(10 << 20) + 7..(10 << 20) + 107]);
        // S3 names a multipart object's ETag after its part count.
        let key = b.key(FileKind::Pack, &name);
        let head = b.bucket.head_object(Some(&b.credentials), &key).sign(SIGNED_FOR);
        let reply = b.send("HEAD", &key, b.agent.head(head.as_str()).call())?;
        assert!(reply.etag.as_deref().is_some_and(|e| e.trim_matches('"').ends_with("-3")), "{:?}", reply.etag);
        // Small objects still go up in one PUT.
        b.put(FileKind::Snapshot, &name, b"small")?;
        let key = b.key(FileKind::Snapshot, &name);
        let head = b.bucket.head_object(Some(&b.credentials), &key).sign(SIGNED_FOR);
        let reply = b.send("HEAD", &key, b.agent.head(head.as_str()).call())?;
        assert!(reply.etag.as_deref().is_some_and(|e| !e.contains('-')), "{:?}", reply.etag);
        assert!(b.temporaries()?.is_empty(), "a completed upload leaves nothing behind");
        Ok(())
    }

    #[test]
    fn an_abandoned_upload_is_a_temporary_until_gc_aborts_it() -> Result<()> {
        let Some(b) = on_cluster("abandoned") else { return Ok(()) };
        let b = b.with_multipart(6 << 20, 5 << 20);
        let name = "ab".repeat(32);
        let key = b.key(FileKind::Pack, &name);
        // A process killed after its first part: the upload is never completed.
        let part = vec![7u8; 5 << 20];
        let upload = b.create_upload(FileKind::Pack, &name, &key, &part)?;
        b.upload_part(&key, &upload, 0, &part)?;
        let temps = b.temporaries()?;
        assert_eq!(temps.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [format!("packs/ab/{name}#{upload}")]);
        let now = epoch_ns(SystemTime::now()).unwrap_or(0);
        assert!(!b.is_abandoned(&temps[0], now), "an upload started just now may be in flight");
        let later =
            now + i64::try_from((crate::backend::TEMPORARY_GRACE + Duration::from_secs(60)).as_nanos()).unwrap_or(0);
        assert!(b.is_abandoned(&temps[0], later), "an hour later it is abandoned");
        // Only a pack's upload under this prefix is ever aborted.
        b.remove_temporary(&format!("snapshots/{name}#{upload}"))?;
        assert_eq!(b.temporaries()?.len(), 1);
        b.remove_temporary(&temps[0].name)?;
        assert!(b.temporaries()?.is_empty(), "aborted");
        assert!(b.get(FileKind::Pack, &name).expect_err("never completed").is_not_found());
        Ok(())
    }

    #[test]
    fn garage_takes_any_storage_class_and_reads_the_pack_back() -> Result<()> {
        // Garage has one storage class: it accepts the header (any value) and ignores it, so
        // a pack "in GLACIER" reads back at once. What AWS does is in docs/S3.md.
        let Some(b) = on_cluster("class") else { return Ok(()) };
        let b = b.with_storage_class(Some("deep_archive"))?;
        let (name, bytes) = pack(BlobKind::Chunk);
        b.put(FileKind::Pack, &name, &bytes)?;
        assert!(b.get(FileKind::Pack, &name)? == bytes);
        Ok(())
    }
}
