//! What commands say, and the side effects they must not keep quiet about:
//! real app names instead of placeholders, no doubled words, a status that
//! follows `resolve`, prunes that name what they removed, backups that
//! refuse to be empty, restores that ask, and `on_failure` for a deploy
//! that failed before there was a release directory.

use crate::common::{World, require_tool};

/// Drops a release folder's signatures (the world accepts unsigned ones).
fn unsign(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "minisig") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// Breaks `dir`'s checksum line for its archive (the release folder of
/// `simple_release`), unsigned so that only the checksum fails.
fn break_checksum(dir: &std::path::Path) {
    unsign(dir);
    let sums = dir.join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, format!("{}{}", "0".repeat(64), &text[64..])).unwrap();
}

#[test]
fn on_failure_runs_in_the_root_when_the_release_was_never_unpacked() {
    let w = World::with_extra("hooks.on_failure = 'pwd > \"$SWITCHYARD_ROOT/on_failure.ran\"'\n");
    w.allow_unsigned();
    unsign(&w.simple_release("v1.0.0"));
    w.ok(&["deploy", "web", "1.0.0"]);
    let dir = w.simple_release("v1.1.0");
    break_checksum(&dir);
    let (code, _, err) = w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        !err.contains("cannot start"),
        "the hook could not start: {err}"
    );
    let marker = w.root.join("on_failure.ran");
    let ran_in = std::fs::read_to_string(&marker).expect("on_failure ran");
    assert_eq!(
        ran_in.trim(),
        w.root.display().to_string(),
        "ran in the root"
    );
    assert!(!w.root.join("releases/1.1.0").exists());
}

#[test]
fn a_failed_deploy_says_failed_once() {
    let w = World::with_extra("hooks.warm = 'exit 3'\n");
    w.simple_release("v1.0.0");
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("deploy failed"), "{err}");
    assert!(!err.contains("failed (failed)"), "{err}");
}

#[test]
fn a_hook_timeout_names_the_app_not_a_placeholder() {
    let w = World::with_extra("hooks.warm = { command = 'sleep 30', timeout = \"1s\" }\n");
    w.simple_release("v1.0.0");
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("did not finish within"), "{err}");
    assert!(err.contains("apps.web.hooks.warm"), "{err}");
    assert!(!err.contains("<app>"), "{err}");
}

#[test]
fn status_after_resolve_is_no_longer_blocked() {
    // activate fails for 1.1.0, and for 1.0.0 unless allowed: the deploy of
    // 1.1.0 fails, and so does the revert to 1.0.0 (rollback_failed).
    let w = World::with_extra(
        "hooks.activate = 'test \"$SWITCHYARD_VERSION\" = 1.0.0 && test -f \"$SWITCHYARD_ROOT/shared/allow-old\"'\n",
    );
    std::fs::create_dir_all(w.root.join("shared")).unwrap();
    std::fs::write(w.root.join("shared/allow-old"), "").unwrap();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    std::fs::remove_file(w.root.join("shared/allow-old")).unwrap();
    let (code, _, err) = w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 8, "{err}");
    let before = w.ok(&["status", "web"]);
    assert!(
        before.contains("BLOCKED") && before.contains("rollback_failed"),
        "{before}"
    );
    w.ok(&["resolve", "web"]);
    let after = w.ok(&["status", "web"]);
    for stale in ["BLOCKED", "blocked", "rollback_failed"] {
        assert!(!after.contains(stale), "{stale} after resolve:\n{after}");
    }
    assert!(after.contains("resolved"), "{after}");
    let st = w.json(&["status", "web"]);
    assert_eq!(st["deploy"]["state"], "failed", "{st}");
    assert_eq!(st["deploy"]["step"], "resolved", "{st}");
    assert!(st["attention"].is_null(), "{st}");
}

#[test]
fn deploy_says_what_it_pruned_and_history_names_it() {
    let w = World::new();
    w.write_config("keep_releases = 1\n".trim_start());
    // write_config puts keep_releases = 3 first: replace it.
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        "keep_releases = 3\nkeep_releases = 1\n",
        "keep_releases = 1\n",
    );
    std::fs::write(&w.config, text).unwrap();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        w.simple_release(&format!("v{v}"));
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["deploy", "web", "1.1.0"]);
    // current 1.2.0 and last-good 1.1.0 stay; 1.0.0 goes.
    let out = w.ok(&["deploy", "web", "1.2.0"]);
    assert!(
        out.contains("pruned old releases (keep_releases): 1.0.0"),
        "{out}"
    );
    assert!(!w.root.join("releases/1.0.0").exists());
    let hist = w.ok(&["history", "web"]);
    let at = hist
        .find("release.prune.completed")
        .unwrap_or_else(|| panic!("no prune event:\n{hist}"));
    assert!(
        hist[at..]
            .lines()
            .take(2)
            .any(|l| l.contains("removed 1.0.0")),
        "the prune line names no version:\n{hist}"
    );
    // --json carries the list too.
    w.simple_release("v1.3.0");
    let j = w.json(&["deploy", "web", "1.3.0"]);
    assert_eq!(j["pruned"], serde_json::json!(["1.1.0"]), "{j}");
}

#[test]
fn backup_create_with_nothing_to_back_up_says_what_to_configure() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let (code, out, err) = w.run(&["backup", "create", "web"]);
    assert_eq!(code, 2, "a configuration error:\n{out}{err}");
    for needle in [
        "web has nothing to back up",
        "[apps.web]",
        "hooks.backup",
        "backup_shared = true",
        "[apps.web.shared]",
    ] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    assert!(
        !w.root.join(".switchyard/backups").exists()
            || std::fs::read_dir(w.root.join(".switchyard/backups"))
                .unwrap()
                .next()
                .is_none(),
        "no empty backup was written"
    );
    // With the shared paths in backups it works.
    w.write_config("backup_shared = true\n");
    w.ok(&["backup", "create", "web"]);
}

#[test]
fn backup_restore_off_a_terminal_needs_yes_and_changes_nothing() {
    let w = World::new();
    w.write_config("backup_shared = true\n");
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let data = w.root.join("shared/storage/db.txt");
    std::fs::write(&data, "before\n").unwrap();
    w.ok(&["backup", "create", "web"]);
    std::fs::write(&data, "after\n").unwrap();
    let audit = std::fs::read_to_string(w.root.join(".switchyard/audit.jsonl")).unwrap();
    // assert_cmd gives the child no terminal: it must refuse, not ask.
    let (code, out, err) = w.run(&["backup", "restore", "web"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(err.contains("replaces the data of web"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "after\n",
        "nothing restored"
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join(".switchyard/audit.jsonl")).unwrap(),
        audit,
        "nothing happened"
    );
    w.ok(&["backup", "restore", "web", "--yes"]);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "before\n");
}

#[test]
fn trust_errors_name_the_apps_table() {
    let w = World::new();
    w.simple_release("v1.0.0");
    // Trust another key only: the release's signer is not trusted.
    let other = w.tmp.path().join("other-key");
    w.ok(&["keygen", "--out", other.to_str().unwrap()]);
    let public = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pub"))
        .unwrap();
    let line = std::fs::read_to_string(public)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    w.write_config_with_trust("", &format!("keys = [\"{line}\"]\n"));
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("add its public key to [apps.web.trust].keys"),
        "{err}"
    );
    assert!(!err.contains("<name>") && !err.contains("<app>"), "{err}");
}

#[test]
fn a_missing_shared_file_names_the_apps_table() {
    let w = World::new();
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        "dirs = [\"storage\"]\n",
        "dirs = [\"storage\"]\nfiles = [\".env\"]\n",
    );
    std::fs::write(&w.config, text).unwrap();
    w.simple_release("v1.0.0");
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("remove it from [apps.web.shared].files"),
        "{err}"
    );
}

#[test]
fn backup_restore_on_a_terminal_shows_what_it_replaces_and_asks() {
    // `script` runs the command on a pseudo-terminal, fed our answer.
    let Some(script) = require_tool("script") else {
        return;
    };
    let w = World::new();
    w.write_config("backup_shared = true\n");
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let data = w.root.join("shared/storage/db.txt");
    std::fs::write(&data, "before\n").unwrap();
    w.ok(&["backup", "create", "web"]);
    std::fs::write(&data, "after\n").unwrap();
    let bin = assert_cmd::cargo::cargo_bin("switchyard");
    let restore = |answer: &str| {
        let line = format!(
            "{} --config {} backup restore web",
            bin.display(),
            w.config.display()
        );
        let out = assert_cmd::Command::new(&script)
            .args(["-qec", &line, "/dev/null"])
            .env_remove("SWITCHYARD_CRASH_AT")
            .write_stdin(answer)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = restore("no\n");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("backup restore replaces data of web with backup"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{} is replaced",
            w.root.join("shared/storage").display()
        )),
        "{out}"
    );
    assert!(out.contains("Type yes to go on"), "{out}");
    assert!(out.contains("not confirmed; nothing changed"), "{out}");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "after\n");
    let (code, out) = restore("yes\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "before\n");
}

#[test]
fn an_archive_over_the_limits_names_the_apps_unpack_table() {
    let w = World::with_extra("unpack.max_entries = 1");
    w.simple_release("v1.0.0");
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("in [apps.web.unpack]"), "{err}");
    assert!(!err.contains("<name>"), "{err}");
}
