//! Health checks: is a release ready (`[apps.<name>.health.staging]`) and is
//! the live app actually serving it (`[apps.<name>.health.live]`)?
//!
//! A round runs every configured check once (HTTP, TCP or a command); the app
//! is healthy after `success_threshold` passing rounds in a row, and unhealthy
//! after more than `retries` failed rounds or when `deadline` passes. With
//! `expect_version`, an HTTP check also demands that the response report the
//! new version, which catches the classic blue/green failure: the health
//! endpoint says "ok", but it is the old process saying it.
//!
//! [`run_health`] blocks. HTTP checks use the process's async HTTP stack
//! through `source::bridge` (the caller's runtime on a `spawn_blocking`
//! thread, the process-wide one in the CLI), so async callers run
//! [`run_health`] under `tokio::task::spawn_blocking`.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// How much of a response body is read: enough for any health endpoint,
/// bounded so that a check pointed at a large file cannot eat memory.
const BODY_LIMIT: u64 = 64 * 1024;

use crate::chain::chain;
use crate::clock::{Clock, Tick};
pub(crate) use crate::config::health::{
    CheckConfig, CommandCheck, ExpectVersion, HealthConfig, HttpCheck, TcpCheck,
};
use crate::ops::hooks::show_duration;
use crate::process::{self, Ending, LineSink, Stream, SuperviseError};
use crate::source::bridge;
use crate::source::http::client_builder;

/// The outcome of [`run_health`], serializable for `status` and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HealthReport {
    /// Whether `success_threshold` consecutive rounds passed.
    pub passed: bool,
    /// Rounds run.
    pub attempts: u32,
    /// Every round, in order.
    pub rounds: Vec<RoundReport>,
    /// Time from start to verdict.
    #[serde(
        rename = "elapsed_ms",
        serialize_with = "serialize_ms",
        deserialize_with = "deserialize_ms"
    )]
    pub elapsed: Duration,
    /// Why it failed (`None` when it passed).
    pub last_error: Option<String>,
}

impl HealthReport {
    /// It failed because the host could not run a check, not because the
    /// app answered badly: the release is not to blame.
    pub(crate) fn host_failed(&self) -> bool {
        !self.passed
            && (self.rounds.is_empty()
                || self
                    .rounds
                    .last()
                    .is_some_and(|r| r.results.iter().any(|c| !c.ok && c.host_error)))
    }
}

/// One round: every check, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoundReport {
    /// Whether every check passed.
    pub ok: bool,
    /// Each check's result, in configuration order.
    pub results: Vec<CheckResult>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckResult {
    /// Which check, e.g. `http GET http://127.0.0.1:8080/health`.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    #[serde(
        rename = "latency_ms",
        serialize_with = "serialize_ms_fraction",
        deserialize_with = "deserialize_ms_fraction"
    )]
    pub latency: Duration,
    /// What was seen, e.g. `status 503` or `version 1.2.0 not reported (...)`.
    pub detail: String,
    /// The check could not run for the host's reasons (no memory, no file
    /// descriptors, no space to start a process): not the app's answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_error: bool,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

// Reports cross the agent's control socket inside a deploy's outcome.
fn deserialize_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn deserialize_ms_fraction<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Duration::try_from_secs_f64(f64::deserialize(d)? / 1e3).map_err(serde::de::Error::custom)
}

// Loopback checks take well under a millisecond: whole milliseconds would
// report them all as 0.
fn serialize_ms_fraction<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// Runs rounds of checks until the app is healthy, has failed more than
/// `retries` rounds, or `deadline` has passed.
///
/// `version` is the version the app must report under `expect_version` (a
/// leading `v` is ignored); command checks get it as `SWITCHYARD_VERSION` and
/// run in `workdir`. Rounds, intervals, timeouts and the deadline are timed
/// on `clock`. Blocking: from async code call it inside
/// `tokio::task::spawn_blocking` (see `source::bridge`). Events carry the
/// `version` field; callers add `app` and the phase with a span.
pub(crate) fn run_health(
    cfg: &HealthConfig,
    version: &str,
    workdir: &Path,
    clock: &dyn Clock,
) -> HealthReport {
    let start = clock.tick();
    let deadline = start.checked_add(cfg.deadline);
    let mut report = HealthReport {
        passed: false,
        attempts: 0,
        rounds: Vec::new(),
        elapsed: Duration::ZERO,
        last_error: None,
    };
    let client = if cfg.checks.iter().any(|c| matches!(c, CheckConfig::Http(_))) {
        match build_client() {
            Ok(c) => Some(c),
            Err(e) => {
                report.last_error = Some(format!(
                    "cannot set up the HTTP client for health checks: {e}"
                ));
                report.elapsed = clock.tick().saturating_duration_since(start);
                return report;
            }
        }
    } else {
        None
    };
    let env = RoundEnv {
        client: client.as_ref(),
        expect: cfg.expect_version.as_ref(),
        version: version
            .strip_prefix(['v', 'V'])
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(version),
        workdir,
        clock,
    };
    let mut failures = 0u32;
    let mut streak = 0u32;
    let mut last_failure: Option<String> = None;
    let verdict: Result<(), String> = loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(clock.tick()));
        if remaining == Some(Duration::ZERO) {
            break Err(deadline_message(
                cfg,
                report.attempts,
                streak,
                &last_failure,
            ));
        }
        report.attempts += 1;
        let round = run_round(&env, cfg, deadline);
        if round.ok {
            streak += 1;
            info!(
                version,
                round = report.attempts,
                passes = streak,
                needed = cfg.success_threshold,
                "health round passed"
            );
        } else {
            streak = 0;
            failures += 1;
            for r in round.results.iter().filter(|r| !r.ok) {
                warn!(version, round = report.attempts, check = %r.check, detail = %r.detail, "health check failed");
            }
            // A round the deadline cut short says little ("no response within
            // 3ms"): the failure before it is the one worth reporting.
            let cut_short = deadline.is_some_and(|d| clock.tick() >= d);
            if !cut_short || last_failure.is_none() {
                last_failure = round
                    .results
                    .iter()
                    .find(|r| !r.ok)
                    .map(|r| format!("{}: {}", r.check, r.detail));
            }
        }
        report.rounds.push(round);
        if streak >= cfg.success_threshold {
            break Ok(());
        }
        // A round the deadline cut short failed because of the deadline, and
        // saying "retries" then would send the operator to the wrong knob.
        if deadline.is_some_and(|d| clock.tick() >= d) {
            break Err(deadline_message(
                cfg,
                report.attempts,
                streak,
                &last_failure,
            ));
        }
        if failures > cfg.retries {
            break Err(format!(
                "{failures} rounds failed, more than the {} retries allowed; last failure: {}; check the app's own logs, or raise retries if it just needs longer to start",
                cfg.retries,
                last_failure.as_deref().unwrap_or("unknown")
            ));
        }
        // No point sleeping into the deadline: another round could not start.
        if deadline.is_some_and(|d| clock.tick() + cfg.interval >= d) {
            break Err(deadline_message(
                cfg,
                report.attempts,
                streak,
                &last_failure,
            ));
        }
        clock.sleep(cfg.interval);
    };
    report.elapsed = clock.tick().saturating_duration_since(start);
    match verdict {
        Ok(()) => {
            report.passed = true;
            info!(
                version,
                attempts = report.attempts,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "healthy"
            );
        }
        Err(e) => {
            warn!(version, attempts = report.attempts, elapsed_ms = report.elapsed.as_millis() as u64, error = %e, "unhealthy");
            report.last_error = Some(e);
        }
    }
    report
}

fn deadline_message(
    cfg: &HealthConfig,
    rounds: u32,
    streak: u32,
    last_failure: &Option<String>,
) -> String {
    format!(
        "the deadline of {} passed after {rounds} round(s), with {streak} of the {} consecutive passing rounds needed; last failure: {}; check the app's own logs, or raise deadline if it just needs longer to start",
        show_duration(cfg.deadline),
        cfg.success_threshold,
        last_failure.as_deref().unwrap_or("none")
    )
}

fn build_client() -> Result<reqwest::Client, String> {
    // The builder installs the crypto provider reqwest needs.
    client_builder(Some("health-check"))
        .redirect(reqwest::redirect::Policy::none())
        // Checks target this host's own services; an HTTP_PROXY meant for the
        // agent's downloads must not sit between them.
        .no_proxy()
        // A fresh connection per request: a kept-alive one could still reach
        // the old process after a swap.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| chain(&e))
}

struct RoundEnv<'a> {
    client: Option<&'a reqwest::Client>,
    expect: Option<&'a ExpectVersion>,
    version: &'a str,
    workdir: &'a Path,
    clock: &'a dyn Clock,
}

fn run_round(env: &RoundEnv<'_>, cfg: &HealthConfig, deadline: Option<Tick>) -> RoundReport {
    let mut results = Vec::with_capacity(cfg.checks.len());
    for check in &cfg.checks {
        let label = check.label();
        // A check may not outlive the overall deadline.
        let timeout = match deadline {
            Some(d) => check
                .timeout()
                .min(d.saturating_duration_since(env.clock.tick())),
            None => check.timeout(),
        };
        let t = env.clock.tick();
        // Err((detail, whether the host kept the check from running)).
        let res: Result<String, (String, bool)> = if timeout.is_zero() {
            Err(("not run: the deadline had passed".to_string(), false))
        } else {
            match check {
                CheckConfig::Http(h) => match env.client {
                    Some(c) => {
                        match bridge::block_on(http_check(c, h, env.expect, env.version, timeout)) {
                            Ok(r) => r.map_err(|d| (d, false)),
                            Err(e) => Err((format!("not run: {}", chain(&e)), true)),
                        }
                    }
                    None => Err(("no HTTP client".to_string(), true)),
                },
                CheckConfig::Tcp(tc) => tcp_check(tc, timeout).map_err(|d| (d, false)),
                CheckConfig::Command(cc) => {
                    command_check(cc, &label, env.version, env.workdir, timeout, env.clock)
                }
            }
        };
        let latency = env.clock.tick().saturating_duration_since(t);
        let (ok, detail, host_error) = match res {
            Ok(d) => (true, d, false),
            Err((d, host)) => (false, d, host),
        };
        debug!(version = env.version, check = %label, ok, detail = %detail, latency_ms = latency.as_millis() as u64, "health check");
        results.push(CheckResult {
            check: label,
            ok,
            latency,
            detail,
            host_error,
        });
    }
    RoundReport {
        ok: results.iter().all(|r| r.ok),
        results,
    }
}

async fn http_check(
    client: &reqwest::Client,
    c: &HttpCheck,
    expect: Option<&ExpectVersion>,
    version: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut req = client.get(&c.url).timeout(timeout);
    for (k, v) in &c.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut resp = req.send().await.map_err(|e| request_error(&e, timeout))?;
    let status = resp.status();
    let code = status.as_u16();
    if !c.status.contains(code) {
        let mut d = format!("status {code}, expected {}", c.status);
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_default();
            d.push_str(&format!(
                " (a redirect to {to:?}; health checks do not follow redirects)"
            ));
        }
        return Err(d);
    }
    let header_version = match expect {
        Some(ExpectVersion::Header(name)) => Some(
            resp.headers()
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string()),
        ),
        _ => None,
    };
    let body = if c.body_contains.is_some() || expect == Some(&ExpectVersion::Body) {
        let mut buf = Vec::new();
        while (buf.len() as u64) < BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(c)) => buf.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(format!(
                        "status {code}, but the body did not arrive within {}",
                        show_duration(timeout)
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "status {code}, but reading the body failed: {}",
                        chain(&e)
                    ));
                }
            }
        }
        buf.truncate(usize::try_from(BODY_LIMIT).unwrap_or(usize::MAX));
        String::from_utf8_lossy(&buf).into_owned()
    } else {
        String::new()
    };
    if let Some(want) = &c.body_contains
        && !body.contains(want.as_str())
    {
        return Err(format!(
            "status {code}, but the body lacks {want:?} (it begins {:?})",
            snippet(&body)
        ));
    }
    match (expect, header_version) {
        (Some(ExpectVersion::Body), _) => {
            if !contains_version(&body, version) {
                return Err(match find_version(&body) {
                    Some(got) => format!(
                        "status {code}, but version {version} not reported (got {got}): an old process may still be serving"
                    ),
                    None => format!(
                        "status {code}, but version {version} not reported: the body names no version (it begins {:?})",
                        snippet(&body)
                    ),
                });
            }
            Ok(format!("status {code}, version {version}"))
        }
        (Some(ExpectVersion::Header(name)), Some(None)) => Err(format!(
            "status {code}, but version {version} not reported: the response has no {name} header"
        )),
        (Some(ExpectVersion::Header(name)), Some(Some(got))) => {
            if contains_version(&got, version) {
                Ok(format!("status {code}, version {version}"))
            } else {
                Err(format!(
                    "status {code}, but version {version} not reported (got {name}: {got:?}): an old process may still be serving"
                ))
            }
        }
        _ => Ok(format!("status {code}")),
    }
}

fn request_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no response within {}", show_duration(timeout))
    } else if e.is_connect() {
        // reqwest's own message ("error sending request for url ...") adds
        // nothing to "cannot connect": show its causes.
        match std::error::Error::source(e) {
            Some(cause) => format!("cannot connect: {}", chain(cause)),
            None => format!("cannot connect: {}", chain(e)),
        }
    } else {
        format!("request failed: {}", chain(e))
    }
}

fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn is_version_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_')
}

/// Whether `hay` reports `version` as a whole token: `1.2.0` is in
/// `{"version":"1.2.0"}` and `v1.2.0`, but not in `11.2.0`, `1.2.01` or
/// `1.2.0-rc.1`, which are other versions.
fn contains_version(hay: &str, version: &str) -> bool {
    if version.is_empty() {
        return false;
    }
    let h = hay.as_bytes();
    hay.match_indices(version).any(|(i, _)| {
        let before_ok = match i.checked_sub(1).map(|j| h[j]) {
            None => true,
            Some(b'v' | b'V') => i < 2 || !is_version_char(h[i - 2]),
            Some(b) => !is_version_char(b),
        };
        let end = i + version.len();
        let after_ok = match h.get(end) {
            None => true,
            // A sentence may end right after the version.
            Some(b'.') => !h.get(end + 1).is_some_and(|b| b.is_ascii_alphanumeric()),
            Some(&b) => !is_version_char(b),
        };
        before_ok && after_ok
    })
}

/// The first thing in `hay` that looks like a semantic version, to tell the
/// operator which version is really running.
fn find_version(hay: &str) -> Option<&str> {
    let h = hay.as_bytes();
    let mut i = 0;
    while i < h.len() {
        if h[i].is_ascii_digit()
            && (i == 0
                || !is_version_char(h[i - 1])
                || (h[i - 1] == b'v' && (i < 2 || !is_version_char(h[i - 2]))))
        {
            let mut j = i;
            let mut parts = 0;
            loop {
                let s = j;
                while j < h.len() && h[j].is_ascii_digit() {
                    j += 1;
                }
                if j == s {
                    break;
                }
                parts += 1;
                if parts == 3 || j >= h.len() || h[j] != b'.' {
                    break;
                }
                j += 1;
            }
            if parts == 3 {
                // Pre-release and build suffixes belong to the version.
                if j < h.len() && matches!(h[j], b'-' | b'+') {
                    while j < h.len()
                        && (h[j].is_ascii_alphanumeric() || matches!(h[j], b'.' | b'-' | b'+'))
                    {
                        j += 1;
                    }
                    while matches!(h[j - 1], b'.' | b'-' | b'+') {
                        j -= 1;
                    }
                }
                return Some(&hay[i..j]);
            }
        }
        i += 1;
    }
    None
}

fn tcp_check(c: &TcpCheck, timeout: Duration) -> Result<String, String> {
    let addrs: Vec<_> = c
        .address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", c.address))?
        .collect();
    let mut last = format!("{} resolves to no address", c.address);
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(format!("connected to {a}")),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("{a}: no answer within {}", show_duration(timeout));
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

struct CheckOutput<'a> {
    check: &'a str,
    version: &'a str,
}

impl LineSink for CheckOutput<'_> {
    fn line(&mut self, stream: Stream, text: &str) {
        debug!(
            check = self.check,
            version = self.version,
            stream = stream.prefix(),
            "{text}"
        );
    }
}

fn command_check(
    c: &CommandCheck,
    label: &str,
    version: &str,
    workdir: &Path,
    timeout: Duration,
    clock: &dyn Clock,
) -> Result<String, (String, bool)> {
    let mut cmd = c.command.to_process();
    cmd.current_dir(workdir).env("SWITCHYARD_VERSION", version);
    let mut out = CheckOutput {
        check: label,
        version,
    };
    let fin = match process::supervise(&mut cmd, timeout, clock, &mut out) {
        Ok(f) => f,
        Err(SuperviseError::Spawn(e)) => {
            // A missing or forbidden program is the release's; anything
            // else (no space, no memory) is the host's.
            let host = !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            );
            return Err((
                format!(
                    "cannot start {} in {}: {e}",
                    c.command.program(),
                    workdir.display()
                ),
                host,
            ));
        }
        Err(SuperviseError::Wait(e)) => {
            return Err((format!("lost track of the process: {e}"), true));
        }
    };
    let last = fin
        .tail
        .last()
        .map(|l| format!(" ({})", l))
        .unwrap_or_default();
    match fin.ending {
        Ending::Exited(0) => Ok("exit code 0".to_string()),
        Ending::Exited(code) => Err((format!("exit code {code}{last}"), false)),
        Ending::Signaled(sig) => Err((
            format!("killed by {}{last}", process::signal_name(sig)),
            false,
        )),
        Ending::TimedOut => Err((
            format!(
                "no result within {}; killed it with its process group{last}",
                show_duration(timeout)
            ),
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use crate::config::health::{
        DEFAULT_DEADLINE, DEFAULT_INTERVAL, DEFAULT_RETRIES, DEFAULT_SUCCESS_THRESHOLD,
        DEFAULT_TCP_TIMEOUT, StatusSet,
    };
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Instant;

    /// A canned HTTP/1.1 response: status, extra headers, body.
    type Reply = (u16, Vec<(&'static str, String)>, String);

    /// A real HTTP server on the loopback: one thread, one response per
    /// connection, `reply(n)` answering the n-th request (from 0).
    struct Server {
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Server {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    fn serve(reply: impl Fn(usize) -> Reply + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, r, s) = (hits.clone(), requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let n = h.fetch_add(1, Ordering::SeqCst);
                r.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req).into_owned());
                let (code, headers, body) = reply(n);
                let mut resp = format!(
                    "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                let _ = conn.write_all(resp.as_bytes());
            }
        });
        Server {
            addr,
            hits,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // Wakes the accept loop so that it sees the flag.
            let _ = TcpStream::connect(self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn ok(body: &str) -> Reply {
        (200, vec![], body.to_string())
    }

    fn cfg(text: &str) -> HealthConfig {
        HealthConfig::from_toml(toml::from_str(text).unwrap()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn http_cfg(settings: &str, url: &str, check_extra: &str) -> HealthConfig {
        cfg(&format!(
            "{settings}\n[[checks]]\nkind = \"http\"\nurl = \"{url}\"\n{check_extra}\n"
        ))
    }

    const FAST: &str = "interval = \"10ms\"";

    fn run(c: &HealthConfig) -> HealthReport {
        run_health(c, "1.2.0", Path::new("/"), &SystemClock)
    }

    #[test]
    fn http_check_passes() {
        let s = serve(|_| ok("ok"));
        let r = run(&http_cfg(FAST, &s.url("/health"), "body_contains = \"ok\""));
        assert!(r.passed, "{r:?}");
        assert_eq!(r.attempts, 1);
        assert_eq!(r.last_error, None);
        let c = &r.rounds[0].results[0];
        assert_eq!(c.check, format!("http GET {}", s.url("/health")));
        assert_eq!(c.detail, "status 200");
        assert!(s.requests.lock().unwrap()[0].starts_with("GET /health HTTP/1.1\r\n"));
    }

    #[test]
    fn status_mismatch_fails_and_status_lists_are_honoured() {
        let s = serve(|_| (503, vec![], "down".into()));
        let r = run(&http_cfg(&format!("{FAST}\nretries = 1"), &s.url("/"), ""));
        assert!(!r.passed);
        assert_eq!(r.attempts, 2);
        assert_eq!(
            r.rounds[1].results[0].detail,
            "status 503, expected 200-299"
        );
        assert!(
            r.last_error.as_deref().unwrap().contains("status 503"),
            "{r:?}"
        );

        let s = serve(|_| (204, vec![], String::new()));
        assert!(run(&http_cfg(FAST, &s.url("/"), "status = \"200,204\"")).passed);
        let r = run(&http_cfg(
            &format!("{FAST}\nretries = 0"),
            &s.url("/"),
            "status = 200",
        ));
        assert_eq!(r.rounds[0].results[0].detail, "status 204, expected 200");
    }

    #[test]
    fn redirects_are_not_followed() {
        let s = serve(|_| (302, vec![("Location", "/login".into())], String::new()));
        let r = run(&http_cfg(&format!("{FAST}\nretries = 0"), &s.url("/"), ""));
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(
            d.contains("status 302")
                && d.contains("\"/login\"")
                && d.contains("do not follow redirects"),
            "{d}"
        );
        assert_eq!(s.hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn body_must_contain_the_substring() {
        let s = serve(|_| ok("{\"state\":\"starting\"}"));
        let r = run(&http_cfg(
            &format!("{FAST}\nretries = 0"),
            &s.url("/"),
            "body_contains = \"ready\"",
        ));
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(
            d.contains("body lacks \"ready\"") && d.contains("starting"),
            "{d}"
        );
    }

    #[test]
    fn expect_version_in_the_body() {
        let settings = format!("{FAST}\nretries = 0\nexpect_version = \"body\"");
        let old = serve(|_| ok("{\"status\":\"ok\",\"version\":\"1.1.0\"}"));
        let r = run(&http_cfg(&settings, &old.url("/"), ""));
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(d.contains("version 1.2.0 not reported (got 1.1.0)"), "{d}");
        assert!(r.last_error.as_deref().unwrap().contains("1.1.0"));

        let new = serve(|_| ok("{\"status\":\"ok\",\"version\":\"1.2.0\"}"));
        let c = http_cfg(&settings, &new.url("/"), "body_contains = \"ok\"");
        let r = run(&c);
        assert!(r.passed, "{r:?}");
        assert_eq!(r.rounds[0].results[0].detail, "status 200, version 1.2.0");
        // A tag with its `v` names the same release.
        assert!(run_health(&c, "v1.2.0", Path::new("/"), &SystemClock).passed);

        let unversioned = serve(|_| ok("ok"));
        let r = run(&http_cfg(&settings, &unversioned.url("/"), ""));
        assert!(
            r.rounds[0].results[0].detail.contains("names no version"),
            "{r:?}"
        );
    }

    #[test]
    fn expect_version_in_a_header_and_request_headers_are_sent() {
        let settings = format!("{FAST}\nretries = 0\nexpect_version = \"header:X-App-Version\"");
        let extra = "headers = { Host = \"example.com\", X-Probe = \"switchyard\" }";
        let old = serve(|_| (200, vec![("X-App-Version", "1.1.0".into())], "ok".into()));
        let r = run(&http_cfg(&settings, &old.url("/"), extra));
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(
            d.contains("version 1.2.0 not reported (got X-App-Version: \"1.1.0\")"),
            "{d}"
        );
        let req = old.requests.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            req.contains("\r\nhost: example.com\r\n")
                && req.contains("\r\nx-probe: switchyard\r\n"),
            "{req}"
        );

        let new = serve(|_| (200, vec![("X-App-Version", "1.2.0".into())], "ok".into()));
        assert!(run(&http_cfg(&settings, &new.url("/"), extra)).passed);

        let none = serve(|_| ok("ok 1.2.0"));
        let r = run(&http_cfg(&settings, &none.url("/"), ""));
        assert!(
            r.rounds[0].results[0]
                .detail
                .contains("no X-App-Version header"),
            "{r:?}"
        );
    }

    #[test]
    fn success_threshold_needs_consecutive_passes() {
        let s = serve(|n| {
            if n < 2 {
                (503, vec![], "warming".into())
            } else {
                ok("ok")
            }
        });
        let r = run(&http_cfg(
            &format!("{FAST}\nsuccess_threshold = 3"),
            &s.url("/"),
            "",
        ));
        assert!(r.passed, "{r:?}");
        assert_eq!(r.attempts, 5);
        let oks: Vec<bool> = r.rounds.iter().map(|r| r.ok).collect();
        assert_eq!(oks, [false, false, true, true, true]);
        assert_eq!(r.last_error, None);
    }

    #[test]
    fn retries_exhausted() {
        let s = serve(|_| (500, vec![], "boom".into()));
        let r = run(&http_cfg(&format!("{FAST}\nretries = 2"), &s.url("/"), ""));
        assert!(!r.passed);
        assert_eq!(r.attempts, 3);
        assert_eq!(s.hits.load(Ordering::SeqCst), 3);
        let e = r.last_error.unwrap();
        assert!(
            e.starts_with("3 rounds failed, more than the 2 retries allowed"),
            "{e}"
        );
        assert!(e.contains("status 500"), "{e}");
    }

    #[test]
    fn deadline_cuts_it_short() {
        let s = serve(|_| (500, vec![], "boom".into()));
        let t = Instant::now();
        let r = run(&http_cfg(
            "interval = \"20ms\"\nretries = 100000\ndeadline = \"300ms\"",
            &s.url("/"),
            "",
        ));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!r.passed);
        assert!(r.attempts >= 2, "{r:?}");
        let e = r.last_error.unwrap();
        assert!(e.starts_with("the deadline of 300ms passed"), "{e}");
        assert!(e.contains("status 500"), "{e}");
    }

    #[test]
    fn deadline_also_bounds_a_slow_check() {
        let c = cfg(
            "deadline = \"300ms\"\n[[checks]]\nkind = \"command\"\ncommand = \"sleep 5\"\ntimeout = \"10s\"\n",
        );
        let t = Instant::now();
        let r = run(&c);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(!r.passed);
        assert!(r.last_error.unwrap().contains("deadline"));
    }

    /// Rounds are timed on the clock: minutes of intervals and a deadline
    /// pass at once on a fake clock, and the verdict is exact.
    #[test]
    fn rounds_and_deadline_run_on_the_clock() {
        let s = serve(|_| (500, vec![], "boom".into()));
        let clock = ManualClock::new("2026-03-28T01:00:00Z".parse().unwrap());
        let c = http_cfg(
            "interval = \"30s\"\nretries = 100\ndeadline = \"2m\"",
            &s.url("/"),
            "",
        );
        let t = Instant::now();
        let r = run_health(&c, "1.2.0", Path::new("/"), &clock);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(!r.passed);
        // Rounds at 0s, 30s, 60s and 90s; a fifth could not start before 120s.
        assert_eq!(r.attempts, 4, "{r:?}");
        assert_eq!(r.elapsed, Duration::from_secs(90));
        assert_eq!(s.hits.load(Ordering::SeqCst), 4);
        let e = r.last_error.unwrap();
        assert!(
            e.starts_with("the deadline of 2m passed after 4 round(s)"),
            "{e}"
        );
    }

    #[test]
    fn https_works_without_a_preinstalled_crypto_provider() {
        // A plain-HTTP server answering a TLS handshake: the check must fail
        // with a message, not panic for want of a rustls provider.
        let s = serve(|_| ok("ok"));
        let url = format!("https://{}/", s.addr);
        let r = run(&http_cfg(&format!("{FAST}\nretries = 0"), &url, ""));
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(
            d.starts_with("cannot connect: ") || d.starts_with("request failed: "),
            "{d}"
        );
    }

    #[test]
    fn unreachable_http_server_is_a_clear_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = run(&http_cfg(
            &format!("{FAST}\nretries = 0"),
            &format!("http://127.0.0.1:{port}/"),
            "",
        ));
        let d = &r.rounds[0].results[0].detail;
        assert!(
            d.starts_with("cannot connect: ") && d.to_lowercase().contains("refused"),
            "{d}"
        );
    }

    #[test]
    fn tcp_open_and_closed_ports() {
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = open.local_addr().unwrap();
        let c = cfg(&format!(
            "{FAST}\n[[checks]]\nkind = \"tcp\"\naddress = \"{addr}\"\ntimeout = \"2s\"\n"
        ));
        let r = run(&c);
        assert!(r.passed, "{r:?}");
        assert_eq!(r.rounds[0].results[0].check, format!("tcp {addr}"));
        drop(open);
        let r = run(&HealthConfig { retries: 0, ..c });
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(d.to_lowercase().contains("refused"), "{d}");
    }

    #[test]
    fn command_checks_pass_fail_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        crate::fs::write_atomic(&dir.path().join("marker"), b"").unwrap();
        let check = |command: &str, timeout: &str| {
            let c = cfg(&format!(
                "{FAST}\nretries = 0\n[[checks]]\nkind = \"command\"\ncommand = {command}\ntimeout = \"{timeout}\"\n"
            ));
            run_health(&c, "1.2.0", dir.path(), &SystemClock)
        };
        // Runs in the working directory, with the expected version.
        let r = check(
            r#"["sh", "-c", "test -f marker && test \"$SWITCHYARD_VERSION\" = 1.2.0"]"#,
            "5s",
        );
        assert!(r.passed, "{r:?}");
        assert_eq!(r.rounds[0].results[0].detail, "exit code 0");

        let r = check(r#""echo not ready >&2; exit 1""#, "5s");
        assert!(!r.passed);
        assert_eq!(
            r.rounds[0].results[0].detail,
            "exit code 1 (err: not ready)"
        );

        let t = Instant::now();
        let r = check(r#""sleep 5""#, "200ms");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(!r.passed);
        let d = &r.rounds[0].results[0].detail;
        assert!(d.starts_with("no result within 200ms"), "{d}");

        let r = check(r#"["/nonexistent/check"]"#, "5s");
        assert!(
            r.rounds[0].results[0]
                .detail
                .starts_with("cannot start /nonexistent/check"),
            "{r:?}"
        );
    }

    #[test]
    fn every_check_runs_in_a_round() {
        let s = serve(|_| ok("ok"));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = cfg(&format!(
            "{FAST}\nretries = 0\n[[checks]]\nkind = \"tcp\"\naddress = \"{closed}\"\n[[checks]]\nkind = \"http\"\nurl = \"{}\"\n",
            s.url("/")
        ));
        let r = run(&c);
        assert!(!r.rounds[0].ok);
        assert_eq!(r.rounds[0].results.len(), 2);
        assert!(!r.rounds[0].results[0].ok && r.rounds[0].results[1].ok);
    }

    #[test]
    fn configuration_defaults_and_all_forms() {
        let c: HealthConfig = toml::from_str(
            r#"
            retries = 5
            interval = "2s"
            success_threshold = 2
            deadline = "60s"
            expect_version = "header:X-App-Version"
            [[checks]]
            kind = "http"
            url = "http://127.0.0.1:8080/health"
            status = "200-299"
            body_contains = "ok"
            headers = { Host = "example.com" }
            timeout = "5s"
            [[checks]]
            kind = "tcp"
            address = "127.0.0.1:5432"
            timeout = "2s"
            [[checks]]
            kind = "command"
            command = "curl -fsS http://127.0.0.1:8080/ready"
            timeout = "10s"
            "#,
        )
        .unwrap();
        assert_eq!(c.retries, 5);
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.success_threshold, 2);
        assert_eq!(c.deadline, Duration::from_secs(60));
        assert_eq!(
            c.expect_version,
            Some(ExpectVersion::Header("X-App-Version".into()))
        );
        assert_eq!(c.checks.len(), 3);
        let labels: Vec<_> = c.checks.iter().map(CheckConfig::label).collect();
        assert_eq!(
            labels,
            [
                "http GET http://127.0.0.1:8080/health",
                "tcp 127.0.0.1:5432",
                "command curl -fsS http://127.0.0.1:8080/ready",
            ]
        );

        let d = cfg("[[checks]]\nkind = \"tcp\"\naddress = \"db:5432\"\n");
        assert_eq!(
            (
                d.retries,
                d.interval,
                d.success_threshold,
                d.deadline,
                d.expect_version
            ),
            (
                DEFAULT_RETRIES,
                DEFAULT_INTERVAL,
                DEFAULT_SUCCESS_THRESHOLD,
                DEFAULT_DEADLINE,
                None
            )
        );
        assert_eq!(
            d.checks[0],
            CheckConfig::Tcp(TcpCheck {
                address: "db:5432".into(),
                timeout: DEFAULT_TCP_TIMEOUT
            })
        );
    }

    #[test]
    fn configuration_problems_are_all_reported() {
        let err = |text: &str| HealthConfig::from_toml(toml::from_str(text).unwrap()).unwrap_err();
        let e = err(r#"
            interval = "soon"
            deadline = "0s"
            success_threshold = 0
            expect_version = "footer"
            [[checks]]
            kind = "http"
            url = "ftp://example.com/"
            status = "200-abc"
            timeout = "5 parsecs"
            [[checks]]
            kind = "tcp"
            address = "localhost"
            [[checks]]
            kind = "command"
            command = []
            "#);
        for want in [
            "checks[0] (http): url \"ftp://example.com/\" has the scheme \"ftp\"",
            "checks[0] (http): status \"200-abc\" has \"abc\", which is not a status",
            "checks[0] (http): timeout: invalid duration \"5 parsecs\"",
            "checks[1] (tcp): address \"localhost\" must be host:port",
            "checks[2] (command): the command array is empty",
            "interval: invalid duration \"soon\"",
            "deadline must be longer than zero",
            "success_threshold must be at least 1",
            "expect_version \"footer\" must be \"body\" or \"header:<Name>\"",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        assert!(err("").contains("no checks"));
        assert!(
            err("expect_version = \"body\"\n[[checks]]\nkind = \"tcp\"\naddress = \"a:1\"\n")
                .contains("needs an http check")
        );
        assert!(err("[[checks]]\nkind = \"htp\"\nurl = \"x\"\n").contains("unknown variant `htp`"));
        let e = err("[[checks]]\nkind = \"tcp\"\naddress = \"a:1\"\nurl = \"x\"\n");
        assert!(e.contains("unknown field `url`"), "{e}");
        assert!(
            err("retry = 3\n[[checks]]\nkind = \"tcp\"\naddress = \"a:1\"\n")
                .contains("unknown field `retry`")
        );
    }

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200-299, 304").unwrap();
        assert!(s.contains(200) && s.contains(299) && s.contains(304));
        assert!(!s.contains(300) && !s.contains(503));
        assert_eq!(s.to_string(), "200-299,304");
        for bad in ["", "2xx", "299-200", "200,", "99", "600"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_tokens() {
        assert!(contains_version("{\"version\":\"1.2.0\"}", "1.2.0"));
        assert!(contains_version("running v1.2.0.", "1.2.0"));
        assert!(contains_version("1.2.0", "1.2.0"));
        assert!(!contains_version("11.2.0", "1.2.0"));
        assert!(!contains_version("1.2.01", "1.2.0"));
        assert!(!contains_version("1.2.0-rc.1", "1.2.0"));
        assert!(!contains_version("dev1.2.0", "1.2.0"));
        assert_eq!(find_version("{\"version\":\"1.1.0\"}"), Some("1.1.0"));
        assert_eq!(
            find_version("up since 2024, v2.0.0-rc.1."),
            Some("2.0.0-rc.1")
        );
        assert_eq!(find_version("build 12.4 ok"), None);
        assert_eq!(find_version("1.2.3- done"), Some("1.2.3"));
    }

    #[test]
    fn report_serializes_with_milliseconds() {
        let s = serve(|_| ok("ok"));
        let r = run(&http_cfg(FAST, &s.url("/"), ""));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["passed"], true);
        assert_eq!(v["attempts"], 1);
        assert!(v["elapsed_ms"].is_u64(), "{v}");
        let res = &v["rounds"][0]["results"][0];
        assert!(res["latency_ms"].is_f64(), "{v}");
        assert_eq!(res["detail"], "status 200");
        assert!(v["last_error"].is_null());
    }
}
