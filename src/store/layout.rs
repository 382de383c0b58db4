//! The on-disk layout of an app root (documented in `releases-layout.md`):
//! `releases/<version>/`, the `current` and `last-good` symlinks, `shared/`,
//! and the state folder `.switchyard/`.

use std::path::{Path, PathBuf};

use crate::config::SharedConfig;
use crate::fs::{self, FsError};
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

    /// Creates the folders an operation needs; existing ones are kept. The
    /// state folder is closed to other users (its files hold hook output,
    /// backups and history), also when an older version left it open.
    pub fn ensure(&self) -> Result<(), FsError> {
        let state = self.state_dir();
        for d in [
            self.root.clone(),
            self.releases(),
            self.shared(),
            state.clone(),
            self.manifests(),
        ] {
            if fs::metadata(&d)?.is_none() {
                if d == state {
                    fs::create_private_dir_all(&d)?;
                } else {
                    fs::create_dir_all(&d)?;
                }
                fs::fsync_dir(fs::parent_of(&d))?;
            }
        }
        fs::close_to_others(&state)
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
    paths: &AppPaths,
    shared: &SharedConfig,
    release_root: &Path,
) -> Result<(), LinkError> {
    for (p, is_dir) in shared
        .dirs
        .iter()
        .map(|p| (p, true))
        .chain(shared.files.iter().map(|p| (p, false)))
    {
        let persistent = paths.shared().join(p);
        if is_dir {
            if fs::metadata(&persistent)?.is_none() {
                fs::create_dir_all(&persistent)?;
            }
        } else if fs::metadata(&persistent)?.is_none() {
            return Err(LinkError::MissingSharedFile(persistent));
        }
        // Refuse to link through a symlink the release ships at a parent.
        let mut parent = release_root.to_path_buf();
        let comps: Vec<_> = p.components().collect();
        for c in &comps[..comps.len() - 1] {
            parent.push(c);
            match fs::symlink_metadata(&parent)? {
                Some(m) if m.file_type().is_symlink() || !m.is_dir() => {
                    return Err(LinkError::Conflict(parent.clone(), p.clone()));
                }
                Some(_) => {}
                None => fs::create_dir(&parent, 0o755)?,
            }
        }
        let link = release_root.join(p);
        fs::remove_any(&link)?;
        // From releases/<v>/<p> back up to the root: one ".." per component of
        // <p>'s parent, plus two for releases/<v>.
        let mut target = PathBuf::new();
        for _ in 0..(comps.len() - 1 + 2) {
            target.push("..");
        }
        target.push("shared");
        target.push(p);
        fs::symlink(&target, &link)?;
    }
    Ok(())
}

/// Errors linking shared paths.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// A configured shared file does not exist yet.
    #[error(
        "shared file {} does not exist; create it (for example the app's .env) before installing, or remove it from [apps.<name>.shared].files",
        .0.display()
    )]
    MissingSharedFile(PathBuf),
    /// The release ships a symlink or file where a shared path's parent should be.
    #[error(
        "cannot link shared path {}: the release has a symlink or file at {}",
        .1.display(),
        .0.display()
    )]
    Conflict(PathBuf, PathBuf),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
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
        link_shared(&paths, &shared, &rel).unwrap();
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
    use super::AppPaths;
    use crate::fs::{self, FsError};
    use serde::{Deserialize, Serialize};

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
        paths.shared().join("maintenance.json")
    }

    /// Turns the flag on (atomically; web servers never see half a file).
    pub(crate) fn on(
        paths: &AppPaths,
        message: &str,
        reason: &str,
    ) -> Result<Maintenance, FsError> {
        let m = Maintenance {
            message: message.to_string(),
            since: crate::store::state::now_rfc3339(),
            reason: reason.to_string(),
        };
        fs::create_dir_all(&paths.shared())?;
        fs::write_atomic(
            &path(paths),
            &serde_json::to_vec_pretty(&m).expect("serializes"),
        )?;
        Ok(m)
    }

    /// Turns the flag off.
    pub(crate) fn off(paths: &AppPaths) -> Result<(), FsError> {
        fs::remove_file(&path(paths))?;
        fs::fsync_dir(&paths.shared())
    }

    /// The flag, if on.
    pub(crate) fn get(paths: &AppPaths) -> Result<Option<Maintenance>, FsError> {
        Ok(fs::read_optional(&path(paths))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}
