//! Undoing a deploy that failed after it changed something: swap back,
//! activate, check, restore the backup where migrations ran. The same
//! rollback finishes a deploy a killed process left half done: every session
//! runs [`Session::resume_interrupted_deploy`] as part of its repair.

use std::time::Instant;

use tracing::warn;

use crate::config::RestorePolicy;
use crate::ops::error::{DeployError, chain};
use crate::ops::session::{Session, set_link};
use crate::ops::steps::{Fault, NamedReport, Why, closing_event};
use crate::store::history;
use crate::store::layout::maintenance;
use crate::store::state::{AppState, DeployRecord, DeployState};
use crate::version::Version;

impl Session<'_> {
    /// Reverts a failed deploy of `v`: swap back, activate, check, restore
    /// the backup where data may have changed. The record's `last_error`
    /// gets the outcome as it is kept on disk; the error returned has it in
    /// full.
    pub(super) fn rollback(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        fault: &Fault,
        data_changed: bool,
        health: &mut Vec<NamedReport>,
    ) -> DeployError {
        let reason = fault.why();
        rec.last_error = Some(reason.kept.clone());
        if crate::process::stopping() {
            // The repair at the next start does this rollback.
            return DeployError::Stopped;
        }
        let started = Instant::now();
        // Only the release's own failure quarantines it: an interruption or
        // a host error says nothing about the release.
        let id = rec.id.clone();
        let quarantine = || fault.blames_release() && self.quarantine(v, &reason.kept, &id).is_ok();
        match self.rollback_inner(rec, v, data_changed, health) {
            Ok(restored) => {
                let _ = self.event("system.rollback.completed", rec, "ok", started, None);
                let quarantined = quarantine();
                let why = reason.map(|reason| {
                    format!(
                        "{reason}; reverted to {}{}{}",
                        rec.from
                            .as_ref()
                            .map(|f| f.to_string())
                            .unwrap_or_else(|| "no release (there was none before)".into()),
                        if restored {
                            " and restored the backup"
                        } else {
                            ""
                        },
                        if quarantined {
                            format!(", {v} is quarantined")
                        } else {
                            String::new()
                        }
                    )
                });
                rec.last_error = Some(why.kept);
                DeployError::Failed {
                    state: DeployState::Failed,
                    reason: why.full,
                    rolled_back: true,
                }
            }
            Err(e) => {
                let then = |reason: &str, e: &str| {
                    format!(
                        "{reason}; then the revert failed too: {e}. The maintenance flag stays on and deploys are blocked: check `switchyard status {}`, fix the app by hand (`switchyard revert --to`, `switchyard backup restore`), then run `switchyard resolve {}`",
                        self.cfg.name, self.cfg.name
                    )
                };
                let why = Why {
                    full: then(&reason.full, &e.full),
                    kept: then(&reason.kept, &e.kept),
                };
                let _ = self.event(
                    "system.rollback.failed",
                    rec,
                    "failed",
                    started,
                    Some(why.kept.clone()),
                );
                let _ = self.set_attention("rollback_failed", &why.kept, &rec.id);
                quarantine();
                rec.last_error = Some(why.kept);
                DeployError::NeedsAttention { reason: why.full }
            }
        }
    }

    fn rollback_inner(
        &self,
        rec: &mut DeployRecord,
        v: &Version,
        data_changed: bool,
        health: &mut Vec<NamedReport>,
    ) -> Result<bool, Why> {
        let s = |e: DeployError| Why::plain(chain(&e));
        let fse = |e: crate::fs::FsError| Why::plain(chain(&e));
        self.save_rec(rec, DeployState::RollbackRunning, "revert")
            .map_err(s)?;
        self.event(
            "system.rollback.started",
            rec,
            "started",
            Instant::now(),
            None,
        )
        .map_err(s)?;
        maintenance::on(&self.paths, "Maintenance in progress", "rollback")
            .map_err(|e| Why::plain(chain(&e)))?;
        if rec.swapped || self.paths.current_version().map_err(fse)?.as_ref() == Some(v) {
            match rec.from.clone() {
                Some(f) => {
                    self.revert(Some(&f)).map_err(s)?;
                    // The failed release must not become the rollback target:
                    // last-good goes back to what it was before the deploy.
                    // (A revert's target is last-good itself: it goes back
                    // exactly.)
                    let target = rec
                        .prev_last_good
                        .clone()
                        .filter(|l| l != &f && (rec.op == "revert" || l != v));
                    set_link(&self.paths.last_good(), target.as_ref()).map_err(fse)?;
                    let dir = self.paths.release(&f);
                    let ctx = self.hook_ctx(&f, Some(v), &dir, &rec.id, None);
                    self.run_opt_hook("activate", self.cfg.hooks.activate.as_ref(), &ctx)
                        .map_err(|e| Why::hook("activate hook failed after the revert", &e))?;
                }
                None => {
                    set_link(&self.paths.current(), None).map_err(fse)?;
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
            )
            .map_err(|fault| fault.why().clone())?;
        }
        if !ask_pending {
            maintenance::off(&self.paths).map_err(|e| Why::plain(chain(&e)))?;
        }
        Ok(restored)
    }

    /// After a crash: resume or undo the deploy the state file says was
    /// running. Called by the repair every mutating command runs first.
    pub(super) fn resume_interrupted_deploy(&self) -> Result<(), DeployError> {
        let st = AppState::load(&self.paths)?;
        let Some(mut rec) = st.deploy.clone() else {
            return Ok(());
        };
        let started = Instant::now();
        if rec.state.is_terminal() {
            if !rec.audited {
                // Ended, but its closing event may be missing.
                let last = history::read(&self.paths)?.pop();
                let written = match (&last, closing_event(&rec)) {
                    (Some(l), Some((name, _))) => l.event.id == rec.id && l.event.event == name,
                    _ => true,
                };
                if written {
                    rec.audited = true;
                    let mut st = st;
                    st.deploy = Some(rec);
                    st.save(&self.paths)?;
                } else {
                    self.close_record(&mut rec, started)?;
                }
            }
            return Ok(());
        }
        warn!(app = %self.cfg.name, deploy_id = %rec.id, op = %rec.op, state = %rec.state.as_str(), step = %rec.step, "resuming an interrupted operation");
        let reason = format!(
            "interrupted in {}/{} (the process died); undone by the next command",
            rec.state.as_str(),
            rec.step
        );
        let mut health = Vec::new();
        let Some(v) = rec.to.clone() else {
            rec.last_error = Some(reason);
            self.finish_record(&mut rec, DeployState::Failed, started)?;
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
                rec.last_error = Some(why);
                rec.step = "interrupted".into();
                self.finish_record(&mut rec, DeployState::Failed, started)?;
            }
            _ if rec.swapped || rec.state == DeployState::RollbackRunning => {
                // The one rule for an operation cut off after its swap
                // intent: the release live before goes back, is activated
                // and checked; nothing is quarantined.
                let data_changed = rec.migrate_done;
                let err = self.rollback(
                    &mut rec,
                    &v,
                    &Fault::Host(Why::plain(reason)),
                    data_changed,
                    &mut health,
                );
                let state = if matches!(err, DeployError::NeedsAttention { .. }) {
                    DeployState::RollbackFailed
                } else {
                    DeployState::Failed
                };
                rec.step = "interrupted".into();
                self.finish_record(&mut rec, state, started)?;
            }
            _ => {
                // Nothing live changed (the install journal undid any partial release).
                rec.last_error = Some(reason);
                rec.step = "interrupted".into();
                self.finish_record(&mut rec, DeployState::Failed, started)?;
            }
        }
        Ok(())
    }
}
