//! Security and host integration: what other local users can read, starve
//! or slip into the drop folder, and how a damaged audit log is recovered.
//! Unprivileged users are played by `nobody` (`setpriv`).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{Agent, free_port};
use crate::common::{World, require_tool};

const NOBODY: [&str; 4] = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];

/// Runs `args` as `nobody`; (exit code, stdout).
fn as_nobody(args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .args(NOBODY)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Lets every user traverse the temporary world (tempdirs are 0700), so
/// only the modes Switchyard chooses keep `nobody` out.
fn open_world(w: &World) {
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the binary, killed after `limit`; (exit code or None if killed,
/// stdout + stderr, time taken).
fn run_bounded(w: &World, args: &[&str], limit: Duration) -> (Option<i32>, String, Duration) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .arg("--config")
        .arg(&w.config)
        .args(args)
        .env_remove("SWITCHYARD_CRASH_AT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut text = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut text);
    let _ = child.stderr.take().unwrap().read_to_string(&mut text);
    (code, text, took)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            files_under(&p, out);
        } else if m.is_file() {
            out.push(p);
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn hook_output_with_secrets_is_never_readable_by_other_users() {
    if require_tool("setpriv").is_none() {
        return;
    }
    let w = World::with_extra("backup_shared = true");
    open_world(&w);
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replace(
            "[apps.web.trust]",
            "[apps.web.hooks]\nwarm = 'if [ \"$SWITCHYARD_VERSION\" = 1.1.0 ]; then echo password=hunter2 >&2; exit 1; fi'\n\n[apps.web.trust]",
        ),
    )
    .unwrap();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let (code, out, err) = w.run(&["deploy", "web", "1.1.0"]);
    assert_eq!(code, 7, "{out}{err}");
    // The operator sees the hook's output.
    assert!(err.contains("password=hunter2"), "{err}");

    // Files others could read never hold it: state.json keeps a short
    // reason and the log's path.
    let state = std::fs::read_to_string(w.root.join(".switchyard/state.json")).unwrap();
    assert!(!state.contains("hunter2"), "{state}");
    assert!(state.contains("warm.log"), "{state}");
    let audit = std::fs::read_to_string(w.root.join(".switchyard/audit.jsonl")).unwrap();
    assert!(
        !audit.contains("hunter2"),
        "the audit log keeps hook output forever"
    );

    // A journal, left by an install killed mid-way.
    w.simple_release("v1.2.0");
    let out = w
        .cmd()
        .args(["install", "web", "1.2.0"])
        .env("SWITCHYARD_CRASH_AT", "install.unpacked")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(w.root.join(".switchyard/journal.json").exists());

    // Everything under .switchyard is closed to other users; the releases
    // and shared paths stay readable (web servers read them).
    let mut files = Vec::new();
    files_under(&w.root.join(".switchyard"), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("warm.log"))
            && files.iter().any(|f| f.ends_with("journal.json"))
            && files
                .iter()
                .any(|f| f.to_string_lossy().ends_with(".tar.gz")),
        "{files:?}"
    );
    for f in &files {
        let (code, out) = as_nobody(&["cat", f.to_str().unwrap()]);
        assert!(
            code != 0 && out.is_empty(),
            "nobody can read {}",
            f.display()
        );
        // Those that may hold secrets are closed by their own mode too.
        let name = f.to_string_lossy();
        if !name.contains("/manifests/") && !name.contains("/cache/") {
            assert_eq!(mode(f) & 0o007, 0, "{} is open to others", f.display());
        }
    }
    assert_eq!(mode(&w.root.join(".switchyard")), 0o750);
    let (code, out) = as_nobody(&["cat", w.root.join("current/VERSION").to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, "1.0.0\n"));
    assert!(mode(&w.root.join("releases")) & 0o005 == 0o005);
    assert!(mode(&w.root.join("shared")) & 0o005 == 0o005);
}

/// A config for the agent: the drop folder, `[agent]` with a free port,
/// a control socket and `agent_extra`.
fn agent_world(agent_extra: &str) -> World {
    let w = World::new();
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg = cfg.replacen(
        "keep_releases = 3\n",
        "keep_releases = 3\npoll_interval = \"1h\"\n",
        1,
    );
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{}\"\ncontrol_socket = \"{}\"\n{agent_extra}\n",
        free_port(),
        w.tmp.path().join("control.sock").display()
    ));
    std::fs::write(&w.config, cfg).unwrap();
    w
}

#[test]
fn secret_files_open_to_other_users_are_refused_or_warned_about() {
    let w = World::new();
    let secret = w.tmp.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{}\"\ncontrol_socket = \"{}\"\nwebhook_secret_file = \"{}\"\n",
        free_port(),
        w.tmp.path().join("control.sock").display(),
        secret.display()
    ));
    std::fs::write(&w.config, cfg).unwrap();

    // Writable by others: refused, by `config check` and by the agent.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("webhook_secret_file") && out.contains("writable by other users"),
        "{out}"
    );
    let (code, out, _) = run_bounded(&w, &["agent"], Duration::from_secs(10));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("writable by other users"), "{out}");

    // Readable by others: a warning, not a refusal.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("readable by other users"), "{out}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 0);
    assert!(!out.contains("readable by other users"), "{out}");

    // A trusted public key anyone can rewrite is refused too.
    let key = w.tmp.path().join("web.pub");
    std::fs::copy(&w.public_key, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o646)).unwrap();
    w.write_config_with_trust("", &format!("key_files = [\"{}\"]\n", key.display()));
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("key_files") && out.contains("writable by other users"),
        "{out}"
    );
}

/// Connects and asks for `path` within `limit`; the status code, or 0.
fn get_within(port: u16, path: &str, limit: Duration) -> u16 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, limit) else {
        return 0;
    };
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Opens `n` connections to `port` as `nobody`, each sending half a request
/// and never finishing it; holds them until `hold` has passed. Prints how
/// many it opened once it is done opening.
const HALF_OPEN: &str = r#"
use strict; use IO::Socket::INET; use Time::HiRes qw(time sleep);
$SIG{PIPE} = 'IGNORE'; $| = 1;
my ($port, $n, $open_for, $hold) = @ARGV;
my $start = time; my @s;
for (1..$n) {
    last if time - $start > $open_for;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 1) or next;
    syswrite($s, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    push @s, $s;
}
print scalar(@s), "\n";
my $left = $hold - (time - $start);
sleep($left) if $left > 0;
"#;

#[test]
fn half_open_connections_do_not_starve_the_agent() {
    let (Some(_), Some(perl)) = (require_tool("setpriv"), require_tool("perl")) else {
        return;
    };
    let w = agent_world("");
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // The agent starts with the usual soft limit of 1024 descriptors.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\""])
        .arg(assert_cmd::cargo::cargo_bin("switchyard"));
    let agent = Agent::start_cmd(&w, cmd);
    assert_eq!(
        get_within(agent.port, "/healthz", Duration::from_secs(2)),
        200
    );

    let mut flood = Command::new("setpriv")
        .args(NOBODY)
        .arg(&perl)
        .args(["-e", HALF_OPEN, &agent.port.to_string(), "5000", "20", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    crate::common::note(&format!(
        "half-open connections opened by nobody: {}",
        line.trim()
    ));

    let t = Instant::now();
    let code = get_within(agent.port, "/healthz", Duration::from_secs(1));
    let healthz = t.elapsed();
    let (status, out, took) = run_bounded(&w, &["status", "web"], Duration::from_secs(5));
    let _ = flood.kill();
    let _ = flood.wait();
    assert_eq!(
        code,
        200,
        "/healthz did not answer within 1s under load:\n{}",
        agent.log()
    );
    assert!(healthz < Duration::from_secs(1), "{healthz:?}");
    assert_eq!(
        status,
        Some(0),
        "status through the socket: {out}\n{}",
        agent.log()
    );
    assert!(
        took < Duration::from_secs(1) + Duration::from_millis(500),
        "status took {took:?}"
    );
    assert!(agent.log().contains("control request"), "{}", agent.log());
}

#[test]
fn the_cli_gives_up_on_a_silent_agent_with_a_clear_message() {
    let w = agent_world("");
    // Something listens on the control socket but never answers.
    let sock = w.tmp.path().join("control.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in l.incoming().take(1) {
            kept.push(s);
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    let (code, out, took) = run_bounded(&w, &["status", "web"], Duration::from_secs(25));
    assert_eq!(code, Some(1), "{out}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        out.contains("did not answer within") && out.contains("SWITCHYARD_NO_AGENT=1"),
        "{out}"
    );
    drop(held);
}

#[test]
fn a_fifo_in_the_drop_folder_is_refused_at_once() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let asset = dir.join("web-1.0.0.tar.gz");
    std::fs::remove_file(&asset).unwrap();
    nix::unistd::mkfifo(&asset, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let (code, out, took) = run_bounded(&w, &["install", "web", "1.0.0"], Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(1),
        "install hung on a FIFO ({took:?}): {out}"
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("FIFO") && out.contains("web-1.0.0.tar.gz"),
        "{out}"
    );
    // The lock is free again: another command runs at once.
    w.ok(&["list", "web"]);

    // A FIFO as a sidecar is refused the same way.
    let dir = w.simple_release("v1.0.1");
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("SHA256SUMS"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (code, out, took) = run_bounded(&w, &["install", "web", "1.0.1"], Duration::from_secs(10));
    assert!(took < Duration::from_secs(1), "{took:?}: {out}");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("FIFO") && out.contains("SHA256SUMS"), "{out}");
}

#[test]
fn dev_zero_in_the_drop_folder_is_refused() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let asset = dir.join("web-1.0.0.tar.gz");
    std::fs::remove_file(&asset).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &asset).unwrap();
    let (code, out, took) = run_bounded(&w, &["install", "web", "1.0.0"], Duration::from_secs(10));
    assert!(took < Duration::from_secs(1), "{took:?}: {out}");
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("symlink") && out.contains("web-1.0.0.tar.gz"),
        "{out}"
    );

    // The device itself, made in the drop folder.
    std::fs::remove_file(&asset).unwrap();
    let made = nix::sys::stat::mknod(
        &asset,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    );
    if made.is_err() {
        crate::common::note("mknod not permitted here; the device case is not checked");
        return;
    }
    let (code, out, took) = run_bounded(&w, &["install", "web", "1.0.0"], Duration::from_secs(10));
    assert!(took < Duration::from_secs(1), "{took:?}: {out}");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("character device"), "{out}");
}

#[test]
fn an_ambiguous_version_in_the_drop_folder_refuses_only_itself() {
    let w = World::new();
    w.simple_release("v1.2.0");
    w.simple_release("v1.3.0");
    w.simple_release("1.3.0");
    let (code, out, err) = w.run(&["install", "web", "1.3.0"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("v1.3.0") && err.contains("1.3.0"), "{err}");
    // `latest` is the ambiguous one: refused too, rather than quietly
    // taking an older release.
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_ne!(code, 0);
    assert!(err.contains("v1.3.0"), "{err}");
    // Every other version installs.
    let out = w.ok(&["deploy", "web", "1.2.0"]);
    assert!(out.contains("deployed 1.2.0"), "{out}");
}

#[test]
fn a_damaged_audit_log_is_reported_and_sealed() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let audit = w.root.join(".switchyard/audit.jsonl");
    let lines = std::fs::read_to_string(&audit).unwrap().lines().count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&audit)
        .unwrap();
    f.write_all(b"garbage\n").unwrap();
    drop(f);

    let (code, out, err) = w.run(&["deploy", "web", "1.1.0"]);
    assert_ne!(code, 0, "{out}");
    let at = format!("line {}", lines + 1);
    assert!(err.contains(&at), "no line number ({at}): {err}");
    assert!(err.contains("switchyard audit seal web --reason"), "{err}");
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));

    let out = w.ok(&[
        "audit",
        "seal",
        "web",
        "--reason",
        "disk hiccup on 2026-03-01",
    ]);
    assert!(out.contains("sealed"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(w.root.join(".switchyard"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit.jsonl.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let damaged = std::fs::read_to_string(w.root.join(".switchyard").join(&kept[0])).unwrap();
    assert!(damaged.ends_with("garbage\n"));

    let out = w.ok(&["deploy", "web", "1.1.0"]);
    assert!(out.contains("deployed 1.1.0"), "{out}");
    let out = w.ok(&["audit", "verify", "web"]);
    assert!(out.contains("chain intact"), "{out}");
    assert!(
        out.contains("sealed") && out.contains("disk hiccup") && out.contains(&kept[0]),
        "{out}"
    );
    let v = w.json(&["audit", "verify", "web"]);
    assert_eq!(v["seal"]["damaged_lines"], lines + 1);
    assert_eq!(v["seal"]["file_now"], "kept");

    // With nothing damaged there is nothing to seal.
    let (code, _, err) = w.run(&["audit", "seal", "web", "--reason", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing to seal"), "{err}");
}
