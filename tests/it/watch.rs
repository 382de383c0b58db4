//! Something to watch: progress while an operation runs (here and through
//! the agent), `switchyard logs`, hook log retention, log formats
//! (JSON, journald priorities), fields for people, and the rotated audit
//! log whose chain goes on across files.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::agent::{Agent, configure, eventually, publish};
use crate::common::World;
use crate::mock_github::MockGithub;

/// A warm hook that talks, then takes its time.
const SLOW_WARM: &str = "warm = 'echo warming $SWITCHYARD_VERSION; sleep 3; echo warm done'\nactivate = 'echo activated'";

/// A warm hook that talks, then waits until the test creates `gate` (at
/// most two minutes, so a failed test leaves no hook behind for long): the
/// command is certainly still running while the test reads its progress,
/// however slow the machine, with no guessed sleep.
fn gated_warm(gate: &std::path::Path) -> String {
    format!(
        "warm = 'echo warming $SWITCHYARD_VERSION; i=0; until [ -e \"{}\" ] || [ $i -ge 2400 ]; do sleep 0.05; i=$((i+1)); done; echo warm done'\nactivate = 'echo activated'",
        gate.display()
    )
}

/// Adds `[apps.web.hooks]` with `hooks` to the world's config.
fn set_hooks(w: &World, hooks: &str) {
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replacen(
            "[apps.web.trust]",
            &format!("[apps.web.hooks]\n{hooks}\n\n[apps.web.trust]"),
            1,
        ),
    )
    .unwrap();
}

/// Adds keys inside `[apps.web]`.
fn set_app_keys(w: &World, keys: &str) {
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replacen(
            "keep_releases = 3\n",
            &format!("keep_releases = 3\n{keys}\n"),
            1,
        ),
    )
    .unwrap();
}

/// The binary, as a std `Command`, with the world's config.
fn std_cmd(w: &World) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("switchyard"));
    c.arg("--config").arg(&w.config);
    c
}

/// The binary with `args`, its stderr read line by line as it comes.
fn spawn(w: &World, args: &[&str], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("switchyard"));
    c.arg("--config")
        .arg(&w.config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("SWITCHYARD_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads stderr lines until every one of `wanted` has been seen in some
/// line; asserts that happened while the command still ran. Returns the
/// lines seen.
fn seen_while_running(
    child: &mut Child,
    rx: &mpsc::Receiver<String>,
    wanted: &[&str],
) -> Vec<String> {
    let mut lines = Vec::new();
    let start = Instant::now();
    while !wanted
        .iter()
        .all(|w| lines.iter().any(|l: &String| l.contains(w)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never saw {wanted:?}; stderr so far:\n{}",
            lines.join("\n")
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command ended before its progress showed:\n{}",
        lines.join("\n")
    );
    lines
}

/// The rest of stderr and stdout once the command ended, and its code.
fn finish(
    mut child: Child,
    rx: mpsc::Receiver<String>,
    mut lines: Vec<String>,
) -> (i32, String, String) {
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let st = child.wait().unwrap();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        lines.push(l);
    }
    (st.code().unwrap_or(-1), out, lines.join("\n"))
}

#[test]
fn deploy_progress_shows_each_step_and_the_hook_output_while_it_runs() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let gate = w.tmp.path().join("warm-may-end");
    set_hooks(&w, &gated_warm(&gate));
    let (mut child, rx) = spawn(&w, &["deploy", "web", "1.1.0", "--json"], &[]);
    // While the warm hook waits for the gate: its step, and its first
    // output line.
    let lines = seen_while_running(
        &mut child,
        &rx,
        &["deploy 1.1.0: applying (warm)", "warm | warming 1.1.0"],
    );
    std::fs::write(&gate, "").unwrap();
    let (code, out, err) = finish(child, rx, lines);
    assert_eq!(code, 0, "{out}\n{err}");
    // Every step in order, on stderr only: stdout is the JSON alone.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["to"], "1.1.0", "{v}");
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{err}"));
    assert!(at("applying (warm)") < at("warm | warm done"), "{err}");
    assert!(at("warm | warm done") < at("completed"), "{err}");
    assert!(err.contains("activate | activated"), "{err}");
    // --quiet: nothing on stderr.
    let (code, _, err) = w.run(&["revert", "web", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "--quiet printed something");
}

#[test]
fn progress_through_the_agent_shows_while_the_cli_waits_on_the_socket() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"");
    publish(&w, &m, "v1.0.0");
    publish(&w, &m, "v1.1.0");
    let gate = w.tmp.path().join("warm-may-end");
    set_hooks(&w, &gated_warm(&gate));
    let agent = Agent::start(&w);
    let (mut child, rx) = spawn(&w, &["deploy", "web", "1.1.0"], &[]);
    let lines = seen_while_running(
        &mut child,
        &rx,
        &["deploy 1.1.0: applying (warm)", "warm | warming 1.1.0"],
    );
    std::fs::write(&gate, "").unwrap();
    let (code, out, err) = finish(child, rx, lines);
    assert_eq!(code, 0, "{out}\n{err}\n{}", agent.log());
    assert!(err.contains("completed"), "{err}");
    // It was the agent that ran it.
    assert!(agent.log().contains("control request"), "{}", agent.log());
}

#[test]
fn logs_prints_hook_output_filters_by_hook_and_old_logs_go() {
    let w = World::new();
    for v in ["v1.0.0", "v1.0.1", "v1.0.2"] {
        w.simple_release(v);
    }
    set_app_keys(&w, "keep_hook_logs = 2");
    set_hooks(
        &w,
        "warm = 'echo warm says $SWITCHYARD_VERSION'\nactivate = 'echo activate says $SWITCHYARD_VERSION >&2'",
    );
    let mut ids = Vec::new();
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        let d = w.json(&["deploy", "web", v]);
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    let out = w.ok(&["logs", "web"]);
    let warm = out.find("==> warm (").unwrap_or_else(|| panic!("{out}"));
    let activate = out
        .find("==> activate (")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(warm < activate, "hooks in the order they ran:\n{out}");
    assert!(out.contains("out: warm says 1.0.2"), "{out}");
    assert!(out.contains("err: activate says 1.0.2"), "{out}");
    let only = w.ok(&["logs", "web", "--hook", "activate"]);
    assert!(
        only.contains("activate says 1.0.2") && !only.contains("warm says"),
        "{only}"
    );
    let (code, _, err) = w.run(&["logs", "web", "--hook", "nope"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("warm, activate"), "{err}");
    // Retention: the two newest deploys' folders only.
    let mut left: Vec<String> = std::fs::read_dir(w.root.join(".switchyard/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = ids[1..].to_vec();
    want.sort();
    assert_eq!(left, want);
    let (code, _, err) = w.run(&["logs", "web", "--deploy", &ids[0]]);
    assert_eq!(code, 5, "{err}");
    let old = w.ok(&["logs", "web", "--deploy", &ids[1], "--json"]);
    let v: serde_json::Value = serde_json::from_str(&old).unwrap();
    assert!(
        v["hooks"][0]["log"]
            .as_str()
            .unwrap()
            .contains("warm says 1.0.1"),
        "{v}"
    );
}

#[test]
fn logs_follow_streams_a_running_deploy_until_it_ends() {
    let w = World::new();
    w.simple_release("v1.0.0");
    set_hooks(&w, SLOW_WARM);
    let mut deploy = std_cmd(&w)
        .args(["deploy", "web", "1.0.0", "-q"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let state = w.root.join(".switchyard/state.json");
    assert!(eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"warm\""))
    }));
    let (mut follow, _rx) = spawn(&w, &["logs", "web", "-f"], &[]);
    let mut out = String::new();
    std::io::Read::read_to_string(follow.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(follow.wait().unwrap().success());
    assert!(deploy.wait().unwrap().success());
    // Followed from the start to the end of the deploy.
    assert!(out.contains("out: warming 1.0.0"), "{out}");
    assert!(out.contains("out: warm done"), "{out}");
    assert!(out.contains("==> activate"), "{out}");
}

#[test]
fn json_log_format_gives_parseable_lines_with_app_version_and_step() {
    let w = World::new();
    w.simple_release("v1.0.0");
    set_hooks(&w, "warm = 'echo hi'");
    for env in [vec![], vec![("SWITCHYARD_LOG_FORMAT", "json")]] {
        let mut args = vec!["deploy", "web", "1.0.0", "-v"];
        if env.is_empty() {
            args.extend(["--log-format", "json"]);
        }
        let (child, rx) = spawn(&w, &args, &env);
        let (code, out, err) = finish(child, rx, Vec::new());
        assert_eq!(code, 0, "{out}\n{err}");
        let mut step_seen = false;
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{err}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{line}"
            );
            if v["app"] == "web" && v["version"] == "1.0.0" && v["step"].is_string() {
                step_seen = true;
            }
        }
        assert!(step_seen, "no line with app, version and step:\n{err}");
        // Again: a second deploy of the same release changes nothing.
        std::fs::remove_dir_all(&w.root).unwrap();
    }
}

#[test]
fn under_journald_lines_carry_syslog_priorities_and_no_colour_or_time() {
    let w = World::new();
    w.simple_release("v1.0.0");
    set_hooks(&w, "warm = 'echo broken >&2; exit 1'");
    let log = w.tmp.path().join("stderr.log");
    let f = std::fs::File::create(&log).unwrap();
    let m = f.metadata().unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    let st = std_cmd(&w)
        .args(["deploy", "web", "1.0.0", "-v"])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", &stream)
        .stderr(f)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let log_lines: Vec<&str> = text.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        log_lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("hook failed")),
        "no warning with <4>:\n{text}"
    );
    assert!(
        log_lines.iter().any(|l| l.starts_with("<6>")),
        "no info with <6>:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "ANSI colours under journald:\n{text}"
    );
    assert!(
        !log_lines.iter().any(|l| l[3..].starts_with("20")),
        "a timestamp journald adds itself:\n{text}"
    );
    // Not journald's stream (stderr redirected elsewhere): no prefixes.
    let (code, _, err) = w.run_env(
        &["deploy", "web", "1.0.0", "--force"],
        &[("JOURNAL_STREAM", "1:1")],
    );
    assert_ne!(code, 0);
    assert!(!err.contains("<4>"), "{err}");
}

#[test]
fn debug_logs_of_a_deploy_have_no_rust_debug_forms() {
    let w = World::new();
    for v in ["v1.0.0", "v1.1.0", "v1.2.0"] {
        w.simple_release(v);
    }
    set_hooks(
        &w,
        "warm = 'if [ $SWITCHYARD_VERSION = 1.2.0 ]; then exit 3; fi'\nactivate = 'echo on'",
    );
    let mut all = String::new();
    for args in [
        &["deploy", "web", "1.0.0", "-vv"][..],
        &["deploy", "web", "1.1.0", "-vv"],
        &["deploy", "web", "1.2.0", "-vv"],
        &["revert", "web", "-vv"],
    ] {
        let (child, rx) = spawn(&w, args, &[]);
        all.push_str(&finish(child, rx, Vec::new()).2);
    }
    assert!(all.contains("DEBUG"), "not at debug level:\n{all}");
    assert!(all.contains("from=1.0.0"), "{all}");
    for bad in ["Some(", "None", "state=Failed", "\"install\""] {
        assert!(!all.contains(bad), "{bad} in the log:\n{all}");
    }
}

#[test]
fn the_agent_logs_at_info_without_rust_log_and_a_failure_with_its_reason() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"");
    publish(&w, &m, "v1.0.0");
    set_hooks(&w, "warm = 'echo no database; exit 7'");
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("switchyard"));
    cmd.env_remove("RUST_LOG");
    // "agent ready" is an info line: Agent::start waits for it.
    let agent = Agent::start_cmd(&w, cmd);
    let (code, _, _) = w.run(&["deploy", "web", "1.0.0"]);
    assert_ne!(code, 0);
    let log = agent.log();
    let failed = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("deploy failed"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert!(
        failed.contains("warm") && failed.contains("exit code 7"),
        "{failed}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("operation failed") && l.contains("exit code 7")),
        "{log}"
    );
}

/// Audit files under `.switchyard/`: `audit.jsonl.N` numbers, sorted.
fn rotated(w: &World) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(w.root.join(".switchyard"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("audit.jsonl.")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    v
}

fn audit_lines(w: &World) -> usize {
    let dir = w.root.join(".switchyard");
    let mut n = std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .count();
    for i in rotated(w) {
        n += std::fs::read_to_string(dir.join(format!("audit.jsonl.{i}")))
            .unwrap()
            .lines()
            .count();
    }
    n
}

#[test]
fn the_audit_log_rotates_and_its_chain_holds_across_files() {
    let w = World::new();
    for v in ["v1.0.0", "v1.1.0", "v1.2.0"] {
        w.simple_release(v);
    }
    set_app_keys(&w, "audit_max_bytes = 300\naudit_keep_files = 4");
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["deploy", "web", "1.1.0"]);
    w.ok(&["revert", "web"]);
    w.ok(&["deploy", "web", "1.2.0"]);
    w.ok(&["prune", "web"]);
    let files = rotated(&w);
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(files, (1..=files.len() as u32).collect::<Vec<_>>());
    let v = w.json(&["audit", "verify", "web"]);
    assert_eq!(v["lines"], audit_lines(&w) as u64, "{v}");
    // History reads every file, oldest first.
    let h = w.json(&["history", "web"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), audit_lines(&w));
    assert_eq!(h[0]["to"], "1.0.0", "{:?}", h[0]);
    assert!(h.iter().any(|e| e["event"] == "audit.rotated"));
    let last2 = w.json(&["history", "web", "--limit", "2"]);
    assert_eq!(last2.as_array().unwrap().as_slice(), &h[h.len() - 2..]);
    // Retention: never more than audit_keep_files rotated files.
    for _ in 0..4 {
        w.ok(&["prune", "web"]);
    }
    assert_eq!(rotated(&w), [1, 2, 3, 4]);
    w.ok(&["audit", "verify", "web"]);

    // An edit in a rotated file is found, with the file's name.
    let two = w.root.join(".switchyard/audit.jsonl.2");
    let orig = std::fs::read_to_string(&two).unwrap();
    std::fs::write(&two, orig.replacen("\"ok\"", "\"OK\"", 1)).unwrap();
    let (code, out, err) = w.run(&["audit", "verify", "web"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("audit.jsonl.2") && err.contains("line 1"),
        "{err}"
    );
    // A rotated file removed from the middle breaks the link to it.
    std::fs::write(&two, &orig).unwrap();
    w.ok(&["audit", "verify", "web"]);
    std::fs::remove_file(&two).unwrap();
    let (code, _, err) = w.run(&["audit", "verify", "web"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("audit.jsonl.1") && err.contains("does not continue audit.jsonl.3"),
        "{err}"
    );
}

#[test]
fn a_rotation_killed_at_any_step_leaves_a_log_that_verifies() {
    require_test_seams();
    for cp in ["audit.rotate.linked", "audit.rotate.renamed"] {
        let w = World::new();
        w.simple_release("v1.0.0");
        w.simple_release("v1.1.0");
        set_app_keys(&w, "audit_max_bytes = 300");
        w.ok(&["deploy", "web", "1.0.0"]);
        let before = audit_lines(&w);
        let out = w
            .cmd()
            .env("SWITCHYARD_CRASH_AT", cp)
            .args(["prune", "web"])
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{cp}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = w.json(&["audit", "verify", "web"]);
        assert!(v["lines"].as_u64().unwrap() >= before as u64, "{cp}: {v}");
        // The next command finishes the rotation and the chain goes on.
        w.ok(&["deploy", "web", "1.1.0"]);
        let v = w.json(&["audit", "verify", "web"]);
        assert_eq!(v["lines"], audit_lines(&w) as u64, "{cp}: {v}");
        let h = w.json(&["history", "web"]);
        assert_eq!(h.as_array().unwrap().len(), audit_lines(&w), "{cp}");
    }
}

#[test]
fn on_a_terminal_a_spinner_shows_the_step_and_the_hook_output() {
    let Some(script) = crate::common::require_tool("script") else {
        return;
    };
    let w = World::new();
    w.simple_release("v1.0.0");
    set_hooks(&w, SLOW_WARM);
    let line = format!(
        "{} --config {} deploy web 1.0.0",
        assert_cmd::cargo::cargo_bin("switchyard").display(),
        w.config.display()
    );
    // script(1) runs it on a pseudo-terminal: stderr is a TTY.
    let out = Command::new(script)
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The spinner's message: the step and the hook's latest output.
    assert!(text.contains("applying (warm)"), "{text}");
    assert!(text.contains("warm | warming 1.0.0"), "{text}");
    // Each finished step stays in the scrollback with its duration (the
    // spinner's way; plain lines have no such line).
    assert!(text.contains("done in"), "{text}");
    assert!(text.contains("deployed 1.0.0"), "{text}");
}

/// Crash checkpoints exist only in a build with the test seams: without
/// them this test would see no crash, so it says why it fails.
fn require_test_seams() {
    #[cfg(not(feature = "test-seams"))]
    panic!(
        "SWITCHYARD_CRASH_AT is obeyed only by a build with the test seams: run cargo test --features test-seams"
    );
}
