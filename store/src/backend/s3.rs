//! Repository files in an S3 bucket (AWS, Garage, MinIO, Ceph RGW...), reached with blocking
//! HTTP requests: `rusty-s3` signs each request (a presigned URL, path style) and parses S3's
//! XML; `ureq` sends it from the calling thread, so rayon workers upload and read in parallel
//! with no async runtime, through one pool of kept-alive connections.
//!
//! Keys mirror the local layout under the location's prefix (`PREFIX/packs/ab/<64 hex>`,
//! `PREFIX/snapshots/<64 hex>`, `PREFIX/config`, ...), through the one mapping local.rs uses
//! too ([`relative_path`](super::relative_path)), so a bucket and a folder holding the same
//! repository hold the same names.
//!
//! How the contract is kept without rename:
//! - A PUT is atomic (the whole object or none of it under its name), so there is no `tmp/`
//!   and nothing to rename; a put is one request, or a multipart upload for an object over
//!   64 MiB, which appears under its name only when it is completed (put.rs). Every body
//!   carries a `Content-MD5`; data packs go to the storage class asked for.
//! - "A second put of a name is a no-op": a HEAD first; an existing name is left alone (its
//!   bytes and time). Two writers racing on one name both PUT, which is harmless because the
//!   name is the hash of the bytes. Nothing depends on `If-None-Match` (Garage ignores it).
//! - Ranged reads are HTTP `Range` requests. The ranges of one `get_ranges` call (a restore's
//!   batch of the frames it needs of one pack, scrub's read-back of some blobs) are exact:
//!   those that lie close together are fetched by one request spanning them, nothing more.
//!   A single `get_range` of a pack that starts where an earlier read of it ended (a walk of
//!   trees, one frame each) reads ahead: one request fetches [`READAHEAD`] bytes, kept in a
//!   few windows that the next reads are served from. Packs never change under their name,
//!   so a window is never stale; the windows are bounded ([`READAHEAD_WINDOWS`]), so memory is
//!   too.
//! - Errors: 404 is `NotFound`; 408, 429, 5xx, timeouts and connection failures are
//!   `Transient` (retried by [`RetryBackend`](super::RetryBackend), which wraps every S3
//!   backend); any other status is `Permanent`. Messages carry the HTTP status and S3's error
//!   code.
//! - Temporaries: the incomplete multipart uploads of packs (an upload whose process died
//!   between its first part and its completion); gc aborts those an hour old (put.rs).
//! - An object in an archive storage class (GLACIER, DEEP_ARCHIVE) cannot be read until it is
//!   restored: its `403 InvalidObjectState` is reported as such, naming the object.
//! - Every request is counted by kind, with the bytes it moved ([`RequestCounter`]), for the
//!   request counts a command reports.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::{folder, is_id_name, relative_path, Backend, FileKind, ObjectInfo, RequestCounter, RequestKind};
use crate::error::{BackendError, BackendErrorKind, Error, Result};

mod put;

pub use put::{parse_storage_class, STORAGE_CLASSES};

/// How long a signed request stays valid: long enough for a slow upload of one pack to start.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// Ranges of one object closer than this are fetched by one request (the bytes between them
/// are read and dropped): a request's latency costs more than this many bytes of transfer.
const COALESCE_GAP: u64 = 256 * 1024;

/// The most one coalesced request spans (bounds the memory of one read).
const COALESCE_SPAN: u64 = 64 * 1024 * 1024;

/// How much a sequential read of a pack fetches at once.
const READAHEAD: u64 = 2 * 1024 * 1024;

/// How many read-ahead windows are kept (their memory is at most this many times
/// [`READAHEAD`]), and how many recent read ends are remembered to spot sequential reads.
const READAHEAD_WINDOWS: usize = 16;
const READ_ENDS: usize = 64;

/// The largest object body read into memory (a pack is ~16 MiB; a config is small).
const BODY_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

/// Where an S3 repository is: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http://HOST[:PORT]` or `https://...`.
    pub endpoint: String,
    /// The bucket's name.
    pub bucket: String,
    /// The folder in the bucket, without leading or trailing `/` (empty for the bucket's root).
    pub prefix: String,
}

impl S3Location {
    /// Reads what follows `s3:` (`http://127.0.0.1:3900/bucket/some/prefix`).
    pub fn parse(rest: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "s3:{rest}: {why} (the form is s3:http://HOST[:PORT]/BUCKET[/PREFIX], or https://)"
            ))
        };
        let (scheme, after) = rest.split_once("://").ok_or_else(|| bad("no http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let (host, path) = after.split_once('/').ok_or_else(|| bad("no bucket"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !prefix.is_empty() {
            return Err(bad("the prefix has an empty, `.` or `..` part"));
        }
        url::Url::parse(&format!("{scheme}://{host}")).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { endpoint: format!("{scheme}://{host}"), bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }

    /// The key of a path relative to the repository's root.
    fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// A repository's files in an S3 bucket.
pub struct S3Backend {
    location: S3Location,
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    readahead: Mutex<ReadAhead>,
    requests: Arc<RequestCounter>,
    /// The storage class of new data packs (put.rs); `None`: the bucket's default.
    storage_class: Option<String>,
    /// When objects are uploaded in parts (put.rs).
    multipart: put::Multipart,
}

/// What sequential reads of packs are served from (see the module's notes).
#[derive(Default)]
struct ReadAhead {
    /// Spans of packs fetched ahead, newest last: (pack name, offset, bytes).
    windows: VecDeque<(String, u64, Arc<Vec<u8>>)>,
    /// Where recent reads of packs ended, newest last.
    ends: VecDeque<(String, u64)>,
}

impl ReadAhead {
    fn ended(&mut self, name: &str, end: u64) {
        if self.ends.len() == READ_ENDS {
            self.ends.pop_front();
        }
        self.ends.push_back((name.to_owned(), end));
    }

    fn forget(&mut self, name: &str) {
        self.windows.retain(|w| w.0 != name);
        self.ends.retain(|e| e.0 != name);
    }
}

/// What a request came back with: its status, its body (S3's error XML on failure) and its
/// `ETag` (what completing a multipart upload names each part by).
struct Reply {
    status: u16,
    body: Vec<u8>,
    etag: Option<String>,
}

impl S3Backend {
    /// A backend for `location`, with credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` when set) and the region from
    /// `CAIRN_S3_REGION`, else `AWS_DEFAULT_REGION`, else `AWS_REGION`, else `us-east-1`
    /// (Garage wants the region its config names, `garage` in the test cluster).
    pub fn from_env(location: &S3Location) -> Result<Self> {
        let credentials = Credentials::from_env().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to reach an S3 repository"
            ))
        })?;
        let region = ["CAIRN_S3_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        Self::new(location, credentials, region)
    }

    /// A backend for `location` with the given credentials and region.
    pub fn new(location: &S3Location, credentials: Credentials, region: String) -> Result<Self> {
        let endpoint = url::Url::parse(&location.endpoint)
            .map_err(|e| Error::InvalidInput(format!("{location}: bad endpoint: {e}")))?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, location.bucket.clone(), region)
            .map_err(|e| Error::InvalidInput(format!("{location}: {e}")))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A reply (headers) is due within a minute of the request's end: a server that
            // accepts and never answers costs a bounded attempt (docs/S3.md, "retries").
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(32)
            .build()
            .into();
        Ok(Self {
            location: location.clone(),
            bucket,
            credentials,
            agent,
            readahead: Mutex::default(),
            requests: Arc::default(),
            storage_class: None,
            multipart: put::Multipart::default(),
        })
    }

    fn key(&self, kind: FileKind, name: &str) -> String {
        self.location.key(&relative_path(kind, name))
    }

    /// Where an object is, for messages.
    fn where_is(&self, key: &str) -> String {
        format!("s3:{}/{}/{key}", self.location.endpoint, self.location.bucket)
    }

    /// Sends one request; a failure to get any reply is a transport error (transient when a
    /// retry may help).
    fn send(
        &self,
        what: &str,
        key: &str,
        request: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply> {
        let transport = |e: ureq::Error| {
            use ureq::Error as E;
            let kind = match e {
                E::Timeout(_) | E::Io(_) | E::ConnectionFailed | E::HostNotFound | E::Protocol(_) | E::BodyStalled => {
                    BackendErrorKind::Transient
                }
                _ => BackendErrorKind::Permanent,
            };
            Error::from(BackendError::new(kind, self.where_is(key), format!("{what}: {e}")))
        };
        // Multipart's steps count as what they are: POSTs and part PUTs upload, `LIST uploads`
        // lists, `DELETE upload` deletes.
        let kind = match what.split(' ').next().unwrap_or("") {
            "HEAD" => RequestKind::Head,
            "PUT" | "POST" => RequestKind::Put,
            "LIST" => RequestKind::List,
            "DELETE" => RequestKind::Delete,
            "ranged" => RequestKind::RangedGet,
            _ => RequestKind::Get,
        };
        let mut response = request.inspect_err(|_| self.requests.count(kind, 0)).map_err(transport)?;
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Read into a buffer of the announced length: a 16 MiB pack read by doubling a buffer
        // from nothing held 32 MiB at its peak.
        let length = response.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut body = Vec::with_capacity(usize::try_from(length.unwrap_or(0).min(BODY_LIMIT)).unwrap_or(0));
        let read =
            std::io::Read::read_to_end(&mut response.body_mut().with_config().limit(BODY_LIMIT).reader(), &mut body);
        self.requests.count(kind, body.len() as u64);
        read.map_err(|e| transport(ureq::Error::Io(e)))?;
        Ok(Reply { status, body, etag })
    }

    /// The error for a reply that is not a success, typed by its status.
    fn status_error(&self, what: &str, key: &str, reply: &Reply) -> BackendError {
        let kind = match reply.status {
            404 => BackendErrorKind::NotFound,
            408 | 429 | 500..=599 => BackendErrorKind::Transient,
            _ => BackendErrorKind::Permanent,
        };
        let text = String::from_utf8_lossy(&reply.body);
        let code = xml_field(&text, "Code").unwrap_or("");
        let message = xml_field(&text, "Message").unwrap_or("");
        let detail = [code, message].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(": ");
        let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
        let hint = if code == "InvalidObjectState" {
            // AWS's answer to a read of an object in GLACIER or DEEP_ARCHIVE that was not restored.
            "; the object is in an archive storage class and must be restored before it can be \
             read (`aws s3api restore-object`, then wait for the restore: minutes to hours); see \
             docs/S3.md, \"Storage classes\""
        } else {
            ""
        };
        BackendError::new(kind, self.where_is(key), format!("{what}: HTTP {}{detail}{hint}", reply.status))
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        let key = self.key(kind, name);
        let url = self.bucket.head_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
        let reply = self.send("HEAD", &key, self.agent.head(url.as_str()).call())?;
        match reply.status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error("HEAD", &key, &reply).about(kind, name).into()),
        }
    }

    fn readahead(&self) -> std::sync::MutexGuard<'_, ReadAhead> {
        self.readahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads bytes `offset..offset + len` of an object (len > 0), from a read-ahead window or
    /// reading ahead when it continues an earlier read of the same pack.
    fn read_span(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if kind != FileKind::Pack {
            return self.fetch_range(kind, name, offset, len, len);
        }
        let end = offset + len;
        let sequential = {
            let mut ra = self.readahead();
            let hit = ra
                .windows
                .iter()
                .rev()
                .find(|(n, start, data)| n == name && *start <= offset && end <= start + data.len() as u64);
            if let Some((_, start, data)) = hit {
                let at = usize::try_from(offset - start).unwrap_or(usize::MAX);
                let out = data[at..at + usize::try_from(len).unwrap_or(usize::MAX)].to_vec();
                ra.ended(name, end);
                return Ok(out);
            }
            ra.ends.iter().any(|(n, e)| n == name && offset >= *e && offset - e <= COALESCE_GAP)
        };
        let ask = if sequential { len.max(READAHEAD) } else { len };
        let mut data = self.fetch_range(kind, name, offset, len, ask)?;
        let mut ra = self.readahead();
        ra.ended(name, end);
        if data.len() as u64 > len {
            let out = data[..usize::try_from(len).unwrap_or(usize::MAX)].to_vec();
            if ra.windows.len() == READAHEAD_WINDOWS {
                ra.windows.pop_front();
            }
            ra.windows.push_back((name.to_owned(), offset, Arc::new(data)));
            return Ok(out);
        }
        data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(data)
    }

    /// Reads bytes `offset..offset + ask` of an object (ask >= need > 0); fewer than `need`
    /// is damage, fewer than `ask` (the object ends before) is what there is.
    fn fetch_range(&self, kind: FileKind, name: &str, offset: u64, need: u64, ask: u64) -> Result<Vec<u8>> {
        let len = need;
        let key = self.key(kind, name);
        let url = self.bucket.get_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
        let range = format!("bytes={offset}-{}", offset + ask - 1);
        log::debug!("s3: GET {key} {range}");
        let reply = self.send("ranged GET", &key, self.agent.get(url.as_str()).header("range", &range).call())?;
        let short = |got: usize| {
            Error::corrupt(
                super::describe(kind, name),
                format!("{} bytes at offset {offset} asked, the object has {got} there", len),
            )
        };
        let mut body = match reply.status {
            206 => reply.body,
            // A server that ignores `Range` sends the whole object.
            200 => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(reply.body.len());
                reply.body[start..].to_vec()
            }
            416 => return Err(short(0)),
            _ => return Err(self.status_error("ranged GET", &key, &reply).about(kind, name).into()),
        };
        if body.len() < usize::try_from(need).unwrap_or(usize::MAX) {
            return Err(short(body.len()));
        }
        body.truncate(usize::try_from(ask).unwrap_or(usize::MAX));
        Ok(body)
    }
}

/// The text of the first `<field>...</field>` in an XML error body.
fn xml_field<'a>(xml: &'a str, field: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{field}>"))? + field.len() + 2;
    let end = xml[start..].find(&format!("</{field}>"))?;
    Some(xml[start..start + end].trim())
}

/// Groups ranges (by index into `ranges`) whose spans lie within [`COALESCE_GAP`] of each
/// other, each group spanning at most [`COALESCE_SPAN`]: `(start, end, members)`.
fn coalesce(ranges: &[(u64, usize)]) -> Vec<(u64, u64, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].1 > 0).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut groups: Vec<(u64, u64, Vec<usize>)> = Vec::new();
    for i in order {
        let (start, end) = (ranges[i].0, ranges[i].0 + ranges[i].1 as u64);
        match groups.last_mut() {
            Some(g) if start <= g.1 + COALESCE_GAP && end.max(g.1) - g.0 <= COALESCE_SPAN => {
                g.1 = g.1.max(end);
                g.2.push(i);
            }
            _ => groups.push((start, end, vec![i])),
        }
    }
    groups
}

impl Backend for S3Backend {
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        // An existing name keeps its bytes (see the module's notes); the config is rewritten.
        if kind != FileKind::Config && self.exists(kind, name)? {
            return Ok(());
        }
        self.put_object(kind, name, &self.key(kind, name), data)
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        let url = self.bucket.get_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
        let reply = self.send("GET", &key, self.agent.get(url.as_str()).call())?;
        if reply.status == 200 {
            Ok(reply.body)
        } else {
            Err(self.status_error("GET", &key, &reply).about(kind, name).into())
        }
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(self.get_ranges(kind, name, &[(offset, 0)])?.pop().unwrap_or_default());
        }
        self.read_span(kind, name, offset, len as u64)
    }

    fn get_ranges(&self, kind: FileKind, name: &str, ranges: &[(u64, usize)]) -> Result<Vec<Vec<u8>>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = vec![Vec::new(); ranges.len()];
        let groups = coalesce(ranges);
        if groups.is_empty() {
            // Only empty ranges: the object must still be there, and long enough.
            let size = self.size(kind, name)?;
            if let Some(&(offset, _)) = ranges.iter().find(|r| r.0 > size) {
                return Err(Error::corrupt(
                    super::describe(kind, name),
                    format!("offset {offset} is past its end ({size} bytes)"),
                ));
            }
            return Ok(out);
        }
        for (start, end, members) in groups {
            let span = self.fetch_range(kind, name, start, end - start, end - start)?;
            for i in members {
                let (offset, len) = ranges[i];
                let at = usize::try_from(offset - start).unwrap_or(usize::MAX);
                out[i] = span[at..at + len].to_vec();
            }
        }
        Ok(out)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = self.key(kind, name);
        let url = self.bucket.head_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
        let call = self.agent.head(url.as_str()).call();
        let length =
            call.as_ref().ok().and_then(|r| r.headers().get("content-length")?.to_str().ok()?.parse::<u64>().ok());
        let reply = self.send("HEAD", &key, call)?;
        match (reply.status, length) {
            (200, Some(length)) => Ok(length),
            (200, None) => {
                Err(BackendError::new(BackendErrorKind::Permanent, self.where_is(&key), "HEAD: no Content-Length")
                    .about(kind, name)
                    .into())
            }
            _ => Err(self.status_error("HEAD", &key, &reply).about(kind, name).into()),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        let Some(dir) = folder(kind) else { return Ok(Vec::new()) };
        let prefix = self.location.key(&format!("{dir}/"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: each page holds up to 1000 keys, and a listing of a million pages is a bug.
        for _page in 0..1_000_000 {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let reply = self.send("LIST", &prefix, self.agent.get(url.as_str()).call())?;
            if reply.status != 200 {
                return Err(self.status_error("LIST", &prefix, &reply).into());
            }
            let text = String::from_utf8_lossy(&reply.body);
            let page = ListObjectsV2::parse_response(&text).map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Transient,
                    self.where_is(&prefix),
                    format!("LIST: unreadable reply: {e}"),
                )
            })?;
            for o in page.contents {
                let name = o.key.rsplit('/').next().unwrap_or("");
                // Packs sit one folder deeper (`packs/ab/<id>`); anything else is skipped.
                let depth_ok = o
                    .key
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.matches('/').count() == usize::from(kind == FileKind::Pack));
                if !is_id_name(name) || !depth_ok {
                    continue;
                }
                let modified = o
                    .last_modified
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .and_then(|t| i64::try_from(t.as_nanosecond()).ok());
                out.push(ObjectInfo::new(name, o.size.unwrap_or(0), modified));
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => {
                    out.sort_by(|a, b| a.name.cmp(&b.name));
                    return Ok(out);
                }
            }
        }
        Err(BackendError::new(BackendErrorKind::Permanent, self.where_is(&prefix), "LIST: the listing never ended")
            .into())
    }

    fn requests(&self) -> Option<Arc<RequestCounter>> {
        Some(self.requests.clone())
    }

    fn temporaries(&self) -> Result<Vec<ObjectInfo>> {
        self.multipart_temporaries()
    }

    fn remove_temporary(&self, name: &str) -> Result<()> {
        self.abort_temporary(name)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.readahead().forget(name);
        let key = self.key(kind, name);
        let url = self.bucket.delete_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
        let reply = self.send("DELETE", &key, self.agent.delete(url.as_str()).call())?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.status_error("DELETE", &key, &reply).about(kind, name).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_read_back() {
        let l = S3Location::parse("http://127.0.0.1:3900/bucket/some/prefix/").unwrap();
        assert_eq!(
            (l.endpoint.as_str(), l.bucket.as_str(), l.prefix.as_str()),
            ("http://127.0.0.1:3900", "bucket", "some/prefix")
        );
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:3900/bucket/some/prefix");
        assert_eq!(l.key("packs/ab/x"), "some/prefix/packs/ab/x");
        let l = S3Location::parse("https://s3.example.com/b").unwrap();
        assert_eq!((l.prefix.as_str(), l.key("config").as_str()), ("", "config"));
        for bad in ["bucket", "ftp://h/b", "http://h", "http://h/", "http:///b", "http://h/b/x/../y"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn close_ranges_share_one_request_and_far_ones_do_not() {
        let ranges = [(1_000_000, 10), (0, 10), (100, 50), (5, 0), (120, 50)];
        assert_eq!(coalesce(&ranges), vec![(0, 170, vec![1, 2, 4]), (1_000_000, 1_000_010, vec![0])]);
        assert!(coalesce(&[(7, 0)]).is_empty());
    }
}
