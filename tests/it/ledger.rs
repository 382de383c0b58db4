//! The fleet ledger (GitHub Deployments) against the mock GitHub: what it
//! writes, what one snapshot reads and what it costs, pagination, ETags,
//! control actions, and faults.

use std::time::Duration;

use crate::mock_github::{Fault, MockGithub, in_secs};
use switchyard::testing::{
    AttemptPayload, AttemptState, ControlAction, ControlPayload, GithubLedger, GithubOptions,
    GithubSourceConfig, Ledger, MAX_STATUS_READS, Scope,
};

/// A ledger on the mock with short retry delays.
fn ledger(m: &MockGithub) -> GithubLedger {
    let mut cfg = GithubSourceConfig::new("acme", "web");
    cfg.api_url = m.api_url();
    GithubLedger::new("web", cfg).with_options(GithubOptions {
        retry_min_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
        ..GithubOptions::default()
    })
}

/// A mock with release `v1.2.0` (so its tag exists).
fn mock() -> MockGithub {
    let m = MockGithub::start();
    let r = m.release("v1.2.0", vec![m.asset("web-1.2.0.tar.gz", b"x".to_vec())]);
    m.push(r);
    m
}

fn scope(env: &str) -> Scope {
    Scope {
        environment: env.into(),
        tag: "v1.2.0".into(),
    }
}

fn payload(host: &str, wave: usize) -> AttemptPayload {
    AttemptPayload {
        host_id: host.into(),
        hostname: format!("{host}.example"),
        app: "web".into(),
        version: "1.2.0".into(),
        wave,
    }
}

#[test]
fn attempts_and_their_states_round_trip_without_touching_other_hosts() {
    let m = mock();
    let l = ledger(&m);
    // A non-production environment: GitHub's default `auto_inactive` would
    // mark host a's success inactive when host b succeeds.
    let sc = scope("staging");
    let a = l.create_attempt(&sc, &payload("a", 1)).unwrap();
    let b = l.create_attempt(&sc, &payload("b", 2)).unwrap();
    let c = l.create_attempt(&sc, &payload("c", 2)).unwrap();
    l.post_state(a, AttemptState::Success, "live").unwrap();
    l.post_state(b, AttemptState::Success, "live").unwrap();
    l.post_state(
        c,
        AttemptState::Failure,
        &format!("health check failed: {}", "x".repeat(300)),
    )
    .unwrap();

    let deps = m.deployments();
    assert_eq!(deps.len(), 3);
    for d in &deps {
        assert_eq!(d.task, "deploy");
        assert_eq!(d.git_ref, "v1.2.0");
        assert_eq!(d.environment, "staging");
        assert_eq!(d.request["auto_merge"], false);
        assert_eq!(d.request["required_contexts"], serde_json::json!([]));
        assert_eq!(d.request["transient_environment"], false);
        assert_eq!(d.statuses[0].state, "in_progress");
        assert!(d.statuses.iter().all(|s| s.auto_inactive == Some(false)));
        assert!(
            d.statuses
                .iter()
                .all(|s| s.description.chars().count() <= 140)
        );
    }
    assert_eq!(deps[0].field("host_id"), "a");
    assert_eq!(deps[1].field("wave"), "2");

    let snap = l.snapshot(&sc).unwrap();
    let states: Vec<(String, AttemptState)> = snap
        .attempts
        .iter()
        .map(|a| (a.payload.host_id.clone(), a.state))
        .collect();
    // Newest first; a's success survived b's.
    assert_eq!(
        states,
        vec![
            ("c".to_string(), AttemptState::Failure),
            ("b".to_string(), AttemptState::Success),
            ("a".to_string(), AttemptState::Success),
        ]
    );
    assert_eq!(snap.failures(), 1);
    assert!(
        snap.attempts[0]
            .description
            .as_deref()
            .unwrap()
            .starts_with("health check failed")
    );
    assert!(!snap.halted());
}

#[test]
fn a_snapshot_of_a_large_fleet_costs_a_bounded_number_of_requests() {
    let m = mock();
    m.with(|s| s.page_size = 10);
    let writer = ledger(&m);
    let sc = scope("production");
    for i in 0..30 {
        let id = writer
            .create_attempt(&sc, &payload(&format!("h{i:02}"), 1))
            .unwrap();
        let st = if i % 10 == 0 {
            AttemptState::Failure
        } else {
            AttemptState::Success
        };
        writer.post_state(id, st, "done").unwrap();
    }
    // A fresh reader: every page is new, and it has no state cached.
    let reader = ledger(&m);
    let before = m.seen().len();
    let snap = reader.snapshot(&sc).unwrap();
    let first = m.seen()[before..].to_vec();
    assert_eq!(snap.attempts.len(), 30, "all three pages read");
    let pages = first
        .iter()
        .filter(|s| s.path.ends_with("/deployments"))
        .count();
    assert_eq!(pages, 3);
    let reads = first
        .iter()
        .filter(|s| s.path.ends_with("/statuses"))
        .count();
    assert_eq!(
        reads, MAX_STATUS_READS,
        "status reads per snapshot are capped"
    );
    assert_eq!(snap.requests as usize, first.len());
    println!(
        "ledger: first snapshot of 30 deployments cost {} requests ({pages} pages, {reads} status reads)",
        first.len()
    );

    // Later snapshots: unchanged pages are 304s (sent with If-None-Match),
    // and the statuses not yet read are read in turn until every failure is seen.
    let mut polls = 1;
    let mut snap = snap;
    while snap.failures() < 3 {
        let before = m.seen().len();
        snap = reader.snapshot(&sc).unwrap();
        let seen = m.seen()[before..].to_vec();
        assert!(
            seen.len() <= 3 + MAX_STATUS_READS,
            "{} requests",
            seen.len()
        );
        for s in seen.iter().filter(|s| s.path.ends_with("/deployments")) {
            assert!(s.header("if-none-match").is_some());
            assert_eq!(s.status, 304);
        }
        polls += 1;
        assert!(polls <= 5, "every status read within a few polls");
    }
    assert_eq!(snap.failures(), 3);
    // Failures are final: never read again.
    let failed: Vec<u64> = snap
        .attempts
        .iter()
        .filter(|a| a.state == AttemptState::Failure)
        .map(|a| a.id)
        .collect();
    let before = m.seen().len();
    reader.snapshot(&sc).unwrap();
    for s in &m.seen()[before..] {
        for id in &failed {
            assert!(
                !s.path.contains(&format!("/deployments/{id}/")),
                "{}",
                s.path
            );
        }
    }
}

#[test]
fn the_newest_control_action_wins() {
    let m = mock();
    // The mock's login of a request without a token: an operator here.
    let l = ledger(&m).with_operators(vec!["octocat".into()]);
    let sc = scope("production");
    let control = |action, reason: &str| ControlPayload {
        action,
        reason: reason.into(),
        by: "alice".into(),
        host: "ops1".into(),
        now: false,
    };
    assert!(l.snapshot(&sc).unwrap().control.is_none());
    l.post_control(&sc, &control(ControlAction::Halt, "error rate up"))
        .unwrap();
    let s = l.snapshot(&sc).unwrap();
    let c = s.control.clone().unwrap();
    assert_eq!(c.payload.action, ControlAction::Halt);
    assert_eq!(c.payload.reason, "error rate up");
    assert!(s.halted());
    assert!(s.attempts.is_empty(), "a control action is not an attempt");
    l.post_control(&sc, &control(ControlAction::Resume, "fixed"))
        .unwrap();
    let s = l.snapshot(&sc).unwrap();
    assert_eq!(
        s.control.clone().unwrap().payload.action,
        ControlAction::Resume
    );
    assert!(!s.halted());
    assert!(s.ignored.is_empty());
    // Read by a ledger whose operators do not include that login, the
    // resume is ignored and the halt under it stays in force.
    let other = ledger(&m).with_operators(vec!["alice".into()]);
    let s = other.snapshot(&sc).unwrap();
    assert!(s.halted());
    assert_eq!(s.ignored.len(), 1);
    assert_eq!(s.ignored[0].creator, "octocat");
    assert_eq!(
        other.control(&sc).unwrap().unwrap().payload.action,
        ControlAction::Halt
    );
    let d = m.deployments();
    assert!(d.iter().all(|d| d.task == "switchyard:control"));
    assert!(d.iter().all(|d| d.state() == Some("success")));
}

#[test]
fn server_errors_are_retried_and_rate_limits_fail_the_read() {
    let m = mock();
    let l = ledger(&m);
    let sc = scope("production");
    let id = l.create_attempt(&sc, &payload("a", 1)).unwrap();
    l.post_state(id, AttemptState::Failure, "broken").unwrap();
    m.fail(
        &MockGithub::deployments_path(),
        &[Fault::Status(502), Fault::Status(503)],
    );
    let s = l.snapshot(&sc).unwrap();
    assert_eq!(s.failures(), 1);
    // A long rate limit: the read fails (and the agent then does not deploy).
    m.fail(
        &MockGithub::deployments_path(),
        &[Fault::RateLimit {
            reset_at: in_secs(3600),
        }],
    );
    let e = l.snapshot(&sc).unwrap_err().to_string();
    assert!(e.contains("rate limit"), "{e}");
    // A status post that hits a 5xx is retried.
    m.fail(
        &format!("{}/{id}/statuses", MockGithub::deployments_path()),
        &[Fault::Status(500)],
    );
    l.post_state(id, AttemptState::Inactive, "replaced")
        .unwrap();
    assert_eq!(m.deployments()[0].state(), Some("inactive"));
}

#[test]
fn an_attempt_on_a_tag_github_does_not_know_is_refused() {
    let m = mock();
    let l = ledger(&m);
    let e = l
        .create_attempt(
            &Scope {
                environment: "production".into(),
                tag: "v9.9.9".into(),
            },
            &payload("a", 1),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("tag exists"), "{e}");
    assert!(m.deployments().is_empty());
}
