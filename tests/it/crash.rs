//! Crash consistency: the process is killed with SIGKILL at named checkpoints
//! and at random instants; `current` stays valid throughout, and the next
//! command repairs everything by itself.
#![allow(clippy::disallowed_methods)]

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::common::World;

fn crash_at(w: &World, checkpoint: &str, args: &[&str]) {
    require_test_seams();
    let out = w
        .cmd()
        .env("SWITCHYARD_CRASH_AT", checkpoint)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{args:?} should have been killed at {checkpoint}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crash checkpoints exist only in a build with the test seams: without
/// them these tests would see no crash, so they say why they fail.
fn require_test_seams() {
    #[cfg(not(feature = "test-seams"))]
    panic!(
        "SWITCHYARD_CRASH_AT is obeyed only by a build with the test seams: run cargo test --features test-seams"
    );
}

#[test]
fn install_killed_at_every_checkpoint() {
    for cp in [
        "install.journaled",
        "install.unpacked",
        "install.before_rename",
        "install.renamed",
        "install.recorded",
    ] {
        let w = World::new();
        w.simple_release("v1.0.0");
        w.simple_release("v1.1.0");
        w.ok(&["deploy", "web", "1.0.0"]);
        crash_at(&w, cp, &["install", "web", "1.1.0"]);
        // At the instant of the crash, current is intact.
        assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"), "{cp}");
        w.assert_consistent();
        // A read-only command reports the interruption without repairing.
        let st = w.json(&["status", "web"]);
        assert!(
            st["interrupted"]
                .as_str()
                .is_some_and(|s| s.contains("install")),
            "{cp}: {st}"
        );
        // The next mutating command repairs, then does its job.
        w.ok(&["deploy", "web", "1.1.0"]);
        w.assert_no_debris();
        w.assert_consistent();
        assert_eq!(w.current_content(), "1.1.0\n", "{cp}");
        let h = w.json(&["history", "web"]);
        assert!(
            h.as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "release.install.rolled_back"),
            "{cp}: the repair is in the history"
        );
        w.ok(&["audit", "verify", "web"]);
    }
}

#[test]
fn promote_and_revert_killed_at_every_checkpoint() {
    for op in ["promote", "revert"] {
        for cp in [
            "journaled",
            "last_good_swapped",
            "current_swapped",
            "recorded",
        ] {
            let cp = format!("{op}.{cp}");
            let w = World::new();
            w.simple_release("v1.0.0");
            w.simple_release("v1.1.0");
            w.ok(&["deploy", "web", "1.0.0"]);
            w.ok(&["install", "web", "1.1.0"]);
            if op == "revert" {
                w.ok(&["promote", "web", "1.1.0"]);
            }
            let before = (w.link("current"), w.link("last-good"));
            let args: Vec<&str> = if op == "promote" {
                vec!["promote", "web", "1.1.0"]
            } else {
                vec!["revert", "web"]
            };
            crash_at(&w, &cp, &args);
            w.assert_consistent();
            // Repair restores exactly the state before the interrupted switch.
            w.ok(&["prune", "web"]);
            assert_eq!((w.link("current"), w.link("last-good")), before, "{cp}");
            w.assert_no_debris();
            // And the operation then succeeds.
            w.ok(&args);
            w.assert_consistent();
        }
    }
}

/// SIGKILL at random instants across whole deploy/promote/revert runs.
/// `SWITCHYARD_CRASH_TRIALS` raises the count (examples/crash-soak.sh).
#[test]
fn random_kills_never_break_current() {
    let trials: u32 = std::env::var("SWITCHYARD_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let w = World::new();
    // A release big enough that installing it takes a while.
    let files: Vec<(String, String)> = (0..1500)
        .map(|i| {
            (
                format!("assets/{}/f{i}.txt", i % 37),
                format!("{i} {}\n", "x".repeat(i % 200)),
            )
        })
        .collect();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        let ver = format!("{v}\n");
        let idx = format!("<h1>{v}</h1>\n");
        let mut v_files: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        v_files.push(("VERSION", &ver));
        v_files.push(("public/index.html", &idx));
        w.release(&format!("v{v}"), &v_files);
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    // Measure how long a full deploy takes, to spread kills across it.
    // Each kind of run is timed once, so kills spread across its whole length.
    let t = Instant::now();
    w.ok(&["deploy", "web", "1.1.0"]);
    let install_span = t.elapsed().max(Duration::from_millis(20));
    let t = Instant::now();
    w.ok(&["revert", "web"]);
    let switch_span = t.elapsed().max(Duration::from_millis(5));
    let mut seed = 0x9e37_79b9_u64 ^ std::process::id() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ops: [&[&str]; 4] = [
        &["deploy", "web", "1.2.0"],
        &["promote", "web", "1.1.0"],
        &["revert", "web"],
        &["deploy", "web", "1.1.0"],
    ];
    let mut killed = 0;
    for i in 0..trials {
        let args = ops[(next() % ops.len() as u64) as usize];
        let installs = args[0] == "deploy" && !w.root.join("releases").join(args[2]).exists();
        let span = if installs { install_span } else { switch_span };
        let delay = Duration::from_micros(next() % (span.as_micros() as u64 + 1));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
            .arg("--config")
            .arg(&w.config)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        }
        // The instant after the kill: links resolve to complete releases
        // whose every file matches its manifest.
        w.assert_consistent();
        // Any command repairs; then the state is clean.
        let (code, out, err) = w.run(&["prune", "web"]);
        assert_eq!(code, 0, "trial {i} {args:?}: {out}{err}");
        w.assert_no_debris();
        w.assert_consistent();
        // Uninstall 1.2.0 now and then so deploys keep having work to do.
        if w.link("current").as_deref() != Some("releases/1.2.0")
            && w.link("last-good").as_deref() != Some("releases/1.2.0")
            && w.root.join("releases/1.2.0").exists()
        {
            std::fs::remove_dir_all(w.root.join("releases/1.2.0")).ok();
            std::fs::remove_file(w.root.join(".switchyard/manifests/1.2.0.json")).ok();
        }
    }
    eprintln!("random kills: {trials} trials, {killed} killed mid-run");
    // The next deploy succeeds.
    w.ok(&["deploy", "web", "1.2.0"]);
    w.assert_consistent();
    w.ok(&["audit", "verify", "web"]);
}

#[test]
fn lock_contention_between_processes() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // Another process (this test) holds the lock.
    let paths = switchyard::testing::AppPaths::new(&w.root);
    let lock = switchyard::testing::AppLock::acquire(&paths, "web", "test holder", false).unwrap();
    let (code, _, err) = w.run(&["revert", "web", "--to", "1.0.0"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("test holder"),
        "the message names the holder: {err}"
    );
    let st = w.json(&["status", "web"]);
    assert_eq!(st["running"]["operation"], "test holder");

    // --wait queues behind the holder.
    let waiter = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .arg("--config")
        .arg(&w.config)
        .args(["prune", "web", "--wait"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(lock);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
}

#[test]
fn lock_of_a_killed_process_is_recovered() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // Killed while holding the lock, mid-operation.
    crash_at(&w, "install.unpacked", &["install", "web", "1.1.0"]);
    w.ok(&["deploy", "web", "1.1.0"]);
    w.assert_no_debris();
}

/// The audit events of app `web`, in order, that `keep` keeps.
fn events_where(w: &World, keep: impl Fn(&str) -> bool) -> Vec<String> {
    w.json(&["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .filter(|e| keep(e))
        .collect()
}

/// An operator's change is saved with its audit event in one write: killed
/// after the change and before its event is in the log, or after that and
/// before the event is cleared from `state.json`, the change stands and the
/// next command that takes the lock records the event exactly once, in
/// order.
#[test]
fn hold_and_quarantine_killed_between_the_change_and_its_audit_line() {
    for cp in ["operator.saved", "operator.appended"] {
        let w = World::new();
        w.simple_release("v1.0.0");
        w.simple_release("v1.1.0");
        w.ok(&["deploy", "web", "1.0.0"]);
        crash_at(&w, cp, &["hold", "web", "--reason", "freeze"]);
        let st = w.json(&["status", "web"]);
        assert_eq!(st["hold"]["reason"], "freeze", "{cp}: {st}");
        w.ok(&["unhold", "web"]);
        crash_at(&w, cp, &["quarantine", "web", "1.1.0", "--reason", "bad"]);
        let st = w.json(&["status", "web"]);
        assert!(st["quarantined"]["1.1.0"].is_object(), "{cp}: {st}");
        w.ok(&["unquarantine", "web", "1.1.0"]);
        w.assert_consistent();
        let events = events_where(&w, |e| e.starts_with("app.") || e.contains("quarantine"));
        assert_eq!(
            events,
            [
                "app.hold",
                "app.unhold",
                "release.quarantine",
                "release.unquarantine"
            ],
            "{cp}"
        );
    }
}

/// The same for a schedule change, saved in `schedule.json` with its event.
#[test]
fn schedule_add_killed_between_the_change_and_its_audit_line() {
    for cp in ["schedule.saved", "schedule.appended"] {
        let w = World::new();
        w.simple_release("v1.0.0");
        w.simple_release("v1.1.0");
        w.ok(&["deploy", "web", "1.0.0"]);
        let add = [
            "schedule",
            "add",
            "web",
            "1.1.0",
            "--at",
            "2099-01-01 03:00",
            "--timezone",
            "UTC",
        ];
        crash_at(&w, cp, &add);
        let list = w.ok(&["schedule", "list", "web"]);
        assert!(list.contains("1.1.0"), "{cp}: the entry was saved: {list}");
        w.ok(&["schedule", "cancel", "web", "1.1.0"]);
        let events = events_where(&w, |e| e.starts_with("schedule."));
        assert_eq!(
            events,
            ["schedule.deploy.created", "schedule.deploy.cancelled"],
            "{cp}"
        );
    }
}

/// And for `resolve`, whose cleared block is saved with its event.
#[test]
fn resolve_killed_between_the_change_and_its_audit_line() {
    for cp in ["operator.saved", "operator.appended"] {
        let w = World::new();
        w.simple_release("v1.0.0");
        w.ok(&["deploy", "web", "1.0.0"]);
        crash_at(&w, cp, &["resolve", "web"]);
        w.ok(&["hold", "web"]);
        let events = events_where(&w, |e| {
            e == "system.resolve.completed" || e.starts_with("app.")
        });
        assert_eq!(events, ["system.resolve.completed", "app.hold"], "{cp}");
    }
}
