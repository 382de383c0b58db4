//! What only an operator decides: holding an app (the agent then deploys
//! nothing on its own), quarantining a release or lifting it, and the check
//! that a command which waited for the lock still asks for something that
//! makes sense.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ops::error::DeployError;
use crate::ops::session::Session;
use crate::store::history::{self, Event};
use crate::store::state::{AppState, Hold, Quarantine, new_id, now_rfc3339};
use crate::version::Version;

/// What was live when an operator typed a command: a command that then
/// waited for the lock refuses if someone changed it meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// The live release then (none: nothing was live).
    pub live: Option<Version>,
}

impl Session<'_> {
    /// `switchyard hold`: the agent deploys nothing to the app (scheduled
    /// and critical deploys included) until `unhold`. Manual commands still
    /// work. Holding a held app replaces the reason.
    pub(super) fn hold(&self, reason: Option<&str>) -> Result<Hold, DeployError> {
        let hold = Hold {
            by: self.actor.user.clone(),
            since: now_rfc3339(),
            reason: reason.unwrap_or("held by an operator").to_string(),
            automatic: false,
        };
        self.set_hold(hold.clone(), "app.hold")?;
        Ok(hold)
    }

    /// Holds the app because an operator switched it by hand: a manual
    /// promote or revert must not be undone by the agent's next poll.
    pub(super) fn hold_after_manual(&self, op: &str, v: &Version) -> Result<(), DeployError> {
        let st = AppState::load(&self.paths)?;
        if st.hold.as_ref().is_some_and(|h| !h.automatic) {
            // An operator's own hold says more than ours would.
            return Ok(());
        }
        self.set_hold(
            Hold {
                by: self.actor.user.clone(),
                since: now_rfc3339(),
                reason: match &self.actor.reason {
                    Some(why) => format!("manual {op} to {v}: {why}"),
                    None => format!("manual {op} to {v}"),
                },
                automatic: true,
            },
            "app.hold",
        )
    }

    fn set_hold(&self, hold: Hold, event: &str) -> Result<(), DeployError> {
        let mut st = AppState::load(&self.paths)?;
        let was = st.hold.replace(hold.clone());
        let mut details = serde_json::Map::new();
        details.insert("reason".into(), hold.reason.clone().into());
        details.insert("automatic".into(), hold.automatic.into());
        if let Some(w) = was {
            details.insert("replaces".into(), w.reason.into());
        }
        self.save_with_event(st, self.operator_event(event, &new_id(), None, details))?;
        info!(app = %self.cfg.name, by = %hold.by, reason = %hold.reason, "held: the agent deploys nothing on its own until `switchyard unhold`");
        Ok(())
    }

    /// `switchyard unhold`: automatic deploys resume. Returns the hold that
    /// was lifted, if any.
    pub(super) fn unhold(&self) -> Result<Option<Hold>, DeployError> {
        let mut st = AppState::load(&self.paths)?;
        let Some(was) = st.hold.take() else {
            return Ok(None);
        };
        let mut details = serde_json::Map::new();
        details.insert("lifted".into(), was.reason.clone().into());
        details.insert("held_by".into(), was.by.clone().into());
        details.insert("held_since".into(), was.since.clone().into());
        self.save_with_event(
            st,
            self.operator_event("app.unhold", &new_id(), None, details),
        )?;
        Ok(Some(was))
    }

    /// `switchyard quarantine`: deploys and promotes of `v` need `--force`;
    /// the agent never takes it; it does not count for the downgrade floor.
    pub(super) fn quarantine_by_hand(
        &self,
        v: &Version,
        reason: Option<&str>,
    ) -> Result<Quarantine, DeployError> {
        let id = new_id();
        let reason = reason.unwrap_or("quarantined by an operator");
        let q = Quarantine {
            reason: reason.to_string(),
            time: now_rfc3339(),
            deploy_id: id.clone(),
        };
        let mut st = AppState::load(&self.paths)?;
        st.quarantined.insert(v.to_string(), q.clone());
        let mut details = serde_json::Map::new();
        details.insert("reason".into(), reason.into());
        let e = self.operator_event("release.quarantine", &id, Some(v.to_string()), details);
        self.save_with_event(st, e)?;
        warn!(app = %self.cfg.name, version = %v, reason, "release quarantined");
        Ok(q)
    }

    /// Lifts a quarantine: by `switchyard unquarantine`, or after `v` went
    /// live and passed its checks under `--force`. Returns the lifted one.
    pub(super) fn unquarantine(
        &self,
        v: &Version,
        why: &str,
    ) -> Result<Option<Quarantine>, DeployError> {
        let mut st = AppState::load(&self.paths)?;
        let Some(was) = st.quarantined.remove(&v.to_string()) else {
            return Ok(None);
        };
        let mut details = serde_json::Map::new();
        details.insert("lifted".into(), was.reason.clone().into());
        details.insert("why".into(), why.into());
        let e = self.operator_event(
            "release.unquarantine",
            &new_id(),
            Some(v.to_string()),
            details,
        );
        self.save_with_event(st, e)?;
        info!(app = %self.cfg.name, version = %v, why, "quarantine lifted");
        Ok(Some(was))
    }

    /// The audit event of an operator's decision (nothing switched, so no
    /// `from`), for [`Session::save_with_event`].
    fn operator_event(
        &self,
        event: &str,
        id: &str,
        to: Option<String>,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Event {
        self.make_event(event, id, None, to, "ok", Instant::now(), None, details)
    }

    /// Refuses a command whose operator saw another live release than the
    /// one live now (it waited for the lock while someone else switched):
    /// says what changed, when and who did it.
    pub(super) fn check_seen(&self, seen: Option<&Seen>, asked: &str) -> Result<(), DeployError> {
        let Some(seen) = seen else { return Ok(()) };
        let now = self.paths.current_version()?;
        if now == seen.live {
            return Ok(());
        }
        let show = |v: &Option<Version>| {
            v.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "nothing".into())
        };
        // Who: the last audit event that left `current` where it is.
        let by = history::read(&self.paths)?
            .into_iter()
            .rev()
            .map(|s| s.event)
            .find(|e| {
                e.outcome == "ok" && e.to.is_some() && e.to == now.as_ref().map(|v| v.to_string())
            })
            .map(|e| format!(" ({} by {} at {})", e.event, e.actor.user, e.time))
            .unwrap_or_default();
        Err(DeployError::ChangedMeanwhile {
            app: self.cfg.name.clone(),
            asked: asked.to_string(),
            seen: show(&seen.live),
            now: show(&now),
            by,
        })
    }
}
