//! What an operator watches, read-only: the running deploy's record in
//! `state.json` and the hooks' logs under `.switchyard/logs/<deploy id>/`
//! (both part of the on-disk contract, so a CLI can follow an operation
//! the agent runs just as well as its own). Also the retention of those
//! log folders.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::info;

use crate::config::AppConfig;
use crate::fs::{self, FsError};
use crate::store::layout::AppPaths;
use crate::store::state::{AppState, StateError};

/// Errors reading hook logs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    /// No log folder for that deploy.
    #[error("no hook logs for deploy {id} under {}", dir.display())]
    NoDeploy {
        /// The deploy id asked for.
        id: String,
        /// Where they were looked for.
        dir: PathBuf,
    },
    /// The app has no hook logs at all.
    #[error("no hook logs yet under {}: no deploy ran a hook", dir.display())]
    Empty {
        /// The logs folder.
        dir: PathBuf,
    },
    /// No log for that hook in the deploy.
    #[error("deploy {id} has no log of hook {hook} (it has: {have})")]
    NoHook {
        /// The deploy.
        id: String,
        /// The hook asked for.
        hook: String,
        /// The hooks it has logs of.
        have: String,
    },
    /// State failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The deploy (or checked promote or revert) the state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeployView {
    /// Its id (its hook logs are in `logs/<id>/`).
    pub id: String,
    /// `deploy`, `promote` or `revert`.
    pub op: String,
    /// The state's name (`applying`, `completed`, ...).
    pub state: &'static str,
    /// The step within it (`warm`, `swap`, ...).
    pub step: String,
    /// The release it brings live.
    pub to: Option<String>,
    /// Nothing runs any more.
    pub terminal: bool,
    /// Why it failed, as kept in the state file.
    pub last_error: Option<String>,
}

/// The record in `state.json`, if any (and readable).
pub(crate) fn deploy_view(cfg: &AppConfig) -> Option<DeployView> {
    let rec = AppState::load(&AppPaths::new(&cfg.root)).ok()?.deploy?;
    Some(DeployView {
        id: rec.id,
        op: rec.op,
        state: rec.state.as_str(),
        step: rec.step,
        to: rec.to.map(|v| v.to_string()),
        terminal: rec.state.is_terminal(),
        last_error: rec.last_error,
    })
}

/// One hook's log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookLog {
    /// The hook (the file's stem).
    pub hook: String,
    /// The file.
    pub path: PathBuf,
}

fn logs_dir(cfg: &AppConfig) -> PathBuf {
    AppPaths::new(&cfg.root).state_dir().join("logs")
}

fn modified(p: &Path) -> Result<SystemTime, FsError> {
    Ok(fs::symlink_metadata(p)?
        .and_then(|m| m.modified().ok())
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

/// The deploy folders under `logs/`, oldest first (by last change).
fn deploy_dirs(dir: &Path) -> Result<Vec<(SystemTime, String)>, FsError> {
    let mut v = Vec::new();
    for name in fs::list_dir(dir)? {
        let Some(name) = name.to_str().map(String::from) else {
            continue;
        };
        let p = dir.join(&name);
        // Real folders only: a symlink planted there is neither listed nor followed.
        if fs::symlink_metadata(&p)?.is_some_and(|m| m.is_dir()) {
            v.push((modified(&p)?, name));
        }
    }
    v.sort();
    Ok(v)
}

/// The hook logs of deploy `id` (the newest deploy's without it), in the
/// order the hooks ran (by their last write), and the id.
pub(crate) fn hook_logs(
    cfg: &AppConfig,
    id: Option<&str>,
) -> Result<(String, Vec<HookLog>), WatchError> {
    let dir = logs_dir(cfg);
    let id = match id {
        Some(id) => id.to_string(),
        None => match deploy_dirs(&dir)?.pop() {
            Some((_, id)) => id,
            None => return Err(WatchError::Empty { dir }),
        },
    };
    let ddir = dir.join(&id);
    if id.contains('/')
        || id.starts_with('.')
        || !fs::symlink_metadata(&ddir)?.is_some_and(|m| m.is_dir())
    {
        return Err(WatchError::NoDeploy { id, dir });
    }
    Ok((id, logs_in(&ddir)?))
}

/// The deploys that have hook logs, newest first (the console lists them).
pub(crate) fn deploys_with_logs(cfg: &AppConfig) -> Vec<String> {
    let mut v: Vec<String> = deploy_dirs(&logs_dir(cfg))
        .unwrap_or_default()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    v.reverse();
    v
}

/// The `.log` files in a deploy's folder, oldest write first.
pub(crate) fn logs_in(ddir: &Path) -> Result<Vec<HookLog>, FsError> {
    let mut v = Vec::new();
    for name in fs::list_dir(ddir)? {
        let Some(hook) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        let path = ddir.join(&name);
        if fs::symlink_metadata(&path)?.is_some_and(|m| m.is_file()) {
            v.push((modified(&path)?, hook.to_string(), path));
        }
    }
    v.sort();
    Ok(v.into_iter()
        .map(|(_, hook, path)| HookLog { hook, path })
        .collect())
}

/// The folder of deploy `id`'s hook logs.
pub(crate) fn deploy_log_dir(cfg: &AppConfig, id: &str) -> PathBuf {
    logs_dir(cfg).join(id)
}

/// Keeps only `logs` matching `hook`, or says which hooks there are.
pub(crate) fn only_hook(
    id: &str,
    logs: Vec<HookLog>,
    hook: &str,
) -> Result<Vec<HookLog>, WatchError> {
    let have = logs
        .iter()
        .map(|l| l.hook.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let v: Vec<HookLog> = logs.into_iter().filter(|l| l.hook == hook).collect();
    if v.is_empty() {
        return Err(WatchError::NoHook {
            id: id.to_string(),
            hook: hook.to_string(),
            have: if have.is_empty() { "none".into() } else { have },
        });
    }
    Ok(v)
}

/// What was appended to `path` since `offset`: the bytes up to the last
/// complete line, and the offset after them. A missing file has nothing.
pub(crate) fn read_from(path: &Path, offset: u64) -> Result<(Vec<u8>, u64), FsError> {
    if fs::symlink_metadata(path)?.is_none() {
        return Ok((Vec::new(), offset));
    }
    // Not a regular file (a symlink planted there): nothing to show.
    let Ok(mut f) = fs::open_regular(path)? else {
        return Ok((Vec::new(), offset));
    };
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(|e| FsError::new("read", path, e))?;
    let keep = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    buf.truncate(keep);
    Ok((buf, offset + keep as u64))
}

/// Removes the hook log folders of all but the newest `keep` deploys
/// (never `current_id`'s). Each is removed without following symlinks.
pub(crate) fn prune_hook_logs(
    paths: &AppPaths,
    app: &str,
    keep: usize,
    current_id: &str,
) -> Result<usize, FsError> {
    let dir = paths.state_dir().join("logs");
    let dirs = deploy_dirs(&dir)?;
    let old = dirs.len().saturating_sub(keep);
    let mut removed = 0;
    for (_, id) in dirs.into_iter().take(old) {
        if id == current_id {
            continue;
        }
        fs::remove_any(&dir.join(&id))?;
        removed += 1;
    }
    if removed > 0 {
        info!(app = %app, removed, keep, "removed old hook logs");
    }
    Ok(removed)
}

/// 1536 → "1.5 KiB": a size as people read it, for the CLI and the
/// console alike.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_returns_complete_lines_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("warm.log");
        assert_eq!(read_from(&p, 0).unwrap(), (Vec::new(), 0));
        fs::write_atomic(&p, b"out: a\nout: b").unwrap();
        let (b, off) = read_from(&p, 0).unwrap();
        assert_eq!((b.as_slice(), off), (&b"out: a\n"[..], 7));
        let (b, off) = read_from(&p, off).unwrap();
        assert_eq!((b.len(), off), (0, 7));
    }

    #[test]
    fn pruning_keeps_the_newest_and_the_running_one() {
        let d = tempfile::tempdir().unwrap();
        let paths = AppPaths::new(d.path());
        let logs = paths.state_dir().join("logs");
        for (i, id) in ["d1", "d2", "d3", "d4"].iter().enumerate() {
            fs::create_dir_all(&logs.join(id)).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            fs::open(&logs.join(id)).unwrap().set_modified(t).unwrap();
        }
        // A symlink is not a deploy folder: never followed, never counted.
        fs::symlink(d.path(), &logs.join("evil")).unwrap();
        assert_eq!(prune_hook_logs(&paths, "web", 2, "d1").unwrap(), 1);
        let mut left: Vec<String> = fs::list_dir(&logs)
            .unwrap()
            .into_iter()
            .map(|n| n.into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["d1", "d3", "d4", "evil"]);
    }
}
