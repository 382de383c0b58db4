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
//!
//! `promote` and `revert` go live through the same activation and live
//! check (here), and a failed promote is undone by the same rollback.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::fs;
use crate::ops::backup::{self, BackupMeta};
use crate::ops::error::{DeployError, chain};
use crate::ops::hooks::run_hook;
use crate::ops::install::InstallOptions;
use crate::ops::session::{Session, remove_release};
use crate::ops::steps::{Fault, NamedReport, Why};
use crate::ops::switch::SwitchReport;
use crate::source::ReleaseSource;
use crate::store::layout::maintenance;
use crate::store::state::{AppState, Attention, DeployRecord, DeployState, new_id};
use crate::version::{Version, VersionRequest};

/// Operator choices for one deploy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeployOptions {
    /// Accept a version older than the highest verified.
    pub allow_downgrade: bool,
    /// Accept a major-version upgrade.
    pub allow_major: bool,
    /// Deploy a quarantined release.
    pub force: bool,
    /// The agent deploys on its own: refused while the app is held.
    pub automatic: bool,
}

/// Operator choices for one promote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PromoteOptions {
    /// Promote a quarantined release.
    pub force: bool,
    /// Accept a major-version upgrade.
    pub allow_major: bool,
    /// Promote a release that was only installed, without the deploy steps
    /// it missed.
    pub skip_lifecycle: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeployOutcome {
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
    /// The version asked for was live already: nothing was done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_live: bool,
    /// Backup taken, if any.
    pub backup_id: Option<String>,
    /// Old releases removed after the deploy (`keep_releases`).
    #[serde(default)]
    pub pruned: Vec<Version>,
}

impl Session<'_> {
    /// Deploys a release through the whole lifecycle.
    pub(super) fn deploy(
        &self,
        source: &dyn ReleaseSource,
        req: &VersionRequest,
        opts: DeployOptions,
    ) -> Result<DeployOutcome, DeployError> {
        let started = Instant::now();
        if opts.automatic
            && let Some(h) = AppState::load(&self.paths)?.hold
        {
            // Checked under the lock: a hold set while the agent looked.
            return Err(DeployError::Held {
                app: self.cfg.name.clone(),
                by: h.by,
                since: h.since,
                reason: h.reason,
            });
        }
        let from = self.paths.current_version()?;
        if let VersionRequest::Exact(v) = req
            && from.as_ref() == Some(v)
        {
            // Deploying what is live is not a downgrade, and not work (but
            // a blocked app still says it is blocked).
            self.check_blocked()?;
            return Ok(DeployOutcome {
                id: String::new(),
                state: DeployState::Completed,
                from: from.clone(),
                to: v.clone(),
                health: Vec::new(),
                backup_id: None,
                already_live: true,
                pruned: Vec::new(),
            });
        }
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
                // Completed is saved (the commit point) inside the steps; the
                // closing event may be left to the next repair.
                if let Err(e) = self.close_record(&mut rec, started) {
                    warn!(error = %chain(&e), "deployed; the audit line follows with the next command");
                }
                if opts.force
                    && let Err(e) =
                        self.unquarantine(&to, "deployed with --force and passed its checks")
                {
                    warn!(error = %chain(&e), "deployed; lifting the quarantine failed");
                }
                let pruned = self.prune().unwrap_or_else(|e| {
                    warn!(error = %chain(&e), "deployed; pruning old releases failed");
                    Vec::new()
                });
                Ok(DeployOutcome {
                    id: rec.id,
                    state: rec.state,
                    from,
                    to,
                    health,
                    backup_id: rec.backup_id,
                    already_live: false,
                    pruned,
                })
            }
            Err(DeployError::Stopped) => Err(DeployError::Stopped),
            Err(e) => {
                // A failed or blocked deploy recorded its reason as it is
                // kept on disk (without hook output); anything else is kept
                // as it reads.
                if rec.last_error.is_none()
                    || !matches!(
                        e,
                        DeployError::Failed { .. } | DeployError::NeedsAttention { .. }
                    )
                {
                    rec.last_error = Some(chain(&e));
                }
                let state = match (&e, rec.state) {
                    (DeployError::Precheck(_) | DeployError::Blocked { .. }, _) => {
                        DeployState::PrecheckFailed
                    }
                    (_, DeployState::Checking) => DeployState::PrecheckFailed,
                    (_, DeployState::BackupRunning) => DeployState::BackupFailed,
                    (DeployError::NeedsAttention { .. }, DeployState::RollbackRunning) => {
                        DeployState::RollbackFailed
                    }
                    (DeployError::Failed { state, .. }, _) => *state,
                    _ => DeployState::Failed,
                };
                if let Err(se) = self.finish_record(&mut rec, state, started) {
                    warn!(error = %chain(&se), "could not record the failed deploy; the next command does");
                }
                // on_failure runs in the release when it was installed, or
                // in the app root when there is none (a failure before or
                // during the unpack, such as a checksum mismatch): a hook
                // started in a missing or half-made directory cannot start.
                let v = rec.to.clone();
                let installed = self.paths.installed().unwrap_or_default();
                let dir = v
                    .as_ref()
                    .filter(|v| installed.contains(v))
                    .map(|v| self.paths.release(v))
                    .filter(|d| d.is_dir())
                    .unwrap_or_else(|| self.paths.root.clone());
                let shown = v
                    .clone()
                    .unwrap_or_else(|| Version::parse("0.0.0").expect("valid"));
                let ctx = self.hook_ctx(&shown, from.as_ref(), &dir, &rec.id, None);
                if let Err(he) =
                    self.run_opt_hook("on_failure", self.cfg.hooks.on_failure.as_ref(), &ctx)
                {
                    warn!(error = %chain(&he), "on_failure hook failed");
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
        self.event("system.update.started", rec, "started", started, None)?;
        self.check_quarantine(&v, opts.force)?;
        if let Some(f) = &rec.from
            && v.is_major_upgrade_from(f)
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
        fs::write_atomic(&probe, b"ok").map_err(|e| {
            if e.is_storage_failure() {
                DeployError::Fs(e)
            } else {
                DeployError::Precheck(format!("the app root is not writable: {}", chain(&e)))
            }
        })?;
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
            .map_err(|e| Fault::hook("", &e))
            .and_then(|()| {
                self.save_rec(rec, DeployState::HealthCheck, "staging")
                    .map_err(Fault::host)?;
                self.health(
                    "staging",
                    self.cfg.health.staging.as_ref(),
                    &v,
                    &dir,
                    health,
                )
            });
        if let Err(fault) = staged {
            return Err(self.fail_before_swap(rec, &v, inst.installed, &fault));
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
            self.event("system.backup.started", rec, "started", b_started, None)?;
            match self.take_backup(&rec.id, prev.as_ref(), &v, &dir) {
                Ok(id) => {
                    rec.backup_id = Some(id);
                    self.event("system.backup.completed", rec, "ok", b_started, None)?;
                }
                Err(e) => {
                    let _ = self.event(
                        "system.backup.failed",
                        rec,
                        "failed",
                        b_started,
                        Some(chain(&e)),
                    );
                    return Err(DeployError::Failed {
                        state: DeployState::BackupFailed,
                        reason: chain(&e),
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
                    let why = Why::hook("", &e).map(|hook| format!(
                        "the migrate hook of {v} did not finish ({hook}); its outcome is unknown, so Switchyard will not guess: check the data, restore backup {} if needed, then run `switchyard resolve {}`",
                        rec.backup_id.as_deref().unwrap_or("(none)"),
                        self.cfg.name
                    ));
                    self.set_attention("needs_attention", &why.kept, &rec.id)?;
                    rec.last_error = Some(why.kept);
                    return Err(DeployError::NeedsAttention { reason: why.full });
                }
                Err(e) => {
                    // A migrate that failed cleanly may still have changed
                    // data: put the backup back per policy, then give up.
                    let fault = Fault::hook("migrate hook failed", &e);
                    return Err(self.rollback(rec, &v, &fault, true, health));
                }
            }
        }

        // Prepared: a later promote of this release (after a revert) needs
        // no --skip-lifecycle.
        self.mark_prepared(&v)?;
        // Intent before the swap: from here on `current` may name the new
        // release, so any failure (or a kill) is undone by the rollback,
        // which checks where `current` really points.
        rec.swapped = true;
        self.save_rec(rec, DeployState::Applying, "swap")?;
        if let Err(fault) = self.go_live(rec, &v, &dir, &ctx, health, |s| s.promote(&v)) {
            if crate::process::stopping() {
                return Err(DeployError::Stopped);
            }
            return Err(self.rollback(rec, &v, &fault, rec.migrate_done, health));
        }
        Ok(v)
    }

    /// The swap (`switch`), activation, the live check and the commit point
    /// (`completed` saved). The caller saved the swap intent first.
    fn go_live(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        dir: &std::path::Path,
        ctx: &crate::ops::hooks::HookContext,
        health: &mut Vec<NamedReport>,
        switch: impl FnOnce(&Self) -> Result<SwitchReport, DeployError>,
    ) -> Result<SwitchReport, Fault> {
        let r = switch(self).map_err(Fault::host)?;
        self.save_rec(rec, DeployState::Applying, "activate")
            .map_err(Fault::host)?;
        self.run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), ctx)
            .map_err(|e| Fault::hook("activate hook failed", &e))?;
        self.save_rec(rec, DeployState::HealthCheck, "live")
            .map_err(Fault::host)?;
        self.health("live", self.cfg.health.live.as_ref(), v, dir, health)?;
        rec.audited = false;
        self.save_rec(rec, DeployState::Completed, "done")
            .map_err(Fault::host)?;
        Ok(r)
    }

    fn fail_before_swap(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        installed_now: bool,
        fault: &Fault,
    ) -> DeployError {
        let why = fault.why();
        if installed_now
            && !self.cfg.policy.keep_failed
            && let Err(e) = remove_release(&self.paths, v)
        {
            warn!(error = %e, "could not remove the failed release");
        }
        let quarantined = fault.blames_release()
            && self
                .quarantine(v, &why.kept, &rec.id)
                .inspect_err(|e| warn!(error = %chain(e), "could not quarantine"))
                .is_ok();
        let why = why.map(|reason| {
            format!(
                "{reason}; the live release was not touched{}{}",
                if quarantined {
                    format!(", {v} is quarantined")
                } else {
                    String::new()
                },
                if self.cfg.policy.keep_failed {
                    " and kept for inspection"
                } else {
                    ""
                }
            )
        });
        rec.last_error = Some(why.kept);
        DeployError::Failed {
            state: DeployState::Failed,
            reason: why.full,
            rolled_back: false,
        }
    }

    /// Promote with activation and the live check; reverts at once on
    /// failure. The same gates as a deploy (quarantine, major upgrade), and a
    /// release that was only installed, never prepared by a deploy, is
    /// refused unless `skip_lifecycle`. Holds the app: the agent must not
    /// undo an operator's choice.
    pub(super) fn promote_checked(
        &self,
        v: &Version,
        opts: PromoteOptions,
    ) -> Result<SwitchReport, DeployError> {
        self.check_blocked()?;
        if !self.paths.is_installed(v)? {
            // The switch says so, naming what is installed.
            return self.switch_checked("promote", v);
        }
        self.check_quarantine(v, opts.force)?;
        let from = self.paths.current_version()?;
        if let Some(f) = &from
            && v.is_major_upgrade_from(f)
            && !(opts.allow_major || self.cfg.policy.allow_major)
        {
            return Err(DeployError::Precheck(format!(
                "{v} is a major upgrade from {f}; read its release notes, then pass --allow-major (or set allow_major = true in [apps.{}.policy])",
                self.cfg.name
            )));
        }
        if from.as_ref() != Some(v) && !opts.skip_lifecycle {
            self.check_prepared(v)?;
        }
        let mut r = self.switch_checked("promote", v)?;
        if r.changed {
            r.held = true;
            if opts.force
                && let Err(e) = self.unquarantine(v, "promoted with --force and passed its checks")
            {
                warn!(error = %chain(&e), "promoted; lifting the quarantine failed");
            }
            self.hold_after_manual("promote", v)?;
        }
        Ok(r)
    }

    /// Revert (to `to`, or back through the live history) with activation
    /// and the live check; a failing check leaves the maintenance flag on
    /// and asks for an operator. Holds the app.
    pub(super) fn revert_checked(&self, to: Option<&Version>) -> Result<SwitchReport, DeployError> {
        let target = self.revert_target(to)?;
        let mut r = self.switch_checked("revert", &target);
        // Even a failed revert says what the operator wants: no agent deploy
        // behind their back.
        if r.as_ref().is_ok_and(|r| r.changed) || r.is_err() {
            self.hold_after_manual("revert", &target)?;
        }
        if let Ok(r) = r.as_mut() {
            r.held = r.changed;
        }
        r
    }

    /// Refuses to promote a release whose deploy steps never ran, naming
    /// the steps this app has.
    fn check_prepared(&self, v: &Version) -> Result<(), DeployError> {
        let st = AppState::load(&self.paths)?;
        if st.prepared.contains(v) || self.live_history()?.contains(v) {
            return Ok(());
        }
        let mut steps = Vec::new();
        if self.cfg.hooks.warm.is_some() {
            steps.push("the warm hook");
        }
        if self.cfg.health.staging.is_some() {
            steps.push("the staging health check");
        }
        if self.cfg.hooks.backup.is_some() || self.cfg.policy.backup_shared {
            steps.push("the backup");
        }
        if self.cfg.hooks.migrate.is_some() {
            steps.push("the migrate hook");
        }
        if steps.is_empty() {
            return Ok(());
        }
        let app = &self.cfg.name;
        Err(DeployError::Precheck(format!(
            "{v} was installed but never deployed, so {} did not run for it; run `switchyard deploy {app} {v}` (it uses the installed copy and runs them), or pass --skip-lifecycle to make it live without them",
            join_and(&steps)
        )))
    }

    /// Notes that `v` went through a deploy's preparation (or went live).
    fn mark_prepared(&self, v: &Version) -> Result<(), DeployError> {
        let mut st = AppState::load(&self.paths)?;
        if st.prepared.insert(v.clone()) {
            st.save(&self.paths)?;
        }
        Ok(())
    }

    /// A promote or revert that goes live the way a deploy does: its record
    /// saved with the swap intent before the swap, so that a failure or a
    /// kill after it is undone by the same rule (ops/rollback.rs).
    fn switch_checked(&self, op: &str, v: &Version) -> Result<SwitchReport, DeployError> {
        let switch = |s: &Self| {
            if op == "promote" {
                s.promote(v)
            } else {
                s.revert(Some(v))
            }
        };
        let from = self.paths.current_version()?;
        if from.as_ref() == Some(v) || !self.paths.is_installed(v)? {
            // Already live, or not installed: the switch says so.
            return switch(self);
        }
        let started = Instant::now();
        let mut rec = DeployRecord::new(
            new_id(),
            DeployState::Applying,
            "swap",
            from.clone(),
            Some(v.clone()),
        );
        rec.op = op.to_string();
        rec.prev_last_good = self.paths.last_good_version()?;
        rec.swapped = true;
        self.save_rec(&mut rec, DeployState::Applying, "swap")?;
        let dir = self.paths.release(v);
        let ctx = self.hook_ctx(v, from.as_ref(), &dir, &rec.id, None);
        let mut health = Vec::new();
        match self.go_live(&mut rec, v, &dir, &ctx, &mut health, switch) {
            Ok(r) => {
                if let Err(e) = self.mark_prepared(v) {
                    warn!(error = %chain(&e), "switched; noting the release as prepared failed");
                }
                if let Err(e) = self.close_record(&mut rec, started) {
                    warn!(error = %chain(&e), "switched; the record is closed by the next command");
                }
                Ok(r)
            }
            Err(Fault::Release(reason)) if op == "revert" => {
                let why = reason.map(|reason| format!(
                    "reverted to {v}, but {reason}; the maintenance flag is on: fix the app, then `switchyard resolve {}`",
                    self.cfg.name
                ));
                rec.last_error = Some(why.kept.clone());
                self.set_attention("needs_attention", &why.kept, &rec.id)?;
                let _ = self.finish_record(&mut rec, DeployState::Failed, started);
                Err(DeployError::NeedsAttention { reason: why.full })
            }
            Err(_) if crate::process::stopping() => Err(DeployError::Stopped),
            Err(fault) => {
                let err = self.rollback(&mut rec, v, &fault, false, &mut health);
                let state = if matches!(err, DeployError::NeedsAttention { .. }) {
                    DeployState::RollbackFailed
                } else {
                    DeployState::Failed
                };
                let _ = self.finish_record(&mut rec, state, started);
                Err(err)
            }
        }
    }

    /// Clears the block left by `needs_attention` or `rollback_failed` and
    /// turns the maintenance flag off.
    pub(super) fn resolve(&self) -> Result<Option<Attention>, DeployError> {
        let mut st = AppState::load(&self.paths)?;
        let prev = st.attention.take();
        if let Some(rec) = st.deploy.as_mut() {
            // The record that blocked deploys is settled now: `status` must
            // not keep showing it as blocked or as a failed rollback.
            let blocked_by_it = prev.as_ref().is_some_and(|a| a.deploy_id == rec.id)
                || rec.state == DeployState::RollbackFailed;
            if !rec.state.is_terminal() || blocked_by_it {
                rec.state = DeployState::Failed;
            }
            if blocked_by_it {
                rec.step = "resolved".into();
                rec.last_error = Some(format!(
                    "resolved by an operator at {}; what happened is in `switchyard history {}`",
                    self.clock.now(),
                    self.cfg.name
                ));
            }
        }
        let mut details = serde_json::Map::new();
        if let Some(a) = &prev {
            details.insert(
                "cleared".into(),
                serde_json::to_value(a).unwrap_or_default(),
            );
        }
        let ev = self.make_event(
            "system.resolve.completed",
            &new_id(),
            None,
            None,
            "ok",
            Instant::now(),
            None,
            details,
        );
        // The cleared block and its event in one write; then the page.
        // (Killed before the page is off, `resolve` again turns it off.)
        self.save_with_event(st, ev)?;
        maintenance::off(&self.paths)?;
        Ok(prev)
    }

    /// Runs a backup outside a deploy (`switchyard backup create`).
    pub(super) fn backup_now(&self) -> Result<BackupMeta, DeployError> {
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
        self.event("system.backup.started", &rec, "started", started, None)?;
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
                self.event("system.backup.completed", &rec, "ok", started, None)?;
                backup::get(&self.paths, &bid).map_err(DeployError::BackupFailed)
            }
            Err(e) => {
                let _ = self.event(
                    "system.backup.failed",
                    &rec,
                    "failed",
                    started,
                    Some(chain(&e)),
                );
                Err(e)
            }
        }
    }

    /// `switchyard backup restore`: restores a backup (without an id, the
    /// newest) through the restore hook, for the live release.
    pub(super) fn restore_now(&self, id: Option<&str>) -> Result<String, DeployError> {
        let id = backup::resolve_id(&self.paths, id)?;
        let v = self
            .paths
            .current_version()?
            .unwrap_or_else(|| Version::parse("0.0.0").expect("valid"));
        self.restore_backup(&id, &v, &new_id())?;
        Ok(id)
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
