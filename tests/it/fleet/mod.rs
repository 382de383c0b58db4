//! Fleet rollouts (issue #15): the plan in `pack`, the configuration, and
//! the simulation of 50 agents rolling releases out in waves through the
//! ledger on the mock GitHub.
#![allow(clippy::disallowed_methods)]

pub(crate) mod sim;

use std::collections::BTreeMap;

use jiff::SignedDuration;

use crate::common::{World, note};
use sim::{Fleet, FleetSpec, PlanModel, bucket, created};

/// The issue's example plan.
const PLAN: &str = r#"# the issue's example
notes = "kept as is"

[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 10, after = "30m" },
  { percent = 50, after = "2h" },
  { percent = 100, after = "4h" },
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

/// The live check every simulated host runs: a release carrying `BROKEN`
/// fails it.
const APP_EXTRA: &str = "poll_interval = \"1m\"\n[apps.web.health.live]\nretries = 0\n[[apps.web.health.live.checks]]\nkind = \"command\"\ncommand = 'test ! -e BROKEN'\n[apps.web.hooks]\nactivate = 'echo activated on this host'\n";

const HOSTS: usize = 50;
const CANARIES: usize = 2;
/// The clock moves in steps of this many minutes (each host polls once per step).
const STEP_MIN: i64 = 30;

#[test]
fn fleet_simulation_good_release_in_waves_then_a_bad_one_halts() {
    let t0: jiff::Timestamp = "2026-03-02T00:00:00Z".parse().unwrap();
    let wall = std::time::Instant::now();
    let mut f = Fleet::start(FleetSpec {
        hosts: HOSTS,
        canaries: CANARIES,
        app_extra: APP_EXTRA.into(),
        start: t0,
    });
    let started = wall.elapsed();

    // --- The good release, with the issue's plan. -----------------------
    f.publish("v1.0.0", Some(PLAN), false);
    let published = f.now();
    let model = plan_model();
    // Ground truth of the cohort rule: each host's wave.
    let expected: BTreeMap<String, usize> = f
        .hosts
        .iter()
        .map(|h| {
            (
                h.id.clone(),
                model.wave_of(&h.labels, bucket(&h.id, "web", "1.0.0")),
            )
        })
        .collect();
    let mut per_wave = [0usize; 5];
    for w in expected.values() {
        per_wave[*w] += 1;
    }
    let mut live_at_step: Vec<(i64, usize)> = Vec::new();
    let total_min = model.opens_after(4) + 2 * STEP_MIN;
    let mut minutes = 0;
    let polls_before = f.steps;
    while minutes <= total_min {
        // Two minutes first (the canaries' wave alone is open), then up to
        // the next multiple of the step (every wave opens on one).
        let d = if minutes == 0 {
            2
        } else {
            STEP_MIN - minutes % STEP_MIN
        };
        f.step(SignedDuration::from_mins(d));
        minutes = f.now().duration_since(published).as_mins();
        let live = f.live();
        let on: Vec<&String> = live
            .iter()
            .filter(|(_, v)| v.as_deref() == Some("1.0.0"))
            .map(|(h, _)| h)
            .collect();
        live_at_step.push((minutes, on.len()));
        // Exactly the hosts whose wave opened are live (each polls once a
        // step, so a wave that opened during the step is live at its end).
        for h in &f.hosts {
            let w = expected[&h.id];
            let open = published + SignedDuration::from_mins(model.opens_after(w));
            let is_on = live[&h.id].as_deref() == Some("1.0.0");
            assert_eq!(
                is_on,
                open <= f.now(),
                "{} (wave {w}, opens {open}) at {}: live {:?}\n{}",
                h.id,
                f.now(),
                live[&h.id],
                h.log()
            );
        }
    }
    let good_polls = f.steps - polls_before;
    // Never a host before its wave opened: every attempt's creation time
    // (the fake clock, stamped by the ledger) against its wave's opening.
    let attempts = f.attempts("1.0.0");
    assert_eq!(attempts.len(), HOSTS, "one attempt per host");
    for d in &attempts {
        let host = d.field("host_id");
        let w = expected[&host];
        assert_eq!(
            d.field("wave"),
            w.to_string(),
            "{host}: the wave it recorded"
        );
        let open = published + SignedDuration::from_mins(model.opens_after(w));
        assert!(
            created(d) >= open,
            "{host} attempted at {} before wave {w} opened at {open}",
            d.created_at
        );
        assert_eq!(d.state(), Some("success"), "{host}");
        assert_eq!(d.environment, "production");
        assert_eq!(d.git_ref, "v1.0.0");
    }
    // Canaries first.
    let first_non_canary = attempts
        .iter()
        .filter(|d| expected[&d.field("host_id")] > 1)
        .map(created)
        .min()
        .unwrap();
    for d in attempts
        .iter()
        .filter(|d| expected[&d.field("host_id")] == 1)
    {
        assert!(created(d) < first_non_canary);
    }
    // Cohort sizes: the exact sets are checked above; against the nominal
    // 10/50/100 % the cumulative share of the 48 unlabelled hosts must be
    // within 3 standard deviations of a binomial draw (about ±13 points at
    // 10 %, ±22 at 50 %).
    let others = (HOSTS - CANARIES) as f64;
    let cum10 = per_wave[2] as f64 / others;
    let cum50 = (per_wave[2] + per_wave[3]) as f64 / others;
    for (got, nominal) in [(cum10, 0.10), (cum50, 0.50)] {
        let sd = (nominal * (1.0 - nominal) / others).sqrt();
        assert!((got - nominal).abs() <= 3.0 * sd, "{got} vs {nominal}");
    }
    assert_eq!(per_wave[1], CANARIES);
    note(&format!(
        "fleet simulation: {HOSTS} agents up in {:.1} s; v1.0.0 waves: canary {} hosts, 10% wave {} ({:.0}% of the rest), 50% wave {} ({:.0}% cumulative), 100% wave {}",
        started.as_secs_f64(),
        per_wave[1],
        per_wave[2],
        cum10 * 100.0,
        per_wave[3],
        cum50 * 100.0,
        per_wave[4]
    ));
    note(&format!(
        "fleet simulation: hosts live on v1.0.0 by minutes after publication: {}",
        live_at_step
            .iter()
            .map(|(m, n)| format!("{m}m:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));

    // --- A bad release: fails its live check on every host. --------------
    let bad_plan = "[rollout]\nwaves = [{ percent = 20 }, { percent = 100, after = \"1h\" }]\nmax_failures = 2\n";
    let req_before = f.requests_per_host();
    let ledger_before = f.ledger_requests_per_host();
    let polls_before = f.steps;
    f.publish("v1.1.0", Some(bad_plan), true);
    let mut first_halt_step = None;
    let mut attempts_by_step: Vec<usize> = Vec::new();
    for step in 0..6 {
        f.step(SignedDuration::from_mins(STEP_MIN));
        let a = f.attempts("1.1.0");
        attempts_by_step.push(a.len());
        let failed = a.iter().filter(|d| d.state() == Some("failure")).count();
        if failed >= 2 && first_halt_step.is_none() {
            first_halt_step = Some(step);
        }
    }
    let bad_polls = f.steps - polls_before;
    let a = f.attempts("1.1.0");
    let halt = first_halt_step.expect("the bad release failed somewhere");
    // Every attempt was made in the step where the failures appeared (the
    // hosts already in flight); none after.
    assert!(
        attempts_by_step[halt..]
            .iter()
            .all(|n| *n == attempts_by_step[halt]),
        "new attempts after the halt: {attempts_by_step:?}"
    );
    let in_flight = attempts_by_step[halt];
    let wave1 = f
        .hosts
        .iter()
        .filter(|h| bucket(&h.id, "web", "1.1.0") < 2_000)
        .count();
    assert!(
        in_flight <= wave1,
        "only first-wave hosts ever attempted: {in_flight} > {wave1}"
    );
    assert!(
        a.iter().all(|d| d.state() == Some("failure")),
        "every attempt failed"
    );
    // Each failure says why, with the last line its hooks wrote.
    for d in &a {
        let desc = &d.statuses.last().unwrap().description;
        assert!(
            !desc.starts_with(" | ") && desc.ends_with(" | log: out: activated on this host"),
            "{desc}"
        );
    }
    // Everyone still runs v1.0.0 (the failed hosts rolled back).
    assert!(
        f.live().values().all(|v| v.as_deref() == Some("1.0.0")),
        "{:?}",
        f.live()
    );
    // The halt is said in status and in metrics-bearing memory of a host
    // that never attempted it.
    let bystander = f
        .hosts
        .iter()
        .find(|h| !a.iter().any(|d| d.field("host_id") == h.id))
        .expect("a host that never attempted v1.1.0");
    let (code, out, err) = bystander.cli(&["status", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fleet:      1.1.0 wave"), "{out}");
    assert!(out.contains("halted itself"), "{out}");
    assert!(
        bystander.log().contains("the rollout halted itself"),
        "{}",
        bystander.log()
    );
    let metrics = f.http_get(bystander, "/metrics");
    assert!(
        metrics.contains("switchyard_fleet_halted{app=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "switchyard_fleet_failures{{app=\"web\"}} {}",
            a.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_fleet_wave_open{app=\"web\"} 0"),
        "{metrics}"
    );

    // Requests per host per poll.
    let req_after = f.requests_per_host();
    let per_poll: Vec<f64> = f
        .hosts
        .iter()
        .map(|h| (req_after[&h.id] - req_before[&h.id]) as f64 / bad_polls as f64)
        .collect();
    let ledger_after = f.ledger_requests_per_host();
    let ledger_per_poll: Vec<f64> = f
        .hosts
        .iter()
        .map(|h| (ledger_after[&h.id] - ledger_before[&h.id]) as f64 / bad_polls as f64)
        .collect();
    let ledger_max = ledger_per_poll.iter().cloned().fold(0.0, f64::max);
    let ledger_mean = ledger_per_poll.iter().sum::<f64>() / ledger_per_poll.len() as f64;
    let max = per_poll.iter().cloned().fold(0.0, f64::max);
    let mean = per_poll.iter().sum::<f64>() / per_poll.len() as f64;
    let total_good: usize = req_before.values().sum();
    note(&format!(
        "fleet simulation: v1.1.0 (fails its live check, max_failures 2): {} of {HOSTS} hosts attempted it, all in the first step it was visible ({wave1} hosts in its first wave), none after; attempts by step {attempts_by_step:?}",
        a.len()
    ));
    note(&format!(
        "fleet simulation: API requests per host per poll during the bad release: mean {mean:.2}, max {max:.2} (ledger only: mean {ledger_mean:.2}, max {ledger_max:.2}); during the good rollout: {:.2} per host per poll ({} polls); wall time {:.1} s",
        total_good as f64 / HOSTS as f64 / (good_polls + 1) as f64,
        good_polls + 1,
        wall.elapsed().as_secs_f64()
    ));
    // Bounded: the listing (one page here) plus at most 8 status reads,
    // plus an attempt's writes (create, in_progress, final state).
    assert!(ledger_max <= 1.0 + 8.0 + 3.0, "{ledger_per_poll:?}");
    assert!(max <= 2.0 + 1.0 + 8.0 + 3.0, "{per_poll:?}");
}

#[test]
fn pack_checks_the_plan_and_signs_it() {
    let w = World::new();
    let build = w.tmp.path().join("build");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("VERSION"), "1.0.0\n").unwrap();
    let plan = w.tmp.path().join("rollout.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = w.tmp.path().join("out");
    let (b, o, p) = (
        build.to_str().unwrap(),
        out.to_str().unwrap(),
        plan.to_str().unwrap(),
    );
    // Without a key: refused, nothing written.
    let (code, _, err) = w.run(&["pack", b, "--version", "1.0.0", "--out", o, "--rollout", p]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --key"), "{err}");
    assert!(!out.exists());
    // A bad plan: refused with what to write.
    let bad = w.tmp.path().join("bad.toml");
    std::fs::write(&bad, "[rollout]\nwaves = [{ percent = 50 }]\n").unwrap();
    let k = w.secret_key.to_str().unwrap();
    let (code, _, err) = w.run(&[
        "pack",
        b,
        "--version",
        "1.0.0",
        "--out",
        o,
        "--key",
        k,
        "--rollout",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never get the release"), "{err}");
    assert!(!out.exists());
    // A good one: release.toml as written, signed with a comment naming it.
    w.ok(&[
        "pack",
        b,
        "--version",
        "1.0.0",
        "--out",
        o,
        "--key",
        k,
        "--rollout",
        p,
    ]);
    let written = std::fs::read_to_string(out.join("1.0.0/release.toml")).unwrap();
    assert_eq!(written, PLAN);
    let sig = std::fs::read_to_string(out.join("1.0.0/release.toml.minisig")).unwrap();
    assert!(sig.contains("tag=1.0.0 file=release.toml"), "{sig}");
}

#[test]
fn fleet_on_a_drop_folder_is_a_config_error() {
    let w = World::with_extra("[apps.web.fleet]\nenvironment = \"production\"\n");
    let (code, out, err) = w.run(&["config", "check"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        format!("{out}{err}").contains("fleet needs a github source"),
        "{out}{err}"
    );
}

#[test]
fn an_unsigned_plan_refuses_the_release() {
    let mut f = Fleet::start(FleetSpec {
        hosts: 1,
        canaries: 0,
        app_extra: "poll_interval = \"1m\"\n".into(),
        start: "2026-03-02T00:00:00Z".parse().unwrap(),
    });
    f.publish_with("v1.0.0", Some(PLAN), false, false);
    f.step(SignedDuration::from_mins(10));
    f.step(SignedDuration::from_mins(10));
    let h = &f.hosts[0];
    assert_eq!(h.current(), None, "deployed around an unsigned plan");
    assert!(f.attempts("1.0.0").is_empty());
    assert!(
        h.log().contains("rollout plan is refused") && h.log().contains("no release.toml.minisig"),
        "{}",
        h.log()
    );
    // A newer release with its plan signed rolls out.
    f.publish(
        "v1.0.1",
        Some("[rollout]\nwaves = [{ percent = 100 }]\n"),
        false,
    );
    f.step(SignedDuration::from_mins(10));
    assert_eq!(
        f.hosts[0].current().as_deref(),
        Some("1.0.1"),
        "{}",
        f.hosts[0].log()
    );
    assert_eq!(f.attempts("1.0.1").len(), 1);
}
