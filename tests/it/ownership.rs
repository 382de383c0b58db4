//! Ownership for real apps: hooks run as their configured user, releases and
//! shared paths get the app's owner, group and mode before the swap, unknown
//! names fail `config check` with their location, and the shipped systemd
//! unit both verifies and lets `control_group` members reach the socket.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{World, note, require_tool};

/// The unprivileged user every Debian system has.
fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody").unwrap().unwrap()
}

/// Lets another user walk from `/` to the world's files: a `TempDir` is 0700.
fn open_up(w: &World) {
    let base = w.tmp.path();
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn unit_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/switchyard.service"),
    )
    .unwrap()
}

fn tmpfiles_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/switchyard.tmpfiles"),
    )
    .unwrap()
}

/// The value of `Key=` in the unit, if set.
fn directive(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[test]
fn a_hook_with_a_user_runs_as_that_user() {
    let w = World::with_extra(concat!(
        "hooks.warm = { command = 'printf \"%s\\n\" \"$(id -u)\" \"$(id -g)\" \"$(id -G)\" \"$HOME\" \"$USER\" \"$LOGNAME\" > storage/whoami', user = \"nobody\" }\n",
        "hooks.backup = { command = 'echo dump-of-$(id -un) > \"$SWITCHYARD_BACKUP_FILE\"', user = \"nobody\" }\n",
        "hooks.migrate = { command = 'id -un > storage/migrated', user = \"nobody\" }\n",
        "hooks.restore = { command = 'cat \"$SWITCHYARD_BACKUP_FILE\" > storage/restored', user = \"nobody\" }\n",
    ));
    open_up(&w);
    // The shared folder the hooks write to, writable by anyone (ownership
    // itself is the next test's subject).
    let storage = w.root.join("shared/storage");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o777)).unwrap();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);

    let nb = nobody();
    let got = std::fs::read_to_string(storage.join("whoami")).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    let gid = nb.gid.as_raw().to_string();
    assert_eq!(
        lines,
        [
            nb.uid.as_raw().to_string().as_str(),
            gid.as_str(),
            // The primary group only: none of the agent's (root's) groups.
            gid.as_str(),
            nb.dir.to_str().unwrap(),
            "nobody",
            "nobody",
        ],
        "{got}"
    );
    let meta = std::fs::metadata(storage.join("whoami")).unwrap();
    assert_eq!(meta.uid(), nb.uid.as_raw());
    // The backup hook wrote its dump as nobody, migrate ran as nobody.
    assert_eq!(
        std::fs::read_to_string(storage.join("migrated")).unwrap(),
        "nobody\n"
    );
    let backups = w.json(&["backup", "list", "web"]);
    let id = backups.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // And the restore hook reads the dump as nobody.
    w.ok(&["backup", "restore", "web", &id, "--yes"]);
    assert_eq!(
        std::fs::read_to_string(storage.join("restored")).unwrap(),
        "dump-of-nobody\n"
    );
    let logs = w.root.join(".switchyard/logs");
    // The deploy's log folder (the restore has one of its own).
    let warm_log = std::fs::read_dir(&logs)
        .unwrap()
        .find_map(|d| std::fs::read_to_string(d.unwrap().path().join("warm.log")).ok())
        .expect("the deploy's warm.log");
    assert!(warm_log.contains("as user nobody"), "{warm_log}");
}

#[test]
fn releases_and_shared_paths_get_the_owner_group_and_mode() {
    let group = if nix::unistd::Group::from_name("nogroup").unwrap().is_some() {
        "nogroup"
    } else {
        "nobody"
    };
    let w = World::with_extra(&format!(
        "owner = \"nobody\"\ngroup = \"{group}\"\nmode = \"0750\"\n"
    ));
    let nb = nobody();
    let gid = nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    // A file the operator put into the shared folder before: the app's
    // data, left as it is (only the configured path itself is changed).
    std::fs::create_dir_all(w.root.join("shared/storage")).unwrap();
    std::fs::write(w.root.join("shared/storage/keep.txt"), "x").unwrap();
    w.simple_release("v1.0.0");
    w.ok(&["install", "web", "1.0.0"]);

    let rel = w.root.join("releases/1.0.0");
    let m = std::fs::symlink_metadata(&rel).unwrap();
    assert_eq!((m.uid(), m.gid()), (nb.uid.as_raw(), gid));
    assert_eq!(m.mode() & 0o7777, 0o750);
    for p in ["VERSION", "public", "public/index.html", "storage"] {
        let m = std::fs::symlink_metadata(rel.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (nb.uid.as_raw(), gid), "{p}");
    }
    // Files keep their own modes; only directories named by `mode` change.
    let f = std::fs::metadata(rel.join("VERSION")).unwrap();
    assert_eq!(f.mode() & 0o777, 0o644);
    let s = std::fs::symlink_metadata(w.root.join("shared/storage")).unwrap();
    assert_eq!((s.uid(), s.gid()), (nb.uid.as_raw(), gid));
    assert_eq!(s.mode() & 0o7777, 0o750);
    let keep = std::fs::metadata(w.root.join("shared/storage/keep.txt")).unwrap();
    assert_eq!(keep.uid(), 0, "contents of a shared folder are left alone");
    let shared = std::fs::metadata(w.root.join("shared")).unwrap();
    assert_eq!(shared.uid(), 0, "shared/ itself stays the agent's");
    w.assert_consistent();
}

#[test]
fn an_unknown_user_or_group_is_a_located_config_check_error() {
    let w = World::with_extra(concat!(
        "owner = \"no-such-user-7f3a\"\n",
        "group = \"no-such-group-7f3a\"\n",
        "mode = \"0999\"\n",
        "hooks.migrate = { command = \"true\", user = \"ghost-user-7f3a\" }\n",
        "hooks.backup = { command = \"true\", group = \"nogroup\" }\n",
    ));
    let (code, out, err) = w.run(&["config", "check", "--json"]);
    assert_eq!(code, 2, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problems: Vec<(u64, u64, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap_or(0),
                p["column"].as_u64().unwrap_or(0),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |needle: &str| {
        problems
            .iter()
            .find(|p| p.2.contains(needle))
            .unwrap_or_else(|| panic!("no problem mentions {needle:?}: {problems:?}"))
            .clone()
    };
    // Lines 4-8 of the file, each at its value.
    let owner = find("apps.web.owner: no user \"no-such-user-7f3a\"");
    assert_eq!((owner.0, owner.1), (4, 9), "{owner:?}");
    let group = find("apps.web.group: no group \"no-such-group-7f3a\"");
    assert_eq!((group.0, group.1), (5, 9), "{group:?}");
    let mode = find("apps.web.mode must be permission bits in octal");
    assert_eq!(mode.0, 6, "{mode:?}");
    let hook = find("apps.web.hooks.migrate: user: no user \"ghost-user-7f3a\"");
    let text = std::fs::read_to_string(&w.config).unwrap();
    let col = text.lines().nth(6).unwrap().find("\"ghost").unwrap() as u64 + 1;
    assert_eq!((hook.0, hook.1), (7, col), "at the user's value: {hook:?}");
    let lone = find("apps.web.hooks.backup: group is set without user");
    assert_eq!(lone.0, 8, "{lone:?}");
    // The plain form says the same, with the line and column.
    let (_, text, _) = w.run(&["config", "check"]);
    assert!(
        text.contains(".toml:4:9: apps.web.owner: no user \"no-such-user-7f3a\""),
        "{text}"
    );
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_3() {
    let unit = unit_text();
    assert_eq!(directive(&unit, "UMask").as_deref(), Some("0022"));
    assert_eq!(
        directive(&unit, "ProtectHome").as_deref(),
        Some("read-only")
    );
    for gone in ["MemoryDenyWriteExecute", "StateDirectory"] {
        assert!(directive(&unit, gone).is_none(), "{gone}= is still set");
    }
    let caps = directive(&unit, "CapabilityBoundingSet").unwrap();
    for cap in ["CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"] {
        assert!(
            caps.split_whitespace().any(|c| c == cap),
            "{cap} missing: {caps}"
        );
    }
    let Some(sa) = require_tool("systemd-analyze") else {
        return;
    };
    // As installed: ExecStart pointing at the built binary.
    let (_d, copy) = crate::common::unit_as_installed(&unit);
    let out = Command::new(&sa).arg("verify").arg(&copy).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    let out = Command::new(&sa)
        .args(["security", "--offline=true"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure figure:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let figure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"));
    note(&format!("systemd-analyze security: {}", line.trim()));
    assert!(figure <= 3.0, "{line}");
}

/// Parses `RuntimeDirectoryMode=` and checks the tmpfiles line agrees.
fn runtime_dir_mode() -> u32 {
    let unit = unit_text();
    let unit_mode = directive(&unit, "RuntimeDirectoryMode").unwrap_or_else(|| "0755".into());
    let tmpfiles = tmpfiles_text();
    let line = tmpfiles
        .lines()
        .find(|l| l.starts_with("d /run/switchyard "))
        .expect("the tmpfiles line for /run/switchyard");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[2], unit_mode,
        "the tmpfiles line and the unit disagree on the mode"
    );
    assert_eq!((fields[3], fields[4]), ("root", "root"));
    u32::from_str_radix(&unit_mode, 8).unwrap()
}

/// A group for the test's control socket, made if missing.
fn control_group(groupadd: &Path) -> (String, u32) {
    let name = "switchyard-test-ctl";
    let st = Command::new(groupadd).args(["-f", name]).status().unwrap();
    assert!(st.success(), "groupadd -f {name}");
    let gid = nix::unistd::Group::from_name(name)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    (name.to_string(), gid)
}

struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_control_group_member_reaches_the_socket_as_the_unit_sets_it_up() {
    let (Some(setpriv), Some(groupadd)) = (require_tool("setpriv"), require_tool("groupadd"))
    else {
        return;
    };
    let (group, gid) = control_group(&groupadd);
    let w = World::with_extra("poll_interval = \"1h\"\n");
    open_up(&w);
    // /run/switchyard as systemd (RuntimeDirectory=) and tmpfiles make it.
    let run = w.tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let rt = run.join("switchyard");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(runtime_dir_mode())).unwrap();
    let socket = rt.join("control.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{port}\"\ncontrol_socket = \"{}\"\ncontrol_group = \"{group}\"\n",
        socket.display()
    ));
    std::fs::write(&w.config, cfg).unwrap();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);

    let umask = directive(&unit_text(), "UMask").unwrap();
    let bin = assert_cmd::cargo::cargo_bin("switchyard");
    let log = w.tmp.path().join("agent.log");
    let agent = Agent(Some(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" --config \"$1\" agent"
            ))
            .arg(&bin)
            .arg(&w.config)
            .env("RUST_LOG", "switchyard=info,warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("agent ready")
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the agent did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!((s.mode() & 0o777, s.uid(), s.gid()), (0o660, 0, gid));

    let nb = nobody();
    let as_nobody = |groups: &str| {
        let mut c = Command::new(&setpriv);
        c.arg(format!("--reuid={}", nb.uid))
            .arg(format!("--regid={}", nb.gid));
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg(format!("--groups={groups}"));
        }
        let out = c
            .arg(&bin)
            .arg("--config")
            .arg(&w.config)
            .args(["status", "web", "--json"])
            .env_remove("SWITCHYARD_NO_AGENT")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A member of control_group talks to the agent...
    let (code, out, err) = as_nobody(&gid.to_string());
    assert_eq!(code, 0, "a control_group member was refused:\n{out}\n{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["current"], "1.0.0", "{out}");
    let agent_log = std::fs::read_to_string(&log).unwrap();
    assert!(agent_log.contains("control request"), "{agent_log}");
    // ...and someone outside it is refused by the socket's mode.
    let (code, out, err) = as_nobody("");
    assert_ne!(code, 0, "a non-member got in:\n{out}");
    assert!(err.contains("refuses you"), "{err}");
    drop(agent);
}
