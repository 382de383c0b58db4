//! `config check` lists every mistake of a file in one run, as
//! `FILE:LINE:COL: message` lines, including referenced files that are
//! missing here; the agent refuses the same file with the same lines.

use std::os::unix::fs::PermissionsExt;

use crate::common::World;

/// A file with twelve mistakes of every kind across three tables, and
/// where each one is (line, column, a word of its message).
fn twelve_mistakes(w: &World) -> (String, Vec<(usize, usize, &'static str)>) {
    let base = w.tmp.path().canonicalize().unwrap();
    let root = w.root.display();
    let missing = base.join("missing");
    let m = missing.display();
    let text = format!(
        r#"[apps.web]
root = "{root}"
keep_releases = "five"
colour = "blue"
poll_interval = "soon"
notify_url = "ftp://example.com/hook"
[apps.web.source]
dir = "{m}/drop"
[apps.web.trust]
key_files = ["{m}/web.pub"]
[apps.api]
root = "{root}"
allow_major = "yes"
window = "25:00-26:00"
[apps.api.source]
github = "acme/api"
token_file = "{m}/api.token"
chanel = "beta"
[apps.api.trust]
require_signature = false
[agent]
listen = "nowhere"
"#
    );
    let want = vec![
        (3, 17, "keep_releases"),
        (4, 1, "colour"),
        (5, 17, "poll_interval"),
        (6, 14, "notify_url"),
        (8, 7, "does not exist"),
        (10, 14, "does not exist"),
        (12, 8, "share the root"),
        (13, 15, "allow_major"),
        (14, 10, "window"),
        (17, 14, "does not exist"),
        (18, 1, "chanel"),
        (22, 10, "agent.listen"),
    ];
    (text, want)
}

#[test]
fn one_run_lists_every_mistake_located() {
    let w = World::new();
    let (text, want) = twelve_mistakes(&w);
    std::fs::write(&w.config, text).unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}");
    let file = w.config.display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), want.len(), "one line per mistake:\n{out}");
    for (line, col, word) in &want {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(word)),
            "no {prefix}...{word}... line in:\n{out}"
        );
    }
    // Unknown keys and wrong types name the key with its table.
    assert!(out.contains("apps.web.colour: unknown field"), "{out}");
    assert!(
        out.contains("apps.api.source.chanel: unknown field"),
        "{out}"
    );
    // The missing files are named.
    for f in ["missing/drop", "missing/web.pub", "missing/api.token"] {
        assert!(out.contains(f), "{f} not named:\n{out}");
    }

    // --json: the same problems, each with its file, place and severity.
    let (code, out, _) = w.run(&["config", "check", "--json"]);
    assert_eq!(code, 2);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ok"], false);
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), want.len(), "{out}");
    let p = &problems[0];
    assert_eq!(p["file"], file.as_str());
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64()),
        (Some(3), Some(17))
    );
    assert_eq!(p["severity"], "error");
    assert!(p["message"].as_str().unwrap().contains("keep_releases"));

    // Any other command refuses the file with the same located lines.
    let (code, _, err) = w.run(&["status", "web"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{file}:4:1: apps.web.colour")),
        "{err}"
    );
}

#[test]
fn missing_references_are_errors_and_the_agent_refuses_them() {
    let w = World::new();
    let base = w.tmp.path().canonicalize().unwrap();
    let key = base.join("keys/web.pub");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::copy(&w.public_key, &key).unwrap();
    let secret = base.join("webhook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[apps.web]\nroot = \"{}\"\n[apps.web.source]\ndir = \"{}\"\n[apps.web.trust]\nkey_files = [\"{}\"]\n[agent]\nwebhook_secret_file = \"{}\"\ncontrol_socket = \"{}\"\n",
        w.root.display(),
        w.drop_dir.display(),
        key.display(),
        secret.display(),
        base.join("control.sock").display()
    );
    std::fs::write(&w.config, &text).unwrap();
    let out = w.ok(&["config", "check"]);
    assert!(out.contains(": ok (1 app: web)"), "{out}");
    assert!(!out.contains("warning"), "{out}");

    // Take each one away in turn: each is reported where it is named.
    std::fs::remove_dir_all(&w.drop_dir).unwrap();
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(&secret).unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}");
    let file = w.config.display();
    for (line, key) in [
        (4, "apps.web.source.dir"),
        (6, "apps.web.trust.key_files"),
        (8, "agent.webhook_secret_file"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:"))
                    && l.contains(key)
                    && l.contains("does not exist")),
            "{key} not reported at line {line}:\n{out}"
        );
    }
    // The agent refuses to start with the same lines (it used to start,
    // then exit on the first read).
    let out = w
        .cmd()
        .arg("agent")
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    let (code, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{file}:6:")) && err.contains("key_files"),
        "{err}"
    );
    // A single command for the app still runs: it reads what it needs.
    let (code, _, err) = w.run(&["status", "web"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_secret_others_can_read_is_a_warning() {
    let w = World::new();
    let token = w.tmp.path().join("api.token");
    std::fs::write(&token, "ghp_not_real\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.write_config_source(&format!(
        "github = \"acme/web\"\ntoken_file = \"{}\"\n",
        token.display()
    ));
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 0, "a warning alone passes:\n{out}");
    let file = w.config.display();
    assert!(
        out.contains(&format!("{file}:7:14: warning: apps.web.source.token_file")),
        "{out}"
    );
    assert!(out.contains("readable by other users"), "{out}");
    let j: serde_json::Value = serde_json::from_str(&w.ok(&["config", "check", "--json"])).unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["problems"][0]["severity"], "warning");
    assert_eq!(j["problems"][0]["line"], 7);

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = w.ok(&["config", "check"]);
    assert!(!out.contains("warning"), "{out}");
    // Gone: an error, exit 2.
    std::fs::remove_file(&token).unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("{file}:7:14: apps.web.source.token_file")),
        "{out}"
    );
}

#[test]
fn a_syntax_error_is_located_and_stops() {
    let w = World::new();
    std::fs::write(
        &w.config,
        "[apps.web]\nroot = \"/srv/web\"\nkeep_releases = = 3\ncolour = 1\n",
    )
    .unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    let file = w.config.display();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with(&format!("{file}:3:")), "{out}");
}
