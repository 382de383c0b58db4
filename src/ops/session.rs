//! A session: an app with its lock held and its on-disk state repaired,
//! the only way to change anything under an app root. Also the transaction
//! every change runs in: a journal records its intent before anything
//! changes, and the same journal-driven undo runs when the transaction is
//! dropped uncommitted and when the next session finds the journal of a
//! killed process.

use std::sync::Arc;

use crate::clock::Clock;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{info, warn};

use crate::config::AppConfig;
use crate::fs::{self, FsError};
use crate::ops::error::{DeployError, chain};
use crate::store::history::{self, Actor, Event};
use crate::store::journal::{Journal, finish_committed};
use crate::store::layout::{AppPaths, LayoutError, STAGING_PREFIX};
use crate::store::state::{AppLock, AppState, checkpoint, now_rfc3339, remove_debris};
use crate::version::Version;

/// An app with its lock held and its on-disk state repaired.
pub(super) struct Session<'a> {
    /// The app's configuration.
    pub(super) cfg: &'a AppConfig,
    /// Its paths.
    pub(super) paths: AppPaths,
    /// Who is acting.
    pub(super) actor: Actor,
    /// The clock hooks and health checks are timed on.
    pub(super) clock: Arc<dyn Clock>,
    _lock: AppLock,
}

impl<'a> Session<'a> {
    /// Takes the app's lock (failing fast unless `wait`), creates the root's
    /// folders, and repairs whatever a killed operation left behind.
    pub(super) fn open(
        cfg: &'a AppConfig,
        actor: Actor,
        operation: &str,
        wait: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<Session<'a>, DeployError> {
        let paths = AppPaths::new(&cfg.root);
        // Another app's root is refused before anything in it changes.
        paths.check_owner(&cfg.name)?;
        paths.ensure()?;
        let lock = AppLock::acquire(&paths, &cfg.name, operation, wait)?;
        paths.claim(&cfg.name)?;
        // Nothing may change that the audit log could not record.
        history::ensure_intact(&paths, &cfg.name)?;
        let s = Session {
            cfg,
            paths,
            actor,
            clock,
            _lock: lock,
        };
        s.repair()?;
        // After the repair, so no committed event is pending.
        let r = &cfg.retention;
        if history::rotate_if_needed(
            &s.paths,
            &cfg.name,
            r.audit_max_bytes,
            r.audit_keep_files,
            &s.actor,
        )? {
            info!(app = %cfg.name, "audit log rotated: audit.jsonl is now audit.jsonl.1");
        }
        Ok(s)
    }

    /// Undoes an interrupted operation, resumes or undoes an interrupted
    /// deploy (ops/rollback.rs), and removes temporary debris.
    fn repair(&self) -> Result<(), DeployError> {
        if let Some(j) = Journal::read(&self.paths)? {
            if j.commit.is_some() {
                // Killed after its commit point: the change stands; only
                // its audit line may be missing.
                info!(app = %self.cfg.name, op = %j.op, id = %j.id,
                    "finishing the commit of an interrupted operation");
                finish_committed(&self.paths, &j)?;
            } else {
                warn!(app = %self.cfg.name, op = %j.op, id = %j.id, pid = j.pid,
                    "found the journal of an interrupted operation; undoing it");
                let started = Instant::now();
                undo(&self.paths, &j)?;
                self.record(self.make_event(
                    &format!("release.{}.rolled_back", j.op),
                    &j.id,
                    j.prev_current.as_ref().map(|v| v.to_string()),
                    j.target.as_ref().map(|v| v.to_string()),
                    "rolled_back",
                    started,
                    Some(format!(
                        "interrupted (process {} did not finish); undone on the next start",
                        j.pid
                    )),
                    Default::default(),
                ))?;
            }
        }
        if AppState::load(&self.paths)?.pending_event.is_some() {
            info!(app = %self.cfg.name, "recording the audit event of an operator's change interrupted before it was logged");
            finish_state_event(&self.paths)?;
        }
        finish_schedule_event(&self.paths)?;
        self.resume_interrupted_deploy()?;
        let removed = remove_debris(&self.paths)?;
        for p in removed {
            info!(app = %self.cfg.name, path = %p.display(), "removed debris of an interrupted operation");
        }
        Ok(())
    }

    /// The audit event of an operation of this session.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn make_event(
        &self,
        event: &str,
        id: &str,
        from: Option<String>,
        to: Option<String>,
        outcome: &str,
        started: Instant,
        error: Option<String>,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Event {
        Event {
            time: now_rfc3339(),
            app: self.cfg.name.clone(),
            event: event.to_string(),
            id: id.to_string(),
            from,
            to,
            actor: self.actor.clone(),
            outcome: outcome.to_string(),
            duration_ms: started.elapsed().as_millis() as u64,
            error,
            details,
        }
    }

    /// Appends an event (see [`Session::make_event`]) to the app's audit
    /// log, after the event of a committed journal whose own append failed
    /// (history keeps its order).
    pub(super) fn record(&self, e: Event) -> Result<(), DeployError> {
        finish_pending(&self.paths)?;
        history::append(&self.paths, &e)?;
        Ok(())
    }

    /// Saves an operator's change to `state.json` together with its audit
    /// event, in one atomic write, then appends the event: a crash between
    /// the two leaves the event in `state.json`, and the repair at the next
    /// command appends it ([`finish_state_event`]). The audit log then holds
    /// every change that was made, and only those.
    pub(super) fn save_with_event(&self, mut st: AppState, e: Event) -> Result<(), DeployError> {
        st.pending_event = Some(serde_json::to_value(&e).unwrap_or_default());
        st.save(&self.paths)?;
        checkpoint("operator.saved");
        finish_state_event(&self.paths)
    }

    /// The installed releases, for messages ("none" when there are none).
    pub(super) fn installed_list(&self) -> String {
        let v = self.paths.installed().unwrap_or_default();
        if v.is_empty() {
            "none".into()
        } else {
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// A transaction: journal written before any change; dropped uncommitted, it
/// undoes itself through the same code the crash repair uses.
pub(super) struct Txn<'p> {
    paths: &'p AppPaths,
    journal: Journal,
    committed: bool,
}

impl<'p> Txn<'p> {
    /// Writes the journal; nothing may change before this returns.
    pub(super) fn begin(paths: &'p AppPaths, journal: Journal) -> Result<Self, DeployError> {
        finish_pending(paths)?;
        journal.write(paths)?;
        Ok(Txn {
            paths,
            journal,
            committed: false,
        })
    }

    /// The journal, to record progress in it (then [`Txn::save`]).
    pub(super) fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    /// Writes the journal again, durably, with the progress recorded.
    pub(super) fn save(&self) -> Result<(), DeployError> {
        self.journal.write(self.paths)?;
        Ok(())
    }

    /// Commits: the journal is rewritten with `event`, the audit line that
    /// reports the change (durably: this is the commit point), then the line
    /// is appended and the journal removed. Should the append or the removal
    /// fail, the change still stands: the event waits in the journal and the
    /// next append or repair writes it first, so this returns `Ok`.
    pub(super) fn commit(mut self, event: Event) -> Result<(), DeployError> {
        self.journal.commit = Some(event);
        self.journal.write(self.paths)?;
        self.committed = true;
        checkpoint(&format!("{}.committed", self.journal.op));
        if let Err(e) = finish_committed(self.paths, &self.journal) {
            warn!(error = %chain(&e), op = %self.journal.op,
                "committed, but the audit line is not written yet; the next command writes it");
        }
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = undo(self.paths, &self.journal)
        {
            warn!(error = %e, op = %self.journal.op, "rollback failed; the next command will retry it");
        }
    }
}

/// Writes the audit line of a committed journal left by a failed append, so
/// that no later line comes before it.
/// Appends `saved`, an audit event saved with the change it reports (in
/// `file`), unless the log already ends with it.
fn append_saved_event(
    paths: &AppPaths,
    saved: serde_json::Value,
    file: &str,
) -> Result<(), DeployError> {
    match serde_json::from_value::<Event>(saved) {
        Ok(e) => {
            finish_pending(paths)?;
            let last = history::read(paths)?.pop();
            if !last.is_some_and(|l| l.event.id == e.id && l.event.event == e.event) {
                history::append(paths, &e)?;
            }
        }
        // Only a hand-edited file gets here: the change stands.
        Err(err) => {
            warn!(error = %err, file, "unreadable pending audit event; dropped")
        }
    }
    Ok(())
}

/// Appends the audit event saved with an operator's change if the log does
/// not end with it yet, then clears it. Idempotent: a crash anywhere in it
/// leaves work the next call finishes.
fn finish_state_event(paths: &AppPaths) -> Result<(), DeployError> {
    let Some(saved) = AppState::load(paths)?.pending_event else {
        return Ok(());
    };
    append_saved_event(paths, saved, "state.json")?;
    checkpoint("operator.appended");
    let mut st = AppState::load(paths)?;
    st.pending_event = None;
    st.save(paths)?;
    Ok(())
}

/// Appends the audit event saved in `schedule.json` unless the log already
/// ends with it, then clears it. Idempotent; the repair that starts every
/// command calls it.
pub(super) fn finish_schedule_event(paths: &AppPaths) -> Result<(), DeployError> {
    // A damaged schedule is reported by the schedule commands, not by
    // every command's repair.
    let Ok(mut file) = crate::ops::schedule::load(paths) else {
        return Ok(());
    };
    let Some(saved) = file.pending_event.take() else {
        return Ok(());
    };
    append_saved_event(paths, saved, "schedule.json")?;
    checkpoint("schedule.appended");
    crate::ops::schedule::save(paths, &file)?;
    Ok(())
}

fn finish_pending(paths: &AppPaths) -> Result<(), DeployError> {
    if let Some(j) = Journal::read(paths)?
        && j.commit.is_some()
    {
        finish_committed(paths, &j)?;
    }
    Ok(())
}

/// Undoes what a journalled operation may have done, then clears the journal.
fn undo(paths: &AppPaths, j: &Journal) -> Result<(), DeployError> {
    match j.op.as_str() {
        "install" => {
            if let Some(v) = &j.target
                && j.creates_release
            {
                remove_release(paths, v)?;
            }
        }
        "promote" | "revert" => {
            set_link(&paths.current(), j.prev_current.as_ref())?;
            set_link(&paths.last_good(), j.prev_last_good.as_ref())?;
        }
        "restore" => {
            for x in &j.exchanges {
                x.undo(paths)?;
            }
        }
        other => warn!(op = other, "unknown journal operation; clearing it"),
    }
    remove_debris(paths)?;
    Journal::clear(paths)?;
    Ok(())
}

/// Points `link` at `releases/<v>`, or removes it for `None`.
pub(super) fn set_link(link: &Path, v: Option<&Version>) -> Result<(), FsError> {
    match v {
        Some(v) => fs::replace_symlink(&AppPaths::link_target(v), link),
        None => {
            if fs::symlink_metadata(link)?.is_some() {
                fs::remove_file(link)?;
                fs::fsync_dir(fs::parent_of(link))?;
            }
            Ok(())
        }
    }
}

/// Removes an installed release so that no partial `releases/<v>` is ever
/// visible: rename it aside first, then delete (through `releases/` held
/// open, never through a symlink).
pub(super) fn remove_release(paths: &AppPaths, v: &Version) -> Result<(), LayoutError> {
    let releases = paths.open_root()?.dir(Path::new("releases"))?;
    let name = PathBuf::from(v.dir_name());
    if releases.stat(&name)?.is_some() {
        let aside = PathBuf::from(format!(
            "{STAGING_PREFIX}removing-{}-{:08x}",
            v.dir_name(),
            fastrand::u32(..)
        ));
        releases.rename(&name, &aside)?;
        releases.fsync()?;
        fs::remove_file(&paths.manifest(v))?;
        releases.remove_any(&aside)?;
    } else {
        fs::remove_file(&paths.manifest(v))?;
    }
    Ok(())
}
