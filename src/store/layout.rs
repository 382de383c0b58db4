//! The on-disk layout of an app root (documented in `releases-layout.md`):
//! `releases/<version>/`, the `current` and `last-good` symlinks, `shared/`,
//! and the state folder `.switchyard/`.

use std::path::{Path, PathBuf};

use crate::config::SharedConfig;
use crate::fs::{self, Dir, FsError};
use crate::version::Version;

/// Name of the live-release symlink.
pub(crate) const CURRENT: &str = "current";
/// Name of the rollback-target symlink.
pub(crate) const LAST_GOOD: &str = "last-good";
/// Prefix of staging directories under `releases/`.
pub(crate) const STAGING_PREFIX: &str = ".staging-";

/// Paths of one app root. Everything is derived from the root passed in.
#[derive(Debug, Clone)]
pub struct AppPaths {
    /// The app root.
    pub root: PathBuf,
}

impl AppPaths {
    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AppPaths { root: root.into() }
    }
    /// `root/releases`.
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    /// `root/releases/<version>`.
    pub fn release(&self, v: &Version) -> PathBuf {
        self.releases().join(v.dir_name())
    }
    /// `root/current`.
    pub fn current(&self) -> PathBuf {
        self.root.join(CURRENT)
    }
    /// `root/last-good`.
    pub fn last_good(&self) -> PathBuf {
        self.root.join(LAST_GOOD)
    }
    /// `root/shared`.
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    /// `root/.switchyard`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".switchyard")
    }
    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        self.state_dir().join("lock")
    }
    /// The journal of the operation in progress.
    pub fn journal(&self) -> PathBuf {
        self.state_dir().join("journal.json")
    }
    /// Persistent app state (highest verified version, audit head).
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }
    /// What the agent remembers: failed attempts, notifications sent.
    pub fn agent_file(&self) -> PathBuf {
        self.state_dir().join("agent.json")
    }
    /// The audit log, which is also the history.
    pub fn audit(&self) -> PathBuf {
        self.state_dir().join("audit.jsonl")
    }
    /// Per-release metadata and manifests.
    pub fn manifests(&self) -> PathBuf {
        self.state_dir().join("manifests")
    }
    /// The metadata file of one release.
    pub fn manifest(&self, v: &Version) -> PathBuf {
        self.manifests().join(format!("{}.json", v.dir_name()))
    }

    /// The marker naming the app that owns the root.
    pub fn owner_file(&self) -> PathBuf {
        self.state_dir().join(OWNER)
    }

    /// The root, held open: every path below it is resolved from here
    /// without following a symlink.
    pub(crate) fn open_root(&self) -> Result<Dir, LayoutError> {
        Ok(Dir::root(&self.root)?)
    }

    /// Creates the folders an operation needs; existing ones are kept. A
    /// symlink or file in their place is refused. The state folder is
    /// closed to other users (its files hold hook output, backups and
    /// history), also when an older version left it open.
    pub fn ensure(&self) -> Result<(), LayoutError> {
        if fs::metadata(&self.root)?.is_none() {
            fs::create_dir_all(&self.root)?;
            fs::fsync_dir(fs::parent_of(&self.root))?;
        }
        let root = self.open_root()?;
        for d in ["releases", "shared", ".switchyard", ".switchyard/manifests"] {
            root.create_dirs(Path::new(d))?;
        }
        fs::close_to_others(&self.state_dir())?;
        Ok(())
    }

    /// Refuses a root whose marker names another app (a root that has no
    /// marker yet is anybody's).
    pub(crate) fn check_owner(&self, app: &str) -> Result<(), LayoutError> {
        if fs::symlink_metadata(&self.root)?.is_none() {
            return Ok(());
        }
        let Some(state) = self.open_root()?.dir_optional(Path::new(".switchyard"))? else {
            return Ok(());
        };
        match state.read_optional(Path::new(OWNER))? {
            Some(b) if String::from_utf8_lossy(&b).trim() != app => Err(LayoutError::OtherApp {
                root: self.root.clone(),
                owner: String::from_utf8_lossy(&b).trim().to_string(),
                app: app.to_string(),
                marker: self.owner_file(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes the owner marker if the root has none yet (under the lock).
    pub(crate) fn claim(&self, app: &str) -> Result<(), LayoutError> {
        self.check_owner(app)?;
        let state = self.open_root()?.dir(Path::new(".switchyard"))?;
        if state.stat(Path::new(OWNER))?.is_none() {
            state.write_atomic(Path::new(OWNER), format!("{app}\n").as_bytes(), 0o640)?;
        }
        Ok(())
    }

    /// The parent directory of a shared path (relative to `shared/`), held
    /// open (made when `create`), and the path's name in it; `Ok(None)`
    /// when the parent is missing. A symlink or file where a parent
    /// directory should be is refused.
    pub(crate) fn shared_parent(
        &self,
        rel: &Path,
        create: bool,
    ) -> Result<Option<(Dir, PathBuf)>, LayoutError> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(LayoutError::NotShared(self.shared().join(rel)));
        };
        let root = self.open_root()?;
        let parent = Path::new("shared").join(parent);
        let dir = if create {
            root.create_dirs(&parent)?
        } else {
            match root.dir_optional(&parent)? {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        Ok(Some((dir, PathBuf::from(name))))
    }

    /// [`AppPaths::shared_parent`], and what is at the path now, which may
    /// not be a symlink either.
    pub(crate) fn shared_entry(
        &self,
        rel: &Path,
        create: bool,
    ) -> Result<Option<SharedEntry>, LayoutError> {
        let Some((dir, name)) = self.shared_parent(rel, create)? else {
            return Ok(None);
        };
        let meta = dir.stat(&name)?;
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            return Err(LayoutError::Symlink(dir.join(&name)));
        }
        Ok(Some(SharedEntry { dir, name, meta }))
    }

    /// An absolute path under `shared/` (as a restore's journal records
    /// them), relative to `shared/`.
    pub(crate) fn shared_rel<'p>(&self, path: &'p Path) -> Result<&'p Path, LayoutError> {
        path.strip_prefix(self.shared())
            .map_err(|_| LayoutError::NotShared(path.to_path_buf()))
    }

    /// The symlink target written for a release: relative, so the root can
    /// be moved or bind-mounted elsewhere.
    pub fn link_target(v: &Version) -> PathBuf {
        Path::new("releases").join(v.dir_name())
    }

    /// The release a symlink (`current` or `last-good`) points at, if it is a
    /// well-formed `releases/<version>` link.
    pub fn link_version(&self, link: &Path) -> Result<Option<Version>, FsError> {
        let Some(t) = fs::read_link(link)? else {
            return Ok(None);
        };
        Ok(parse_link_target(&t))
    }

    /// The live release.
    pub fn current_version(&self) -> Result<Option<Version>, FsError> {
        self.link_version(&self.current())
    }

    /// The rollback target.
    pub fn last_good_version(&self) -> Result<Option<Version>, FsError> {
        self.link_version(&self.last_good())
    }

    /// Installed releases (complete ones only: staging folders are skipped), ascending.
    pub fn installed(&self) -> Result<Vec<Version>, FsError> {
        let mut out: Vec<Version> = fs::list_dir(&self.releases())?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| Version::parse(&n).ok().filter(|v| v.dir_name() == n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// True when `releases/<v>` exists.
    pub fn is_installed(&self, v: &Version) -> Result<bool, FsError> {
        Ok(fs::symlink_metadata(&self.release(v))?.is_some_and(|m| m.is_dir()))
    }
}

/// The name of the owner marker in `.switchyard/`.
const OWNER: &str = "app";

/// A shared path, reached without following a symlink.
#[derive(Debug)]
pub(crate) struct SharedEntry {
    /// Its parent directory, held open.
    pub dir: Dir,
    /// Its name in `dir`.
    pub name: PathBuf,
    /// What is there (`lstat`): never a symlink; `None` when nothing is.
    pub meta: Option<std::fs::Metadata>,
}

/// Parses `releases/<version>` (as written by [`AppPaths::link_target`]).
pub(crate) fn parse_link_target(t: &Path) -> Option<Version> {
    let mut it = t.components();
    let first = it.next()?;
    let second = it.next()?;
    if it.next().is_some() || first.as_os_str() != "releases" {
        return None;
    }
    let name = second.as_os_str().to_str()?;
    Version::parse(name).ok().filter(|v| v.dir_name() == name)
}

/// Links the configured shared paths into a release tree at `release_root`
/// (which will be published as `root/releases/<v>`). Whatever the release
/// ships at a shared path is replaced by the link, as Capistrano does.
pub(crate) fn link_shared(
    app: &str,
    paths: &AppPaths,
    shared: &SharedConfig,
    release_root: &Path,
) -> Result<(), LayoutError> {
    let release = Dir::root(release_root)?;
    for (p, is_dir) in shared
        .dirs
        .iter()
        .map(|p| (p, true))
        .chain(shared.files.iter().map(|p| (p, false)))
    {
        if is_dir {
            paths
                .open_root()?
                .create_dirs(&Path::new("shared").join(p))?;
        } else if paths.shared_entry(p, false)?.and_then(|e| e.meta).is_none() {
            return Err(LayoutError::MissingSharedFile {
                app: app.to_string(),
                path: paths.shared().join(p),
            });
        }
        // Refuse to link through a symlink the release ships at a parent.
        let comps: Vec<_> = p.components().collect();
        let parent = p.parent().unwrap_or(Path::new(""));
        let dir = release.create_dirs(parent).map_err(|e| match e.op {
            fs::REFUSED_SYMLINK | fs::REFUSED_NOT_DIR => LayoutError::Conflict(e.path, p.clone()),
            _ => LayoutError::Fs(e),
        })?;
        let name = Path::new(p.file_name().expect("a checked shared path has a name"));
        dir.remove_any(name)?;
        // From releases/<v>/<p> back up to the root: one ".." per component of
        // <p>'s parent, plus two for releases/<v>.
        let mut target = PathBuf::new();
        for _ in 0..(comps.len() - 1 + 2) {
            target.push("..");
        }
        target.push("shared");
        target.push(p);
        dir.symlink(&target, name)?;
    }
    Ok(())
}

/// Errors about the layout of an app root: shared paths, and who owns it.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A configured shared file does not exist yet.
    #[error(
        "shared file {} does not exist; create it (for example the app's .env) before installing, or remove it from [apps.{app}.shared].files",
        path.display()
    )]
    MissingSharedFile {
        /// The app.
        app: String,
        /// The missing file.
        path: PathBuf,
    },
    /// The release ships a symlink or file where a shared path's parent should be.
    #[error(
        "cannot link shared path {}: the release has a symlink or file at {}",
        .1.display(),
        .0.display()
    )]
    Conflict(PathBuf, PathBuf),
    /// A symlink where a directory of the root or a shared path should be.
    #[error(
        "refusing {}: it is a symlink, and Switchyard (running as root) follows none under an app root, where one could lead anywhere; put the real directory or file there (move the data in), or bind-mount it",
        .0.display()
    )]
    Symlink(PathBuf),
    /// A file where a directory of the root or a shared path's parent should be.
    #[error(
        "refusing {}: it is not a directory, but Switchyard needs one there (a shared path is configured below it); move it aside, or change [apps.<name>.shared]",
        .0.display()
    )]
    NotADirectory(PathBuf),
    /// A path that is not below `shared/` where one was expected.
    #[error("{} is not a path below the app's shared/ directory", .0.display())]
    NotShared(PathBuf),
    /// The root belongs to another app.
    #[error(
        "the root {} belongs to app {owner} ({} says so), not to {app}; give each app its own root (or, if {owner} no longer uses it, remove that file)",
        root.display(),
        marker.display()
    )]
    OtherApp {
        /// The root.
        root: PathBuf,
        /// The app its marker names.
        owner: String,
        /// The app this command is for.
        app: String,
        /// The marker.
        marker: PathBuf,
    },
    /// File-system failure.
    #[error(transparent)]
    Fs(FsError),
}

impl From<FsError> for LayoutError {
    /// A refused symlink or non-directory gets its own message.
    fn from(e: FsError) -> Self {
        match e.op {
            fs::REFUSED_SYMLINK => LayoutError::Symlink(e.path),
            fs::REFUSED_NOT_DIR => LayoutError::NotADirectory(e.path),
            _ => LayoutError::Fs(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_round_trip() {
        let v = Version::parse("v1.2.3").unwrap();
        let t = AppPaths::link_target(&v);
        assert_eq!(t, Path::new("releases/1.2.3"));
        assert_eq!(parse_link_target(&t), Some(v));
        assert_eq!(parse_link_target(Path::new("/abs/releases/1.2.3")), None);
        assert_eq!(parse_link_target(Path::new("releases/x")), None);
    }

    #[test]
    fn shared_links_are_relative_and_resolve() {
        let d = tempfile::tempdir().unwrap();
        let paths = AppPaths::new(d.path());
        paths.ensure().unwrap();
        fs::write_atomic(&paths.shared().join(".env"), b"X=1").unwrap();
        let rel = paths.releases().join("1.0.0");
        fs::create_dir_all(&rel.join("storage")).unwrap();
        let shared = SharedConfig {
            dirs: vec!["storage".into(), "var/log".into()],
            files: vec![".env".into()],
        };
        link_shared("web", &paths, &shared, &rel).unwrap();
        assert_eq!(
            fs::read_link(&rel.join("var/log")).unwrap().unwrap(),
            Path::new("../../../shared/var/log")
        );
        assert_eq!(fs::read(&rel.join(".env")).unwrap(), b"X=1");
        assert!(
            fs::metadata(&rel.join("storage"))
                .unwrap()
                .unwrap()
                .is_dir()
        );
    }
}

/// The maintenance flag a web server can test: `root/shared/maintenance.json`.
pub(crate) mod maintenance {
    use std::path::Path;

    use super::{AppPaths, LayoutError};
    use crate::fs::{self, Dir};
    use serde::{Deserialize, Serialize};

    /// The flag's name in `shared/`.
    const FLAG: &str = "maintenance.json";

    /// The flag's content.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub(crate) struct Maintenance {
        /// Shown to users.
        pub message: String,
        /// Since when, RFC 3339.
        pub since: String,
        /// Why (`rollback`, `needs_attention`, `operator`).
        pub reason: String,
    }

    /// Where the flag lives.
    pub(crate) fn path(paths: &AppPaths) -> std::path::PathBuf {
        paths.shared().join(FLAG)
    }

    /// `shared/`, held open (made when `create`); `None` when missing.
    fn shared_dir(paths: &AppPaths, create: bool) -> Result<Option<Dir>, LayoutError> {
        let root = paths.open_root()?;
        Ok(if create {
            Some(root.create_dirs(Path::new("shared"))?)
        } else {
            root.dir_optional(Path::new("shared"))?
        })
    }

    /// Turns the flag on (atomically; web servers never see half a file).
    pub(crate) fn on(
        paths: &AppPaths,
        message: &str,
        reason: &str,
    ) -> Result<Maintenance, LayoutError> {
        let m = Maintenance {
            message: message.to_string(),
            since: crate::store::state::now_rfc3339(),
            reason: reason.to_string(),
        };
        fs::create_dir_all(&paths.root)?;
        let dir = shared_dir(paths, true)?.expect("created");
        // World-readable: the web server tests for it.
        dir.write_atomic(
            Path::new(FLAG),
            &serde_json::to_vec_pretty(&m).expect("serializes"),
            0o644,
        )?;
        Ok(m)
    }

    /// Turns the flag off.
    pub(crate) fn off(paths: &AppPaths) -> Result<(), LayoutError> {
        if fs::symlink_metadata(&paths.root)?.is_none() {
            return Ok(());
        }
        if let Some(dir) = shared_dir(paths, false)? {
            dir.remove_file(Path::new(FLAG))?;
            dir.fsync()?;
        }
        Ok(())
    }

    /// The flag, if on.
    pub(crate) fn get(paths: &AppPaths) -> Result<Option<Maintenance>, LayoutError> {
        if fs::symlink_metadata(&paths.root)?.is_none() {
            return Ok(None);
        }
        let Some(dir) = shared_dir(paths, false)? else {
            return Ok(None);
        };
        Ok(dir
            .read_optional(Path::new(FLAG))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
}
