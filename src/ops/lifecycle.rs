//! The deploy lifecycle: a deploy that checks itself and undoes itself.
//!
//! `checking` (pre-checks) → `downloading` (fetch, verify, unpack) →
//! `applying`/warm → `health_check`/staging → `backup_running` → `migrating` →
//! `applying`/swap + activate → `health_check`/live → `completed`. Any failure
//! before the swap leaves the live release alone (and quarantines the new
//! one); a failure after it reverts at once, restores this deploy's backup
//! where migrations ran, and quarantines the release. Each transition is saved
//! in `state.json` before its step runs, so a restart after a crash resumes or
//! undoes the step and never guesses: a migrate whose outcome is unknown
//! stops everything until an operator runs `switchyard resolve`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::RestorePolicy;
use crate::fs;
use crate::ops::backup::{self, BackupRequest};
use crate::ops::deploy::{DeployError, InstallOptions, Session};
use crate::ops::health::{HealthConfig, HealthReport, run_health};
use crate::ops::hooks::{HookContext, HookError, HookSpec, run_hook};
use crate::source::ReleaseSource;
use crate::store::layout::maintenance;
use crate::store::state::{
    AppState, Attention, DeployRecord, DeployState, Quarantine, new_id, now_rfc3339,
};
use crate::version::{Version, VersionRequest};

/// Operator choices for one deploy.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// Accept a version older than the highest verified.
    pub allow_downgrade: bool,
    /// Accept a major-version upgrade.
    pub allow_major: bool,
    /// Deploy a quarantined release.
    pub force: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    /// Deploy id.
    pub id: String,
    /// Final state.
    pub state: DeployState,
    /// Live before.
    pub from: Option<Version>,
    /// Deployed.
    pub to: Version,
    /// Health reports, in order (staging, live).
    pub health: Vec<NamedReport>,
    /// Backup taken, if any.
    pub backup_id: Option<String>,
}

/// A health report with the phase it belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct NamedReport {
    /// `staging`, `live`, `live-after-revert`.
    pub phase: String,
    /// The report.
    pub report: HealthReport,
}

/// Is `to` a major (breaking) upgrade from `from`? For 0.x, a minor bump is.
pub fn is_major_upgrade(from: &Version, to: &Version) -> bool {
    let (f, t) = (&from.0, &to.0);
    if t.major != f.major {
        return t.major > f.major;
    }
    t.major == 0 && t.minor > f.minor
}

impl Session<'_> {
    fn save_rec(
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
        info!(app = %self.cfg.name, deploy_id = %rec.id, state = ?state, step, "deploy state");
        // e.g. SWITCHYARD_CRASH_AT=deploy.migrating.migrate
        crate::store::state::checkpoint(&format!("deploy.{}.{step}", state.as_str()));
        Ok(())
    }

    fn event(
        &self,
        name: &str,
        rec: &DeployRecord,
        outcome: &str,
        started: Instant,
        error: Option<String>,
    ) {
        let mut details = serde_json::Map::new();
        details.insert("state".into(), rec.state.as_str().into());
        details.insert("step".into(), rec.step.clone().into());
        if let Some(b) = &rec.backup_id {
            details.insert("backup_id".into(), b.clone().into());
        }
        if let Err(e) = self.record(
            name,
            &rec.id,
            rec.from.as_ref().map(|v| v.to_string()),
            rec.to.as_ref().map(|v| v.to_string()),
            outcome,
            started,
            error,
            details,
        ) {
            error!(error = %e, "could not append to the audit log");
        }
    }

    fn hook_ctx(
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
    fn run_opt_hook(
        &self,
        name: &str,
        spec: Option<&HookSpec>,
        ctx: &HookContext,
    ) -> Result<(), HookError> {
        if let Some(spec) = spec {
            // run_hook logs the start with the command and timeout.
            tracing::debug!(app = %self.cfg.name, version = %ctx.version, step = name, "hook");
            run_hook(name, spec, ctx)?;
        }
        Ok(())
    }

    fn health(
        &self,
        which: &str,
        cfg: Option<&HealthConfig>,
        v: &Version,
        dir: &Path,
        out: &mut Vec<NamedReport>,
    ) -> Result<(), String> {
        let Some(cfg) = cfg else { return Ok(()) };
        let report = run_health(cfg, &v.to_string(), dir, self.clock.as_ref());
        let passed = report.passed;
        let err = report.last_error.clone();
        info!(app = %self.cfg.name, version = %v, step = which, passed, attempts = report.attempts, "health check");
        out.push(NamedReport {
            phase: which.to_string(),
            report,
        });
        if passed {
            Ok(())
        } else {
            Err(format!(
                "{which} health check failed: {}",
                err.unwrap_or_else(|| "no check passed".into())
            ))
        }
    }

    fn quarantine(&self, v: &Version, reason: &str, id: &str) -> Result<(), DeployError> {
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

    fn set_attention(&self, kind: &str, reason: &str, id: &str) -> Result<(), DeployError> {
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

    fn check_blocked(&self) -> Result<(), DeployError> {
        if let Some(a) = AppState::load(&self.paths)?.attention {
            return Err(DeployError::Blocked {
                app: self.cfg.name.clone(),
                kind: a.kind,
                reason: a.reason,
            });
        }
        Ok(())
    }

    fn check_quarantine(&self, v: &Version, force: bool) -> Result<(), DeployError> {
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

    /// Deploys a release through the whole lifecycle.
    pub fn deploy(
        &self,
        source: &dyn ReleaseSource,
        req: &VersionRequest,
        opts: DeployOptions,
    ) -> Result<DeployOutcome, DeployError> {
        let started = Instant::now();
        let from = self.paths.current_version()?;
        let mut rec = DeployRecord::new(
            new_id(),
            DeployState::Checking,
            "prechecks",
            from.clone(),
            None,
        );
        rec.prev_last_good = self.paths.last_good_version()?;
        let mut health = Vec::new();
        let res = self.deploy_steps(&mut rec, source, req, opts, &mut health, started);
        match res {
            Ok(to) => {
                self.save_rec(&mut rec, DeployState::Completed, "done")?;
                self.event("system.update.completed", &rec, "ok", started, None);
                let _ = self.prune();
                Ok(DeployOutcome {
                    id: rec.id,
                    state: rec.state,
                    from,
                    to,
                    health,
                    backup_id: rec.backup_id,
                })
            }
            Err(e) => {
                rec.last_error = Some(e.to_string());
                let state = match (&e, rec.state) {
                    (DeployError::Precheck(_) | DeployError::Blocked { .. }, _) => {
                        DeployState::PrecheckFailed
                    }
                    (_, DeployState::Checking) => DeployState::PrecheckFailed,
                    (_, DeployState::BackupRunning) => DeployState::BackupFailed,
                    (DeployError::NeedsAttention { .. }, DeployState::RollbackRunning) => {
                        DeployState::RollbackFailed
                    }
                    _ => DeployState::Failed,
                };
                let step = rec.step.clone();
                self.save_rec(&mut rec, state, &step)?;
                self.event(
                    "system.update.failed",
                    &rec,
                    "failed",
                    started,
                    Some(e.to_string()),
                );
                if let Some(v) = rec.to.clone() {
                    let dir = self.paths.release(&v);
                    let ctx = self.hook_ctx(&v, from.as_ref(), &dir, &rec.id, None);
                    if let Err(he) =
                        self.run_opt_hook("on_failure", self.cfg.hooks.on_failure.as_ref(), &ctx)
                    {
                        warn!(error = %he, "on_failure hook failed");
                    }
                }
                Err(e)
            }
        }
    }

    fn deploy_steps(
        &self,
        rec: &mut DeployRecord,
        source: &dyn ReleaseSource,
        req: &VersionRequest,
        opts: DeployOptions,
        health: &mut Vec<NamedReport>,
        started: Instant,
    ) -> Result<Version, DeployError> {
        self.save_rec(rec, DeployState::Checking, "prechecks")?;
        self.check_blocked()?;
        let info = source.resolve(req, crate::source::include_prereleases(self.cfg))?;
        let v = info.version.clone();
        rec.to = Some(v.clone());
        self.event("system.update.started", rec, "started", started, None);
        self.check_quarantine(&v, opts.force)?;
        if let Some(f) = &rec.from
            && is_major_upgrade(f, &v)
            && !(opts.allow_major || self.cfg.policy.allow_major)
        {
            return Err(DeployError::Precheck(format!(
                "{v} is a major upgrade from {f}; read the release notes, then pass --allow-major (or set allow_major = true){}",
                info.notes
                    .as_deref()
                    .map(|n| format!("\n--- release notes ---\n{}", n.trim()))
                    .unwrap_or_default()
            )));
        }
        let probe = self
            .paths
            .state_dir()
            .join(format!(".write-test.tmp-{}", rec.id));
        fs::write_atomic(&probe, b"ok")
            .map_err(|e| DeployError::Precheck(format!("the app root is not writable: {e}")))?;
        fs::remove_file(&probe)?;

        self.save_rec(rec, DeployState::Downloading, "install")?;
        let inst = self.install(
            source,
            &VersionRequest::Exact(v.clone()),
            InstallOptions {
                allow_downgrade: opts.allow_downgrade,
            },
        )?;
        let dir = self.paths.release(&v);
        let prev = rec.from.clone();

        // Before the swap: warm the staging tree and check it.
        self.save_rec(rec, DeployState::Applying, "warm")?;
        let ctx = self.hook_ctx(&v, prev.as_ref(), &dir, &rec.id, None);
        let staged = self
            .run_opt_hook("warm", self.cfg.hooks.warm.as_ref(), &ctx)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.save_rec(rec, DeployState::HealthCheck, "staging")
                    .map_err(|e| e.to_string())?;
                self.health(
                    "staging",
                    self.cfg.health.staging.as_ref(),
                    &v,
                    &dir,
                    health,
                )
            });
        if let Err(reason) = staged {
            return Err(self.fail_before_swap(rec, &v, inst.installed, &reason));
        }
        // The tree is final now: record it as it will go live, then share
        // identical files with the live release.
        if inst.installed {
            if self.cfg.hooks.warm.is_some() {
                crate::store::dedup::rescan_manifest(&self.paths, &self.cfg.shared, &v)?;
            }
            if let Some(p) = &prev {
                crate::store::dedup::dedup_release(
                    &self.paths,
                    &self.cfg.shared,
                    &v,
                    p,
                    self.cfg.policy.dedup,
                )?;
            }
        }

        // Back up what the release may change, then migrate.
        let needs_backup = self.cfg.hooks.backup.is_some() || self.cfg.policy.backup_shared;
        if needs_backup {
            self.save_rec(rec, DeployState::BackupRunning, "backup")?;
            let b_started = Instant::now();
            self.event("system.backup.started", rec, "started", b_started, None);
            match self.take_backup(&rec.id, prev.as_ref(), &v, &dir) {
                Ok(id) => {
                    rec.backup_id = Some(id);
                    self.event("system.backup.completed", rec, "ok", b_started, None);
                }
                Err(e) => {
                    self.event(
                        "system.backup.failed",
                        rec,
                        "failed",
                        b_started,
                        Some(e.to_string()),
                    );
                    return Err(DeployError::Failed {
                        state: "backup_failed".into(),
                        reason: e.to_string(),
                        rolled_back: false,
                    });
                }
            }
        }
        if let Some(spec) = self.cfg.hooks.migrate.as_ref() {
            rec.migrate_started = true;
            self.save_rec(rec, DeployState::Migrating, "migrate")?;
            let ctx = self.hook_ctx(&v, prev.as_ref(), &dir, &rec.id, None);
            match run_hook("migrate", spec, &ctx) {
                Ok(_) => rec.migrate_done = true,
                Err(e) if e.outcome_unknown() => {
                    let reason = format!(
                        "the migrate hook of {v} did not finish ({e}); its outcome is unknown, so Switchyard will not guess: check the data, restore backup {} if needed, then run `switchyard resolve {}`",
                        rec.backup_id.as_deref().unwrap_or("(none)"),
                        self.cfg.name
                    );
                    self.set_attention("needs_attention", &reason, &rec.id)?;
                    return Err(DeployError::NeedsAttention { reason });
                }
                Err(e) => {
                    // A migrate that failed cleanly may still have changed
                    // data: put the backup back per policy, then give up.
                    let reason = format!("migrate hook failed: {e}");
                    rec.last_error = Some(reason.clone());
                    return Err(self.rollback(rec, &v, &reason, true, health));
                }
            }
        }

        // The swap, then activation and the live check.
        self.save_rec(rec, DeployState::Applying, "swap")?;
        self.promote(&v)?;
        rec.swapped = true;
        self.save_rec(rec, DeployState::Applying, "activate")?;
        let live = self
            .run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), &ctx)
            .map_err(|e| format!("activate hook failed: {e}"))
            .and_then(|()| {
                self.save_rec(rec, DeployState::HealthCheck, "live")
                    .map_err(|e| e.to_string())?;
                self.health("live", self.cfg.health.live.as_ref(), &v, &dir, health)
            });
        if let Err(reason) = live {
            rec.last_error = Some(reason.clone());
            return Err(self.rollback(rec, &v, &reason, rec.migrate_done, health));
        }
        Ok(v)
    }

    fn take_backup(
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
                .map_err(|e| e.to_string())
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
        .map_err(|e| DeployError::Precheck(e.to_string()))?;
        Ok(meta.id)
    }

    /// Restores a backup with the configured restore hook.
    pub fn restore_backup(
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
                .map_err(|e| e.to_string())
        };
        backup::restore(
            &self.paths,
            backup_id,
            if spec.is_some() { Some(&run) } else { None },
        )
        .map_err(|e| DeployError::Precheck(e.to_string()))?;
        Ok(())
    }

    fn fail_before_swap(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        installed_now: bool,
        reason: &str,
    ) -> DeployError {
        rec.last_error = Some(reason.to_string());
        if installed_now && !self.cfg.policy.keep_failed {
            if let Err(e) = crate::ops::deploy::remove_release(&self.paths, v) {
                warn!(error = %e, "could not remove the failed release");
            }
        }
        if let Err(e) = self.quarantine(v, reason, &rec.id) {
            warn!(error = %e, "could not quarantine");
        }
        DeployError::Failed {
            state: "failed".into(),
            reason: format!(
                "{reason}; the live release was not touched, {v} is quarantined{}",
                if self.cfg.policy.keep_failed {
                    " and kept for inspection"
                } else {
                    ""
                }
            ),
            rolled_back: false,
        }
    }

    /// Reverts a failed deploy of `v`: swap back, activate, check, restore
    /// the backup where data may have changed.
    fn rollback(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        reason: &str,
        data_changed: bool,
        health: &mut Vec<NamedReport>,
    ) -> DeployError {
        let started = Instant::now();
        match self.rollback_inner(rec, v, data_changed, health) {
            Ok(restored) => {
                self.event("system.rollback.completed", rec, "ok", started, None);
                let _ = self.quarantine(v, reason, &rec.id);
                DeployError::Failed {
                    state: "failed".into(),
                    reason: format!(
                        "{reason}; reverted to {}{}, {v} is quarantined",
                        rec.from
                            .as_ref()
                            .map(|f| f.to_string())
                            .unwrap_or_else(|| "no release (there was none before)".into()),
                        if restored {
                            " and restored the backup"
                        } else {
                            ""
                        }
                    ),
                    rolled_back: true,
                }
            }
            Err(e) => {
                let why = format!(
                    "{reason}; then the revert failed too: {e}. The maintenance flag stays on and deploys are blocked: check `switchyard status {}`, fix the app by hand (`switchyard revert --to`, `switchyard backup restore`), then run `switchyard resolve {}`",
                    self.cfg.name, self.cfg.name
                );
                self.event(
                    "system.rollback.failed",
                    rec,
                    "failed",
                    started,
                    Some(why.clone()),
                );
                let _ = self.set_attention("rollback_failed", &why, &rec.id);
                let _ = self.quarantine(v, reason, &rec.id);
                DeployError::NeedsAttention { reason: why }
            }
        }
    }

    fn rollback_inner(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        data_changed: bool,
        health: &mut Vec<NamedReport>,
    ) -> Result<bool, String> {
        let s = |e: DeployError| e.to_string();
        self.save_rec(rec, DeployState::RollbackRunning, "revert")
            .map_err(s)?;
        self.event(
            "system.rollback.started",
            rec,
            "started",
            Instant::now(),
            None,
        );
        maintenance::on(&self.paths, "Maintenance in progress", "rollback")
            .map_err(|e| e.to_string())?;
        if rec.swapped
            || self
                .paths
                .current_version()
                .map_err(|e| e.to_string())?
                .as_ref()
                == Some(v)
        {
            match rec.from.clone() {
                Some(f) => {
                    self.revert(Some(&f)).map_err(s)?;
                    // The failed release must not become the rollback target:
                    // last-good goes back to what it was before the deploy.
                    let target = rec.prev_last_good.clone().filter(|l| l != v && l != &f);
                    crate::ops::deploy::set_link(&self.paths.last_good(), target.as_ref())
                        .map_err(|e| e.to_string())?;
                    let dir = self.paths.release(&f);
                    let ctx = self.hook_ctx(&f, Some(v), &dir, &rec.id, None);
                    self.run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), &ctx)
                        .map_err(|e| format!("activate hook failed after the revert: {e}"))?;
                }
                None => {
                    crate::ops::deploy::set_link(&self.paths.current(), None)
                        .map_err(|e| e.to_string())?;
                }
            }
            rec.swapped = false;
        }
        let mut restored = false;
        let mut ask_pending = false;
        if data_changed && let Some(b) = rec.backup_id.clone() {
            match self.cfg.policy.restore_on_revert {
                RestorePolicy::Auto => {
                    self.save_rec(rec, DeployState::RollbackRunning, "restore")
                        .map_err(s)?;
                    let f = rec.from.clone().unwrap_or_else(|| v.clone());
                    self.restore_backup(&b, &f, &rec.id).map_err(s)?;
                    restored = true;
                }
                RestorePolicy::Ask => {
                    // The revert itself worked; whether the data goes back
                    // is the operator's call. Deploys wait for it.
                    let why = format!(
                        "{v} was reverted, but its migrations ran and restore_on_revert = \"ask\": restore with `switchyard backup restore {} {b}` if the data needs it, then `switchyard resolve {}`",
                        self.cfg.name, self.cfg.name
                    );
                    self.set_attention("needs_attention", &why, &rec.id)
                        .map_err(s)?;
                    ask_pending = true;
                }
                RestorePolicy::Never => {}
            }
        }
        if let Some(f) = rec.from.clone() {
            self.save_rec(rec, DeployState::HealthCheck, "live-after-revert")
                .map_err(s)?;
            self.health(
                "live-after-revert",
                self.cfg.health.live.as_ref(),
                &f,
                &self.paths.release(&f),
                health,
            )?;
        }
        if !ask_pending {
            maintenance::off(&self.paths).map_err(|e| e.to_string())?;
        }
        Ok(restored)
    }

    /// After a crash: resume or undo the deploy the state file says was
    /// running. Called by the repair every mutating command runs first.
    pub(crate) fn resume_interrupted_deploy(&self) -> Result<(), DeployError> {
        let st = AppState::load(&self.paths)?;
        let Some(mut rec) = st.deploy.clone() else {
            return Ok(());
        };
        if rec.state.is_terminal() {
            return Ok(());
        }
        warn!(app = %self.cfg.name, deploy_id = %rec.id, state = ?rec.state, step = %rec.step, "resuming an interrupted deploy");
        let started = Instant::now();
        let reason = format!(
            "interrupted in state {:?}/{} (the process died)",
            rec.state, rec.step
        )
        .to_lowercase();
        let mut health = Vec::new();
        let Some(v) = rec.to.clone() else {
            self.save_rec(&mut rec, DeployState::Failed, "interrupted")?;
            return Ok(());
        };
        match rec.state {
            DeployState::Migrating if !rec.migrate_done => {
                let why = format!(
                    "the migrate hook of {v} was running when the process died; its outcome is unknown, so Switchyard will not guess: check the data, restore backup {} if needed, then run `switchyard resolve {}`",
                    rec.backup_id.as_deref().unwrap_or("(none)"),
                    self.cfg.name
                );
                self.set_attention("needs_attention", &why, &rec.id)?;
                rec.last_error = Some(why.clone());
                self.save_rec(&mut rec, DeployState::Failed, "interrupted")?;
                self.event("system.update.failed", &rec, "failed", started, Some(why));
            }
            DeployState::RollbackRunning | DeployState::HealthCheck | DeployState::Applying
                if rec.swapped || rec.state == DeployState::RollbackRunning =>
            {
                let data_changed = rec.migrate_done;
                let err = self.rollback(&mut rec, &v, &reason, data_changed, &mut health);
                rec.last_error = Some(err.to_string());
                let state = if matches!(err, DeployError::NeedsAttention { .. }) {
                    DeployState::RollbackFailed
                } else {
                    DeployState::Failed
                };
                self.save_rec(&mut rec, state, "interrupted")?;
                self.event(
                    "system.update.failed",
                    &rec,
                    "failed",
                    started,
                    Some(err.to_string()),
                );
            }
            _ => {
                // Nothing live changed (the install journal undid any partial release).
                rec.last_error = Some(reason.clone());
                self.save_rec(&mut rec, DeployState::Failed, "interrupted")?;
                self.event(
                    "system.update.failed",
                    &rec,
                    "failed",
                    started,
                    Some(reason),
                );
            }
        }
        Ok(())
    }

    /// Promote with activation and the live check; reverts at once on failure.
    pub fn promote_checked(
        &self,
        v: &Version,
        force: bool,
    ) -> Result<crate::ops::deploy::SwitchReport, DeployError> {
        self.check_blocked()?;
        self.check_quarantine(v, force)?;
        let lg_before = self.paths.last_good_version()?;
        let r = self.promote(v)?;
        if !r.changed {
            return Ok(r);
        }
        let id = new_id();
        let dir = self.paths.release(v);
        let ctx = self.hook_ctx(v, r.from.as_ref(), &dir, &id, None);
        let mut health = Vec::new();
        let live = self
            .run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), &ctx)
            .map_err(|e| format!("activate hook failed: {e}"))
            .and_then(|()| {
                self.health("live", self.cfg.health.live.as_ref(), v, &dir, &mut health)
            });
        if let Err(reason) = live {
            let mut rec = DeployRecord::new(
                id,
                DeployState::HealthCheck,
                "live",
                r.from.clone(),
                Some(v.clone()),
            );
            rec.last_error = Some(reason.clone());
            rec.swapped = true;
            rec.prev_last_good = lg_before.clone();
            let err = self.rollback(&mut rec, v, &reason, false, &mut health);
            // Keep last-good as it was before this promote.
            if r.from.is_some() {
                crate::ops::deploy::set_link(
                    &self.paths.last_good(),
                    lg_before.filter(|l| l != v).as_ref(),
                )?;
            }
            return Err(err);
        }
        Ok(r)
    }

    /// Revert with activation and the live check; a failing check leaves the
    /// maintenance flag on and asks for an operator.
    pub fn revert_checked(
        &self,
        to: Option<&Version>,
    ) -> Result<crate::ops::deploy::SwitchReport, DeployError> {
        let r = self.revert(to)?;
        if !r.changed {
            return Ok(r);
        }
        let id = new_id();
        let dir = self.paths.release(&r.to);
        let ctx = self.hook_ctx(&r.to, r.from.as_ref(), &dir, &id, None);
        let mut health = Vec::new();
        let live = self
            .run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), &ctx)
            .map_err(|e| format!("activate hook failed: {e}"))
            .and_then(|()| {
                self.health(
                    "live",
                    self.cfg.health.live.as_ref(),
                    &r.to,
                    &dir,
                    &mut health,
                )
            });
        if let Err(reason) = live {
            let why = format!(
                "reverted to {}, but {reason}; the maintenance flag is on: fix the app, then `switchyard resolve {}`",
                r.to, self.cfg.name
            );
            self.set_attention("needs_attention", &why, &id)?;
            return Err(DeployError::NeedsAttention { reason: why });
        }
        Ok(r)
    }

    /// Clears the block left by `needs_attention` or `rollback_failed` and
    /// turns the maintenance flag off.
    pub fn resolve(&self) -> Result<Option<Attention>, DeployError> {
        let mut st = AppState::load(&self.paths)?;
        let prev = st.attention.take();
        if let Some(rec) = st.deploy.as_mut()
            && !rec.state.is_terminal()
        {
            rec.state = DeployState::Failed;
        }
        st.save(&self.paths)?;
        maintenance::off(&self.paths)?;
        let mut details = serde_json::Map::new();
        if let Some(a) = &prev {
            details.insert(
                "cleared".into(),
                serde_json::to_value(a).unwrap_or_default(),
            );
        }
        self.record(
            "system.resolve.completed",
            &new_id(),
            None,
            None,
            "ok",
            Instant::now(),
            None,
            details,
        )?;
        Ok(prev)
    }

    /// Runs a backup outside a deploy (`switchyard backup create`).
    pub fn backup_now(&self) -> Result<backup::BackupMeta, DeployError> {
        let started = Instant::now();
        let id = new_id();
        let cur = self.paths.current_version()?;
        let rec = DeployRecord::new(
            id.clone(),
            DeployState::BackupRunning,
            "backup",
            cur.clone(),
            cur.clone(),
        );
        self.event("system.backup.started", &rec, "started", started, None);
        let v = cur
            .clone()
            .unwrap_or_else(|| Version::parse("0.0.0").expect("valid"));
        let dir: PathBuf = cur
            .as_ref()
            .map(|c| self.paths.release(c))
            .unwrap_or_else(|| self.paths.root.clone());
        match self.take_backup(&id, cur.as_ref(), &v, &dir) {
            Ok(bid) => {
                let mut rec = rec;
                rec.backup_id = Some(bid.clone());
                self.event("system.backup.completed", &rec, "ok", started, None);
                Ok(backup::get(&self.paths, &bid)
                    .map_err(|e| DeployError::Precheck(e.to_string()))?)
            }
            Err(e) => {
                self.event(
                    "system.backup.failed",
                    &rec,
                    "failed",
                    started,
                    Some(e.to_string()),
                );
                Err(e)
            }
        }
    }
}
