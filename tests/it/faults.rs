//! Fault injection at exact system calls: every mutating command runs under
//! Debian's `strace`, which kills the process (SIGKILL) or fails the call
//! (ENOSPC, EIO) at the Nth matching system call of each task. After each
//! injection, `status` then `prune` run, and the app root must satisfy the
//! invariants written in `check` (the promise of README "Crash consistency").
//!
//! CI sweeps every N for the calls that change links and names (rename
//! family, symlink, unlink, rmdir, mkdir) and a stride for the rest (write,
//! fsync family, openat); `examples/fault-sweep.sh` sweeps everything.
//! Environment: `SWITCHYARD_FAULT_STRIDE` (stride for the data calls,
//! default 9; 1 = every point), `SWITCHYARD_FAULT_COMMANDS` (comma list),
//! `SWITCHYARD_FAULT_MODES` (comma list of kill, enospc, eio).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const APP_CONFIG: &str = r#"
[apps.web]
root = "@ROOT@"
keep_releases = 3
backup_shared = true

[apps.web.source]
dir = "@DROP@"

[apps.web.shared]
dirs = ["storage"]

[apps.web.trust]
require_signature = false

[apps.web.hooks]
migrate = 'echo "$SWITCHYARD_VERSION" >> "$SWITCHYARD_ROOT/shared/storage/migrated"'
activate = 'echo "$SWITCHYARD_VERSION" >> "$SWITCHYARD_ROOT/shared/activated"'

[apps.web.health.live]
retries = 0
[[apps.web.health.live.checks]]
kind = "command"
command = 'cmp -s VERSION "@ROOT@/current/VERSION"'
"#;

/// The calls that change names and links: swept at every N in CI.
const LINK_CALLS: &str =
    "rename,renameat,renameat2,symlink,symlinkat,unlink,unlinkat,rmdir,mkdir,mkdirat";
/// The calls that write data: swept with a stride in CI.
const DATA_CALLS: &str = "write,pwrite64,writev,fsync,fdatasync,syncfs,openat";

/// One scenario: a root prepared once, then copied for every trial.
struct Scenario {
    base: PathBuf,
    bin: PathBuf,
    /// The root as prepared, copied back before every trial.
    template: PathBuf,
    root: PathBuf,
    config: PathBuf,
    /// The command under test.
    args: Vec<String>,
    /// A command that must succeed after the repair ("deploy the same
    /// release again").
    again: Vec<String>,
    /// `shared/` after a successful run of the command.
    shared_after: BTreeMap<String, Vec<u8>>,
    /// `shared/` before it.
    shared_before: BTreeMap<String, Vec<u8>>,
}

fn run(bin: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("SWITCHYARD_NO_AGENT", "1")
        .env_remove("SWITCHYARD_CRASH_AT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(bin: &Path, config: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(bin, config, args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

fn pack(bin: &Path, base: &Path, v: &str) {
    let build = base.join(format!("build-{v}")).join("app");
    std::fs::create_dir_all(build.join("assets")).unwrap();
    std::fs::write(build.join("VERSION"), v).unwrap();
    for i in 0..4 {
        std::fs::write(
            build.join("assets").join(format!("f{i}.txt")),
            format!("{v} {i}\n"),
        )
        .unwrap();
    }
    let out = Command::new(bin)
        .args(["pack", "--version", v, "--out"])
        .arg(base.join("drop"))
        .arg(&build)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn copy_tree(from: &Path, to: &Path) {
    if to.exists() {
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(to).status();
        std::fs::remove_dir_all(to).unwrap();
    }
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn read_shared(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{rel}{name}");
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(&e.path(), &format!("{rel}/"), out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    walk(&root.join("shared"), "", &mut out);
    // Written by Switchyard and the hooks themselves, checked separately.
    out.remove("activated");
    out.remove("maintenance.json");
    out
}

impl Scenario {
    /// `setup` brings a fresh root into the state before `args`.
    fn new(name: &str, setup: &[&[&str]], keep: u32, args: &[&str], again: &[&str]) -> Scenario {
        let bin = assert_cmd::cargo::cargo_bin("switchyard");
        let base =
            std::env::temp_dir().join(format!("switchyard-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let base = base.canonicalize().unwrap();
        for v in ["1.0.0", "1.1.0", "1.2.0"] {
            pack(&bin, &base, v);
        }
        let root = base.join("root");
        let config = base.join("switchyard.toml");
        std::fs::write(
            &config,
            APP_CONFIG
                // The rotation sweep rotates the audit log at every command.
                .replace(
                    "keep_releases = 3\n",
                    if name == "rotate" {
                        "keep_releases = 3\naudit_max_bytes = 1\naudit_keep_files = 2\n"
                    } else {
                        "keep_releases = 3\n"
                    },
                )
                .replace("@ROOT@", &root.display().to_string())
                .replace("@DROP@", &base.join("drop").display().to_string()),
        )
        .unwrap();
        std::fs::create_dir_all(&root).unwrap();
        for s in setup {
            ok(&bin, &config, s);
        }
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("keep_releases = 3", &format!("keep_releases = {keep}")),
        )
        .unwrap();
        let template = base.join("template");
        copy_tree(&root, &template);
        let shared_before = read_shared(&root);
        let (code, out, err) = run(&bin, &config, args);
        assert_eq!(
            code, 0,
            "{name}: the command must succeed without faults: {out}{err}"
        );
        let shared_after = read_shared(&root);
        Scenario {
            base,
            bin,
            template,
            root,
            config,
            args: args.iter().map(|s| s.to_string()).collect(),
            again: again.iter().map(|s| s.to_string()).collect(),
            shared_after,
            shared_before,
        }
    }

    fn reset(&self) {
        copy_tree(&self.template, &self.root);
    }

    /// Runs the command with a fault at the Nth call of `calls`; returns
    /// whether anything was injected, and the command's stderr.
    fn inject(&self, calls: &str, mode: &str, n: usize) -> (bool, String) {
        let what = match mode {
            "kill" => "signal=SIGKILL".to_string(),
            "enospc" => "error=ENOSPC".to_string(),
            _ => "error=EIO".to_string(),
        };
        let trace = self.base.join("trace.txt");
        let out = Command::new("strace")
            // -b execve: hooks (exec'd children) run untraced; only Switchyard
            // itself, all its threads, gets the fault.
            .args(["-f", "-b", "execve", "-qq", "-o"])
            .arg(&trace)
            .arg("-e")
            .arg(format!("trace={calls}"))
            .arg("-e")
            .arg(format!("inject={calls}:{what}:when={n}"))
            .arg(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("SWITCHYARD_NO_AGENT", "1")
            .output()
            .unwrap();
        // An injected error is marked; an injected signal shows as the kill.
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        let injected = text.contains("INJECTED") || text.contains("killed by SIGKILL");
        (injected, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The invariants after an injection and the repair that follows.
    fn check(&self, first_stderr: &str) -> Vec<String> {
        let mut bad = Vec::new();
        let panics = |bad: &mut Vec<String>, what: &str, s: &str| {
            if s.contains("panicked") {
                bad.push(format!("{what} panicked: {s}"));
            }
        };
        panics(&mut bad, "the command", first_stderr);
        let (_, st_out, st_err) = run(&self.bin, &self.config, &["status", "web", "--json"]);
        panics(&mut bad, "status", &st_err);
        let (code, out, err) = run(&self.bin, &self.config, &["prune", "web"]);
        panics(&mut bad, "prune", &err);
        if code != 0 {
            bad.push(format!("prune after the fault failed ({code}): {out}{err}"));
        }
        let _ = st_out;
        let (_, st, err) = run(&self.bin, &self.config, &["status", "web", "--json"]);
        panics(&mut bad, "status", &err);
        let st: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
        // 1. current and last-good are complete releases.
        for link in ["current", "last-good"] {
            if let Some(v) = st[link.replace('-', "_")].as_str() {
                let (code, out, err) = run(&self.bin, &self.config, &["verify", "web", v]);
                if code != 0 {
                    bad.push(format!("{link} {v} fails verify: {out}{err}"));
                }
            }
        }
        // 2. The live release is the one activated last (and checked), or
        //    the app asks for an operator.
        let activated =
            std::fs::read_to_string(self.root.join("shared/activated")).unwrap_or_default();
        let last_activated = activated.lines().last().map(str::to_string);
        let current = st["current"].as_str().map(str::to_string);
        if st["attention"].is_null() && current != last_activated {
            bad.push(format!(
                "live is {current:?} but the last activated release is {last_activated:?}"
            ));
        }
        // 3. Shared data is exactly before or after, nothing hidden.
        let shared = read_shared(&self.root);
        if st["attention"].is_null() && shared != self.shared_before && shared != self.shared_after
        {
            bad.push(format!(
                "shared/ is neither before nor after: {:?}",
                shared.keys().collect::<Vec<_>>()
            ));
        }
        // 4. The audit chain holds, and its last event agrees with status.
        let (code, out, err) = run(&self.bin, &self.config, &["audit", "verify", "web"]);
        if code != 0 {
            bad.push(format!("audit verify: {out}{err}"));
        }
        let (_, h, _) = run(&self.bin, &self.config, &["history", "web", "--json"]);
        let h: serde_json::Value = serde_json::from_str(&h).unwrap_or_default();
        if let Some(last) = h.as_array().and_then(|a| {
            a.iter().rev().find(|e| {
                e["outcome"] == "ok"
                    && e["event"].as_str().is_some_and(|n| {
                        n.ends_with("promote.completed")
                            || n.ends_with("revert.completed")
                            || n == "system.update.completed"
                            || n == "system.rollback.completed"
                    })
            })
        }) {
            let to = last["to"].as_str().map(str::to_string);
            let from = last["from"].as_str().map(str::to_string);
            let ok = if last["event"] == "system.rollback.completed" {
                current == from || current == to
            } else {
                current == to
            };
            if !ok && st["attention"].is_null() {
                bad.push(format!(
                    "history's last switch {last} disagrees with current {current:?}"
                ));
            }
        }
        // 5. No debris.
        let mut debris = Vec::new();
        find_debris(&self.root, &mut debris);
        if !debris.is_empty() {
            bad.push(format!("debris left: {debris:?}"));
        }
        // 6. The same release deploys again (no --force: an interruption
        //    never quarantines).
        if st["attention"].is_null() {
            let again: Vec<&str> = self.again.iter().map(String::as_str).collect();
            let (code, out, err) = run(&self.bin, &self.config, &again);
            if code != 0 {
                bad.push(format!("{again:?} afterwards failed ({code}): {out}{err}"));
            }
        }
        bad
    }
}

fn find_debris(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-")
            || name.starts_with(".staging-")
            || name.starts_with(".switchyard-staging")
        {
            out.push(e.path().display().to_string());
        }
        if e.file_type().unwrap().is_dir() && name != "backups" {
            find_debris(&e.path(), out);
        }
    }
}

fn env_list(name: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.split(',').map(str::to_string).collect(),
        _ => default.iter().map(|s| s.to_string()).collect(),
    }
}

fn sweep(name: &str, setup: &[&[&str]], keep: u32, args: &[&str], again: &[&str]) {
    if crate::common::require_tool("strace").is_none() {
        return;
    }
    let s = Scenario::new(name, setup, keep, args, again);
    let stride: usize = std::env::var("SWITCHYARD_FAULT_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let modes = env_list("SWITCHYARD_FAULT_MODES", &["kill", "enospc", "eio"]);
    let mut report = String::new();
    let mut violations = Vec::new();
    for (calls, step) in [(LINK_CALLS, 1), (DATA_CALLS, stride)] {
        for mode in &modes {
            let mut points = 0;
            let mut n = 1;
            loop {
                s.reset();
                let (injected, stderr) = s.inject(calls, mode, n);
                if !injected {
                    break;
                }
                points += 1;
                for v in s.check(&stderr) {
                    violations.push(format!(
                        "{name} {mode} {} #{n}: {v}",
                        calls.split(',').next().unwrap()
                    ));
                }
                n += step;
            }
            let _ = writeln!(
                report,
                "fault sweep {name}: {mode} at every {step} of [{calls}]: {points} points"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&s.base);
    crate::common::note(&format!(
        "{report}fault sweep {name}: {} violations",
        violations.len()
    ));
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn wanted(cmd: &str) -> bool {
    env_list("SWITCHYARD_FAULT_COMMANDS", &[]).is_empty()
        || env_list("SWITCHYARD_FAULT_COMMANDS", &[])
            .iter()
            .any(|c| c == cmd)
}

#[test]

fn faults_in_deploy() {
    if wanted("deploy") {
        sweep(
            "deploy",
            &[&["deploy", "web", "1.0.0"]],
            3,
            &["deploy", "web", "1.1.0"],
            &["deploy", "web", "1.1.0"],
        );
    }
}

/// Audit log rotation (at the start of every command here): shifting the
/// rotated files, dropping the oldest, linking, writing the new file.
#[test]
fn faults_in_rotate() {
    if wanted("rotate") {
        sweep(
            "rotate",
            &[
                &["deploy", "web", "1.0.0"],
                &["deploy", "web", "1.1.0"],
                &["install", "web", "1.2.0"],
            ],
            3,
            &["prune", "web"],
            &["deploy", "web", "1.2.0"],
        );
    }
}

#[test]

fn faults_in_promote() {
    if wanted("promote") {
        sweep(
            "promote",
            &[&["deploy", "web", "1.0.0"], &["install", "web", "1.1.0"]],
            3,
            &["promote", "web", "1.1.0", "--skip-lifecycle"],
            &["promote", "web", "1.1.0", "--skip-lifecycle"],
        );
    }
}

#[test]

fn faults_in_revert() {
    if wanted("revert") {
        sweep(
            "revert",
            &[&["deploy", "web", "1.0.0"], &["deploy", "web", "1.1.0"]],
            3,
            &["revert", "web"],
            &["revert", "web", "--to", "1.0.0"],
        );
    }
}

#[test]

fn faults_in_install() {
    if wanted("install") {
        sweep(
            "install",
            &[&["deploy", "web", "1.0.0"]],
            3,
            &["install", "web", "1.1.0"],
            &["deploy", "web", "1.1.0"],
        );
    }
}

#[test]

fn faults_in_prune() {
    if wanted("prune") {
        sweep(
            "prune",
            &[
                &["deploy", "web", "1.0.0"],
                &["deploy", "web", "1.1.0"],
                &["deploy", "web", "1.2.0"],
            ],
            1,
            &["prune", "web"],
            &["promote", "web", "1.2.0"],
        );
    }
}

#[test]

fn faults_in_backup_restore() {
    if wanted("backup-restore") {
        sweep(
            "backup-restore",
            &[&["deploy", "web", "1.0.0"], &["deploy", "web", "1.1.0"]],
            3,
            &["backup", "restore", "web", "--yes"],
            &["promote", "web", "1.1.0"],
        );
    }
}

/// A full disk has its own exit code (9) and says where and how much room
/// is left, instead of passing for a verification (3) or pre-check (6)
/// failure; and nothing is left half done.
#[test]
fn a_full_disk_exits_9_naming_the_path() {
    if crate::common::require_tool("strace").is_none() {
        return;
    }
    let s = Scenario::new(
        "diskfull",
        &[&["deploy", "web", "1.0.0"]],
        3,
        &["install", "web", "1.1.0"],
        &["deploy", "web", "1.1.0"],
    );
    let mut seen = 0;
    // The first few writes and fsyncs of an install: state, journal,
    // unpacked files.
    for n in 1..=6 {
        s.reset();
        let trace = s.base.join("trace.txt");
        let out = Command::new("strace")
            .args(["-f", "-b", "execve", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", "trace=write,fsync", "-e"])
            .arg(format!("inject=write,fsync:error=ENOSPC:when={n}"))
            .arg(&s.bin)
            .arg("--config")
            .arg(&s.config)
            .args(["install", "web", "1.1.0"])
            .env("SWITCHYARD_NO_AGENT", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(0) {
            continue;
        }
        assert_eq!(out.status.code(), Some(9), "#{n}: {err}");
        // (check runs the next command: once per injection.)
        let bad = s.check(&err);
        assert!(bad.is_empty(), "#{n}: {bad:?}");
        if !err.contains("error:") {
            // strace counts `when=` per thread: with the writer threads, the
            // main thread's n-th write can be the error line itself, which
            // then never reaches stderr (the exit code still says 9).
            continue;
        }
        seen += 1;
        // A log line the injection hit says so on its own line (threads
        // count their writes apart); the error itself names ENOSPC once.
        let err: String = err
            .lines()
            .filter(|l| !l.starts_with("[tracing-subscriber]"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            err.matches("No space left on device").count(),
            1,
            "#{n}: {err}"
        );
        assert!(err.contains("hint: the file system of /"), "#{n}: {err}");
    }
    assert!(seen >= 3, "only {seen} injections failed the install");
    let _ = std::fs::remove_dir_all(&s.base);
}

#[test]
fn faults_in_backup_create() {
    if wanted("backup-create") {
        sweep(
            "backup-create",
            &[&["deploy", "web", "1.0.0"]],
            3,
            &["backup", "create", "web"],
            &["promote", "web", "1.0.0"],
        );
    }
}

#[test]
fn faults_in_maintenance() {
    if wanted("maintenance") {
        sweep(
            "maintenance",
            &[&["deploy", "web", "1.0.0"]],
            3,
            &["maintenance", "on", "web"],
            &["maintenance", "off", "web"],
        );
    }
}

#[test]
fn faults_in_resolve() {
    if wanted("resolve") {
        sweep(
            "resolve",
            &[&["deploy", "web", "1.0.0"], &["maintenance", "on", "web"]],
            3,
            &["resolve", "web"],
            &["promote", "web", "1.0.0"],
        );
    }
}
