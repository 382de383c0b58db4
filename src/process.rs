//! The one process supervisor: runs a command in a process group of its
//! own, streams its output line by line (bounded in memory), and kills the
//! whole group, grandchildren included, when it overruns its timeout. Deploy
//! hooks and health `command` checks both run through `supervise`.
//!
//! Timeouts and durations are measured on the caller's [`Clock`], so a test
//! can make a long timeout pass at once; the short waits for a real process
//! (polling it, draining its pipes) are real time.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{self, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::clock::{Clock, Tick};

/// Lines of output kept in memory for an error message.
pub(crate) const TAIL_LINES: usize = 20;
/// Longest line kept; the rest of a longer line is dropped so that a hook
/// printing megabytes without a newline cannot exhaust the agent's memory.
pub(crate) const MAX_LINE: usize = 4096;
/// Lines in flight between the reader threads and the supervisor: bounds
/// memory while still letting a burst of output through without blocking.
const CHANNEL_LINES: usize = 256;
/// How often a running child is polled; short enough that a timeout is
/// precise to a few tens of milliseconds, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(25);
/// After the hook itself exits, how long processes it left behind may keep its
/// output open before they are killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// After killing a group, how long to wait for the output already written.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

/// A signal number as its name, e.g. `SIGSEGV`.
pub(crate) fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

impl Stream {
    /// `out` or `err`, as lines are prefixed in logs and tails.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// Receives a supervised child's output, line by line.
pub(crate) trait LineSink {
    /// One line, without its newline, at most [`MAX_LINE`] bytes plus a note.
    fn line(&mut self, stream: Stream, text: &str);
    /// No output for a while.
    fn idle(&mut self) {}
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal not sent by the supervisor killed it.
    Signaled(i32),
    /// It overran the timeout and its group was killed.
    TimedOut,
}

/// A supervised child that ran to its end.
#[derive(Debug)]
pub(crate) struct Finished {
    /// How it ended.
    pub ending: Ending,
    /// The last [`TAIL_LINES`] lines, each prefixed `out: ` or `err: `. Lines
    /// of the two streams written at the same instant may appear swapped.
    pub tail: Vec<String>,
    /// From start to exit, on the caller's clock.
    pub duration: Duration,
    /// Processes of its group outlived it holding the output open and were killed.
    pub left_running: bool,
}

/// Why [`supervise`] could not see the child to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SuperviseError {
    /// The child could not be started; nothing ran.
    #[error("cannot start the process")]
    Spawn(#[source] io::Error),
    /// Waiting failed; the group was killed.
    #[error("lost track of the process; killed its group")]
    Wait(#[source] io::Error),
}

enum Msg {
    Line(Stream, String),
    Eof,
}

/// Set when the agent is told to stop: operations start no new step.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The process groups of the children running now, so that a stop past its
/// grace period can kill them.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Asks every operation of this process to start no new step.
pub(crate) fn request_stop() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub(crate) fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Kills every supervised child's process group still running (the agent's
/// shutdown, once its grace period is over).
pub(crate) fn kill_running() -> usize {
    let groups = RUNNING.lock().map(|g| g.clone()).unwrap_or_default();
    for g in &groups {
        kill_group(Pid::from_raw(*g));
    }
    groups.len()
}

/// Registers a running group for [`kill_running`]; removed on drop.
struct Registered(i32);

impl Registered {
    fn new(pgid: Pid) -> Registered {
        if let Ok(mut g) = RUNNING.lock() {
            g.push(pgid.as_raw());
        }
        Registered(pgid.as_raw())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut g) = RUNNING.lock() {
            g.retain(|p| *p != self.0);
        }
    }
}

/// The user a child runs as instead of the agent's own (root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The user's name, for `USER` and `LOGNAME`.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group the child runs with: the user's primary group or the one configured.
    pub gid: u32,
    /// Its home directory, for `HOME`.
    pub home: std::path::PathBuf,
}

impl Identity {
    /// Makes `cmd` switch to this user in the child, before exec: group, then
    /// user (std's `CommandExt`, no unsafe `pre_exec`). std also clears the
    /// supplementary groups, so none of the agent's own reach the child; the
    /// user's other groups are not added (std has no stable way to set them).
    /// `HOME`, `USER` and `LOGNAME` name the user, as a login would.
    pub(crate) fn apply(&self, cmd: &mut process::Command) {
        cmd.gid(self.gid)
            .uid(self.uid)
            .env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user);
    }
}

/// Runs `cmd` with stdin from /dev/null, in a new process group, feeding its
/// output to `sink`, and kills the whole group (SIGKILL) if it overruns
/// `timeout` on `clock`. The caller sets the program, arguments, directory
/// and environment.
pub(crate) fn supervise(
    cmd: &mut process::Command,
    timeout: Duration,
    clock: &dyn Clock,
    sink: &mut dyn LineSink,
) -> Result<Finished, SuperviseError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = clock.tick();
    let mut child = cmd.spawn().map_err(SuperviseError::Spawn)?;
    // The child is the leader of its new group, so its pid is the group id.
    let pgid = Pid::from_raw(child.id() as i32);
    let _registered = Registered::new(pgid);
    let (tx, rx) = mpsc::sync_channel(CHANNEL_LINES);
    let readers = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => spawn_reader(Stream::Out, out, tx.clone())
            .and_then(|()| spawn_reader(Stream::Err, err, tx)),
        _ => Err(io::Error::other("the child's output pipes are missing")),
    };
    if let Err(e) = readers {
        kill_group(pgid);
        let _ = child.wait();
        return Err(SuperviseError::Spawn(e));
    }

    let mut c = Collector {
        rx,
        open: 2,
        tail: VecDeque::with_capacity(TAIL_LINES),
        sink,
    };
    let deadline = start.checked_add(timeout);
    // When it exited: on the clock for its duration, in real time for the
    // grace its leftovers get.
    let mut status: Option<(ExitStatus, Tick, Instant)> = None;
    let mut next_poll = Instant::now() + POLL;
    let mut timed_out = false;
    let mut left_running = false;
    loop {
        if c.open > 0 {
            c.pump(POLL);
        } else if status.is_none() {
            // The child closed its output but runs on: nothing to read, so just wait.
            thread::sleep(POLL);
        }
        let now = Instant::now();
        let tick = clock.tick();
        if status.is_none() && now >= next_poll {
            next_poll = now + POLL;
            match child.try_wait() {
                Ok(Some(st)) => status = Some((st, tick, now)),
                Ok(None) => {}
                Err(e) => {
                    kill_group(pgid);
                    let _ = child.wait();
                    return Err(SuperviseError::Wait(e));
                }
            }
        }
        match status {
            Some((_, _, exited)) => {
                if c.open == 0 {
                    break;
                }
                if now >= exited + DRAIN_GRACE {
                    // Something it started keeps the pipes open (`cmd &`): it
                    // belongs to the hook, and waiting on it could take forever.
                    kill_group(pgid);
                    left_running = true;
                    c.drain_until(Instant::now() + DRAIN_AFTER_KILL);
                    break;
                }
            }
            None => {
                if deadline.is_some_and(|d| tick >= d) {
                    // It may have exited since the last poll: then it finished in time.
                    if let Ok(Some(st)) = child.try_wait() {
                        status = Some((st, tick, now));
                        continue;
                    }
                    kill_group(pgid);
                    timed_out = true;
                    match child.wait() {
                        Ok(st) => status = Some((st, clock.tick(), Instant::now())),
                        Err(e) => return Err(SuperviseError::Wait(e)),
                    }
                    c.drain_until(Instant::now() + DRAIN_AFTER_KILL);
                    break;
                }
            }
        }
    }
    let ending = match status {
        _ if timed_out => Ending::TimedOut,
        Some((st, _, _)) => match (st.code(), st.signal()) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signaled(sig),
            (None, None) => Ending::Exited(-1),
        },
        None => Ending::Exited(-1),
    };
    let end = status.map_or_else(|| clock.tick(), |(_, at, _)| at);
    let duration = end.saturating_duration_since(start);
    Ok(Finished {
        ending,
        tail: c.tail.into_iter().collect(),
        duration,
        left_running,
    })
}

fn kill_group(pgid: Pid) {
    // ESRCH (nobody left in the group) is the outcome we want anyway.
    let _ = killpg(pgid, Signal::SIGKILL);
}

struct Collector<'a> {
    rx: Receiver<Msg>,
    open: usize,
    tail: VecDeque<String>,
    sink: &'a mut dyn LineSink,
}

impl Collector<'_> {
    /// Handles one message, waiting at most `wait` for it.
    fn pump(&mut self, wait: Duration) {
        match self.rx.recv_timeout(wait) {
            Ok(Msg::Line(stream, text)) => {
                self.sink.line(stream, &text);
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(format!("{}: {text}", stream.prefix()));
            }
            Ok(Msg::Eof) => self.open -= 1,
            Err(RecvTimeoutError::Timeout) => self.sink.idle(),
            Err(RecvTimeoutError::Disconnected) => self.open = 0,
        }
    }

    fn drain_until(&mut self, until: Instant) {
        while self.open > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            self.pump(until - now);
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    stream: Stream,
    pipe: R,
    tx: SyncSender<Msg>,
) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("hook-std{}", stream.prefix()))
        .spawn(move || {
            let mut r = BufReader::with_capacity(64 * 1024, pipe);
            let mut line = Vec::with_capacity(256);
            let mut listening = true;
            // A read error on a pipe means nothing more will come: same as EOF.
            while let Ok(Some(dropped)) = read_line_bounded(&mut r, &mut line) {
                // Once the supervisor has stopped listening, keep draining: a
                // process that escaped the group would otherwise die of
                // SIGPIPE or block on a full pipe.
                if listening && tx.send(Msg::Line(stream, decode(&line, dropped))).is_err() {
                    listening = false;
                }
            }
            let _ = tx.send(Msg::Eof);
        })
        .map(|_| ())
}

/// Reads one line into `line` (without the newline), keeping at most
/// [`MAX_LINE`] bytes. Returns how many bytes were dropped, or `None` at EOF.
fn read_line_bounded<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Option<usize>> {
    line.clear();
    let mut dropped = 0usize;
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(dropped));
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let take = chunk.len().min(MAX_LINE - line.len());
        line.extend_from_slice(&chunk[..take]);
        dropped += chunk.len() - take;
        r.consume(used);
        if done {
            return Ok(Some(dropped));
        }
    }
}

fn decode(line: &[u8], dropped: usize) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut s = String::from_utf8_lossy(line).into_owned();
    if dropped > 0 {
        s.push_str(&format!(" [... {dropped} more bytes of this line dropped]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use std::sync::Arc;

    #[derive(Default)]
    struct Lines(Vec<String>);

    impl LineSink for Lines {
        fn line(&mut self, stream: Stream, text: &str) {
            self.0.push(format!("{}: {text}", stream.prefix()));
        }
    }

    fn sh(script: &str) -> process::Command {
        let mut c = process::Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn lines_are_bounded_and_crlf_is_trimmed() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("a\r\n{long}\nlast");
        let mut r = BufReader::with_capacity(16, input.as_bytes());
        let mut line = Vec::new();
        let mut got = Vec::new();
        while let Some(dropped) = read_line_bounded(&mut r, &mut line).unwrap() {
            got.push(decode(&line, dropped));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "a");
        assert!(got[1].starts_with(&"x".repeat(MAX_LINE)), "{}", got[1]);
        assert!(got[1].ends_with(" [... 10 more bytes of this line dropped]"));
        assert_eq!(got[2], "last");
    }

    #[test]
    fn exit_codes_output_and_duration() {
        let mut sink = Lines::default();
        let fin = supervise(
            &mut sh("echo hi; echo oops >&2; exit 4"),
            Duration::from_secs(30),
            &SystemClock,
            &mut sink,
        )
        .unwrap();
        assert_eq!(fin.ending, Ending::Exited(4));
        assert!(!fin.left_running);
        sink.0.sort();
        assert_eq!(sink.0, ["err: oops", "out: hi"]);
        assert!(fin.duration < Duration::from_secs(30));
        let err = supervise(
            &mut process::Command::new("/nonexistent/program"),
            Duration::from_secs(1),
            &SystemClock,
            &mut sink,
        )
        .unwrap_err();
        assert!(matches!(err, SuperviseError::Spawn(_)), "{err:?}");
    }

    /// The timeout is the clock's: a quarter of an hour passes when the
    /// clock says so, not after a quarter of an hour of waiting.
    #[test]
    fn the_timeout_is_measured_on_the_clock() {
        let clock = Arc::new(ManualClock::new("2026-03-28T01:00:00Z".parse().unwrap()));
        let mover = {
            let clock = clock.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                clock.advance(Duration::from_secs(15 * 60));
            })
        };
        let real = Instant::now();
        let mut sink = Lines::default();
        let fin = supervise(
            &mut sh("echo started; exec sleep 1000"),
            Duration::from_secs(15 * 60),
            clock.as_ref(),
            &mut sink,
        )
        .unwrap();
        mover.join().unwrap();
        assert_eq!(fin.ending, Ending::TimedOut);
        assert_eq!(fin.duration, Duration::from_secs(15 * 60));
        assert_eq!(fin.tail, ["out: started"]);
        assert!(
            real.elapsed() < Duration::from_secs(10),
            "{:?}",
            real.elapsed()
        );
    }
}
