//! Safe, streaming unpacking of `.tar.gz` releases into a fresh directory.
//!
//! Every entry is checked before anything is written for it: no absolute
//! paths, no `..`, nothing written through a symlink, no symlink or hardlink
//! that resolves outside the release, no devices or FIFOs, no duplicates,
//! setuid/setgid/sticky bits stripped, and byte and entry limits enforced as
//! the stream arrives (a gzip bomb stops at the limit, not after).
//!
//! The destination must be a new, empty directory that nothing else writes
//! to: the checks rely on knowing every entry in it, so they never follow a
//! symlink they have not validated.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::UnpackLimits;
use crate::fs::{self, FsError};

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
        "archive refused: {detail}; raise max_bytes or max_entries in [apps.{app}.unpack] if this release is genuine"
    )]
    OverLimit {
        /// The app whose `[apps.<name>.unpack]` limits the release broke.
        app: String,
        /// Which limit, by how much.
        detail: String,
    },
    /// The stream is not a valid gzip/tar archive.
    #[error("the asset is not a valid .tar.gz archive{}", entry.as_ref().map(|e| format!(" (reading entry {e:?})")).unwrap_or_default())]
    Corrupt {
        /// The entry being read, when the failure was inside one.
        entry: Option<String>,
        /// What the gzip or tar reader said.
        #[source]
        source: io::Error,
    },
    /// A file-system operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
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
    /// top-level directory when every entry shared one (it is stripped).
    pub content_root: PathBuf,
    /// Every entry, relative to `content_root`, sorted by path.
    pub manifest: Vec<ManifestEntry>,
    /// Bytes of file content written.
    pub content_bytes: u64,
}

#[derive(Debug, Clone)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        size: u64,
        sha256: String,
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// Counts decompressed bytes and stops the stream once the limit is passed.
struct Limited<R> {
    inner: R,
    seen: u64,
    limit: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.limit {
            self.tripped.set(true);
            return Err(io::Error::other("unpacked size limit reached"));
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
/// a new, empty directory. Reads the gzip stream to its end (so a digest of
/// `reader` covers everything), but not what may follow it.
pub fn unpack_tar_gz<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let tripped = Rc::new(Cell::new(false));
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let limited = Limited {
        inner: gz,
        seen: 0,
        limit: limits.max_bytes.saturating_add(framing_allowance(limits)),
        tripped: tripped.clone(),
    };
    let mut archive = tar::Archive::new(limited);
    let mut u = Unpacker {
        dest,
        limits,
        nodes: HashMap::new(),
        order: Vec::new(),
        entries: 0,
        content_bytes: 0,
    };
    let map_io = |e: io::Error, tripped: &Rc<Cell<bool>>| -> UnpackError {
        if tripped.get() {
            UnpackError::Limit(format!(
                "it unpacks to more than max_bytes = {} bytes",
                limits.max_bytes
            ))
        } else {
            UnpackError::Corrupt {
                entry: None,
                source: e,
            }
        }
    };
    let entries = archive.entries().map_err(|e| map_io(e, &tripped))?;
    for entry in entries {
        let entry = entry.map_err(|e| map_io(e, &tripped))?;
        u.entry(entry).map_err(|e| match e {
            UnpackError::Corrupt { source, .. } if tripped.get() => map_io(source, &tripped),
            other => other,
        })?;
    }
    // Consume the tar trailer and the gzip footer (CRC check) within the limit.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| map_io(e, &tripped))?;
    u.finish()
}

struct Unpacker<'a> {
    dest: &'a Path,
    limits: &'a UnpackLimits,
    nodes: HashMap<String, Node>,
    order: Vec<String>,
    entries: u64,
    content_bytes: u64,
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

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_bytes = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UnpackError::Limit(format!(
                "it has more than max_entries = {} entries",
                self.limits.max_entries
            )));
        }
        if std::str::from_utf8(&raw_bytes).is_err() {
            return Err(refuse(&raw, "entry names must be UTF-8"));
        }
        let comps = components(&raw).map_err(|r| refuse(&raw, r))?;
        if comps.is_empty() {
            if etype.is_dir() {
                return Ok(());
            }
            return Err(refuse(&raw, "entry has an empty path"));
        }
        let key = comps.join("/");
        self.ensure_parents(&raw, &comps)?;
        let existing = self.nodes.get(&key).cloned();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let target_path = self.dest.join(&key);

        if etype.is_dir() {
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
        if etype.is_file() || etype.is_contiguous() || etype.is_gnu_sparse() {
            let declared = entry.size();
            let budget = self.limits.max_bytes.saturating_sub(self.content_bytes);
            if declared > budget {
                return Err(UnpackError::Limit(format!(
                    "entry {raw:?} would take the release past max_bytes = {} bytes",
                    self.limits.max_bytes
                )));
            }
            let mut f = fs::create_new(&target_path, 0o600)?;
            let mut hw = HashWriter {
                inner: &mut f,
                sha: Sha256::new(),
                n: 0,
                budget,
            };
            // Read and write errors mean different things: a failed read is
            // a corrupt or truncated archive (or the limit reached), a failed
            // write is this machine's disk.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(UnpackError::Corrupt {
                            entry: Some(raw),
                            source: e,
                        });
                    }
                };
                hw.write_all(&buf[..n]).map_err(|e| {
                    if e.kind() == io::ErrorKind::FileTooLarge {
                        UnpackError::Limit(format!(
                            "entry {raw:?} would take the release past max_bytes = {} bytes",
                            self.limits.max_bytes
                        ))
                    } else {
                        UnpackError::Fs(FsError::new("write", &target_path, e))
                    }
                })?;
            }
            let (size, sha) = (hw.n, hex::encode(hw.sha.finalize()));
            self.content_bytes += size;
            if let Ok(mtime) = entry.header().mtime() {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
                let _ = f.set_modified(t);
            }
            drop(f);
            fs::set_mode(&target_path, mode)?;
            self.insert(
                key,
                Node::File {
                    size,
                    sha256: sha,
                    mode,
                },
            );
            return Ok(());
        }
        if etype.is_symlink() {
            let target = link_name(&entry, &raw)?;
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
            return Ok(());
        }
        if etype.is_hard_link() {
            let target = link_name(&entry, &raw)?;
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
            fs::hard_link(&self.dest.join(&tkey), &target_path)?;
            self.insert(key, Node::File { size, sha256, mode });
            return Ok(());
        }
        if etype.is_character_special() || etype.is_block_special() {
            return Err(refuse(&raw, "device files are not allowed"));
        }
        if etype.is_fifo() {
            return Err(refuse(&raw, "FIFOs are not allowed"));
        }
        Err(refuse(
            &raw,
            format!("unsupported entry type {:?}", etype.as_byte() as char),
        ))
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

    fn finish(self) -> Result<Unpacked, UnpackError> {
        // Strip a single top-level directory shared by every entry.
        let mut tops = self.order.iter().map(|k| k.split('/').next().unwrap_or(""));
        let first = tops.next();
        let strip = match first {
            Some(t)
                if self.limits.strip_top_dir && self.order.len() > 1 && tops.all(|x| x == t) =>
            {
                matches!(self.nodes.get(t), Some(Node::Dir { .. })).then(|| t.to_string())
            }
            _ => None,
        };
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
                    sha256: Some(sha256.clone()),
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
            fs::set_mode(&self.dest.join(k), dir_mode(mode))?;
        }
        manifest.sort_by(|a, b| a.path.cmp(&b.path));
        let content_root = match strip {
            Some(t) => self.dest.join(t),
            None => self.dest.to_path_buf(),
        };
        Ok(Unpacked {
            content_root,
            manifest,
            content_bytes: self.content_bytes,
        })
    }
}

/// Directories stay owner-writable so the release can be pruned and linked.
fn dir_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o700
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &str) -> Result<String, UnpackError> {
    let bytes = entry
        .link_name_bytes()
        .ok_or_else(|| refuse(raw, "link without a target"))?;
    String::from_utf8(bytes.into_owned()).map_err(|_| refuse(raw, "link target is not UTF-8"))
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

struct HashWriter<'a, W> {
    inner: &'a mut W,
    sha: Sha256,
    n: u64,
    budget: u64,
}

impl<W: Write> Write for HashWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.n + buf.len() as u64 > self.budget {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "max_bytes"));
        }
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
    fn path_rules() {
        assert!(components("/etc/passwd").is_err());
        assert!(components("a/../../b").is_err());
        assert!(components("..\\evil").is_err());
        assert_eq!(components("./a//b/").unwrap(), vec!["a", "b"]);
    }
}
