//! Directories reached from an app root without following a symlink or
//! leaving it (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one
//! component at a time), and the operations on names inside them. Each
//! operation works on one name relative to a held directory, so a symlink
//! planted after the directory was opened redirects nothing.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::{FsError, Result, temp_name};

/// The operation named by an error about a symlink where a directory (or a
/// shared path) should be: Switchyard never follows one under an app root.
pub(crate) const REFUSED_SYMLINK: &str = "refused symlink";
/// The operation named by an error about a file where a directory should be.
pub(crate) const REFUSED_NOT_DIR: &str = "refused non-directory";

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// A directory held open; `path` is where it was reached, for messages.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// The single normal component `name` must be: a name with a `/` would be
/// resolved by the kernel through whatever its parents are.
fn leaf(name: &Path) -> io::Result<&OsStr> {
    let mut c = name.components();
    match (c.next(), c.next()) {
        (Some(Component::Normal(n)), None) => Ok(n),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single file name",
        )),
    }
}

impl Dir {
    /// Opens `path` itself as the anchor paths below it are resolved from;
    /// it must not be a symlink (an app root is canonical at load).
    pub(crate) fn root(path: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| {
            refusal(path, e, "open directory", || {
                super::symlink_metadata(path)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.file_type().is_symlink())
            })
        })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The error of a failed open of `name` in this directory.
    fn refusal(&self, name: &OsStr, e: Errno, op: &'static str) -> FsError {
        refusal(&self.join(name), e, op, || {
            self.open_child(name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .ok()
                .and_then(|fd| File::from(fd).metadata().ok())
                .is_some_and(|m| m.file_type().is_symlink())
        })
    }

    /// `name` as a single file name of this directory, or an error naming it.
    fn leaf<'n>(&self, op: &'static str, name: &'n Path) -> Result<&'n OsStr> {
        leaf(name).map_err(|e| FsError::new(op, self.join(name), e))
    }

    /// The full path of a name in this directory, for messages.
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    fn open_child(&self, name: &OsStr, flags: OFlag) -> std::result::Result<OwnedFd, Errno> {
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        loop {
            // EAGAIN: a rename raced the resolution; the kernel asks to retry.
            match nix::fcntl::openat2(&self.fd, name, how) {
                Err(Errno::EAGAIN) => continue,
                r => return r,
            }
        }
    }

    /// The directory `rel` below this one (every component a real
    /// directory); `Ok(None)` when a component is missing, and with
    /// `create`, missing ones are made (0755), each parent fsynced.
    fn walk(&self, rel: &Path, create: bool) -> Result<Option<Dir>> {
        let mut cur = Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| FsError::new("open directory", &self.path, e))?,
            path: self.path.clone(),
        };
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => {
                    let e = io::Error::new(io::ErrorKind::InvalidInput, "not below the directory");
                    return Err(FsError::new("open directory", self.path.join(rel), e));
                }
            };
            let path = cur.path.join(name);
            let fd = match cur.open_child(name, DIR_FLAGS) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(&cur.fd, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(FsError::new("create directory", &path, errno(e))),
                    }
                    cur.fsync()?;
                    cur.open_child(name, DIR_FLAGS)
                        .map_err(|e| cur.refusal(name, e, "open directory"))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(cur.refusal(name, e, "open directory")),
            };
            cur = Dir { fd, path };
        }
        Ok(Some(cur))
    }

    /// The existing directory `rel` below this one.
    pub(crate) fn dir(&self, rel: &Path) -> Result<Dir> {
        self.walk(rel, false)?.ok_or_else(|| {
            FsError::new(
                "open directory",
                self.path.join(rel),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })
    }

    /// The directory `rel` below this one; `Ok(None)` when it is missing.
    pub(crate) fn dir_optional(&self, rel: &Path) -> Result<Option<Dir>> {
        self.walk(rel, false)
    }

    /// The directory `rel` below this one, made where missing.
    pub(crate) fn create_dirs(&self, rel: &Path) -> Result<Dir> {
        Ok(self.walk(rel, true)?.expect("created"))
    }

    /// `lstat` of `name` in this directory; `Ok(None)` when missing.
    pub(crate) fn stat(&self, name: &Path) -> Result<Option<Metadata>> {
        let path = self.join(name);
        let n = leaf(name).map_err(|e| FsError::new("stat", &path, e))?;
        match self.open_child(n, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC) {
            Ok(fd) => File::from(fd)
                .metadata()
                .map(Some)
                .map_err(|e| FsError::new("stat", &path, e)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::new("stat", &path, errno(e))),
        }
    }

    /// Opens `name` for reading, refusing a symlink (and not blocking on a
    /// FIFO); `Ok(None)` when missing.
    pub(crate) fn open_file(&self, name: &Path) -> Result<Option<File>> {
        let path = self.join(name);
        let n = leaf(name).map_err(|e| FsError::new("open", &path, e))?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match self.open_child(n, flags) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.refusal(n, e, "open")),
        }
    }

    /// A directory entry of this one, as a directory (not through a symlink).
    pub(crate) fn subdir(&self, name: &Path) -> Result<Dir> {
        let path = self.join(name);
        let n = leaf(name).map_err(|e| FsError::new("open directory", &path, e))?;
        let fd = self
            .open_child(n, DIR_FLAGS)
            .map_err(|e| self.refusal(n, e, "open directory"))?;
        Ok(Dir { fd, path })
    }

    /// Reads a whole (small) file; `Ok(None)` when missing.
    pub(crate) fn read_optional(&self, name: &Path) -> Result<Option<Vec<u8>>> {
        let Some(mut f) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| FsError::new("read", self.join(name), e))?;
        Ok(Some(buf))
    }

    /// The target of the symlink `name`.
    pub(crate) fn read_link(&self, name: &Path) -> Result<PathBuf> {
        let name = self.leaf("read symlink", name)?;
        nix::fcntl::readlinkat(&self.fd, name)
            .map(PathBuf::from)
            .map_err(|e| FsError::new("read symlink", self.join(name), errno(e)))
    }

    /// Entry names (unsorted).
    pub(crate) fn list(&self) -> Result<Vec<OsString>> {
        let err = |e| FsError::new("list directory", &self.path, errno(e));
        let mut d = nix::dir::Dir::openat(&self.fd, ".", DIR_FLAGS, Mode::empty()).map_err(err)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(err)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        Ok(out)
    }

    /// Creates `name` exclusively (never through a symlink) for writing.
    fn create_new(&self, name: &Path, mode: u32) -> Result<File> {
        let path = self.join(name);
        let n = leaf(name).map_err(|e| FsError::new("create file", &path, e))?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let how = OpenHow::new()
            .flags(flags)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        nix::fcntl::openat2(&self.fd, n, how)
            .map(File::from)
            .map_err(|e| FsError::new("create file", &path, errno(e)))
    }

    /// Writes `name` atomically: a temporary name beside it, fsync,
    /// rename, fsync of this directory.
    pub(crate) fn write_atomic(&self, name: &Path, data: &[u8], mode: u32) -> Result<()> {
        let n = leaf(name).map_err(|e| FsError::new("write", self.join(name), e))?;
        let tmp = PathBuf::from(temp_name(n));
        let res = (|| {
            let mut f = self.create_new(&tmp, mode)?;
            f.write_all(data)
                .map_err(|e| FsError::new("write", self.join(&tmp), e))?;
            f.sync_all()
                .map_err(|e| FsError::new("fsync", self.join(&tmp), e))?;
            drop(f);
            self.rename(&tmp, name)?;
            self.fsync()
        })();
        if res.is_err() {
            let _ = self.remove_file(&tmp);
        }
        res
    }

    /// Creates the symlink `name` pointing at `target`.
    pub(crate) fn symlink(&self, target: &Path, name: &Path) -> Result<()> {
        let name = self.leaf("create symlink", name)?;
        nix::unistd::symlinkat(target, &self.fd, name)
            .map_err(|e| FsError::new("create symlink", self.join(name), errno(e)))
    }

    /// Renames `from` to `to`, both in this directory.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let (from, to) = (self.leaf("rename", from)?, self.leaf("rename", to)?);
        nix::fcntl::renameat(&self.fd, from, &self.fd, to).map_err(|e| {
            let what = format!(
                "{} -> {}",
                self.join(from).display(),
                self.join(to).display()
            );
            FsError::new("rename", what, errno(e))
        })
    }

    /// Moves `from` (a path Switchyard made, such as a restore's unpacked
    /// copy) to `name` in this directory.
    pub(crate) fn rename_into(&self, from: &Path, name: &Path) -> Result<()> {
        let name = self.leaf("rename", name)?;
        nix::fcntl::renameat(AT_FDCWD, from, &self.fd, name).map_err(|e| {
            let what = format!("{} -> {}", from.display(), self.join(name).display());
            FsError::new("rename", what, errno(e))
        })
    }

    /// Swaps `a` and `b` atomically (`RENAME_EXCHANGE`).
    pub(crate) fn exchange(&self, a: &Path, b: &Path) -> Result<()> {
        let (a, b) = (self.leaf("exchange", a)?, self.leaf("exchange", b)?);
        nix::fcntl::renameat2(&self.fd, a, &self.fd, b, RenameFlags::RENAME_EXCHANGE).map_err(|e| {
            let what = format!("{} <-> {}", self.join(a).display(), self.join(b).display());
            FsError::new("exchange", what, errno(e))
        })
    }

    /// Removes the file or symlink `name`; missing is fine.
    pub(crate) fn remove_file(&self, name: &Path) -> Result<()> {
        let name = self.leaf("remove", name)?;
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FsError::new("remove", self.join(name), errno(e))),
        }
    }

    /// Removes whatever `name` is (a tree is walked through held
    /// directories, never through a symlink); missing is fine.
    pub(crate) fn remove_any(&self, name: &Path) -> Result<()> {
        let Some(m) = self.stat(name)? else {
            return Ok(());
        };
        if !m.is_dir() {
            return self.remove_file(name);
        }
        let sub = self.subdir(name)?;
        // Archives may ship read-only directories: make them writable.
        let mode = m.permissions().mode();
        if mode & 0o700 != 0o700 {
            let mode = Mode::from_bits_truncate(mode | 0o700);
            nix::sys::stat::fchmod(&sub.fd, mode)
                .map_err(|e| FsError::new("set permissions", &sub.path, errno(e)))?;
        }
        for n in sub.list()? {
            sub.remove_any(Path::new(&n))?;
        }
        drop(sub);
        let name = self.leaf("remove directory", name)?;
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(FsError::new("remove directory", self.join(name), errno(e))),
        }
    }

    /// fsyncs this directory, making entries created, renamed or removed
    /// in it durable.
    pub(crate) fn fsync(&self) -> Result<()> {
        nix::unistd::fsync(self.fd.as_fd())
            .map_err(|e| FsError::new("fsync directory", &self.path, errno(e)))
    }
}

/// The error of a failed open at `path`: a symlink or a non-directory where
/// a directory was needed is named as refused. (`O_DIRECTORY` on a symlink
/// says `ENOTDIR`, so `is_link` tells which.)
fn refusal(path: &Path, e: Errno, op: &'static str, is_link: impl FnOnce() -> bool) -> FsError {
    let op = match e {
        Errno::ELOOP => REFUSED_SYMLINK,
        Errno::ENOTDIR if is_link() => REFUSED_SYMLINK,
        Errno::ENOTDIR => REFUSED_NOT_DIR,
        _ => op,
    };
    FsError::new(op, path, errno(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_refuse_symlinks_and_files_and_name_them() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let outside = tempfile::tempdir().unwrap();
        crate::fs::create_dir_all(&root.join("shared")).unwrap();
        crate::fs::symlink(outside.path(), &root.join("shared/var")).unwrap();
        crate::fs::write_atomic(&root.join("shared/file"), b"x").unwrap();
        let r = Dir::root(&root).unwrap();
        let e = r.create_dirs(Path::new("shared/var/log")).unwrap_err();
        assert_eq!((e.op, e.path), (REFUSED_SYMLINK, root.join("shared/var")));
        let e = r.create_dirs(Path::new("shared/file/log")).unwrap_err();
        assert_eq!((e.op, e.path), (REFUSED_NOT_DIR, root.join("shared/file")));
        assert!(crate::fs::list_dir(outside.path()).unwrap().is_empty());
        let s = r.create_dirs(Path::new("shared/a/b")).unwrap();
        assert_eq!(s.join("f"), root.join("shared/a/b/f"));
        assert!(r.dir_optional(Path::new("shared/none")).unwrap().is_none());
        assert!(
            r.stat(Path::new("shared/var")).is_err(),
            "names are single components"
        );
        let shared = r.dir(Path::new("shared")).unwrap();
        assert!(
            shared
                .stat(Path::new("var"))
                .unwrap()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        shared
            .write_atomic(Path::new("m.json"), b"{}", 0o644)
            .unwrap();
        assert_eq!(
            shared.read_optional(Path::new("m.json")).unwrap().unwrap(),
            b"{}"
        );
        assert!(shared.read_optional(Path::new("var")).is_err());
        crate::fs::write_atomic(&root.join("shared/a/b/f"), b"x").unwrap();
        shared.remove_any(Path::new("a")).unwrap();
        shared.remove_any(Path::new("var")).unwrap();
        assert!(outside.path().exists());
        let mut left = shared.list().unwrap();
        left.sort();
        assert_eq!(left, ["file", "m.json"]);
    }
}
