//! GitHub Releases as a release source (`github = "owner/repo"`).
//!
//! The API (listing releases, with pagination and `ETag`s) goes through
//! `octocrab`; asset downloads go through `reqwest` because their redirect
//! needs handling by hand: the API asset endpoint answers `302` to a storage
//! host, and the token must never travel there.
//!
//! Which release: drafts are skipped, tags are parsed as semver (a leading
//! `v` allowed; other tags are ignored with a log line), and `latest` is the
//! highest version by semver on the app's channel, never the newest by date
//! or by string. On the stable channel a release is a prerelease when GitHub
//! flags it so or when its version has a semver pre-release part.
//!
//! What is refused: a release whose tag or name is not a safe single path
//! component, an asset whose name is not one, an asset whose `state` is not
//! `uploaded`, and a sidecar whose bytes do not match the `digest` the API
//! gives for it. The asset's own `digest` is passed on in
//! [`FetchedRelease::asset_digest`] for the install to check against the
//! digest it computes while streaming (this module does not check it: an
//! error raised from inside the stream would hide the checksum and signature
//! verdicts, which are the more useful message).
//!
//! The asset name is a template: `{version}` (semver without the `v`),
//! `{tag}` (as published) and `{target}` (`<arch>-<os>` as Rust names them,
//! e.g. `x86_64-linux`, `aarch64-linux`), optionally with `*` and `?`
//! wildcards, in which case exactly one matching `.tar.gz` asset must exist.
//!
//! Network failures and `5xx` answers are retried with exponential backoff
//! and jitter (`backon`); other `4xx` answers are not retried. A rate limit
//! (`403`/`429` with `Retry-After`, or `X-RateLimit-Remaining: 0` with
//! `X-RateLimit-Reset`) is waited out once when the wait is short, and
//! otherwise reported with the time it resets.
//!
//! Each listing page's `ETag` and body are kept in memory for as long as the
//! source lives (nothing is persisted), so a long-lived source (the agent)
//! polls with `If-None-Match` and an unchanged listing costs no rate limit.
//! A download is retried until its first byte; one that breaks off later
//! fails the read (the install is then undone and can simply be run again).
//!
//! # Threads and runtimes
//!
//! [`ReleaseSource`] is synchronous, because the verify-and-unpack pipeline
//! is. A [`GithubSource`] owns a small tokio runtime (or uses the handle given
//! to [`GithubSource::with_runtime`]) and blocks on it. **Never call its
//! methods, nor read the asset stream, from inside an async context** (a
//! tokio task): tokio panics there. From an async program, call them inside
//! `tokio::task::spawn_blocking`. Drop a source that owns its runtime outside
//! async contexts too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::{self, IsTerminal, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{
    ACCEPT, ETAG, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH, LINK, LOCATION, RETRY_AFTER,
};
use reqwest::{StatusCode, redirect};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use crate::config::github::{
    check_api_url, check_asset_pattern, glob_match, has_wildcard, render_asset, target,
};
use crate::config::{Channel, GithubSourceConfig};
use crate::fs::FsError;
use crate::source::{
    FetchedRelease, MAX_SIDECAR_BYTES, ReleaseInfo, ReleaseSource, SUMS_NAME, SourceError,
};
use crate::version::{Version, VersionRequest, check_component};

/// The GitHub REST API version this module speaks.
const API_VERSION: &str = "2022-11-28";

/// Most redirects followed for one download.
const MAX_REDIRECTS: usize = 5;

/// Most pages of releases read (100 each): a loop guard, not a real limit.
const MAX_PAGES: usize = 100;

/// Chunks buffered between the download task and the reader: enough to keep
/// the network busy while the pipeline hashes and unpacks, and never the
/// whole artifact in memory.
const CHANNEL_CHUNKS: usize = 8;

/// Extra wait after a rate-limit reset time: `X-RateLimit-Reset` has whole
/// seconds, and the two clocks may differ a little.
const RESET_MARGIN: Duration = Duration::from_secs(1);

/// Errors of the GitHub source. Each says what the operator can do.
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
        "cannot read token_file: {source}; check that the file exists and that this user may read it, or remove token_file"
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
    /// The runtime or the HTTP clients could not be set up.
    #[error(
        "cannot set up the HTTP client for GitHub: {reason}; check the process's thread and file-descriptor limits"
    )]
    Setup {
        /// Why.
        reason: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error(
        "{what}: cannot reach {url}: {reason}; check the network, DNS, proxy and firewall, and api_url; it was retried {attempts} times"
    )]
    Transport {
        /// What was being done.
        what: String,
        /// Where (without query string).
        url: String,
        /// The underlying error.
        reason: String,
        /// How many retries were made.
        attempts: usize,
    },
    /// A 5xx answer, still there after the retries.
    #[error(
        "{what}: {url} answered {status} (a server error), also after {attempts} retries; the service may be having trouble (GitHub: https://www.githubstatus.com): retry later"
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
    },
    /// A rate limit that is too far off to wait for, or that came back.
    #[error("{}", rate_limit_message(.what, .resets_at.as_ref(), .wait.as_ref(), *.authenticated))]
    RateLimited {
        /// What was being done.
        what: String,
        /// When the limit resets, when GitHub said so.
        resets_at: Option<jiff::Timestamp>,
        /// How long until a retry may work, when known.
        wait: Option<Duration>,
        /// Whether a token was sent.
        authenticated: bool,
    },
    /// 401: the token was refused.
    #[error(
        "{what}: GitHub refused the token (401 {message}); it is invalid, expired or revoked: replace the token (token_env/token_file)"
    )]
    Unauthorized {
        /// What was being done.
        what: String,
        /// GitHub's message.
        message: String,
    },
    /// 403 that is not a rate limit.
    #[error(
        "{what}: access to {url} is forbidden (403 {message}); give the token read access to the repository's contents, or check the organisation's token policy"
    )]
    Forbidden {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// GitHub's message.
        message: String,
    },
    /// 404.
    #[error("{what}: {url} was not found (404){hint}")]
    NotFound {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// What to check.
        hint: String,
    },
    /// Another 4xx (not retried).
    #[error(
        "{what}: {url} answered {status} ({message}); this is not retried: check github, api_url and the token"
    )]
    Http {
        /// What was being done.
        what: String,
        /// Where.
        url: String,
        /// The status.
        status: u16,
        /// GitHub's message.
        message: String,
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
    /// The release has no asset matching the configured name.
    #[error(
        "release {tag} has no asset matching {pattern:?} (assets: {}); fix `asset` in [apps.<name>.source] or publish the asset",
        if assets.is_empty() { "none".to_string() } else { assets.join(", ") }
    )]
    AssetNotFound {
        /// The release.
        tag: String,
        /// The configured asset name or pattern, rendered.
        pattern: String,
        /// Every asset the release has.
        assets: Vec<String>,
    },
    /// Several assets match the wildcard pattern.
    #[error(
        "release {tag} has {} .tar.gz assets matching {pattern:?} ({}); exactly one must match: make `asset` more precise, e.g. \"myapp-{{version}}-{{target}}.tar.gz\"",
        matches.len(), matches.join(", ")
    )]
    AmbiguousAsset {
        /// The release.
        tag: String,
        /// The pattern, rendered.
        pattern: String,
        /// The matching assets.
        matches: Vec<String>,
    },
    /// Something unsafe or inconsistent was offered.
    #[error("release {tag} refused: {reason}")]
    Refused {
        /// The release.
        tag: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The release was not in the listing.
    #[error(
        "release {tag} is not (or no longer) among the releases of {repo}; run `switchyard check` to see what is available"
    )]
    UnknownRelease {
        /// The tag asked for.
        tag: String,
        /// owner/repo.
        repo: String,
    },
}

fn rate_limit_message(
    what: &str,
    resets_at: Option<&jiff::Timestamp>,
    wait: Option<&Duration>,
    authenticated: bool,
) -> String {
    let when = match (resets_at, wait) {
        (Some(t), Some(w)) => format!("it resets at {t} (in {})", human_wait(*w)),
        (None, Some(w)) => format!("GitHub asks to wait {}", human_wait(*w)),
        _ => "GitHub did not say when it resets (a secondary rate limit: usually a few minutes)"
            .to_string(),
    };
    let advice = if authenticated {
        "retry after that; the token's own limit is exhausted (another agent or script may share it)"
    } else {
        "retry after that, or configure token_env or token_file for a higher limit (5000 requests per hour instead of 60)"
    };
    format!("{what}: GitHub rate limit reached; {when}; {advice}")
}

fn human_wait(d: Duration) -> String {
    let s = d.as_secs();
    if s < 90 {
        format!("{s} s")
    } else {
        format!("{} min", s.div_ceil(60))
    }
}

impl GithubError {
    /// Worth retrying with backoff: the network or the server failed.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            GithubError::Transport { .. } | GithubError::Server { .. }
        )
    }

    /// What went wrong in one attempt, for the retry log line.
    fn cause(&self) -> String {
        match self {
            GithubError::Transport { url, reason, .. } => format!("{url}: {reason}"),
            GithubError::Server { url, status, .. } => format!("{url} answered {status}"),
            other => other.to_string(),
        }
    }

    /// Records how many retries were made, for the message.
    fn with_attempts(mut self, n: usize) -> Self {
        if let GithubError::Transport { attempts, .. } | GithubError::Server { attempts, .. } =
            &mut self
        {
            *attempts = n;
        }
        self
    }

    fn into_source(self, source_desc: String, version: &str) -> SourceError {
        match self {
            GithubError::NotFound { .. }
            | GithubError::AssetNotFound { .. }
            | GithubError::UnknownRelease { .. } => SourceError::NotFound {
                what: self.to_string(),
                source_desc,
            },
            GithubError::AmbiguousAsset { .. } => SourceError::Malformed {
                version: version.to_string(),
                source_desc,
                reason: self.to_string(),
            },
            GithubError::Refused { reason, .. } => SourceError::Refused {
                version: version.to_string(),
                source_desc,
                reason,
            },
            other => SourceError::Github(Box::new(other)),
        }
    }
}

/// Parses an API `digest` (`sha256:<64 hex>`). Other algorithms are
/// ignored (`Ok(None)`); a malformed SHA-256 is an error.
pub fn parse_digest(d: &str) -> Result<Option<[u8; 32]>, String> {
    let Some((algo, hex_digest)) = d.split_once(':') else {
        return Err(format!("digest {d:?} is not <algorithm>:<hex>"));
    };
    if !algo.eq_ignore_ascii_case("sha256") {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out)
        .map_err(|e| format!("digest {d:?} is not a SHA-256 ({e})"))?;
    Ok(Some(out))
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn load_token(cfg: &GithubSourceConfig) -> Result<Option<Token>, GithubError> {
    let (raw, from) = if let Some(var) = &cfg.token_env {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => (v, format!("environment variable {var}")),
            _ => return Err(GithubError::TokenEnvMissing { var: var.clone() }),
        }
    } else if let Some(path) = &cfg.token_file {
        let v =
            crate::fs::read_to_string(path).map_err(|source| GithubError::TokenFile { source })?;
        (v, format!("file {}", path.display()))
    } else {
        return Ok(None);
    };
    let t = raw.trim();
    if t.is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
        return Err(GithubError::TokenInvalid { from });
    }
    Ok(Some(Token(t.to_string())))
}

/// The configured token (from `token_env` or `token_file`), for other
/// GitHub calls of the same app (failure reports). Never log it.
pub fn read_token(cfg: &GithubSourceConfig) -> Result<Option<String>, GithubError> {
    Ok(load_token(cfg)?.map(|t| t.0))
}

/// Installs the ring crypto provider for rustls (reqwest is built without a
/// default one and panics without it). Installing twice is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How progress of an asset download is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines only.
    Lines,
}

/// Tuning of the network behaviour. The defaults suit production; tests may
/// shorten the delays.
#[derive(Debug, Clone)]
pub struct GithubOptions {
    /// Retries after a network error or a 5xx answer (not counting the first try).
    pub retries: usize,
    /// First retry delay; it doubles each time, with jitter.
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// The longest rate-limit wait accepted before failing with a message
    /// that says when to retry.
    pub max_rate_limit_wait: Duration,
    /// Releases per page asked for (GitHub allows up to 100).
    pub per_page: u8,
    /// Progress display for asset downloads.
    pub progress: ProgressMode,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer.
    pub read_timeout: Duration,
}

impl Default for GithubOptions {
    fn default() -> Self {
        GithubOptions {
            retries: 4,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            max_rate_limit_wait: crate::config::DEFAULT_RATE_LIMIT_MAX_WAIT,
            per_page: 100,
            progress: ProgressMode::Auto,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A release as listed, reduced to what is used.
#[derive(Debug, Clone)]
struct RemoteRelease {
    tag: String,
    name: Option<String>,
    draft: bool,
    prerelease: bool,
    published_at: Option<String>,
    notes: Option<String>,
    assets: Vec<RemoteAsset>,
}

#[derive(Debug, Clone)]
struct RemoteAsset {
    id: u64,
    name: String,
    state: Option<String>,
    size: Option<u64>,
    digest: Option<String>,
    /// The API asset endpoint, as the listing gives it.
    url: Option<String>,
}

impl From<octocrab::models::repos::Release> for RemoteRelease {
    fn from(r: octocrab::models::repos::Release) -> Self {
        RemoteRelease {
            tag: r.tag_name,
            name: r.name,
            draft: r.draft,
            prerelease: r.prerelease,
            published_at: r
                .published_at
                .and_then(|t| jiff::Timestamp::from_second(t.timestamp()).ok())
                .map(|t| t.to_string()),
            notes: r.body,
            assets: r
                .assets
                .into_iter()
                .map(|a| RemoteAsset {
                    id: *a.id,
                    name: a.name,
                    state: Some(a.state),
                    size: u64::try_from(a.size).ok(),
                    digest: a.digest,
                    url: Some(a.url.to_string()),
                })
                .collect(),
        }
    }
}

/// `octocrab`'s model needs every field GitHub documents; this one only
/// what is used, so an answer from an older GitHub Enterprise (or a proxy
/// that trims fields) still works.
#[derive(serde::Deserialize)]
struct LenientRelease {
    tag_name: String,
    name: Option<String>,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    prerelease: bool,
    published_at: Option<String>,
    body: Option<String>,
    #[serde(default)]
    assets: Vec<LenientAsset>,
}

#[derive(serde::Deserialize)]
struct LenientAsset {
    id: u64,
    name: String,
    state: Option<String>,
    size: Option<u64>,
    digest: Option<String>,
    url: Option<String>,
}

impl From<LenientRelease> for RemoteRelease {
    fn from(r: LenientRelease) -> Self {
        RemoteRelease {
            tag: r.tag_name,
            name: r.name,
            draft: r.draft,
            prerelease: r.prerelease,
            published_at: r.published_at,
            notes: r.body,
            assets: r
                .assets
                .into_iter()
                .map(|a| RemoteAsset {
                    id: a.id,
                    name: a.name,
                    state: a.state,
                    size: a.size,
                    digest: a.digest,
                    url: a.url,
                })
                .collect(),
        }
    }
}

fn parse_release(v: serde_json::Value) -> Result<RemoteRelease, String> {
    match serde_json::from_value::<octocrab::models::repos::Release>(v.clone()) {
        Ok(r) => Ok(r.into()),
        Err(strict) => match serde_json::from_value::<LenientRelease>(v) {
            Ok(r) => {
                debug!(tag = %r.tag_name, "release read with the lenient model: {strict}");
                Ok(r.into())
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

/// A listing page as last seen, for conditional requests.
#[derive(Debug, Clone)]
struct CachedPage {
    etag: HeaderValue,
    body: Bytes,
    next: Option<Url>,
}

/// The connection side and the runtime it runs on. The runtime is owned
/// here (and by asset readers), never by tasks running on it: a runtime
/// must not be dropped from one of its own threads.
#[derive(Clone)]
struct Conn {
    client: Arc<Client>,
    /// `None` when the runtime was lent with [`GithubSource::with_runtime`].
    _runtime: Option<Arc<tokio::runtime::Runtime>>,
}

/// The connection side, created on first use and shared with asset readers.
struct Client {
    app: String,
    repo: String,
    api: Url,
    token: Option<Token>,
    opts: GithubOptions,
    handle: tokio::runtime::Handle,
    octo: octocrab::Octocrab,
    http: reqwest::Client,
    pages: Mutex<HashMap<String, CachedPage>>,
}

/// What one GET of the API asset endpoint is for.
struct AssetRef {
    name: String,
    url: Url,
    size: Option<u64>,
    tag: String,
    version: String,
}

enum Page {
    Fresh {
        body: Bytes,
        etag: Option<HeaderValue>,
        next: Option<Url>,
    },
    NotModified,
}

fn display_url(u: &Url) -> String {
    // Storage hosts put signatures in the query string: never show it.
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    for v in headers.get_all(LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut segs = part.split(';');
            let target = segs.next()?.trim();
            let is_next = segs.any(|s| {
                let s = s.trim();
                s == "rel=\"next\"" || s == "rel=next"
            });
            if is_next {
                let t = target.trim_start_matches('<').trim_end_matches('>');
                return base.join(t).ok();
            }
        }
    }
    None
}

/// An error with its causes ("client error (Connect): tcp connect error:
/// Connection refused"), which the top-level message alone does not say.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// A reqwest error without its URL: a storage URL's query string is a
/// short-lived credential.
fn req_chain(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// GitHub's error `message`, or the start of the body.
fn api_message(body: &str) -> String {
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

impl Client {
    fn connect(
        app: &str,
        cfg: &GithubSourceConfig,
        opts: &GithubOptions,
        lent: Option<tokio::runtime::Handle>,
    ) -> Result<Conn, GithubError> {
        let api_str = check_api_url(&cfg.api_url).map_err(|reason| GithubError::BadApiUrl {
            url: cfg.api_url.clone(),
            reason,
        })?;
        let api = Url::parse(&format!("{api_str}/")).map_err(|e| GithubError::BadApiUrl {
            url: cfg.api_url.clone(),
            reason: e.to_string(),
        })?;
        let token = load_token(cfg)?;
        // reqwest is built without a default crypto provider (ring only, no
        // aws-lc); it panics unless one is installed. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (handle, runtime) = match lent {
            Some(h) => (h, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("switchyard-github")
                    .enable_all()
                    .build()
                    .map_err(|e| GithubError::Setup {
                        reason: e.to_string(),
                    })?;
                (rt.handle().clone(), Some(Arc::new(rt)))
            }
        };
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GithubError::Setup {
                reason: e.to_string(),
            })?;
        // octocrab's client spawns its worker on the current runtime.
        let octo = {
            let _guard = handle.enter();
            let mut b = octocrab::Octocrab::builder()
                .base_uri(api_str.as_str())
                .map_err(|e| GithubError::BadApiUrl {
                    url: cfg.api_url.clone(),
                    reason: e.to_string(),
                })?
                .add_header(ACCEPT, "application/vnd.github+json".to_string())
                .add_header(
                    HeaderName::from_static("x-github-api-version"),
                    API_VERSION.to_string(),
                )
                .set_connect_timeout(Some(opts.connect_timeout))
                .set_read_timeout(Some(opts.read_timeout));
            if let Some(t) = &token {
                b = b.personal_token(t.0.clone());
            }
            b.build().map_err(|e| GithubError::Setup {
                reason: e.to_string(),
            })?
        };
        let client = Client {
            app: app.to_string(),
            repo: cfg.slug(),
            api,
            token,
            opts: opts.clone(),
            handle,
            octo,
            http,
            pages: Mutex::new(HashMap::new()),
        };
        Ok(Conn {
            client: Arc::new(client),
            _runtime: runtime,
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// Same scheme, host and port as `api_url`: the only place the token goes.
    fn same_origin(&self, u: &Url) -> bool {
        u.origin() == self.api.origin()
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_min_delay)
            .with_max_delay(self.opts.retry_max_delay)
            .with_max_times(self.opts.retries)
            .with_jitter()
    }

    /// Runs `f` with backoff on transient failures, and waits out one short
    /// rate limit.
    async fn retrying<T, F, Fut>(&self, step: &str, mut f: F) -> Result<T, GithubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GithubError>>,
    {
        let mut waited = false;
        loop {
            let mut retries = 0;
            let res = (&mut f)
                .retry(self.backoff())
                .when(GithubError::is_transient)
                .notify(|e: &GithubError, d: Duration| {
                    retries += 1;
                    warn!(app = %self.app, step, "{}; retry {retries} of {} in {} ms", e.cause(), self.opts.retries, d.as_millis());
                })
                .await;
            match res {
                Err(GithubError::RateLimited {
                    wait: Some(w),
                    resets_at,
                    ..
                }) if !waited && w <= self.opts.max_rate_limit_wait => {
                    warn!(
                        app = %self.app,
                        step,
                        resets_at = %resets_at.map(|t| t.to_string()).unwrap_or_default(),
                        "GitHub rate limit reached; waiting {} for the reset, then retrying once",
                        human_wait(w)
                    );
                    tokio::time::sleep(w).await;
                    waited = true;
                }
                Err(e) => return Err(e.with_attempts(retries)),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// Turns a failed answer into an error.
    fn classify(
        &self,
        what: &str,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> GithubError {
        let what = what.to_string();
        let shown = display_url(url);
        let message = api_message(body);
        if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
            let authenticated = self.token.is_some() && self.same_origin(url);
            let now = jiff::Timestamp::now();
            let retry_after = header_str(headers, RETRY_AFTER.as_str()).and_then(|v| {
                v.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
                    // The HTTP-date form.
                    jiff::fmt::rfc2822::parse(v)
                        .ok()
                        .map(|z| z.timestamp())
                        .map(|t| t.duration_since(now).unsigned_abs())
                })
            });
            let remaining = header_str(headers, "x-ratelimit-remaining");
            let reset = header_str(headers, "x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                // Some recordings keep milliseconds.
                .map(|r| if r > 100_000_000_000 { r / 1000 } else { r })
                .and_then(|r| jiff::Timestamp::from_second(r).ok());
            if let Some(w) = retry_after {
                return GithubError::RateLimited {
                    what,
                    resets_at: now.checked_add(w).ok(),
                    wait: Some(w),
                    authenticated,
                };
            }
            if remaining == Some("0") {
                if let Some(reset) = reset {
                    let until = reset.duration_since(now);
                    let w = if until.is_negative() {
                        RESET_MARGIN
                    } else {
                        until.unsigned_abs() + RESET_MARGIN
                    };
                    return GithubError::RateLimited {
                        what,
                        resets_at: Some(reset),
                        wait: Some(w),
                        authenticated,
                    };
                }
                return GithubError::RateLimited {
                    what,
                    resets_at: None,
                    wait: None,
                    authenticated,
                };
            }
            if status == StatusCode::TOO_MANY_REQUESTS
                || message.to_ascii_lowercase().contains("rate limit")
            {
                return GithubError::RateLimited {
                    what,
                    resets_at: None,
                    wait: None,
                    authenticated,
                };
            }
            return GithubError::Forbidden {
                what,
                url: shown,
                message,
            };
        }
        if status.is_server_error() {
            return GithubError::Server {
                what,
                url: shown,
                status: status.as_u16(),
                attempts: 0,
            };
        }
        match status {
            StatusCode::UNAUTHORIZED => GithubError::Unauthorized { what, message },
            StatusCode::NOT_FOUND => GithubError::NotFound {
                what,
                url: shown,
                hint: if self.token.is_some() {
                    format!(
                        "; check github = \"{}\" and that the token can read that repository",
                        self.repo
                    )
                } else {
                    format!(
                        "; check github = \"{}\"; a private repository answers 404 without a token: set token_env or token_file",
                        self.repo
                    )
                },
            },
            _ => GithubError::Http {
                what,
                url: shown,
                status: status.as_u16(),
                message,
            },
        }
    }

    /// The request target octocrab gets: a path on the API host, so that
    /// its base URI and token apply, never an absolute URL elsewhere.
    fn api_target(&self, url: &Url) -> Result<String, GithubError> {
        if !self.same_origin(url) {
            return Err(GithubError::BadAnswer {
                what: "list releases".into(),
                url: display_url(url),
                reason: format!(
                    "a pagination link leads away from {}",
                    self.api.origin().ascii_serialization()
                ),
            });
        }
        let mut t = url.path().to_string();
        if let Some(q) = url.query() {
            t.push('?');
            t.push_str(q);
        }
        Ok(t)
    }

    /// One GET of a listing page, conditional when it was seen before.
    async fn get_page(&self, url: &Url) -> Result<(Bytes, Option<Url>), GithubError> {
        let what = format!("list the releases of {}", self.repo);
        let cached = self
            .pages
            .lock()
            .ok()
            .and_then(|p| p.get(url.as_str()).cloned());
        let target = self.api_target(url)?;
        let page = self
            .retrying("list", || async {
                let mut h = HeaderMap::new();
                if let Some(c) = &cached {
                    h.insert(IF_NONE_MATCH, c.etag.clone());
                }
                let resp = self
                    .octo
                    ._get_with_headers(target.as_str(), Some(h))
                    .await
                    .map_err(|e| GithubError::Transport {
                        what: what.clone(),
                        url: display_url(url),
                        reason: error_chain(&e),
                        attempts: 0,
                    })?;
                let status = resp.status();
                let headers = resp.headers().clone();
                if status == StatusCode::NOT_MODIFIED && cached.is_some() {
                    return Ok(Page::NotModified);
                }
                let body =
                    self.octo
                        .body_to_string(resp)
                        .await
                        .map_err(|e| GithubError::Transport {
                            what: what.clone(),
                            url: display_url(url),
                            reason: error_chain(&e),
                            attempts: 0,
                        })?;
                if !status.is_success() {
                    return Err(self.classify(&what, url, status, &headers, &body));
                }
                Ok(Page::Fresh {
                    body: Bytes::from(body),
                    etag: headers.get(ETAG).cloned(),
                    next: next_link(&headers, url),
                })
            })
            .await?;
        match page {
            Page::NotModified => {
                let c = cached.expect("304 is only accepted with a cached page");
                debug!(app = %self.app, step = "list", url = %display_url(url), "unchanged (304); no rate limit spent");
                Ok((c.body, c.next))
            }
            Page::Fresh { body, etag, next } => {
                if let (Some(etag), Ok(mut pages)) = (etag, self.pages.lock()) {
                    pages.insert(
                        url.to_string(),
                        CachedPage {
                            etag,
                            body: body.clone(),
                            next: next.clone(),
                        },
                    );
                }
                Ok((body, next))
            }
        }
    }

    /// Every release, following `Link: rel="next"`.
    async fn list_releases(&self) -> Result<Vec<RemoteRelease>, GithubError> {
        let what = format!("list the releases of {}", self.repo);
        let mut url = self
            .api
            .join(&format!(
                "repos/{}/releases?per_page={}",
                self.repo, self.opts.per_page
            ))
            .map_err(|e| GithubError::BadApiUrl {
                url: self.api.to_string(),
                reason: e.to_string(),
            })?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            seen.insert(url.to_string());
            let (body, next) = self.get_page(&url).await?;
            let values: Vec<serde_json::Value> =
                serde_json::from_slice(&body).map_err(|e| GithubError::BadAnswer {
                    what: what.clone(),
                    url: display_url(&url),
                    reason: format!("not a JSON list of releases: {e}"),
                })?;
            for v in values {
                match parse_release(v) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        return Err(GithubError::BadAnswer {
                            what: what.clone(),
                            url: display_url(&url),
                            reason: format!("a release could not be read: {e}"),
                        });
                    }
                }
            }
            match next {
                Some(n) if !seen.contains(n.as_str()) => url = n,
                _ => return Ok(out),
            }
        }
        Err(GithubError::BadAnswer {
            what,
            url: display_url(&url),
            reason: format!("more than {MAX_PAGES} pages of releases"),
        })
    }

    /// GETs the asset endpoint with `Accept: application/octet-stream` and
    /// follows redirects by hand: the token goes only to the API's origin.
    async fn open_once(&self, asset: &AssetRef) -> Result<reqwest::Response, GithubError> {
        let what = format!("download {} of release {}", asset.name, asset.tag);
        let mut url = asset.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self
                .http
                .get(url.clone())
                .header(ACCEPT, "application/octet-stream")
                .header("x-github-api-version", API_VERSION);
            let with_token = self.same_origin(&url);
            if let (true, Some(t)) = (with_token, &self.token) {
                req = req.bearer_auth(&t.0);
            }
            let resp = req.send().await.map_err(|e| GithubError::Transport {
                what: what.clone(),
                url: display_url(&url),
                reason: req_chain(e),
                attempts: 0,
            })?;
            let status = resp.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| GithubError::BadAnswer {
                        what: what.clone(),
                        url: display_url(&url),
                        reason: format!("a {status} redirect without a usable Location"),
                    })?;
                if url.scheme() == "https" && next.scheme() != "https" {
                    return Err(GithubError::BadAnswer {
                        what: what.clone(),
                        url: display_url(&url),
                        reason: format!("a redirect from https down to {}", display_url(&next)),
                    });
                }
                debug!(
                    app = %self.app, version = %asset.version, step = "download",
                    to = %next.origin().ascii_serialization(),
                    token = self.same_origin(&next) && self.token.is_some(),
                    "following a redirect"
                );
                url = next;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.classify(&what, &url, status, &headers, &body));
        }
        Err(GithubError::BadAnswer {
            what,
            url: display_url(&asset.url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Opens the asset stream, retrying until the first byte is on its way.
    async fn open(&self, asset: &AssetRef) -> Result<reqwest::Response, GithubError> {
        self.retrying("download", || self.open_once(asset)).await
    }

    /// Downloads a small file whole, at most `limit` bytes.
    async fn download_small(&self, asset: &AssetRef, limit: u64) -> Result<Vec<u8>, GithubError> {
        let what = format!("download {} of release {}", asset.name, asset.tag);
        self.retrying("fetch", || async {
            let mut resp = self.open_once(asset).await?;
            let mut buf = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        buf.extend_from_slice(&c);
                        if buf.len() as u64 > limit {
                            return Err(GithubError::Refused {
                                tag: asset.tag.clone(),
                                reason: format!(
                                    "{} is larger than {} bytes, which no checksum or signature file is; remove it from the release",
                                    asset.name, limit
                                ),
                            });
                        }
                    }
                    Ok(None) => return Ok(buf),
                    Err(e) => {
                        return Err(GithubError::Transport {
                            what: what.clone(),
                            url: display_url(&asset.url),
                            reason: req_chain(e),
                            attempts: 0,
                        });
                    }
                }
            }
        })
        .await
    }
}

/// A GitHub repository's releases as a [`ReleaseSource`].
///
/// Keep one alive between polls: it remembers each listing page's `ETag`,
/// so an unchanged listing is answered `304` and costs no rate limit.
pub struct GithubSource {
    app: String,
    cfg: GithubSourceConfig,
    opts: GithubOptions,
    handle: Option<tokio::runtime::Handle>,
    conn: Mutex<Option<Conn>>,
    /// The last listing, by tag, for `fetch`.
    known: Mutex<BTreeMap<String, RemoteRelease>>,
    /// Tags already reported as unusable.
    ignored: Mutex<HashSet<String>>,
}

impl fmt::Debug for GithubSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds where the token is read from, never the token.
        f.debug_struct("GithubSource")
            .field("app", &self.app)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl GithubSource {
    /// A source for `app` reading `cfg`. Nothing is read or connected until
    /// first use: a missing token or an unreachable API is reported then.
    pub fn new(app: impl Into<String>, cfg: GithubSourceConfig) -> Self {
        let opts = GithubOptions {
            max_rate_limit_wait: cfg.rate_limit_max_wait,
            ..GithubOptions::default()
        };
        GithubSource {
            app: app.into(),
            cfg,
            opts,
            handle: None,
            conn: Mutex::new(None),
            known: Mutex::new(BTreeMap::new()),
            ignored: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the network tuning (before first use). Its
    /// `max_rate_limit_wait` replaces the config's `rate_limit_max_wait_secs`.
    pub fn with_options(mut self, opts: GithubOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Uses an existing tokio runtime instead of starting one. The methods
    /// still block: call them from `spawn_blocking` or a plain thread.
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// The configuration it reads.
    pub fn config(&self) -> &GithubSourceConfig {
        &self.cfg
    }

    /// The connection, set up on first use. A failed set-up (say, the token
    /// variable is missing) is not remembered: the next call tries again.
    fn conn(&self) -> Result<Conn, SourceError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.app, &self.cfg, &self.opts, self.handle.clone())
            .map_err(|e| self.err(e, ""))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn err(&self, e: GithubError, version: &str) -> SourceError {
        e.into_source(self.describe(), version)
    }

    fn refused(&self, tag: &str, reason: String) -> SourceError {
        self.err(
            GithubError::Refused {
                tag: tag.to_string(),
                reason,
            },
            tag,
        )
    }

    fn listing(&self) -> Result<Vec<RemoteRelease>, SourceError> {
        let c = self.conn()?.client;
        c.block_on(c.list_releases()).map_err(|e| self.err(e, ""))
    }

    fn known_release(&self, tag: &str) -> Option<RemoteRelease> {
        self.known.lock().ok().and_then(|k| k.get(tag).cloned())
    }

    fn asset_ref(
        &self,
        c: &Client,
        rel: &RemoteRelease,
        a: &RemoteAsset,
        version: &Version,
    ) -> Result<AssetRef, SourceError> {
        check_component("asset name", &a.name).map_err(|e| {
            self.refused(
                &rel.tag,
                format!("{e}; it cannot be written safely: rename the asset on GitHub"),
            )
        })?;
        if a.state.as_deref() != Some("uploaded") {
            return Err(self.refused(
                &rel.tag,
                format!(
                    "asset {} is in state {:?}, not \"uploaded\": its upload did not finish; re-upload it or wait for the upload to complete",
                    a.name,
                    a.state.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        // Use the endpoint the listing names when it is on the API host;
        // otherwise the documented one (the token never goes elsewhere).
        let listed = a
            .url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| c.same_origin(u));
        let url = match listed {
            Some(u) => u,
            None => c
                .api
                .join(&format!("repos/{}/releases/assets/{}", c.repo, a.id))
                .map_err(|e| {
                    self.err(
                        GithubError::BadApiUrl {
                            url: self.cfg.api_url.clone(),
                            reason: e.to_string(),
                        },
                        &rel.tag,
                    )
                })?,
        };
        Ok(AssetRef {
            name: a.name.clone(),
            url,
            size: a.size,
            tag: rel.tag.clone(),
            version: version.to_string(),
        })
    }
}

/// Picks the asset the configured pattern names.
fn select_asset<'r>(
    pattern: &str,
    rel: &'r RemoteRelease,
    version: &Version,
) -> Result<&'r RemoteAsset, GithubError> {
    let rendered = render_asset(pattern, &rel.tag, &version.to_string());
    let names = || {
        rel.assets
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    };
    if has_wildcard(&rendered) {
        let matches: Vec<&RemoteAsset> = rel
            .assets
            .iter()
            .filter(|a| a.name.ends_with(".tar.gz") && glob_match(&rendered, &a.name))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(GithubError::AssetNotFound {
                tag: rel.tag.clone(),
                pattern: rendered,
                assets: names(),
            }),
            many => Err(GithubError::AmbiguousAsset {
                tag: rel.tag.clone(),
                pattern: rendered,
                matches: many.iter().map(|a| a.name.clone()).collect(),
            }),
        }
    } else {
        rel.assets
            .iter()
            .find(|a| a.name == rendered)
            .ok_or_else(|| GithubError::AssetNotFound {
                tag: rel.tag.clone(),
                pattern: rendered,
                assets: names(),
            })
    }
}

impl ReleaseSource for GithubSource {
    fn is_remote(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "GitHub repository {} at {}",
            self.cfg.slug(),
            self.cfg.api_url
        )
    }

    fn releases(&self) -> Result<Vec<ReleaseInfo>, SourceError> {
        let list = self.listing()?;
        let mut out = Vec::new();
        let mut known = BTreeMap::new();
        for r in list {
            if r.draft {
                debug!(app = %self.app, step = "list", tag = %r.tag, "skipping a draft release");
                continue;
            }
            let version = match Version::parse(&r.tag) {
                Ok(v) => v,
                Err(e) => {
                    // Once per tag and source: an agent polls the same listing.
                    let first = self
                        .ignored
                        .lock()
                        .map(|mut s| s.insert(r.tag.clone()))
                        .unwrap_or(true);
                    if first {
                        warn!(app = %self.app, step = "list", tag = %r.tag, "ignoring release {:?}: {e}", r.tag);
                    }
                    continue;
                }
            };
            out.push(ReleaseInfo {
                prerelease: r.prerelease || version.is_prerelease(),
                version,
                tag: r.tag.clone(),
                published_at: r.published_at.clone(),
                notes: r.notes.clone().filter(|n| !n.trim().is_empty()),
            });
            known.insert(r.tag.clone(), r);
        }
        if let Ok(mut k) = self.known.lock() {
            *k = known;
        }
        Ok(out)
    }

    /// `latest` is the highest version by semver among the releases the
    /// app's channel allows (prereleases too when `include_prereleases` or
    /// `channel = "prerelease"`). An exact version may name a prerelease on
    /// any channel: the operator asked for it.
    fn resolve(
        &self,
        req: &VersionRequest,
        include_prereleases: bool,
    ) -> Result<ReleaseInfo, SourceError> {
        let include = include_prereleases || self.cfg.channel == Channel::Prerelease;
        let all = self.releases()?;
        let chosen = match req {
            VersionRequest::Exact(v) => all.iter().filter(|r| &r.version == v).collect::<Vec<_>>(),
            VersionRequest::Latest => {
                let max = all
                    .iter()
                    .filter(|r| include || !r.prerelease)
                    .map(|r| &r.version)
                    .max();
                all.iter().filter(|r| Some(&r.version) == max).collect()
            }
        };
        match chosen.as_slice() {
            [one] => {
                info!(app = %self.app, step = "resolve", version = %one.version, tag = %one.tag, "chose release");
                Ok((*one).clone())
            }
            [] => Err(SourceError::NotFound {
                what: match req {
                    VersionRequest::Exact(v) => format!("release {v}"),
                    VersionRequest::Latest if include => "a release".to_string(),
                    VersionRequest::Latest => "a stable release".to_string(),
                },
                source_desc: self.describe(),
            }),
            many => Err(SourceError::Malformed {
                version: many[0].version.to_string(),
                source_desc: self.describe(),
                reason: format!(
                    "the tags {} all name this version; delete all but one of those releases",
                    many.iter()
                        .map(|r| r.tag.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    fn fetch(&self, info: &ReleaseInfo) -> Result<FetchedRelease, SourceError> {
        let conn = self.conn()?;
        let c = conn.client.clone();
        let rel = match self.known_release(&info.tag) {
            Some(r) => r,
            None => {
                self.releases()?;
                self.known_release(&info.tag).ok_or_else(|| {
                    self.err(
                        GithubError::UnknownRelease {
                            tag: info.tag.clone(),
                            repo: self.cfg.slug(),
                        },
                        &info.tag,
                    )
                })?
            }
        };
        let tag = rel.tag.clone();
        check_component("release tag", &tag)
            .map_err(|e| self.refused(&tag, format!("{e}; retag the release")))?;
        if let Some(name) = rel.name.as_deref().filter(|n| !n.is_empty()) {
            check_component("release name", name)
                .map_err(|e| self.refused(&tag, format!("{e}; rename the release on GitHub")))?;
        }
        if rel.draft {
            return Err(self.refused(&tag, "it is a draft; publish it first".into()));
        }
        let asset =
            select_asset(&self.cfg.asset, &rel, &info.version).map_err(|e| self.err(e, &tag))?;
        let main = self.asset_ref(&c, &rel, asset, &info.version)?;
        if !main.name.ends_with(".tar.gz") {
            return Err(self.refused(
                &tag,
                format!(
                    "asset {} is not a .tar.gz; set `asset` to the release's .tar.gz",
                    main.name
                ),
            ));
        }
        let asset_digest = match asset.digest.as_deref() {
            None => None,
            Some(d) => parse_digest(d).map_err(|e| {
                self.refused(
                    &tag,
                    format!("asset {}: {e}; the API answer is damaged", main.name),
                )
            })?,
        };

        // Sidecars are small and read whole, before the asset, so the install
        // can check the checksum list and signatures first.
        let mut sidecars = BTreeMap::new();
        let wanted = [
            format!("{}.minisig", main.name),
            SUMS_NAME.to_string(),
            format!("{SUMS_NAME}.minisig"),
            "release.toml".to_string(),
        ];
        for name in wanted {
            let Some(a) = rel.assets.iter().find(|a| a.name == name) else {
                continue;
            };
            let r = self.asset_ref(&c, &rel, a, &info.version)?;
            if a.size.is_some_and(|s| s > MAX_SIDECAR_BYTES) {
                return Err(self.refused(
                    &tag,
                    format!("{name} is larger than 1 MiB, which no checksum or signature file is; remove it from the release"),
                ));
            }
            debug!(app = %self.app, version = %info.version, step = "fetch", file = %name, "downloading sidecar");
            let bytes = c
                .block_on(c.download_small(&r, MAX_SIDECAR_BYTES))
                .map_err(|e| self.err(e, &tag))?;
            if let Some(d) = a.digest.as_deref() {
                let expected = parse_digest(d).map_err(|e| {
                    self.refused(
                        &tag,
                        format!("asset {name}: {e}; the API answer is damaged"),
                    )
                })?;
                if let Some(exp) = expected {
                    let got: [u8; 32] = {
                        use sha2::Digest;
                        sha2::Sha256::digest(&bytes).into()
                    };
                    if got != exp {
                        return Err(self.refused(
                            &tag,
                            format!(
                                "{name} does not match the digest GitHub lists for it (expected sha256:{}, got sha256:{}): it was altered on the way; nothing was installed",
                                hex::encode(exp),
                                hex::encode(got)
                            ),
                        ));
                    }
                }
            }
            sidecars.insert(name, bytes);
        }
        info!(app = %self.app, version = %info.version, step = "fetch", asset = %main.name, sidecars = sidecars.len(), "release opened; the asset streams on first read");
        let asset_size = main.size;
        Ok(FetchedRelease {
            info: info.clone(),
            asset_name: main.name.clone(),
            asset_size,
            asset: Box::new(AssetReader {
                conn,
                asset: Some(main),
                rx: None,
                buf: Bytes::new(),
                failed: None,
                done: false,
                progress: None,
            }),
            sidecars,
            asset_digest,
        })
    }
}

enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// The asset as a lazy `Read`: the download starts on the first `read`, in
/// a task on the source's runtime, and hands chunks over a bounded channel.
/// Dropped unread, it never touches the network.
struct AssetReader {
    /// Keeps the runtime alive while the asset streams.
    conn: Conn,
    /// Taken when the download starts.
    asset: Option<AssetRef>,
    rx: Option<mpsc::Receiver<Chunk>>,
    buf: Bytes,
    failed: Option<String>,
    done: bool,
    progress: Option<Progress>,
}

impl AssetReader {
    fn start(&mut self) {
        let Some(asset) = self.asset.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        self.progress = Some(Progress::new(&self.conn.client, &asset));
        let client = self.conn.client.clone();
        self.conn.client.handle.spawn(async move {
            let mut resp = match client.open(&asset).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Chunk::Failed(e.to_string())).await;
                    return;
                }
            };
            loop {
                match resp.chunk().await {
                    Ok(Some(b)) => {
                        if tx.send(Chunk::Data(b)).await.is_err() {
                            debug!(app = %client.app, version = %asset.version, step = "download", "reader dropped; download stopped");
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Chunk::End).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Chunk::Failed(format!(
                                "the download of {} broke off: {}; run the command again",
                                asset.name,
                                req_chain(e)
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        self.rx = Some(rx);
    }
}

impl Read for AssetReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf.split_to(n));
                return Ok(n);
            }
            if let Some(f) = &self.failed {
                return Err(io::Error::other(f.clone()));
            }
            if self.done {
                return Ok(0);
            }
            if self.rx.is_none() {
                self.start();
            }
            let msg = match self.rx.as_mut() {
                Some(rx) => rx.blocking_recv(),
                None => None,
            };
            match msg {
                Some(Chunk::Data(b)) => {
                    if let Some(p) = &mut self.progress {
                        p.advance(b.len() as u64);
                    }
                    self.buf = b;
                }
                Some(Chunk::End) => {
                    self.done = true;
                    if let Some(p) = &mut self.progress {
                        p.finish();
                    }
                }
                Some(Chunk::Failed(e)) => {
                    if let Some(p) = &mut self.progress {
                        p.abandon();
                    }
                    self.failed = Some(e);
                }
                None => {
                    self.failed =
                        Some("the download stopped unexpectedly (its runtime shut down); run the command again".into());
                }
            }
        }
    }
}

/// Download progress: a bar on a terminal, log lines otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines {
        app: String,
        version: String,
        name: String,
        total: Option<u64>,
        done: u64,
        next_report: u64,
        started: Instant,
    },
}

impl Progress {
    fn new(c: &Client, a: &AssetRef) -> Progress {
        let tty = c.opts.progress == ProgressMode::Auto && io::stderr().is_terminal();
        if tty {
            let bar = match a.size {
                Some(n) => indicatif::ProgressBar::with_draw_target(
                    Some(n),
                    indicatif::ProgressDrawTarget::stderr(),
                )
                .with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stderr(),
                )
                .with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            bar.set_message(a.name.clone());
            return Progress::Bar(bar);
        }
        info!(app = %c.app, version = %a.version, step = "download", asset = %a.name,
            bytes = a.size.unwrap_or(0), "downloading");
        Progress::Lines {
            app: c.app.clone(),
            version: a.version.clone(),
            name: a.name.clone(),
            total: a.size,
            done: 0,
            next_report: Self::step(a.size),
            started: Instant::now(),
        }
    }

    /// Report every tenth of the asset, or every 64 MiB when the size is unknown.
    fn step(total: Option<u64>) -> u64 {
        total.map(|t| (t / 10).max(1)).unwrap_or(64 << 20)
    }

    fn advance(&mut self, n: u64) {
        match self {
            Progress::Bar(b) => b.inc(n),
            Progress::Lines {
                app,
                version,
                name,
                total,
                done,
                next_report,
                started,
            } => {
                *done += n;
                if *done >= *next_report && total.is_none_or(|t| *done < t) {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let rate = (*done as f64 / secs) as u64;
                    let of = total
                        .map(|t| {
                            format!(
                                " of {} ({}%)",
                                indicatif::HumanBytes(t),
                                *done * 100 / t.max(1)
                            )
                        })
                        .unwrap_or_default();
                    let eta = total
                        .filter(|_| rate > 0)
                        .map(|t| {
                            format!(", about {} s left", (t.saturating_sub(*done)) / rate.max(1))
                        })
                        .unwrap_or_default();
                    info!(app = %app, version = %version, step = "download", asset = %name,
                        "downloaded {}{of} at {}/s{eta}", indicatif::HumanBytes(*done), indicatif::HumanBytes(rate));
                    *next_report = *done + Self::step(*total);
                }
            }
        }
    }

    fn finish(&mut self) {
        match self {
            Progress::Bar(b) => b.finish(),
            Progress::Lines {
                app,
                version,
                name,
                done,
                started,
                ..
            } => {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(app = %app, version = %version, step = "download", asset = %name,
                    bytes = *done, "downloaded {} in {:.1} s ({}/s)",
                    indicatif::HumanBytes(*done), secs, indicatif::HumanBytes((*done as f64 / secs) as u64));
            }
        }
    }

    fn abandon(&mut self) {
        if let Progress::Bar(b) = self {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("*.tar.gz", "web-1.0.0.tar.gz"));
        assert!(glob_match(
            "web-?.?.?-*.tar.gz",
            "web-1.0.0-x86_64-linux.tar.gz"
        ));
        assert!(!glob_match("*.tar.gz", "web-1.0.0.tar.gz.minisig"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b", "aXbY"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn asset_patterns_are_checked() {
        assert!(check_asset_pattern("myapp-{version}-{target}.tar.gz").is_ok());
        assert!(check_asset_pattern("*.tar.gz").is_ok());
        assert!(check_asset_pattern("myapp-{tag}-*").is_ok());
        assert!(
            check_asset_pattern("myapp-{ver}.tar.gz")
                .unwrap_err()
                .contains("{ver}")
        );
        assert!(check_asset_pattern("../x.tar.gz").is_err());
        assert!(check_asset_pattern("dist/x.tar.gz").is_err());
        assert!(
            check_asset_pattern("x.zip")
                .unwrap_err()
                .contains(".tar.gz")
        );
        assert!(check_asset_pattern("x-{version.tar.gz").is_err());
        assert_eq!(
            render_asset("a-{version}-{tag}-{target}.tar.gz", "v1.2.3", "1.2.3"),
            format!("a-1.2.3-v1.2.3-{}.tar.gz", target())
        );
    }

    #[test]
    fn digests_and_links_parse() {
        let d = "sha256:2151b604e3429bff440b9fbc03eb3617bc2603cda96c95b9bb05277f9ddba255";
        assert_eq!(parse_digest(d).unwrap().unwrap()[0], 0x21);
        assert_eq!(parse_digest("sha512:abcd").unwrap(), None);
        assert!(parse_digest("sha256:zz").is_err());
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1000/releases?per_page=3&page=1>; rel=\"prev\", <https://api.github.com/repositories/1000/releases?per_page=3&page=3>; rel=\"next\", <https://api.github.com/repositories/1000/releases?per_page=3&page=5>; rel=\"last\"",
            ),
        );
        let base = Url::parse("https://api.github.com/repos/a/b/releases").unwrap();
        assert_eq!(
            next_link(&h, &base).unwrap().as_str(),
            "https://api.github.com/repositories/1000/releases?per_page=3&page=3"
        );
    }

    #[test]
    fn tokens_never_show_in_debug() {
        let t = Token("ghp_secret".into());
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn api_urls_are_checked() {
        assert_eq!(
            check_api_url("https://ghe.example/api/v3/").unwrap(),
            "https://ghe.example/api/v3"
        );
        assert!(check_api_url("ftp://x").is_err());
        assert!(check_api_url("https://user:pw@x").is_err());
        assert!(check_api_url("not a url").is_err());
    }
}
