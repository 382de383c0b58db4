//! The bare swap of `current` (and `last-good`) under a journal. Nothing
//! here activates or checks the release: `promote` and `revert` are reached
//! from outside `ops` only through their checked forms (ops/lifecycle.rs).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::ops::error::DeployError;
use crate::ops::session::{Session, Txn, set_link};
use crate::store::journal::Journal;
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

    /// What a revert goes to: `to`, or `last-good`.
    pub(super) fn revert_target(&self, to: Option<&Version>) -> Result<Version, DeployError> {
        match to {
            Some(v) => Ok(v.clone()),
            None => self
                .paths
                .last_good_version()?
                .ok_or_else(|| DeployError::NothingToRevert {
                    app: self.cfg.name.clone(),
                }),
        }
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
        let new_lg = cur.clone().or(lg.clone());
        if let Some(c) = &cur {
            set_link(&self.paths.last_good(), Some(c))?;
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
        })
    }
}
