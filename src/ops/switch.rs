//! The bare swap of `current` (and `last-good`) under a journal. Nothing
//! here activates or checks the release: `promote` and `revert` are reached
//! from outside `ops` only through their checked forms (ops/lifecycle.rs).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::ops::error::DeployError;
use crate::ops::session::{Session, Txn, set_link};
use crate::store::history;
use crate::store::journal::Journal;
use crate::store::state::AppState;
use crate::store::state::{checkpoint, new_id, now_rfc3339};
use crate::version::Version;

/// The outcome of a switch (promote or revert).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SwitchReport {
    /// Live before.
    pub from: Option<Version>,
    /// Live now.
    pub to: Version,
    /// `last-good` now.
    pub last_good: Option<Version>,
    /// False when `to` was already live.
    pub changed: bool,
    /// The app is held now (a manual promote or revert holds it).
    #[serde(default)]
    pub held: bool,
}

impl Session<'_> {
    /// Makes an installed release live: `current` swapped atomically, the
    /// previous live release becomes `last-good`.
    pub(super) fn promote(&self, v: &Version) -> Result<SwitchReport, DeployError> {
        self.switch("promote", v)
    }

    /// Swaps `current` back to `last-good`, or to `to`.
    pub(super) fn revert(&self, to: Option<&Version>) -> Result<SwitchReport, DeployError> {
        let target = self.revert_target(to)?;
        self.switch("revert", &target)
    }

    /// What a revert goes to: `to`, or the release live before the live
    /// one in the live history (then the one before that, and so on, as
    /// Capistrano's rollback walks back), skipping releases pruned or
    /// quarantined since. Without a history, `last-good`.
    pub(super) fn revert_target(&self, to: Option<&Version>) -> Result<Version, DeployError> {
        if let Some(v) = to {
            return Ok(v.clone());
        }
        let live = self.paths.current_version()?;
        let stack = self.live_history()?;
        let found = if stack.is_empty() {
            self.paths.last_good_version()?
        } else {
            self.walk_back(&stack, live.as_ref())?
        };
        found.ok_or_else(|| DeployError::NothingToRevert {
            app: self.cfg.name.clone(),
            why: match live {
                None => "nothing is live".into(),
                Some(v) => format!(
                    "no installed release that is not quarantined was live before {v} (revert walks back through the live history)"
                ),
            },
        })
    }

    /// The live history, oldest first, replayed from the audit log: every
    /// switch that made a release live pushes it; a revert goes back down
    /// to the release it went to (or pushes it, when it is not below).
    pub(super) fn live_history(&self) -> Result<Vec<Version>, DeployError> {
        let mut stack: Vec<Version> = Vec::new();
        for e in history::read_all(&self.paths)?.into_iter().map(|s| s.event) {
            if e.outcome != "ok" {
                continue;
            }
            let Some(to) = e.to.as_deref().and_then(|t| Version::parse(t).ok()) else {
                continue;
            };
            match e.event.as_str() {
                "release.promote.completed" if stack.last() != Some(&to) => stack.push(to),
                "release.revert.completed" => back_to(&mut stack, to),
                _ => {}
            }
        }
        Ok(stack)
    }

    /// The first release below `live` in `stack` that can be reverted to:
    /// installed, not quarantined, not `live` itself.
    fn walk_back(
        &self,
        stack: &[Version],
        live: Option<&Version>,
    ) -> Result<Option<Version>, DeployError> {
        let st = AppState::load(&self.paths)?;
        let below = match stack.last() {
            Some(top) if Some(top) == live => &stack[..stack.len() - 1],
            _ => stack,
        };
        for v in below.iter().rev() {
            if Some(v) != live && !st.is_quarantined(v) && self.paths.is_installed(v)? {
                return Ok(Some(v.clone()));
            }
        }
        Ok(None)
    }

    /// Where the next revert goes once `v` is live by a revert: the new
    /// `last-good`.
    fn next_back_after_revert(&self, v: &Version) -> Result<Option<Version>, DeployError> {
        let mut stack = self.live_history()?;
        if stack.is_empty() {
            return Ok(None);
        }
        back_to(&mut stack, v.clone());
        self.walk_back(&stack, Some(v))
    }

    fn switch(&self, op: &str, v: &Version) -> Result<SwitchReport, DeployError> {
        let started = Instant::now();
        let span = tracing::info_span!("switch", app = %self.cfg.name, version = %v, step = op);
        let _g = span.enter();
        if !self.paths.is_installed(v)? {
            return Err(DeployError::NotInstalled {
                app: self.cfg.name.clone(),
                version: v.to_string(),
                installed: self.installed_list(),
            });
        }
        let cur = self.paths.current_version()?;
        let lg = self.paths.last_good_version()?;
        if cur.as_ref() == Some(v) {
            info!("already live; nothing to do");
            return Ok(SwitchReport {
                from: cur,
                to: v.clone(),
                last_good: lg,
                changed: false,
                held: false,
            });
        }
        let id = new_id();
        let txn = Txn::begin(
            &self.paths,
            Journal {
                id: id.clone(),
                op: op.to_string(),
                pid: std::process::id(),
                started: now_rfc3339(),
                target: Some(v.clone()),
                prev_current: cur.clone(),
                prev_last_good: lg.clone(),
                creates_release: false,
                commit: None,
                exchanges: Vec::new(),
            },
        )?;
        checkpoint(&format!("{op}.journaled"));
        // last-good first: should we die between the two swaps, `current`
        // still names a complete release and the journal restores both.
        // `last-good` is where the next revert goes: after a promote, the
        // release live before; after a revert, the one below it in the live
        // history (none: the link goes, and `revert` says there is nothing
        // to go back to).
        let new_lg = if op == "revert" {
            let history_has = !self.live_history()?.is_empty();
            match self.next_back_after_revert(v)? {
                Some(n) => Some(n),
                None if history_has => None,
                None => cur.clone().or(lg.clone()),
            }
        } else {
            cur.clone().or(lg.clone())
        };
        if new_lg != lg {
            set_link(&self.paths.last_good(), new_lg.as_ref())?;
        }
        checkpoint(&format!("{op}.last_good_swapped"));
        set_link(&self.paths.current(), Some(v))?;
        checkpoint(&format!("{op}.current_swapped"));
        checkpoint(&format!("{op}.recorded"));
        txn.commit(self.make_event(
            &format!("release.{op}.completed"),
            &id,
            cur.as_ref().map(|v| v.to_string()),
            Some(v.to_string()),
            "ok",
            started,
            None,
            Default::default(),
        ))?;
        info!(app = %self.cfg.name, from = cur.as_ref().map(tracing::field::display), to = %v, "now live");
        Ok(SwitchReport {
            from: cur,
            to: v.clone(),
            last_good: new_lg,
            changed: true,
            held: false,
        })
    }
}

/// A revert to `to` in the live history: back down to it, or (when it is
/// not below) a new top.
fn back_to(stack: &mut Vec<Version>, to: Version) {
    match stack.iter().rposition(|v| v == &to) {
        Some(i) => stack.truncate(i + 1),
        None => stack.push(to),
    }
}
