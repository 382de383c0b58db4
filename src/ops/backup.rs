//! Backups of what a release may change: the output of the `backup` hook (a
//! database dump, say) and, with `backup_shared = true`, the configured shared
//! paths. Each backup is one gzip-compressed tar under `.switchyard/backups/`,
//! checksummed (SHA-256) and described by a JSON metadata file beside it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{SharedConfig, UnpackLimits};
use crate::fs::{self, Dir, FsError};
use crate::store::layout::{AppPaths, LayoutError, SharedEntry};
use crate::verify::HashingWriter;

/// Runs a hook with `$SWITCHYARD_BACKUP_FILE` set to the path given.
pub(crate) type HookFn<'a> = &'a dyn Fn(&Path) -> Result<(), String>;

/// Name of the hook's dump inside a backup archive.
const HOOK_ENTRY: &str = "hook/backup";

/// Errors of backup operations.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackupError {
    /// The backup hook failed.
    #[error("the backup hook failed: {0}; nothing was changed, fix the hook and deploy again")]
    Hook(String),
    /// The hook exited 0 but wrote nothing.
    #[error(
        "the backup hook exited 0 but wrote nothing to $SWITCHYARD_BACKUP_FILE ({}); it must write its dump there",
        .0.display()
    )]
    HookWroteNothing(PathBuf),
    /// No such backup.
    #[error("no backup {id} in {}; `switchyard backup list` shows the app's backups", dir.display())]
    NotFound {
        /// Where backups are kept (the app's, so the app is named).
        dir: PathBuf,
        /// The id asked for.
        id: String,
    },
    /// The archive does not match its recorded checksum.
    #[error(
        "backup {id} is damaged: {file} hashes to {actual}, its metadata says {expected}; restore another backup"
    )]
    Damaged {
        /// The backup.
        id: String,
        /// Its archive.
        file: String,
        /// Recorded digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// A dump exists but no restore hook is configured.
    #[error(
        "backup {id} holds a hook dump but no restore hook is configured; add hooks.restore = \"COMMAND\" to [apps.{app}] (it reads $SWITCHYARD_BACKUP_FILE), or restore {} by hand",
        file.display()
    )]
    NoRestoreHook {
        /// The app the backup belongs to.
        app: String,
        /// The backup.
        id: String,
        /// Where the dump was extracted.
        file: PathBuf,
    },
    /// The restore hook failed.
    #[error("the restore hook failed for backup {id}: {reason}")]
    RestoreHook {
        /// The backup.
        id: String,
        /// Why.
        reason: String,
    },
    /// The archive could not be unpacked.
    #[error("backup {id} could not be unpacked: {reason}")]
    Unpack {
        /// The backup.
        id: String,
        /// Why.
        reason: String,
    },
    /// A shared path is refused (a symlink where it or a parent should be).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What a backup holds and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct BackupMeta {
    /// Sortable id (`<UTC time>-<random>`).
    pub id: String,
    /// When it was taken, RFC 3339.
    pub time: String,
    /// The app.
    pub app: String,
    /// The release live when it was taken.
    pub app_version: Option<String>,
    /// The deploy that took it (empty for `backup create`).
    pub deploy_id: String,
    /// Size of the archive in bytes.
    pub size: u64,
    /// SHA-256 of the archive.
    pub sha256: String,
    /// It holds the backup hook's dump.
    pub has_hook_dump: bool,
    /// Shared paths it holds.
    pub shared: Vec<String>,
}

/// `.switchyard/backups`.
pub(crate) fn dir(paths: &AppPaths) -> PathBuf {
    paths.state_dir().join("backups")
}

fn archive_path(paths: &AppPaths, id: &str) -> PathBuf {
    dir(paths).join(format!("{id}.tar.gz"))
}

fn meta_path(paths: &AppPaths, id: &str) -> PathBuf {
    dir(paths).join(format!("{id}.json"))
}

/// What to back up.
pub(crate) struct BackupRequest<'a> {
    /// The app.
    pub app: &'a str,
    /// The live release.
    pub app_version: Option<String>,
    /// The deploy taking it.
    pub deploy_id: &'a str,
    /// Runs the backup hook with `$SWITCHYARD_BACKUP_FILE` set to the path
    /// given; None when no hook is configured.
    pub run_hook: Option<HookFn<'a>>,
    /// Shared paths to include (empty unless `backup_shared = true`).
    pub shared: &'a SharedConfig,
    /// Backups to keep (at least 1).
    pub keep: usize,
}

/// Takes a backup, then prunes old ones. Nothing is left behind on failure.
pub(crate) fn create(paths: &AppPaths, req: &BackupRequest<'_>) -> Result<BackupMeta, BackupError> {
    let bdir = dir(paths);
    fs::create_private_dir_all(&bdir)?;
    let now = jiff::Timestamp::now();
    // Sortable by creation time down to the microsecond: retention keeps
    // the newest by this order, so two backups in one second must not tie.
    let id = format!(
        "{}Z-{:04x}",
        now.strftime("%Y%m%dT%H%M%S%.6f"),
        fastrand::u16(..)
    );
    // In the root, not in the closed `.switchyard/`: a backup hook running
    // as the app's user must reach its dump folder (handed to it). A crash
    // leaves a temporary name the repair removes.
    let work = paths
        .root
        .join(fs::temp_name(std::ffi::OsStr::new("backup")));
    fs::create_dir(&work, 0o700)?;
    let res = create_in(paths, req, &id, &work);
    let _ = fs::remove_dir_all(&work);
    if res.is_err() {
        let _ = fs::remove_file(&bdir.join(format!(".tmp-{id}.tar.gz")));
    }
    let meta = res?;
    prune_keeping(paths, req.keep.max(1), Some(&meta.id))?;
    Ok(meta)
}

fn create_in(
    paths: &AppPaths,
    req: &BackupRequest<'_>,
    id: &str,
    work: &Path,
) -> Result<BackupMeta, BackupError> {
    let dump = work.join("dump");
    if let Some(run) = req.run_hook {
        run(&dump).map_err(BackupError::Hook)?;
        if fs::symlink_metadata(&dump)?.is_none() {
            return Err(BackupError::HookWroteNothing(dump));
        }
    }
    let tmp = dir(paths).join(format!(".tmp-{id}.tar.gz"));
    let file = fs::create_new(&tmp, 0o600)?;
    let werr = |e: io::Error| FsError::new("write", &tmp, e);
    let hw = HashingWriter::new(io::BufWriter::new(file));
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        hw,
        flate2::Compression::default(),
    ));
    tar.follow_symlinks(false);
    // A top-level marker keeps the archive from having a single top
    // directory, which unpacking would strip.
    let marker = serde_json::json!({"id": id, "app": req.app}).to_string();
    let mut h = tar::Header::new_gnu();
    h.set_size(marker.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "backup.json", marker.as_bytes())
        .map_err(werr)?;
    let has_hook_dump = req.run_hook.is_some();
    if has_hook_dump {
        tar.append_path_with_name(&dump, HOOK_ENTRY).map_err(werr)?;
    }
    let mut shared = Vec::new();
    for p in req.shared.dirs.iter().chain(req.shared.files.iter()) {
        // Reached from the root without following a symlink: a link at
        // the path or a parent is refused (it could lead anywhere, and a
        // backup holding only the link could never be restored).
        let Some(SharedEntry {
            dir,
            name,
            meta: Some(m),
        }) = paths.shared_entry(p, false)?
        else {
            continue;
        };
        append(&mut tar, &dir, &name, &m, &Path::new("shared").join(p)).map_err(|e| match e {
            Append::Fs(e) => BackupError::from(LayoutError::from(e)),
            Append::Write(e) => werr(e).into(),
        })?;
        shared.push(p.display().to_string());
    }
    let gz = tar.into_inner().map_err(werr)?;
    let hw = gz.finish().map_err(werr)?;
    let (inner, sha, n) = hw.finish();
    let file = inner.into_inner().map_err(|e| werr(e.into_error()))?;
    fs::fsync_file(&file, &tmp)?;
    drop(file);
    let meta = BackupMeta {
        id: id.to_string(),
        time: crate::store::state::now_rfc3339(),
        app: req.app.to_string(),
        app_version: req.app_version.clone(),
        deploy_id: req.deploy_id.to_string(),
        size: n,
        sha256: hex::encode(sha),
        has_hook_dump,
        shared,
    };
    // The archive lands first; metadata published last marks it complete.
    fs::rename(&tmp, &archive_path(paths, id))?;
    fs::write_atomic_private(
        &meta_path(paths, id),
        &serde_json::to_vec_pretty(&meta).expect("metadata serializes"),
    )?;
    Ok(meta)
}

/// Why appending to an archive failed.
enum Append {
    /// Reading the shared path.
    Fs(FsError),
    /// Writing the archive.
    Write(io::Error),
}

impl From<FsError> for Append {
    fn from(e: FsError) -> Self {
        Append::Fs(e)
    }
}

/// Appends `name` of `dir` (whose `lstat` is `meta`) as `as_name`, and a
/// directory's entries below it, read through directories held open: a
/// symlink inside is archived as a link, never followed.
fn append<W: io::Write>(
    tar: &mut tar::Builder<W>,
    dir: &Dir,
    name: &Path,
    meta: &std::fs::Metadata,
    as_name: &Path,
) -> Result<(), Append> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    if ft.is_dir() {
        tar.append_data(&mut h, as_name, io::empty())
            .map_err(Append::Write)?;
        let sub = dir.subdir(name)?;
        let mut names = sub.list()?;
        names.sort();
        for n in names {
            let n = Path::new(&n);
            if let Some(m) = sub.stat(n)? {
                append(tar, &sub, n, &m, &as_name.join(n))?;
            }
        }
    } else if ft.is_file() {
        let Some(f) = dir.open_file(name)? else {
            return Ok(()); // removed meanwhile
        };
        let m = f
            .metadata()
            .map_err(|e| FsError::new("stat", dir.join(name), e))?;
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        // Exactly the size the header gives, should the file grow.
        tar.append_data(&mut h, as_name, io::Read::take(f, m.len()))
            .map_err(Append::Write)?;
    } else if ft.is_symlink() {
        let target = dir.read_link(name)?;
        tar.append_link(&mut h, as_name, target)
            .map_err(Append::Write)?;
    } else {
        // Sockets and FIFOs hold no data, and no restore could recreate
        // them safely.
        tracing::warn!(path = %dir.join(name).display(), "not a file, directory or symlink; left out of the backup");
    }
    Ok(())
}

/// Every complete backup, oldest first.
pub(crate) fn list(paths: &AppPaths) -> Result<Vec<BackupMeta>, BackupError> {
    let mut out = Vec::new();
    for n in fs::list_dir(&dir(paths))? {
        let Some(n) = n.to_str() else { continue };
        if n.starts_with('.') || !n.ends_with(".json") {
            continue;
        }
        let Some(b) = fs::read_optional(&dir(paths).join(n))? else {
            continue;
        };
        if let Ok(m) = serde_json::from_slice::<BackupMeta>(&b) {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// One backup's metadata.
pub(crate) fn get(paths: &AppPaths, id: &str) -> Result<BackupMeta, BackupError> {
    if crate::version::check_component("backup id", id).is_err() {
        return Err(BackupError::NotFound {
            dir: dir(paths),
            id: id.to_string(),
        });
    }
    let b = fs::read_optional(&meta_path(paths, id))?.ok_or_else(|| BackupError::NotFound {
        dir: dir(paths),
        id: id.to_string(),
    })?;
    serde_json::from_slice(&b).map_err(|_| BackupError::NotFound {
        dir: dir(paths),
        id: id.to_string(),
    })
}

/// The backup `id` names, or without one the newest.
pub(crate) fn resolve_id(paths: &AppPaths, id: Option<&str>) -> Result<String, BackupError> {
    match id {
        Some(i) => Ok(i.to_string()),
        None => list(paths)?
            .pop()
            .map(|m| m.id)
            .ok_or_else(|| BackupError::NotFound {
                dir: dir(paths),
                id: "(newest)".into(),
            }),
    }
}

/// Re-checks a backup's checksum.
pub(crate) fn verify(paths: &AppPaths, id: &str) -> Result<BackupMeta, BackupError> {
    let meta = get(paths, id)?;
    let path = archive_path(paths, id);
    let actual = hex::encode(crate::verify::sha256_file(&path)?);
    if actual != meta.sha256 {
        return Err(BackupError::Damaged {
            id: id.to_string(),
            file: path.display().to_string(),
            expected: meta.sha256,
            actual,
        });
    }
    Ok(meta)
}

/// A backup unpacked into a work folder, its restore hook run, its shared
/// paths ready to be placed beside their targets and exchanged in (the
/// session does that under a journal: `Session::restore_backup`).
pub(crate) struct StagedRestore {
    /// The backup.
    pub meta: BackupMeta,
    /// Each shared path: (the unpacked copy, its target in `shared/`).
    pub copies: Vec<(PathBuf, PathBuf)>,
    work: PathBuf,
}

impl Drop for StagedRestore {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// The name a restore gives the new copy of `target` beside it (and, after
/// the exchange, the old data): hidden, and recorded in the journal before
/// it exists.
pub(crate) fn staged_name(target: &Path, id: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::parent_of(target).join(format!(".{name}.switchyard-restore-{id}"))
}

/// Verifies a backup, unpacks it into a work folder and runs the restore
/// hook on its dump. Nothing in `shared/` changes yet.
pub(crate) fn stage_restore(
    paths: &AppPaths,
    id: &str,
    run_restore_hook: Option<HookFn<'_>>,
) -> Result<StagedRestore, BackupError> {
    let meta = verify(paths, id)?;
    // In the root, like a backup's work folder (see `create`).
    let work = paths
        .root
        .join(fs::temp_name(std::ffi::OsStr::new("restore")));
    fs::create_dir(&work, 0o700)?;
    let mut staged = StagedRestore {
        meta,
        copies: Vec::new(),
        work,
    };
    let f = fs::open(&archive_path(paths, id))?;
    // Our own archive, but unpacked with the same rules as any other.
    let limits = UnpackLimits {
        max_bytes: u64::MAX / 4,
        max_entries: u64::MAX / 4,
        // Written by `backup`: what it holds is as compressible as it is.
        max_compression_ratio: u64::MAX,
        strip_top_dir: Some(false),
    };
    let un = crate::verify::unpack::unpack_tar_gz(f, &staged.work, &limits).map_err(|e| {
        BackupError::Unpack {
            id: id.to_string(),
            reason: e.to_string(),
        }
    })?;
    let root = un.content_root;
    if staged.meta.has_hook_dump {
        let dump = root.join(HOOK_ENTRY);
        match run_restore_hook {
            Some(run) => run(&dump).map_err(|reason| BackupError::RestoreHook {
                id: id.to_string(),
                reason,
            })?,
            None => {
                return Err(BackupError::NoRestoreHook {
                    app: staged.meta.app.clone(),
                    id: id.to_string(),
                    file: dump,
                });
            }
        }
    }
    for p in &staged.meta.shared {
        staged
            .copies
            .push((root.join("shared").join(p), paths.shared().join(p)));
    }
    Ok(staged)
}

/// Keeps the newest `keep` backups, and `protect` whatever its age (the one
/// a deploy just took).
fn prune_keeping(
    paths: &AppPaths,
    keep: usize,
    protect: Option<&str>,
) -> Result<Vec<String>, BackupError> {
    let all = list(paths)?;
    let cut = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for m in all[..cut].iter().filter(|m| Some(m.id.as_str()) != protect) {
        // Metadata first: without it the archive is not a backup any more.
        fs::remove_file(&meta_path(paths, &m.id))?;
        fs::remove_file(&archive_path(paths, &m.id))?;
        removed.push(m.id.clone());
    }
    // Leftovers of interrupted backups.
    for n in fs::list_dir(&dir(paths))? {
        if let Some(n) = n.to_str()
            && n.starts_with(".tmp-")
        {
            fs::remove_any(&dir(paths).join(n))?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, AppPaths, SharedConfig) {
        let d = tempfile::tempdir().unwrap();
        let p = AppPaths::new(d.path());
        p.ensure().unwrap();
        fs::create_dir_all(&p.shared().join("uploads")).unwrap();
        fs::write_atomic(&p.shared().join("uploads/a.txt"), b"original").unwrap();
        let shared = SharedConfig {
            dirs: vec!["uploads".into()],
            files: vec![],
        };
        (d, p, shared)
    }

    #[test]
    fn create_verify_restore_prune() {
        let (_d, p, shared) = setup();
        let hook = |f: &Path| fs::write_atomic(f, b"db dump v1").map_err(|e| e.to_string());
        let req = BackupRequest {
            app: "web",
            app_version: Some("1.0.0".into()),
            deploy_id: "d1",
            run_hook: Some(&hook),
            shared: &shared,
            keep: 2,
        };
        let m = create(&p, &req).unwrap();
        assert!(m.has_hook_dump && m.shared == ["uploads"]);
        verify(&p, &m.id).unwrap();

        fs::write_atomic(&p.shared().join("uploads/a.txt"), b"changed").unwrap();
        let restored = std::cell::RefCell::new(Vec::new());
        let rhook = |f: &Path| {
            restored.borrow_mut().push(fs::read(f).unwrap());
            Ok(())
        };
        // Staging runs the hook on the dump and unpacks the shared copy; the
        // session swaps it in (tests/it: backups, faults).
        let s = stage_restore(&p, &m.id, Some(&rhook)).unwrap();
        assert_eq!(restored.borrow()[0], b"db dump v1");
        assert_eq!(s.copies[0].1, p.shared().join("uploads"));
        assert_eq!(fs::read(&s.copies[0].0.join("a.txt")).unwrap(), b"original");
        drop(s);

        for _ in 0..3 {
            create(&p, &req).unwrap();
        }
        assert_eq!(list(&p).unwrap().len(), 2, "retention keeps 2");
    }

    #[test]
    fn damage_is_detected_and_blocks_restore() {
        let (_d, p, shared) = setup();
        let req = BackupRequest {
            app: "web",
            app_version: None,
            deploy_id: "",
            run_hook: None,
            shared: &shared,
            keep: 3,
        };
        let m = create(&p, &req).unwrap();
        let a = archive_path(&p, &m.id);
        let mut b = fs::read(&a).unwrap();
        let n = b.len() / 2;
        b[n] ^= 1;
        fs::write_atomic(&a, &b).unwrap();
        assert!(matches!(
            verify(&p, &m.id),
            Err(BackupError::Damaged { .. })
        ));
        assert!(stage_restore(&p, &m.id, None).is_err());
    }

    #[test]
    fn failing_or_silent_hook_leaves_nothing() {
        let (_d, p, shared) = setup();
        let bad = |_: &Path| Err("exit 1".to_string());
        let silent = |_: &Path| Ok(());
        for h in [&bad as HookFn<'_>, &silent] {
            let req = BackupRequest {
                app: "web",
                app_version: None,
                deploy_id: "",
                run_hook: Some(h),
                shared: &shared,
                keep: 3,
            };
            assert!(create(&p, &req).is_err());
        }
        assert!(list(&p).unwrap().is_empty());
        assert!(fs::list_dir(&dir(&p)).unwrap().is_empty(), "no debris");
    }
}
