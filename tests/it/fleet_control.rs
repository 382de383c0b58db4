//! Fleet rollouts under operators' control (issue #15), on the 50-agent
//! simulation (`fleet::sim`: real agents, separate roots, distinct host ids
//! and tokens, two canaries, one mock GitHub, one fake clock):
//!
//! - `fleet halt` stops a healthy rollout mid-way, `fleet resume` continues it;
//! - `fleet status --json` matches the ground truth (roots and the ledger);
//! - GitHub answering 5xx, then 403 and 429 rate limits delays the waves but
//!   loses no status (the ledger against each host's own audit log);
//! - `fleet revert` brings every host back, and none redeploys the release;
//! - the API requests per host per poll stay bounded (figures printed).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;

use crate::common::note;
use crate::fleet::sim::{Fleet, FleetSpec, Host, PlanModel, TOKEN_VAR, bucket, created};
use crate::mock_github::{Fault, MockGithub, in_secs};

/// The issue's example plan, with one failed host allowed.
const PLAN: &str = r#"[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 10, after = "30m" },
  { percent = 50, after = "2h" },
  { percent = 100, after = "4h" },
]
max_failures = 2
"#;

/// A short plan for the second release: canaries, then everyone 30 min later.
const FAST_PLAN: &str = r#"[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 100, after = "30m" },
]
max_failures = 2
"#;

fn plan_model() -> PlanModel {
    PlanModel {
        waves: vec![
            (vec!["canary".into()], None, 0),
            (vec![], Some(10), 30),
            (vec![], Some(50), 120),
            (vec![], Some(100), 240),
        ],
    }
}

const APP_EXTRA: &str = "poll_interval = \"10m\"\n";
const HOSTS: usize = 50;
/// The clock moves in steps of this many minutes: above the poll interval
/// and its jitter, so each host polls once per step.
const STEP_MIN: i64 = 15;

/// Hosts live on `v`.
fn live_on(f: &Fleet, v: &str) -> BTreeSet<String> {
    f.live()
        .into_iter()
        .filter(|(_, l)| l.as_deref() == Some(v))
        .map(|(h, _)| h)
        .collect()
}

/// The CLI on host `h` (its config and token, the fleet's fake clock),
/// expecting success.
fn cli_ok(f: &Fleet, h: &Host, args: &[&str]) -> String {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .arg("--config")
        .arg(&h.config)
        .args(args)
        // A token of its own: the agents' request counts stay theirs.
        .env(TOKEN_VAR, format!("cli-{}", h.token))
        .env("SWITCHYARD_FAKE_CLOCK_FILE", &f.clock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "switchyard {args:?} on {}:\n{text}\n{}",
        h.id,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn status_json(f: &Fleet, h: &Host, version: &str) -> serde_json::Value {
    let out = cli_ok(
        f,
        h,
        &["fleet", "status", "web", "--version", version, "--json"],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `fleet status --json` against the ground truth: each host's root, the
/// mock's ledger and the plan's model.
fn check_status(f: &Fleet, s: &serde_json::Value, version: &str, published: jiff::Timestamp) {
    let model = plan_model();
    let attempts = f.attempts(version);
    let rows = s["hosts"].as_array().unwrap();
    let by_host: BTreeMap<String, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["host_id"].as_str().unwrap().to_string(), r))
        .collect();
    let attempted: BTreeSet<String> = attempts.iter().map(|d| d.field("host_id")).collect();
    assert_eq!(
        by_host.keys().cloned().collect::<BTreeSet<_>>(),
        attempted,
        "one row per host with an attempt"
    );
    for d in &attempts {
        let host = d.field("host_id");
        let row = by_host[&host];
        let h = f.host(&host);
        assert_eq!(
            row["state"],
            d.state().unwrap(),
            "{host}: state as the ledger has it"
        );
        assert_eq!(
            row["wave"].as_u64().unwrap() as usize,
            model.wave_of(&h.labels, bucket(&host, "web", version)),
            "{host}: its wave by the cohort rule"
        );
        assert_eq!(row["attempts"], 1, "{host}");
        // The ledger says live exactly where the root says live.
        let is_live = h.current().as_deref() == Some(version);
        assert_eq!(row["state"] == "success", is_live, "{host}");
        let since: jiff::Timestamp = row["since"].as_str().unwrap().parse().unwrap();
        let last = d.statuses.last().unwrap();
        assert_eq!(
            since,
            last.created_at.parse::<jiff::Timestamp>().unwrap(),
            "{host}"
        );
        assert_eq!(
            row["age_secs"].as_i64().unwrap(),
            (f.now() - since).get_seconds(),
            "{host}: age on the fake clock"
        );
        assert!(created(d) >= published, "{host}");
    }
    let now = f.now();
    let open = (1..=4)
        .filter(|w| published + SignedDuration::from_mins(model.opens_after(*w)) <= now)
        .max();
    assert_eq!(s["open_wave"].as_u64().map(|w| w as usize), open);
    match open {
        Some(w) if w < 4 => {
            let next = published + SignedDuration::from_mins(model.opens_after(w + 1));
            assert_eq!(s["next_wave"]["wave"], w + 1);
            assert_eq!(s["next_wave"]["opens_at"], next.to_string());
            assert_eq!(s["next_wave"]["in_secs"], (next - now).get_seconds());
        }
        _ => assert!(s["next_wave"].is_null()),
    }
    let failures = attempts
        .iter()
        .filter(|d| matches!(d.state(), Some("failure" | "error")))
        .count();
    assert_eq!(s["failures"], failures);
    let waves = s["waves"].as_array().unwrap();
    for (k, w) in waves.iter().enumerate() {
        let n: u64 = w["hosts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            n as usize,
            rows.iter().filter(|r| r["wave"] == k + 1).count(),
            "wave {}",
            k + 1
        );
    }
}

/// API requests each host made in each poll (one poll per step).
#[derive(Default)]
struct Tally {
    last: BTreeMap<String, usize>,
    /// (step, host, requests), with whether GitHub was failing.
    polls: Vec<(usize, usize, bool)>,
}

impl Tally {
    /// Records the requests made since the last call.
    fn take(&mut self, f: &Fleet, faulty: bool) {
        let now = f.requests_per_host();
        for (h, n) in &now {
            let before = self.last.get(h).copied().unwrap_or(0);
            self.polls.push((f.steps, n - before, faulty));
        }
        self.last = now;
    }
}

/// Moves the clock by `mins` (one poll per host), optionally until no
/// retry is left running, and counts each host's requests.
fn advance(f: &mut Fleet, t: &mut Tally, mins: i64, faulty: bool) {
    f.step(SignedDuration::from_mins(mins));
    if faulty {
        // The step ends at the first quiet moment; a host may still be
        // between two retries (they back off up to 5 s).
        quiet_for(f, std::time::Duration::from_secs(7));
    }
    t.take(f, faulty);
}

/// Waits until no request reached the mock for `d` (retries back off up to
/// 5 s).
fn quiet_for(f: &Fleet, d: std::time::Duration) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let n = f.mock.with(|s| s.seen.len());
        std::thread::sleep(d);
        if f.mock.with(|s| s.seen.len()) == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet never went quiet"
        );
    }
}

/// Each host's audit events of `kind` and their target versions.
fn audited(f: &Fleet, h: &Host, kind: &str) -> Vec<String> {
    let out = cli_ok(f, h, &["history", "web", "--json"]);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == kind && e["outcome"] == "ok")
        .map(|e| e["to"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn fleet_simulation_halt_resume_faults_and_revert() {
    let t0: jiff::Timestamp = "2026-04-06T00:00:00Z".parse().unwrap();
    let mut f = Fleet::start(FleetSpec {
        hosts: HOSTS,
        canaries: 2,
        app_extra: APP_EXTRA.into(),
        start: t0,
    });
    let mut t = Tally::default();
    t.take(&f, false);
    let ops = f.hosts[7].id.clone();

    // --- (a) halt mid-way -------------------------------------------------
    f.publish("v1.0.0", Some(PLAN), false);
    let published = f.now();
    // 45 min: the canaries and the 10 % wave are live.
    for _ in 0..3 {
        advance(&mut f, &mut t, STEP_MIN, false);
    }
    let before_halt = live_on(&f, "1.0.0");
    let model = plan_model();
    let in_first_two = f
        .hosts
        .iter()
        .filter(|h| model.wave_of(&h.labels, bucket(&h.id, "web", "1.0.0")) <= 2)
        .count();
    assert_eq!(before_halt.len(), in_first_two, "waves 1 and 2 live");
    assert!(before_halt.len() < HOSTS);

    // (e) the status an operator sees, against the ground truth.
    let s = status_json(&f, f.host(&ops), "1.0.0");
    assert_eq!(s["halted"], false);
    check_status(&f, &s, "1.0.0", published);

    let out = cli_ok(
        &f,
        f.host(&ops),
        &["fleet", "halt", "web", "1.0.0", "--reason", "latency up"],
    );
    assert!(out.contains("halted"), "{out}");
    let attempts_at_halt = f.attempts("1.0.0").len();
    // Past every wave's opening: nobody starts 1.0.0.
    advance(&mut f, &mut t, 350, false);
    advance(&mut f, &mut t, STEP_MIN, false);
    assert_eq!(
        f.attempts("1.0.0").len(),
        attempts_at_halt,
        "no new attempt while halted"
    );
    assert_eq!(live_on(&f, "1.0.0"), before_halt);
    let s = status_json(&f, f.host(&ops), "1.0.0");
    assert_eq!(s["halted"], true);
    assert_eq!(s["halt"]["cause"], "operator");
    assert_eq!(s["halt"]["reason"], "latency up");
    assert_eq!(s["open_wave"], 4);
    check_status(&f, &s, "1.0.0", published);

    cli_ok(&f, f.host(&ops), &["fleet", "resume", "web", "1.0.0"]);
    advance(&mut f, &mut t, STEP_MIN, false);
    assert_eq!(
        live_on(&f, "1.0.0").len(),
        HOSTS,
        "the remaining waves proceeded"
    );
    let s = status_json(&f, f.host(&ops), "1.0.0");
    assert_eq!(s["halted"], false);
    check_status(&f, &s, "1.0.0", published);
    note(&format!(
        "fleet: `fleet status` read {} attempts with {} requests",
        s["hosts"].as_array().unwrap().len(),
        s["requests"]
    ));
    // Only the operator's host records the commands.
    assert_eq!(audited(&f, f.host(&ops), "fleet.halt"), vec!["1.0.0"]);
    assert_eq!(audited(&f, f.host(&ops), "fleet.resume"), vec!["1.0.0"]);
    assert!(audited(&f, &f.hosts[8], "fleet.halt").is_empty());

    // --- (c) GitHub failing for a while ------------------------------------
    // Every host's 1.0.0 attempt will be marked inactive when 1.1.0
    // replaces it: the first of those posts fails (5 tries), its retry at
    // the next poll gets through.
    for d in f.attempts("1.0.0") {
        f.mock.fail(
            &format!("{}/{}/statuses", MockGithub::deployments_path(), d.id),
            &[Fault::Status(502); 7],
        );
    }
    // The ledger's listing: one poll's worth of 5xx for every host (5
    // tries each), then a poll of 403 rate limits, then one of 429s.
    let listing = MockGithub::deployments_path();
    f.mock.fail(&listing, &[Fault::Status(503); 5 * HOSTS]);
    f.mock.fail(
        &listing,
        &[Fault::RateLimit {
            reset_at: in_secs(3600),
        }; HOSTS],
    );
    f.mock.fail(&listing, &[Fault::RetryAfter(3600); HOSTS]);
    f.publish("v1.1.0", Some(FAST_PLAN), false);
    let published2 = f.now();
    let mut delayed = 0;
    while f
        .mock
        .with(|s| s.faults.get(&listing).is_some_and(|q| !q.is_empty()))
    {
        advance(&mut f, &mut t, STEP_MIN, true);
        delayed += 1;
        assert!(
            live_on(&f, "1.1.0").is_empty(),
            "no wave advances while the ledger cannot be read"
        );
        assert!(delayed <= 6, "faults not consumed");
    }
    assert!(delayed >= 3, "{delayed}");
    // GitHub is back: both waves are open by now. (The statuses of the
    // replaced 1.0.0 attempts fail at first, with retries: let them finish.)
    for _ in 0..3 {
        advance(&mut f, &mut t, STEP_MIN, true);
    }
    assert_eq!(live_on(&f, "1.1.0").len(), HOSTS);
    note(&format!(
        "fleet: the 1.1.0 canaries opened at {published2}, GitHub failed for {delayed} polls ({STEP_MIN} min each), every host live {} later",
        f.now() - published2
    ));
    // Every host's statuses reached the ledger, matching its own audit log.
    let attempts = f.mock.deployments();
    for h in &f.hosts {
        let mine: Vec<_> = attempts
            .iter()
            .filter(|d| d.task == "deploy" && d.field("host_id") == h.id)
            .collect();
        let states: BTreeMap<String, String> = mine
            .iter()
            .map(|d| (d.field("version"), d.state().unwrap_or("none").to_string()))
            .collect();
        let expected: BTreeMap<String, String> = [
            ("1.0.0".to_string(), "inactive".to_string()),
            ("1.1.0".to_string(), "success".to_string()),
        ]
        .into();
        assert_eq!(states, expected, "{}:\n{}", h.id, h.log());
        assert_eq!(mine.len(), 2, "{}: one attempt per version", h.id);
        assert_eq!(
            audited(&f, h, "system.update.completed"),
            vec!["1.0.0", "1.1.0"],
            "{}: its own history",
            h.id
        );
    }
    let s = status_json(&f, f.host(&ops), "1.1.0");
    assert_eq!(s["hosts"].as_array().unwrap().len(), HOSTS);
    assert!(
        s["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "success")
    );

    // --- (b) fleet revert ----------------------------------------------------
    cli_ok(
        &f,
        f.host(&ops),
        &["fleet", "revert", "web", "1.1.0", "--reason", "bad data"],
    );
    advance(&mut f, &mut t, STEP_MIN, false);
    for h in &f.hosts {
        assert_eq!(
            h.current().as_deref(),
            Some("1.0.0"),
            "{} reverted:\n{}",
            h.id,
            h.log()
        );
    }
    let attempts_after_revert = f.attempts("1.1.0").len();
    advance(&mut f, &mut t, STEP_MIN, false);
    advance(&mut f, &mut t, 60, false);
    assert_eq!(live_on(&f, "1.0.0").len(), HOSTS, "none redeploys 1.1.0");
    assert_eq!(f.attempts("1.1.0").len(), attempts_after_revert);
    for d in f.attempts("1.1.0") {
        assert_eq!(d.state(), Some("inactive"), "{}", d.field("host_id"));
    }
    let s = status_json(&f, f.host(&ops), "1.1.0");
    assert_eq!(s["halted"], true);
    assert_eq!(s["halt"]["action"], "revert");
    assert_eq!(audited(&f, f.host(&ops), "fleet.revert"), vec!["1.1.0"]);

    // --- (d) requests per host per poll ----------------------------------------
    // (The operators' CLI has tokens of its own: these are the agents'.)
    let stat = |faulty: bool| {
        let v: Vec<usize> = t
            .polls
            .iter()
            .filter(|p| p.2 == faulty)
            .map(|p| p.1)
            .collect();
        let max = v.iter().copied().max().unwrap_or(0);
        let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        (max, mean, v.len())
    };
    let (max, mean, n) = stat(false);
    let (fmax, fmean, fnum) = stat(true);
    note(&format!(
        "fleet: API requests per host per poll ({HOSTS} agents; two rollouts, a halt, a revert): max {max}, mean {mean:.1} over {n} host-polls; while GitHub failed or had just come back (5 tries per 5xx): max {fmax}, mean {fmean:.1} over {fnum}"
    ));
    // A poll: the release listing (1), release.toml and its signature (2),
    // the ledger's listing and at most 8 status reads (9); a deploying poll
    // adds its attempt (create + in_progress: 2), the asset with its sums and
    // signatures (5), success and the inactive of the version it replaced
    // (2), and a fleet revert's control read: 22; runs saw 17 to 22. Two
    // requests of slack (a page of the ledger listing turning over), and
    // none that grows with the fleet. A failing request counts its 5 tries.
    assert!(max <= 24, "max {max} requests in one poll: {:?}", t.polls);
    assert!(
        fmax <= 22 + 4 * 5,
        "max {fmax} requests in one poll while GitHub failed"
    );
    assert!(mean <= 12.0, "mean {mean:.1}");
}
