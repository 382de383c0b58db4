//! The operator in charge: scheduled deploys run by the real agent on its
//! fake clock (at their time, not before, not while held, once even when they
//! fail), critical releases shown by `check`/`status` and deployed by their
//! deadline under `auto = "none"`, `deploy --dry-run` changing nothing, and
//! `diff` between two installed releases.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::agent::{Agent, eventually, free_port};
use crate::common::World;

/// A world whose app has `app_extra` in [apps.web] and an [agent] table.
fn agent_world(app_extra: &str) -> World {
    let w = World::with_extra(app_extra);
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{}\"\ncontrol_socket = \"{}\"\nshutdown_timeout = \"20s\"\n",
        free_port(),
        w.tmp.path().join("control.sock").display()
    ));
    std::fs::write(&w.config, cfg).unwrap();
    w
}

/// Moves the agent's fake clock (atomically).
fn set_clock(w: &World, t: Timestamp) {
    require_test_seams();
    let tmp = w.tmp.path().join("clock.tmp");
    std::fs::write(&tmp, t.to_string()).unwrap();
    std::fs::rename(&tmp, w.tmp.path().join("clock")).unwrap();
}

/// Without the test seams the agent's clock is real: say why the test fails.
fn require_test_seams() {
    #[cfg(not(feature = "test-seams"))]
    panic!("this test moves the agent's fake clock: run cargo test --features test-seams");
}

/// Moves the fake clock forward in steps, so the agent polls several times
/// while the time stays before `until`.
fn polls_before(w: &World, start: Timestamp, until: Timestamp) {
    let step = (until - start).total(jiff::Unit::Second).unwrap() as i64 / 12;
    for i in 1..=10 {
        set_clock(w, start + SignedDuration::from_secs(step * i));
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn current(w: &World) -> Option<String> {
    w.link("current")
}

/// A time two days from now (real time: `schedule add` runs on it), as
/// `--at` reads it in UTC, and as an instant.
fn in_two_days() -> (String, Timestamp) {
    let t = Timestamp::now() + SignedDuration::from_hours(48);
    let civil = t.strftime("%Y-%m-%d %H:%M").to_string();
    let exact: Timestamp = format!("{}:00Z", t.strftime("%Y-%m-%dT%H:%M"))
        .parse()
        .unwrap();
    (civil, exact)
}

fn entries(w: &World) -> Vec<serde_json::Value> {
    w.json(&["schedule", "list", "web"])["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Marks the app held, as `switchyard hold` records it.
fn set_hold(w: &World, on: bool) {
    let p = w.root.join(".switchyard/state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    st["hold"] = if on {
        serde_json::json!({"by": "alice", "since": "2026-01-01T00:00:00Z", "reason": "db upgrade", "automatic": false})
    } else {
        serde_json::Value::Null
    };
    std::fs::write(&p, serde_json::to_vec_pretty(&st).unwrap()).unwrap();
}

#[test]
fn a_scheduled_deploy_runs_at_its_time_not_before_not_while_held_and_once() {
    let w = agent_world("poll_interval = \"1s\"\nauto = \"none\"");
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let (civil, at) = in_two_days();
    let out = w.ok(&[
        "schedule",
        "add",
        "web",
        "1.1.0",
        "--at",
        &civil,
        "--timezone",
        "UTC",
    ]);
    assert!(out.contains("1.1.0 scheduled for"), "{out}");
    let start = at - SignedDuration::from_hours(1);
    set_clock(&w, start);
    let agent = Agent::start(&w);

    // Before its time: polls go by, nothing is deployed, status shows it.
    polls_before(&w, start, at);
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.0"), "ran early");
    let st = w.ok(&["status", "web"]);
    assert!(st.contains("scheduled:  1.1.0 at"), "{st}");

    // Due, but held: it waits, and says so in the log, the list and status.
    set_hold(&w, true);
    set_clock(&w, at + SignedDuration::from_secs(1));
    assert!(
        eventually(Duration::from_secs(20), || agent
            .log()
            .contains("a scheduled deploy is due, but the app is held")),
        "the agent did not say it waits for the hold:\n{}",
        agent.log()
    );
    for i in 2..6 {
        set_clock(&w, at + SignedDuration::from_secs(i * 60));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.0.0"),
        "deployed while held"
    );
    let list = w.ok(&["schedule", "list", "web"]);
    assert!(
        list.contains("HELD by alice") && list.contains("pending"),
        "{list}"
    );
    assert!(
        w.ok(&["status", "web"])
            .contains("WAITS: the app is held by alice")
    );

    // Released: it runs, once.
    set_hold(&w, false);
    set_clock(&w, at + SignedDuration::from_secs(600));
    assert!(
        eventually(Duration::from_secs(30), || current(&w).as_deref()
            == Some("releases/1.1.0")),
        "the scheduled deploy did not run:\n{}",
        agent.log()
    );
    assert!(eventually(
        Duration::from_secs(10),
        || entries(&w)[0]["state"] == "done"
    ));
    for i in 11..15 {
        set_clock(&w, at + SignedDuration::from_secs(i * 60));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        agent.log().matches("running the scheduled deploy").count(),
        1,
        "{}",
        agent.log()
    );
    let hist = w.ok(&["history", "web"]);
    for e in ["schedule.deploy.created", "schedule.deploy.ran"] {
        assert!(hist.contains(e), "{e} missing:\n{hist}");
    }
}

#[test]
fn a_failed_scheduled_deploy_is_marked_failed_and_never_runs_again() {
    let w = agent_world("poll_interval = \"1s\"\nauto = \"none\"");
    w.simple_release("v1.0.0");
    let v11 = w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let (civil, at) = in_two_days();
    w.ok(&[
        "schedule",
        "add",
        "web",
        "1.1.0",
        "--at",
        &civil,
        "--timezone",
        "UTC",
    ]);
    // The release disappears from the source before its time: the deploy fails.
    let aside = w.tmp.path().join("aside");
    std::fs::rename(&v11, &aside).unwrap();
    let mut now = at + SignedDuration::from_secs(5);
    set_clock(&w, now);
    let agent = Agent::start(&w);
    // The agent's time stands still until the test moves it.
    assert!(
        eventually(Duration::from_secs(30), || {
            now += SignedDuration::from_secs(1);
            set_clock(&w, now);
            entries(&w)[0]["state"] == "failed"
        }),
        "not marked failed:\n{}",
        agent.log()
    );
    let e = &entries(&w)[0];
    assert!(e["reason"].as_str().unwrap().contains("1.1.0"), "{e}");
    // Back in the source: still never retried.
    std::fs::rename(&aside, &v11).unwrap();
    for i in 1..8 {
        set_clock(&w, at + SignedDuration::from_secs(i * 120));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.0"));
    assert_eq!(
        agent.log().matches("running the scheduled deploy").count(),
        1,
        "{}",
        agent.log()
    );
    assert!(w.ok(&["schedule", "list", "web"]).contains("failed"));
}

#[test]
fn schedule_refuses_the_past_and_unknown_versions_and_cancel_works() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let (code, _, err) = w.run(&[
        "schedule",
        "add",
        "web",
        "1.1.0",
        "--at",
        "2020-01-01 03:00",
        "--timezone",
        "Europe/Berlin",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in the past"), "{err}");
    let (civil, _) = in_two_days();
    let (code, _, err) = w.run(&["schedule", "add", "web", "9.9.9", "--at", &civil]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("9.9.9"), "{err}");
    let (code, _, err) = w.run(&["schedule", "add", "web", "1.1.0", "--at", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(entries(&w).is_empty(), "a refused schedule was kept");

    let added = w.json(&[
        "schedule",
        "add",
        "web",
        "1.1.0",
        "--at",
        &civil,
        "--timezone",
        "UTC",
    ]);
    assert_eq!(added["state"], "pending");
    let (code, _, err) = w.run(&[
        "schedule",
        "add",
        "web",
        "1.1.0",
        "--at",
        &civil,
        "--timezone",
        "UTC",
    ]);
    assert_eq!(code, 2, "a second entry for 1.1.0: {err}");
    assert!(err.contains("already scheduled"), "{err}");
    let mode = std::fs::metadata(w.root.join(".switchyard/schedule.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    w.ok(&["schedule", "cancel", "web", "1.1.0"]);
    let e = &entries(&w)[0];
    assert_eq!(e["state"], "cancelled", "{e}");
    let (code, _, _) = w.run(&["schedule", "cancel", "web", added["id"].as_str().unwrap()]);
    assert_eq!(code, 5, "cancelled twice");
    let hist = w.ok(&["history", "web"]);
    assert!(hist.contains("schedule.deploy.cancelled"), "{hist}");
    assert!(!w.ok(&["status", "web"]).contains("scheduled:"));
}

/// A release folder whose signed release.toml marks it critical.
fn critical_release(w: &World, tag: &str, deadline: Timestamp) {
    let dir = w.simple_release(tag);
    let toml = dir.join("release.toml");
    std::fs::write(
        &toml,
        format!("critical = true\ndeadline = \"{deadline}\"\n"),
    )
    .unwrap();
    w.ok(&[
        "sign",
        toml.to_str().unwrap(),
        "--key",
        w.secret_key.to_str().unwrap(),
    ]);
}

#[test]
fn check_and_status_show_a_critical_release_and_its_deadline() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    critical_release(&w, "v1.0.1", "2030-01-01T00:00:00Z".parse().unwrap());
    let check = w.ok(&["check", "web"]);
    assert!(
        check.contains("CRITICAL:   1.0.1 must be deployed by 2030-01-01T00:00:00Z"),
        "{check}"
    );
    let j = w.json(&["check", "web"]);
    assert_eq!(j["critical"][0]["version"], "1.0.1");
    assert_eq!(j["critical"][0]["deadline"], "2030-01-01T00:00:00Z");
    let st = w.ok(&["status", "web"]);
    assert!(st.contains("CRITICAL:   1.0.1 must be deployed by"), "{st}");
    // An unsigned marking does not count.
    std::fs::remove_file(w.drop_dir.join("v1.0.1/release.toml.minisig")).unwrap();
    assert!(!w.ok(&["check", "web"]).contains("CRITICAL"));
}

#[test]
fn auto_none_deploys_a_critical_release_once_its_deadline_passes() {
    let w = agent_world("poll_interval = \"1s\"\nauto = \"none\"");
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let deadline: Timestamp = "2026-12-01T03:00:00Z".parse().unwrap();
    critical_release(&w, "v1.0.1", deadline);
    let start = deadline - SignedDuration::from_hours(2);
    let mut now = start;
    set_clock(&w, now);
    let agent = Agent::start(&w);
    assert!(
        eventually(Duration::from_secs(20), || {
            now += SignedDuration::from_secs(1);
            set_clock(&w, now);
            agent.log().contains("a critical release is out")
        }),
        "not announced:\n{}",
        agent.log()
    );
    polls_before(&w, start, deadline);
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.0.0"),
        "deployed before its deadline"
    );
    let mut now = deadline + SignedDuration::from_secs(1);
    assert!(
        eventually(Duration::from_secs(30), || {
            now += SignedDuration::from_secs(1);
            set_clock(&w, now);
            current(&w).as_deref() == Some("releases/1.0.1")
        }),
        "the critical release was not deployed:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.log().matches("a critical release is out").count(),
        1,
        "announced more than once:\n{}",
        agent.log()
    );
}

/// Every path under `dir` with its type, mode, and content or link target.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let body = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).unwrap()
            };
            let key = p.strip_prefix(dir).unwrap().display().to_string();
            out.insert(key, (m.permissions().mode(), body));
        }
    }
    out
}

#[test]
fn deploy_dry_run_changes_nothing_and_prints_the_plan() {
    let w = World::with_extra("backup_shared = true");
    let extra = "[apps.web.hooks]\nwarm = 'true'\nmigrate = 'echo migrating'\n\n[apps.web.trust]";
    let cfg = std::fs::read_to_string(&w.config)
        .unwrap()
        .replacen("[apps.web.trust]", extra, 1);
    std::fs::write(&w.config, cfg).unwrap();
    for v in ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"] {
        w.simple_release(v);
    }
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        w.ok(&["deploy", "web", v]);
    }
    let before = (snapshot(&w.root), snapshot(&w.drop_dir));
    let out = w.ok(&["deploy", "web", "latest", "--dry-run"]);
    for want in [
        "dry run: nothing was changed",
        "plan:       1.2.0 -> 1.3.0",
        "would pass: yes",
        "hook:       warm",
        "hook:       migrate",
        "backup:     yes",
        "migrate:    yes",
        "prune:      would remove 1.0.0",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let j = w.json(&["deploy", "web", "1.3.0", "--dry-run"]);
    assert_eq!(j["to"], "1.3.0");
    assert_eq!(j["prune"], serde_json::json!(["1.0.0"]));
    assert_eq!(j["would_pass"], true);
    // A downgrade: the plan says which check fails, and exits as the deploy would.
    let (code, out, err) = w.run(&["deploy", "web", "1.1.0", "--dry-run"]);
    assert_eq!(code, 6, "{out}{err}");
    assert!(out.contains("FAIL downgrade"), "{out}");
    assert!(err.contains("would be refused"), "{err}");
    assert_eq!(
        before,
        (snapshot(&w.root), snapshot(&w.drop_dir)),
        "a dry run changed files"
    );
    assert_eq!(current(&w).as_deref(), Some("releases/1.2.0"));
}

#[test]
fn diff_lists_added_removed_and_changed_files() {
    let w = World::new();
    w.release(
        "v1.0.0",
        &[
            ("a.txt", "one\n"),
            ("gone.txt", "bye\n"),
            ("same.txt", "=\n"),
        ],
    );
    w.release(
        "v1.1.0",
        &[
            ("a.txt", "two\n"),
            ("new/b.txt", "hi\n"),
            ("same.txt", "=\n"),
        ],
    );
    w.ok(&["install", "web", "1.0.0"]);
    w.ok(&["install", "web", "1.1.0"]);
    let out = w.ok(&["diff", "web", "1.0.0", "1.1.0"]);
    for want in [
        "added    new/b.txt (file)",
        "removed  gone.txt (file)",
        "changed  a.txt (content)",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(!out.contains("same.txt"), "{out}");
    assert!(out.contains("1.0.0 -> 1.1.0: "), "{out}");
    let j = w.json(&["diff", "web", "1.0.0", "1.1.0"]);
    assert_eq!(j["changed"][0]["path"], "a.txt");
    assert_eq!(j["removed"][0]["path"], "gone.txt");
    let (code, _, err) = w.run(&["diff", "web", "1.0.0", "2.0.0"]);
    assert_eq!(code, 5, "{err}");
}

#[test]
fn check_reads_a_signed_release_toml_from_github_and_downloads_nothing_else() {
    use crate::mock_github::MockGithub;
    let m = MockGithub::start();
    let w = World::new();
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-{{version}}.tar.gz\"\n",
        m.api_url()
    ));
    let plain = w.simple_release("v1.0.0");
    m.push(m.release_from_dir("v1.0.0", &plain));
    w.ok(&["deploy", "web", "1.0.0"]);
    critical_release(&w, "v1.1.0", "2030-01-01T00:00:00Z".parse().unwrap());
    m.push(m.release_from_dir("v1.1.0", &w.drop_dir.join("v1.1.0")));
    let plain = w.simple_release("v1.2.0");
    m.push(m.release_from_dir("v1.2.0", &plain));
    let before = m.seen().len();
    let out = w.ok(&["check", "web"]);
    assert!(
        out.contains("CRITICAL:   1.1.0 must be deployed by 2030-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(!out.contains("CRITICAL:   1.2.0"), "{out}");
    let hits: Vec<String> = m.seen()[before..].iter().map(|s| s.path.clone()).collect();
    // The listing, and release.toml with its signature (each through the
    // asset endpoint and its redirect): no asset, no checksum list.
    assert_eq!(hits.len(), 5, "{hits:?}");
}
