//! Fleet rollouts, the operator's side (issue #15): `switchyard fleet
//! status|halt|resume|revert`.
//!
//! There is no coordinator: the fleet's state is the ledger (GitHub
//! Deployments, through [`Ledger`]) plus each release's signed plan. `status`
//! reads both and works out what every host can also work out: who is in
//! which wave, which wave is open, when the next opens, whether the rollout
//! is halted. `halt`, `resume` and `revert` post a control action to the
//! ledger, which every agent reads at its next poll, and record it in the
//! audit log of the host the command ran on.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::AppConfig;
use crate::ops::error::DeployError;
pub(crate) use crate::ops::fleet_error::FleetError;
use crate::ops::session::Session;
use crate::source::ReleaseSource;
use crate::source::ledger::{
    Attempt, AttemptState, Control, ControlAction, ControlPayload, Ledger, LedgerError, Scope,
    Snapshot,
};
use crate::store::state::new_id;
use crate::verify::rollout::{self, Plan, Start};
use crate::version::{Version, VersionRequest};

/// The most snapshots one full read takes: each reads at most
/// `MAX_STATUS_READS` statuses, so a fleet of a few hundred hosts is read
/// whole; beyond, the states not read yet show as `pending`.
const MAX_ROUNDS: usize = 64;

/// A wave of the plan, as `fleet status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WaveView {
    /// From 1.
    pub wave: usize,
    /// The labels it takes (`hosts = [...]`).
    pub labels: Vec<String>,
    /// The share of buckets it covers, cumulative (`percent = N`).
    pub percent: Option<u32>,
    /// When it opens (none: it waits for the first canary success).
    pub opens_at: Option<Timestamp>,
    /// Open now.
    pub open: bool,
    /// Hosts of this wave the ledger knows, by their latest state.
    pub hosts: BTreeMap<String, usize>,
}

/// One host's rollout of the release, from its latest attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostView {
    /// Its fleet id.
    pub host_id: String,
    /// Its name.
    pub hostname: String,
    /// Its wave, from 1.
    pub wave: usize,
    /// Its latest attempt's state.
    pub state: AttemptState,
    /// That state's description (a failure's reason).
    pub description: Option<String>,
    /// When it reached that state (the attempt's creation if never read).
    pub since: Timestamp,
    /// Seconds from `since` to now.
    pub age_secs: i64,
    /// Its attempts at the release.
    pub attempts: usize,
    /// Of which failed.
    pub failures: usize,
}

/// Why the rollout is halted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HaltView {
    /// `operator` (a halt or revert in force) or `failures`.
    pub cause: String,
    /// `halt` or `revert` for an operator's halt.
    pub action: Option<ControlAction>,
    /// Who (the operator's user, or `max_failures`).
    pub by: String,
    /// Where the command ran.
    pub host: Option<String>,
    /// Why.
    pub reason: String,
    /// Since when.
    pub at: Option<Timestamp>,
}

/// The next wave to open.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NextWave {
    /// From 1.
    pub wave: usize,
    /// When (none: after the first canary success).
    pub opens_at: Option<Timestamp>,
    /// Seconds from now.
    pub in_secs: Option<i64>,
}

/// `switchyard fleet status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FleetStatus {
    /// The app.
    pub app: String,
    /// The release.
    pub version: Version,
    /// Its tag.
    pub tag: String,
    /// The GitHub environment of its deployments.
    pub environment: String,
    /// The ledger, described.
    pub ledger: String,
    /// The time the view was computed at.
    pub now: Timestamp,
    /// The plan is signed and valid.
    pub plan: bool,
    /// Why the plan is refused (agents then refuse the release).
    pub plan_error: Option<String>,
    /// `published` or `canary_success`.
    pub start: Option<Start>,
    /// When the waves' clock started: the publication, or the first canary
    /// success for `canary_success`.
    pub started_at: Option<Timestamp>,
    /// The plan's `max_failures`.
    pub max_failures: Option<usize>,
    /// Hosts whose latest attempt failed or errored at some point.
    pub failures: usize,
    /// Halted (an operator's halt or revert, or `max_failures` reached).
    pub halted: bool,
    /// Why, when halted.
    pub halt: Option<HaltView>,
    /// The control action in force (halt, resume, revert), if any.
    pub control: Option<Control>,
    /// Newer control actions the agents ignore (a resume or revert from a
    /// GitHub login not in `operators`), newest first.
    pub ignored: Vec<Control>,
    /// The app's `operators`: whose resume and revert count.
    pub operators: Vec<String>,
    /// The highest open wave, from 1.
    pub open_wave: Option<usize>,
    /// The next wave to open.
    pub next_wave: Option<NextWave>,
    /// The plan's waves.
    pub waves: Vec<WaveView>,
    /// Every host with an attempt, by wave then host id.
    pub hosts: Vec<HostView>,
    /// Requests the read cost.
    pub requests: u32,
}

/// What `fleet halt|resume|revert` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ControlReport {
    /// The app.
    pub app: String,
    /// The release.
    pub version: Version,
    /// Its tag.
    pub tag: String,
    /// The GitHub environment.
    pub environment: String,
    /// The ledger, described.
    pub ledger: String,
    /// What was posted.
    #[serde(flatten)]
    pub payload: ControlPayload,
    /// The control deployment's id.
    pub control_id: u64,
    /// The control action in force before.
    pub previous: Option<Control>,
    /// Failed hosts and the plan's limit: a resume does not lift the
    /// automatic halt of a rollout with too many failures.
    pub failures: usize,
}

/// The ledger of a fleet app, or why it has none.
pub(crate) fn ledger_of(cfg: &AppConfig) -> Result<Box<dyn Ledger>, FleetError> {
    let not = || FleetError::NotConfigured {
        app: cfg.name.clone(),
    };
    if cfg.fleet.is_none() {
        return Err(not());
    }
    crate::source::ledger_github::for_app(cfg).ok_or_else(not)
}

/// The release and the ledger's scope of it.
fn scope_of(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    version: Option<&Version>,
) -> Result<(crate::source::ReleaseInfo, Scope), DeployError> {
    let req = match version {
        Some(v) => VersionRequest::Exact(v.clone()),
        None => VersionRequest::Latest,
    };
    let info = source.resolve(&req, crate::source::include_prereleases(cfg))?;
    let environment = cfg
        .fleet
        .as_ref()
        .map(|f| f.environment.clone())
        .unwrap_or_default();
    let scope = Scope {
        environment,
        tag: info.tag.clone(),
    };
    Ok((info, scope))
}

/// Reads the whole ledger of `scope`: snapshots until every attempt's state
/// was read (each snapshot reads a bounded number of statuses).
fn read_all(ledger: &dyn Ledger, scope: &Scope) -> Result<Snapshot, LedgerError> {
    let mut snap = ledger.snapshot(scope)?;
    let mut requests = snap.requests;
    for _ in 1..MAX_ROUNDS {
        let unread = snap
            .attempts
            .iter()
            .filter(|a| a.state_at.is_none())
            .count();
        if unread == 0 {
            break;
        }
        let next = ledger.snapshot(scope)?;
        requests += next.requests;
        let still = next
            .attempts
            .iter()
            .filter(|a| a.state_at.is_none())
            .count();
        snap = next;
        // An attempt with no status at all stays unread: stop when no
        // snapshot makes progress any more.
        if still >= unread {
            break;
        }
    }
    snap.requests = requests;
    Ok(snap)
}

/// The release's publication time.
fn published(info: &crate::source::ReleaseInfo) -> Option<Timestamp> {
    info.published_at
        .as_deref()
        .and_then(|p| p.parse::<Timestamp>().ok())
}

/// `switchyard fleet status`.
pub(crate) fn status(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    version: Option<&Version>,
    now: Timestamp,
) -> Result<FleetStatus, DeployError> {
    let ledger = ledger_of(cfg)?;
    let (info, scope) = scope_of(cfg, source, version)?;
    let (plan, plan_error) = match rollout::plan_of(cfg, source, &info) {
        Ok(p) => (p, None),
        Err(e) => (None, Some(crate::chain::chain(&e))),
    };
    let snap = read_all(ledger.as_ref(), &scope).map_err(|source| FleetError::Read {
        app: cfg.name.clone(),
        version: info.version.to_string(),
        ledger: ledger.describe(),
        source,
    })?;
    let mut v = view(
        &cfg.name,
        &info,
        &scope,
        ledger.describe(),
        plan,
        plan_error,
        &snap,
        now,
    );
    v.operators = cfg
        .fleet
        .as_ref()
        .map(|f| f.operators.clone())
        .unwrap_or_default();
    Ok(v)
}

/// The status computed from what was read.
#[allow(clippy::too_many_arguments)]
fn view(
    app: &str,
    info: &crate::source::ReleaseInfo,
    scope: &Scope,
    ledger: String,
    plan: Option<Plan>,
    plan_error: Option<String>,
    snap: &Snapshot,
    now: Timestamp,
) -> FleetStatus {
    let hosts = hosts(&snap.attempts, now);
    let failures = snap.failures();
    let published = published(info);
    let first_success = snap.first_canary_success();
    let start = plan.as_ref().and_then(|p| match p.start {
        Start::Published => published,
        Start::CanarySuccess => first_success,
    });
    let mut waves = Vec::new();
    let mut open_wave = None;
    let mut next_wave = None;
    if let Some(p) = &plan {
        for (k, w) in p.waves.iter().enumerate() {
            let at = p.wave_opens_at(k, published, first_success);
            let open = at.is_some_and(|t| t <= now);
            if open {
                open_wave = Some(k + 1);
            } else if next_wave.is_none() {
                next_wave = Some(NextWave {
                    wave: k + 1,
                    opens_at: at,
                    in_secs: at.map(|t| t.as_second() - now.as_second()),
                });
            }
            let mut by_state = BTreeMap::new();
            for h in hosts.iter().filter(|h| h.wave == k + 1) {
                *by_state.entry(h.state.as_str().to_string()).or_insert(0) += 1;
            }
            waves.push(WaveView {
                wave: k + 1,
                labels: w.hosts.clone(),
                percent: w.percent,
                opens_at: at,
                open,
                hosts: by_state,
            });
        }
    }
    let max_failures = plan.as_ref().map(|p| p.max_failures);
    let halt = match (&snap.control, max_failures) {
        (Some(c), _) if c.halts() => Some(HaltView {
            cause: "operator".into(),
            action: Some(c.payload.action),
            by: c.payload.by.clone(),
            host: Some(c.payload.host.clone()),
            reason: c.payload.reason.clone(),
            at: Some(c.at),
        }),
        (_, Some(m)) if failures >= m => Some(HaltView {
            cause: "failures".into(),
            action: None,
            by: "max_failures".into(),
            host: None,
            reason: format!("{failures} hosts failed (max_failures = {m})"),
            at: snap
                .attempts
                .iter()
                .filter(|a| a.state.is_failure())
                .filter_map(|a| a.state_at)
                .max(),
        }),
        _ => None,
    };
    FleetStatus {
        app: app.to_string(),
        version: info.version.clone(),
        tag: scope.tag.clone(),
        environment: scope.environment.clone(),
        ledger,
        now,
        plan: plan.is_some(),
        plan_error,
        start: plan.as_ref().map(|p| p.start),
        started_at: start,
        max_failures,
        failures,
        halted: halt.is_some(),
        halt,
        control: snap.control.clone(),
        ignored: snap.ignored.clone(),
        operators: Vec::new(),
        open_wave,
        next_wave,
        waves,
        hosts,
        requests: snap.requests,
    }
}

/// One row per host, from its newest attempt (attempts come newest first).
fn hosts(attempts: &[Attempt], now: Timestamp) -> Vec<HostView> {
    let mut by_host: BTreeMap<&str, HostView> = BTreeMap::new();
    for a in attempts {
        let failed = usize::from(a.state.is_failure());
        match by_host.get_mut(a.payload.host_id.as_str()) {
            Some(h) => {
                h.attempts += 1;
                h.failures += failed;
            }
            None => {
                let since = a.state_at.unwrap_or(a.created_at);
                by_host.insert(
                    &a.payload.host_id,
                    HostView {
                        host_id: a.payload.host_id.clone(),
                        hostname: a.payload.hostname.clone(),
                        wave: a.payload.wave,
                        state: a.state,
                        description: a.description.clone(),
                        since,
                        age_secs: (now.as_second() - since.as_second()).max(0),
                        attempts: 1,
                        failures: failed,
                    },
                );
            }
        }
    }
    let mut out: Vec<HostView> = by_host.into_values().collect();
    out.sort_by(|a, b| a.wave.cmp(&b.wave).then(a.host_id.cmp(&b.host_id)));
    out
}

/// This machine's name, for the control action's `host`.
fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// What a control command asks.
#[derive(Debug, Clone)]
pub(crate) struct ControlAsk<'a> {
    /// Halt, resume or revert.
    pub action: ControlAction,
    /// The release.
    pub version: &'a Version,
    /// Why (resume: optional, a default is said).
    pub reason: Option<&'a str>,
    /// A revert outside each host's window.
    pub now: bool,
}

/// `fleet halt|resume|revert`: posts the control action to the ledger,
/// then records it in this host's audit log under the app's lock (`open`
/// opens the session). Posting comes first, outside the lock: a halt is the
/// fleet's brake and must not wait for a deploy running here.
pub(super) fn control<'c>(
    cfg: &'c AppConfig,
    source: &dyn ReleaseSource,
    ask: &ControlAsk<'_>,
    user: &str,
    open: impl FnOnce() -> Result<Session<'c>, DeployError>,
) -> Result<ControlReport, DeployError> {
    let started = Instant::now();
    let ledger = ledger_of(cfg)?;
    let (info, scope) = scope_of(cfg, source, Some(ask.version))?;
    let version = info.version.to_string();
    let read_err = |source| FleetError::Read {
        app: cfg.name.clone(),
        version: version.clone(),
        ledger: ledger.describe(),
        source,
    };
    // The state before, for the operator's answer (and the audit line).
    let before = ledger.snapshot(&scope).map_err(read_err)?;
    let reason = ask.reason.map(str::to_string).unwrap_or_else(|| {
        match ask.action {
            ControlAction::Resume => "resumed by an operator",
            ControlAction::Halt => "halted by an operator",
            ControlAction::Revert => "reverted by an operator",
        }
        .to_string()
    });
    let operators = cfg.fleet.as_ref().map_or(&[][..], |f| &f.operators[..]);
    if ask.action != ControlAction::Halt && operators.is_empty() {
        warn!(app = %cfg.name, version = %version, action = %ask.action, "apps.{}.fleet.operators is empty: the agents obey this {} from nobody and it lifts no halt; posting it anyway (it counts once its token's GitHub login is listed there)", cfg.name, ask.action);
    }
    let payload = ControlPayload {
        action: ask.action,
        reason,
        by: user.to_string(),
        host: this_host(),
        now: ask.now && ask.action == ControlAction::Revert,
    };
    let id = ledger
        .post_control(&scope, &payload)
        .map_err(|source| FleetError::Post {
            action: ask.action,
            app: cfg.name.clone(),
            version: version.clone(),
            ledger: ledger.describe(),
            source,
        })?;
    info!(app = %cfg.name, version = %version, action = %ask.action, by = %payload.by, reason = %payload.reason, control = id, "fleet control action posted; every agent reads it at its next poll");
    let report = ControlReport {
        app: cfg.name.clone(),
        version: info.version.clone(),
        tag: scope.tag.clone(),
        environment: scope.environment.clone(),
        ledger: ledger.describe(),
        payload,
        control_id: id,
        previous: before.control.clone(),
        failures: before.failures(),
    };
    let record = || -> Result<(), DeployError> {
        let s = open()?;
        let mut details = serde_json::Map::new();
        details.insert("reason".into(), report.payload.reason.clone().into());
        details.insert("environment".into(), report.environment.clone().into());
        details.insert("tag".into(), report.tag.clone().into());
        details.insert("control_id".into(), id.into());
        details.insert("now".into(), report.payload.now.into());
        if let Some(p) = &report.previous {
            details.insert("replaces".into(), p.payload.action.as_str().into());
        }
        let event = s.make_event(
            &format!("fleet.{}", ask.action),
            &new_id(),
            None,
            Some(version.clone()),
            "ok",
            started,
            None,
            details,
        );
        s.record(event)
    };
    record().map_err(|e| FleetError::Unrecorded {
        action: ask.action,
        app: cfg.name.clone(),
        version,
        ledger: report.ledger.clone(),
        id,
        source: Box::new(e),
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ledger::AttemptPayload;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn attempt(id: u64, host: &str, wave: usize, state: AttemptState, at: &str) -> Attempt {
        Attempt {
            id,
            payload: AttemptPayload {
                host_id: host.into(),
                hostname: host.into(),
                app: "web".into(),
                version: "1.0.0".into(),
                wave,
            },
            created_at: t(at),
            state,
            description: None,
            state_at: Some(t(at)),
        }
    }

    fn plan(start: Start) -> Plan {
        let toml = format!(
            "[rollout]\nstart = \"{}\"\nwaves = [{{ hosts = [\"canary\"] }}, {{ percent = 10, after = \"30m\" }}, {{ percent = 100, after = \"2h\" }}]\nmax_failures = 2\n",
            match start {
                Start::Published => "published",
                Start::CanarySuccess => "canary_success",
            }
        );
        rollout::plan_from_toml(toml.as_bytes()).unwrap().unwrap()
    }

    fn info() -> crate::source::ReleaseInfo {
        crate::source::ReleaseInfo {
            version: Version::parse("1.0.0").unwrap(),
            tag: "v1.0.0".into(),
            prerelease: false,
            published_at: Some("2026-03-02T00:00:00Z".into()),
            notes: None,
        }
    }

    fn status_at(start: Start, snap: &Snapshot, now: &str) -> FleetStatus {
        let scope = Scope {
            environment: "production".into(),
            tag: "v1.0.0".into(),
        };
        view(
            "web",
            &info(),
            &scope,
            "ledger".into(),
            Some(plan(start)),
            None,
            snap,
            t(now),
        )
    }

    #[test]
    fn waves_open_from_the_publication() {
        let snap = Snapshot::default();
        let s = status_at(Start::Published, &snap, "2026-03-02T00:45:00Z");
        assert_eq!(s.open_wave, Some(2));
        let next = s.next_wave.unwrap();
        assert_eq!(next.wave, 3);
        assert_eq!(next.opens_at, Some(t("2026-03-02T02:30:00Z")));
        assert_eq!(next.in_secs, Some(105 * 60));
        assert!(!s.halted);
    }

    #[test]
    fn canary_success_plans_wait_for_the_first_canary() {
        let mut snap = Snapshot::default();
        let s = status_at(Start::CanarySuccess, &snap, "2026-03-02T05:00:00Z");
        assert_eq!(s.open_wave, Some(1), "only the canaries, however late");
        assert_eq!(s.next_wave.as_ref().unwrap().opens_at, None);
        snap.attempts = vec![
            attempt(2, "c2", 1, AttemptState::Success, "2026-03-02T01:10:00Z"),
            attempt(1, "c1", 1, AttemptState::Success, "2026-03-02T01:00:00Z"),
        ];
        let s = status_at(Start::CanarySuccess, &snap, "2026-03-02T01:20:00Z");
        assert_eq!(s.started_at, Some(t("2026-03-02T01:00:00Z")));
        assert_eq!(s.open_wave, Some(1));
        assert_eq!(
            s.next_wave.unwrap().opens_at,
            Some(t("2026-03-02T01:30:00Z"))
        );
    }

    #[test]
    fn halts_name_their_cause_and_hosts_their_latest_attempt() {
        let mut snap = Snapshot {
            attempts: vec![
                attempt(3, "h1", 2, AttemptState::Failure, "2026-03-02T01:00:00Z"),
                attempt(2, "h2", 2, AttemptState::Success, "2026-03-02T00:50:00Z"),
                attempt(1, "h1", 2, AttemptState::Success, "2026-03-02T00:40:00Z"),
            ],
            ..Snapshot::default()
        };
        let s = status_at(Start::Published, &snap, "2026-03-02T01:00:30Z");
        assert!(!s.halted, "one failed host of two allowed");
        let h1 = s.hosts.iter().find(|h| h.host_id == "h1").unwrap();
        assert_eq!(
            (h1.state, h1.attempts, h1.failures, h1.age_secs),
            (AttemptState::Failure, 2, 1, 30)
        );
        snap.attempts.push(attempt(
            0,
            "h3",
            2,
            AttemptState::Error,
            "2026-03-02T00:30:00Z",
        ));
        let s = status_at(Start::Published, &snap, "2026-03-02T01:00:30Z");
        assert!(s.halted);
        assert_eq!(s.halt.unwrap().cause, "failures");
        snap.control = Some(Control {
            id: 9,
            payload: ControlPayload {
                action: ControlAction::Halt,
                reason: "error rate".into(),
                by: "alice".into(),
                host: "ops1".into(),
                now: false,
            },
            creator: "alice".into(),
            at: t("2026-03-02T01:00:00Z"),
        });
        let h = status_at(Start::Published, &snap, "2026-03-02T01:00:30Z")
            .halt
            .unwrap();
        assert_eq!((h.cause.as_str(), h.by.as_str()), ("operator", "alice"));
    }
}
