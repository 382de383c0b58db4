//! The deploy lifecycle through the real binary, with a real HTTP server as
//! the app (it serves the release it loaded from `root/current` and reloads
//! when the activate hook asks): staging and live failures, automatic revert,
//! restore after migrate, unknown migrate outcome, failed revert, hook
//! timeouts, backups, quarantine, audit chain, crashes mid-deploy.
#![allow(clippy::disallowed_methods)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use switchyard::testing::DemoApp;

use crate::common::World;

const ACTIVATE: &str = r#"activate = 'touch "$SWITCHYARD_ROOT/shared/.reload"'"#;
const BACKUP: &str =
    r#"backup = 'cp "$SWITCHYARD_ROOT/shared/data/db.txt" "$SWITCHYARD_BACKUP_FILE"'"#;
const MIGRATE: &str = r#"migrate = 'echo "migrated by $SWITCHYARD_VERSION" >> "$SWITCHYARD_ROOT/shared/data/db.txt"'"#;
const RESTORE: &str =
    r#"restore = 'cp "$SWITCHYARD_BACKUP_FILE" "$SWITCHYARD_ROOT/shared/data/db.txt"'"#;

/// A world with the demo app serving its root, hooks and a live check.
struct Fixture {
    w: World,
    app: DemoApp,
}

impl Fixture {
    fn new(hooks: &[&str], extra_app: &str, extra_tables: &str) -> Fixture {
        let w = World::new();
        std::fs::create_dir_all(w.root.join("shared/data")).unwrap();
        std::fs::write(w.root.join("shared/data/db.txt"), "users\n").unwrap();
        let app = DemoApp::start(&w.root).unwrap();
        let f = Fixture { w, app };
        f.configure(hooks, extra_app, extra_tables);
        f
    }

    fn configure(&self, hooks: &[&str], extra_app: &str, extra_tables: &str) {
        let trust = format!(
            "keys = [\"{}\"]\n\n[apps.web.hooks]\n{}\n\n[apps.web.health.live]\nretries = 2\ninterval = \"50ms\"\ndeadline = \"10s\"\nexpect_version = \"body\"\n[[apps.web.health.live.checks]]\nkind = \"http\"\nurl = \"{}/health\"\n{extra_tables}",
            self.w.public_b64,
            hooks.join("\n"),
            self.app.url()
        );
        self.w.write_config_with_trust(extra_app, &trust);
    }

    fn db(&self) -> String {
        std::fs::read_to_string(self.w.root.join("shared/data/db.txt")).unwrap()
    }

    fn broken_release(&self, tag: &str) {
        let v = tag.trim_start_matches('v');
        self.w.release(
            tag,
            &[
                ("VERSION", &format!("{v}\n")),
                ("BROKEN", "yes"),
                ("public/index.html", "x"),
            ],
        );
    }

    fn events(&self) -> Vec<String> {
        self.w
            .json(&["history", "web"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }

    fn get_health(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.app.port)).unwrap();
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

#[test]
fn healthy_deploy_completes_and_the_app_serves_it() {
    let f = Fixture::new(&[ACTIVATE, BACKUP, MIGRATE, RESTORE], "", "");
    f.w.simple_release("v1.0.0");
    f.w.simple_release("v1.1.0");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    let out = f.w.json(&["deploy", "web", "1.1.0"]);
    assert_eq!(out["state"], "completed");
    assert!(out["backup_id"].is_string());
    assert_eq!(out["health"][0]["phase"], "live");
    assert!(f.get_health().contains("ok 1.1.0"));
    assert_eq!(f.db(), "users\nmigrated by 1.0.0\nmigrated by 1.1.0\n");
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["deploy"]["state"], "completed");
    assert!(st["maintenance"].is_null());
    // Each hook's output is kept per deploy.
    let id = out["id"].as_str().unwrap();
    assert!(
        f.w.root
            .join(format!(".switchyard/logs/{id}/migrate.log"))
            .exists()
    );
    let ev = f.events();
    for e in [
        "system.update.started",
        "system.backup.started",
        "system.backup.completed",
        "system.update.completed",
    ] {
        assert!(ev.iter().any(|x| x == e), "{e} missing from {ev:?}");
    }
}

#[test]
fn live_failure_reverts_restores_and_quarantines() {
    let f = Fixture::new(&[ACTIVATE, BACKUP, MIGRATE, RESTORE], "", "");
    f.w.simple_release("v1.0.0");
    f.w.simple_release("v1.1.0");
    f.broken_release("v1.2.0");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    f.w.ok(&["deploy", "web", "1.1.0"]);
    let before = f.db();
    let (code, out, err) = f.w.run(&["deploy", "web", "1.2.0"]);
    assert_eq!(code, 7, "{out}{err}");
    assert!(
        err.contains("reverted to 1.1.0") && err.contains("restored the backup"),
        "{err}"
    );
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.1.0"));
    assert_eq!(
        f.w.link("last-good").as_deref(),
        Some("releases/1.0.0"),
        "the bad release is never the rollback target"
    );
    assert_eq!(
        f.db(),
        before,
        "the migration of 1.2.0 was undone by the restore"
    );
    assert!(
        f.get_health().contains("ok 1.1.0"),
        "the old release serves again"
    );
    assert!(
        !f.w.root.join("shared/maintenance.json").exists(),
        "health is back: flag off"
    );
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["deploy"]["state"], "failed");
    assert!(
        st["quarantined"]["1.2.0"]["reason"]
            .as_str()
            .unwrap()
            .contains("health")
    );
    let ev = f.events();
    for e in [
        "system.rollback.started",
        "system.rollback.completed",
        "system.update.failed",
    ] {
        assert!(ev.iter().any(|x| x == e), "{e} missing from {ev:?}");
    }
    // Quarantined: not again without --force, by deploy or promote.
    let (code, _, err) = f.w.run(&["deploy", "web", "1.2.0"]);
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("quarantined") && err.contains("--force"),
        "{err}"
    );
    let (code, _, err) = f.w.run(&["promote", "web", "1.2.0"]);
    assert_eq!(code, 6, "{err}");
    f.w.ok(&["audit", "verify", "web"]);
}

#[test]
fn stale_process_fails_expect_version() {
    // No activate hook: the app keeps serving the old version.
    let f = Fixture::new(&[], "", "");
    f.w.simple_release("v1.0.0");
    f.w.simple_release("v1.1.0");
    // The first deploy: the app loaded nothing yet, then reloads by hand.
    std::fs::create_dir_all(f.w.root.join("shared")).unwrap();
    f.w.ok(&["install", "web", "1.0.0"]);
    // Restarted by hand this once: the next request loads 1.0.0.
    std::fs::write(f.w.root.join("shared/.reload"), "").unwrap();
    f.w.ok(&["promote", "web", "1.0.0"]);
    assert!(f.get_health().contains("ok 1.0.0"));
    let (code, _, err) = f.w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("1.1.0") && err.contains("1.0.0"), "{err}");
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.0.0"));
}

#[test]
fn staging_failure_never_swaps() {
    let staging = "[apps.web.health.staging]\nretries = 0\n[[apps.web.health.staging.checks]]\nkind = \"command\"\ncommand = \"test -f READY\"\n";
    let f = Fixture::new(&[ACTIVATE], "", staging);
    f.w.simple_release("v1.0.0");
    f.w.release("v1.0.1", &[("VERSION", "1.0.1\n"), ("READY", "")]);
    f.w.ok(&["deploy", "web", "1.0.1"]);
    f.w.simple_release("v1.0.2"); // no READY file
    let (code, _, err) = f.w.run(&["deploy", "web", "1.0.2"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("staging health check failed"), "{err}");
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.0.1"));
    assert!(
        !f.w.root.join("releases/1.0.2").exists(),
        "removed (keep_failed = false)"
    );
    let st = f.w.json(&["status", "web"]);
    assert!(st["quarantined"]["1.0.2"].is_object());

    // keep_failed keeps it for inspection; a failing warm hook is a staging failure too.
    let f = Fixture::new(&[ACTIVATE, "warm = 'exit 3'"], "keep_failed = true", "");
    f.w.simple_release("v1.0.0");
    let (code, _, err) = f.w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("warm"), "{err}");
    assert!(
        f.w.root.join("releases/1.0.0").exists(),
        "kept for inspection"
    );
    assert!(f.w.link("current").is_none());
}

#[test]
fn unknown_migrate_outcome_blocks_until_resolved() {
    let slow = "migrate = { command = 'echo started >> \"$SWITCHYARD_ROOT/shared/data/db.txt\"; sleep 30', timeout = \"1s\" }";
    let f = Fixture::new(&[ACTIVATE, BACKUP, slow, RESTORE], "", "");
    f.w.simple_release("v1.0.0");
    f.w.simple_release("v1.1.0");
    f.configure(&[ACTIVATE, BACKUP, MIGRATE, RESTORE], "", "");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    f.configure(&[ACTIVATE, BACKUP, slow, RESTORE], "", "");
    let t = std::time::Instant::now();
    let (code, _, err) = f.w.run(&["deploy", "web", "1.1.0"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "the timeout killed the hook"
    );
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("outcome is unknown"), "{err}");
    assert_eq!(
        f.w.link("current").as_deref(),
        Some("releases/1.0.0"),
        "never swapped"
    );
    assert!(f.w.root.join("shared/maintenance.json").exists());
    // Blocked, by deploy and by promote, until resolve.
    let (code, _, err) = f.w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("switchyard resolve web"), "{err}");
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["attention"]["kind"], "needs_attention");
    f.w.ok(&["resolve", "web"]);
    assert!(!f.w.root.join("shared/maintenance.json").exists());
    f.configure(&[ACTIVATE, BACKUP, MIGRATE, RESTORE], "", "");
    f.w.ok(&["deploy", "web", "1.1.0"]);
}

#[test]
fn failed_revert_says_so_and_blocks() {
    // activate fails for 1.0.0 (as after a revert), not for 1.1.0.
    let act = r#"activate = '{ test "$SWITCHYARD_VERSION" != 1.0.0 || test -f "$SWITCHYARD_ROOT/shared/allow-old"; } && touch "$SWITCHYARD_ROOT/shared/.reload"'"#;
    let f = Fixture::new(&[act], "", "");
    f.w.simple_release("v1.0.0");
    f.broken_release("v1.1.0");
    std::fs::write(f.w.root.join("shared/allow-old"), "").unwrap();
    f.w.ok(&["deploy", "web", "1.0.0"]);
    std::fs::remove_file(f.w.root.join("shared/allow-old")).unwrap();
    let (code, _, err) = f.w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("the revert failed too"), "{err}");
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["deploy"]["state"], "rollback_failed");
    assert_eq!(st["attention"]["kind"], "rollback_failed");
    assert!(f.w.root.join("shared/maintenance.json").exists());
    assert!(f.events().iter().any(|e| e == "system.rollback.failed"));
    let (code, _, _) = f.w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 6);
}

#[test]
fn hook_timeout_kills_the_whole_process_group() {
    let pids = "warm = { command = 'sleep 300 & echo $! > \"$SWITCHYARD_ROOT/shared/pids\"; echo $$ >> \"$SWITCHYARD_ROOT/shared/pids\"; sleep 300', timeout = \"1s\" }";
    let f = Fixture::new(&[ACTIVATE, pids], "", "");
    f.w.simple_release("v1.0.0");
    let (code, _, err) = f.w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
    let text = std::fs::read_to_string(f.w.root.join("shared/pids")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for pid in text.split_whitespace() {
        let pid: i32 = pid.parse().unwrap();
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {pid} of the hook survived its timeout");
    }
}

#[test]
fn backups_retention_verify_restore() {
    let f = Fixture::new(
        &[ACTIVATE, BACKUP, MIGRATE, RESTORE],
        "keep_backups = 2\nbackup_shared = true",
        "",
    );
    for v in ["v1.0.0", "v1.0.1", "v1.0.2"] {
        f.w.simple_release(v);
        f.w.ok(&["deploy", "web", v]);
    }
    let list = f.w.json(&["backup", "list", "web"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "retention keeps 2");
    assert_eq!(list[1]["has_hook_dump"], true);
    assert_eq!(list[1]["shared"], serde_json::json!(["storage"]));
    let id = list[1]["id"].as_str().unwrap().to_string();
    f.w.ok(&["backup", "verify", "web", &id]);
    // A manual backup, then restore it after the data changed.
    let m = f.w.json(&["backup", "create", "web"]);
    std::fs::write(f.w.root.join("shared/data/db.txt"), "garbage\n").unwrap();
    f.w.ok(&[
        "backup",
        "restore",
        "web",
        m["id"].as_str().unwrap(),
        "--yes",
    ]);
    assert!(f.db().starts_with("users\n"), "{}", f.db());
    // Damage is detected, and a damaged backup is not restored.
    let archive = f.w.root.join(format!(".switchyard/backups/{id}.tar.gz"));
    let mut b = std::fs::read(&archive).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0xff;
    std::fs::write(&archive, b).unwrap();
    let (code, _, err) = f.w.run(&["backup", "verify", "web", &id]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("damaged"), "{err}");
    let (code, _, _) = f.w.run(&["backup", "restore", "web", &id, "--yes"]);
    assert_ne!(code, 0);
}

#[test]
fn failed_backup_stops_before_anything_changes() {
    let f = Fixture::new(&[ACTIVATE, "backup = 'exit 1'", MIGRATE, RESTORE], "", "");
    f.w.simple_release("v1.0.0");
    let (code, _, err) = f.w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("backup"), "{err}");
    assert!(f.w.link("current").is_none());
    assert_eq!(f.db(), "users\n", "migrate never ran");
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["deploy"]["state"], "backup_failed");
    assert!(f.events().iter().any(|e| e == "system.backup.failed"));
}

#[test]
fn audit_chain_detects_tampering() {
    let f = Fixture::new(&[ACTIVATE], "", "");
    f.w.simple_release("v1.0.0");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    f.w.ok(&["audit", "verify", "web"]);
    let p = f.w.root.join(".switchyard/audit.jsonl");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"failed\"", 1),
    )
    .unwrap();
    let (code, _, err) = f.w.run(&["audit", "verify", "web"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("edited"), "{err}");
}

/// Crash checkpoints exist only in a build with the test seams: without
/// them the test would see no crash, so it says why it fails.
fn require_test_seams() {
    #[cfg(not(feature = "test-seams"))]
    panic!(
        "SWITCHYARD_CRASH_AT is obeyed only by a build with the test seams: run cargo test --features test-seams"
    );
}

#[test]
fn crash_mid_migrate_needs_attention_and_mid_live_check_rolls_back() {
    require_test_seams();
    let f = Fixture::new(&[ACTIVATE, BACKUP, MIGRATE, RESTORE], "", "");
    f.w.simple_release("v1.0.0");
    f.w.simple_release("v1.1.0");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    let out =
        f.w.cmd()
            .env("SWITCHYARD_CRASH_AT", "deploy.migrating.migrate")
            .args(["deploy", "web", "1.1.0"])
            .output()
            .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    // The next command does not guess about the migration.
    f.w.ok(&["prune", "web"]);
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["attention"]["kind"], "needs_attention", "{st}");
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.0.0"));
    f.w.ok(&["resolve", "web"]);

    // Killed during the live check: the new release is live but unverified,
    // so the repair reverts it and restores the backup.
    let before = f.db();
    let out =
        f.w.cmd()
            .env("SWITCHYARD_CRASH_AT", "deploy.health_check.live")
            .args(["deploy", "web", "1.1.0", "--force"])
            .output()
            .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.1.0"));
    f.w.ok(&["prune", "web"]);
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.0.0"));
    assert_eq!(f.db(), before);
    assert!(f.get_health().contains("ok 1.0.0"));
    f.w.assert_no_debris();
    f.w.assert_consistent();
}

#[test]
fn maintenance_command_and_nginx_snippet() {
    let f = Fixture::new(&[], "", "");
    f.w.ok(&["maintenance", "on", "web", "--message", "Back soon"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.w.root.join("shared/maintenance.json")).unwrap())
            .unwrap();
    assert_eq!(m["message"], "Back soon");
    assert_eq!(m["reason"], "operator");
    f.w.ok(&["maintenance", "off", "web"]);
    assert!(!f.w.root.join("shared/maintenance.json").exists());
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx-maintenance.conf");
    assert!(
        std::fs::read_to_string(snippet)
            .unwrap()
            .contains("maintenance.json")
    );
}

#[test]
fn restore_on_revert_ask_leaves_the_data_to_the_operator() {
    let f = Fixture::new(
        &[ACTIVATE, BACKUP, MIGRATE, RESTORE],
        "restore_on_revert = \"ask\"",
        "",
    );
    f.w.simple_release("v1.0.0");
    f.broken_release("v1.1.0");
    f.w.ok(&["deploy", "web", "1.0.0"]);
    let (code, _, err) = f.w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 7, "the revert itself worked: {err}");
    assert_eq!(f.w.link("current").as_deref(), Some("releases/1.0.0"));
    assert!(
        f.db().contains("migrated by 1.1.0"),
        "not restored without the operator"
    );
    let st = f.w.json(&["status", "web"]);
    assert_eq!(st["attention"]["kind"], "needs_attention");
    assert!(
        st["attention"]["reason"]
            .as_str()
            .unwrap()
            .contains("switchyard backup restore web")
    );
    assert!(f.w.root.join("shared/maintenance.json").exists());
    f.w.ok(&["backup", "restore", "web", "--yes"]);
    assert!(!f.db().contains("migrated by 1.1.0"));
    f.w.ok(&["resolve", "web"]);
}
