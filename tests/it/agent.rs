//! The agent end to end: the real binary run as `switchyard agent` against
//! the mock GitHub, fed signed (and forged) webhook deliveries, driven by the
//! CLI through its control socket, stopped with SIGTERM.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::World;
use crate::mock_github::MockGithub;

const SECRET: &str = "It's a Secret to Everybody";

pub(crate) struct Agent {
    child: Option<Child>,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Agent {
    pub(crate) fn start(w: &World) -> Agent {
        Self::start_cmd(w, Command::new(assert_cmd::cargo::cargo_bin("switchyard")))
    }

    /// Starts `cmd` (the binary, or a wrapper that runs it) as the agent.
    pub(crate) fn start_cmd(w: &World, mut cmd: Command) -> Agent {
        let log = w.tmp.path().join("agent.log");
        // A caller that set or removed RUST_LOG on `cmd` keeps its choice.
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "switchyard=info,warn");
        }
        let child = cmd
            .args(["--config", w.config.to_str().unwrap(), "agent"])
            .env("SWITCHYARD_FAKE_CLOCK_FILE", w.tmp.path().join("clock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = agent_port(w);
        let a = Agent {
            child: Some(child),
            port,
            log,
        };
        assert!(
            eventually(Duration::from_secs(15), || a.log().contains("agent ready")),
            "the agent did not come up:\n{}",
            a.log()
        );
        a
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], b"")
    }

    fn webhook(&self, event: &str, delivery: &str, body: &[u8], signature: Option<String>) -> u16 {
        let mut h = vec![
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("Content-Type", "application/json".to_string()),
        ];
        if let Some(s) = signature {
            h.push(("X-Hub-Signature-256", s));
        }
        self.request("POST", "/hooks/github", &h, body).0
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the agent did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn agent_port(w: &World) -> u16 {
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    let l = cfg.lines().find(|l| l.starts_with("listen = ")).unwrap();
    l.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// Config: the mock as the source, `app_extra` inside [apps.web], and an [agent] table.
pub(crate) fn configure(w: &World, m: &MockGithub, app_extra: &str) {
    std::fs::write(w.tmp.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let source = format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-{{version}}.tar.gz\"\n",
        m.api_url()
    );
    w.write_config_source(&source);
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg = cfg.replacen(
        "keep_releases = 3\n",
        &format!("keep_releases = 3\n{app_extra}\n"),
        1,
    );
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{}\"\nwebhook_secret_file = \"{}\"\ncontrol_socket = \"{}\"\nshutdown_timeout = \"20s\"\n",
        free_port(),
        w.tmp.path().join("secret").display(),
        w.tmp.path().join("control.sock").display()
    ));
    std::fs::write(&w.config, cfg).unwrap();
}

pub(crate) fn publish(w: &World, m: &MockGithub, tag: &str) {
    let dir = w.simple_release(tag);
    let r = m.release_from_dir(tag, &dir);
    m.push(r);
}

fn release_payload(tag: &str, action: &str) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "release": {"tag_name": tag, "draft": false, "prerelease": action == "prereleased"},
        "repository": {"full_name": "acme/web"},
    })
    .to_string()
    .into_bytes()
}

fn sign(body: &[u8]) -> String {
    switchyard::testing::sign_payload(SECRET.as_bytes(), body)
}

/// Moves the agent's fake clock; atomically, so it never reads half a file.
/// Once the file exists the agent's time stands still between moves: its
/// polls, windows and timeouts wait for the test instead of for real time.
pub(crate) fn set_clock(w: &World, t: &str) {
    require_test_seams();
    let tmp = w.tmp.path().join("clock.tmp");
    std::fs::write(&tmp, t).unwrap();
    std::fs::rename(&tmp, w.tmp.path().join("clock")).unwrap();
}

/// The fake clock exists only in a build with the test seams: without them a
/// test moving it would wait on real time, so it says why it fails.
fn require_test_seams() {
    #[cfg(not(feature = "test-seams"))]
    panic!(
        "this test moves the agent's fake clock, which only a build with the test seams has: run cargo test --features test-seams"
    );
}

/// Moves the agent's fake clock `secs` seconds forward.
pub(crate) fn advance_clock(w: &World, secs: i64) {
    let now: jiff::Timestamp = std::fs::read_to_string(w.tmp.path().join("clock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    set_clock(
        w,
        &(now + jiff::SignedDuration::from_secs(secs)).to_string(),
    );
}

pub(crate) fn current(w: &World) -> Option<String> {
    w.link("current")
}

#[test]
fn signed_webhook_deploys_and_forgeries_do_nothing() {
    let m = MockGithub::start();
    let w = World::new();
    // Polling is slow here: only webhooks can trigger within the test.
    configure(&w, &m, "poll_interval = \"1h\"\nauto = \"all\"");
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let by_cli = listings();
    let agent = Agent::start(&w);
    // The agent looks once at start; 1.0.1 appears only after that.
    assert!(
        eventually(Duration::from_secs(10), || listings() > by_cli),
        "{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    publish(&w, &m, "v1.0.1");
    let before = listings();

    // Forged, unsigned, oversized and wrong-event deliveries: refused or ignored.
    let body = release_payload("v1.0.1", "published");
    assert_eq!(agent.webhook("release", "d-unsigned", &body, None), 401);
    assert_eq!(
        agent.webhook("release", "d-forged", &body, Some(sign(b"something else"))),
        401
    );
    assert_eq!(
        agent.webhook(
            "release",
            "d-sha1",
            &body,
            Some(format!("sha1={}", "0".repeat(40)))
        ),
        401
    );
    let big = vec![b' '; 2 << 20];
    assert_eq!(
        agent.webhook("release", "d-big", &big, Some(sign(&big))),
        413
    );
    let edited = release_payload("v1.0.1", "edited");
    assert_eq!(
        agent.webhook("release", "d-edited", &edited, Some(sign(&edited))),
        202
    );
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    assert_eq!(agent.webhook("ping", "d-ping", ping, Some(sign(ping))), 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.0.0"),
        "nothing deployed yet:\n{}",
        agent.log()
    );
    assert_eq!(
        listings(),
        before,
        "no forged delivery made the agent even look"
    );

    // The genuine delivery: deployed within seconds.
    assert_eq!(
        agent.webhook("release", "d-good", &body, Some(sign(&body))),
        202
    );
    assert!(
        eventually(Duration::from_secs(20), || current(&w).as_deref()
            == Some("releases/1.0.1")),
        "not deployed:\n{}",
        agent.log()
    );
    // A replay of the same delivery does nothing.
    let n = listings();
    assert_eq!(
        agent.webhook("release", "d-good", &body, Some(sign(&body))),
        202
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(listings(), n, "a replayed delivery was acted on");
    let h = w.json(&["history", "web"]);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"]["user"] == "webhook:d-good"),
        "the delivery is the actor in the audit log"
    );

    // /metrics: Prometheus text with the app's version and the deliveries.
    let (code, text) = agent.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains("switchyard_app_info{app=\"web\",version=\"1.0.1\"} 1"),
        "{text}"
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample {line}");
        assert!(
            name.chars().next().unwrap().is_ascii_alphabetic(),
            "bad name {line}"
        );
    }
    assert!(
        text.contains("switchyard_webhook_deliveries_total"),
        "{text}"
    );
}

#[test]
fn auto_patch_deploys_patches_only() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1s\"\nauto = \"patch\"");
    publish(&w, &m, "v1.2.3");
    w.ok(&["deploy", "web", "1.2.3"]);
    publish(&w, &m, "v1.3.0");
    publish(&w, &m, "v1.2.4");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    // The agent's time moves only with the test: each move makes a poll due.
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 60);
            current(&w).as_deref() == Some("releases/1.2.4")
        }),
        "1.2.4 not deployed:\n{}",
        agent.log()
    );
    // Three more listings: a check lists once and a deploy once more, so the
    // third comes from a check started after the one that could have taken
    // 1.3.0 had finished.
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 60);
            listings() >= n + 3
        }),
        "the agent stopped polling:\n{}",
        agent.log()
    );
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.2.4"),
        "1.3.0 must wait for an operator"
    );
    assert!(!w.root.join("releases/1.3.0").exists());
}

#[test]
fn window_holds_a_deploy_until_it_opens() {
    let m = MockGithub::start();
    let w = World::new();
    configure(
        &w,
        &m,
        "poll_interval = \"1s\"\nauto = \"all\"\nwindow = \"Sat,Sun 02:00-05:00\"\ntimezone = \"UTC\"",
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.0.1");
    // A Friday afternoon: outside the window.
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    // A few seconds at a time (still Friday): the agent looks, and holds the
    // deploy at two polls in a row.
    let held = || agent.log().matches("a deploy waits for the window").count();
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 5);
            held() >= 2
        }),
        "the agent did not look:\n{}",
        agent.log()
    );
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.0.0"),
        "deployed outside the window"
    );
    // Saturday 02:30: the window is open.
    set_clock(&w, "2026-11-21T02:30:00Z");
    assert!(
        eventually(Duration::from_secs(20), || current(&w).as_deref()
            == Some("releases/1.0.1")),
        "not deployed once the window opened:\n{}",
        agent.log()
    );
}

#[test]
fn cli_goes_through_the_control_socket() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"");
    publish(&w, &m, "v1.0.0");
    publish(&w, &m, "v1.0.1");
    let agent = Agent::start(&w);
    assert!(w.tmp.path().join("control.sock").exists());
    let out = w.ok(&["deploy", "web", "1.0.0"]);
    assert!(out.contains("deployed 1.0.0"), "{out}");
    w.ok(&["deploy", "web", "1.0.1"]);
    let r = w.json(&["revert", "web"]);
    assert_eq!(r["to"], "1.0.0");
    let st = w.json(&["status", "web"]);
    assert_eq!(st["current"], "1.0.0");
    // The caller is the actor (SO_PEERCRED), and the agent's log saw it.
    let h = w.json(&["history", "web"]);
    let last = h.as_array().unwrap().last().unwrap();
    assert_eq!(last["actor"]["uid"], nix::unistd::getuid().as_raw());
    assert!(agent.log().contains("control request"), "{}", agent.log());
    // Errors come back with their exit codes.
    let (code, _, err) = w.run(&["promote", "web", "9.9.9"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("via the agent"), "{err}");
}

#[test]
fn sigterm_during_a_deploy_exits_cleanly_and_consistently() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"\nauto = \"all\"");
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // A slow warm hook keeps the next deploy busy.
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replace(
            "[apps.web.trust]",
            "[apps.web.hooks]\nwarm = 'sleep 2'\n\n[apps.web.trust]",
        ),
    )
    .unwrap();
    publish(&w, &m, "v1.0.1");
    let mut agent = Agent::start(&w);
    let body = release_payload("v1.0.1", "published");
    assert_eq!(
        agent.webhook("release", "d-1", &body, Some(sign(&body))),
        202
    );
    assert!(
        eventually(Duration::from_secs(10), || agent.log().contains("warm")),
        "{}",
        agent.log()
    );
    let st = agent.sigterm();
    assert!(st.success(), "exit {st:?}:\n{}", agent.log());
    // The running step finished; the state is consistent and nothing is left half done.
    w.assert_consistent();
    w.assert_no_debris();
    assert!(
        !w.tmp.path().join("control.sock").exists(),
        "the socket is removed on exit"
    );
    let status = w.json(&["status", "web"]);
    assert!(
        status["deploy"]["state"] == "completed" || status["current"] == "1.0.0",
        "{status}"
    );
}

/// Past the shutdown timeout, the agent kills the running hook's process
/// group and exits; after "exiting" nothing else happens (no swap, no
/// activation), and the next command undoes the cut-off deploy without
/// quarantining the release.
#[test]
fn sigterm_past_the_timeout_kills_the_hook_and_nothing_happens_after_exiting() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"\nauto = \"all\"");
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let pidfile = w.tmp.path().join("hook.pid");
    let activated = w.root.join("shared/activated");
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replace("shutdown_timeout = \"20s\"", "shutdown_timeout = \"1s\"")
            .replace(
                "[apps.web.trust]",
                &format!(
                    "[apps.web.hooks]\nwarm = 'echo $$ > {}; sleep 30'\nactivate = 'echo $SWITCHYARD_VERSION >> {}'\n\n[apps.web.trust]",
                    pidfile.display(),
                    activated.display()
                ),
            ),
    )
    .unwrap();
    publish(&w, &m, "v1.0.1");
    let mut agent = Agent::start(&w);
    let body = release_payload("v1.0.1", "published");
    assert_eq!(
        agent.webhook("release", "d-1", &body, Some(sign(&body))),
        202
    );
    assert!(
        eventually(Duration::from_secs(10), || pidfile.exists()),
        "{}",
        agent.log()
    );
    let st = agent.sigterm();
    assert!(st.success(), "exit {st:?}:\n{}", agent.log());
    assert!(agent.log().contains("exiting now"), "{}", agent.log());
    // The hook's group is gone.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            None
        )
        .is_err()),
        "the warm hook (pid {pid}) survived the agent"
    );
    // Nothing happens after "exiting".
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));
    assert!(
        !std::fs::read_to_string(&activated)
            .unwrap_or_default()
            .contains("1.0.1")
    );
    // The next command finishes the story: failed as interrupted, not
    // quarantined, deployable again.
    w.ok(&["prune", "web"]);
    let status = w.json(&["status", "web"]);
    assert_eq!(status["deploy"]["state"], "failed", "{status}");
    assert!(
        status["deploy"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted"),
        "{status}"
    );
    assert!(
        status["quarantined"]
            .as_object()
            .is_none_or(|q| q.is_empty()),
        "{status}"
    );
    w.assert_consistent();
    w.assert_no_debris();
}

#[test]
fn sighup_reloads_and_refuses_a_broken_config() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1h\"");
    let agent = Agent::start(&w);
    let good = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, "this is [ not toml").unwrap();
    let pid = nix::unistd::Pid::from_raw(agent.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .contains("keeping the running one")),
        "{}",
        agent.log()
    );
    assert_eq!(agent.get("/healthz").0, 200, "still serving");
    std::fs::write(&w.config, good).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .contains("configuration reloaded")),
        "{}",
        agent.log()
    );
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/switchyard.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "ProtectHome=read-only",
        "Restart=on-failure",
    ] {
        assert!(text.contains(needle), "{needle} missing from the unit");
    }
    let Some(systemd_analyze) = crate::common::require_tool("systemd-analyze") else {
        return;
    };
    // Verified as installed: ExecStart pointing at the built binary.
    let (_d, copy) = crate::common::unit_as_installed(&text);
    let out = Command::new(&systemd_analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn failed_deploy_opens_one_issue_with_secrets_redacted() {
    let m = MockGithub::start();
    let w = World::new();
    configure(
        &w,
        &m,
        "poll_interval = \"1h\"\nauto = \"all\"\nreport_issues = true",
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // A warm hook that fails, leaking secrets into its output.
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    let leaky = "warm = 'echo \"connecting as deploy@example.com to 10.1.2.3 with ghp_abcdefghijklmnopqrstuvwxyz0123456789\"; exit 1'";
    std::fs::write(
        &w.config,
        cfg.replace(
            "[apps.web.trust]",
            &format!("[apps.web.hooks]\n{leaky}\n\n[apps.web.trust]"),
        ),
    )
    .unwrap();
    publish(&w, &m, "v1.0.1");
    let agent = Agent::start(&w);
    let body = release_payload("v1.0.1", "published");
    assert_eq!(
        agent.webhook("release", "d-fail-1", &body, Some(sign(&body))),
        202
    );
    assert!(
        eventually(Duration::from_secs(20), || m.with(|s| s.issues.len()) == 1),
        "no issue opened:\n{}",
        agent.log()
    );
    let issue = m.with(|s| s.issues[0].clone());
    assert!(
        issue.title.contains("web") && issue.title.contains("1.0.1"),
        "{}",
        issue.title
    );
    assert!(issue.labels.contains(&"switchyard".to_string()));
    for secret in [
        "deploy@example.com",
        "10.1.2.3",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    ] {
        assert!(
            !issue.body.contains(secret),
            "{secret} leaked into the issue:\n{}",
            issue.body
        );
    }
    assert!(issue.body.contains("REDACTED"), "{}", issue.body);
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.0"));
    // The same version failing again comments on the same issue (forced past
    // its quarantine through the control socket).
    let (code, _, _) = w.run(&["deploy", "web", "1.0.1", "--force"]);
    assert_eq!(code, 7);
    assert!(
        eventually(Duration::from_secs(20), || m
            .with(|s| s.issues[0].comments.len())
            == 1),
        "no comment on the existing issue:\n{}",
        agent.log()
    );
    assert_eq!(
        m.with(|s| s.issues.len()),
        1,
        "one issue per failing version"
    );
}

/// Issue: the agent undid a manual revert at its next poll. A manual
/// revert holds the app; the agent leaves it over many polls, says why in
/// its log, and resumes after `unhold`; `hold` stops it the same way.
#[test]
fn a_manual_revert_stays_in_place_over_several_polls() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"1s\"\nauto = \"patch\"");
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.0.1");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 60);
            current(&w).as_deref() == Some("releases/1.0.1")
        }),
        "1.0.1 not deployed:\n{}",
        agent.log()
    );
    // Through the agent's control socket, as an operator would, with a
    // reason the socket carries to the audit log and the hold.
    let out = w.ok(&["revert", "web", "--reason", "errors after 1.0.1"]);
    assert!(out.contains("web is held"), "{out}");
    let reverts: Vec<_> = w
        .json(&["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "release.revert.completed")
        .map(|e| e["actor"]["reason"].clone())
        .collect();
    assert_eq!(reverts, vec![serde_json::Value::from("errors after 1.0.1")]);
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.0"));
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 60);
            listings() >= n + 4
        }),
        "the agent stopped polling:\n{}",
        agent.log()
    );
    assert_eq!(
        current(&w).as_deref(),
        Some("releases/1.0.0"),
        "the agent undid the manual revert:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("the app is held"), "{}", agent.log());
    let st = w.json(&["status", "web"]);
    assert_eq!(st["hold"]["automatic"], true, "{st}");
    assert_eq!(
        st["hold"]["reason"],
        "manual revert to 1.0.0: errors after 1.0.1"
    );
    let text = w.ok(&["status", "web"]);
    assert!(text.contains("switchyard unhold web"), "{text}");

    w.ok(&["unhold", "web"]);
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 60);
            current(&w).as_deref() == Some("releases/1.0.1")
        }),
        "unhold did not resume automatic deploys:\n{}",
        agent.log()
    );

    // An operator's own hold stops the agent the same way.
    w.ok(&["hold", "web", "--reason", "change freeze"]);
    publish(&w, &m, "v1.0.2");
    let n = listings();
    assert!(eventually(Duration::from_secs(20), || {
        advance_clock(&w, 60);
        listings() >= n + 3
    }));
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.1"));
    assert_eq!(
        w.json(&["status", "web"])["hold"]["reason"],
        "change freeze"
    );
}
