//! The agent's Prometheus metrics, encoded by `prometheus-client` in the
//! text format 0.0.4 for `GET /metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `Content-Type` of `GET /metrics`: the Prometheus text format 0.0.4, in
/// UTF-8 because app names and versions in label values may not be ASCII.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the health-check latency histogram: checks
/// answer in milliseconds when healthy and hit their timeouts (seconds) when
/// not, so the buckets span both.
const HEALTH_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Webhook outcomes exported at 0 from the start, so that `rate()` and
/// `increase()` see the first delivery of each kind.
pub(crate) const WEBHOOK_OUTCOMES: [&str; 7] = [
    "accepted",
    "bad_request",
    "duplicate",
    "ignored",
    "ping",
    "too_large",
    "unauthorized",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppVersion {
    app: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcome {
    app: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppTrigger {
    app: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// Deploy outcomes every configured app exports at 0 from the start.
pub(crate) const DEPLOY_OUTCOMES: [&str; 5] = [
    "completed",
    "failed",
    "precheck_failed",
    "rollback_failed",
    "rolled_back",
];

/// Revert triggers: a failed deploy undone, or an operator's `revert`.
pub(crate) const REVERT_TRIGGERS: [&str; 2] = ["auto", "manual"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppPhase {
    app: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

type HealthFamily = Family<AppPhase, Histogram, fn() -> Histogram>;

fn health_histogram() -> Histogram {
    Histogram::new(HEALTH_BUCKETS)
}

/// The label values in use for one app: a `Family` cannot list or drop
/// series by a label, and `forget_app` and `set_current_version` must.
#[derive(Debug, Default)]
struct AppSeries {
    version: Option<String>,
    outcomes: BTreeSet<String>,
    phases: BTreeSet<String>,
}

/// Thread-safe metrics the agent updates (all methods take `&self`) and
/// `GET /metrics` renders.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    app_info: Family<AppVersion, Gauge>,
    deploys: Family<AppOutcome, Counter>,
    reverts: Family<AppTrigger, Counter>,
    needs_attention: Family<AppLabel, Gauge>,
    maintenance: Family<AppLabel, Gauge>,
    quarantined: Family<AppLabel, Gauge>,
    hold: Family<AppLabel, Gauge>,
    since_poll: Family<AppLabel, Gauge<f64, AtomicU64>>,
    /// When each app's last listing succeeded (or the agent started).
    polls: Mutex<BTreeMap<String, jiff::Timestamp>>,
    last_deploy: Family<AppLabel, Gauge<f64, AtomicU64>>,
    versions_behind: Family<AppLabel, Gauge<u64, AtomicU64>>,
    health: HealthFamily,
    webhooks: Family<OutcomeLabel, Counter>,
    /// Fleet rollouts: the candidate's wave, bucket, whether the wave is
    /// open, failed hosts seen, halted (by app).
    fleet: [Family<AppLabel, Gauge>; 5],
    /// Held while a series is created together with its index entry, so
    /// `forget_app` never misses one.
    apps: Mutex<BTreeMap<String, AppSeries>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics, with every webhook outcome at 0.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let app_info = Family::default();
        let deploys = Family::default();
        let reverts = Family::default();
        let last_deploy = Family::default();
        let versions_behind = Family::default();
        let health = HealthFamily::new_with_constructor(health_histogram);
        let webhooks = Family::<OutcomeLabel, Counter>::default();
        let needs_attention = Family::default();
        let maintenance = Family::default();
        let quarantined = Family::default();
        let hold = Family::default();
        let since_poll = Family::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "switchyard_build_info",
            "The agent's version and git commit; always 1",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: crate::version::BUILD_COMMIT.to_owned(),
            })
            .set(1);
        registry.register(
            "switchyard_needs_attention",
            "1 while deploys are blocked until `switchyard resolve`",
            needs_attention.clone(),
        );
        registry.register(
            "switchyard_maintenance",
            "1 while the maintenance flag (shared/maintenance.json) is on",
            maintenance.clone(),
        );
        registry.register(
            "switchyard_quarantined_releases",
            "Releases quarantined (not deployed automatically)",
            quarantined.clone(),
        );
        registry.register(
            "switchyard_hold",
            "1 while the app is held (the agent deploys nothing)",
            hold.clone(),
        );
        registry.register(
            "switchyard_seconds_since_last_successful_poll",
            "Seconds since the source last listed the releases (or since the agent started)",
            since_poll.clone(),
        );
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "switchyard_app_info",
            "The version live for each app; always 1",
            app_info.clone(),
        );
        registry.register(
            "switchyard_deploys",
            "Deploys finished, by outcome",
            deploys.clone(),
        );
        registry.register(
            "switchyard_reverts",
            "Reverts, by trigger: auto (a failed deploy undone) or manual (`switchyard revert`)",
            reverts.clone(),
        );
        registry.register(
            "switchyard_last_deploy_timestamp_seconds",
            "When the app's last deploy finished, in Unix seconds",
            last_deploy.clone(),
        );
        registry.register(
            "switchyard_versions_behind",
            "Releases newer than the live one that are available",
            versions_behind.clone(),
        );
        registry.register(
            "switchyard_health_check_seconds",
            "Duration of health-check rounds, by phase",
            health.clone(),
        );
        registry.register(
            "switchyard_webhook_deliveries",
            "GitHub webhook deliveries, by outcome",
            webhooks.clone(),
        );
        for outcome in WEBHOOK_OUTCOMES {
            // Creating the series is the point: it starts at 0.
            let _ = webhooks.get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            });
        }
        let fleet: [Family<AppLabel, Gauge>; 5] = Default::default();
        for (f, (name, help)) in fleet.iter().zip(FLEET_GAUGES) {
            registry.register(name, help, f.clone());
        }
        Metrics {
            fleet,
            registry,
            app_info,
            deploys,
            reverts,
            needs_attention,
            maintenance,
            quarantined,
            hold,
            since_poll,
            polls: Mutex::default(),
            last_deploy,
            versions_behind,
            health,
            webhooks,
            apps: Mutex::default(),
        }
    }

    fn apps(&self) -> MutexGuard<'_, BTreeMap<String, AppSeries>> {
        // The index only ever grows or shrinks by whole entries, so a panic
        // elsewhere while holding the lock cannot have left half a change.
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the version live for `app` (`None`: nothing is live), replacing
    /// its `switchyard_app_info` series.
    pub fn set_current_version(&self, app: &str, version: Option<&str>) {
        let mut apps = self.apps();
        let series = apps.entry(app.to_owned()).or_default();
        if let Some(old) = series.version.take() {
            self.app_info.remove(&AppVersion {
                app: app.to_owned(),
                version: old,
            });
        }
        if let Some(v) = version {
            self.app_info
                .get_or_create(&AppVersion {
                    app: app.to_owned(),
                    version: v.to_owned(),
                })
                .set(1);
            series.version = Some(v.to_owned());
        }
    }

    /// Counts a finished deploy of `app` by its outcome (`completed`,
    /// `failed`, `rolled_back`, `precheck_failed`, ...).
    pub fn deploy_outcome(&self, app: &str, outcome: &str) {
        let mut apps = self.apps();
        apps.entry(app.to_owned())
            .or_default()
            .outcomes
            .insert(outcome.to_owned());
        self.deploys
            .get_or_create(&AppOutcome {
                app: app.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Creates every series of a configured `app` at 0, so that they exist
    /// from the agent's start (and `increase()` sees the first event).
    pub fn init_app(&self, app: &str) {
        let mut apps = self.apps();
        let series = apps.entry(app.to_owned()).or_default();
        for outcome in DEPLOY_OUTCOMES {
            series.outcomes.insert(outcome.to_owned());
            let _ = self.deploys.get_or_create(&AppOutcome {
                app: app.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
        drop(apps);
        for trigger in REVERT_TRIGGERS {
            let _ = self.reverts.get_or_create(&app_trigger(app, trigger));
        }
        let l = app_label(app);
        let _ = self.versions_behind.get_or_create(&l);
        let _ = self.needs_attention.get_or_create(&l);
        let _ = self.maintenance.get_or_create(&l);
        let _ = self.quarantined.get_or_create(&l);
        let _ = self.hold.get_or_create(&l);
        let _ = self.since_poll.get_or_create(&l);
        self.polls_map()
            .entry(app.to_owned())
            .or_insert_with(jiff::Timestamp::now);
    }

    fn polls_map(&self) -> MutexGuard<'_, BTreeMap<String, jiff::Timestamp>> {
        self.polls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a revert of `app` by `trigger` (`auto` or `manual`).
    pub fn revert(&self, app: &str, trigger: &str) {
        self.reverts.get_or_create(&app_trigger(app, trigger)).inc();
    }

    /// Notes that `app`'s source was listed successfully just now.
    pub fn polled(&self, app: &str) {
        self.polls_map()
            .insert(app.to_owned(), jiff::Timestamp::now());
    }

    /// Sets `app`'s state gauges: deploys blocked, maintenance on, how many
    /// releases are quarantined, held.
    pub fn set_app_state(
        &self,
        app: &str,
        needs_attention: bool,
        maintenance: bool,
        quarantined: u64,
        hold: bool,
    ) {
        let l = app_label(app);
        self.needs_attention
            .get_or_create(&l)
            .set(needs_attention.into());
        self.maintenance.get_or_create(&l).set(maintenance.into());
        self.quarantined
            .get_or_create(&l)
            .set(i64::try_from(quarantined).unwrap_or(i64::MAX));
        self.hold.get_or_create(&l).set(hold.into());
    }

    /// Records when `app`'s last deploy finished, in Unix seconds.
    pub fn set_last_deploy(&self, app: &str, unix_seconds: f64) {
        self.last_deploy
            .get_or_create(&app_label(app))
            .set(unix_seconds);
    }

    /// Records where this host stands in the candidate's fleet rollout:
    /// its wave (from 1), its bucket, whether the wave is open, the failed
    /// hosts the ledger shows, whether the rollout is halted.
    pub(crate) fn set_fleet(&self, app: &str, v: &crate::store::agent::FleetView) {
        let values = [
            v.wave as i64,
            v.bucket as i64,
            i64::from(v.open),
            v.failures as i64,
            i64::from(v.halted),
        ];
        for (f, x) in self.fleet.iter().zip(values) {
            f.get_or_create(&app_label(app)).set(x);
        }
    }

    /// Records how many releases newer than the live one are available.
    pub fn set_versions_behind(&self, app: &str, n: u64) {
        self.versions_behind.get_or_create(&app_label(app)).set(n);
    }

    /// Records how long a health-check round of `app` took, in `phase`
    /// (`staging`, `live`). A NaN or infinite duration is dropped: it would
    /// poison the sum forever.
    pub fn observe_health(&self, app: &str, phase: &str, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let mut apps = self.apps();
        apps.entry(app.to_owned())
            .or_default()
            .phases
            .insert(phase.to_owned());
        self.health
            .get_or_create(&AppPhase {
                app: app.to_owned(),
                phase: phase.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    /// Counts a webhook delivery by outcome (`accepted`, `duplicate`,
    /// `ignored`, `unauthorized`, `too_large`, `bad_request`, `ping`; also
    /// `timeout`, `disabled` and `unavailable`).
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Drops every series of `app`, for an app removed from the
    /// configuration: otherwise it would be reported until the agent
    /// restarts.
    pub fn forget_app(&self, app: &str) {
        let mut apps = self.apps();
        let series = apps.remove(app).unwrap_or_default();
        let label = app_label(app);
        if let Some(version) = series.version {
            self.app_info.remove(&AppVersion {
                app: app.to_owned(),
                version,
            });
        }
        for outcome in series.outcomes {
            self.deploys.remove(&AppOutcome {
                app: app.to_owned(),
                outcome,
            });
        }
        for phase in series.phases {
            self.health.remove(&AppPhase {
                app: app.to_owned(),
                phase,
            });
        }
        for trigger in REVERT_TRIGGERS {
            self.reverts.remove(&app_trigger(app, trigger));
        }
        self.last_deploy.remove(&label);
        self.versions_behind.remove(&label);
        self.needs_attention.remove(&label);
        self.maintenance.remove(&label);
        self.quarantined.remove(&label);
        self.hold.remove(&label);
        self.since_poll.remove(&label);
        for f in &self.fleet {
            f.remove(&label);
        }
        self.polls_map().remove(app);
    }

    /// The metrics in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let now = jiff::Timestamp::now();
        for (app, t) in self.polls_map().iter() {
            let secs = now.duration_since(*t).as_secs_f64().max(0.0);
            self.since_poll.get_or_create(&app_label(app)).set(secs);
        }
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; the encoder's error type is
        // only for other writers.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn app_trigger(app: &str, trigger: &str) -> AppTrigger {
    AppTrigger {
        app: app.to_owned(),
        trigger: trigger.to_owned(),
    }
}

/// The fleet gauges, in the order of `Metrics::fleet`.
const FLEET_GAUGES: [(&str, &str); 5] = [
    (
        "switchyard_fleet_wave",
        "Fleet rollouts: this host's wave (from 1) for the candidate release",
    ),
    (
        "switchyard_fleet_bucket",
        "Fleet rollouts: this host's bucket (0 to 9999) for the candidate release",
    ),
    (
        "switchyard_fleet_wave_open",
        "Fleet rollouts: 1 once this host's wave is open",
    ),
    (
        "switchyard_fleet_failures",
        "Fleet rollouts: failed hosts the ledger shows for the candidate release",
    ),
    (
        "switchyard_fleet_halted",
        "Fleet rollouts: 1 while the candidate's rollout is halted (by an operator, or by max_failures)",
    ),
];

fn app_label(app: &str) -> AppLabel {
    AppLabel {
        app: app.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The value of the series `name{labels}`, with the labels in the order
    /// the encoder writes them (the label struct's field order, then `le`).
    pub(crate) fn value_of(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut series = name.to_owned();
        if !labels.is_empty() {
            let quoted: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    // The text format's escapes, spelled out here so that the
                    // encoder's are checked against them.
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            series = format!("{series}{{{}}}", quoted.join(","));
        }
        text.lines().find_map(|l| {
            let value = l.strip_prefix(&series)?.strip_prefix(' ')?;
            Some(match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().expect("a sample value"),
            })
        })
    }

    /// How many samples (lines that are not comments) the text holds.
    pub(crate) fn sample_count(text: &str) -> usize {
        text.lines().filter(|l| !l.starts_with('#')).count()
    }

    #[test]
    fn metrics_exposition() {
        let m = Metrics::new();
        m.set_current_version("web", Some("1.1.0"));
        m.set_current_version("web", Some("1.2.0"));
        m.set_current_version("api", Some("0.9.0"));
        m.set_current_version("api", None);
        let odd = "we\"b\\x\nz ü";
        m.set_current_version(odd, Some("1.0.0-rc.1+build.5"));
        m.deploy_outcome("web", "completed");
        m.deploy_outcome("web", "completed");
        m.deploy_outcome("web", "rolled_back");
        m.deploy_outcome(odd, "precheck_failed");
        m.revert("web", "manual");
        m.set_last_deploy("web", 1_767_225_600.5);
        m.set_versions_behind("web", 2);
        m.set_versions_behind("web", 0);
        m.observe_health("web", "live", 0.003);
        m.observe_health("web", "live", 0.3);
        m.observe_health("web", "live", 45.0);
        m.observe_health("web", "live", f64::NAN);
        m.observe_health("web", "staging", 0.01);
        m.webhook("accepted");
        m.set_last_deploy("odd-clock", f64::INFINITY);

        let text = m.render();
        let v = |name: &str, labels: &[(&str, &str)]| value_of(&text, name, labels);

        assert_eq!(
            v(
                "switchyard_app_info",
                &[("app", "web"), ("version", "1.2.0")]
            ),
            Some(1.0)
        );
        let info: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("switchyard_app_info{"))
            .collect();
        assert_eq!(info.len(), 2, "replaced and removed: {info:?}");
        assert_eq!(
            v(
                "switchyard_app_info",
                &[("app", odd), ("version", "1.0.0-rc.1+build.5")]
            ),
            Some(1.0),
            "label values round-trip through escaping"
        );
        let deploys = "switchyard_deploys_total";
        assert_eq!(
            v(deploys, &[("app", "web"), ("outcome", "completed")]),
            Some(2.0)
        );
        assert_eq!(
            v(deploys, &[("app", "web"), ("outcome", "rolled_back")]),
            Some(1.0)
        );
        assert_eq!(
            v(deploys, &[("app", odd), ("outcome", "precheck_failed")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "switchyard_reverts_total",
                &[("app", "web"), ("trigger", "manual")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "switchyard_last_deploy_timestamp_seconds",
                &[("app", "web")]
            ),
            Some(1_767_225_600.5)
        );
        assert_eq!(
            v("switchyard_versions_behind", &[("app", "web")]),
            Some(0.0)
        );
        assert!(text.contains("{app=\"odd-clock\"} +Inf\n"), "{text}");

        let live = [("app", "web"), ("phase", "live")];
        let bucket = |le: &str| {
            v(
                "switchyard_health_check_seconds_bucket",
                &[("app", "web"), ("phase", "live"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.01"), Some(1.0));
        assert_eq!(bucket("0.5"), Some(2.0));
        assert_eq!(bucket("30"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(v("switchyard_health_check_seconds_count", &live), Some(3.0));
        let sum = v("switchyard_health_check_seconds_sum", &live).expect("sum");
        assert!((sum - 45.303).abs() < 1e-9, "{sum}");
        let staging = [("app", "web"), ("phase", "staging"), ("le", "0.01")];
        assert_eq!(
            v("switchyard_health_check_seconds_bucket", &staging),
            Some(1.0)
        );

        let hooks = "switchyard_webhook_deliveries_total";
        assert_eq!(v(hooks, &[("outcome", "accepted")]), Some(1.0));
        assert_eq!(v(hooks, &[("outcome", "unauthorized")]), Some(0.0));

        for (family, kind) in [
            ("switchyard_app_info", "gauge"),
            ("switchyard_deploys_total", "counter"),
            ("switchyard_reverts_total", "counter"),
            ("switchyard_last_deploy_timestamp_seconds", "gauge"),
            ("switchyard_versions_behind", "gauge"),
            ("switchyard_health_check_seconds", "histogram"),
            ("switchyard_webhook_deliveries_total", "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}"
            );
        }

        m.forget_app("web");
        let text = m.render();
        assert!(!text.contains("app=\"web\""), "{text}");
    }

    #[test]
    fn configured_apps_start_at_zero_and_forgetting_drops_everything() {
        let m = Metrics::new();
        m.init_app("web");
        let text = m.render();
        let v = |name: &str, labels: &[(&str, &str)]| value_of(&text, name, labels);
        for t in REVERT_TRIGGERS {
            assert_eq!(
                v(
                    "switchyard_reverts_total",
                    &[("app", "web"), ("trigger", t)]
                ),
                Some(0.0)
            );
        }
        for o in DEPLOY_OUTCOMES {
            assert_eq!(
                v(
                    "switchyard_deploys_total",
                    &[("app", "web"), ("outcome", o)]
                ),
                Some(0.0)
            );
        }
        for g in [
            "switchyard_versions_behind",
            "switchyard_needs_attention",
            "switchyard_maintenance",
            "switchyard_quarantined_releases",
            "switchyard_hold",
        ] {
            assert_eq!(v(g, &[("app", "web")]), Some(0.0), "{g}");
        }
        let since = v(
            "switchyard_seconds_since_last_successful_poll",
            &[("app", "web")],
        );
        assert!(since.is_some_and(|s| (0.0..60.0).contains(&s)), "{since:?}");
        m.set_app_state("web", true, true, 3, true);
        let text = m.render();
        assert_eq!(
            value_of(&text, "switchyard_quarantined_releases", &[("app", "web")]),
            Some(3.0)
        );
        assert_eq!(
            value_of(&text, "switchyard_hold", &[("app", "web")]),
            Some(1.0)
        );
        assert_eq!(
            value_of(&text, "switchyard_needs_attention", &[("app", "web")]),
            Some(1.0)
        );
        assert!(text.contains("switchyard_build_info{version=\""), "{text}");
        m.forget_app("web");
        assert!(!m.render().contains("app=\"web\""));
    }
}
