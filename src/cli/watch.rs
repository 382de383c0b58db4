//! Progress on stderr while a deploy, promote or revert runs, here or in
//! the agent: a thread polls the deploy record in `state.json` and the
//! running deploy's hook logs (through `ops::watch`, read-only) and shows
//! each step with its elapsed time and the hooks' latest output. A spinner
//! on a terminal; one plain line per step (and per hook output line)
//! otherwise, for logs and scripts. Stdout is never touched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::AppConfig;
use crate::ops::watch::{DeployView, deploy_log_dir, deploy_view, logs_in, read_from};

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(150);
/// Hook output lines shown per poll in plain mode (a chatty build would
/// flood the terminal otherwise; its full output is in its log).
const MAX_LINES_PER_POLL: usize = 5;

/// A running watcher; [`Watcher::finish`] stops it.
pub(crate) struct Watcher {
    /// Dropped (or sent on) to stop: wakes the thread at once, so a quick
    /// command does not wait out a poll interval.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `cfg`'s app. Records already in `state.json` are
    /// the past: only a deploy with another id is shown.
    pub(crate) fn start(cfg: &AppConfig) -> Watcher {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let (stop, rx) = mpsc::channel();
        // Read here, before the command starts: read in the thread, a
        // thread scheduled late (a loaded host) could take the command's
        // own new record for the past and show nothing at all.
        let before = deploy_view(cfg).map(|v| v.id);
        let cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || watch(&cfg, before, tty, &rx))
            .ok();
        Watcher {
            stop: Some(stop),
            thread,
        }
    }

    /// Shows what happened since the last poll, then stops.
    pub(crate) fn finish(mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where output goes: a spinner or plain lines.
enum Show {
    Spinner(ProgressBar),
    Plain,
}

impl Show {
    fn line(&self, text: &str) {
        match self {
            Show::Spinner(pb) => pb.println(text),
            Show::Plain => crate::cli::err_line(text),
        }
    }
}

fn elapsed(t: Instant) -> String {
    format!("[{:>5.1}s]", t.elapsed().as_secs_f64())
}

/// `deploy 1.1.0: applying (warm)`.
pub(crate) fn describe(v: &DeployView) -> String {
    let to = v.to.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
    let mut s = format!("{}{to}: {}", v.op, v.state);
    if !v.step.is_empty() && v.step != v.state {
        s.push_str(&format!(" ({})", v.step));
    }
    if v.terminal
        && let Some(e) = &v.last_error
    {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// The lines of a hook log worth showing: its output, without the `out: `
/// / `err: ` prefix; Switchyard's own `===` notes are left out.
pub(crate) fn output_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("out: ")
                .or_else(|| l.strip_prefix("err: "))
                .map(String::from)
        })
        .collect()
}

fn watch(cfg: &AppConfig, before: Option<String>, tty: bool, stop: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let show = if tty {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(format!("{}: waiting for the lock", cfg.name));
        pb.enable_steady_tick(Duration::from_millis(120));
        Show::Spinner(pb)
    } else {
        Show::Plain
    };
    let mut shown: Option<(String, &'static str, String)> = None;
    let mut step_started = Instant::now();
    let mut offsets: HashMap<PathBuf, u64> = HashMap::new();
    let mut tail: Vec<String> = Vec::new();
    // Set once the command ended: one more poll then sees the final state.
    let mut last = false;
    loop {
        if let Some(v) = deploy_view(cfg).filter(|v| Some(&v.id) != before.as_ref()) {
            let key = (v.id.clone(), v.state, v.step.clone());
            let changed = shown.as_ref() != Some(&key);
            // Output of the hook the new step runs goes after the step's
            // line; what earlier hooks wrote last goes before it.
            let (now, earlier): (Vec<_>, Vec<_>) = poll_logs(cfg, &v.id, &mut offsets)
                .into_iter()
                .partition(|(hook, _)| changed && *hook == v.step);
            for (hook, lines) in &earlier {
                hook_lines(&show, started, hook, lines, &mut tail);
            }
            if changed {
                if let (Show::Spinner(_), Some(_)) = (&show, &shown) {
                    // The step that ended stays in the scrollback.
                    show.line(&format!(
                        "  done in {:.1}s",
                        step_started.elapsed().as_secs_f64()
                    ));
                }
                show.line(&format!("{} {}", elapsed(started), describe(&v)));
                shown = Some(key);
                step_started = Instant::now();
                tail.clear();
            }
            for (hook, lines) in &now {
                hook_lines(&show, started, hook, lines, &mut tail);
            }
            if let Show::Spinner(pb) = &show {
                let mut msg = format!(
                    "{} ({:.1}s)",
                    describe(&v),
                    step_started.elapsed().as_secs_f64()
                );
                for l in &tail {
                    msg.push_str("\n    ");
                    msg.push_str(l);
                }
                pb.set_message(msg);
            }
        }
        if last {
            break;
        }
        last = !matches!(
            stop.recv_timeout(POLL),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
    }
    if let Show::Spinner(pb) = show {
        pb.finish_and_clear();
    }
}

/// Shows a hook's new output lines (plain mode) and keeps the last few
/// for the spinner.
fn hook_lines(show: &Show, started: Instant, hook: &str, lines: &[String], tail: &mut Vec<String>) {
    if let Show::Plain = show {
        let skip = lines.len().saturating_sub(MAX_LINES_PER_POLL);
        if skip > 0 {
            show.line(&format!(
                "{}   {hook} | … {skip} more lines",
                elapsed(started)
            ));
        }
        for l in &lines[skip..] {
            show.line(&format!("{}   {hook} | {l}", elapsed(started)));
        }
    }
    *tail = lines
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|l| format!("{hook} | {l}"))
        .collect();
}

/// New complete output lines of deploy `id`'s hook logs, per hook, in the
/// order the hooks ran.
fn poll_logs(
    cfg: &AppConfig,
    id: &str,
    offsets: &mut HashMap<PathBuf, u64>,
) -> Vec<(String, Vec<String>)> {
    let Ok(logs) = logs_in(&deploy_log_dir(cfg, id)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in logs {
        let off = offsets.get(&l.path).copied().unwrap_or(0);
        let Ok((bytes, next)) = read_from(&l.path, off) else {
            continue;
        };
        offsets.insert(l.path.clone(), next);
        let lines = output_lines(&String::from_utf8_lossy(&bytes));
        if !lines.is_empty() {
            out.push((l.hook, lines));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_reads_for_people() {
        let mut v = DeployView {
            id: "d1".into(),
            op: "deploy".into(),
            state: "applying",
            step: "warm".into(),
            to: Some("1.1.0".into()),
            terminal: false,
            last_error: None,
        };
        assert_eq!(describe(&v), "deploy 1.1.0: applying (warm)");
        v.state = "failed";
        v.terminal = true;
        v.last_error = Some("hook warm failed with exit code 1".into());
        assert_eq!(
            describe(&v),
            "deploy 1.1.0: failed (warm): hook warm failed with exit code 1"
        );
    }

    #[test]
    fn hook_output_loses_its_prefixes_and_notes() {
        let t = "=== 2026 hook warm started\nout: hello\nerr: oops\n=== exited with code 0\n";
        assert_eq!(output_lines(t), ["hello", "oops"]);
    }
}
