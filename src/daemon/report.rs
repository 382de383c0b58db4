//! Failure reports: when a deploy or a revert fails, the agent can open a
//! GitHub issue in the app's repository (`report_issues = true`) and post
//! the same report to a chat webhook (`notify_url`).
//!
//! A report carries the app, the host, the versions, the failing step, the
//! error and the tail of the deploy's hook logs (`*.log` under
//! `.switchyard/logs/<deploy_id>/`). Everything free-form that leaves the
//! machine goes through [`redact`] first, because hook output routinely
//! echoes environment variables, connection strings and user data.
//!
//! # One issue per failing version
//!
//! The issue title starts with `[switchyard] <app> <version> ` (see
//! [`title_prefix`]) and the issue carries the `switchyard` label. A later
//! failure of the same version (on any host) finds the open issue by listing
//! the repository's open issues with that label and matching the prefix, and
//! comments on it instead of opening another. The search API is not used: it
//! has its own, much lower, rate limit and is eventually consistent, so a
//! fresh issue may not be found by it. Two hosts failing at the same instant
//! may still both open an issue: GitHub offers nothing to lock on.
//!
//! Labels given at creation are silently dropped by GitHub when the token
//! lacks triage (write) access to the repository; the issue is then opened
//! without the label, repeats cannot find it, and a warning says so.
//!
//! Nothing is retried: a retried `POST` whose first attempt did reach GitHub
//! opens a duplicate issue, and the failure is recorded on the host anyway
//! (state, history, logs), so a lost report loses no information.
//!
//! GitHub is reached through the project's one GitHub client
//! (`source::github_api`); the chat webhook is in [`notify`], redaction in
//! [`redact`](fn@redact).

pub(crate) mod email;
mod notify;
pub(crate) mod redact;

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use tracing::{info, warn};

use crate::fs::FsError;
use crate::source::github_api::{GithubApi, GithubError, GithubOptions, Purpose, Repo, Token};

pub(crate) use notify::{notify, post};
pub(crate) use redact::redact;

/// The label every Switchyard issue carries; open issues are looked up by it.
pub(crate) const LABEL: &str = "switchyard";

/// Longest wait for a connection to GitHub.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one GitHub request, connection included.
const GITHUB_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the end of each log file is read: enough for any sensible
/// `max_lines`, and a multi-gigabyte log never lands in memory.
const MAX_TAIL_BYTES: u64 = 1024 * 1024;

/// Longer log lines (minified bundles, progress bars) are cut, after
/// redaction so that no cut leaves half a secret unrecognisable.
const MAX_LINE_CHARS: usize = 2000;

/// GitHub refuses issue and comment bodies over 65536 characters.
const MAX_BODY_CHARS: usize = 60_000;

/// The error is shown whole up to this size; its start says the most.
const MAX_ERROR_CHARS: usize = 10_000;

/// GitHub refuses titles over 256 characters.
const MAX_TITLE_CHARS: usize = 256;

/// What a failure report says. Free-form fields are redacted by [`build`].
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FailureReport {
    /// The app's name in the configuration.
    pub app: String,
    /// The hostname of this machine.
    pub host: String,
    /// The version live before the operation, if any.
    pub from_version: Option<String>,
    /// The version being deployed (or reverted to).
    pub to_version: String,
    /// The operation's id (16 hex digits); names its log directory.
    pub deploy_id: String,
    /// The final state, e.g. `failed`, `rollback_failed`, `precheck_failed`.
    pub state: String,
    /// The failing step: `warm`, `migrate`, `live`, ...
    pub step: String,
    /// The error message, redacted.
    pub error: String,
    /// The tail of each hook log, one named section per file, redacted.
    pub logs_tail: String,
    /// When the report was built (RFC 3339, UTC).
    pub time: String,
}

/// Where to report: a GitHub repository and/or a chat webhook.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportTarget {
    /// Open or comment on issues here (`report_issues = true`).
    pub github: Option<GithubTarget>,
    /// POST the report as JSON here (`notify_url`).
    pub notify_url: Option<String>,
}

/// A GitHub repository to open issues in.
#[derive(Clone)]
pub(crate) struct GithubTarget {
    /// API base URL: `https://api.github.com`, or `https://<host>/api/v3`.
    pub api_url: String,
    /// The repository's owner.
    pub owner: String,
    /// The repository's name.
    pub repo: String,
    /// A token allowed to write issues (never shown by `Debug`).
    pub token: Option<String>,
}

impl fmt::Debug for GithubTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubTarget")
            .field("api_url", &self.api_url)
            .field("owner", &self.owner)
            .field("repo", &self.repo)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl GithubTarget {
    fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }
}

/// What [`report_github`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) enum Reported {
    /// A new issue was opened.
    IssueOpened {
        /// The issue's number.
        number: u64,
        /// Its web page.
        url: String,
    },
    /// The version's open issue got a comment.
    Commented {
        /// The issue's number.
        number: u64,
        /// The comment's web page.
        url: String,
    },
}

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reported::IssueOpened { number, url } => write!(f, "opened issue #{number} ({url})"),
            Reported::Commented { number, url } => {
                write!(f, "commented on issue #{number} ({url})")
            }
        }
    }
}

/// Why a report could not be sent. Messages never contain a token nor the
/// webhook URL (chat webhooks carry their secret in the path).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    /// The owner or repository name is not a GitHub name.
    #[error(
        "cannot report to GitHub repository {repo:?}: not an owner/name pair GitHub allows (letters, digits, '-', '_', '.'); fix the app's github setting"
    )]
    BadRepo {
        /// owner/repo as given.
        repo: String,
    },
    /// `notify_url` is not a usable URL (it is not repeated: it may hold a secret).
    #[error(
        "cannot post the failure report: notify_url is unusable: {reason}; set it to the chat webhook's https:// URL"
    )]
    BadNotifyUrl {
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error(
        "cannot set up the HTTP client for failure reports: {reason}; check the process's thread and file-descriptor limits"
    )]
    Setup {
        /// Why.
        reason: String,
    },
    /// The server could not be reached, or did not answer in time.
    #[error(
        "{what}: cannot reach {host}: {reason}; check the network, DNS, proxy and firewall (the failure itself is recorded on this host: `switchyard status`)"
    )]
    Transport {
        /// What was being done.
        what: String,
        /// The server (scheme, host and port only).
        host: String,
        /// The underlying error, redacted.
        reason: String,
    },
    /// The chat webhook answered with an error status.
    #[error("{what}: {host} answered {status}{}; {hint}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status {
        /// What was being done.
        what: String,
        /// The server (scheme, host and port only).
        host: String,
        /// The HTTP status.
        status: u16,
        /// The server's message, redacted and shortened.
        message: String,
        /// What to do.
        hint: String,
    },
    /// GitHub refused, failed, or could not be asked.
    #[error(transparent)]
    Github(GithubError),
    /// The task sending the report stopped (it panicked, or the runtime is
    /// shutting down).
    #[error(
        "{what}: the report stopped unexpectedly ({reason}); the failure is recorded on this host: `switchyard status`"
    )]
    Aborted {
        /// What was being done.
        what: String,
        /// How it stopped.
        reason: String,
    },
    /// An e-mail notification could not be sent.
    #[error("cannot send the e-mail notification through {server} ({step}): {reason}; {hint}")]
    Email {
        /// `server:port`.
        server: String,
        /// The SMTP step that failed.
        step: email::Step,
        /// The underlying error, redacted.
        reason: String,
        /// What to do.
        hint: &'static str,
    },
}

impl ReportError {
    /// Whether an e-mail failed before the server looked at the message
    /// (setup, connection, TLS, AUTH, a timeout): the next one would too.
    pub(crate) fn server_down(&self) -> bool {
        matches!(self, ReportError::Email { step, .. } if !matches!(step, email::Step::Send | email::Step::Message))
    }
}

impl From<GithubError> for ReportError {
    fn from(e: GithubError) -> Self {
        match e {
            GithubError::BadRepo { repo } => ReportError::BadRepo { repo },
            // The same advice as for the webhook: the failure is on record here.
            GithubError::Transport {
                what, url, reason, ..
            } => ReportError::Transport {
                what,
                host: Url::parse(&url).map(|u| origin(&u)).unwrap_or(url),
                reason: redact(&reason),
            },
            other => ReportError::Github(other),
        }
    }
}

// ---------------------------------------------------------------------------
// Building a report

/// Builds a report: reads the last `max_lines` lines of every `*.log` under
/// `root/.switchyard/logs/<deploy_id>/` (hook logs, oldest first, each in a
/// section headed `==> name.log <==`), takes `error`, and redacts all of it
/// (the hostname too). A log that cannot be read is named in the tail
/// instead; building never fails.
#[allow(clippy::too_many_arguments)] // the agent core's calling convention
pub(crate) fn build(
    root: &Path,
    app: &str,
    from: Option<&str>,
    to: &str,
    deploy_id: &str,
    state: &str,
    step: &str,
    error: &str,
    max_lines: usize,
) -> FailureReport {
    FailureReport {
        app: app.to_string(),
        host: redact(&hostname()),
        from_version: from.map(str::to_string),
        to_version: to.to_string(),
        deploy_id: deploy_id.to_string(),
        state: state.to_string(),
        step: step.to_string(),
        error: cut_lines(&redact(error)),
        logs_tail: logs_tail(root, app, deploy_id, max_lines),
        time: jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string(),
    }
}

/// This machine's hostname, or `unknown-host`.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The last line a deploy's hooks wrote (the newest log file's last
/// non-blank line), redacted: the log excerpt of a fleet failure status,
/// which GitHub limits to 140 characters in all.
pub(crate) fn last_log_line(root: &Path, app: &str, deploy_id: &str) -> Option<String> {
    excerpt_of(&logs_tail(root, app, deploy_id, 5))
}

/// The last line of a logs tail that is output, not a file header or a
/// note that logs could not be read.
fn excerpt_of(tail: &str) -> Option<String> {
    tail.lines()
        .map(str::trim)
        .rfind(|l| {
            // Not a file header, the supervisor's exit line, or a note.
            !l.is_empty()
                && !l.starts_with("==> ")
                && !l.starts_with("=== ")
                && !l.starts_with("(logs not read")
        })
        .map(redact)
}

fn logs_tail(root: &Path, app: &str, deploy_id: &str, max_lines: usize) -> String {
    if max_lines == 0 {
        return String::new();
    }
    // The id comes from the journal, but it becomes a path here.
    if crate::version::check_component("deploy id", deploy_id).is_err() {
        warn!(
            app,
            deploy_id, "deploy id is not a safe directory name; logs not read"
        );
        return format!("(logs not read: deploy id {deploy_id:?} is not a directory name)\n");
    }
    let dir = root.join(".switchyard").join("logs").join(deploy_id);
    let names = match crate::fs::list_dir(&dir) {
        Ok(n) => n,
        Err(e) => {
            warn!(app, deploy_id, error = %e, "cannot list the deploy's logs");
            return format!("(logs not read: {})\n", redact(&e.to_string()));
        }
    };
    let mut files = Vec::new();
    for name in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            continue;
        };
        if !name.ends_with(".log") || name.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        // Regular files only: a symlink planted in the log directory must
        // not get another file's contents published.
        match crate::fs::symlink_metadata(&path) {
            Ok(Some(m)) if m.is_file() => files.push((m.modified().ok(), name)),
            Ok(_) => {}
            Err(e) => warn!(app, deploy_id, error = %e, "cannot stat a log file"),
        }
    }
    // Oldest first, so the failing hook's log comes last, next to the error.
    files.sort();
    let mut out = String::new();
    for (_, name) in files {
        let path = dir.join(&name);
        out.push_str(&format!("==> {} <==\n", redact(&name)));
        match read_tail(&path) {
            Ok((text, cut)) => {
                // Redact the whole window before choosing lines: a private
                // key block collapses to one line, and its BEGIN line may lie
                // above the lines shown.
                let red = redact(&text);
                let lines: Vec<&str> = red.lines().collect();
                let skip = lines.len().saturating_sub(max_lines);
                if skip > 0 || cut {
                    out.push_str("[… earlier lines not shown]\n");
                }
                for l in &lines[skip..] {
                    out.push_str(&cut_line(l));
                    out.push('\n');
                }
            }
            Err(e) => {
                warn!(app, deploy_id, error = %e, "cannot read a log file");
                out.push_str(&format!("(not readable: {})\n", redact(&e.to_string())));
            }
        }
    }
    out
}

/// The last [`MAX_TAIL_BYTES`] of a file, lossily decoded; `true` when the
/// file is longer (its first, partial, line is then dropped: half a line may
/// hold half a secret, which no pattern recognises).
fn read_tail(path: &Path) -> Result<(String, bool), FsError> {
    let mut f = crate::fs::open(path)?;
    let len = f
        .metadata()
        .map_err(|e| FsError::new("stat", path, e))?
        .len();
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| FsError::new("seek", path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_TAIL_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| FsError::new("read", path, e))?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        let first_end = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..first_end);
    }
    Ok((text, start > 0))
}

fn cut_line(l: &str) -> String {
    match l.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{} [… line cut]", &l[..i]),
        None => l.to_string(),
    }
}

fn cut_lines(text: &str) -> String {
    let mut out: Vec<String> = text.lines().map(cut_line).collect();
    if text.ends_with('\n') {
        out.push(String::new());
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------
// Rendering

/// The title prefix that identifies a version's issue:
/// `[switchyard] <app> <version> ` (with the trailing space, so that `1.4.0`
/// does not match the issue of `1.4.0-rc.1`).
pub(crate) fn title_prefix(app: &str, to_version: &str) -> String {
    format!("[switchyard] {app} {to_version} ")
}

/// The issue title: the prefix, then what failed where.
fn title(r: &FailureReport) -> String {
    let t = format!(
        "{}{} at {} on {}",
        title_prefix(&r.app, &r.to_version),
        r.state,
        r.step,
        r.host
    );
    t.chars().take(MAX_TITLE_CHARS).collect()
}

/// The report with every text field redacted again: a caller may have built
/// it by hand, and what leaves the machine must be clean. Idempotent on a
/// report from [`build`].
fn sanitized(r: &FailureReport) -> FailureReport {
    FailureReport {
        app: redact(&r.app),
        host: redact(&r.host),
        from_version: r.from_version.as_deref().map(redact),
        to_version: redact(&r.to_version),
        deploy_id: redact(&r.deploy_id),
        state: redact(&r.state),
        step: redact(&r.step),
        error: redact(&r.error),
        logs_tail: redact(&r.logs_tail),
        time: redact(&r.time),
    }
}

/// A fenced code block that its content cannot close: the fence is longer
/// than any run of backticks inside (CommonMark), so the logs stay verbatim
/// and copy-pasteable instead of being altered to escape them.
fn fenced(content: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in content.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat((longest + 1).max(3));
    let nl = if content.ends_with('\n') { "" } else { "\n" };
    format!("{fence}text\n{content}{nl}{fence}\n")
}

/// A table cell: a code span (no Markdown, no @-mentions), pipes escaped
/// (GFM splits cells on them even inside code spans).
fn cell(s: &str) -> String {
    if s.is_empty() {
        return "—".to_string();
    }
    let s = s.replace(['\n', '\r'], " ").replace('|', "\\|");
    let mut longest = 0;
    let mut run = 0;
    for ch in s.chars() {
        run = if ch == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let ticks = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// Keeps the end of `text` within `max` characters, at a line start.
fn keep_end(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let cut = text.char_indices().nth(n - max).map_or(0, |(i, _)| i);
    let start = text[cut..].find('\n').map_or(cut, |i| cut + i + 1);
    format!(
        "[… earlier lines cut to fit the size limit]\n{}",
        &text[start..]
    )
}

fn keep_start(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}\n[… cut]", &text[..i]),
        None => text.to_string(),
    }
}

/// The Markdown body of an issue, or of a comment when `again`.
fn body(r: &FailureReport, again: bool) -> String {
    let mut head = String::new();
    if again {
        head.push_str("## Failed again\n\n");
    }
    head.push_str(&format!(
        "Switchyard could not complete an operation on {}.\n\n",
        cell(&r.host)
    ));
    head.push_str("| | |\n|---|---|\n");
    let from = r.from_version.as_deref().map_or("(none)".to_string(), cell);
    for (k, v) in [
        ("App", cell(&r.app)),
        ("Host", cell(&r.host)),
        ("Version", format!("{from} → {}", cell(&r.to_version))),
        ("Deploy id", cell(&r.deploy_id)),
        ("State", cell(&r.state)),
        ("Step", cell(&r.step)),
        ("Time", cell(&r.time)),
    ] {
        head.push_str(&format!("| {k} | {v} |\n"));
    }
    head.push_str("\n### Error\n\n");
    head.push_str(&fenced(&keep_start(&r.error, MAX_ERROR_CHARS)));
    head.push_str("\n### Logs (tail)\n\n");
    let foot = "\n<sub>Reported by switchyard. Tokens, passwords, e-mail addresses, phone numbers and IP addresses were redacted before sending.</sub>\n";
    let logs = if r.logs_tail.trim().is_empty() {
        "(no hook logs for this operation)\n".to_string()
    } else {
        let budget =
            MAX_BODY_CHARS.saturating_sub(head.chars().count() + foot.chars().count() + 100);
        keep_end(&r.logs_tail, budget)
    };
    format!("{head}{}{foot}", fenced(&logs))
}

/// The one-line summary chat webhooks show (`text`).
fn summary(r: &FailureReport) -> String {
    let first = r.error.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let s = format!(
        "switchyard: {} {} {} at {} on {} (deploy {}): {first}",
        r.app, r.to_version, r.state, r.step, r.host, r.deploy_id
    );
    s.chars().take(500).collect()
}

// ---------------------------------------------------------------------------
// GitHub

/// Scheme, host and port: what errors and logs show of a URL.
fn origin(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// Opens one issue per failing version (title [`title_prefix`]` + "<state>
/// at <step> on <host>"`, label [`LABEL`]), or comments on the version's
/// open issue ("Failed again") when there is one. The report is redacted
/// (again) before it leaves.
pub(crate) async fn report_github(
    t: &GithubTarget,
    r: &FailureReport,
) -> Result<Reported, ReportError> {
    let r = sanitized(r);
    let opts = GithubOptions {
        // Nothing is retried (see the module docs), and a rate limit is not
        // waited for: the next failure is reported once it resets.
        retries: 0,
        max_rate_limit_wait: Duration::ZERO,
        connect_timeout: CONNECT_TIMEOUT,
        read_timeout: GITHUB_TIMEOUT,
        request_timeout: Some(GITHUB_TIMEOUT),
        ..GithubOptions::default()
    };
    let repo = Repo {
        api_url: t.api_url.clone(),
        owner: t.owner.clone(),
        name: t.repo.clone(),
    };
    let token = t.token.clone().map(Token::new);
    let gh = GithubApi::connect(&r.app, repo, token, Purpose::Issues, &opts)?;
    let prefix = title_prefix(&r.app, &r.to_version);
    let slug = t.slug();
    let reported = match gh.find_open_issue(LABEL, &prefix).await? {
        Some(issue) => {
            let c = gh.comment(issue.number, &body(&r, true)).await?;
            Reported::Commented {
                number: issue.number,
                url: c.html_url.to_string(),
            }
        }
        None => {
            let i = gh
                .create_issue(&title(&r), &body(&r, false), &[LABEL])
                .await?;
            if !i.labels.iter().any(|l| l.name == LABEL) {
                warn!(repo = %slug, issue = i.number, "GitHub opened the issue without the {LABEL} label (the token lacks triage access to the repository?); later failures of this version will open new issues instead of commenting");
            }
            Reported::IssueOpened {
                number: i.number,
                url: i.html_url.to_string(),
            }
        }
    };
    info!(app = %r.app, version = %r.to_version, deploy_id = %r.deploy_id, repo = %slug, "failure report: {reported}");
    Ok(reported)
}

/// Sends the report everywhere `t` says, concurrently: GitHub first in the
/// result, then the webhook. Each result says what was done (or why not);
/// errors are also logged. Never panics.
pub(crate) async fn send(t: &ReportTarget, r: &FailureReport) -> Vec<Result<String, ReportError>> {
    // Each report runs as its own task: polled from the runtime's own loop,
    // not from deep inside the caller's (large, in debug builds) future, so
    // the HTTP client's call chain has the whole thread stack.
    let github = t.github.clone().map(|g| {
        let r = r.clone();
        tokio::spawn(async move { report_github(&g, &r).await.map(|x| x.to_string()) })
    });
    let webhook = t.notify_url.clone().map(|u| {
        let r = r.clone();
        tokio::spawn(async move {
            notify(&u, &r).await.map(|()| {
                let host = Url::parse(&u).map(|u| origin(&u)).unwrap_or_default();
                format!("posted to {host}")
            })
        })
    });
    let joined = |what: &str, res: Result<Result<String, ReportError>, tokio::task::JoinError>| {
        res.unwrap_or_else(|e| {
            Err(ReportError::Aborted {
                what: what.to_string(),
                reason: e.to_string(),
            })
        })
    };
    let (a, b) = tokio::join!(
        async {
            match github {
                Some(h) => Some(joined("report to GitHub", h.await)),
                None => None,
            }
        },
        async {
            match webhook {
                Some(h) => Some(joined("post to notify_url", h.await)),
                None => None,
            }
        }
    );
    let out: Vec<_> = [a, b].into_iter().flatten().collect();
    for res in &out {
        if let Err(e) = res {
            warn!(app = %r.app, version = %r.to_version, deploy_id = %r.deploy_id, error = %e, "failure report not sent");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excerpt_is_the_last_output_line_redacted() {
        let tail = "==> warm.log <==\nfirst\nmigration 7 failed: password=hunter2\n\n=== exited with code 1 after 0.2s\n";
        let e = excerpt_of(tail).unwrap();
        assert!(e.starts_with("migration 7 failed"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(excerpt_of("==> warm.log <==\n"), None);
        assert_eq!(excerpt_of("(logs not read: x)\n"), None);
    }
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    fn logs_dir(root: &Path, id: &str) -> std::path::PathBuf {
        let d = root.join(".switchyard/logs").join(id);
        crate::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn build_reads_redacted_log_tails() {
        let tmp = tempfile::tempdir().unwrap();
        let d = logs_dir(tmp.path(), "3f9a0c1d2e4b5a69");
        let mut warm = String::new();
        for i in 0..100 {
            warm.push_str(&format!("warm line {i}\n"));
        }
        warm.push_str("npm notice token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n");
        crate::fs::write_atomic(&d.join("warm.log"), warm.as_bytes()).unwrap();
        crate::fs::write_atomic(
            &d.join("migrate.log"),
            b"connecting to 10.1.2.3 as ops@example.com\nmigration 2026_11_22 failed\n",
        )
        .unwrap();
        crate::fs::write_atomic(&d.join("notes.txt"), b"not a log 10.9.9.9").unwrap();
        crate::fs::symlink(Path::new("/etc/passwd"), &d.join("evil.log")).unwrap();
        let r = build(
            tmp.path(),
            "web",
            Some("1.3.0"),
            "1.4.0",
            "3f9a0c1d2e4b5a69",
            "failed",
            "migrate",
            "migrate hook failed (exit 1); DATABASE_URL=postgres://u:pw@10.1.2.3/app",
            5,
        );
        let all = serde_json::to_string(&r).unwrap();
        for leak in [
            "ghp_",
            "10.1.2.3",
            "ops@example.com",
            "10.9.9.9",
            "root:",
            ":pw@",
        ] {
            assert!(!all.contains(leak), "{leak} leaked: {all}");
        }
        assert!(r.logs_tail.contains("==> warm.log <=="), "{}", r.logs_tail);
        assert!(r.logs_tail.contains("==> migrate.log <=="));
        assert!(!r.logs_tail.contains("evil.log"));
        assert!(r.logs_tail.contains("warm line 99"));
        assert!(r.logs_tail.contains("warm line 96"));
        assert!(!r.logs_tail.contains("warm line 95\n"), "{}", r.logs_tail);
        assert!(r.logs_tail.contains("migration 2026_11_22 failed"));
        assert!(r.logs_tail.contains("[REDACTED:github_token]"));
        assert!(r.error.starts_with("migrate hook failed (exit 1)"));
        assert!(r.error.contains("[REDACTED:"));
        assert_eq!(r.host, redact(&hostname()));
        assert!(r.time.parse::<jiff::Timestamp>().is_ok(), "{}", r.time);
        // Five lines each, plus section headers and the cut markers.
        assert!(
            r.logs_tail.lines().count() <= 2 * (5 + 2),
            "{}",
            r.logs_tail
        );
    }

    #[test]
    fn build_survives_missing_logs_and_bad_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let r = build(
            tmp.path(),
            "web",
            None,
            "1.0.0",
            "0123456789abcdef",
            "failed",
            "warm",
            "boom",
            20,
        );
        assert_eq!(r.logs_tail, "");
        let r = build(
            tmp.path(),
            "web",
            None,
            "1.0.0",
            "../../etc",
            "failed",
            "warm",
            "boom",
            20,
        );
        assert!(r.logs_tail.contains("not a directory name"));
    }

    #[test]
    fn long_logs_are_read_from_the_end_only() {
        let tmp = tempfile::tempdir().unwrap();
        let d = logs_dir(tmp.path(), "aaaaaaaaaaaaaaaa");
        let line = format!("{}\n", "x".repeat(99));
        let mut big = line.repeat(20_000); // 2 MB
        big.push_str(&"y".repeat(5000));
        big.push_str("\nlast line\n");
        crate::fs::write_atomic(&d.join("warm.log"), big.as_bytes()).unwrap();
        let r = build(
            tmp.path(),
            "web",
            None,
            "1.0.0",
            "aaaaaaaaaaaaaaaa",
            "failed",
            "warm",
            "e",
            3,
        );
        let lines: Vec<&str> = r.logs_tail.lines().collect();
        assert_eq!(lines[0], "==> warm.log <==");
        assert_eq!(lines[1], "[… earlier lines not shown]");
        assert_eq!(lines[4], "last line");
        assert!(lines[3].ends_with("[… line cut]") && lines[3].len() < 2100);
    }

    #[test]
    fn bodies_fence_their_content_and_stay_within_limits() {
        let mut r = sample("1.4.0");
        r.logs_tail = "a\n```\nbreakout @someone | x\n".repeat(5000);
        r.error = "error with ```` fence".to_string();
        let b = body(&r, false);
        assert!(b.chars().count() <= 65_536);
        assert!(b.contains("`````text\nerror with ```` fence\n`````"));
        assert!(b.contains("````text\n[… earlier lines cut"));
        assert!(b.contains("| Version | `1.3.0` → `1.4.0` |"), "{b}");
        assert!(body(&r, true).starts_with("## Failed again\n"));
        assert_eq!(cell("a|b"), "`a\\|b`");
        assert_eq!(cell("`x"), "`` `x ``");
        assert!(title(&r).starts_with(&title_prefix("web", "1.4.0")));
        assert_eq!(
            title(&r),
            "[switchyard] web 1.4.0 failed at migrate on web-01"
        );
    }

    #[test]
    fn tokens_never_show_in_debug() {
        let t = GithubTarget {
            api_url: "https://api.github.com".into(),
            owner: "o".into(),
            repo: "r".into(),
            token: Some("ghp_secret".into()),
        };
        let d = format!("{t:?}");
        assert!(!d.contains("secret") && d.contains("<redacted>"), "{d}");
    }

    pub(super) fn sample(to: &str) -> FailureReport {
        FailureReport {
            app: "web".into(),
            host: "web-01".into(),
            from_version: Some("1.3.0".into()),
            to_version: to.into(),
            deploy_id: "3f9a0c1d2e4b5a69".into(),
            state: "failed".into(),
            step: "migrate".into(),
            error: "migrate failed: password=hunter2 for admin@example.com".into(),
            logs_tail: "==> migrate.log <==\nconnecting 10.0.0.7\n".into(),
            time: "2026-11-22T12:30:45Z".into(),
        }
    }

    #[derive(Debug, Clone)]
    struct Seen {
        method: &'static str,
        path: String,
        auth: Option<String>,
        body: Value,
    }

    #[derive(Default)]
    struct Mock {
        issues: Vec<Value>,
        seen: Vec<Seen>,
        base: String,
    }

    type Shared = Arc<Mutex<Mock>>;

    /// A GitHub user, as the API lists one.
    fn user() -> Value {
        let u = "https://api.github.com/users/switchyard-bot";
        json!({
            "login": "switchyard-bot", "id": 1000, "node_id": "MDQ6VXNlcjEwMDA=",
            "avatar_url": "https://avatars.githubusercontent.com/u/1000?v=4",
            "gravatar_id": "", "url": u, "html_url": "https://github.com/switchyard-bot",
            "followers_url": format!("{u}/followers"),
            "following_url": format!("{u}/following{{/other_user}}"),
            "gists_url": format!("{u}/gists{{/gist_id}}"),
            "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{u}/subscriptions"),
            "organizations_url": format!("{u}/orgs"), "repos_url": format!("{u}/repos"),
            "events_url": format!("{u}/events{{/privacy}}"),
            "received_events_url": format!("{u}/received_events"),
            "type": "User", "site_admin": false
        })
    }

    /// An issue with every field GitHub's answers carry.
    fn issue_json(number: u64, title: &Value, labels: &[Value], pull: bool) -> Value {
        let api = format!("https://api.github.com/repos/o/r/issues/{number}");
        let mut i = json!({
            "id": 5000 + number, "node_id": format!("I_kwDOMock{number}"),
            "url": api, "repository_url": "https://api.github.com/repos/o/r",
            "labels_url": format!("{api}/labels{{/name}}"),
            "comments_url": format!("{api}/comments"), "events_url": format!("{api}/events"),
            "html_url": format!("https://github.com/o/r/issues/{number}"),
            "number": number, "state": "open", "title": title, "body": null,
            "user": user(),
            "labels": labels.iter().enumerate().map(|(k, l)| json!({
                "id": 200 + k, "node_id": format!("LA_kwDOMock{k}"),
                "url": format!("https://api.github.com/repos/o/r/labels/{}", l.as_str().unwrap_or("")),
                "name": l, "color": "ededed", "default": false, "description": null
            })).collect::<Vec<_>>(),
            "assignee": null, "assignees": [], "milestone": null, "locked": false,
            "comments": 0, "created_at": "2026-11-22T12:30:45Z",
            "updated_at": "2026-11-22T12:30:45Z", "closed_at": null,
            "author_association": "NONE"
        });
        if pull {
            i["pull_request"] = json!({
                "url": "https://api.github.com/repos/o/r/pulls/1",
                "html_url": "https://github.com/o/r/pull/1",
                "diff_url": "https://github.com/o/r/pull/1.diff",
                "patch_url": "https://github.com/o/r/pull/1.patch"
            });
        }
        i
    }

    fn auth(h: &AxHeaders) -> Option<String> {
        h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    async fn list(State(m): State<Shared>, uri: Uri, h: AxHeaders) -> Response {
        let mut m = m.lock().unwrap();
        let q = uri.query().unwrap_or("").to_string();
        m.seen.push(Seen {
            method: "GET",
            path: format!("{}?{q}", uri.path()),
            auth: auth(&h),
            body: Value::Null,
        });
        assert!(
            q.contains("state=open") && q.contains("labels=switchyard"),
            "{q}"
        );
        let page: usize = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        // A pull request with a matching title must be skipped.
        let mut all = vec![issue_json(
            1,
            &json!("[switchyard] web 1.4.0 failed at x on y"),
            &[],
            true,
        )];
        all.extend(m.issues.iter().cloned());
        // One item per page, so that pagination is exercised.
        let items: Vec<Value> = all.iter().skip(page - 1).take(1).cloned().collect();
        let mut resp = Json(Value::Array(items)).into_response();
        if page < all.len() {
            let link = format!(
                "<{}{}?state=open&labels=switchyard&per_page=100&page={}>; rel=\"next\"",
                m.base,
                uri.path(),
                page + 1
            );
            resp.headers_mut().insert("link", link.parse().unwrap());
        }
        resp
    }

    async fn create(
        State(m): State<Shared>,
        uri: Uri,
        h: AxHeaders,
        Json(b): Json<Value>,
    ) -> Response {
        let mut m = m.lock().unwrap();
        m.seen.push(Seen {
            method: "POST",
            path: uri.path().to_string(),
            auth: auth(&h),
            body: b.clone(),
        });
        let number = 10 + m.issues.len() as u64;
        let issue = issue_json(number, &b["title"], b["labels"].as_array().unwrap(), false);
        m.issues.push(issue.clone());
        (AxStatus::CREATED, Json(issue)).into_response()
    }

    async fn comment(
        State(m): State<Shared>,
        UrlPath((_, _, n)): UrlPath<(String, String, u64)>,
        uri: Uri,
        h: AxHeaders,
        Json(b): Json<Value>,
    ) -> Response {
        let mut m = m.lock().unwrap();
        m.seen.push(Seen {
            method: "POST",
            path: uri.path().to_string(),
            auth: auth(&h),
            body: b.clone(),
        });
        let c = json!({
            "id": 99, "node_id": "IC_kwDOMock99",
            "url": "https://api.github.com/repos/o/r/issues/comments/99",
            "html_url": format!("https://github.com/o/r/issues/{n}#issuecomment-99"),
            "issue_url": format!("https://api.github.com/repos/o/r/issues/{n}"),
            "body": b["body"], "user": user(), "author_association": "NONE",
            "created_at": "2026-11-22T12:30:45Z", "updated_at": "2026-11-22T12:30:45Z"
        });
        (AxStatus::CREATED, Json(c)).into_response()
    }

    async fn hook(State(m): State<Shared>, uri: Uri, Json(b): Json<Value>) -> Response {
        let mut m = m.lock().unwrap();
        m.seen.push(Seen {
            method: "POST",
            path: uri.path().to_string(),
            auth: None,
            body: b,
        });
        if uri.path() == "/fail" {
            return (AxStatus::INTERNAL_SERVER_ERROR, "upstream down").into_response();
        }
        "ok".into_response()
    }

    async fn mock() -> (String, Shared) {
        mock_under("").await
    }

    /// The mock API, mounted under `prefix` (GitHub Enterprise: `/api/v3`).
    async fn mock_under(prefix: &str) -> (String, Shared) {
        let state: Shared = Arc::default();
        let api = axum::Router::new()
            .route("/repos/{o}/{r}/issues", get(list).post(create))
            .route("/repos/{o}/{r}/issues/{n}/comments", post(comment))
            .route("/hook", post(hook))
            .route("/fail", post(hook))
            .with_state(state.clone());
        let app = if prefix.is_empty() {
            api
        } else {
            axum::Router::new().nest(prefix, api)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}{prefix}", listener.local_addr().unwrap());
        state.lock().unwrap().base = base.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, state)
    }

    fn target(base: &str) -> GithubTarget {
        GithubTarget {
            api_url: base.to_string(),
            owner: "o".into(),
            repo: "r".into(),
            token: Some("ghp_testtoken0123456789".into()),
        }
    }

    #[tokio::test]
    async fn one_issue_per_version_and_comments_on_repeats() {
        let (base, state) = mock().await;
        let t = target(&base);

        let first = report_github(&t, &sample("1.4.0")).await.unwrap();
        assert_eq!(
            first,
            Reported::IssueOpened {
                number: 10,
                url: "https://github.com/o/r/issues/10".into()
            }
        );
        {
            let m = state.lock().unwrap();
            let post = m.seen.iter().find(|s| s.method == "POST").unwrap();
            assert_eq!(post.path, "/repos/o/r/issues");
            assert_eq!(post.auth.as_deref(), Some("Bearer ghp_testtoken0123456789"));
            assert_eq!(
                post.body["title"],
                "[switchyard] web 1.4.0 failed at migrate on web-01"
            );
            assert_eq!(post.body["labels"], json!(["switchyard"]));
            let b = post.body["body"].as_str().unwrap();
            assert!(b.contains("| Deploy id | `3f9a0c1d2e4b5a69` |"), "{b}");
            assert!(
                b.contains("migrate failed: password=[REDACTED:secret]"),
                "{b}"
            );
            for leak in ["hunter2", "admin@example.com", "10.0.0.7"] {
                assert!(!b.contains(leak), "{leak} leaked");
            }
            assert!(
                m.seen
                    .iter()
                    .all(|s| s.auth.as_deref() == Some("Bearer ghp_testtoken0123456789"))
            );
        }

        let again = report_github(&t, &sample("1.4.0")).await.unwrap();
        assert_eq!(
            again,
            Reported::Commented {
                number: 10,
                url: "https://github.com/o/r/issues/10#issuecomment-99".into()
            }
        );
        {
            let m = state.lock().unwrap();
            let last = m.seen.last().unwrap();
            assert_eq!(last.path, "/repos/o/r/issues/10/comments");
            assert!(
                last.body["body"]
                    .as_str()
                    .unwrap()
                    .starts_with("## Failed again")
            );
            // The second listing followed the Link header to page 2.
            assert!(m.seen.iter().any(|s| s.path.contains("page=2")));
            assert_eq!(m.issues.len(), 1);
        }

        // A prerelease of the same version is another version.
        let other = report_github(&t, &sample("1.4.0-rc.1")).await.unwrap();
        assert_eq!(
            other,
            Reported::IssueOpened {
                number: 11,
                url: "https://github.com/o/r/issues/11".into()
            }
        );
        let other = report_github(&t, &sample("1.5.0")).await.unwrap();
        assert!(matches!(other, Reported::IssueOpened { number: 12, .. }));
        assert_eq!(state.lock().unwrap().issues.len(), 3);
    }

    #[tokio::test]
    async fn github_enterprise_paths_and_links_keep_the_api_prefix() {
        let (base, state) = mock_under("/api/v3").await;
        let t = target(&base);
        let first = report_github(&t, &sample("3.0.0")).await.unwrap();
        assert!(matches!(first, Reported::IssueOpened { number: 10, .. }));
        let again = report_github(&t, &sample("3.0.0")).await.unwrap();
        assert!(matches!(again, Reported::Commented { number: 10, .. }));
        assert!(
            state
                .lock()
                .unwrap()
                .seen
                .iter()
                .any(|s| s.path.contains("page=2"))
        );
    }

    #[tokio::test]
    async fn github_errors_say_what_to_do() {
        let (base, _) = mock().await;
        let mut t = target(&base);
        t.repo = "missing".into();
        t.owner = "x/../y".into();
        let e = report_github(&t, &sample("1.0.0")).await.unwrap_err();
        assert!(matches!(e, ReportError::BadRepo { .. }), "{e}");
        let mut t = target("http://127.0.0.1:9");
        t.api_url.push_str("/api/v3");
        let e = report_github(&t, &sample("1.0.0")).await.unwrap_err();
        assert!(matches!(e, ReportError::Transport { .. }), "{e}");
        assert!(!e.to_string().contains("ghp_"), "{e}");
    }

    #[tokio::test]
    async fn send_does_everything_configured() {
        let (base, _) = mock().await;
        let t = ReportTarget {
            github: Some(target(&base)),
            notify_url: Some(format!("{base}/fail")),
        };
        let res = send(&t, &sample("2.0.0")).await;
        assert_eq!(res.len(), 2);
        assert!(res[0].as_ref().unwrap().starts_with("opened issue #"));
        assert!(res[1].is_err());
        assert!(
            send(&ReportTarget::default(), &sample("2.0.0"))
                .await
                .is_empty()
        );
    }
}
