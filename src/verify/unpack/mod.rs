//! Safe, streaming unpacking of releases into a fresh directory: tar
//! streams, gzip (multi-member), zstd, xz, bzip2 or uncompressed, told apart
//! by their first bytes and read in one pass (`tar.rs`), and ZIP packages,
//! read from a file because their directory sits at the end (`zip.rs`).
//!
//! Every entry is checked before anything is written for it: no absolute
//! paths, no `..`, nothing written through a symlink, no symlink or hardlink
//! that resolves outside the release, no devices or FIFOs, no duplicates,
//! setuid/setgid/sticky bits stripped, and byte, entry and compression-ratio
//! limits enforced as the stream arrives (a decompression bomb stops at the
//! limit, not after).
//!
//! The destination must be a new, empty directory that nothing else writes
//! to: the checks rely on knowing every entry in it, so they never follow a
//! symlink they have not validated.

mod tar;
mod writer;
mod zip;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::UnpackLimits;
use crate::fs::{self, FsError};

pub(crate) use self::tar::unpack_tar;
pub(crate) use self::zip::unpack_zip;

/// Why an archive was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry broke a safety rule; nothing outside the staging directory was touched.
    #[error("refused archive entry {entry:?}: {rule}")]
    Refused {
        /// The entry's name as stored in the archive.
        entry: String,
        /// Which rule it broke.
        rule: String,
    },
    /// The archive is larger than the configured limits.
    /// (The caller that knows whose limits they are says which to raise:
    /// see `OverLimit`.)
    #[error("archive refused: {0}")]
    Limit(String),
    /// [`UnpackError::Limit`] for a release, naming the app's limits.
    #[error(
        "archive refused: {detail}; raise max_bytes, max_entries or max_compression_ratio in [apps.{app}.unpack] if this release is genuine"
    )]
    OverLimit {
        /// The app whose `[apps.<name>.unpack]` limits the release broke.
        app: String,
        /// Which limit, by how much.
        detail: String,
    },
    /// The asset's first bytes are no archive format this installs.
    #[error(
        "the asset is not an archive Switchyard installs (its first bytes, {head}, are none of gzip, zstd, xz, bzip2, tar or zip); formats are told by content, not by name"
    )]
    UnknownFormat {
        /// The first bytes, hex.
        head: String,
    },
    /// The stream is not a valid archive of the format its first bytes announce.
    #[error("the asset is not a valid .{format} archive{}", entry.as_ref().map(|e| format!(" (reading entry {e:?})")).unwrap_or_default())]
    Corrupt {
        /// The format its first bytes announced.
        format: &'static str,
        /// The entry being read, when the failure was inside one.
        entry: Option<String>,
        /// What the decompressor or archive reader said.
        #[source]
        source: io::Error,
    },
    /// A file-system operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// An archive format, as its first bytes announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// gzip-compressed tar (`.tar.gz`, `.tgz`, `.crate`); several members are read as one stream.
    TarGz,
    /// zstd-compressed tar (`.tar.zst`, `.tzst`).
    TarZst,
    /// xz-compressed tar (`.tar.xz`, `.txz`).
    TarXz,
    /// bzip2-compressed tar (`.tar.bz2`, `.tbz2`).
    TarBz2,
    /// Uncompressed tar.
    Tar,
    /// A ZIP package (read from a file: its directory is at the end).
    Zip,
}

/// Bytes [`ArchiveFormat::sniff`] wants to see: a tar header's magic ends at 263.
pub(crate) const SNIFF_BYTES: usize = 512;

impl ArchiveFormat {
    /// Tells the format from the first bytes (up to [`SNIFF_BYTES`]).
    pub fn sniff(head: &[u8]) -> Option<ArchiveFormat> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(ArchiveFormat::TarGz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(ArchiveFormat::TarZst)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(ArchiveFormat::TarXz)
        } else if head.starts_with(b"BZh") {
            Some(ArchiveFormat::TarBz2)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(ArchiveFormat::Zip)
        } else if head.len() >= 263 && &head[257..262] == b"ustar" {
            Some(ArchiveFormat::Tar)
        } else {
            None
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::TarZst => "tar.zst",
            ArchiveFormat::TarXz => "tar.xz",
            ArchiveFormat::TarBz2 => "tar.bz2",
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::Zip => "zip",
        }
    }
}

/// A reader whose first bytes were read ahead to tell the format.
pub(crate) struct Sniffed<R> {
    head: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R: Read> Sniffed<R> {
    /// Reads up to [`SNIFF_BYTES`] from `inner`.
    pub(crate) fn new(mut inner: R) -> io::Result<Self> {
        let mut head = vec![0u8; SNIFF_BYTES];
        let mut n = 0;
        while n < head.len() {
            match inner.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        head.truncate(n);
        Ok(Sniffed {
            head,
            pos: 0,
            inner,
        })
    }

    /// The format the first bytes announce, or why none.
    pub(crate) fn format(&self) -> Result<ArchiveFormat, UnpackError> {
        ArchiveFormat::sniff(&self.head).ok_or_else(|| UnpackError::UnknownFormat {
            head: if self.head.is_empty() {
                "none: it is empty".into()
            } else {
                hex::encode(&self.head[..self.head.len().min(8)])
            },
        })
    }
}

impl<R: Read> Read for Sniffed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// What decides whether a single top directory is stripped, besides
/// `strip_top_dir`: the release's version and the names it may carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct StripHints {
    /// The release's version, without a leading `v` (`1.2.3`).
    pub(crate) version: Option<String>,
    /// Names a release's top directory may carry: the app's, the repository's.
    pub(crate) names: Vec<String>,
}

impl StripHints {
    /// Whether a lone top directory called `top` is packaging rather than
    /// content: its name carries the version (`myapp-1.2.3`, `web-1.2.0`),
    /// one of the names (`myapp`, `myapp-linux`), or a commit
    /// (`repo-<7 to 40 hex digits>`, as GitHub names source archives).
    pub(crate) fn is_packaging_dir(&self, top: &str) -> bool {
        let low = top.to_lowercase();
        if let Some(v) = self.version.as_deref().filter(|v| !v.is_empty()) {
            let v = v.to_lowercase();
            let mut from = 0;
            while let Some(i) = low[from..].find(&v) {
                let at = from + i;
                let before = low[..at].chars().next_back();
                let after = low[at + v.len()..].chars().next();
                // 1.2.3 is not carried by 11.2.3 or 1.2.30.
                if !before.is_some_and(|c| c.is_ascii_digit())
                    && !after.is_some_and(|c| c.is_ascii_digit())
                {
                    return true;
                }
                from = at + 1;
            }
        }
        let sep = |c: char| matches!(c, '-' | '_' | '.');
        for n in &self.names {
            let n = n.to_lowercase();
            if n.is_empty() {
                continue;
            }
            let carried = low.match_indices(&n).any(|(at, _)| {
                let before = low[..at].chars().next_back();
                let after = low[at + n.len()..].chars().next();
                before.is_none_or(sep) && after.is_none_or(sep)
            });
            if carried {
                return true;
            }
        }
        match low.rsplit_once('-') {
            Some((base, sha)) => {
                !base.is_empty()
                    && (7..=40).contains(&sha.len())
                    && sha.bytes().all(|b| b.is_ascii_hexdigit())
                    && sha.bytes().any(|b| b.is_ascii_digit())
            }
            None => false,
        }
    }
}

/// One entry of a release's manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the release root, `/`-separated.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: EntryKind,
    /// Permission bits as installed.
    pub mode: u32,
    /// Size in bytes (files only; 0 otherwise).
    pub size: u64,
    /// SHA-256 of the contents (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The kind of a manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file (hardlinks in the archive become files sharing data).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// What was unpacked.
#[derive(Debug)]
pub struct Unpacked {
    /// The directory holding the release: the destination, or its single
    /// top-level directory when that was stripped.
    pub content_root: PathBuf,
    /// Every entry, relative to `content_root`, sorted by path.
    pub manifest: Vec<ManifestEntry>,
    /// Bytes of file content written.
    pub content_bytes: u64,
    /// The single top directory that was stripped, if one was.
    pub stripped_top_dir: Option<String>,
    /// The archive's format.
    pub format: ArchiveFormat,
}

#[derive(Debug, Clone)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        size: u64,
        sha256: writer::FileSum,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Unpacked bytes below which the compression ratio is not judged: small
/// files of zeros or repeated text compress far better than whole releases.
pub(crate) const RATIO_FLOOR_BYTES: u64 = 8 << 20;

/// Which limit stopped the stream.
#[derive(Debug, Clone, Copy)]
enum Trip {
    Bytes,
    Ratio { unpacked: u64, compressed: u64 },
}

/// Compressed bytes read and unpacked bytes produced, shared by the
/// readers on either side of the decompressor.
#[derive(Default)]
struct Meter {
    compressed: Cell<u64>,
    unpacked: Cell<u64>,
    trip: Cell<Option<Trip>>,
}

/// Counts the compressed bytes a decompressor reads.
struct Counting<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.meter.compressed;
        m.set(m.get() + n as u64);
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for Counting<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Counts unpacked bytes and stops the stream once past `limit`, or once
/// they exceed `ratio` times the compressed bytes read (past
/// [`RATIO_FLOOR_BYTES`]).
struct Limited<R> {
    inner: R,
    meter: Rc<Meter>,
    limit: u64,
    ratio: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.meter;
        let seen = m.unpacked.get() + n as u64;
        m.unpacked.set(seen);
        if seen > self.limit {
            m.trip.set(Some(Trip::Bytes));
            return Err(io::Error::other("unpacked size limit reached"));
        }
        let compressed = m.compressed.get().max(1);
        if seen > RATIO_FLOOR_BYTES && seen / compressed >= self.ratio {
            m.trip.set(Some(Trip::Ratio {
                unpacked: seen,
                compressed,
            }));
            return Err(io::Error::other("compression ratio limit reached"));
        }
        Ok(n)
    }
}

/// Headroom over `max_bytes` for tar headers and padding, so an archive whose
/// content is exactly at the limit is not refused for its framing.
fn framing_allowance(limits: &UnpackLimits) -> u64 {
    limits.max_entries.saturating_mul(1536).min(1 << 30)
}

/// Unpacks the gzip-compressed tar stream `reader` into `dest`, which must be
/// a new, empty directory (the entry point for Switchyard's own archives:
/// backups). Reads the gzip stream to its end, but not what may follow it.
pub fn unpack_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    unpack_tar(
        ArchiveFormat::TarGz,
        reader,
        dest,
        limits,
        &StripHints::default(),
    )
}

fn refuse(entry: &str, rule: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        rule: rule.into(),
    }
}

/// Splits an archive path into safe components, or says which rule it breaks.
fn components(raw: &str) -> Result<Vec<&str>, String> {
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    if raw.contains('\\') {
        return Err("backslashes are not allowed in entry names".into());
    }
    let mut out = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("'..' path components are not allowed".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// One entry as the format readers hand it over.
enum Incoming<'r> {
    Dir,
    File {
        /// The size the archive declares (refused early when over budget).
        declared: u64,
        data: &'r mut dyn Read,
        mtime: Option<u64>,
    },
    Symlink(String),
    Hardlink(String),
}

/// The format-independent half: checks each entry against the rules and
/// what came before, and writes it.
struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a UnpackLimits,
    hints: &'a StripHints,
    format: ArchiveFormat,
    meter: Rc<Meter>,
    nodes: HashMap<String, Node>,
    order: Vec<String>,
    entries: u64,
    content_bytes: u64,
    files: writer::Files,
}

impl<'a> Unpacker<'a> {
    fn new(
        dest: &'a Path,
        limits: &'a UnpackLimits,
        hints: &'a StripHints,
        format: ArchiveFormat,
        meter: Rc<Meter>,
    ) -> Self {
        Unpacker {
            dest,
            limits,
            hints,
            format,
            meter,
            nodes: HashMap::new(),
            order: Vec::new(),
            entries: 0,
            content_bytes: 0,
            files: writer::Files::new(),
        }
    }

    /// The error an I/O failure of the archive stream stands for: a limit
    /// when one tripped, else a corrupt archive.
    fn stream_error(&self, e: io::Error, entry: Option<String>) -> UnpackError {
        match self.meter.trip.get() {
            Some(Trip::Bytes) => UnpackError::Limit(format!(
                "it unpacks to more than max_bytes = {} bytes",
                self.limits.max_bytes
            )),
            Some(Trip::Ratio {
                unpacked,
                compressed,
            }) => UnpackError::Limit(format!(
                "it unpacks to more than max_compression_ratio = {} times its compressed size ({unpacked} bytes from {compressed} compressed bytes when it was stopped), as a decompression bomb does",
                self.limits.max_compression_ratio
            )),
            None => UnpackError::Corrupt {
                format: self.format.extension(),
                entry,
                source: e,
            },
        }
    }

    /// Counts an entry against `max_entries`.
    fn count(&mut self) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::Limit(format!(
                "it has more than max_entries = {} entries",
                self.limits.max_entries
            )));
        }
        Ok(())
    }

    /// Checks and writes one entry named `raw_bytes` with permission bits `mode`.
    fn add(&mut self, raw_bytes: &[u8], mode: u32, what: Incoming<'_>) -> Result<(), UnpackError> {
        let raw = String::from_utf8_lossy(raw_bytes).into_owned();
        self.count()?;
        if std::str::from_utf8(raw_bytes).is_err() {
            return Err(refuse(&raw, "entry names must be UTF-8"));
        }
        let comps = components(&raw).map_err(|r| refuse(&raw, r))?;
        if comps.is_empty() {
            if matches!(what, Incoming::Dir) {
                return Ok(());
            }
            return Err(refuse(&raw, "entry has an empty path"));
        }
        let key = comps.join("/");
        self.ensure_parents(&raw, &comps)?;
        let existing = self.nodes.get(&key).cloned();
        let mode = mode & 0o777;
        let target_path = self.dest.join(&key);

        if let Incoming::Dir = what {
            return match existing {
                None => {
                    fs::create_dir(&target_path, 0o700)?;
                    self.insert(key, Node::Dir { mode });
                    Ok(())
                }
                // A directory listed twice (GNU tar does this) overwrites
                // nothing; any other duplicate is refused.
                Some(Node::Dir { .. }) => {
                    self.nodes.insert(key, Node::Dir { mode });
                    Ok(())
                }
                Some(_) => Err(refuse(&raw, "duplicate entry")),
            };
        }
        if existing.is_some() {
            return Err(refuse(&raw, "duplicate entry"));
        }
        match what {
            Incoming::Dir => unreachable!("handled above"),
            Incoming::File {
                declared,
                data,
                mtime,
            } => {
                let budget = self.limits.max_bytes.saturating_sub(self.content_bytes);
                let over = || {
                    UnpackError::Limit(format!(
                        "entry {raw:?} would take the release past max_bytes = {} bytes",
                        self.limits.max_bytes
                    ))
                };
                if declared > budget {
                    return Err(over());
                }
                let (size, sha256) =
                    match self
                        .files
                        .write(&target_path, mode, mtime, declared, data, budget)
                    {
                        Ok(done) => done,
                        Err(writer::WriteError::Read(e)) => {
                            return Err(self.stream_error(e, Some(raw)));
                        }
                        Err(writer::WriteError::Budget) => return Err(over()),
                        Err(writer::WriteError::Fs(e)) => return Err(e.into()),
                    };
                self.content_bytes += size;
                self.insert(key, Node::File { size, sha256, mode });
                Ok(())
            }
            Incoming::Symlink(target) => {
                if target.is_empty() {
                    return Err(refuse(&raw, "symlink with an empty target"));
                }
                if target.starts_with('/') {
                    return Err(refuse(
                        &raw,
                        format!(
                            "symlink target {target:?} is absolute; only relative links inside the release are allowed"
                        ),
                    ));
                }
                let parent: Vec<String> = comps[..comps.len() - 1]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if resolve_escapes(&self.nodes, &parent, &target, 0) {
                    return Err(refuse(
                        &raw,
                        format!("symlink target {target:?} resolves outside the release directory"),
                    ));
                }
                fs::symlink(Path::new(&target), &target_path)?;
                self.insert(key, Node::Symlink { target });
                Ok(())
            }
            Incoming::Hardlink(target) => {
                let tcomps = components(&target)
                    .map_err(|r| refuse(&raw, format!("hardlink target {target:?}: {r}")))?;
                let tkey = tcomps.join("/");
                let Some(Node::File { size, sha256, mode }) = self.nodes.get(&tkey).cloned() else {
                    return Err(refuse(
                        &raw,
                        format!(
                            "hardlink target {target:?} is not a regular file unpacked earlier from this archive"
                        ),
                    ));
                };
                // The target's data may still be on its way to the disk.
                self.files.barrier()?;
                fs::hard_link(&self.dest.join(&tkey), &target_path)?;
                self.insert(key, Node::File { size, sha256, mode });
                Ok(())
            }
        }
    }

    fn insert(&mut self, key: String, node: Node) {
        self.order.push(key.clone());
        self.nodes.insert(key, node);
    }

    /// Creates missing parent directories; refuses a parent that is a file or symlink.
    fn ensure_parents(&mut self, raw: &str, comps: &[&str]) -> Result<(), UnpackError> {
        let mut key = String::new();
        for c in &comps[..comps.len() - 1] {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(c);
            match self.nodes.get(&key) {
                Some(Node::Dir { .. }) => {}
                Some(Node::Symlink { .. }) => {
                    return Err(refuse(
                        raw,
                        format!("it would be written through the symlink {key:?}"),
                    ));
                }
                Some(Node::File { .. }) => {
                    return Err(refuse(raw, format!("its parent {key:?} is a file")));
                }
                None => {
                    fs::create_dir(&self.dest.join(&key), 0o700)?;
                    self.insert(key.clone(), Node::Dir { mode: 0o755 });
                }
            }
        }
        Ok(())
    }

    /// The single top-level directory every entry shares, when it is to be
    /// stripped: always or never as `strip_top_dir` says, else when its
    /// name marks it as packaging ([`StripHints::is_packaging_dir`]).
    fn strip(&self) -> Option<String> {
        let mut tops = self.order.iter().map(|k| k.split('/').next().unwrap_or(""));
        let t = tops.next()?;
        if self.order.len() < 2 || !tops.all(|x| x == t) {
            return None;
        }
        if !matches!(self.nodes.get(t), Some(Node::Dir { .. })) {
            return None;
        }
        let wanted = match self.limits.strip_top_dir {
            Some(forced) => forced,
            None => self.hints.is_packaging_dir(t),
        };
        wanted.then(|| t.to_string())
    }

    fn finish(mut self) -> Result<Unpacked, UnpackError> {
        // Every file is on disk before the tree is judged and published.
        let digests = self.files.finish()?;
        let strip = self.strip();
        let floor = usize::from(strip.is_some());
        // Later symlinks can change how earlier ones resolve: check them all
        // again against the final tree, relative to what will be the release root.
        for (k, n) in &self.nodes {
            if let Node::Symlink { target } = n {
                let parent: Vec<String> = k.split('/').map(String::from).collect();
                let parent = parent[..parent.len() - 1].to_vec();
                if resolve_escapes(&self.nodes, &parent, target, floor) {
                    return Err(refuse(
                        k,
                        format!("symlink target {target:?} resolves outside the release directory"),
                    ));
                }
            }
        }
        let mut manifest = Vec::with_capacity(self.nodes.len());
        // Deepest first, so tightening a directory's mode never blocks its children.
        let mut dirs: Vec<(&String, u32)> = Vec::new();
        for (k, n) in &self.nodes {
            let rel = match &strip {
                Some(t) if k == t => {
                    if let Node::Dir { mode, .. } = n {
                        dirs.push((k, *mode));
                    }
                    continue;
                }
                Some(t) => k[t.len() + 1..].to_string(),
                None => k.clone(),
            };
            manifest.push(match n {
                Node::Dir { mode, .. } => {
                    dirs.push((k, *mode));
                    ManifestEntry {
                        path: rel,
                        kind: EntryKind::Dir,
                        mode: dir_mode(*mode),
                        size: 0,
                        sha256: None,
                        target: None,
                    }
                }
                Node::File { size, sha256, mode } => ManifestEntry {
                    path: rel,
                    kind: EntryKind::File,
                    mode: *mode,
                    size: *size,
                    sha256: Some(match sha256 {
                        writer::FileSum::Hex(h) => h.clone(),
                        writer::FileSum::Pending(id) => {
                            digests.get(id).cloned().ok_or_else(|| {
                                FsError::new(
                                    "hash",
                                    self.dest.join(k),
                                    io::Error::other("its writer thread gave no digest"),
                                )
                            })?
                        }
                    }),
                    target: None,
                },
                Node::Symlink { target } => ManifestEntry {
                    path: rel,
                    kind: EntryKind::Symlink,
                    mode: 0o777,
                    size: 0,
                    sha256: None,
                    target: Some(target.clone()),
                },
            });
        }
        dirs.sort_by_key(|(k, _)| std::cmp::Reverse(k.matches('/').count()));
        for (k, mode) in dirs {
            // Every directory was made 0700: only other modes need a call.
            if dir_mode(mode) != 0o700 {
                fs::set_mode(&self.dest.join(k), dir_mode(mode))?;
            }
        }
        manifest.sort_by(|a, b| a.path.cmp(&b.path));
        let content_root = match &strip {
            Some(t) => self.dest.join(t),
            None => self.dest.to_path_buf(),
        };
        Ok(Unpacked {
            content_root,
            manifest,
            content_bytes: self.content_bytes,
            stripped_top_dir: strip,
            format: self.format,
        })
    }
}

/// Directories stay owner-writable so the release can be pruned and linked.
fn dir_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o700
}

/// Emulates how the kernel would resolve `target` from the directory
/// `parent`, following the symlinks recorded in `nodes`. True when the walk
/// climbs above the release root (whose depth in `nodes` keys is `floor`), or
/// loops. Unknown components are taken as plain names: a dangling link is
/// fine as long as it stays inside.
fn resolve_escapes(
    nodes: &HashMap<String, Node>,
    parent: &[String],
    target: &str,
    floor: usize,
) -> bool {
    let mut stack: Vec<String> = parent.to_vec();
    if stack.len() < floor {
        return true;
    }
    let mut pending: VecDeque<String> = target.split('/').map(String::from).collect();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                if stack.len() <= floor {
                    return true;
                }
                stack.pop();
            }
            _ => {
                stack.push(c);
                if let Some(Node::Symlink { target: t }) = nodes.get(&stack.join("/")) {
                    hops += 1;
                    if hops > 40 || t.starts_with('/') {
                        return true;
                    }
                    stack.pop();
                    for part in t.split('/').rev() {
                        pending.push_front(part.to_string());
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_link(t: &str) -> Node {
        Node::Symlink {
            target: t.to_string(),
        }
    }

    #[test]
    fn symlink_to_root_then_dotdot_escapes() {
        // r -> . is inside, but r/.. is the parent of the release.
        let mut nodes = HashMap::new();
        nodes.insert("r".to_string(), node_link("."));
        assert!(resolve_escapes(&nodes, &[], "r/..", 0));
        assert!(!resolve_escapes(&nodes, &[], "r/x", 0));
    }

    #[test]
    fn lexical_dotdot_inside_is_fine() {
        let nodes = HashMap::new();
        assert!(!resolve_escapes(
            &nodes,
            &["a".into(), "b".into()],
            "../../c",
            0
        ));
        assert!(resolve_escapes(&nodes, &["a".into()], "../../c", 0));
        // With a stripped top directory, climbing to it escapes.
        assert!(resolve_escapes(&nodes, &["top".into()], "../x", 1));
    }

    #[test]
    fn symlink_loops_are_refused() {
        let mut nodes = HashMap::new();
        nodes.insert("a".to_string(), node_link("b"));
        nodes.insert("b".to_string(), node_link("a"));
        assert!(resolve_escapes(&nodes, &[], "a", 0));
    }

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(
            ArchiveFormat::sniff(&[0x1f, 0x8b, 8]),
            Some(ArchiveFormat::TarGz)
        );
        assert_eq!(
            ArchiveFormat::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(ArchiveFormat::TarZst)
        );
        assert_eq!(
            ArchiveFormat::sniff(b"\xfd7zXZ\0"),
            Some(ArchiveFormat::TarXz)
        );
        assert_eq!(
            ArchiveFormat::sniff(b"BZh91AY"),
            Some(ArchiveFormat::TarBz2)
        );
        assert_eq!(
            ArchiveFormat::sniff(b"PK\x03\x04"),
            Some(ArchiveFormat::Zip)
        );
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(ArchiveFormat::sniff(&tar), Some(ArchiveFormat::Tar));
        assert_eq!(ArchiveFormat::sniff(b"<html>"), None);
        assert_eq!(ArchiveFormat::sniff(b""), None);
    }

    #[test]
    fn only_packaging_top_directories_are_stripped_by_default() {
        let h = StripHints {
            version: Some("1.2.0".into()),
            names: vec!["web".into(), "my-site".into()],
        };
        for yes in [
            "web-1.2.0",
            "myapp-1.2.0",
            "v1.2.0",
            "web",
            "web-linux-x86_64",
            "my-site-main",
            "my-site-3f2a9c1",
            "repo-0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(h.is_packaging_dir(yes), "{yes}");
        }
        for no in [
            "public",
            "dist",
            "build",
            "webroot",
            "11.2.0",
            "1.2.01",
            "app-deadbeef",
        ] {
            assert!(!h.is_packaging_dir(no), "{no}");
        }
    }

    #[test]
    fn path_rules() {
        assert!(components("/etc/passwd").is_err());
        assert!(components("a/../../b").is_err());
        assert!(components("..\\evil").is_err());
        assert_eq!(components("./a//b/").unwrap(), vec!["a", "b"]);
    }
}
