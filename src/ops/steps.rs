//! The steps the lifecycle is made of, each usable on its own under a
//! session: the deploy record saved before every step, audit events, hooks,
//! health checks, quarantine, the operator block, and backups taken or
//! restored through the app's hooks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::fs::{self, FsError};
use crate::ops::backup::{self, BackupRequest, StagedRestore};
use crate::ops::error::{DeployError, chain};
use crate::ops::health::{HealthConfig, HealthReport, run_health};
use crate::ops::hooks::{HookContext, HookError, HookSpec, run_hook};
use crate::ops::session::Session;
use crate::ops::session::Txn;
use crate::store::journal::{Exchange, Journal};
use crate::store::layout::maintenance;
use crate::store::state::{
    AppState, Attention, DeployRecord, DeployState, Quarantine, checkpoint, now_rfc3339,
};
use crate::version::Version;

/// A failure's message twice: in full for the operator, and as it is kept
/// in files (state, audit log), where a hook's output never goes: it may
/// hold secrets, and the audit log can never be scrubbed. The kept text
/// names the hook's log instead.
#[derive(Debug, Clone)]
pub(super) struct Why {
    /// For the operator: with the hook's last output.
    pub(super) full: String,
    /// For files: without it.
    pub(super) kept: String,
}

impl Why {
    /// A message that holds no hook output: the same text both ways.
    pub(super) fn plain(text: String) -> Why {
        Why {
            kept: text.clone(),
            full: text,
        }
    }

    /// A failed hook, after `what` when it is not empty.
    pub(super) fn hook(what: &str, e: &HookError) -> Why {
        let with = |t: String| {
            if what.is_empty() {
                t
            } else {
                format!("{what}: {t}")
            }
        };
        Why {
            full: with(chain(e)),
            kept: with(e.without_output()),
        }
    }

    /// Both texts put into the same sentence.
    pub(super) fn map(&self, f: impl Fn(&str) -> String) -> Why {
        Why {
            full: f(&self.full),
            kept: f(&self.kept),
        }
    }
}

/// Why a step failed: the release's fault (a hook or a health check said
/// no, so the release is quarantined) or the host's (I/O, a full disk, an
/// interruption: the release is not to blame, and may be deployed again).
#[derive(Debug, Clone)]
pub(super) enum Fault {
    /// A hook or a health check of the release failed.
    Release(Why),
    /// Something on the host failed.
    Host(Why),
}

impl Fault {
    /// The reason, both ways.
    pub(super) fn why(&self) -> &Why {
        match self {
            Fault::Release(w) | Fault::Host(w) => w,
        }
    }

    /// Whether the release is quarantined for it.
    pub(super) fn blames_release(&self) -> bool {
        matches!(self, Fault::Release(_))
    }

    /// A failed hook: the release's fault unless the host failed it.
    pub(super) fn hook(what: &str, e: &HookError) -> Fault {
        let why = Why::hook(what, e);
        if e.is_host_fault() {
            Fault::Host(why)
        } else {
            Fault::Release(why)
        }
    }

    /// A host failure from an operation's error.
    pub(super) fn host(e: DeployError) -> Fault {
        Fault::Host(Why::plain(chain(&e)))
    }
}

/// A backup or restore hook's failure as the backup's error carries it (into
/// the state file and the audit log): without the hook's output, which is
/// logged here in full for the operator instead.
fn kept_hook_error(e: &HookError) -> String {
    error!(error = %chain(e), "hook failed");
    e.without_output()
}

/// A health report with the phase it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NamedReport {
    /// `staging`, `live`, `live-after-revert`.
    pub phase: String,
    /// The report.
    pub report: HealthReport,
}

/// The event that ends a terminal record, if it has one: a deploy ends in
/// `system.update.completed` or `.failed`; a checked promote or revert is
/// reported by its switch and rollback events.
pub(super) fn closing_event(rec: &DeployRecord) -> Option<(String, &'static str)> {
    if rec.op != "deploy" {
        return None;
    }
    Some(match rec.state {
        DeployState::Completed => ("system.update.completed".into(), "ok"),
        _ => ("system.update.failed".into(), "failed"),
    })
}

impl Session<'_> {
    /// Saves the deploy record in `state.json` as entering `state`/`step`,
    /// before the step runs (a crash checkpoint follows).
    pub(super) fn save_rec(
        &self,
        rec: &mut DeployRecord,
        state: DeployState,
        step: &str,
    ) -> Result<(), DeployError> {
        rec.state = state;
        rec.step = step.to_string();
        rec.updated = now_rfc3339();
        let mut st = AppState::load(&self.paths)?;
        st.deploy = Some(rec.clone());
        st.save(&self.paths)?;
        let version = rec.to.as_ref().map(tracing::field::display);
        match (&rec.last_error, state) {
            // The reason goes with the failure: a bare "state=failed" tells nobody anything.
            (
                Some(e),
                DeployState::Failed
                | DeployState::PrecheckFailed
                | DeployState::BackupFailed
                | DeployState::RollbackFailed,
            ) => {
                warn!(app = %self.cfg.name, version, deploy_id = %rec.id, state = %state.as_str(), step = %step, error = %e, "deploy failed")
            }
            _ => {
                info!(app = %self.cfg.name, version, deploy_id = %rec.id, state = %state.as_str(), step = %step, "deploy state")
            }
        }
        // e.g. SWITCHYARD_CRASH_AT=deploy.migrating.migrate
        crate::store::state::checkpoint(&format!("deploy.{}.{step}", state.as_str()));
        // Told to stop: the record says where this stopped (with what the
        // last step achieved), but the step it names does not start; the
        // repair at the next start finishes or undoes from there.
        if crate::process::stopping() && !state.is_terminal() {
            return Err(DeployError::Stopped);
        }
        Ok(())
    }

    /// Appends a deploy event to the audit log. Callers on the way forward
    /// fail the operation when it fails; callers already failing log it.
    pub(super) fn event(
        &self,
        name: &str,
        rec: &DeployRecord,
        outcome: &str,
        started: Instant,
        error: Option<String>,
    ) -> Result<(), DeployError> {
        let mut details = serde_json::Map::new();
        details.insert("state".into(), rec.state.as_str().into());
        details.insert("step".into(), rec.step.clone().into());
        if let Some(b) = &rec.backup_id {
            details.insert("backup_id".into(), b.clone().into());
        }
        self.record(self.make_event(
            name,
            &rec.id,
            rec.from.as_ref().map(|v| v.to_string()),
            rec.to.as_ref().map(|v| v.to_string()),
            outcome,
            started,
            error,
            details,
        ))
        .inspect_err(|e| error!(error = %chain(e), "could not append to the audit log"))
    }

    /// Ends a record: saved in its terminal `state` first (a terminal record
    /// is never undone), then its closing event, then marked audited. A kill
    /// or a failed append in between leaves `audited` false, and the next
    /// repair appends the event.
    pub(super) fn finish_record(
        &self,
        rec: &mut DeployRecord,
        state: DeployState,
        started: Instant,
    ) -> Result<(), DeployError> {
        rec.audited = false;
        let step = rec.step.clone();
        self.save_rec(rec, state, &step)?;
        self.close_record(rec, started)
    }

    /// Appends the closing event of a terminal record and marks it audited.
    pub(super) fn close_record(
        &self,
        rec: &mut DeployRecord,
        started: Instant,
    ) -> Result<(), DeployError> {
        if let Some((name, outcome)) = closing_event(rec) {
            self.event(&name, rec, outcome, started, rec.last_error.clone())?;
        }
        rec.audited = true;
        let mut st = AppState::load(&self.paths)?;
        st.deploy = Some(rec.clone());
        st.save(&self.paths)?;
        // Old hook logs go once a deploy ended; failing to remove them
        // fails nothing (the next deploy tries again).
        let keep = self.cfg.retention.keep_hook_logs;
        if let Err(e) =
            crate::ops::watch::prune_hook_logs(&self.paths, &self.cfg.name, keep, &rec.id)
        {
            warn!(app = %self.cfg.name, error = %e, "could not remove old hook logs");
        }
        Ok(())
    }

    /// What a hook is told about the release it runs for.
    pub(super) fn hook_ctx(
        &self,
        version: &Version,
        prev: Option<&Version>,
        dir: &Path,
        id: &str,
        backup_file: Option<&Path>,
    ) -> HookContext {
        HookContext {
            app: self.cfg.name.clone(),
            version: version.to_string(),
            previous_version: prev.map(|v| v.to_string()),
            release_dir: dir.to_path_buf(),
            root: self.paths.root.clone(),
            deploy_id: id.to_string(),
            backup_file: backup_file.map(Path::to_path_buf),
            log_dir: self.paths.state_dir().join("logs").join(id),
            clock: self.clock.clone(),
        }
    }

    /// Runs a configured hook, if any.
    pub(super) fn run_opt_hook(
        &self,
        name: &str,
        spec: Option<&HookSpec>,
        ctx: &HookContext,
    ) -> Result<(), HookError> {
        if let Some(spec) = spec {
            // run_hook logs the start with the command and timeout.
            tracing::debug!(app = %self.cfg.name, version = %ctx.version, step = %name, "hook");
            run_hook(name, spec, ctx)?;
        }
        Ok(())
    }

    /// Runs a phase's health check, if configured, and keeps its report;
    /// `Err` is the reason, for the failed deploy's message.
    pub(super) fn health(
        &self,
        which: &str,
        cfg: Option<&HealthConfig>,
        v: &Version,
        dir: &Path,
        out: &mut Vec<NamedReport>,
    ) -> Result<(), Fault> {
        let Some(cfg) = cfg else { return Ok(()) };
        let report = run_health(cfg, &v.to_string(), dir, self.clock.as_ref());
        let passed = report.passed;
        let err = report.last_error.clone();
        let host = report.host_failed();
        info!(app = %self.cfg.name, version = %v, step = %which, passed, attempts = report.attempts, "health check");
        out.push(NamedReport {
            phase: which.to_string(),
            report,
        });
        if passed {
            Ok(())
        } else {
            let reason = format!(
                "{which} health check failed: {}",
                err.unwrap_or_else(|| "no check passed".into())
            );
            let why = Why::plain(reason);
            Err(if host {
                Fault::Host(why)
            } else {
                Fault::Release(why)
            })
        }
    }

    /// Marks `v` as quarantined: deploys and promotes refuse it without --force.
    pub(super) fn quarantine(
        &self,
        v: &Version,
        reason: &str,
        id: &str,
    ) -> Result<(), DeployError> {
        let mut st = AppState::load(&self.paths)?;
        st.quarantined.insert(
            v.to_string(),
            Quarantine {
                reason: reason.to_string(),
                time: now_rfc3339(),
                deploy_id: id.to_string(),
            },
        );
        st.save(&self.paths)?;
        warn!(app = %self.cfg.name, version = %v, reason, "release quarantined");
        Ok(())
    }

    /// Blocks deploys until `switchyard resolve` and turns the maintenance flag on.
    pub(super) fn set_attention(
        &self,
        kind: &str,
        reason: &str,
        id: &str,
    ) -> Result<(), DeployError> {
        let mut st = AppState::load(&self.paths)?;
        st.attention = Some(Attention {
            kind: kind.to_string(),
            reason: reason.to_string(),
            since: now_rfc3339(),
            deploy_id: id.to_string(),
        });
        st.save(&self.paths)?;
        maintenance::on(&self.paths, "Maintenance in progress", kind)?;
        error!(app = %self.cfg.name, kind, reason, "the app needs an operator");
        Ok(())
    }

    /// Refuses while deploys are blocked.
    pub(super) fn check_blocked(&self) -> Result<(), DeployError> {
        if let Some(a) = AppState::load(&self.paths)?.attention {
            return Err(DeployError::Blocked {
                app: self.cfg.name.clone(),
                kind: a.kind,
                reason: a.reason,
            });
        }
        Ok(())
    }

    /// Refuses a quarantined release unless `force`.
    pub(super) fn check_quarantine(&self, v: &Version, force: bool) -> Result<(), DeployError> {
        if force {
            return Ok(());
        }
        if let Some(q) = AppState::load(&self.paths)?.quarantined.get(&v.to_string()) {
            return Err(DeployError::Precheck(format!(
                "release {v} is quarantined since {} ({}); pass --force to deploy it anyway",
                q.time, q.reason
            )));
        }
        Ok(())
    }
    /// Takes a backup through the backup hook and/or the shared paths;
    /// returns its id.
    pub(super) fn take_backup(
        &self,
        id: &str,
        prev: Option<&Version>,
        v: &Version,
        dir: &Path,
    ) -> Result<String, DeployError> {
        let spec = self.cfg.hooks.backup.clone();
        let run = |file: &Path| -> Result<(), String> {
            let spec = spec.as_ref().expect("only called with a hook");
            let live_dir = prev
                .map(|p| self.paths.release(p))
                .unwrap_or_else(|| dir.to_path_buf());
            let ctx = self.hook_ctx(v, prev, &live_dir, id, Some(file));
            run_hook("backup", spec, &ctx)
                .map(|_| ())
                .map_err(|e| kept_hook_error(&e))
        };
        let empty = crate::config::SharedConfig::default();
        let meta = backup::create(
            &self.paths,
            &BackupRequest {
                app: &self.cfg.name,
                app_version: prev.map(|p| p.to_string()),
                deploy_id: id,
                run_hook: if self.cfg.hooks.backup.is_some() {
                    Some(&run)
                } else {
                    None
                },
                shared: if self.cfg.policy.backup_shared {
                    &self.cfg.shared
                } else {
                    &empty
                },
                keep: self.cfg.policy.keep_backups,
            },
        )
        .map_err(DeployError::BackupFailed)?;
        Ok(meta.id)
    }

    /// Restores a backup with the configured restore hook.
    pub(super) fn restore_backup(
        &self,
        backup_id: &str,
        version: &Version,
        deploy_id: &str,
    ) -> Result<(), DeployError> {
        let spec = self.cfg.hooks.restore.clone();
        let dir = self.paths.release(version);
        let run = |file: &Path| -> Result<(), String> {
            let spec = spec.as_ref().expect("only called with a hook");
            let ctx = self.hook_ctx(version, None, &dir, deploy_id, Some(file));
            run_hook("restore", spec, &ctx)
                .map(|_| ())
                .map_err(|e| kept_hook_error(&e))
        };
        let staged = backup::stage_restore(
            &self.paths,
            backup_id,
            if spec.is_some() { Some(&run) } else { None },
        )
        .map_err(DeployError::BackupFailed)?;
        self.exchange_in(&staged, deploy_id)
    }

    /// Swaps a staged restore's shared paths in as one transaction: the
    /// journal lists every staged name before any exists; each new copy is
    /// placed beside its target and its inode recorded; then each is
    /// exchanged in (`RENAME_EXCHANGE`). Until the commit, the repair puts
    /// back every old copy; after it, it removes them. So `shared/` holds
    /// the data from before the restore or from after it, never a mix.
    fn exchange_in(&self, staged: &StagedRestore, deploy_id: &str) -> Result<(), DeployError> {
        use std::os::unix::fs::MetadataExt;
        let started = Instant::now();
        let id = &staged.meta.id;
        let mut exchanges = Vec::new();
        for (_, target) in &staged.copies {
            // Every target reached from the root without following a
            // symlink, before the journal: a planted link changes nothing.
            let rel = self.paths.shared_rel(target)?;
            let entry = self.paths.shared_entry(rel, false)?;
            exchanges.push(Exchange {
                target: target.clone(),
                staged: backup::staged_name(target, id),
                existed: entry.is_some_and(|e| e.meta.is_some()),
                inode: None,
            });
        }
        let mut txn = Txn::begin(
            &self.paths,
            Journal {
                id: deploy_id.to_string(),
                op: "restore".into(),
                pid: std::process::id(),
                started: now_rfc3339(),
                target: None,
                prev_current: None,
                prev_last_good: None,
                creates_release: false,
                commit: None,
                exchanges,
            },
        )?;
        checkpoint("restore.journaled");
        for (i, (copy, target)) in staged.copies.iter().enumerate() {
            let x = &mut txn.journal_mut().exchanges[i];
            let (dir, _) = self.parent(target, true)?;
            let name = leaf(&x.staged);
            dir.remove_any(name)?;
            dir.rename_into(copy, name)?;
            let m = dir.stat(name)?.ok_or_else(|| {
                FsError::new(
                    "stat",
                    &x.staged,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
            x.inode = Some((m.dev(), m.ino()));
            dir.fsync()?;
        }
        txn.save()?;
        checkpoint("restore.staged");
        for x in &txn.journal_mut().exchanges.clone() {
            let (dir, name) = self.parent(&x.target, false)?;
            if x.existed {
                dir.exchange(leaf(&x.staged), &name)?;
            } else {
                dir.rename(leaf(&x.staged), &name)?;
            }
            dir.fsync()?;
            checkpoint("restore.exchanged");
        }
        let mut details = serde_json::Map::new();
        details.insert("backup_id".into(), id.clone().into());
        txn.commit(self.make_event(
            "system.backup.restored",
            deploy_id,
            None,
            None,
            "ok",
            started,
            None,
            details,
        ))
    }

    /// The directory of a shared path, held open (made when `create`), and
    /// the path's name in it; what is there may not be a symlink.
    fn parent(&self, target: &Path, create: bool) -> Result<(fs::Dir, PathBuf), DeployError> {
        let rel = self.paths.shared_rel(target)?;
        let e = self.paths.shared_entry(rel, create)?.ok_or_else(|| {
            FsError::new(
                "open directory",
                fs::parent_of(target),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        Ok((e.dir, e.name))
    }
}

/// The file name of a path a restore recorded.
fn leaf(p: &Path) -> &Path {
    Path::new(p.file_name().unwrap_or_default())
}
