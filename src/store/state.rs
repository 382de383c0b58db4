//! Per-app state under `root/.switchyard/`: the exclusive operation lock, the
//! journal of the operation in progress, the persistent state file, and the
//! crash checkpoints tests use to stop the process at a named instant (in
//! builds with the `test-seams` feature only).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError};
use crate::store::layout::{AppPaths, LayoutError};
use crate::version::Version;

/// Errors about state, lock and journal.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another operation holds the app's lock.
    #[error(
        "app {app} is busy: {holder}; wait for it to finish, or pass --wait to queue behind it"
    )]
    Busy {
        /// The app.
        app: String,
        /// Who holds the lock, as recorded by the holder.
        holder: String,
    },
    /// A state file could not be parsed.
    #[error(
        "{} is damaged; move it aside and rerun, Switchyard rebuilds what it can",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A symlink or file where the root's layout needs a directory, or a
    /// root that belongs to another app.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Who holds a lock, as written into the lock file by the holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// The operation ("install 1.2.0").
    pub operation: String,
    /// When it started, RFC 3339.
    pub since: String,
}

/// The app's exclusive operation lock (`flock(2)` on `.switchyard/lock`).
/// The kernel releases it when the holder dies, so a lock left by a killed
/// process is recovered without any cleanup.
pub struct AppLock {
    _flock: Flock<std::fs::File>,
}

impl AppLock {
    /// Takes the lock for `operation`; fails at once with the holder's pid and
    /// operation if it is taken, unless `wait`.
    pub fn acquire(
        paths: &AppPaths,
        app: &str,
        operation: &str,
        wait: bool,
    ) -> Result<AppLock, StateError> {
        let path = paths.lock();
        let file = fs::open_rw(&path)?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        let mut flock = match Flock::lock(file, arg) {
            Ok(l) => l,
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                let holder = serde_json::from_str::<LockHolder>(&s)
                    .map(|h| {
                        format!(
                            "pid {} is running '{}' since {}",
                            h.pid, h.operation, h.since
                        )
                    })
                    .unwrap_or_else(|_| "another process holds the lock".to_string());
                return Err(StateError::Busy {
                    app: app.to_string(),
                    holder,
                });
            }
            Err((_, errno)) => {
                return Err(FsError::new("lock", &path, std::io::Error::from(errno)).into());
            }
        };
        let holder = LockHolder {
            pid: std::process::id(),
            operation: operation.to_string(),
            since: now_rfc3339(),
        };
        // The lock file's content is advisory (for the Busy message); a crash
        // while writing it only garbles that message.
        let f: &mut std::fs::File = &mut flock;
        let res = (|| {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(
                serde_json::to_string(&holder)
                    .unwrap_or_default()
                    .as_bytes(),
            )
        })();
        res.map_err(|e| FsError::new("write lock holder", &path, e))?;
        Ok(AppLock { _flock: flock })
    }

    /// The holder of an app's lock, if someone holds it right now.
    pub fn holder(paths: &AppPaths) -> Result<Option<LockHolder>, StateError> {
        let path = paths.lock();
        if fs::metadata(&path)?.is_none() {
            return Ok(None);
        }
        let file = fs::open_rw(&path)?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => Ok(None),
            Err((mut file, _)) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                Ok(serde_json::from_str(&s).ok())
            }
        }
    }
}

/// Persistent per-app state (`.switchyard/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(crate) struct AppState {
    /// Highest version ever verified and installed.
    pub highest_verified: Option<Version>,
    /// Every version verified and installed here. The downgrade floor is
    /// the highest of them that is not quarantined ([`AppState::downgrade_floor`]).
    pub verified: BTreeSet<Version>,
    /// Releases a deploy prepared (warm, staging check, backup, migrate) or
    /// that went live: `promote` takes them without `--skip-lifecycle`.
    pub prepared: BTreeSet<Version>,
    /// Hash of the last audit line and how many lines there are, so a
    /// deleted tail is detected.
    pub audit_head: Option<AuditHead>,
    /// Releases that failed a deploy: never installed again automatically;
    /// promote and deploy need --force.
    pub quarantined: std::collections::BTreeMap<String, Quarantine>,
    /// Set when the app is in a state Switchyard will not guess its way out
    /// of (a migrate with unknown outcome, a failed rollback): deploys are
    /// blocked until `switchyard resolve`.
    pub attention: Option<Attention>,
    /// Set by `switchyard hold` and by a manual promote or revert: the agent
    /// deploys nothing on its own until `switchyard unhold`.
    pub hold: Option<Hold>,
    /// The last (or running) deploy's state machine. Each transition is
    /// saved before the step it names runs.
    pub deploy: Option<DeployRecord>,
    /// The audit event of an operator's change (hold, unhold, quarantine,
    /// unquarantine, resolve), saved in the same write as the change and cleared once
    /// the event is in the audit log: after a crash in between, the next
    /// command's repair appends it. (An event, as JSON: this module sits
    /// below the audit log's.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_event: Option<serde_json::Value>,
}

/// Why a release is quarantined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Quarantine {
    /// What failed.
    pub reason: String,
    /// When.
    pub time: String,
    /// The deploy that failed.
    pub deploy_id: String,
}

/// Who stopped automatic deploys, when and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The operator (user name, or `console:<user>`).
    pub by: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why, in the operator's words, or the command that set it
    /// (`manual revert to 1.0.0`).
    pub reason: String,
    /// Set by a manual promote or revert rather than by `switchyard hold`.
    #[serde(default)]
    pub automatic: bool,
}

/// Why the app needs an operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Attention {
    /// `needs_attention` or `rollback_failed`.
    pub kind: String,
    /// What happened and what to do.
    pub reason: String,
    /// Since when.
    pub since: String,
    /// The deploy concerned.
    pub deploy_id: String,
}

/// States of a deploy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeployState {
    /// Nothing running.
    Idle,
    /// Pre-checks.
    Checking,
    /// A pre-check failed; nothing changed.
    PrecheckFailed,
    /// The backup is being taken.
    BackupRunning,
    /// The backup failed; nothing changed.
    BackupFailed,
    /// Fetching, verifying and unpacking.
    Downloading,
    /// Warm hook, swap, activate.
    Applying,
    /// The migrate hook runs.
    Migrating,
    /// A health check (staging or live) runs.
    HealthCheck,
    /// Reverting to the previous release.
    RollbackRunning,
    /// The revert failed: the app needs an operator.
    RollbackFailed,
    /// Deployed and healthy.
    Completed,
    /// Failed (and undone where anything had changed).
    Failed,
}

impl DeployState {
    /// The state's name, as `status` and the audit log spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeployState::Idle => "idle",
            DeployState::Checking => "checking",
            DeployState::PrecheckFailed => "precheck_failed",
            DeployState::BackupRunning => "backup_running",
            DeployState::BackupFailed => "backup_failed",
            DeployState::Downloading => "downloading",
            DeployState::Applying => "applying",
            DeployState::Migrating => "migrating",
            DeployState::HealthCheck => "health_check",
            DeployState::RollbackRunning => "rollback_running",
            DeployState::RollbackFailed => "rollback_failed",
            DeployState::Completed => "completed",
            DeployState::Failed => "failed",
        }
    }

    /// True when nothing is in progress.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            DeployState::Idle
                | DeployState::PrecheckFailed
                | DeployState::BackupFailed
                | DeployState::RollbackFailed
                | DeployState::Completed
                | DeployState::Failed
        )
    }
}

/// One deploy's progress, persisted in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DeployRecord {
    /// Deploy id (shared by its audit events and hook logs).
    pub id: String,
    /// Current state.
    pub state: DeployState,
    /// The step within the state (`warm`, `staging`, `swap`, `live`, ...).
    pub step: String,
    /// Release live when it started.
    pub from: Option<Version>,
    /// Release being deployed.
    pub to: Option<Version>,
    /// Started at.
    pub started: String,
    /// Last transition at.
    pub updated: String,
    /// The last error.
    pub last_error: Option<String>,
    /// The backup taken by this deploy.
    pub backup_id: Option<String>,
    /// The migrate hook was started.
    pub migrate_started: bool,
    /// The migrate hook finished successfully.
    pub migrate_done: bool,
    /// The swap of `current` to `to` may have happened: set and saved before
    /// the swap, so the repair knows to undo it.
    pub swapped: bool,
    /// `last-good` when the deploy started: a rollback puts it back, so the
    /// failed release never becomes the rollback target.
    #[serde(default)]
    pub prev_last_good: Option<Version>,
    /// What runs: `deploy`, or a checked `promote` or `revert` (which go
    /// live through the same steps, and are undone by the same rule).
    #[serde(default = "deploy_op")]
    pub op: String,
    /// The event that ends this record is in the audit log. A terminal
    /// record without it gets it from the next repair.
    #[serde(default = "yes")]
    pub audited: bool,
}

fn deploy_op() -> String {
    "deploy".into()
}

fn yes() -> bool {
    true
}

impl DeployRecord {
    /// A record starting now in `state`/`step`, nothing done yet.
    pub(crate) fn new(
        id: String,
        state: DeployState,
        step: &str,
        from: Option<Version>,
        to: Option<Version>,
    ) -> Self {
        let now = now_rfc3339();
        DeployRecord {
            id,
            state,
            step: step.to_string(),
            from,
            to,
            started: now.clone(),
            updated: now,
            last_error: None,
            backup_id: None,
            migrate_started: false,
            migrate_done: false,
            swapped: false,
            prev_last_good: None,
            op: deploy_op(),
            audited: false,
        }
    }
}

/// The last link of the audit chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AuditHead {
    /// Number of lines.
    pub count: u64,
    /// Hash of the last line.
    pub hash: String,
}

impl AppState {
    /// The downgrade floor: the highest release verified here (or still
    /// installed) that is not quarantined. A quarantined release does not
    /// raise it, so a hotfix below a broken release can still be deployed.
    pub(crate) fn downgrade_floor(&self, installed: &[Version]) -> Option<Version> {
        self.verified
            .iter()
            .chain(self.highest_verified.iter())
            .chain(installed)
            .filter(|v| !self.is_quarantined(v))
            .max()
            .cloned()
    }

    /// Whether `v` is quarantined.
    pub(crate) fn is_quarantined(&self, v: &Version) -> bool {
        self.quarantined.contains_key(&v.to_string())
    }

    /// Loads the state; a missing file is the empty state.
    pub(crate) fn load(paths: &AppPaths) -> Result<AppState, StateError> {
        let path = paths.state_file();
        match fs::read_optional(&path)? {
            None => Ok(AppState::default()),
            Some(b) => {
                serde_json::from_slice(&b).map_err(|source| StateError::Corrupt { path, source })
            }
        }
    }

    /// Saves the state atomically.
    pub(crate) fn save(&self, paths: &AppPaths) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        fs::write_atomic_private(&paths.state_file(), &data)?;
        Ok(())
    }
}

/// Stops the process with SIGKILL when `SWITCHYARD_CRASH_AT` names this
/// checkpoint. Crash-consistency tests use it to kill at exact instants; only
/// a build with the `test-seams` feature has it.
#[cfg(feature = "test-seams")]
pub(crate) fn checkpoint(name: &str) {
    if let Some(want) = std::env::var_os("SWITCHYARD_CRASH_AT")
        && want == name
    {
        tracing::warn!(checkpoint = name, "SWITCHYARD_CRASH_AT: killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// A crash checkpoint; without the `test-seams` feature it does nothing and
/// the variable is not read, so a production process can never be killed
/// through it.
#[cfg(not(feature = "test-seams"))]
#[inline(always)]
pub(crate) fn checkpoint(_name: &str) {}

/// Now, as RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    // Fixed width (milliseconds always shown), so logs and history line up.
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A short random operation id.
pub(crate) fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Removes temporary debris a crashed operation may have left: staging
/// folders under `releases/`, temporary files and symlinks, and manifests
/// of releases that never landed. Only names Switchyard makes are touched
/// (`.staging-*` in `releases/`, `fs::TEMP_PREFIX` names elsewhere; under
/// `.switchyard/`, Switchyard's alone, any `.*.tmp-*`), each removed
/// through directories held open, never through a symlink. Returns what was
/// removed.
pub(crate) fn remove_debris(paths: &AppPaths) -> Result<Vec<PathBuf>, StateError> {
    let root = paths.open_root()?;
    let mut removed = Vec::new();
    let mut sweep = |rel: &str, pred: &dyn Fn(&str) -> bool| -> Result<(), StateError> {
        let Some(dir) = root.dir_optional(Path::new(rel))? else {
            return Ok(());
        };
        let mut any = false;
        for n in dir.list()? {
            let Some(n) = n.to_str() else { continue };
            if pred(n) {
                dir.remove_any(Path::new(n))?;
                removed.push(dir.join(n));
                any = true;
            }
        }
        if any {
            dir.fsync()?;
        }
        Ok(())
    };
    let ours = |n: &str| fs::is_temp_name(n);
    let own_dir = |n: &str| n.starts_with('.') && n.contains(".tmp-");
    sweep("releases", &|n| {
        n.starts_with(crate::store::layout::STAGING_PREFIX) || ours(n)
    })?;
    sweep(".", &ours)?;
    sweep("shared", &ours)?;
    sweep(".switchyard", &own_dir)?;
    sweep(".switchyard/manifests", &own_dir)?;
    let installed = paths.installed()?;
    sweep(".switchyard/manifests", &|n| {
        n.strip_suffix(".json")
            .and_then(|v| Version::parse(v).ok())
            .is_some_and(|v| !installed.contains(&v))
    })?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_their_serde_names() {
        use DeployState::*;
        for s in [
            Idle,
            Checking,
            PrecheckFailed,
            BackupRunning,
            BackupFailed,
            Downloading,
            Applying,
            Migrating,
            HealthCheck,
            RollbackRunning,
            RollbackFailed,
            Completed,
            Failed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
