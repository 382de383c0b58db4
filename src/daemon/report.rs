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
//! # What is redacted
//!
//! See [`redact`]. Two decisions worth knowing:
//! - a dotted number with four parts, each at most 255, is an IPv4 address
//!   and is redacted; versions have three parts (`1.2.3`) and stay;
//! - loopback and unspecified addresses (`127.x.x.x`, `0.0.0.0`, `::1`,
//!   `::`) stay: they identify nobody, and "connection refused on
//!   127.0.0.1:8080" is often the whole diagnosis of a failed health check.
//!
//! Redaction is pattern-based, so it is best effort: it errs on the side of
//! redacting, but an unusual secret format can pass.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use regex::{Captures, Regex};
use reqwest::header::{ACCEPT, HeaderMap, HeaderName};
use reqwest::{StatusCode, Url, redirect};
use tracing::{debug, info, warn};

use crate::config::GithubSourceConfig;
use crate::fs::FsError;

/// The label every Switchyard issue carries; open issues are looked up by it.
pub const LABEL: &str = "switchyard";

/// The GitHub REST API version spoken.
const API_VERSION: &str = "2022-11-28";

/// A webhook answer (or a GitHub request) that takes longer than this fails.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Pages of open issues read at most (100 each): a loop guard.
const MAX_PAGES: usize = 50;

/// What a failure report says. Free-form fields are redacted by [`build`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailureReport {
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
pub struct ReportTarget {
    /// Open or comment on issues here (`report_issues = true`).
    pub github: Option<GithubTarget>,
    /// POST the report as JSON here (`notify_url`).
    pub notify_url: Option<String>,
}

/// A GitHub repository to open issues in.
#[derive(Clone)]
pub struct GithubTarget {
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
    /// The app's GitHub source as a report target: same API, repository and
    /// token (`token_env` or `token_file`).
    pub fn from_source(cfg: &GithubSourceConfig) -> Result<Self, ReportError> {
        let (raw, from) = if let Some(var) = &cfg.token_env {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => (Some(v), format!("environment variable {var}")),
                _ => return Err(ReportError::TokenEnvMissing { var: var.clone() }),
            }
        } else if let Some(path) = &cfg.token_file {
            let v = crate::fs::read_to_string(path)
                .map_err(|source| ReportError::TokenFile { source })?;
            (Some(v), format!("file {}", path.display()))
        } else {
            (None, String::new())
        };
        let token = match raw {
            Some(raw) => {
                let t = raw.trim();
                if t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(ReportError::TokenInvalid { from });
                }
                Some(t.to_string())
            }
            None => None,
        };
        Ok(GithubTarget {
            api_url: cfg.api_url.clone(),
            owner: cfg.repo.0.clone(),
            repo: cfg.repo.1.clone(),
            token,
        })
    }

    fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }
}

/// What [`report_github`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Reported {
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
pub enum ReportError {
    /// `token_env` names a variable that is not set.
    #[error(
        "cannot report failures to GitHub: token_env = {var:?}, but the environment variable {var} is not set or empty; set it in the agent's environment (systemd: Environment= or EnvironmentFile=), or set report_issues = false"
    )]
    TokenEnvMissing {
        /// The variable's name.
        var: String,
    },
    /// `token_file` could not be read.
    #[error(
        "cannot report failures to GitHub: cannot read token_file: {source}; check that the file exists and that the agent's user may read it"
    )]
    TokenFile {
        /// The file-system error (it names the path).
        #[source]
        source: FsError,
    },
    /// The token cannot be sent in an HTTP header.
    #[error(
        "cannot report failures to GitHub: the token from {from} is empty or holds spaces or control characters; write only the token, on one line"
    )]
    TokenInvalid {
        /// Where it came from.
        from: String,
    },
    /// The owner or repository name is not a GitHub name.
    #[error(
        "cannot report to GitHub repository {repo:?}: not an owner/name pair GitHub allows (letters, digits, '-', '_', '.'); fix the app's github setting"
    )]
    BadRepo {
        /// owner/repo as given.
        repo: String,
    },
    /// `api_url` is not a usable base URL.
    #[error(
        "cannot report to GitHub: api_url {url:?} is unusable: {reason}; use https://api.github.com, or https://<host>/api/v3 for GitHub Enterprise"
    )]
    BadApiUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
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
        /// The underlying error.
        reason: String,
    },
    /// The server answered with an error status.
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
    /// The answer is not what the GitHub API sends.
    #[error(
        "{what}: the answer from {host} is not what the GitHub API sends ({reason}); check that api_url points at a GitHub API"
    )]
    BadAnswer {
        /// What was being done.
        what: String,
        /// The server.
        host: String,
        /// Why.
        reason: String,
    },
}

// ---------------------------------------------------------------------------
// Building a report

/// Builds a report: reads the last `max_lines` lines of every `*.log` under
/// `root/.switchyard/logs/<deploy_id>/` (hook logs, oldest first, each in a
/// section headed `==> name.log <==`), takes `error`, and redacts all of it
/// (the hostname too). A log that cannot be read is named in the tail
/// instead; building never fails.
#[allow(clippy::too_many_arguments)] // the agent core's calling convention
pub fn build(
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
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
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
// Redaction

/// Redacts secrets and personal data, replacing each with `[REDACTED:kind]`:
///
/// - `private_key`: `-----BEGIN … PRIVATE KEY-----` blocks (to the end of the
///   text when the END line is missing; the base64 lines above an END line
///   whose BEGIN was cut off);
/// - `credentials`: the `user:password` of a URL (a bare user name, such as
///   `git@`, stays unless it is token-long);
/// - `authorization`: the value of an `Authorization:` header, scheme kept;
/// - `cookie`: the value of a `Cookie:` or `Set-Cookie:` header;
/// - `token`: `Bearer …`, `token <long value>`, and well-known formats
///   (Slack, GitLab, Stripe, npm, Google API keys, JWTs);
/// - `github_token`: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`;
/// - `aws_key`: AWS access key ids (`AKIA…`, `ASIA…`, …);
/// - `secret`: the value after a key that ends in `password`, `passwd`,
///   `passphrase`, `secret`, `token`, `api_key`, `access_key`,
///   `private_key`, `secret_key`, `credential(s)`, `signature`, `sig`, `dsn`,
///   `session_id`
///   followed by `=` or `:` (KEY=VALUE lines, query strings, JSON, YAML),
///   and after `--password`, `--token`, … flags;
/// - `email`: e-mail addresses (also `%40`-encoded);
/// - `ipv6`, `ipv4`: addresses, except loopback and unspecified ones; four
///   dotted parts each at most 255 make an IPv4 address (versions have three);
/// - `mac`: MAC addresses;
/// - `phone`: `+` international numbers (7 to 15 digits; 10 or more when
///   written without separators), `(555) 123-4567`, `555-123-4567`, and
///   national numbers with a leading 0 (`030 1234567`, `06 12 34 56 78`,
///   `01511234567`).
///
/// Left alone, because reports are useless without them: versions (`1.2.3`,
/// `v10.0.1-rc.1`), dates, times, deploy ids, hex digests, paths and ports.
/// `redact(redact(x)) == redact(x)`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for rule in RULES.iter() {
        let next = match &rule.action {
            Action::Kind(kind) => rule
                .re
                .replace_all(&out, format!("[REDACTED:{kind}]").as_str())
                .into_owned(),
            Action::With(f) => rule
                .re
                .replace_all(&out, |c: &Captures| f(&out, c))
                .into_owned(),
        };
        out = next;
    }
    out
}

type Replacer = fn(&str, &Captures) -> String;

enum Action {
    /// Replace the whole match.
    Kind(&'static str),
    /// Decide with the text around the match at hand.
    With(Replacer),
}

struct Rule {
    re: Regex,
    action: Action,
}

fn rule(re: &str, action: Action) -> Rule {
    Rule {
        re: Regex::new(re).expect("redaction patterns are valid"),
        action,
    }
}

/// The rules, in order: specific formats before the generic ones, so a
/// GitHub token in `GITHUB_TOKEN=…` or `token ghp_…` is reported as one; IPv6 before IPv4 so
/// `::ffff:10.0.0.1` goes whole; phone numbers last, once addresses are gone.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use Action::{Kind, With};
    vec![
        rule(
            r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            Kind("private_key"),
        ),
        rule(
            r"(?m)(?:^[A-Za-z0-9+/=]{8,}\r?\n)*^-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
            Kind("private_key"),
        ),
        rule(
            r"(?i)\b([a-z][a-z0-9+.-]{1,15}://)([^\s/?#]+)@",
            With(url_userinfo),
        ),
        rule(
            r"gh[pousr]_[A-Za-z0-9]{10,}|github_pat_[A-Za-z0-9_]{10,}",
            Kind("github_token"),
        ),
        rule(
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",
            Kind("aws_key"),
        ),
        rule(
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bglpat-[A-Za-z0-9_-]{20,}|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|\bnpm_[A-Za-z0-9]{36}\b|\bAIza[0-9A-Za-z_-]{35}|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
            Kind("token"),
        ),
        rule(
            r#"(?i)\b((?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?)(?:(bearer|basic|token|digest|negotiate|ntlm|apikey)[ \t]+)?([^\s"',;]+)"#,
            With(authorization),
        ),
        rule(
            r"(?i)\b((?:set-)?cookie[ \t]*:[ \t]*)[^\r\n]+",
            With(cookie),
        ),
        rule(
            r"(?i)\b(bearer)[ \t]+[A-Za-z0-9\-._~+/]{8,}=*",
            With(keep_word_token),
        ),
        rule(
            r"(?i)\b(token)[ \t]+([A-Za-z0-9_\-.]{20,})",
            With(token_word),
        ),
        rule(
            r#"(?i)((?:[a-z0-9_.-]*[_.-])?(?:password|passwd|passphrase|secret(?:[_.-]?key(?:[_.-]?base)?)?|token|(?:api|access|private|signing|encryption|master|client)[_.-]?key|apikey|client[_.-]?secret|credentials?|signature|sig|dsn|session[_.-]?id|sessid)["']?)([ \t]*[=:][ \t]*)("[^"\n]*"|'[^'\n]*'|[^\s&;,"'<>]+)"#,
            With(key_value),
        ),
        rule(
            r"(?i)(--(?:password|passwd|passphrase|token|secret|api-key|apikey|access-token|auth-token|client-secret))([ \t]+)([^\s-]\S*)",
            With(flag_value),
        ),
        rule(
            r"(?i)([A-Z0-9._%+-]+)(?:@|%40)[A-Z0-9-]+(?:\.[A-Z0-9-]+)*\.[A-Z]{2,}\b",
            With(email),
        ),
        rule(r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", With(ipv6)),
        rule(
            r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b",
            With(ipv4),
        ),
        rule(r"(?i)\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b", Kind("mac")),
        rule(
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,6}",
            With(phone_international),
        ),
        rule(r"\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b", Kind("phone")),
        rule(r"\b\d{3}[.-]\d{3}[.-]\d{4}\b", With(phone_nanp)),
        rule(r"\b0\d(?:\.\d{2}){4}\b", With(phone_national)),
        rule(r"\b0\d{1,4}(?:[ /-]\d{2,8}){1,4}\b", With(phone_national)),
        rule(r"\b0[1-9]\d{8,10}\b", Kind("phone")),
    ]
});

static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}-\d{2}-\d{2}").expect("valid pattern"));

fn already(s: &str) -> bool {
    s.starts_with("[REDACTED:") || s.starts_with("\"[REDACTED:") || s.starts_with("'[REDACTED:")
}

fn before(hay: &str, c: &Captures) -> Option<char> {
    hay[..c.get(0).map_or(0, |m| m.start())].chars().next_back()
}

fn after<'a>(hay: &'a str, c: &Captures) -> &'a str {
    &hay[c.get(0).map_or(hay.len(), |m| m.end())..]
}

fn whole(c: &Captures) -> String {
    c[0].to_string()
}

fn url_userinfo(_: &str, c: &Captures) -> String {
    let info = &c[2];
    // `git@host` names a service account, not a secret; a long bare user
    // name is a token used as one (`https://<token>@github.com`).
    if info.contains(':') || info.len() >= 16 {
        format!("{}[REDACTED:credentials]@", &c[1])
    } else {
        whole(c)
    }
}

fn authorization(_: &str, c: &Captures) -> String {
    if already(&c[3]) {
        return whole(c);
    }
    match c.get(2) {
        Some(scheme) => format!("{}{} [REDACTED:authorization]", &c[1], scheme.as_str()),
        None => format!("{}[REDACTED:authorization]", &c[1]),
    }
}

fn cookie(_: &str, c: &Captures) -> String {
    format!("{}[REDACTED:cookie]", &c[1])
}

fn keep_word_token(_: &str, c: &Captures) -> String {
    format!("{} [REDACTED:token]", &c[1])
}

fn token_word(_: &str, c: &Captures) -> String {
    let v = &c[2];
    // "token cache_directory_not_found" is prose; a secret mixes digits in.
    if v.chars().any(|ch| ch.is_ascii_digit()) && v.chars().any(|ch| ch.is_ascii_alphabetic()) {
        format!("{} [REDACTED:token]", &c[1])
    } else {
        whole(c)
    }
}

fn key_value(_: &str, c: &Captures) -> String {
    let v = &c[3];
    if already(v) {
        return whole(c);
    }
    let quote = match v.chars().next() {
        Some(q @ ('"' | '\'')) => q.to_string(),
        _ => String::new(),
    };
    format!("{}{}{quote}[REDACTED:secret]{quote}", &c[1], &c[2])
}

fn flag_value(_: &str, c: &Captures) -> String {
    if already(&c[3]) {
        return whole(c);
    }
    format!("{}{}[REDACTED:secret]", &c[1], &c[2])
}

fn email(_: &str, c: &Captures) -> String {
    // `git@github.com:o/r` is a Git remote (a service account), not a person.
    if c[1].eq_ignore_ascii_case("git") {
        whole(c)
    } else {
        "[REDACTED:email]".to_string()
    }
}

fn is_word(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

fn ipv6(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    // `std::fs`, `crate::x` and the like are paths, not addresses.
    if before(hay, c).is_some_and(is_word) || after(hay, c).starts_with(is_word) {
        return m.to_string();
    }
    let mut addr = m;
    let mut parsed = addr.parse::<std::net::Ipv6Addr>();
    // "… at 2001:db8::1." and "2001:db8::1: refused" end in punctuation.
    while parsed.is_err() && (addr.ends_with('.') || addr.ends_with(':')) && addr.len() > 2 {
        addr = &addr[..addr.len() - 1];
        parsed = addr.parse();
    }
    let Ok(ip) = parsed else {
        return m.to_string();
    };
    // Times (12:30:45) fail to parse; "dead::beef" parses but is prose.
    if ip.is_loopback() || ip.is_unspecified() || !addr.chars().any(|ch| ch.is_ascii_digit()) {
        return m.to_string();
    }
    format!("[REDACTED:ipv6]{}", &m[addr.len()..])
}

fn ipv4(hay: &str, c: &Captures) -> String {
    let parts: Vec<u32> = (1..=4).filter_map(|i| c[i].parse().ok()).collect();
    if parts.len() != 4 || parts.iter().any(|p| *p > 255) {
        return whole(c);
    }
    // Part of a longer dotted number (1.2.3.4.5): not an address.
    let prev = hay[..c.get(0).map_or(0, |m| m.start())]
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>();
    if prev.first() == Some(&'.') && prev.get(1).is_some_and(char::is_ascii_digit) {
        return whole(c);
    }
    let rest = after(hay, c);
    if rest.starts_with('.') && rest[1..].starts_with(|ch: char| ch.is_ascii_digit()) {
        return whole(c);
    }
    if parts[0] == 127 || parts == [0, 0, 0, 0] {
        return whole(c);
    }
    "[REDACTED:ipv4]".to_string()
}

fn digits(s: &str) -> usize {
    s.chars().filter(char::is_ascii_digit).count()
}

fn phone_international(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let n = digits(m);
    let separated = m[1..].contains(|ch: char| !ch.is_ascii_digit());
    let ok = (7..=15).contains(&n)
        && (separated || n >= 10)
        && !before(hay, c).is_some_and(|ch| is_word(ch) || ch == '+')
        && !after(hay, c).starts_with(|ch: char| is_word(ch))
        && !DATE.is_match(m);
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

fn phone_nanp(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let seps: Vec<char> = m.chars().filter(|ch| !ch.is_ascii_digit()).collect();
    let rest = after(hay, c);
    let ok = seps.windows(2).all(|w| w[0] == w[1])
        && !before(hay, c).is_some_and(|ch| ch == '.' || ch == 'v' || ch == '-')
        && !(rest.starts_with(['.', '-'])
            && rest[1..].starts_with(|ch: char| ch.is_alphanumeric()));
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

fn phone_national(hay: &str, c: &Captures) -> String {
    let m = &c[0];
    let rest = after(hay, c);
    // Part of a longer dotted, dashed or slashed number (a version, a date,
    // a path): not a phone number.
    let glued_before = before(hay, c).is_some_and(|ch| matches!(ch, '.' | '-' | '/'));
    let glued_after =
        rest.starts_with(['.', '-', '/']) && rest[1..].starts_with(|ch: char| ch.is_ascii_digit());
    let ok = (9..=15).contains(&digits(m)) && !glued_before && !glued_after && !DATE.is_match(m);
    if ok {
        "[REDACTED:phone]".to_string()
    } else {
        m.to_string()
    }
}

// ---------------------------------------------------------------------------
// Rendering

/// The title prefix that identifies a version's issue:
/// `[switchyard] <app> <version> ` (with the trailing space, so that `1.4.0`
/// does not match the issue of `1.4.0-rc.1`).
pub fn title_prefix(app: &str, to_version: &str) -> String {
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

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Scheme, host and port: what errors and logs show of a URL.
fn origin(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// An error with its causes, redacted (a URL in a cause may carry a secret).
fn chain(e: &dyn std::error::Error) -> String {
    redact(&crate::source::github::error_chain(e))
}

/// GitHub's `message` (or the start of the body), redacted and short.
fn api_message(body: &str) -> String {
    let m = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string());
    redact(&m.chars().take(200).collect::<String>())
}

struct Github<'a> {
    t: &'a GithubTarget,
    base: Url,
    octo: octocrab::Octocrab,
}

/// Issues as listed, reduced to what is used: octocrab's model needs every
/// field GitHub documents, which a GitHub Enterprise or a proxy may trim.
#[derive(serde::Deserialize)]
struct IssueRef {
    number: u64,
    #[serde(default)]
    title: String,
    html_url: Option<String>,
    #[serde(default)]
    labels: Vec<LabelRef>,
    /// Present on pull requests, which the issues listing includes.
    pull_request: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct LabelRef {
    #[serde(default)]
    name: String,
}

#[derive(serde::Deserialize)]
struct CommentRef {
    html_url: Option<String>,
}

impl<'a> Github<'a> {
    fn connect(t: &'a GithubTarget) -> Result<Self, ReportError> {
        if !valid_name(&t.owner) || !valid_name(&t.repo) {
            return Err(ReportError::BadRepo { repo: t.slug() });
        }
        let api = crate::source::github::check_api_url(&t.api_url).map_err(|reason| {
            ReportError::BadApiUrl {
                url: t.api_url.clone(),
                reason,
            }
        })?;
        let base = Url::parse(&format!("{api}/")).map_err(|e| ReportError::BadApiUrl {
            url: t.api_url.clone(),
            reason: e.to_string(),
        })?;
        // The TLS stack is built without a default crypto provider (ring
        // only, no aws-lc) and panics unless one is installed; installed
        // already is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = octocrab::Octocrab::builder()
            .base_uri(api.as_str())
            .map_err(|e| ReportError::BadApiUrl {
                url: t.api_url.clone(),
                reason: e.to_string(),
            })?
            .add_header(ACCEPT, "application/vnd.github+json".to_string())
            .add_header(
                HeaderName::from_static("x-github-api-version"),
                API_VERSION.to_string(),
            )
            .set_connect_timeout(Some(NOTIFY_TIMEOUT))
            .set_read_timeout(Some(GITHUB_TIMEOUT));
        if let Some(tok) = &t.token {
            b = b.personal_token(tok.clone());
        }
        let octo = b
            .build()
            .map_err(|e| ReportError::Setup { reason: chain(&e) })?;
        Ok(Github { t, base, octo })
    }

    fn host(&self) -> String {
        origin(&self.base)
    }

    fn hint(&self, status: StatusCode, headers: &HeaderMap, message: &str) -> String {
        let slug = self.t.slug();
        let no_token = self.t.token.is_none();
        let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
            || headers
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes() == b"0")
            || message.to_ascii_lowercase().contains("rate limit");
        match status.as_u16() {
            _ if rate_limited => {
                "GitHub's rate limit is reached; the next failure will be reported once it resets"
                    .to_string()
            }
            401 if no_token => "opening issues needs a token: set token_env or token_file for the app's github source, or set report_issues = false".to_string(),
            401 => "the token is invalid, expired or revoked: replace it (token_env/token_file)".to_string(),
            403 => format!("give the token write access to the issues of {slug} (fine-grained: Issues read and write; classic: repo scope), or check the organisation's token policy"),
            404 if no_token => format!("check that {slug} exists; a private repository answers 404 without a token: set token_env or token_file"),
            404 => format!("check that {slug} exists and that the token may access it"),
            410 => format!("issues are disabled in {slug}: enable them, or set report_issues = false"),
            422 => "GitHub refused the issue's content; this is a bug in switchyard, please report it".to_string(),
            s if s >= 500 => "GitHub is having trouble (https://www.githubstatus.com); the next failure will be reported again".to_string(),
            _ => format!("check api_url, the repository {slug} and the token"),
        }
    }

    /// One request; any answer (error statuses included) is returned.
    async fn request(
        &self,
        what: &str,
        target: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, HeaderMap, String), ReportError> {
        let transport = |reason: String| ReportError::Transport {
            what: what.to_string(),
            host: self.host(),
            reason,
        };
        let call = async {
            let resp = match body {
                Some(b) => self.octo._post(target, Some(b)).await,
                None => self.octo._get(target).await,
            }
            .map_err(|e| transport(chain(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = self
                .octo
                .body_to_string(resp)
                .await
                .map_err(|e| transport(chain(&e)))?;
            Ok((status, headers, text))
        };
        match tokio::time::timeout(GITHUB_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(transport(format!(
                "no answer within {} s",
                GITHUB_TIMEOUT.as_secs()
            ))),
        }
    }

    /// A request whose answer must be a success with a JSON body.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        target: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(T, HeaderMap), ReportError> {
        let (status, headers, text) = self.request(what, target, body).await?;
        if !status.is_success() {
            let message = api_message(&text);
            return Err(ReportError::Status {
                what: what.to_string(),
                host: self.host(),
                status: status.as_u16(),
                hint: self.hint(status, &headers, &message),
                message,
            });
        }
        let v = serde_json::from_str(&text).map_err(|e| ReportError::BadAnswer {
            what: what.to_string(),
            host: self.host(),
            reason: e.to_string(),
        })?;
        Ok((v, headers))
    }

    /// The request target octocrab gets for a pagination link: a path on the
    /// API host, so its base URI and token apply; a link elsewhere is refused.
    fn target_of(&self, what: &str, url: &Url) -> Result<String, ReportError> {
        if url.origin() != self.base.origin() {
            return Err(ReportError::BadAnswer {
                what: what.to_string(),
                host: self.host(),
                reason: format!("a pagination link leads away to {}", origin(url)),
            });
        }
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }

    /// The open issue whose title starts with `prefix`, if any.
    async fn find_open(&self, prefix: &str) -> Result<Option<IssueRef>, ReportError> {
        let what = format!("list the open {LABEL} issues of {}", self.t.slug());
        let first = self
            .base
            .join(&format!(
                "repos/{}/{}/issues?state=open&labels={LABEL}&per_page=100",
                self.t.owner, self.t.repo
            ))
            .map_err(|e| ReportError::BadApiUrl {
                url: self.t.api_url.clone(),
                reason: e.to_string(),
            })?;
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let target = self.target_of(&what, &url)?;
            let (issues, headers): (Vec<IssueRef>, _) = self.json(&what, &target, None).await?;
            // Lowest number first when several match: the original issue.
            let found = issues
                .into_iter()
                .filter(|i| i.pull_request.is_none() && i.title.starts_with(prefix))
                .min_by_key(|i| i.number);
            if found.is_some() {
                return Ok(found);
            }
            next = next_link(&headers, &url);
            if pages >= MAX_PAGES {
                warn!(repo = %self.t.slug(), pages, "stopped listing open issues after {MAX_PAGES} pages; a new issue will be opened");
                break;
            }
        }
        Ok(None)
    }

    fn issue_url(&self, number: u64) -> String {
        format!("https://github.com/{}/issues/{number}", self.t.slug())
    }
}

/// The `rel="next"` link of a listing page, resolved against its URL.
fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    for v in headers.get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut segs = part.split(';');
            let Some(target) = segs.next() else { continue };
            if segs.any(|s| matches!(s.trim(), "rel=\"next\"" | "rel=next")) {
                let t = target.trim().trim_start_matches('<').trim_end_matches('>');
                return base.join(t).ok();
            }
        }
    }
    None
}

/// Opens one issue per failing version (title [`title_prefix`]` + "<state>
/// at <step> on <host>"`, label [`LABEL`]), or comments on the version's
/// open issue ("Failed again") when there is one. The report is redacted
/// (again) before it leaves.
pub async fn report_github(t: &GithubTarget, r: &FailureReport) -> Result<Reported, ReportError> {
    let r = sanitized(r);
    let gh = Github::connect(t)?;
    let prefix = title_prefix(&r.app, &r.to_version);
    let repo = t.slug();
    let reported = match gh.find_open(&prefix).await? {
        Some(issue) => {
            let what = format!("comment on issue #{} of {repo}", issue.number);
            let target = format!(
                "/repos/{}/{}/issues/{}/comments",
                t.owner, t.repo, issue.number
            );
            let payload = serde_json::json!({ "body": body(&r, true) });
            let (c, _): (CommentRef, _) = gh.json(&what, &target, Some(&payload)).await?;
            Reported::Commented {
                number: issue.number,
                url: c
                    .html_url
                    .or(issue.html_url)
                    .unwrap_or_else(|| gh.issue_url(issue.number)),
            }
        }
        None => {
            let what = format!("open an issue in {repo}");
            let target = format!("/repos/{}/{}/issues", t.owner, t.repo);
            let payload = serde_json::json!({
                "title": title(&r),
                "body": body(&r, false),
                "labels": [LABEL],
            });
            let (i, _): (IssueRef, _) = gh.json(&what, &target, Some(&payload)).await?;
            if !i.labels.iter().any(|l| l.name == LABEL) {
                warn!(repo = %repo, issue = i.number, "GitHub opened the issue without the {LABEL} label (the token lacks triage access to the repository?); later failures of this version will open new issues instead of commenting");
            }
            Reported::IssueOpened {
                number: i.number,
                url: i.html_url.unwrap_or_else(|| gh.issue_url(i.number)),
            }
        }
    };
    info!(app = %r.app, version = %r.to_version, deploy_id = %r.deploy_id, repo = %repo, "failure report: {reported}");
    Ok(reported)
}

// ---------------------------------------------------------------------------
// Chat webhook

/// What a chat webhook receives: the report's fields, plus `text`, the
/// one-line summary that Slack-compatible webhooks require to show anything.
#[derive(serde::Serialize)]
struct NotifyPayload<'a> {
    text: String,
    #[serde(flatten)]
    report: &'a FailureReport,
}

/// POSTs the report as JSON (its fields, plus a one-line `text` for
/// Slack-compatible webhooks; the logs tail cut to its last 60 000
/// characters) to a chat webhook: 10 s timeout, no redirects (a redirect
/// could carry the report elsewhere), any non-2xx answer is an error.
pub async fn notify(url: &str, r: &FailureReport) -> Result<(), ReportError> {
    let u = Url::parse(url).map_err(|e| ReportError::BadNotifyUrl {
        reason: format!("not a URL ({e})"),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(ReportError::BadNotifyUrl {
            reason: "it must be an http:// or https:// URL with a host".to_string(),
        });
    }
    let host = origin(&u);
    let what = "post the failure report to notify_url".to_string();
    let mut r = sanitized(r);
    r.logs_tail = keep_end(&r.logs_tail, MAX_BODY_CHARS);
    let payload = NotifyPayload {
        text: summary(&r),
        report: &r,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .timeout(NOTIFY_TIMEOUT)
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ReportError::Setup {
            reason: chain(&e.without_url()),
        })?;
    // reqwest's errors name the URL, and a webhook URL is a secret.
    let resp = client
        .post(u)
        .json(&payload)
        .send()
        .await
        .map_err(|e| ReportError::Transport {
            what: what.clone(),
            host: host.clone(),
            reason: if e.is_timeout() {
                format!("no answer within {} s", NOTIFY_TIMEOUT.as_secs())
            } else {
                chain(&e.without_url())
            },
        })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let hint = if status.is_redirection() {
            "redirects are not followed: set notify_url to the final URL".to_string()
        } else if status.is_server_error() {
            "the chat service is having trouble; the next failure will be posted again".to_string()
        } else {
            "check notify_url (the webhook may have been revoked) and what the chat service expects"
                .to_string()
        };
        return Err(ReportError::Status {
            what,
            host,
            status: status.as_u16(),
            message: redact(&text.trim().chars().take(200).collect::<String>()),
            hint,
        });
    }
    debug!(app = %r.app, version = %r.to_version, host = %host, "failure report posted to notify_url");
    Ok(())
}

/// Sends the report everywhere `t` says, concurrently: GitHub first in the
/// result, then the webhook. Each result says what was done (or why not);
/// errors are also logged. Never panics.
pub async fn send(t: &ReportTarget, r: &FailureReport) -> Vec<Result<String, ReportError>> {
    let github = async {
        match &t.github {
            Some(g) => Some(report_github(g, r).await.map(|x| x.to_string())),
            None => None,
        }
    };
    let webhook = async {
        match &t.notify_url {
            Some(u) => Some(notify(u, r).await.map(|()| {
                let host = Url::parse(u).map(|u| origin(&u)).unwrap_or_default();
                format!("posted to {host}")
            })),
            None => None,
        }
    };
    let (a, b) = tokio::join!(github, webhook);
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
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    const SECRETS: &[(&str, &str)] = &[
        (
            "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_token",
        ),
        (
            "using github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "github_token",
        ),
        (
            "gho_16C7e42F292c6912E7710c838347Ae178B4a and ghs_16C7e42F292c6912E7710c8",
            "github_token",
        ),
        ("Authorization: Bearer abc.def-ghi_jkl", "authorization"),
        (
            "curl -H 'Authorization: token 0123456789abcdef0123'",
            "authorization",
        ),
        ("sent bearer eyJhbGciOiJIUzI1NiJ9xyz", "token"),
        ("use token 4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e", "token"),
        ("aws key AKIAIOSFODNN7EXAMPLE loaded", "aws_key"),
        ("DB_PASSWORD=hunter2", "secret"),
        ("export SECRET_KEY_BASE='abc def'", "secret"),
        ("GET /cb?code=1&token=s3cr3t&x=1", "secret"),
        ("https://hooks.example/x?api_key=zzz", "secret"),
        ("{\"password\": \"pa ss\"}", "secret"),
        ("mysqldump --password s3cret db", "secret"),
        ("client_secret: abcdef", "secret"),
        ("PHPSESSID=abc; sessionid=xyz", "secret"),
        ("< Set-Cookie: session=abc123; Path=/", "cookie"),
        (
            "DATABASE_URL=postgres://app:pa55word@db.internal:5432/app",
            "credentials",
        ),
        (
            "git clone https://x-access-token:abc123@github.com/o/r",
            "credentials",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----",
            "private_key",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
            "private_key",
        ),
        ("contact jane.doe+ops@example.co.uk now", "email"),
        ("to=jane%40example.com", "email"),
        ("call +49 151 1234 5678", "phone"),
        ("call +1 (555) 123-4567", "phone"),
        ("sms +4915112345678.", "phone"),
        ("office (555) 123-4567", "phone"),
        ("us 555-123-4567", "phone"),
        ("de 030 1234567", "phone"),
        ("fr 06 12 34 56 78", "phone"),
        ("fr 06.12.34.56.78", "phone"),
        ("mobile 01511234567", "phone"),
        ("connect to 10.0.0.5:5432 failed", "ipv4"),
        ("client 203.0.113.9 denied", "ipv4"),
        ("four parts 1.2.3.4", "ipv4"),
        ("peer 2001:db8::1 reset", "ipv6"),
        ("peer [fe80::1ff:fe23:4567:890a%eth0]:80", "ipv6"),
        ("mapped ::ffff:192.0.2.128 ok", "ipv6"),
        ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("nic 00:1a:2b:3c:4d:5e up", "mac"),
    ];

    const CLEAN: &[&str] = &[
        "deploying web 1.2.3 -> v10.0.1-rc.1 (2.0.0-beta.2+build.5)",
        "2026-11-22T12:30:45.123456789Z INFO started at 12:30:45",
        "date 2026-11-22 22.11.2026 11/22/2026",
        "deploy 3f9a0c1d2e4b5a69 and 0123456789012345",
        "sha256:2151b604e3429bff440b9fbc03eb3617bc2603cda96c95b9bb05277f9ddba255",
        "digest 0612345678901234567890123456789012345678901234567890123456789012",
        "/srv/web/releases/1.4.0/storage/logs/laravel-2026-11-22.log",
        "listening on :8080, health http://127.0.0.1:8080/health and [::1]:443 0.0.0.0:80",
        "port 5432 pid 12345 took 1234567 us, uptime 1763812345",
        "std::fs::read failed in crate::daemon::report at src/daemon/report.rs:120:5",
        "token_env = \"GITHUB_TOKEN\" max_tokens=100 tokens: 5",
        "password authentication failed for user \"app\"",
        "git@github.com:owner/repo is cloned via ssh://git@github.com/o/r",
        "npm ERR! lodash@4.17.21 @types/node@20.11.5 +12 -3 files",
        "exit code 1, 3 retries, +02:00 offset, 1.2.3.4.5 is not an address",
        "elapsed 00:01:02.345, ratio 0.123",
        "Error: Tokens expired; secret rotation pending",
    ];

    #[test]
    fn each_kind_is_redacted() {
        for (line, kind) in SECRETS {
            let out = redact(line);
            assert!(
                out.contains(&format!("[REDACTED:{kind}]")),
                "{line:?} -> {out:?}, expected kind {kind}"
            );
        }
    }

    #[test]
    fn secret_values_are_gone() {
        for s in [
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "hunter2",
            "s3cr3t",
            "pa55word",
            "MIIEpAIBAAKCAQEA",
            "b3BlbnNzaC1rZXktdjEAAAAA",
            "jane.doe",
            "1234 5678",
            "10.0.0.5",
            "2001:db8::1",
            "AKIAIOSFODNN7EXAMPLE",
            "abc.def-ghi_jkl",
            "abc123",
            "4567:890a",
        ] {
            let all = SECRETS
                .iter()
                .map(|(l, _)| *l)
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!redact(&all).contains(s), "{s:?} survived");
        }
        // The port stays: it says which service failed.
        assert_eq!(redact("10.0.0.5:5432"), "[REDACTED:ipv4]:5432");
        assert_eq!(
            redact("peer 2001:db8::1: refused"),
            "peer [REDACTED:ipv6]: refused"
        );
        assert_eq!(
            redact("Authorization: Bearer abc.def"),
            "Authorization: Bearer [REDACTED:authorization]"
        );
    }

    #[test]
    fn useful_text_is_left_alone() {
        for line in CLEAN {
            assert_eq!(redact(line), *line, "false positive");
        }
    }

    #[test]
    fn mixed_lines_redact_only_what_they_must_and_redaction_is_idempotent() {
        let mut mixed = Vec::new();
        // Single-line secrets: an unterminated key block runs to the end.
        let one_line = SECRETS.iter().filter(|(s, _)| !s.contains('\n'));
        for (i, (secret, _)) in one_line.enumerate() {
            let clean = CLEAN[i % CLEAN.len()];
            mixed.push(format!("{clean} | {secret}"));
            mixed.push(format!("{secret} | {clean}"));
        }
        let text = mixed.join("\n");
        let once = redact(&text);
        assert_eq!(redact(&once), once);
        for line in once.lines() {
            assert!(line.contains("[REDACTED:"), "nothing redacted in {line:?}");
        }
        // The useful parts survive next to a secret.
        for keep in [
            "1.2.3",
            "v10.0.1-rc.1",
            "2026-11-22",
            "3f9a0c1d2e4b5a69",
            ":8080",
            "/srv/web/releases/1.4.0",
        ] {
            assert!(once.contains(keep), "{keep} lost");
        }
        for (line, _) in SECRETS {
            assert_eq!(redact(&redact(line)), redact(line));
        }
    }

    #[test]
    fn private_keys_go_whole_even_when_the_begin_line_is_cut_off() {
        let text = "before\nMIIEpAIBAAKCAQEAx\nqwertyuiopasdfgh\n-----END PRIVATE KEY-----\nafter";
        assert_eq!(redact(text), "before\n[REDACTED:private_key]\nafter");
        let text = "a\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\nb";
        assert_eq!(redact(text), "a\n[REDACTED:private_key]\nb");
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYH\n-----END PUBLIC KEY-----";
        assert_eq!(redact(pem), pem);
    }

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

    fn sample(to: &str) -> FailureReport {
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
        let mut all = vec![
            json!({"number": 1, "title": "[switchyard] web 1.4.0 failed at x on y", "pull_request": {}}),
        ];
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
        let issue = json!({
            "number": number,
            "title": b["title"],
            "html_url": format!("https://github.com/o/r/issues/{number}"),
            "labels": b["labels"].as_array().unwrap().iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "state": "open",
        });
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
            body: b,
        });
        let c = json!({"id": 99, "html_url": format!("https://github.com/o/r/issues/{n}#issuecomment-99")});
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

    async fn redirect_hook() -> Response {
        (
            AxStatus::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
        )
            .into_response()
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
            .route("/moved", post(redirect_hook))
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
    async fn notify_posts_json_and_fails_on_errors() {
        let (base, state) = mock().await;
        notify(&format!("{base}/hook"), &sample("1.4.0"))
            .await
            .unwrap();
        {
            let m = state.lock().unwrap();
            let b = &m.seen.last().unwrap().body;
            assert_eq!(b["app"], "web");
            assert_eq!(b["to_version"], "1.4.0");
            assert_eq!(b["step"], "migrate");
            assert!(
                b["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("switchyard: web 1.4.0 failed at migrate")
            );
            assert!(!b.to_string().contains("hunter2"));
        }
        let e = notify(&format!("{base}/fail"), &sample("1.4.0"))
            .await
            .unwrap_err();
        assert!(matches!(e, ReportError::Status { status: 500, .. }), "{e}");
        let e = notify(&format!("{base}/moved"), &sample("1.4.0"))
            .await
            .unwrap_err();
        assert!(matches!(e, ReportError::Status { status: 302, .. }), "{e}");
        // The webhook URL is a secret: errors name the host only.
        let e = notify(
            "http://127.0.0.1:9/services/T000/B000/secretpart",
            &sample("1.4.0"),
        )
        .await
        .unwrap_err();
        assert!(!e.to_string().contains("secretpart"), "{e}");
        assert!(matches!(
            notify("ftp://x/y", &sample("1")).await,
            Err(ReportError::BadNotifyUrl { .. })
        ));
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
