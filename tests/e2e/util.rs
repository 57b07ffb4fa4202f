//! Shared helpers: running the binary, generating hostile trees, describing trees for
//! byte-for-byte and metadata-for-metadata comparison.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The binary under test: this build's, or the one `CAIRN_TEST_BIN` names (to run a test
/// against another build, e.g. to see a regression test fail on the code before its fix).
pub fn cairn_bin() -> PathBuf {
    std::env::var_os("CAIRN_TEST_BIN").map_or_else(|| assert_cmd::cargo::cargo_bin("cairn"), PathBuf::from)
}

/// A `cairn` command aimed at `repo`, with a clean environment for cairn's variables.
pub fn cairn(repo: &Path) -> Command {
    let mut cmd = Command::new(cairn_bin());
    cmd.env("CAIRN_REPO", repo).env_remove("CAIRN_IO_STATS").env("TZ", "UTC");
    cmd
}

/// A `cairn` command (no environment set) that cannot read what its user may not: as root,
/// which reads everything, it runs as nobody, and `dir` (the repository and the tree) becomes
/// nobody's.
pub fn cairn_unprivileged(dir: &Path) -> std::process::Command {
    if !is_root() {
        return std::process::Command::new(cairn_bin());
    }
    for e in walkdir::WalkDir::new(dir) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(cairn_bin());
    c
}

/// A `cairn` process aimed at `repo` with fail-points armed (`CAIRN_FAILPOINTS`, for
/// example `restore.file_written=pause@150`), its output captured: to spawn and race.
pub fn cairn_failing(repo: &Path, failpoints: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(cairn_bin());
    cmd.env("CAIRN_REPO", repo)
        .env("CAIRN_FAILPOINTS", failpoints)
        .env_remove("CAIRN_IO_STATS")
        .env("TZ", "UTC")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Waits until `cond` holds (a racing process has reached the moment a test wants), failing
/// the test after 30 s.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs cairn with `--json` and parses stdout; asserts the exit code.
pub fn cairn_json(repo: &Path, args: &[&OsStr], code: i32) -> serde_json::Value {
    let out = cairn(repo).arg("--json").args(args).output().expect("run cairn");
    assert_eq!(
        out.status.code(),
        Some(code),
        "cairn {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `OsStr` arguments from anything path-like.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*] };
}

/// A new repository in a temp dir; returns (tempdir, repo path).
pub fn new_repo() -> (tempfile::TempDir, PathBuf) {
    new_repo_with_packs(None)
}

/// A new repository with packs of `size` (like `64K`: many packs from little data).
pub fn new_repo_with_packs(size: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    init_repo(&repo, size);
    (dir, repo)
}

/// Initialises a repository at `repo`, with packs of `size` when given.
pub fn init_repo(repo: &Path, size: Option<&str>) {
    let mut cmd = cairn(repo);
    cmd.arg("init");
    if let Some(size) = size {
        cmd.args(["--pack-size", size]);
    }
    cmd.assert().success();
}

/// The pack files of a repository, sorted.
pub fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(repo.join("packs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    v.sort();
    v
}

/// Total size of a repository's pack files.
pub fn pack_bytes(repo: &Path) -> u64 {
    pack_files(repo).iter().map(|p| fs::metadata(p).expect("pack").len()).sum()
}

/// Where a restore puts `source` under `target`.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source"))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tmpfs mounted for a test; unmounted when dropped.
pub struct Mounted(PathBuf);

impl Mounted {
    /// Unmounts `at` when dropped (for mounts a test made itself).
    pub fn new(at: &Path) -> Self {
        Self(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (like `24m`) at `at` (root only); `None` when that cannot be done.
pub fn mount_tmpfs(at: &Path, size: &str) -> Option<Mounted> {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(at.to_path_buf()))
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Compressible text-like bytes (config files, logs).
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "server",
            "listen",
            "8080;",
            "upstream",
            "proxy_pass",
            "error_log",
            "INFO",
            "user=",
            "\n",
            "timeout",
            "=",
            "/var/lib",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
            v.push(b' ');
        }
        v.truncate(n);
        v
    }
}

/// Whether this filesystem takes `user.` extended attributes.
pub fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").ok();
    let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
    fs::remove_file(&probe).ok();
    ok
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let ts = rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps { last_access: ts, last_modification: ts },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Generates a tree holding every kind of entry cairn keeps, odd names, deep nesting,
/// multi-chunk and sparse files. Sizes scale with `scale` (1 = a few MiB).
pub fn generate(root: &Path, seed: u64, scale: usize) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(root).expect("mkdir root");
    // Plain files of many sizes in a few directories.
    for d in 0..4 {
        let dir = root.join(format!("dir{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..(10 * scale) {
            let len = match rng.below(10) {
                0 => 0,
                1..=6 => rng.below(8 * 1024) as usize,
                7 | 8 => rng.below(200 * 1024) as usize,
                _ => 300 * 1024 + rng.below(1 << 20) as usize,
            };
            let data = if rng.below(2) == 0 { rng.text(len) } else { rng.bytes(len) };
            let p = dir.join(format!("file{f}.dat"));
            fs::write(&p, data).expect("write");
            fs::set_permissions(&p, fs::Permissions::from_mode([0o644, 0o600, 0o755, 0o444][rng.below(4) as usize]))
                .expect("chmod");
        }
    }
    // A multi-chunk file with repeated regions (dedup inside a file).
    let block = rng.bytes(256 * 1024);
    let mut big = Vec::new();
    for i in 0..(4 * scale) {
        big.extend_from_slice(&block);
        big.extend_from_slice(&rng.bytes(64 * 1024 + i));
    }
    fs::write(root.join("big.bin"), &big).expect("write big");
    // Odd names: spaces, newline, non-UTF-8 bytes, 200 characters, leading dash, unicode.
    let odd = root.join("odd names");
    fs::create_dir_all(&odd).expect("mkdir odd");
    let long = "L".repeat(200);
    let names: Vec<&[u8]> = vec![
        b"with space",
        b"new\nline",
        b"\xff\xfe not utf8 \x80",
        long.as_bytes(),
        b"-leading-dash",
        "unicod\u{e9} \u{1f980}".as_bytes(),
        b"tab\there",
        b"back\\slash",
    ];
    for n in &names {
        fs::write(odd.join(OsStr::from_bytes(n)), rng.text(100)).expect("write odd");
    }
    // 40 levels of nesting.
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("level{i:02}"));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    fs::write(deep.join("bottom.txt"), b"the bottom\n").expect("write deep");
    // Empty directories, one with unusual permissions.
    fs::create_dir_all(root.join("empty/inner-empty")).expect("mkdir empty");
    fs::create_dir_all(root.join("private")).expect("mkdir private");
    fs::write(root.join("private/secret"), b"k").expect("write secret");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    // Symlinks: relative, absolute, dangling, to a directory.
    std::os::unix::fs::symlink("dir0/file0.dat", root.join("link-rel")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).expect("symlink");
    std::os::unix::fs::symlink("deep", root.join("link-dir")).expect("symlink");
    // Hard links, one across directories.
    fs::write(root.join("dir0/hard-a"), rng.text(5000)).expect("write");
    fs::hard_link(root.join("dir0/hard-a"), root.join("dir1/hard-b")).expect("hardlink");
    fs::hard_link(root.join("dir0/hard-a"), root.join("hard-c")).expect("hardlink");
    // A sparse file: data, a large hole, data, trailing hole.
    let sparse = fs::File::create(root.join("sparse.img")).expect("create sparse");
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&rng.bytes(100_000), 0).expect("write sparse");
    sparse.write_all_at(&rng.bytes(50_000), 8 << 20).expect("write sparse");
    sparse.set_len(16 << 20).expect("extend sparse");
    drop(sparse);
    // FIFO and (as root) device nodes.
    rustix::fs::mknodat(rustix::fs::CWD, root.join("fifo"), rustix::fs::FileType::Fifo, 0o640.into(), 0)
        .expect("mkfifo");
    if is_root() {
        let dev = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("chardev"),
            rustix::fs::FileType::CharacterDevice,
            0o600.into(),
            dev,
        )
        .expect("mknod");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("blockdev"),
            rustix::fs::FileType::BlockDevice,
            0o600.into(),
            rustix::fs::makedev(7, 200),
        )
        .expect("mknod");
        // Owners that exist nowhere, and setuid/setgid bits (kept after chown).
        std::os::unix::fs::lchown(root.join("dir1/file0.dat"), Some(4242), Some(4343)).expect("chown");
        std::os::unix::fs::lchown(root.join("link-rel"), Some(4242), Some(4343)).expect("lchown");
        fs::set_permissions(root.join("dir2/file1.dat"), fs::Permissions::from_mode(0o4755)).expect("setuid");
        fs::set_permissions(root.join("dir3"), fs::Permissions::from_mode(0o2775)).expect("setgid dir");
    }
    if xattrs_supported(root) {
        xattr::set(root.join("dir0/file1.dat"), "user.checksum", b"abc\0def").expect("xattr");
        xattr::set(root.join("dir0/file1.dat"), "user.empty", b"").expect("xattr");
        xattr::set(root.join("dir1"), "user.on-a-dir", b"yes").expect("xattr");
    }
    // Times to the nanosecond, some before 1970, set last (children change their directories).
    set_mtime(&root.join("dir0/file2.dat"), 1_234_567_890, 123_456_789);
    set_mtime(&root.join("dir0/file3.dat"), -86_400 * 365, 999_999_999);
    set_mtime(&root.join("link-rel"), 1_000_000_000, 1);
    set_mtime(&root.join("empty"), 1_500_000_000, 42);
}

/// Changes a generated tree the way an hour of service life does: edits, appends, new files,
/// deletions, a mode change, a rename.
pub fn mutate(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed ^ 0xABCD);
    let pick = |rng: &mut Rng, d: u64| root.join(format!("dir{}/file{}.dat", d, rng.below(10)));
    for d in 0..4 {
        let p = pick(&mut rng, d);
        if p.exists() {
            let mut data = fs::read(&p).expect("read");
            if !data.is_empty() {
                let at = rng.below(data.len() as u64) as usize;
                data[at] ^= 0x5A;
            }
            data.extend_from_slice(&rng.text(1000));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).ok();
            fs::write(&p, data).expect("edit");
        }
    }
    fs::write(root.join(format!("dir0/new-{seed}.log")), rng.text(20_000)).expect("new file");
    let victim = root.join(format!("dir1/file{}.dat", 1 + rng.below(8)));
    fs::remove_file(victim).ok();
    fs::set_permissions(root.join("dir2/file2.dat"), fs::Permissions::from_mode(0o640)).ok();
    let from = root.join("dir3/file3.dat");
    if from.exists() {
        fs::rename(from, root.join(format!("dir3/renamed-{seed}.dat"))).expect("rename");
    }
    // Modify the middle of the big file: only a chunk or two should be stored again.
    let big = root.join("big.bin");
    let mut data = fs::read(&big).expect("read big");
    let mid = data.len() / 2;
    data[mid..mid + 100].copy_from_slice(&rng.bytes(100));
    fs::write(&big, data).expect("write big");
}

/// Everything a restore must reproduce about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<blake3::Hash>,
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For hard-linked files: the first path (in sort order) of the link group.
    pub link_group: Option<Vec<u8>>,
    /// A file with at least half of it unallocated.
    pub sparse: bool,
}

/// Describes every entry below `root` (root itself included as ""), keyed by relative path.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Desc> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut entries: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(root).expect("under root").as_os_str().as_bytes().to_vec();
        entries.push((rel, e.path().to_path_buf()));
    }
    for (rel, path) in entries {
        let m = fs::symlink_metadata(&path).expect("lstat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            'f'
        } else if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            's'
        };
        let link_group = (kind == 'f' && m.nlink() > 1)
            .then(|| inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone());
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = if kind == 'l' {
            Vec::new()
        } else {
            xattr::list(&path)
                .map(|names| {
                    names.filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(&path, &n).ok().flatten()?))).collect()
                })
                .unwrap_or_default()
        };
        xattrs.sort();
        out.insert(
            rel,
            Desc {
                kind,
                mode: if kind == 'l' { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if kind == 'f' { m.len() } else { 0 },
                content: (kind == 'f').then(|| blake3::hash(&fs::read(&path).expect("read"))),
                target: (kind == 'l').then(|| fs::read_link(&path).expect("readlink").as_os_str().as_bytes().to_vec()),
                rdev: if kind == 'c' || kind == 'b' { m.rdev() } else { 0 },
                xattrs,
                link_group,
                sparse: kind == 'f' && m.len() > 1 << 20 && m.blocks() * 512 < m.len() / 2,
            },
        );
    }
    out
}

/// Asserts two descriptions are equal, naming the first differences readably.
pub fn assert_same(expected: &BTreeMap<Vec<u8>, Desc>, actual: &BTreeMap<Vec<u8>, Desc>, what: &str) {
    let mut problems = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => problems.push(format!("missing {:?}", String::from_utf8_lossy(k))),
            Some(a) if a != v => {
                problems.push(format!("differs {:?}:\n  want {v:?}\n  got  {a:?}", String::from_utf8_lossy(k)))
            }
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            problems.push(format!("unexpected {:?}", String::from_utf8_lossy(k)));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: {} differences:\n{}",
        problems.len(),
        problems.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
}
