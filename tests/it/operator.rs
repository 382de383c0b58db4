//! The operator is in charge: quarantine that can be lifted and does not
//! raise the downgrade floor, one definition of a major upgrade for every
//! command, promote of a release that was only installed, `revert` that
//! walks back through the live history, and a command that waited for the
//! lock refusing when someone else changed the app meanwhile.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use crate::common::World;

/// A world whose warm hook fails for a release carrying `BROKEN`, and for
/// every release while `root/outage` exists (a registry outage); a release
/// carrying `SLOW` warms for 3 s.
fn world() -> World {
    let w = World::new();
    w.write_config_with_trust(
        "",
        &format!(
            "keys = [\"{}\"]\n\n[apps.web.hooks]\nwarm = 'test ! -e BROKEN && test ! -e \"$SWITCHYARD_ROOT/outage\" && if [ -e SLOW ]; then sleep 3; fi'\n",
            w.public_b64
        ),
    );
    w
}

fn broken(w: &World, tag: &str) {
    let v = tag.trim_start_matches('v');
    w.release(tag, &[("VERSION", &format!("{v}\n")), ("BROKEN", "yes")]);
}

fn quarantined(w: &World) -> Vec<String> {
    let st = w.json(&["status", "web"]);
    st["quarantined"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_hotfix_below_a_quarantined_release_deploys() {
    let w = world();
    w.simple_release("v2.0.0");
    broken(&w, "v2.1.0");
    w.simple_release("v2.0.1");
    w.ok(&["deploy", "web", "2.0.0"]);
    let (code, _, err) = w.run(&["deploy", "web", "2.1.0"]);
    assert_eq!(code, 7, "{err}");
    assert_eq!(quarantined(&w), ["2.1.0"]);
    let st = w.json(&["status", "web"]);
    assert_eq!(st["highest_verified"], "2.1.0");
    assert_eq!(st["downgrade_floor"], "2.0.0");
    // Before: refused as a downgrade below 2.1.0 (exit 3).
    w.ok(&["deploy", "web", "2.0.1"]);
    assert_eq!(w.current_content(), "2.0.1\n");
    // Still refused below what is verified and good.
    w.simple_release("v2.0.0-hotfix.1");
    let (code, _, err) = w.run(&["install", "web", "2.0.0-hotfix.1"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn quarantine_has_a_way_out_and_prune_removes_it_first() {
    let w = world();
    for v in ["v2.0.0", "v2.0.1", "v2.0.2", "v2.0.3"] {
        w.simple_release(v);
    }
    w.ok(&["deploy", "web", "2.0.0"]);
    w.ok(&["deploy", "web", "2.0.1"]);
    // A registry outage fails the warm hook: 2.0.2 is quarantined.
    std::fs::write(w.root.join("outage"), "").unwrap();
    let (code, _, err) = w.run(&["deploy", "web", "2.0.2"]);
    assert_eq!(code, 7, "{err}");
    std::fs::remove_file(w.root.join("outage")).unwrap();
    assert_eq!(quarantined(&w), ["2.0.2"]);
    let (code, _, err) = w.run(&["deploy", "web", "2.0.2"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("--force"), "{err}");
    // A successful forced deploy lifts the quarantine.
    w.ok(&["deploy", "web", "2.0.2", "--force"]);
    assert!(quarantined(&w).is_empty());
    let events = w.json(&["history", "web"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "release.unquarantine" && e["to"] == "2.0.2")
    );

    // By hand: quarantine, marked in list and status, lifted by unquarantine.
    let out = w.ok(&["quarantine", "web", "2.0.0", "--reason", "leaks memory"]);
    assert!(out.contains("quarantined (leaks memory)"), "{out}");
    let list = w.ok(&["list", "web"]);
    assert!(list.contains("QUARANTINED: leaks memory"), "{list}");
    let rows = w.json(&["list", "web"]);
    let row = |v: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .unwrap()
            .clone()
    };
    assert_eq!(row("2.0.0")["quarantined"]["reason"], "leaks memory");
    assert!(row("2.0.1")["quarantined"].is_null());
    assert!(w.ok(&["status", "web"]).contains("quarantined: 2.0.0"));
    w.ok(&["unquarantine", "web", "2.0.0"]);
    assert!(quarantined(&w).is_empty());

    // Prune takes the quarantined release before a good one: with
    // keep_releases = 3 and four installed, the good 2.0.0 (oldest) stays
    // and the quarantined 2.0.1 goes... once 2.0.1 is not last-good.
    w.ok(&["deploy", "web", "2.0.3"]);
    let installed = |w: &World| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(w.root.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    // 2.0.3 live, 2.0.2 last-good; 2.0.0 was the oldest and went.
    assert_eq!(installed(&w), ["2.0.1", "2.0.2", "2.0.3"]);
    w.simple_release("v2.0.4");
    w.ok(&["install", "web", "2.0.4"]);
    w.ok(&["quarantine", "web", "2.0.4", "--reason", "bad build"]);
    let pruned = w.json(&["prune", "web"]);
    // Before: the oldest, the good 2.0.1, was removed in its place.
    assert_eq!(pruned["removed"], serde_json::json!(["2.0.4"]));
    assert_eq!(installed(&w), ["2.0.1", "2.0.2", "2.0.3"]);
}

#[test]
fn one_definition_of_a_major_upgrade_and_honest_suggestions() {
    let w = world();
    w.simple_release("v0.0.1");
    w.simple_release("v0.0.2");
    w.ok(&["deploy", "web", "0.0.1"]);
    // Cargo's rule: for 0.0.z, any bump is breaking; check and deploy agree.
    let c = w.json(&["check", "web"]);
    assert_eq!(c["major_upgrade"], true, "{c}");
    assert_eq!(c["suggest"], "switchyard deploy web 0.0.2 --allow-major");
    let (code, _, err) = w.run(&["deploy", "web", "0.0.2"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("--allow-major"), "{err}");
    // install + promote does not skip the gate.
    w.ok(&["install", "web", "0.0.2"]);
    let (code, _, err) = w.run(&["promote", "web", "0.0.2"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("major upgrade"), "{err}");
    // check never suggests a quarantined release.
    w.ok(&["quarantine", "web", "0.0.2"]);
    let c = w.json(&["check", "web"]);
    assert!(c["suggest"].is_null(), "{c}");
    assert_eq!(c["quarantined"], serde_json::json!(["0.0.2"]));
    let text = w.ok(&["check", "web"]);
    assert!(!text.contains("upgrade:    "), "{text}");
    w.ok(&["unquarantine", "web", "0.0.2"]);
    // The suggested command passes.
    w.ok(&["deploy", "web", "0.0.2", "--allow-major"]);
}

#[test]
fn promote_of_an_installed_only_release_names_the_steps_it_would_skip() {
    let w = world();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["install", "web", "1.1.0"]);
    let (code, _, err) = w.run(&["promote", "web", "1.1.0"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("the warm hook did not run"), "{err}");
    assert!(err.contains("switchyard deploy web 1.1.0"), "{err}");
    assert!(err.contains("--skip-lifecycle"), "{err}");
    assert_eq!(w.current_content(), "1.0.0\n");
    // Deploying it uses the installed copy and runs the steps.
    w.ok(&["deploy", "web", "1.1.0"]);
    w.ok(&["unhold", "web"]);
    // A release that went live before needs nothing more.
    w.ok(&["revert", "web"]);
    w.ok(&["promote", "web", "1.1.0"]);
    // --skip-lifecycle is the operator's explicit choice.
    w.simple_release("v1.2.0");
    w.ok(&["install", "web", "1.2.0"]);
    w.ok(&["promote", "web", "1.2.0", "--skip-lifecycle"]);
    assert_eq!(w.current_content(), "1.2.0\n");
}

#[test]
fn revert_walks_back_through_the_live_history() {
    let w = world();
    for v in ["v1.0.0", "v1.0.1", "v1.0.2"] {
        w.simple_release(v);
    }
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        w.ok(&["deploy", "web", v]);
    }
    let r = w.json(&["revert", "web"]);
    assert_eq!(r["to"], "1.0.1");
    assert_eq!(r["last_good"], "1.0.0");
    // Before: a blind toggle back to 1.0.2.
    let r = w.json(&["revert", "web"]);
    assert_eq!(r["to"], "1.0.0");
    assert!(r["last_good"].is_null(), "{r}");
    let (code, _, err) = w.run(&["revert", "web"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("--to"), "{err}");
    w.ok(&["revert", "web", "--to", "1.0.2"]);
    assert_eq!(w.current_content(), "1.0.2\n");
    // Quarantined releases are skipped on the way back.
    w.ok(&["quarantine", "web", "1.0.1"]);
    let r = w.json(&["revert", "web"]);
    assert_eq!(r["to"], "1.0.0", "{r}");
}

#[test]
fn a_command_that_waited_refuses_when_someone_changed_the_app() {
    let w = world();
    w.simple_release("v1.0.0");
    w.release("v1.0.1", &[("VERSION", "1.0.1\n"), ("SLOW", "")]);
    w.ok(&["deploy", "web", "1.0.0"]);
    // Another engineer's deploy holds the lock (its warm hook takes 3 s).
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .arg("--config")
        .arg(&w.config)
        .args(["deploy", "web", "1.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !w.root.join(".switchyard/lock").exists()
        || w.json(&["status", "web"])["running"].is_null()
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the deploy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // This one saw 1.0.0 live, and waits.
    let (code, _, err) = w.run(&["revert", "web", "--wait"]);
    assert!(first.wait().unwrap().success());
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("changed while `revert` waited"), "{err}");
    assert!(
        err.contains("1.0.0 was live when you asked, 1.0.1 is live now"),
        "{err}"
    );
    assert_eq!(w.current_content(), "1.0.1\n");
}

/// The events of one operation, from `history --json`, with the actor's
/// reason of each.
fn reasons_of(w: &World, event: &str) -> Vec<serde_json::Value> {
    w.json(&["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["actor"]["reason"].clone())
        .collect()
}

/// An operator says why they deploy, promote or revert: the reason is on
/// each event of that operation in the audit log (and in the hold a manual
/// switch sets), and absent when none was given.
#[test]
fn deploy_promote_and_revert_keep_the_operators_reason() {
    let w = world();
    for v in ["v1.0.0", "v1.0.1"] {
        w.simple_release(v);
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&[
        "deploy",
        "web",
        "1.0.1",
        "--reason",
        "CHG-1234 new checkout",
    ]);
    assert_eq!(
        reasons_of(&w, "system.update.completed"),
        vec![serde_json::Value::Null, "CHG-1234 new checkout".into()]
    );
    w.ok(&["revert", "web", "--reason", "checkout errors after 1.0.1"]);
    let reverts = reasons_of(&w, "release.revert.completed");
    assert_eq!(
        reverts,
        vec![serde_json::Value::from("checkout errors after 1.0.1")],
        "{reverts:?}"
    );
    let st = w.json(&["status", "web"]);
    assert_eq!(
        st["hold"]["reason"], "manual revert to 1.0.0: checkout errors after 1.0.1",
        "{st}"
    );
    w.ok(&["promote", "web", "1.0.1", "--reason", "fixed upstream"]);
    // A deploy's swap is a promote event too: the last one is ours.
    let promotes = reasons_of(&w, "release.promote.completed");
    assert_eq!(
        promotes.last(),
        Some(&serde_json::Value::from("fixed upstream")),
        "{promotes:?}"
    );
    let text = w.ok(&["history", "web"]);
    assert!(text.contains("fixed upstream"), "{text}");
}
