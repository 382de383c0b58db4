//! What the agent does besides its own policy: run scheduled deploys whose
//! time has come, and deploy critical releases by their deadline. Both are
//! decisions an operator (or the release's publisher) made, so they run even
//! with `auto = "none"`; neither runs while the app is held.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::daemon::{OpOutcome, run_op};
use crate::ops::api::{Caller, Request};
use crate::ops::schedule;
use crate::source::{ReleaseInfo, ReleaseSource};
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::store::state::AppState;
use crate::version::{Version, VersionRequest};

/// What the agent has said once already (critical releases seen, deploys
/// waiting for a hold), so a poll every minute does not repeat it.
static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// True the first time `key` is seen by this agent.
fn first_time(key: String) -> bool {
    SAID.lock().map(|mut s| s.insert(key)).unwrap_or(true)
}

fn agent_caller(clock: &Arc<dyn Clock>, user: &str) -> Caller {
    Caller {
        clock: clock.clone(),
        actor: Actor {
            user: user.into(),
            uid: None,
            reason: None,
        },
        wait: true,
        automatic: true,
    }
}

/// Runs the scheduled deploy whose time has come, if any and the app is
/// not held. Returns whether it ran one (the check then ends).
pub(super) fn run_due(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    clock: &Arc<dyn Clock>,
    out: &mut OpOutcome,
) -> bool {
    let paths = AppPaths::new(&cfg.root);
    let file = match schedule::load(&paths) {
        Ok(f) => f,
        Err(e) => {
            warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot read the scheduled deploys");
            return false;
        }
    };
    let now = clock.now();
    let Some(e) = file.next_pending() else {
        return false;
    };
    if e.at > now {
        // Wake up for it (the caller never sleeps past the next poll).
        out.wait_until = Some(out.wait_until.map_or(e.at, |w| w.min(e.at)));
        return false;
    }
    if let Some(h) = AppState::load(&paths).ok().and_then(|s| s.hold) {
        if first_time(format!("{}:held:{}", cfg.name, e.id)) {
            info!(app = %cfg.name, version = %e.version, id = %e.id, held_by = %h.by,
                "a scheduled deploy is due, but the app is held; it waits for `switchyard unhold`");
        }
        return false;
    }
    info!(app = %cfg.name, version = %e.version, id = %e.id, at = %e.at, step = "deploy",
        "running the scheduled deploy");
    let req = Request::ScheduleRun {
        app: cfg.name.clone(),
        id: e.id.clone(),
        version: e.version.clone(),
    };
    let caller = agent_caller(clock, &format!("agent:schedule:{}", e.id));
    if let Err(err) = run_op(cfg, source, &req, &caller, out) {
        warn!(app = %cfg.name, version = %e.version, id = %e.id, error = %crate::chain::chain(&err),
            "the scheduled deploy did not complete (`switchyard schedule list` says whether it failed; a failed one never runs again)");
    }
    true
}

/// A critical release among `candidates` (newer than `current`, newest
/// first, quarantined ones left out) that the auto level does not let the
/// agent take: announced once, and deployed once its deadline has passed
/// unless the app is held. Returns whether the check should end here.
pub(super) fn deploy_critical(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    clock: &Arc<dyn Clock>,
    candidates: &[&ReleaseInfo],
    current: Option<&Version>,
    out: &mut OpOutcome,
) -> bool {
    let Some(info) = candidates.first() else {
        return false;
    };
    let Some(c) = crate::verify::critical::critical_of(cfg, source, info) else {
        return false;
    };
    let v = &info.version;
    let deadline = c
        .deadline
        .map_or_else(|| "none (at once)".to_string(), |d| d.to_string());
    if first_time(format!("{}:critical:{v}", cfg.name)) {
        warn!(app = %cfg.name, version = %v, deadline = %deadline,
            "a critical release is out; it is deployed by its deadline, whatever the auto level (unless the app is held)");
    }
    if crate::config::policy::auto_allows(cfg.agent.auto, current, v) {
        // The usual path takes it, with the window's critical override.
        return false;
    }
    let paths = AppPaths::new(&cfg.root);
    if let Some(h) = AppState::load(&paths).ok().and_then(|s| s.hold) {
        if first_time(format!("{}:critical-held:{v}", cfg.name)) {
            info!(app = %cfg.name, version = %v, held_by = %h.by,
                "the critical release waits: the app is held");
        }
        return true;
    }
    let now = clock.now();
    if let Some(d) = c.deadline.filter(|d| *d > now) {
        out.wait_until = Some(out.wait_until.map_or(d, |w| w.min(d)));
        return false;
    }
    if current.is_some_and(|cur| v.is_major_upgrade_from(cur)) && !cfg.policy.allow_major {
        if first_time(format!("{}:critical-major:{v}", cfg.name)) {
            warn!(app = %cfg.name, version = %v,
                "the critical release is a major upgrade: deploy it yourself with --allow-major");
        }
        return false;
    }
    info!(app = %cfg.name, version = %v, deadline = %deadline, step = "deploy",
        "deploying the critical release: its deadline has passed");
    let req = Request::Deploy {
        app: cfg.name.clone(),
        version: VersionRequest::Exact(v.clone()),
        allow_downgrade: false,
        allow_major: false,
        force: false,
        seen: None,
        reason: None,
    };
    let _ = run_op(
        cfg,
        source,
        &req,
        &agent_caller(clock, "agent:critical"),
        out,
    );
    true
}
