//! The GitHub client's errors, and the one place its messages are written:
//! what went wrong, and what the operator can do about it, worded for what
//! the client was doing ([`Purpose`]).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::fs::FsError;
use crate::source::bridge::BridgeError;

/// Extra wait after a rate-limit reset time: `X-RateLimit-Reset` has whole
/// seconds, and the two clocks may differ a little.
const RESET_MARGIN: Duration = Duration::from_secs(1);

/// What the client is used for: it picks the advice in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Reading releases and downloading assets.
    Releases,
    /// Opening and commenting on issues (failure reports).
    Issues,
    /// Reading and writing the fleet's deployments (the rollout ledger).
    Deployments,
}

/// Errors of the GitHub client. Each says what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// `token_env` names a variable that is not set.
    #[error(
        "token_env = {var:?}, but the environment variable {var} is not set or empty; set it in the service's environment (systemd: Environment= or EnvironmentFile=), or remove token_env to use the API anonymously"
    )]
    TokenEnvMissing {
        /// The variable's name.
        var: String,
    },
    /// `token_file` could not be read.
    #[error(
        "cannot read token_file; check that the file exists and that this user may read it, or remove token_file"
    )]
    TokenFile {
        /// The file-system error (it names the path).
        #[source]
        source: FsError,
    },
    /// The token is empty or not usable in an HTTP header.
    #[error(
        "the token from {from} is empty or holds characters an HTTP header cannot carry; write only the token, on one line"
    )]
    TokenInvalid {
        /// Where it came from ("environment variable X", "file /path").
        from: String,
    },
    /// `api_url` is not a usable base URL.
    #[error(
        "api_url {url:?} is unusable: {reason}; use https://api.github.com, or https://<host>/api/v3 for GitHub Enterprise"
    )]
    BadApiUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
    },
    /// The owner or repository name is not one GitHub allows.
    #[error(
        "GitHub repository {repo:?} is not an owner/name pair GitHub allows (letters, digits, '-', '_', '.'); fix the app's github setting"
    )]
    BadRepo {
        /// owner/repo as given.
        repo: String,
    },
    /// The HTTP clients could not be set up.
    #[error(
        "cannot set up the HTTP client for GitHub: {reason}; check the process's thread and file-descriptor limits"
    )]
    Setup {
        /// Why.
        reason: String,
    },
    /// No runtime to run the requests on.
    #[error(transparent)]
    Runtime(#[from] BridgeError),
    /// The server could not be reached, or the connection broke.
    #[error(
        "{what}: cannot reach {url}: {reason}; check the network, DNS, proxy and firewall, and api_url{}",
        retried(*.attempts)
    )]
    Transport {
        /// What was being done.
        what: String,
        /// Where (without query string).
        url: String,
        /// The underlying error and its causes.
        reason: String,
        /// How many retries were made.
        attempts: usize,
    },
    /// A 5xx answer, still there after the retries.
    #[error(
        "{what}: {url} answered {status} (a server error){}; GitHub may be having trouble (https://www.githubstatus.com): {hint}",
        if *.attempts > 0 { format!(", also after {attempts} retries") } else { String::new() }
    )]
    Server {
        /// What was being done.
        what: String,
        /// Where (without query string).
        url: String,
        /// The status.
        status: u16,
        /// How many retries were made.
        attempts: usize,
        /// What to do.
        hint: String,
    },
    /// A rate limit that is too far off to wait for, or that came back.
    #[error("{}", rate_limit_message(.what, .resets_at.as_ref(), .wait.as_ref(), .advice))]
    RateLimited {
        /// What was being done.
        what: String,
        /// When the limit resets, when GitHub said so.
        resets_at: Option<jiff::Timestamp>,
        /// How long until a retry may work, when known.
        wait: Option<Duration>,
        /// What to do.
        advice: String,
    },
    /// 401: the token was refused, or one is needed.
    #[error("{what}: GitHub answered 401 ({message}); {hint}")]
    Unauthorized {
        /// What was being done.
        what: String,
        /// GitHub's message.
        message: String,
        /// What to do.
        hint: String,
    },
    /// 403 that is not a rate limit.
    #[error("{what}: access to {url} is forbidden (403 {message}); {hint}")]
    Forbidden {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// GitHub's message.
        message: String,
        /// What to do.
        hint: String,
    },
    /// 404.
    #[error("{what}: {url} was not found (404); {hint}")]
    NotFound {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// What to check.
        hint: String,
    },
    /// Another 4xx (not retried).
    #[error("{what}: {url} answered {status} ({message}); this is not retried: {hint}")]
    Http {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// The status.
        status: u16,
        /// GitHub's message.
        message: String,
        /// What to check.
        hint: String,
    },
    /// The answer is not what GitHub sends.
    #[error(
        "{what}: the answer from {url} is not what the GitHub API sends ({reason}); check that api_url points at a GitHub API"
    )]
    BadAnswer {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// A small file was larger than allowed.
    #[error(
        "{name} is larger than {limit} bytes, which no checksum or signature file is; remove it from the release"
    )]
    TooLarge {
        /// The asset.
        name: String,
        /// The limit.
        limit: u64,
    },
}

fn retried(attempts: usize) -> String {
    if attempts > 0 {
        format!("; it was retried {attempts} times")
    } else {
        String::new()
    }
}

fn rate_limit_message(
    what: &str,
    resets_at: Option<&jiff::Timestamp>,
    wait: Option<&Duration>,
    advice: &str,
) -> String {
    let when = match (resets_at, wait) {
        (Some(t), Some(w)) => format!("it resets at {t} (in {})", human_wait(*w)),
        (None, Some(w)) => format!("GitHub asks to wait {}", human_wait(*w)),
        _ => "GitHub did not say when it resets (a secondary rate limit: usually a few minutes)"
            .to_string(),
    };
    format!("{what}: GitHub rate limit reached; {when}; {advice}")
}

pub(crate) fn human_wait(d: Duration) -> String {
    let s = d.as_secs();
    if s < 90 {
        format!("{s} s")
    } else {
        format!("{} min", s.div_ceil(60))
    }
}

impl GithubError {
    /// Worth retrying with backoff: the network or the server failed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            GithubError::Transport { .. } | GithubError::Server { .. }
        )
    }

    /// What went wrong in one attempt, for the retry log line.
    pub(crate) fn cause(&self) -> String {
        match self {
            GithubError::Transport { url, reason, .. } => format!("{url}: {reason}"),
            GithubError::Server { url, status, .. } => format!("{url} answered {status}"),
            other => other.to_string(),
        }
    }

    /// Records how many retries were made, for the message.
    pub(crate) fn with_attempts(mut self, n: usize) -> Self {
        if let GithubError::Transport { attempts, .. } | GithubError::Server { attempts, .. } =
            &mut self
        {
            *attempts = n;
        }
        self
    }
}

/// What [`ErrorContext::classify`] needs to know about the client.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    /// What the client is used for.
    pub(crate) purpose: Purpose,
    /// `owner/repo`.
    pub(crate) slug: String,
    /// Whether a token is configured.
    pub(crate) has_token: bool,
}

impl ErrorContext {
    /// Turns a failed answer into an error. `authenticated`: the token was
    /// sent with the request.
    pub(crate) fn classify(
        &self,
        what: &str,
        url: &str,
        status: StatusCode,
        headers: &HeaderMap,
        message: String,
        authenticated: bool,
    ) -> GithubError {
        let what = what.to_string();
        let url = url.to_string();
        let authenticated = authenticated && self.has_token;
        if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
            if let Some((resets_at, wait)) = rate_limit(status, headers, &message) {
                return GithubError::RateLimited {
                    what,
                    resets_at,
                    wait,
                    advice: self.rate_limit_advice(authenticated),
                };
            }
            return GithubError::Forbidden {
                what,
                url,
                message,
                hint: self.forbidden_hint(),
            };
        }
        if status.is_server_error() {
            return GithubError::Server {
                what,
                url,
                status: status.as_u16(),
                attempts: 0,
                hint: match self.purpose {
                    Purpose::Releases => "retry later".to_string(),
                    Purpose::Issues => "the next failure will be reported again".to_string(),
                    Purpose::Deployments => {
                        "no rollout wave advances on this host until the next poll reads the ledger"
                            .to_string()
                    }
                },
            };
        }
        let slug = &self.slug;
        let has_token = self.has_token;
        match status {
            StatusCode::UNAUTHORIZED => GithubError::Unauthorized {
                what,
                message,
                hint: if has_token || self.purpose != Purpose::Issues {
                    "GitHub refused the token: it is invalid, expired or revoked; replace it (token_env/token_file)".to_string()
                } else {
                    "opening issues needs a token: set token_env or token_file for the app's github source, or set report_issues = false".to_string()
                },
            },
            StatusCode::NOT_FOUND => GithubError::NotFound {
                what,
                url,
                hint: if has_token {
                    format!("check github = \"{slug}\" and that the token can read that repository")
                } else {
                    format!(
                        "check github = \"{slug}\"; a private repository answers 404 without a token: set token_env or token_file"
                    )
                },
            },
            _ => GithubError::Http {
                what,
                url,
                status: status.as_u16(),
                message,
                hint: match (self.purpose, status.as_u16()) {
                    (Purpose::Issues, 410) => {
                        format!("issues are disabled in {slug}: enable them, or set report_issues = false")
                    }
                    (Purpose::Issues, 422) => "GitHub refused the issue's content; this is a bug in switchyard, please report it".to_string(),
                    (Purpose::Deployments, 422) => "GitHub refused the deployment: check that the release's tag exists in the repository".to_string(),
                    _ => "check github, api_url and the token".to_string(),
                },
            },
        }
    }

    fn rate_limit_advice(&self, authenticated: bool) -> String {
        match (self.purpose, authenticated) {
            (Purpose::Issues, _) => "the next failure will be reported once it resets",
            (Purpose::Deployments, _) => {
                "no rollout wave advances on this host until it resets; unsent statuses are kept and sent then"
            }
            (Purpose::Releases, true) => {
                "retry after that; the token's own limit is exhausted (another agent or script may share it)"
            }
            (Purpose::Releases, false) => {
                "retry after that, or configure token_env or token_file for a higher limit (5000 requests per hour instead of 60)"
            }
        }
        .to_string()
    }

    fn forbidden_hint(&self) -> String {
        match self.purpose {
            Purpose::Releases => "give the token read access to the repository's contents, or check the organisation's token policy".to_string(),
            Purpose::Issues => format!(
                "give the token write access to the issues of {} (fine-grained: Issues read and write; classic: repo scope), or check the organisation's token policy",
                self.slug
            ),
            Purpose::Deployments => format!(
                "give the token write access to the deployments of {} (fine-grained: Deployments read and write; classic: repo_deployment scope), or check the organisation's token policy",
                self.slug
            ),
        }
    }
}

/// The wait a rate-limited answer asks for: `Some((resets_at, wait))` when
/// it is a rate limit (either may be unknown), `None` when the 403 or 429 is
/// something else.
fn rate_limit(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
) -> Option<(Option<jiff::Timestamp>, Option<Duration>)> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let now = jiff::Timestamp::now();
    let retry_after = header(RETRY_AFTER.as_str()).and_then(|v| {
        v.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
            // The HTTP-date form.
            jiff::fmt::rfc2822::parse(v)
                .ok()
                .map(|z| z.timestamp().duration_since(now).unsigned_abs())
        })
    });
    if let Some(w) = retry_after {
        return Some((now.checked_add(w).ok(), Some(w)));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")
            .and_then(|v| v.parse::<i64>().ok())
            // Some recordings keep milliseconds.
            .map(|r| if r > 100_000_000_000 { r / 1000 } else { r })
            .and_then(|r| jiff::Timestamp::from_second(r).ok());
        return Some(match reset {
            Some(reset) => {
                let until = reset.duration_since(now);
                let w = if until.is_negative() {
                    RESET_MARGIN
                } else {
                    until.unsigned_abs() + RESET_MARGIN
                };
                (Some(reset), Some(w))
            }
            None => (None, None),
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || message.to_ascii_lowercase().contains("rate limit")
    {
        return Some((None, None));
    }
    None
}

/// GitHub's error `message`, or the start of the body.
pub(crate) fn api_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| {
            body.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn rate_limits_are_told_from_other_refusals() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("30"));
        let (_, w) = rate_limit(StatusCode::TOO_MANY_REQUESTS, &h, "").unwrap();
        assert_eq!(w, Some(Duration::from_secs(30)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = jiff::Timestamp::now().as_second() + 120;
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        let (at, w) = rate_limit(StatusCode::FORBIDDEN, &h, "").unwrap();
        assert_eq!(at.unwrap().as_second(), reset);
        assert!(w.unwrap() > Duration::from_secs(100));
        assert_eq!(
            rate_limit(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "API rate limit exceeded"
            ),
            Some((None, None))
        );
        assert_eq!(
            rate_limit(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "Resource not accessible"
            ),
            None
        );
        assert_eq!(api_message("{\"message\":\"Not Found\"}"), "Not Found");
        assert_eq!(api_message(" plain "), "plain");
    }
}
