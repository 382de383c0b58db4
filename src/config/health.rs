//! The `[apps.<name>.health.staging]` and `[apps.<name>.health.live]`
//! schema: the checks (HTTP, TCP, command), their rounds, retries and
//! deadlines, with the defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::config::hooks::{CommandLine, parse_duration};

/// Failed rounds tolerated before giving up, when not configured.
pub(crate) const DEFAULT_RETRIES: u32 = 3;
/// Pause between rounds, when not configured.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Consecutive passing rounds needed, when not configured.
pub(crate) const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Overall limit, when not configured.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Per-request limit of an HTTP check, when not configured.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect limit of a TCP check, when not configured.
pub(crate) const DEFAULT_TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit of a command check, when not configured.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated health policy for one phase (staging or live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Checks run in every round; all must pass.
    pub checks: Vec<CheckConfig>,
    /// Failed rounds tolerated before giving up.
    pub retries: u32,
    /// Pause between rounds.
    pub interval: Duration,
    /// Consecutive passing rounds needed.
    pub success_threshold: u32,
    /// Overall limit, including the checks' own time.
    pub deadline: Duration,
    /// Whether HTTP responses must report the new version, and where.
    pub expect_version: Option<ExpectVersion>,
}

/// Where an HTTP response reports the running version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectVersion {
    /// Somewhere in the body (`expect_version = "body"`).
    Body,
    /// In the named response header (`expect_version = "header:X-App-Version"`).
    Header(String),
}

/// One check of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckConfig {
    /// An HTTP GET.
    Http(HttpCheck),
    /// A TCP connect.
    Tcp(TcpCheck),
    /// A command; exit code 0 passes.
    Command(CommandCheck),
}

/// `kind = "http"`: a GET whose status (and optionally body) is checked.
/// Redirects are not followed: a 302 to a login page is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// Statuses that pass (default 200-299).
    pub status: StatusSet,
    /// A string the first 64 KiB of the body must contain.
    pub body_contains: Option<String>,
    /// Extra request headers (e.g. `Host` for a name-based virtual host).
    pub headers: BTreeMap<String, String>,
    /// Limit for the whole request, body included.
    pub timeout: Duration,
}

/// `kind = "tcp"`: a connection to `host:port` must be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheck {
    /// `host:port`.
    pub address: String,
    /// Connect limit, per resolved address.
    pub timeout: Duration,
}

/// `kind = "command"`: run in the release directory; exit code 0 passes.
/// It gets `SWITCHYARD_VERSION` (the version expected) in its environment, and
/// its whole process group is killed on timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheck {
    /// What to run.
    pub command: CommandLine,
    /// Limit.
    pub timeout: Duration,
}

/// A set of HTTP statuses, written `"200-299"`, `"200"` or `"200,204"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet {
            ranges: vec![(200, 299)],
        }
    }
}

impl StatusSet {
    /// Parses a comma-separated list of statuses and inclusive ranges.
    pub fn parse(s: &str) -> Result<StatusSet, String> {
        let bad = |why: &str| {
            format!(
                "status {s:?} {why}: write a status, a range or a list, e.g. \"200\", \"200-299\" or \"200,204\""
            )
        };
        let code = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                Ok(_) => Err(bad("has a status outside 100-599")),
                Err(_) => Err(bad(&format!("has {:?}, which is not a status", t.trim()))),
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            if part.trim().is_empty() {
                return Err(bad("has an empty entry"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (code(a)?, code(b)?),
                None => {
                    let c = code(part)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(bad(&format!("has the range {lo}-{hi}, which is backwards")));
            }
            ranges.push((lo, hi));
        }
        Ok(StatusSet { ranges })
    }

    /// Whether `status` passes.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl CheckConfig {
    /// How the check is named in reports, e.g. `http GET http://127.0.0.1:8080/health`.
    pub fn label(&self) -> String {
        match self {
            CheckConfig::Http(h) => format!("http GET {}", h.url),
            CheckConfig::Tcp(t) => format!("tcp {}", t.address),
            CheckConfig::Command(c) => format!("command {}", c.command),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        match self {
            CheckConfig::Http(h) => h.timeout,
            CheckConfig::Tcp(t) => t.timeout,
            CheckConfig::Command(c) => c.timeout,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthConfig {
    #[serde(default)]
    checks: Vec<RawCheck>,
    retries: Option<u32>,
    interval: Option<String>,
    success_threshold: Option<u32>,
    deadline: Option<String>,
    expect_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum RawCheck {
    Http(RawHttpCheck),
    Tcp(RawTcpCheck),
    Command(RawCommandCheck),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpCheck {
    url: String,
    status: Option<RawStatus>,
    body_contains: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpCheck {
    address: String,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommandCheck {
    command: CommandLine,
    timeout: Option<String>,
}

/// `status = 200` and `status = "200-299"` are both natural to write.
struct RawStatus(String);

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawStatus, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an HTTP status such as 200, or a string such as \"200-299\" or \"200,204\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatus, E> {
                Ok(RawStatus(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatus, E> {
                Ok(RawStatus(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn duration_or(
    problems: &mut Vec<String>,
    what: &str,
    raw: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(raw) = raw else { return default };
    match parse_duration(raw) {
        Ok(d) if d.is_zero() => {
            problems.push(format!("{what} must be longer than zero"));
            default
        }
        Ok(d) => d,
        Err(e) => {
            problems.push(format!("{what}: {e}"));
            default
        }
    }
}

impl HealthConfig {
    /// Validates a `[apps.<name>.health.<phase>]` table as parsed from TOML.
    /// The error lists every problem, each naming its key.
    pub fn from_toml(value: toml::Value) -> Result<HealthConfig, String> {
        let raw: RawHealthConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
        HealthConfig::from_raw(raw).map_err(|p| p.join("; "))
    }

    fn from_raw(raw: RawHealthConfig) -> Result<HealthConfig, Vec<String>> {
        let mut problems = Vec::new();
        if raw.checks.is_empty() {
            problems.push("no checks: add at least one [[...checks]] table with kind = \"http\", \"tcp\" or \"command\"".to_string());
        }
        let mut checks = Vec::new();
        for (i, c) in raw.checks.into_iter().enumerate() {
            match c {
                RawCheck::Http(h) => {
                    let at = format!("checks[{i}] (http)");
                    match reqwest::Url::parse(&h.url) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                        Ok(u) => problems.push(format!(
                            "{at}: url {:?} has the scheme {:?}; health checks speak http:// or https://",
                            h.url,
                            u.scheme()
                        )),
                        Err(e) => problems.push(format!(
                            "{at}: url {:?} is not a URL ({e}); write e.g. \"http://127.0.0.1:8080/health\"",
                            h.url
                        )),
                    }
                    let status = match &h.status {
                        None => StatusSet::default(),
                        Some(RawStatus(s)) => StatusSet::parse(s).unwrap_or_else(|e| {
                            problems.push(format!("{at}: {e}"));
                            StatusSet::default()
                        }),
                    };
                    for (k, v) in &h.headers {
                        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                            problems
                                .push(format!("{at}: headers: {k:?} is not a valid header name"));
                        }
                        if reqwest::header::HeaderValue::from_str(v).is_err() {
                            problems.push(format!(
                                "{at}: headers.{k}: the value may not contain control characters"
                            ));
                        }
                    }
                    if h.body_contains.as_deref() == Some("") {
                        problems.push(format!(
                            "{at}: body_contains is empty; remove it or name the text to expect"
                        ));
                    }
                    let timeout = duration_or(
                        &mut problems,
                        &format!("{at}: timeout"),
                        h.timeout.as_deref(),
                        DEFAULT_HTTP_TIMEOUT,
                    );
                    checks.push(CheckConfig::Http(HttpCheck {
                        url: h.url,
                        status,
                        body_contains: h.body_contains,
                        headers: h.headers,
                        timeout,
                    }));
                }
                RawCheck::Tcp(t) => {
                    let at = format!("checks[{i}] (tcp)");
                    let ok = t.address.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                    });
                    if !ok {
                        problems.push(format!(
                            "{at}: address {:?} must be host:port, e.g. \"127.0.0.1:5432\" or \"[::1]:5432\"",
                            t.address
                        ));
                    }
                    let timeout = duration_or(
                        &mut problems,
                        &format!("{at}: timeout"),
                        t.timeout.as_deref(),
                        DEFAULT_TCP_TIMEOUT,
                    );
                    checks.push(CheckConfig::Tcp(TcpCheck {
                        address: t.address,
                        timeout,
                    }));
                }
                RawCheck::Command(c) => {
                    let at = format!("checks[{i}] (command)");
                    if let Err(e) = c.command.validate() {
                        problems.push(format!("{at}: {e}"));
                    }
                    let timeout = duration_or(
                        &mut problems,
                        &format!("{at}: timeout"),
                        c.timeout.as_deref(),
                        DEFAULT_COMMAND_TIMEOUT,
                    );
                    checks.push(CheckConfig::Command(CommandCheck {
                        command: c.command,
                        timeout,
                    }));
                }
            }
        }
        let interval = match raw.interval.as_deref() {
            None => DEFAULT_INTERVAL,
            // Zero is allowed: back-to-back rounds, bounded by retries and deadline.
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                problems.push(format!("interval: {e}"));
                DEFAULT_INTERVAL
            }),
        };
        let deadline = duration_or(
            &mut problems,
            "deadline",
            raw.deadline.as_deref(),
            DEFAULT_DEADLINE,
        );
        let success_threshold = raw.success_threshold.unwrap_or(DEFAULT_SUCCESS_THRESHOLD);
        if success_threshold == 0 {
            problems.push("success_threshold must be at least 1".to_string());
        }
        let expect_version = match raw.expect_version.as_deref().map(str::trim) {
            None => None,
            Some("body") => Some(ExpectVersion::Body),
            Some(s) => match s.strip_prefix("header:").map(str::trim) {
                Some(name) if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                    Some(ExpectVersion::Header(name.to_string()))
                }
                _ => {
                    problems.push(format!(
                        "expect_version {s:?} must be \"body\" or \"header:<Name>\", e.g. \"header:X-App-Version\""
                    ));
                    None
                }
            },
        };
        if expect_version.is_some() && !checks.iter().any(|c| matches!(c, CheckConfig::Http(_))) {
            problems.push(
                "expect_version needs an http check: the version is read from an HTTP response"
                    .to_string(),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(HealthConfig {
            checks,
            retries: raw.retries.unwrap_or(DEFAULT_RETRIES),
            interval,
            success_threshold: success_threshold.max(1),
            deadline,
            expect_version,
        })
    }
}

impl<'de> Deserialize<'de> for HealthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HealthConfig, D::Error> {
        let raw = RawHealthConfig::deserialize(d)?;
        HealthConfig::from_raw(raw).map_err(|p| de::Error::custom(p.join("; ")))
    }
}
