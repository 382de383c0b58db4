//! File-system helpers: every error names the path and the operation, and
//! publishing helpers (atomic write, symlink replace) fsync before and after
//! the rename that makes a change visible.
//!
//! The rest of the crate must not call `std::fs` directly (see `clippy.toml`):
//! going through here is what keeps "which path, which step" in every error.
#![allow(clippy::disallowed_methods)]

mod beneath;

pub(crate) use beneath::{Dir, REFUSED_NOT_DIR, REFUSED_SYMLINK};

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O error with the operation and path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct FsError {
    /// What was being done ("create directory", "rename", ...).
    pub op: &'static str,
    /// The path concerned (for a rename, the destination).
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// Wraps an I/O error with its operation and path.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError {
            op,
            path: path.into(),
            source,
        }
    }

    /// The host is out of space or its storage failed (`ENOSPC`, `EDQUOT`,
    /// `EIO`, `EROFS`): nothing about the release or the request.
    pub fn is_storage_failure(&self) -> bool {
        storage_errno(&self.source)
    }

    /// The OS error kind, for callers that branch on "not found" and the like.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// Whether an I/O error says the disk is full or failing.
pub(crate) fn storage_errno(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        [Errno::ENOSPC, Errno::EDQUOT, Errno::EIO, Errno::EROFS]
            .iter()
            .any(|x| *x as i32 == n)
    })
}

/// The first storage failure in an error's chain (the path it names, and
/// how much space its file system has left), for the message that goes
/// with exit code 9.
pub(crate) fn storage_failure(
    e: &(dyn std::error::Error + 'static),
) -> Option<(PathBuf, Option<u64>)> {
    let free = |path: &Path| {
        path.ancestors()
            .find_map(|p| nix::sys::statvfs::statvfs(p).ok())
            .map(|s| s.blocks_available() * s.fragment_size())
    };
    let mut cur = Some(e);
    // Transparent wrappers hide the FsError itself from `source()`, but its
    // message ("<operation> <path>") is the one just above the OS error.
    let mut above = e.to_string();
    while let Some(c) = cur {
        if let Some(f) = c.downcast_ref::<FsError>()
            && f.is_storage_failure()
        {
            return Some((f.path.clone(), free(&f.path)));
        }
        if let Some(io) = c.downcast_ref::<io::Error>()
            && storage_errno(io)
        {
            let path = above
                .rfind(" /")
                .map(|i| PathBuf::from(&above[i + 1..]))
                .unwrap_or_default();
            let left = free(&path);
            return Some((path, left));
        }
        above = c.to_string();
        cur = c.source();
    }
    None
}

/// Result alias for this module.
pub(crate) type Result<T> = std::result::Result<T, FsError>;

fn ctx<T>(op: &'static str, path: &Path, r: io::Result<T>) -> Result<T> {
    r.map_err(|e| FsError::new(op, path, e))
}

/// Reads a whole (small) file to a string.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    ctx("read", path, fs::read_to_string(path))
}

/// Reads a whole (small) file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("read", path, e)),
    }
}

/// Reads a whole (small) file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    ctx("read", path, fs::read(path))
}

/// Opens a file for reading.
pub(crate) fn open(path: &Path) -> Result<File> {
    ctx("open", path, File::open(path))
}

/// What stands at a path that is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotRegular(pub(crate) &'static str);

/// The kind of file `m` describes, in words ("a FIFO (named pipe)").
pub(crate) fn kind_of(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens a regular file for reading, and nothing else: a symlink is not
/// followed (`O_NOFOLLOW`), and a FIFO or device is never waited on
/// (`O_NONBLOCK`, then `fstat`): such a path is `Ok(Err(kind))` at once.
/// For files someone else put there (a drop folder).
pub(crate) fn open_regular(path: &Path) -> Result<std::result::Result<File, NotRegular>> {
    // Opening a device can act on it (a tape rewinds): look first.
    if let Some(m) = symlink_metadata(path)?
        && !m.is_file()
    {
        return Ok(Err(NotRegular(kind_of(&m))));
    }
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        // Replaced by a symlink since the look.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Ok(Err(NotRegular("a symlink")));
        }
        Err(e) => return Err(FsError::new("open", path, e)),
    };
    let m = ctx("stat", path, f.metadata())?;
    if !m.is_file() {
        return Ok(Err(NotRegular(kind_of(&m))));
    }
    // Reads block as usual from here on.
    let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| FsError::new("fcntl", path, io::Error::from(e)))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| FsError::new("fcntl", path, io::Error::from(e)))?;
    Ok(Ok(f))
}

/// Creates a new file exclusively, never following a symlink at `path`.
pub(crate) fn create_new(path: &Path, mode: u32) -> Result<File> {
    ctx(
        "create file",
        path,
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path),
    )
}

/// Opens (creating if needed) a file for appending.
pub(crate) fn open_append(path: &Path) -> Result<File> {
    ctx(
        "open for append",
        path,
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o640)
            .open(path),
    )
}

/// Opens (creating if needed) a file for reading and writing, without truncating.
pub(crate) fn open_rw(path: &Path) -> Result<File> {
    ctx(
        "open",
        path,
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o640)
            .open(path),
    )
}

/// Creates one directory; fails if it exists.
pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<()> {
    ctx(
        "create directory",
        path,
        fs::DirBuilder::new().mode(mode).create(path),
    )
}

/// Creates a directory and its missing parents.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    ctx(
        "create directory",
        path,
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path),
    )
}

/// Creates a directory and its missing parents closed to other users
/// (0750), for what may hold secrets: hook logs, backups.
pub(crate) fn create_private_dir_all(path: &Path) -> Result<()> {
    ctx(
        "create directory",
        path,
        fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(path),
    )
}

/// Mode of directories that may hold secrets: no access for other users.
pub(crate) const PRIVATE_DIR: u32 = 0o750;

/// Takes every permission from other users on an existing directory (one
/// made by an older version, or by hand).
pub(crate) fn close_to_others(path: &Path) -> Result<()> {
    if let Some(m) = symlink_metadata(path)?
        && m.is_dir()
        && m.permissions().mode() & 0o007 != 0
    {
        set_mode(path, m.permissions().mode() & 0o7770)?;
    }
    Ok(())
}

/// Removes a directory tree; a missing tree is not an error. Read-only
/// directories inside it (as some archives ship) are made writable first.
pub(crate) fn remove_dir_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_tree_writable(path);
            match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(FsError::new("remove directory tree", path, e)),
            }
        }
        Err(e) => Err(FsError::new("remove directory tree", path, e)),
    }
}

fn make_tree_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perm = meta.permissions();
    perm.set_mode(perm.mode() | 0o700);
    let _ = fs::set_permissions(path, perm);
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_tree_writable(&e.path());
        }
    }
}

/// Removes a file or symlink; a missing one is not an error.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("remove", path, e)),
    }
}

/// Removes whatever is at `path` (file, symlink or tree); missing is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    match symlink_metadata(path)? {
        None => Ok(()),
        Some(m) if m.is_dir() => remove_dir_all(path),
        Some(_) => remove_file(path),
    }
}

/// Renames `from` to `to` (atomic within one file system).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        FsError::new(
            "rename",
            format!("{} -> {}", from.display(), to.display()),
            e,
        )
    })
}

/// `lstat`; `Ok(None)` when nothing is there.
pub(crate) fn symlink_metadata(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("stat", path, e)),
    }
}

/// `stat` (follows symlinks); `Ok(None)` when nothing is there.
pub(crate) fn metadata(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("stat", path, e)),
    }
}

/// Reads a symlink's target; `Ok(None)` when there is no symlink there.
pub(crate) fn read_link(path: &Path) -> Result<Option<PathBuf>> {
    match fs::read_link(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(None),
        Err(e) => Err(FsError::new("read symlink", path, e)),
    }
}

/// Lists a directory's entry names (unsorted); missing directory → empty.
pub(crate) fn list_dir(path: &Path) -> Result<Vec<std::ffi::OsString>> {
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::new("list directory", path, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(ctx("list directory", path, e)?.file_name());
    }
    Ok(out)
}

/// Every entry below `root` (not `root` itself), with `/`-joined paths
/// relative to it and `lstat` metadata, sorted by path. Symlinks are listed,
/// never followed into.
pub(crate) fn walk(root: &Path) -> Result<Vec<(String, fs::Metadata)>> {
    fn go(root: &Path, rel: &str, out: &mut Vec<(String, fs::Metadata)>) -> Result<()> {
        for n in list_dir(&root.join(rel))? {
            let name = n.to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Some(m) = symlink_metadata(&root.join(&r))? else {
                continue;
            };
            let is_dir = m.is_dir();
            out.push((r.clone(), m));
            if is_dir {
                go(root, &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, "", &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Creates a symlink at `link` pointing to `target`.
pub(crate) fn symlink(target: &Path, link: &Path) -> Result<()> {
    ctx(
        "create symlink",
        link,
        std::os::unix::fs::symlink(target, link),
    )
}

/// Creates a hard link `link` to the existing file `original` (not following symlinks).
pub(crate) fn hard_link(original: &Path, link: &Path) -> Result<()> {
    ctx("create hard link", link, fs::hard_link(original, link))
}

/// Sets permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    ctx(
        "set permissions",
        path,
        fs::set_permissions(path, fs::Permissions::from_mode(mode)),
    )
}

/// Changes the owner and/or group of `path` itself: a symlink there is
/// changed, never what it points at (`lchown`).
pub(crate) fn lchown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    ctx(
        "change owner",
        path,
        std::os::unix::fs::lchown(path, uid, gid),
    )
}

/// Gives `base/rel` an owner, a group and (a directory only) a mode, opening
/// every component with `O_NOFOLLOW`: the app's user owns what is below
/// `base`, so a symlink it planted must not turn a chown by root into one of
/// some other file. A symlink at `rel` itself is left alone; one above it is
/// an error.
pub(crate) fn own_beneath(
    base: &Path,
    rel: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    dir_mode: Option<u32>,
) -> Result<()> {
    use nix::fcntl::{AtFlags, OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag, fchmod, fstatat};
    use nix::unistd::{Gid, Uid, fchown, fchownat};
    let path = base.join(rel);
    let err = |op, e: nix::Error| FsError::new(op, &path, io::Error::from(e));
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(n) => names.push(n),
            _ => {
                return Err(FsError::new(
                    "change owner",
                    &path,
                    io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"),
                ));
            }
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Ok(());
    };
    let mut dir = open(base, dir_flags, Mode::empty()).map_err(|e| err("open directory", e))?;
    for n in parents {
        dir = openat(&dir, *n, dir_flags, Mode::empty()).map_err(|e| err("open directory", e))?;
    }
    let (uid, gid) = (uid.map(Uid::from_raw), gid.map(Gid::from_raw));
    let st = fstatat(&dir, *last, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| err("stat", e))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFLNK {
        return Ok(());
    }
    if kind != SFlag::S_IFDIR {
        return fchownat(&dir, *last, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| err("change owner", e));
    }
    let d = openat(&dir, *last, dir_flags, Mode::empty()).map_err(|e| err("open directory", e))?;
    fchown(&d, uid, gid).map_err(|e| err("change owner", e))?;
    if let Some(m) = dir_mode {
        fchmod(&d, Mode::from_bits_truncate(m)).map_err(|e| err("set permissions", e))?;
    }
    Ok(())
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = ctx("open directory", dir, File::open(dir))?;
    ctx("fsync directory", dir, f.sync_all())
}

/// fsyncs an open file.
pub(crate) fn fsync_file(f: &File, path: &Path) -> Result<()> {
    ctx("fsync", path, f.sync_all())
}

/// Flushes every dirty page of the file system holding `path` (`syncfs(2)`).
///
/// One call instead of an fsync per file when publishing a tree of thousands
/// of small files.
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    let f = ctx("open", path, File::open(path))?;
    nix::unistd::syncfs(&f).map_err(|e| FsError::new("syncfs", path, io::Error::from(e)))
}

/// Asks the kernel to start writing `f`'s dirty pages to disk now, without
/// waiting (`posix_fadvise(DONTNEED)` starts writeback; `sync_file_range`
/// would say it more directly but has no safe wrapper). Only a head start
/// for a later [`syncfs`], which alone makes the data durable.
pub(crate) fn start_writeback(f: &File, path: &Path) -> Result<()> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| FsError::new("start writeback", path, io::Error::from(e)))
}

/// Prefix of every temporary name Switchyard gives a file it publishes:
/// the cleanup removes these and nothing else.
pub(crate) const TEMP_PREFIX: &str = ".switchyard.tmp-";

/// A unique temporary name for publishing `name`:
/// `.switchyard.tmp-<name>-<pid>-<8 hex digits>`.
pub(crate) fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(TEMP_PREFIX);
    tmp.push(name);
    tmp.push(format!("-{}-{:08x}", std::process::id(), fastrand::u32(..)));
    tmp
}

/// Whether `n` is a name [`temp_name`] made.
pub(crate) fn is_temp_name(n: &str) -> bool {
    let Some(rest) = n.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '-');
    let (Some(rand), Some(pid), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !name.is_empty()
        && rand.len() == 8
        && rand.bytes().all(|b| b.is_ascii_hexdigit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
}

/// A unique temporary name beside `path` (same directory, so a rename is atomic).
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or(OsStr::new("tmp"));
    path.with_file_name(temp_name(name))
}

/// The absolute path `path` names, through every symlink (`realpath(3)`).
pub(crate) fn canonicalize(path: &Path) -> Result<PathBuf> {
    ctx("resolve", path, fs::canonicalize(path))
}

/// Writes `data` to `path` atomically: temporary sibling, fsync, rename, fsync
/// of the directory. Readers see the old contents or the new, never a mix.
/// The file is readable by everyone (0644): for what others must read.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// [`write_atomic`] for a file other users must not read (0640): state,
/// journal, backup metadata.
pub(crate) fn write_atomic_private(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o640)
}

/// [`write_atomic`] for a file only its owner may read (0600): the
/// console's password hashes.
pub(crate) fn write_atomic_secret(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o600)
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = (|| {
        let mut f = create_new(&tmp, mode)?;
        ctx("write", &tmp, f.write_all(data))?;
        fsync_file(&f, &tmp)?;
        drop(f);
        rename(&tmp, path)?;
        fsync_dir(parent_of(path))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Points the symlink `link` at `target` atomically: a new symlink under a
/// temporary name in the same directory, `rename(2)` over `link`, fsync of the
/// directory. At every instant `link` resolves to the old or the new target.
pub(crate) fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    let tmp = temp_sibling(link);
    symlink(target, &tmp)?;
    if let Err(e) = rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(parent_of(link))
}

/// The parent directory of a path, or `.` for a bare name.
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Appends a line to a file and fsyncs it, so a logged event survives a crash.
pub(crate) fn append_line_durable(path: &Path, line: &str) -> Result<()> {
    let mut f = open_append(path)?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    ctx("append", path, f.write_all(&buf))?;
    fsync_file(&f, path)
}

/// Free bytes available to this user on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| FsError::new("statvfs", path, io::Error::from(e)))?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read(&p).unwrap(), b"two");
        assert_eq!(list_dir(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn replace_symlink_swaps_target() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current");
        replace_symlink(Path::new("releases/1.0.0"), &link).unwrap();
        replace_symlink(Path::new("releases/2.0.0"), &link).unwrap();
        assert_eq!(
            read_link(&link).unwrap().unwrap(),
            Path::new("releases/2.0.0")
        );
        assert_eq!(list_dir(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let t = temp_name(OsStr::new("current"));
        assert!(is_temp_name(t.to_str().unwrap()), "{t:?}");
        for foreign in [
            ".important.tmp-data",
            ".current.tmp-1-deadbeef",
            ".switchyard.tmp-",
            ".switchyard.tmp-x-12-nothex!!",
            ".switchyard.tmp--12-deadbeef",
        ] {
            assert!(!is_temp_name(foreign), "{foreign}");
        }
    }

    #[test]
    fn own_beneath_follows_no_symlink() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let (base, outside) = (d.path().join("shared"), d.path().join("outside"));
        create_dir_all(&base.join("storage")).unwrap();
        create_dir_all(&outside.join("log")).unwrap();
        set_mode(&outside.join("log"), 0o700).unwrap();
        symlink(&outside, &base.join("var")).unwrap();
        symlink(&outside, &base.join("link")).unwrap();
        own_beneath(&base, Path::new("storage"), Some(1), Some(2), Some(0o750)).unwrap();
        let m = symlink_metadata(&base.join("storage")).unwrap().unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1, 2, 0o750));
        // A symlink above the path is an error naming it; one at the path is
        // left alone; neither reaches what it points at.
        let e =
            own_beneath(&base, Path::new("var/log"), Some(1), Some(2), Some(0o777)).unwrap_err();
        assert!(e.to_string().contains("var/log"), "{e}");
        own_beneath(&base, Path::new("link"), Some(1), Some(2), Some(0o777)).unwrap();
        let o = symlink_metadata(&outside.join("log")).unwrap().unwrap();
        assert_eq!((o.uid(), o.mode() & 0o777), (0, 0o700));
        let o = symlink_metadata(&outside).unwrap().unwrap();
        assert_eq!(o.uid(), 0);
    }

    #[test]
    fn errors_name_the_path() {
        let e = read(Path::new("/nonexistent/switchyard-test")).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/switchyard-test"),
            "{e}"
        );
    }
}
