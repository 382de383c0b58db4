//! `switchyard fleet status|halt|resume|revert` against the mock GitHub's
//! Deployments, with a ledger written by the test (no agents here: the
//! 50-agent scenarios are in `fleet_sim`): what status reads and computes,
//! what the control actions post, what the local audit log records, and
//! the errors (no fleet, GitHub down: nothing posted).
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::common::World;
use crate::mock_github::{Fault, MockGithub, now_secs};
use switchyard::testing::{
    AttemptPayload, AttemptState, GithubLedger, GithubOptions, GithubSourceConfig, Ledger,
    MAX_STATUS_READS, Scope, Signing,
};

/// The plan of the issue's example.
const PLAN: &str = r#"[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 10, after = "30m" },
  { percent = 50, after = "2h" },
  { percent = 100, after = "4h" },
]
max_failures = 2
"#;

/// Writes the config: the app on the mock, in a fleet unless `fleet` is false.
fn configure(w: &World, m: &MockGithub, fleet: bool) {
    let fleet = if fleet {
        // The mock's login of a request without a token (this CLI's).
        "\n[apps.web.fleet]\nenvironment = \"production\"\noperators = [\"octocat\"]\n"
    } else {
        ""
    };
    let text = format!(
        "[agent]\nhost_id = \"ops1\"\n\n[apps.web]\nroot = \"{}\"\nkeep_releases = 3\n\n[apps.web.source]\ngithub = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-{{version}}.tar.gz\"\n\n[apps.web.trust]\nkeys = [\"{}\"]\n{fleet}",
        w.root.display(),
        m.api_url(),
        w.public_b64
    );
    std::fs::write(&w.config, text).unwrap();
}

/// Publishes `tag` with the signed plan, published `ago` seconds ago.
fn publish(w: &World, m: &MockGithub, tag: &str, plan: &str, ago: i64) {
    let src = w.tmp.path().join(format!("src-{tag}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("VERSION"), tag).unwrap();
    let signing = Signing {
        key: w.secret_key.clone(),
        password: None,
        repo: Some("acme/web".into()),
    };
    let out = w.tmp.path().join("packed");
    let mut packed = switchyard::testing::pack_signed(
        &src,
        tag,
        &out,
        Some("web-{version}.tar.gz"),
        Some(&signing),
    )
    .unwrap();
    switchyard::testing::write_release_toml(&mut packed, tag, plan.as_bytes(), &signing).unwrap();
    let mut r = m.release_from_dir(tag, &packed.dir);
    r.published_at = jiff::Timestamp::from_second(now_secs() - ago)
        .unwrap()
        .to_string();
    m.push(r);
}

/// A ledger writer on the mock (the hosts' side).
fn writer(m: &MockGithub) -> GithubLedger {
    let mut cfg = GithubSourceConfig::new("acme", "web");
    cfg.api_url = m.api_url();
    GithubLedger::new("web", cfg).with_options(GithubOptions {
        retry_min_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
        ..GithubOptions::default()
    })
}

fn scope() -> Scope {
    Scope {
        environment: "production".into(),
        tag: "v1.2.0".into(),
    }
}

/// The hosts the test writes: (id, wave, final state), with h04 failing
/// after a first failed attempt of its own.
fn seed(m: &MockGithub) -> Vec<(String, usize, AttemptState)> {
    let l = writer(m);
    let mut truth = Vec::new();
    let add = |host: &str, wave: usize, state: AttemptState| {
        let id = l
            .create_attempt(
                &scope(),
                &AttemptPayload {
                    host_id: host.into(),
                    hostname: format!("{host}.example"),
                    app: "web".into(),
                    version: "1.2.0".into(),
                    wave,
                },
            )
            .unwrap();
        if state != AttemptState::InProgress {
            l.post_state(id, state, &format!("{host} {state}")).unwrap();
        }
    };
    add("h04", 2, AttemptState::Failure);
    let hosts = [
        ("c01", 1, AttemptState::Success),
        ("c02", 1, AttemptState::Success),
        ("h03", 2, AttemptState::InProgress),
        ("h04", 2, AttemptState::Failure),
    ];
    for (h, wave, st) in hosts {
        add(h, wave, st);
        truth.push((h.to_string(), wave, st));
    }
    // Enough hosts that one snapshot cannot read every state.
    for i in 5..17 {
        let h = format!("h{i:02}");
        add(&h, 2, AttemptState::Success);
        truth.push((h, 2, AttemptState::Success));
    }
    truth
}

fn setup() -> (World, MockGithub) {
    let w = World::new();
    let m = MockGithub::start();
    configure(&w, &m, true);
    // Published an hour ago: waves 1 and 2 (30 min) are open, wave 3 opens
    // at 2h30m, that is in 1h30m.
    publish(&w, &m, "v1.2.0", PLAN, 3600);
    (w, m)
}

/// This host's audit events (none before the root exists).
fn audit(w: &World) -> Vec<serde_json::Value> {
    let (code, out, _) = w.run(&["history", "web", "--json"]);
    if code != 0 {
        return Vec::new();
    }
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn status_reads_every_host_and_the_plans_waves() {
    let (w, m) = setup();
    let truth = seed(&m);
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["version"], "1.2.0");
    assert_eq!(s["tag"], "v1.2.0");
    assert_eq!(s["environment"], "production");
    assert_eq!(s["plan"], true);
    assert_eq!(s["max_failures"], 2);
    let hosts = s["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), truth.len(), "{s:#}");
    for (h, wave, st) in &truth {
        let row = hosts
            .iter()
            .find(|r| r["host_id"] == h.as_str())
            .unwrap_or_else(|| panic!("{h} missing"));
        assert_eq!(row["wave"], *wave, "{h}");
        assert_eq!(
            row["state"],
            st.as_str(),
            "{h}: every state read, none left pending"
        );
        assert_eq!(row["hostname"], format!("{h}.example"));
        let age = row["age_secs"].as_i64().unwrap();
        assert!((0..120).contains(&age), "{h}: age {age}");
    }
    let h04 = hosts.iter().find(|r| r["host_id"] == "h04").unwrap();
    assert_eq!(h04["attempts"], 2);
    assert_eq!(h04["failures"], 2);
    assert_eq!(h04["description"], "h04 failure");
    // One host failed (twice): below max_failures, not halted.
    assert_eq!(s["failures"], 1);
    assert_eq!(s["halted"], false);
    assert!(s["halt"].is_null());
    assert_eq!(s["open_wave"], 2);
    assert_eq!(s["next_wave"]["wave"], 3);
    let in_secs = s["next_wave"]["in_secs"].as_i64().unwrap();
    assert!((5300..=5400).contains(&in_secs), "{in_secs}");
    let waves = s["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 4);
    assert_eq!(waves[0]["labels"], serde_json::json!(["canary"]));
    assert_eq!(waves[0]["hosts"]["success"], 2);
    assert_eq!(waves[1]["hosts"]["success"], 12);
    assert_eq!(waves[1]["hosts"]["failure"], 1);
    assert_eq!(waves[1]["hosts"]["in_progress"], 1);
    assert_eq!(waves[2]["open"], false);
    // 17 attempts: reading every state takes three snapshots of one page
    // and at most 8 status reads each.
    let requests = s["requests"].as_u64().unwrap();
    assert!(
        (19..=3 * (1 + MAX_STATUS_READS as u64)).contains(&requests),
        "{requests} requests"
    );

    let text = w.ok(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert!(text.contains("not halted"), "{text}");
    assert!(
        text.contains("open: wave 2 of 4; wave 3 opens at"),
        "{text}"
    );
    assert!(text.contains("h04.example"), "{text}");
    // Without --version: the newest release.
    assert_eq!(w.json(&["fleet", "status", "web"])["version"], "1.2.0");
}

#[test]
fn halt_resume_and_revert_post_control_actions_and_are_audited_here() {
    let (w, m) = setup();
    seed(&m);
    let out = w.ok(&["fleet", "halt", "web", "1.2.0", "--reason", "error rate up"]);
    assert!(out.contains("halted: no agent starts web 1.2.0"), "{out}");
    let controls: Vec<_> = m
        .deployments()
        .into_iter()
        .filter(|d| d.task == "switchyard:control")
        .collect();
    assert_eq!(controls.len(), 1);
    assert_eq!(controls[0].field("action"), "halt");
    assert_eq!(controls[0].field("reason"), "error rate up");
    assert_eq!(controls[0].git_ref, "v1.2.0");
    assert_eq!(controls[0].state(), Some("success"));

    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["halted"], true);
    assert_eq!(s["halt"]["cause"], "operator");
    assert_eq!(s["halt"]["action"], "halt");
    assert_eq!(s["halt"]["reason"], "error rate up");
    assert_eq!(s["halt"]["by"], controls[0].field("by"));
    assert!(!controls[0].field("by").is_empty());

    let r = w.json(&["fleet", "resume", "web", "1.2.0"]);
    assert_eq!(r["action"], "resume");
    assert_eq!(r["previous"]["action"], "halt");
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["halted"], false);
    assert_eq!(s["control"]["action"], "resume");

    let r = w.json(&[
        "fleet", "revert", "web", "1.2.0", "--reason", "bad data", "--now",
    ]);
    assert_eq!(r["action"], "revert");
    assert_eq!(r["now"], true);
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["halted"], true);
    assert_eq!(s["halt"]["action"], "revert");
    let text = w.ok(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert!(text.contains("HALTED and REVERTED by"), "{text}");
    assert!(text.contains("bad data"), "{text}");

    // Each command is in this host's audit log, in order, chained.
    let fleet: Vec<(String, String, String)> = audit(&w)
        .iter()
        .filter(|e| e["event"].as_str().unwrap().starts_with("fleet."))
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
                e["details"]["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        fleet,
        vec![
            ("fleet.halt".into(), "1.2.0".into(), "error rate up".into()),
            (
                "fleet.resume".into(),
                "1.2.0".into(),
                "resumed by an operator".into()
            ),
            ("fleet.revert".into(), "1.2.0".into(), "bad data".into()),
        ]
    );
    w.ok(&["audit", "verify", "web"]);
}

#[test]
fn failures_up_to_max_failures_halt_the_rollout_in_status() {
    let (w, m) = setup();
    seed(&m);
    let l = writer(&m);
    let id = l
        .create_attempt(
            &scope(),
            &AttemptPayload {
                host_id: "h99".into(),
                hostname: "h99.example".into(),
                app: "web".into(),
                version: "1.2.0".into(),
                wave: 2,
            },
        )
        .unwrap();
    l.post_state(id, AttemptState::Error, "hook timed out")
        .unwrap();
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["failures"], 2);
    assert_eq!(s["halted"], true);
    assert_eq!(s["halt"]["cause"], "failures");
    assert!(s["control"].is_null());
}

#[test]
fn errors_say_what_to_do_and_post_nothing() {
    let (w, m) = setup();
    // Not in a fleet: a usage error naming the table to add.
    configure(&w, &m, false);
    let (code, _, err) = w.run(&["fleet", "halt", "web", "1.2.0", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[apps.web.fleet]"), "{err}");
    configure(&w, &m, true);
    // A release the source does not offer.
    let (code, _, err) = w.run(&["fleet", "status", "web", "--version", "9.9.9"]);
    assert_eq!(code, 5, "{err}");
    // Halt and revert need a reason.
    let (code, _, err) = w.run(&["fleet", "halt", "web", "1.2.0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--reason"), "{err}");
    // GitHub down: said so, nothing posted, nothing audited.
    m.fail(&MockGithub::deployments_path(), &[Fault::Status(503); 40]);
    let (code, _, err) = w.run(&["fleet", "halt", "web", "1.2.0", "--reason", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was posted"), "{err}");
    assert!(
        err.contains("503") || err.contains("Service Unavailable") || err.contains("server"),
        "{err}"
    );
    assert!(m.deployments().is_empty());
    assert!(
        !audit(&w)
            .iter()
            .any(|e| e["event"].as_str().unwrap().starts_with("fleet.")),
    );
}

#[test]
fn help_says_what_each_command_does_to_the_fleet_and_what_token_it_needs() {
    let w = World::new();
    // clap wraps lines to the terminal's width: compare words.
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let out = words(w.ok(&["fleet", "--help"]));
    for needle in [
        "no agent starts the version",
        "every host live on it goes back",
        "max_failures",
        "Deployments: read for `status`, read and write for `halt`",
        "fleet.halt",
    ] {
        assert!(
            out.contains(needle),
            "{needle:?} missing from fleet --help:\n{out}"
        );
    }
    let out = words(w.ok(&["fleet", "revert", "--help"]));
    assert!(out.contains("--now"), "{out}");
    assert!(out.contains("outside their deploy windows"), "{out}");
    for cmd in ["resume", "revert"] {
        let out = words(w.ok(&["fleet", cmd, "--help"]));
        assert!(
            out.contains("its GitHub login must be in [apps.NAME.fleet] operators"),
            "{cmd}: {out}"
        );
    }
}

#[test]
fn without_operators_config_check_and_resume_say_nobody_can_resume() {
    let (w, _m) = setup();
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, text.replace("operators = [\"octocat\"]\n", "")).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_eq!(code, 0, "a warning, not an error: {out}{err}");
    assert!(
        format!("{out}{err}").contains("apps.web.fleet.operators is empty"),
        "{out}{err}"
    );
    // Said before posting; posted anyway (listing the login later makes it
    // count).
    let (code, out, err) = w.run(&["fleet", "resume", "web", "1.2.0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("apps.web.fleet.operators is empty: the agents obey this resume from nobody"),
        "{err}"
    );
    // The status shows the resume as ignored, nothing in force.
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert!(s["control"].is_null(), "{s}");
    assert_eq!(s["ignored"][0]["action"], "resume", "{s}");
    assert_eq!(s["ignored"][0]["creator"], "octocat", "{s}");
    // A halt needs no operator: no such warning, and it is in force.
    let (_, _, err) = w.run(&["fleet", "halt", "web", "1.2.0", "--reason", "x"]);
    assert!(!err.contains("operators is empty"), "{err}");
    let s = w.json(&["fleet", "status", "web", "--version", "1.2.0"]);
    assert_eq!(s["control"]["action"], "halt", "{s}");
    assert_eq!(s["halted"], true, "{s}");
}
