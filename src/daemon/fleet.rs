//! Fleet rollouts in the agent (issue #15): before an automatic deploy of a
//! release that carries a signed rollout plan, the host reads the fleet's
//! ledger once and deploys only when its wave is open, the rollout is not
//! halted (by an operator, or by `max_failures` failed hosts) and the ledger
//! could be read at all; it records its attempt there (`in_progress`, then
//! `success` or `failure`, and `inactive` once a later version replaces it).
//! A host with the version live obeys a fleet `revert`. Holds, failure
//! memory, windows and auto levels apply as before, around this.
//!
//! The ledger is never bypassed: a host that cannot read it deploys no
//! planned release that poll, and a status it cannot post is kept in the
//! agent's memory and posted at a later poll.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::config::fleet::FleetConfig;
use crate::daemon::{OpOutcome, run_op};
use crate::ops::api::{Caller, Request};
use crate::source::ledger::{AttemptPayload, AttemptState, ControlAction, Ledger, Scope, Snapshot};
use crate::source::{ReleaseInfo, ReleaseSource};
use crate::store::agent::{AgentMemory, FleetView, LiveAttempt, PendingStatus};
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::verify::rollout::{self, Plan};
use crate::version::Version;

/// What the fleet says about deploying a release now.
pub(crate) enum Gate {
    /// Not a fleet app, or the release has no plan: deploy as before.
    Free,
    /// The host's wave is open: deploy, recording the attempt.
    Go(Attempting),
    /// Not now: look again at `until`, or at the next poll.
    NotNow {
        /// When the host's wave opens, if that is what it waits for.
        until: Option<Timestamp>,
    },
}

/// An attempt about to be made.
pub(crate) struct Attempting {
    scope: Scope,
    payload: AttemptPayload,
}

/// The app's fleet settings and ledger, when it rolls out as a fleet.
pub(crate) struct FleetApp<'a> {
    cfg: &'a AppConfig,
    fleet: &'a FleetConfig,
    ledger: &'a dyn Ledger,
    paths: AppPaths,
}

impl<'a> FleetApp<'a> {
    /// `Some` for an app with `[apps.<name>.fleet]` and a ledger.
    pub(crate) fn of(cfg: &'a AppConfig, ledger: Option<&'a Arc<dyn Ledger>>) -> Option<Self> {
        Some(FleetApp {
            cfg,
            fleet: cfg.fleet.as_ref()?,
            ledger: ledger?.as_ref(),
            paths: AppPaths::new(&cfg.root),
        })
    }

    fn memory(&self) -> AgentMemory {
        AgentMemory::load(&self.paths).unwrap_or_default()
    }

    fn save(&self, mem: &AgentMemory) {
        if let Err(e) = mem.save(&self.paths) {
            warn!(app = %self.cfg.name, error = %crate::chain::chain(&e), "cannot save the agent's memory; an unsent ledger status may be lost");
        }
    }

    fn scope(&self, tag: &str) -> Scope {
        Scope {
            environment: self.fleet.environment.clone(),
            tag: tag.to_string(),
        }
    }

    /// Posts the statuses earlier polls could not, oldest first; stops at
    /// the first that fails again (GitHub is still down).
    pub(crate) fn flush_pending(&self) {
        let mut mem = self.memory();
        if mem.fleet_pending.is_empty() {
            return;
        }
        let before = mem.fleet_pending.len();
        while let Some(p) = mem.fleet_pending.first().cloned() {
            match self.ledger.post_state(p.attempt, p.state, &p.description) {
                Ok(()) => {
                    mem.fleet_pending.remove(0);
                }
                Err(e) => {
                    warn!(app = %self.cfg.name, error = %crate::chain::chain(&e), pending = mem.fleet_pending.len(), "the ledger still cannot take the kept statuses; trying again at the next poll");
                    break;
                }
            }
        }
        if mem.fleet_pending.len() != before {
            info!(app = %self.cfg.name, sent = before - mem.fleet_pending.len(), "posted ledger statuses kept from earlier polls");
            self.save(&mem);
        }
    }

    /// Posts a status, keeping it for a later poll when it cannot be posted.
    fn post(&self, attempt: u64, state: AttemptState, description: &str) {
        if let Err(e) = self.ledger.post_state(attempt, state, description) {
            warn!(app = %self.cfg.name, state = %state, error = %crate::chain::chain(&e), "cannot post to the ledger; kept, and posted at the next poll");
            let mut mem = self.memory();
            mem.fleet_pending.push(PendingStatus {
                attempt,
                state,
                description: description.to_string(),
            });
            self.save(&mem);
        }
    }

    /// Records what this poll saw, logging a new reason not to deploy once
    /// (at info), and a repeated one at debug.
    fn note(&self, view: FleetView, out: &mut OpOutcome) {
        let mut mem = self.memory();
        let said_before = mem
            .fleet
            .as_ref()
            .is_some_and(|old| old.version == view.version && old.blocked == view.blocked);
        if let Some(why) = &view.blocked {
            if said_before {
                debug!(app = %self.cfg.name, version = %view.version, "fleet: still not deploying: {why}");
            } else {
                info!(app = %self.cfg.name, version = %view.version, wave = view.wave, "fleet: not deploying: {why}");
            }
        }
        out.fleet = Some(view.clone());
        mem.fleet = Some(view);
        self.save(&mem);
    }

    /// Whether (and when) this host may deploy `info`.
    pub(crate) fn gate(
        &self,
        source: &dyn ReleaseSource,
        info: &ReleaseInfo,
        now: Timestamp,
        out: &mut OpOutcome,
    ) -> Gate {
        let app = &self.cfg.name;
        let v = info.version.to_string();
        let plan = match plan_cached(self.cfg, source, info) {
            Ok(Some(p)) => p,
            Ok(None) => return Gate::Free,
            Err(e) => {
                // A plan that is not signed, or not readable: never deploy
                // around it.
                warn!(app = %app, version = %v, error = %crate::chain::chain(&e), "fleet: the release's rollout plan is refused; not deploying it");
                return Gate::NotNow { until: None };
            }
        };
        let host_id = match self.fleet.host_id(app) {
            Ok(h) => h,
            Err(e) => {
                warn!(app = %app, error = %crate::chain::chain(&e), "fleet: no host id; not deploying planned releases");
                return Gate::NotNow { until: None };
            }
        };
        let bucket = rollout::bucket(&host_id, app, &v);
        let wave = plan.wave_of(&self.fleet.labels, bucket);
        let mut view = FleetView {
            version: v.clone(),
            host_id: host_id.clone(),
            bucket,
            wave: wave + 1,
            waves: plan.waves.len(),
            opens_at: None,
            open: false,
            failures: 0,
            max_failures: plan.max_failures,
            blocked: None,
            halted: false,
            at: now.to_string(),
        };
        let scope = self.scope(&info.tag);
        let snap = match self.ledger.snapshot(&scope) {
            Ok(s) => s,
            Err(e) => {
                view.blocked = Some(format!(
                    "cannot read {} ({}); no wave advances without the ledger",
                    self.ledger.describe(),
                    crate::chain::chain(&e)
                ));
                self.note(view, out);
                return Gate::NotNow { until: None };
            }
        };
        debug!(app = %app, version = %v, requests = snap.requests, attempts = snap.attempts.len(), "fleet: read the ledger");
        view.failures = snap.failures();
        if let Some(c) = snap.control.as_ref().filter(|c| c.halts()) {
            view.halted = true;
            view.blocked = Some(format!(
                "the rollout is {} by {} on {} at {}: {}",
                if c.payload.action == ControlAction::Revert {
                    "reverted"
                } else {
                    "halted"
                },
                c.payload.by,
                c.payload.host,
                c.at,
                c.payload.reason
            ));
        } else if view.failures >= plan.max_failures {
            view.halted = true;
            view.blocked = Some(format!(
                "the rollout halted itself: {} host(s) failed, max_failures is {}",
                view.failures, plan.max_failures
            ));
        }
        if view.halted {
            self.note(view, out);
            return Gate::NotNow { until: None };
        }
        let opens = self.opens_at(&plan, wave, info, &snap);
        view.opens_at = opens.map(|t| t.to_string());
        view.open = opens.is_some_and(|t| t <= now);
        if !view.open {
            let said = self.memory().fleet.is_some_and(|old| {
                old.version == view.version && !old.open && old.opens_at == view.opens_at
            });
            match opens {
                _ if said => {
                    debug!(app = %app, version = %v, wave = wave + 1, "fleet: still waiting for this host's wave")
                }
                Some(t) => {
                    info!(app = %app, version = %v, wave = wave + 1, bucket, opens_at = %t, "fleet: waiting for this host's wave to open")
                }
                None => {
                    info!(app = %app, version = %v, wave = wave + 1, "fleet: waiting for a first-wave host to succeed")
                }
            }
            self.note(view, out);
            return Gate::NotNow { until: opens };
        }
        self.note(view, out);
        Gate::Go(Attempting {
            scope,
            payload: AttemptPayload {
                host_id,
                hostname: hostname(),
                app: app.clone(),
                version: v,
                wave: wave + 1,
            },
        })
    }

    /// When wave `k` opens: `None` while a `canary_success` plan waits for
    /// its first success.
    fn opens_at(
        &self,
        plan: &Plan,
        k: usize,
        info: &ReleaseInfo,
        snap: &Snapshot,
    ) -> Option<Timestamp> {
        let published = info
            .published_at
            .as_deref()
            .and_then(|p| p.parse::<Timestamp>().ok())
            .or_else(|| {
                self.memory()
                    .first_seen
                    .get(&info.version.to_string())
                    .and_then(|t| t.parse().ok())
            })?;
        plan.wave_opens_at(k, Some(published), snap.first_canary_success())
    }

    /// Records the attempt before the deploy; `None`: the ledger refused it,
    /// so the host does not deploy this poll.
    pub(crate) fn begin(&self, a: &Attempting) -> Option<u64> {
        match self.ledger.create_attempt(&a.scope, &a.payload) {
            Ok(id) => {
                info!(app = %self.cfg.name, version = %a.payload.version, wave = a.payload.wave, deployment = id, "fleet: attempt recorded in the ledger");
                Some(id)
            }
            Err(e) => {
                warn!(app = %self.cfg.name, version = %a.payload.version, error = %crate::chain::chain(&e), "fleet: cannot record the attempt in the ledger; not deploying this poll");
                None
            }
        }
    }

    /// Records the attempt's outcome: `success` (and `inactive` on this
    /// host's attempt of the version it replaced), or `failure` with the
    /// reason, redacted as failure reports are.
    pub(crate) fn finish(&self, a: &Attempting, id: u64, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.post(
                    id,
                    AttemptState::Success,
                    &format!("live on {}", a.payload.hostname),
                );
                let mut mem = self.memory();
                let previous = mem.fleet_live.replace(LiveAttempt {
                    version: a.payload.version.clone(),
                    attempt: id,
                });
                self.save(&mem);
                if let Some(p) = previous.filter(|p| p.attempt != id) {
                    self.post(
                        p.attempt,
                        AttemptState::Inactive,
                        &format!(
                            "replaced by {} on {}",
                            a.payload.version, a.payload.hostname
                        ),
                    );
                }
            }
            Err(reason) => {
                let text = crate::daemon::report::redact(&reason);
                self.post(id, AttemptState::Failure, &self.with_excerpt(text));
            }
        }
    }

    /// A failure's reason and the last line its hooks wrote, both redacted,
    /// within GitHub's 140 characters: the reason keeps the first 90 when a
    /// log line follows it.
    fn with_excerpt(&self, reason: String) -> String {
        let id = crate::store::state::AppState::load(&self.paths)
            .ok()
            .and_then(|st| st.deploy)
            .map(|d| d.id);
        let line = id.and_then(|id| {
            crate::daemon::report::last_log_line(&self.cfg.root, &self.cfg.name, &id)
        });
        match line {
            Some(l) => format!("{} | log: {l}", crate::source::ledger::clip(&reason, 90)),
            None => reason,
        }
    }

    /// For the live version: obeys a fleet `revert` of it (inside the
    /// window unless the control says `now`). Returns true when it acted
    /// or waits.
    pub(crate) fn watch_live(
        &self,
        source: &dyn ReleaseSource,
        releases: &[ReleaseInfo],
        current: Option<&Version>,
        clock: &Arc<dyn Clock>,
        out: &mut OpOutcome,
    ) -> bool {
        let Some(v) = current else { return false };
        let Some(info) = releases.iter().find(|r| &r.version == v) else {
            return false;
        };
        let control = match self.ledger.control(&self.scope(&info.tag)) {
            Ok(c) => c,
            Err(e) => {
                debug!(app = %self.cfg.name, version = %v, error = %crate::chain::chain(&e), "fleet: cannot read the live version's control state");
                return false;
            }
        };
        let Some(c) = control.filter(|c| c.payload.action == ControlAction::Revert) else {
            return false;
        };
        if !c.payload.now
            && let crate::daemon::policy::Decision::WaitUntil(t) =
                crate::daemon::policy::decide(self.cfg.agent.window.as_ref(), None, clock.now())
        {
            info!(app = %self.cfg.name, version = %v, until = %t, by = %c.payload.by, "fleet: a revert of the live version waits for the window");
            out.wait_until = Some(t);
            return true;
        }
        info!(app = %self.cfg.name, version = %v, by = %c.payload.by, reason = %c.payload.reason, step = %"revert", "fleet: reverting the live version as the fleet's operator asked");
        let req = Request::Revert {
            app: self.cfg.name.clone(),
            to: None,
            seen: None,
            reason: None,
        };
        let caller = Caller {
            clock: clock.clone(),
            actor: Actor {
                user: format!("fleet:{}", c.payload.by),
                uid: None,
                reason: None,
            },
            wait: true,
            automatic: false,
        };
        if run_op(self.cfg, source, &req, &caller, out).is_ok() {
            let mut mem = self.memory();
            if let Some(live) = mem.fleet_live.take() {
                self.save(&mem);
                self.post(
                    live.attempt,
                    AttemptState::Inactive,
                    &format!(
                        "reverted (fleet revert by {}): {}",
                        c.payload.by, c.payload.reason
                    ),
                );
            }
        }
        true
    }

    /// A host held by a fleet revert is released when the version it was
    /// reverted from is no longer halted (`fleet resume`, or a newer release
    /// to roll out). Returns true when it lifted the hold.
    pub(crate) fn release_fleet_hold(
        &self,
        source: &dyn ReleaseSource,
        newest: &ReleaseInfo,
        clock: &Arc<dyn Clock>,
        out: &mut OpOutcome,
    ) -> bool {
        let control = match self.ledger.control(&self.scope(&newest.tag)) {
            Ok(c) => c,
            Err(_) => return false,
        };
        if control.as_ref().is_some_and(|c| c.halts()) {
            return false;
        }
        let by = control.map_or_else(
            || "fleet".to_string(),
            |c| format!("fleet:{}", c.payload.by),
        );
        info!(app = %self.cfg.name, version = %newest.version, by = %by, "fleet: the rollout is no longer halted; lifting the hold a fleet revert set");
        let caller = Caller {
            clock: clock.clone(),
            actor: Actor {
                user: by,
                uid: None,
                reason: None,
            },
            wait: true,
            automatic: false,
        };
        let req = Request::Unhold {
            app: self.cfg.name.clone(),
        };
        run_op(self.cfg, source, &req, &caller, out).is_ok()
    }
}

/// Plans already read and verified, by app, tag and publication time: a
/// release's signed `release.toml` does not change, so it is downloaded
/// once per agent, not at every poll.
static PLANS: std::sync::Mutex<BTreeMap<String, Option<Plan>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn plan_cached(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    info: &ReleaseInfo,
) -> Result<Option<Plan>, rollout::RolloutError> {
    let key = format!(
        "{}\0{}\0{}",
        cfg.name,
        info.tag,
        info.published_at.as_deref().unwrap_or("")
    );
    let cached = PLANS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    if let Some(p) = cached {
        return Ok(p);
    }
    let p = rollout::plan_of(cfg, source, info)?;
    PLANS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, p.clone());
    Ok(p)
}

/// This host's name, for people reading the ledger.
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}
