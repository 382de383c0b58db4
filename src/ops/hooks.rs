//! Deploy hooks: the commands an app runs at fixed points of a deploy
//! (`warm`, `backup`, `migrate`, `activate`, `restore`, `on_failure`),
//! configured under `[apps.<name>.hooks]`.
//!
//! A hook runs in the release directory, in a process group of its own, with
//! the agent's environment plus `SWITCHYARD_*` variables describing the
//! deploy. Its output is streamed line by line to `tracing` and to
//! `<log_dir>/<hook>.log`; only the last lines stay in memory, for the error.
//! When it overruns its timeout the whole group is killed, grandchildren
//! included, so a hung `npm` or `php` leaves nothing behind.
//!
//! Hooks run through the process supervisor (`crate::process`), as health
//! `command` checks do; their timeouts are measured on the deploy's clock.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::clock::Clock;
pub(crate) use crate::config::hooks::{CommandLine, HookSpec, show_duration};
use crate::fs::{self, FsError};
use crate::process::{Ending, Identity, LineSink, Stream, SuperviseError, signal_name, supervise};

impl CommandLine {
    pub(crate) fn to_process(&self) -> process::Command {
        match self {
            CommandLine::Shell(s) => {
                let mut c = process::Command::new("/bin/sh");
                c.arg("-c").arg(s);
                c
            }
            CommandLine::Argv(argv) => {
                let mut c = process::Command::new(self.program());
                c.args(argv.iter().skip(1));
                c
            }
        }
    }
}

/// What a hook needs to know about the deploy it is part of.
#[derive(Debug, Clone)]
pub(crate) struct HookContext {
    /// The app's name.
    pub app: String,
    /// The version being deployed.
    pub version: String,
    /// The version live before this deploy, if any.
    pub previous_version: Option<String>,
    /// The new release's directory; hooks run there.
    pub release_dir: PathBuf,
    /// The app's root.
    pub root: PathBuf,
    /// The deploy's id (as in history and the journal).
    pub deploy_id: String,
    /// Where the `backup` hook writes and `restore` reads, if the deploy has one.
    pub backup_file: Option<PathBuf>,
    /// Where hook logs go, e.g. `root/.switchyard/logs/<deploy_id>`.
    pub log_dir: PathBuf,
    /// The deploy's clock: hook timeouts and durations are measured on it.
    pub(crate) clock: Arc<dyn Clock>,
}

impl HookContext {
    fn env_vars(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("SWITCHYARD_APP", self.app.clone()),
            ("SWITCHYARD_VERSION", self.version.clone()),
            (
                "SWITCHYARD_PREVIOUS_VERSION",
                self.previous_version.clone().unwrap_or_default(),
            ),
            (
                "SWITCHYARD_RELEASE_DIR",
                self.release_dir.display().to_string(),
            ),
            ("SWITCHYARD_ROOT", self.root.display().to_string()),
            ("SWITCHYARD_DEPLOY_ID", self.deploy_id.clone()),
        ];
        if let Some(b) = &self.backup_file {
            v.push(("SWITCHYARD_BACKUP_FILE", b.display().to_string()));
        }
        v
    }
}

/// A hook that ran and exited 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct HookOutcome {
    /// The hook's name.
    pub name: String,
    /// Always 0 (a non-zero exit is an error), kept for reports.
    pub exit_code: i32,
    /// How long it ran.
    #[serde(rename = "duration_ms", serialize_with = "serialize_ms")]
    pub duration: Duration,
    /// Its full output.
    pub log_file: PathBuf,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Errors running a hook.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    /// The program could not be started; nothing ran.
    #[error(
        "hook {name}: cannot start {program} in {} (check that the program exists and is executable, and that the release directory exists and the hook's user may enter it)",
        dir.display()
    )]
    Spawn {
        /// The hook.
        name: String,
        /// The program that failed to start.
        program: String,
        /// The working directory it was to run in.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The hook exited with a non-zero code.
    #[error(
        "hook {name} failed with exit code {code}; its last output:\n{}\nfull output in {}; fix the cause and deploy again",
        show_tail(tail),
        log_file.display()
    )]
    Failed {
        /// The hook.
        name: String,
        /// Its exit code.
        code: i32,
        /// Its last lines of output.
        tail: String,
        /// Its full output.
        log_file: PathBuf,
    },
    /// The hook was killed by a signal that switchyard did not send.
    #[error(
        "hook {name} was killed by {signal} (not by switchyard: a crash, the OOM killer or an operator), so it may have done only part of its work; its last output:\n{}\nfull output in {}; check the system log, and whether the hook is safe to run again, before deploying again",
        show_tail(tail),
        log_file.display()
    )]
    Crashed {
        /// The hook.
        name: String,
        /// The signal's name, e.g. `SIGSEGV`.
        signal: String,
        /// Its last lines of output.
        tail: String,
        /// Its full output.
        log_file: PathBuf,
    },
    /// The hook overran its timeout; its whole process group was killed.
    #[error(
        "hook {name} did not finish within {} and was killed with all its processes, so it may have done only part of its work; its last output:\n{}\nfull output in {}; raise its timeout (apps.{app}.hooks.{name} = {{ command = ..., timeout = \"...\" }}) or make it faster, and check whether it is safe to run again",
        show_duration(*timeout),
        show_tail(tail),
        log_file.display()
    )]
    TimedOut {
        /// The app whose hook it is.
        app: String,
        /// The hook.
        name: String,
        /// The timeout it overran.
        timeout: Duration,
        /// Its last lines of output.
        tail: String,
        /// Its full output.
        log_file: PathBuf,
    },
    /// Waiting for the hook failed; it was killed, but what it did is unknown.
    #[error(
        "hook {name}: lost track of the process ({source}); it was killed, so it may have done only part of its work; check whether it is safe to run again"
    )]
    Wait {
        /// The hook.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The hook's log could not be created; the hook did not run.
    #[error(
        "cannot create the hook log (check that the log directory is writable and has free space)"
    )]
    Fs(#[from] FsError),
}

impl HookError {
    /// The host failed the hook (it could not be started for lack of space
    /// or memory, its log could not be written, it was lost track of), not
    /// the release: such a failure does not quarantine.
    pub(crate) fn is_host_fault(&self) -> bool {
        match self {
            HookError::Spawn { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            HookError::Fs(_) | HookError::Wait { .. } => true,
            _ => false,
        }
    }

    /// The error without the hook's output, which may hold secrets: what is
    /// kept in files (state, audit log) instead of the full message. It
    /// names the log that holds the output.
    pub(crate) fn without_output(&self) -> String {
        match self {
            HookError::Failed {
                name,
                code,
                log_file,
                ..
            } => format!(
                "hook {name} failed with exit code {code} (its output: {})",
                log_file.display()
            ),
            HookError::Crashed {
                name,
                signal,
                log_file,
                ..
            } => format!(
                "hook {name} was killed by {signal}, not by switchyard (its output: {})",
                log_file.display()
            ),
            HookError::TimedOut {
                name,
                timeout,
                log_file,
                ..
            } => format!(
                "hook {name} did not finish within {} and was killed with all its processes (its output: {})",
                show_duration(*timeout),
                log_file.display()
            ),
            HookError::Spawn { .. } | HookError::Wait { .. } | HookError::Fs(_) => {
                crate::chain::chain(self)
            }
        }
    }

    /// True when the hook may have done part of its work (it timed out or was
    /// killed mid-way), so neither "it ran" nor "it did not run" can be assumed.
    pub(crate) fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            HookError::TimedOut { .. } | HookError::Crashed { .. } | HookError::Wait { .. }
        )
    }
}

fn show_tail(tail: &str) -> String {
    if tail.is_empty() {
        "  (no output)".to_string()
    } else {
        tail.lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs one hook to completion in `ctx.release_dir` and returns how it went.
///
/// Blocking: it returns when the hook has exited (or was killed) and its
/// output is drained. Output goes to `tracing` (stdout at info, stderr at warn,
/// with fields `hook`, `app`, `version`) and to `<ctx.log_dir>/<name>.log`,
/// appended to, so a hook run twice in one deploy keeps both runs.
///
/// Processes the hook leaves behind are killed with its group if they still
/// hold its output open 2 s after it exited; a hook that must start something
/// long-lived should hand it to the service manager (`systemctl`), not fork it.
///
/// A failure to write the log once the hook runs does not stop the hook (a
/// half-done migration is worse than a missing log): it is warned about, and
/// the output still goes to `tracing`.
pub(crate) fn run_hook(
    name: &str,
    spec: &HookSpec,
    ctx: &HookContext,
) -> Result<HookOutcome, HookError> {
    fs::create_private_dir_all(&ctx.log_dir)?;
    let log_file = ctx.log_dir.join(format!("{}.log", file_stem(name)));
    let file = fs::open_append(&log_file)?;
    let mut log = HookLog {
        name,
        app: &ctx.app,
        version: &ctx.version,
        path: &log_file,
        out: Some(BufWriter::new(file)),
    };
    log.note(&format!(
        "=== {} hook {name} started: {} (timeout {})",
        ctx.clock.now(),
        spec.command,
        show_duration(spec.timeout)
    ));
    log.idle();

    let mut cmd = spec.command.to_process();
    cmd.current_dir(&ctx.release_dir).envs(ctx.env_vars());
    if let Some(who) = &spec.run_as {
        log.note(&format!(
            "=== as user {} (uid {}, gid {})",
            who.user, who.uid, who.gid
        ));
        who.apply(&mut cmd);
        if let Some(b) = &ctx.backup_file {
            hand_over(b, &ctx.root, who)?;
        }
    }
    // After the user's HOME and USER: what the configuration says wins.
    cmd.envs(&spec.env);
    if ctx.backup_file.is_none() {
        // A value inherited from the agent's own environment would point the
        // hook at some other deploy's backup.
        cmd.env_remove("SWITCHYARD_BACKUP_FILE");
    }
    info!(hook = %name, app = %ctx.app, version = %ctx.version, command = %spec.command,
        timeout = %show_duration(spec.timeout), "running hook");

    let fin = match supervise(&mut cmd, spec.timeout, ctx.clock.as_ref(), &mut log) {
        Ok(f) => f,
        Err(SuperviseError::Spawn(source)) => {
            log.note(&format!("=== not started: {source}"));
            log.finish();
            return Err(HookError::Spawn {
                name: name.to_string(),
                program: spec.command.program().to_string(),
                dir: ctx.release_dir.clone(),
                source,
            });
        }
        Err(SuperviseError::Wait(source)) => {
            log.note(&format!("=== lost track of the process: {source}"));
            log.finish();
            return Err(HookError::Wait {
                name: name.to_string(),
                source,
            });
        }
    };
    if fin.left_running {
        warn!(hook = %name, app = %ctx.app, version = %ctx.version,
            "the hook exited but processes it started still held its output open; killed them");
    }
    let secs = fin.duration.as_secs_f64();
    let tail = fin.tail.join("\n");
    let result = match fin.ending {
        Ending::Exited(0) => {
            log.note(&format!("=== exited with code 0 after {secs:.3}s"));
            info!(hook = %name, app = %ctx.app, version = %ctx.version, duration_ms = fin.duration.as_millis() as u64, "hook succeeded");
            Ok(HookOutcome {
                name: name.to_string(),
                exit_code: 0,
                duration: fin.duration,
                log_file: log_file.clone(),
            })
        }
        Ending::Exited(code) => {
            log.note(&format!("=== exited with code {code} after {secs:.3}s"));
            Err(HookError::Failed {
                name: name.to_string(),
                code,
                tail,
                log_file: log_file.clone(),
            })
        }
        Ending::Signaled(sig) => {
            let signal = signal_name(sig);
            log.note(&format!("=== killed by {signal} after {secs:.3}s"));
            Err(HookError::Crashed {
                name: name.to_string(),
                signal,
                tail,
                log_file: log_file.clone(),
            })
        }
        Ending::TimedOut => {
            log.note(&format!(
                "=== timed out after {secs:.3}s; killed its process group"
            ));
            Err(HookError::TimedOut {
                app: ctx.app.clone(),
                name: name.to_string(),
                timeout: spec.timeout,
                tail,
                log_file: log_file.clone(),
            })
        }
    };
    log.finish();
    if let Err(e) = &result {
        warn!(hook = %name, app = %ctx.app, version = %ctx.version, outcome_unknown = e.outcome_unknown(), error = %e, "hook failed");
    }
    result
}

/// Gives a backup or restore hook that runs as another user the folder of
/// its dump (and the dump, when restoring): they are this operation's own
/// temporary folder in the root, and root's otherwise. The archive is then
/// written without following symlinks, so nothing the hook leaves there
/// reaches beyond what that user could read.
fn hand_over(file: &Path, root: &Path, who: &Identity) -> Result<(), FsError> {
    let (uid, gid) = (Some(who.uid), Some(who.gid));
    if fs::symlink_metadata(file)?.is_some() {
        fs::lchown(file, uid, gid)?;
    }
    // The operation's folders up to (not including) the root.
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        fs::lchown(d, uid, gid)?;
        dir = d.parent();
    }
    Ok(())
}

/// A hook name made safe as a file name (the names are fixed keys, but this
/// is a public function and a `/` must not escape the log directory).
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "hook".to_string() } else { s }
}

/// Where a hook's output lines go: `tracing` and its log file.
struct HookLog<'a> {
    name: &'a str,
    app: &'a str,
    version: &'a str,
    path: &'a Path,
    out: Option<BufWriter<File>>,
}

impl HookLog<'_> {
    fn note(&mut self, text: &str) {
        let Some(w) = &mut self.out else { return };
        if let Err(e) = writeln!(w, "{text}") {
            self.give_up(e);
        }
    }

    fn give_up(&mut self, e: io::Error) {
        let e = FsError::new("append", self.path, e);
        warn!(hook = %self.name, app = %self.app, version = %self.version, error = %e,
            "cannot write the hook log; its output goes on to the agent log only");
        self.out = None;
    }

    fn finish(&mut self) {
        let Some(mut w) = self.out.take() else { return };
        if let Err(e) = w.flush() {
            self.give_up(e);
            return;
        }
        // Durable so the log of a deploy that crashed the host can still be read.
        if let Ok(f) = w.into_inner()
            && let Err(e) = fs::fsync_file(&f, self.path)
        {
            warn!(hook = %self.name, app = %self.app, version = %self.version, error = %e, "cannot sync the hook log");
        }
    }
}

impl LineSink for HookLog<'_> {
    fn line(&mut self, stream: Stream, text: &str) {
        match stream {
            Stream::Out => {
                info!(
                    hook = %self.name,
                    app = %self.app,
                    version = %self.version,
                    "{text}"
                )
            }
            Stream::Err => {
                warn!(
                    hook = %self.name,
                    app = %self.app,
                    version = %self.version,
                    "{text}"
                )
            }
        }
        self.note(&format!("{}: {text}", stream.prefix()));
    }

    fn idle(&mut self) {
        // Flushing when the hook goes quiet lets `tail -f` follow a long
        // migration while a chatty build still gets buffered writes.
        if let Some(w) = &mut self.out
            && let Err(e) = w.flush()
        {
            self.give_up(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::hooks::{DEFAULT_TIMEOUT, HookConfig, parse_duration};
    use crate::process::{MAX_LINE, TAIL_LINES};
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::thread;
    use std::time::Instant;

    struct Env {
        _dir: tempfile::TempDir,
        ctx: HookContext,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let release_dir = root.join("releases/1.2.0");
        fs::create_dir_all(&release_dir).unwrap();
        let ctx = HookContext {
            app: "web".into(),
            version: "1.2.0".into(),
            previous_version: None,
            release_dir,
            root: root.clone(),
            deploy_id: "d-42".into(),
            backup_file: None,
            log_dir: root.join(".switchyard/logs/d-42"),
            clock: Arc::new(SystemClock),
        };
        Env { _dir: dir, ctx }
    }

    fn shell(s: &str, timeout: Duration) -> HookSpec {
        HookSpec {
            command: CommandLine::Shell(s.into()),
            timeout,
            env: BTreeMap::new(),
            run_as: None,
        }
    }

    fn log_of(ctx: &HookContext, name: &str) -> String {
        fs::read_to_string(&ctx.log_dir.join(format!("{name}.log"))).unwrap()
    }

    /// Whether `pid` is gone; a zombie counts as gone, since it runs nothing
    /// and only waits for init (which may not reap promptly in a container).
    fn is_gone(pid: i32) -> bool {
        if kill(Pid::from_raw(pid), None).is_err() {
            return true;
        }
        match fs::read_to_string(Path::new(&format!("/proc/{pid}/stat"))) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    fn wait_gone(pid: i32) -> bool {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if is_gone(pid) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn hook_sees_the_deploy_in_its_environment_and_runs_in_the_release() {
        let mut e = env();
        e.ctx.previous_version = Some("1.1.0".into());
        e.ctx.backup_file = Some(e.ctx.root.join("backups/db.sql"));
        let mut spec = shell(
            "pwd -P; env | grep -E '^(SWITCHYARD_|APP_ENV=)' | sort",
            Duration::from_secs(30),
        );
        spec.env.insert("APP_ENV".into(), "production".into());
        let out = run_hook("migrate", &spec, &e.ctx).unwrap();
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.log_file, e.ctx.log_dir.join("migrate.log"));
        let log = log_of(&e.ctx, "migrate");
        let root = e.ctx.root.display().to_string();
        for want in [
            format!("out: {}", e.ctx.release_dir.display()),
            "out: APP_ENV=production".to_string(),
            "out: SWITCHYARD_APP=web".to_string(),
            "out: SWITCHYARD_VERSION=1.2.0".to_string(),
            "out: SWITCHYARD_PREVIOUS_VERSION=1.1.0".to_string(),
            format!(
                "out: SWITCHYARD_RELEASE_DIR={}",
                e.ctx.release_dir.display()
            ),
            format!("out: SWITCHYARD_ROOT={root}"),
            "out: SWITCHYARD_DEPLOY_ID=d-42".to_string(),
            format!("out: SWITCHYARD_BACKUP_FILE={root}/backups/db.sql"),
        ] {
            assert!(
                log.lines().any(|l| l == want),
                "missing {want:?} in:\n{log}"
            );
        }
    }

    #[test]
    fn first_deploy_has_empty_previous_version_and_no_backup_file() {
        let e = env();
        let spec = shell(
            "echo \"prev=[$SWITCHYARD_PREVIOUS_VERSION] backup=${SWITCHYARD_BACKUP_FILE-unset}\"",
            Duration::from_secs(30),
        );
        run_hook("warm", &spec, &e.ctx).unwrap();
        assert!(
            log_of(&e.ctx, "warm").contains("out: prev=[] backup=unset"),
            "{}",
            log_of(&e.ctx, "warm")
        );
    }

    #[test]
    fn non_zero_exit_is_failed_with_the_tail() {
        let e = env();
        let spec = shell(
            "for i in $(seq 1 30); do echo line$i; done; sleep 0.2; echo boom >&2; exit 3",
            Duration::from_secs(30),
        );
        let err = run_hook("migrate", &spec, &e.ctx).unwrap_err();
        let HookError::Failed {
            code,
            tail,
            log_file,
            ..
        } = &err
        else {
            panic!("expected Failed, got {err:?}")
        };
        assert_eq!(*code, 3);
        // The streams are read concurrently, so lines written within the same
        // instant may swap places; the pause keeps this order certain.
        assert!(tail.ends_with("err: boom"), "{tail}");
        assert!(tail.contains("out: line30"), "{tail}");
        // Only the last lines are kept in memory; the log has them all.
        assert!(!tail.contains("out: line5\n"), "{tail}");
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(log_of(&e.ctx, "migrate").contains("out: line1\n"));
        assert_eq!(*log_file, e.ctx.log_dir.join("migrate.log"));
        assert!(!err.outcome_unknown());
        let msg = err.to_string();
        assert!(
            msg.contains("exit code 3") && msg.contains("migrate.log"),
            "{msg}"
        );
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let e = env();
        let spec = shell(
            "sleep 1000 & echo $! >> pids; sleep 1000 & echo $! >> pids; echo $$ >> pids; echo started; sleep 1000",
            Duration::from_secs(1),
        );
        let t = Instant::now();
        let err = run_hook("warm", &spec, &e.ctx).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let HookError::TimedOut { timeout, tail, .. } = &err else {
            panic!("expected TimedOut, got {err:?}")
        };
        assert_eq!(*timeout, Duration::from_secs(1));
        assert!(tail.contains("out: started"), "{tail}");
        assert!(err.outcome_unknown());
        let pids: Vec<i32> = fs::read_to_string(&e.ctx.release_dir.join("pids"))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 3);
        for pid in pids {
            assert!(wait_gone(pid), "process {pid} survived the timeout");
        }
    }

    /// The agent (root) still kills the group of a hook that runs as
    /// another user: the unit keeps CAP_KILL for this.
    #[test]
    fn a_hook_run_as_another_user_is_killed_whole_at_its_timeout() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("SKIP: switching a hook's user needs root");
            return;
        }
        let e = env();
        fs::set_mode(e._dir.path(), 0o755).unwrap();
        let nb = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let mut spec = shell(
            "sleep 1000 & echo pid $!; echo pid $$; echo uid $(id -u); sleep 1000",
            Duration::from_secs(1),
        );
        spec.run_as = Some(Identity {
            user: nb.name.clone(),
            uid: nb.uid.as_raw(),
            gid: nb.gid.as_raw(),
            home: nb.dir.clone(),
        });
        let err = run_hook("migrate", &spec, &e.ctx).unwrap_err();
        let HookError::TimedOut { tail, .. } = &err else {
            panic!("expected TimedOut, got {err:?}")
        };
        assert!(tail.contains(&format!("out: uid {}", nb.uid)), "{tail}");
        let pids: Vec<i32> = tail
            .lines()
            .filter_map(|l| l.strip_prefix("out: pid "))
            .map(|p| p.trim().parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 2, "{tail}");
        for pid in pids {
            assert!(wait_gone(pid), "process {pid} survived the timeout");
        }
    }

    /// Hook timeouts are the deploy clock's: fifteen minutes pass at once
    /// when a fake clock is moved.
    #[test]
    fn timeout_is_measured_on_the_deploy_clock() {
        let mut e = env();
        let clock = Arc::new(crate::clock::ManualClock::new(
            "2026-03-28T01:00:00Z".parse().unwrap(),
        ));
        e.ctx.clock = clock.clone();
        let mover = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            clock.advance(Duration::from_secs(15 * 60));
        });
        let t = Instant::now();
        let err = run_hook(
            "migrate",
            &shell("sleep 1000", Duration::from_secs(15 * 60)),
            &e.ctx,
        )
        .unwrap_err();
        mover.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(matches!(err, HookError::TimedOut { .. }), "{err:?}");
        assert!(
            log_of(&e.ctx, "migrate").contains("=== 2026-03-28T01:00:00Z hook migrate started")
        );
    }

    #[test]
    fn leftover_processes_holding_the_output_are_killed_after_a_grace() {
        let e = env();
        let spec = shell(
            "sleep 1000 & echo $! > pid; echo done",
            Duration::from_secs(60),
        );
        let t = Instant::now();
        let out = run_hook("activate", &spec, &e.ctx).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(out.exit_code, 0);
        let pid: i32 = fs::read_to_string(&e.ctx.release_dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_gone(pid), "leftover {pid} still running");
    }

    #[test]
    fn chatty_output_on_both_streams_does_not_block_and_lands_in_the_log() {
        let e = env();
        // stderr first: a supervisor reading stdout to EOF before stderr would
        // deadlock once the stderr pipe (64 KiB) fills.
        let spec = shell(
            "gen() { head -c 5000000 /dev/zero | tr '\\0' \"$1\" | fold -w 1000; echo; }; \
             gen e >&2; gen o; head -c 10000 /dev/zero | tr '\\0' L; echo",
            Duration::from_secs(120),
        );
        let out = run_hook("warm", &spec, &e.ctx).unwrap();
        assert_eq!(out.exit_code, 0);
        let log = log_of(&e.ctx, "warm");
        let out_lines = log.lines().filter(|l| l.starts_with("out: o")).count();
        let err_lines = log.lines().filter(|l| l.starts_with("err: e")).count();
        assert_eq!((out_lines, err_lines), (5000, 5000));
        let long = log.lines().find(|l| l.starts_with("out: L")).unwrap();
        assert!(
            long.starts_with(&format!("out: {}", "L".repeat(MAX_LINE)))
                && long.ends_with("[... 5904 more bytes of this line dropped]"),
            "{}",
            &long[long.len() - 60..]
        );
    }

    #[test]
    fn argv_form_keeps_arguments_with_spaces_intact() {
        let e = env();
        let spec = HookConfig::Argv(vec![
            "printf".into(),
            "[%s]\\n".into(),
            "a b".into(),
            "c  d".into(),
            "$HOME".into(),
        ])
        .to_spec()
        .unwrap();
        run_hook("activate", &spec, &e.ctx).unwrap();
        let log = log_of(&e.ctx, "activate");
        for want in ["out: [a b]", "out: [c  d]", "out: [$HOME]"] {
            assert!(
                log.lines().any(|l| l == want),
                "missing {want:?} in:\n{log}"
            );
        }
    }

    #[test]
    fn killed_by_a_signal_is_crashed_and_outcome_unknown() {
        let e = env();
        let spec = shell(
            "ulimit -c 0; echo half-done; kill -SEGV $$",
            Duration::from_secs(30),
        );
        let err = run_hook("migrate", &spec, &e.ctx).unwrap_err();
        let HookError::Crashed { signal, tail, .. } = &err else {
            panic!("expected Crashed, got {err:?}")
        };
        assert_eq!(signal, "SIGSEGV");
        assert!(tail.contains("out: half-done"), "{tail}");
        assert!(err.outcome_unknown());
        assert!(err.to_string().contains("SIGSEGV"), "{err}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_naming_it() {
        let e = env();
        let spec = HookConfig::Argv(vec!["/nonexistent/switchyard-hook".into()])
            .to_spec()
            .unwrap();
        let err = run_hook("warm", &spec, &e.ctx).unwrap_err();
        assert!(matches!(err, HookError::Spawn { .. }), "{err:?}");
        assert!(!err.outcome_unknown());
        assert!(
            err.to_string().contains("/nonexistent/switchyard-hook"),
            "{err}"
        );
    }

    #[test]
    fn an_unwritable_log_dir_is_an_fs_error_and_nothing_runs() {
        let mut e = env();
        let blocker = e.ctx.root.join("file");
        fs::write_atomic(&blocker, b"x").unwrap();
        e.ctx.log_dir = blocker.join("logs");
        let spec = shell("touch ran", Duration::from_secs(30));
        let err = run_hook("warm", &spec, &e.ctx).unwrap_err();
        assert!(matches!(err, HookError::Fs(_)), "{err:?}");
        assert!(crate::chain::chain(&err).contains(&blocker.display().to_string()));
        assert!(
            fs::symlink_metadata(&e.ctx.release_dir.join("ran"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn parse_duration_cases() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("10m"), Duration::from_secs(600));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("45"), Duration::from_secs(45));
        assert_eq!(d(" 2s "), Duration::from_secs(2));
        for bad in ["", "ten minutes", "10x", "-5s", "1.5.3"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("\"30s\""), "{bad:?}: {e}");
        }
    }

    /// The shape `config.rs` embeds hooks in.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hooks {
        warm: Option<HookConfig>,
        activate: Option<HookConfig>,
        migrate: Option<HookConfig>,
        restore: Option<HookConfig>,
    }

    #[derive(Deserialize)]
    struct Doc {
        hooks: Hooks,
    }

    #[test]
    fn hook_config_deserializes_from_the_three_toml_forms() {
        let doc: Doc = toml::from_str(
            r#"
            [hooks]
            warm = "npm ci && npm run build"
            activate = ["systemctl", "reload", "myapp"]
            migrate = { command = "php artisan migrate --force", timeout = "15m", env = { APP_ENV = "production" } }
            [hooks.restore]
            command = ["/usr/local/bin/restore", "--from", "backup file.sql"]
            "#,
        )
        .unwrap();
        let h = doc.hooks;
        assert_eq!(
            h.warm,
            Some(HookConfig::Shell("npm ci && npm run build".into()))
        );
        assert_eq!(
            h.activate,
            Some(HookConfig::Argv(vec![
                "systemctl".into(),
                "reload".into(),
                "myapp".into()
            ]))
        );
        let migrate = h.migrate.as_ref().unwrap().to_spec().unwrap();
        assert_eq!(
            migrate.command,
            CommandLine::Shell("php artisan migrate --force".into())
        );
        assert_eq!(migrate.timeout, Duration::from_secs(900));
        assert_eq!(migrate.env.get("APP_ENV").unwrap(), "production");
        let restore = h.restore.as_ref().unwrap().to_spec().unwrap();
        assert_eq!(restore.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            restore.command.to_string(),
            "/usr/local/bin/restore --from 'backup file.sql'"
        );
    }

    #[test]
    fn hook_config_mistakes_get_precise_messages() {
        let err = |text: &str| toml::from_str::<Doc>(text).err().unwrap().to_string();
        let e = err("[hooks]\nmigrate = { comand = \"x\" }\n");
        assert!(e.contains("unknown field `comand`"), "{e}");
        let e = err("[hooks]\nwarm = 5\n");
        assert!(e.contains("a shell command string"), "{e}");
        let e = err("[hooks]\nwarmup = \"x\"\n");
        assert!(e.contains("unknown field `warmup`"), "{e}");

        let spec = |text: &str| {
            toml::from_str::<Doc>(text)
                .unwrap()
                .hooks
                .warm
                .unwrap()
                .to_spec()
                .map_err(|(_, m)| m)
        };
        assert!(spec("[hooks]\nwarm = []\n").unwrap_err().contains("empty"));
        assert!(
            spec("[hooks]\nwarm = \"  \"\n")
                .unwrap_err()
                .contains("empty")
        );
        let e = spec("[hooks.warm]\ncommand = \"x\"\ntimeout = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("timeout: invalid duration \"soon\""), "{e}");
        let e = spec("[hooks.warm]\ncommand = \"x\"\ntimeout = \"0s\"\n").unwrap_err();
        assert!(e.contains("longer than zero"), "{e}");
        let e = spec("[hooks.warm]\ncommand = \"x\"\nenv = { \"A-B\" = \"1\" }\n").unwrap_err();
        assert!(e.contains("\"A-B\" is not a valid variable name"), "{e}");
        let e = spec("[hooks.warm]\ncommand = \"x\"\nenv = { SWITCHYARD_VERSION = \"1\" }\n")
            .unwrap_err();
        assert!(e.contains("set by switchyard"), "{e}");
    }
}
