//! The agent's HTTP server: GitHub webhooks (`POST /hooks/github`),
//! Prometheus metrics (`GET /metrics`) and its own liveness (`GET /healthz`);
//! every other request gets 404.
//!
//! Nothing here controls a deploy. A verified `release` delivery only sends a
//! [`Trigger::Webhook`] hint: the app task then reads the release through the
//! API and runs the usual lifecycle (verification included), so a forged or
//! replayed payload can at most cause one more check. Deploy control is the
//! unix socket, elsewhere.
//!
//! A delivery is refused as early as possible, cheapest test first: no secret
//! configured → 404; a declared `Content-Length` over [`MAX_BODY_BYTES`] → 413
//! before a byte is read; a body growing past it → 413; a body still
//! incomplete after [`BODY_READ_TIMEOUT`] → 408; a missing or wrong
//! `X-Hub-Signature-256` → 401, before anything in the request is parsed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ring::hmac;
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::daemon::Trigger;

/// The largest webhook body accepted. GitHub allows up to 25 MB, but a
/// `release` payload is a few KiB; reading more would only help an
/// unauthenticated client make the agent buffer memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a webhook body may take to arrive. GitHub sends it at once; a
/// client trickling it would otherwise hold a connection and up to
/// [`MAX_BODY_BYTES`] of memory for as long as it likes. (Shortened in unit
/// tests, which wait for it.)
pub const BODY_READ_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(30)
};

/// How many acted-on delivery ids are remembered to drop redeliveries: a
/// bound on memory (a few hundred KiB) far above any real delivery rate.
pub const DEDUP_CAPACITY: usize = 10_000;

/// `Content-Type` of `GET /metrics`: the Prometheus text format 0.0.4, in
/// UTF-8 because app names and versions in label values may not be ASCII.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// GitHub's ids are 36-character GUIDs; anything much longer is not GitHub,
/// and would make the dedup set's memory bound depend on the sender.
const MAX_DELIVERY_ID_BYTES: usize = 128;

const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const EVENT_HEADER: &str = "x-github-event";
const DELIVERY_HEADER: &str = "x-github-delivery";

/// Upper bounds, in seconds, of the health-check latency histogram: checks
/// answer in milliseconds when healthy and hit their timeouts (seconds) when
/// not, so the buckets span both.
const HEALTH_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Webhook outcomes exported at 0 from the start, so that `rate()` and
/// `increase()` see the first delivery of each kind.
const WEBHOOK_OUTCOMES: [&str; 7] = [
    "accepted",
    "bad_request",
    "duplicate",
    "ignored",
    "ping",
    "too_large",
    "unauthorized",
];

/// Which apps watch which repository, and the secret; replaced on SIGHUP.
///
/// `Debug` is written by hand so that logging a configuration never prints
/// the secret.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// The webhook's shared secret. `None` or empty disables the endpoint
    /// (404): an unsigned delivery is never accepted.
    pub secret: Option<Vec<u8>>,
    /// Lowercased `"owner/repo"` → the apps watching it, with whether each
    /// is on the prerelease channel.
    pub repos: HashMap<String, Vec<WatchingApp>>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("repos", &self.repos)
            .finish()
    }
}

/// An app watching a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchingApp {
    /// The app's name, as in the configuration.
    pub app: String,
    /// Whether the app follows prereleases: only such apps are told about a
    /// release GitHub marks as a prerelease.
    pub prerelease: bool,
}

/// The configuration in force, prepared once per reload.
struct Active {
    /// `None`: webhooks are disabled.
    key: Option<hmac::Key>,
    /// Keys lowercased here too, so a hand-built configuration with
    /// `Owner/Repo` does not silently never match.
    repos: HashMap<String, Vec<WatchingApp>>,
}

impl Active {
    fn new(cfg: WebhookConfig) -> Active {
        if cfg.secret.as_ref().is_some_and(|s| s.is_empty()) {
            // Anyone can compute an HMAC under an empty key.
            warn!("the webhook secret is empty; webhooks stay disabled");
        }
        let key = cfg
            .secret
            .filter(|s| !s.is_empty())
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, &s));
        let mut repos: HashMap<String, Vec<WatchingApp>> = HashMap::new();
        for (repo, apps) in cfg.repos {
            repos
                .entry(repo.to_ascii_lowercase())
                .or_default()
                .extend(apps);
        }
        Active { key, repos }
    }
}

/// Delivery ids already acted on, oldest out first.
struct Dedup {
    order: VecDeque<Arc<str>>,
    ids: HashSet<Arc<str>>,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize) -> Dedup {
        Dedup {
            order: VecDeque::new(),
            ids: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(Arc::clone(&id));
        self.ids.insert(id);
        true
    }
}

/// What the HTTP server shares between requests: the webhook configuration,
/// the trigger channel to the app tasks, the metrics, and the delivery ids
/// already acted on.
pub struct HttpState {
    active: RwLock<Arc<Active>>,
    triggers: UnboundedSender<Trigger>,
    metrics: Arc<Metrics>,
    seen: Mutex<Dedup>,
}

impl HttpState {
    /// Server state sending webhook hints to `triggers` and serving
    /// `metrics`.
    pub fn new(
        cfg: WebhookConfig,
        triggers: UnboundedSender<Trigger>,
        metrics: Arc<Metrics>,
    ) -> Arc<HttpState> {
        Arc::new(HttpState {
            active: RwLock::new(Arc::new(Active::new(cfg))),
            triggers,
            metrics,
            seen: Mutex::new(Dedup::new(DEDUP_CAPACITY)),
        })
    }

    /// Puts a new configuration in force (on SIGHUP). A delivery being
    /// handled finishes under the configuration it started with. The
    /// remembered delivery ids are kept: a reload must not reopen the door
    /// to a replay.
    pub fn reload(&self, cfg: WebhookConfig) {
        let active = Arc::new(Active::new(cfg));
        info!(
            webhooks = if active.key.is_some() {
                "enabled"
            } else {
                "disabled"
            },
            repos = active.repos.len(),
            "webhook configuration reloaded"
        );
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = active;
    }

    fn active(&self) -> Arc<Active> {
        Arc::clone(&self.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn seen(&self) -> MutexGuard<'_, Dedup> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(&self, headers: &HeaderMap, body: Body) -> Result<Handled, WebhookError> {
        // One snapshot per delivery, so a reload halfway cannot mix two
        // configurations.
        let active = self.active();
        let Some(key) = active.key.as_ref() else {
            return Err(WebhookError::Disabled);
        };
        if declared_length(headers).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(WebhookError::TooLarge);
        }
        let body = tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(body, MAX_BODY_BYTES))
            .await
            .map_err(|_| WebhookError::Timeout)??;
        verify_signature(key, headers, &body)?;

        // Authenticated from here on: the sender holds the secret.
        match header_str(headers, EVENT_HEADER) {
            None => return Err(WebhookError::BadRequest("missing X-GitHub-Event".into())),
            Some("ping") => return Ok(Handled::Ping),
            Some("release") => {}
            Some(other) => {
                return Ok(Handled::Ignored(format!("event {other:?} is not acted on")));
            }
        }
        let delivery = delivery_id(headers)?;
        let event = parse_release(headers, &body)?;
        let prerelease = event
            .release
            .as_ref()
            .and_then(|r| r.prerelease)
            .unwrap_or(false);
        let prerelease_only = match event.action.as_str() {
            // GitHub sends `published` for a prerelease too, next to
            // `prereleased`: a stable-channel app has nothing to check then.
            "published" => prerelease,
            "prereleased" => true,
            other => {
                return Ok(Handled::Ignored(format!(
                    "release action {other:?} is not acted on"
                )));
            }
        };
        let Some(repository) = event.repository else {
            return Err(WebhookError::BadRequest(
                "release event without a repository".into(),
            ));
        };
        let repo = repository.full_name.to_ascii_lowercase();
        let Some(watchers) = active.repos.get(&repo) else {
            return Ok(Handled::Ignored(format!(
                "repository {repo:?} is not watched"
            )));
        };
        let mut apps: Vec<&str> = Vec::new();
        for w in watchers {
            if (w.prerelease || !prerelease_only) && !apps.contains(&w.app.as_str()) {
                apps.push(&w.app);
            }
        }
        if apps.is_empty() {
            return Ok(Handled::Ignored(format!(
                "a prerelease, and no app on the prerelease channel watches {repo:?}"
            )));
        }
        // Checked and recorded in one step, and only for a delivery that is
        // acted on: two copies arriving together cannot both pass, and a
        // delivery ignored earlier (say, before a reload added its
        // repository) still works when GitHub redelivers it with its id.
        if !self.seen().insert(delivery) {
            return Ok(Handled::Duplicate);
        }
        let tag = event.release.and_then(|r| r.tag_name);
        for app in &apps {
            let trigger = Trigger::Webhook {
                app: (*app).to_owned(),
                delivery: delivery.to_owned(),
                tag: tag.clone(),
            };
            if self.triggers.send(trigger).is_err() {
                return Err(WebhookError::Unavailable);
            }
            info!(
                app,
                delivery,
                tag = tag.as_deref().unwrap_or(""),
                outcome = "accepted",
                "webhook: the app will check its releases"
            );
        }
        Ok(Handled::Accepted { apps: apps.len() })
    }
}

/// What became of a delivery that was not refused.
enum Handled {
    Ping,
    Accepted { apps: usize },
    Duplicate,
    Ignored(String),
}

/// Why a delivery was refused; each maps to a status and a metric outcome.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("webhooks are disabled: no secret is configured")]
    Disabled,
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body did not arrive within {BODY_READ_TIMEOUT:?}")]
    Timeout,
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the agent is shutting down; redeliver later")]
    Unavailable,
}

impl WebhookError {
    fn status(&self) -> StatusCode {
        match self {
            WebhookError::Disabled => StatusCode::NOT_FOUND,
            WebhookError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Timeout => StatusCode::REQUEST_TIMEOUT,
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            WebhookError::Disabled => "disabled",
            WebhookError::TooLarge => "too_large",
            WebhookError::Timeout => "timeout",
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::BadRequest(_) => "bad_request",
            WebhookError::Unavailable => "unavailable",
        }
    }
}

/// The shape of a `release` payload, as far as it matters here; unknown
/// fields are ignored.
#[derive(Deserialize)]
struct ReleaseEvent {
    action: String,
    release: Option<ReleaseBody>,
    repository: Option<RepositoryBody>,
}

#[derive(Deserialize)]
struct ReleaseBody {
    tag_name: Option<String>,
    prerelease: Option<bool>,
}

#[derive(Deserialize)]
struct RepositoryBody {
    full_name: String,
}

/// A header as text; `None` when absent or not visible ASCII (which also
/// makes it safe to log: it cannot forge a log line).
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// A sender-controlled value shortened for a log line.
fn for_log(s: &str) -> &str {
    // Only ever called on `header_str` output, which is ASCII, so byte 64
    // is a char boundary: `get` is `None` only for a shorter string.
    s.get(..64).unwrap_or(s)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH.as_str())?
        .trim()
        .parse()
        .ok()
}

/// Reads the body, refusing it as soon as it grows past `limit`: a chunked
/// body declares no length up front.
async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, WebhookError> {
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| WebhookError::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > limit - buf.len() {
                return Err(WebhookError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

fn verify_signature(key: &hmac::Key, headers: &HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let Some(value) = values.next() else {
        return Err(WebhookError::Unauthorized("missing X-Hub-Signature-256"));
    };
    if values.next().is_some() {
        // Which one would a proxy in front have checked? Refuse to guess.
        return Err(WebhookError::Unauthorized(
            "several X-Hub-Signature-256 headers",
        ));
    }
    let hex_tag = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .ok_or(WebhookError::Unauthorized(
            "the signature is not sha256=<hex>",
        ))?;
    let tag = hex::decode(hex_tag)
        .map_err(|_| WebhookError::Unauthorized("the signature is not sha256=<hex>"))?;
    // ring compares in constant time, so timing tells nothing about the
    // expected tag.
    hmac::verify(key, body, &tag)
        .map_err(|_| WebhookError::Unauthorized("the signature does not match"))
}

fn delivery_id(headers: &HeaderMap) -> Result<&str, WebhookError> {
    let id = header_str(headers, DELIVERY_HEADER)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| WebhookError::BadRequest("missing X-GitHub-Delivery".into()))?;
    if id.len() > MAX_DELIVERY_ID_BYTES {
        return Err(WebhookError::BadRequest(
            "X-GitHub-Delivery is too long".into(),
        ));
    }
    Ok(id)
}

fn parse_release(headers: &HeaderMap, body: &[u8]) -> Result<ReleaseEvent, WebhookError> {
    let form = header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if form {
        return Err(WebhookError::BadRequest(
            "form-encoded deliveries are not supported: set the webhook's content type to \
             application/json"
                .into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("not a release event payload: {e}")))
}

/// Computes the `X-Hub-Signature-256` value GitHub sends for `body`
/// (`sha256=<lowercase hex>`), for tests and tools.
pub fn sign_payload(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// The agent's HTTP routes; everything else (other paths, other methods) is
/// 404.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/hooks/github", post(github_webhook))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        // A 405 would tell a scanner which paths exist; nothing needs it.
        .method_not_allowed_fallback(not_found)
        .fallback(not_found)
        .with_state(state)
}

async fn github_webhook(State(state): State<Arc<HttpState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let delivery = for_log(header_str(headers, DELIVERY_HEADER).unwrap_or(""));
    let event = for_log(header_str(headers, EVENT_HEADER).unwrap_or(""));
    let result = state.handle(headers, body).await;
    let (status, outcome, message) = match result {
        Ok(Handled::Ping) => (StatusCode::OK, "ping", "pong".to_owned()),
        Ok(Handled::Accepted { apps }) => (
            StatusCode::ACCEPTED,
            "accepted",
            format!("accepted: {apps} app(s) will check for the release"),
        ),
        Ok(Handled::Duplicate) => (
            StatusCode::ACCEPTED,
            "duplicate",
            "duplicate: this delivery was already acted on".to_owned(),
        ),
        Ok(Handled::Ignored(reason)) => (
            StatusCode::ACCEPTED,
            "ignored",
            format!("ignored: {reason}"),
        ),
        Err(e) => (e.status(), e.outcome(), e.to_string()),
    };
    state.metrics.webhook(outcome);
    // `message` quotes every string taken from the request with `{:?}`, so
    // logging it with `%` cannot break a log line either.
    match outcome {
        // A probe, or a secret or proxy set up wrong: either way an
        // operator needs to see it.
        "unauthorized" | "too_large" | "timeout" | "bad_request" | "disabled" | "unavailable" => {
            warn!(delivery, event, outcome, status = status.as_u16(), reason = %message, "webhook refused");
        }
        // The per-app lines were logged when the triggers were sent.
        "accepted" => {}
        _ => info!(delivery, event, outcome, reason = %message, "webhook"),
    }
    (status, message + "\n").into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

// The text encoder is written here rather than taken from `prometheus-client`:
// that crate encodes OpenMetrics (an `info` type, `# EOF`, counters typed
// without their `_total`), which does not match the 0.0.4 format asked for,
// and seven families with a few labels each are less code to encode than to
// register.

/// Thread-safe metrics the agent updates (all methods take `&self`) and
/// `GET /metrics` renders.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
}

/// Sorted maps, so the output is stable from one scrape to the next.
#[derive(Debug, Default)]
struct MetricsInner {
    app_info: BTreeMap<String, String>,
    deploys: BTreeMap<(String, String), u64>,
    reverts: BTreeMap<String, u64>,
    last_deploy: BTreeMap<String, f64>,
    versions_behind: BTreeMap<String, u64>,
    health: BTreeMap<(String, String), Histogram>,
    webhooks: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket of [`HEALTH_BUCKETS`] (not cumulative); those
    /// above the last bound are only in `count`.
    buckets: [u64; HEALTH_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Metrics {
    /// Empty metrics, with every webhook outcome at 0.
    pub fn new() -> Metrics {
        let mut inner = MetricsInner::default();
        for outcome in WEBHOOK_OUTCOMES {
            inner.webhooks.insert(outcome.to_owned(), 0);
        }
        Metrics {
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MetricsInner> {
        // Every update leaves the maps consistent, so a panic elsewhere
        // while holding the lock cannot have left half a change.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the version live for `app` (`None`: nothing is live), replacing
    /// its `switchyard_app_info` series.
    pub fn set_current_version(&self, app: &str, version: Option<&str>) {
        let mut m = self.lock();
        match version {
            Some(v) => {
                m.app_info.insert(app.to_owned(), v.to_owned());
            }
            None => {
                m.app_info.remove(app);
            }
        }
    }

    /// Counts a finished deploy of `app` by its outcome (`completed`,
    /// `failed`, `rolled_back`, `precheck_failed`, ...).
    pub fn deploy_outcome(&self, app: &str, outcome: &str) {
        *self
            .lock()
            .deploys
            .entry((app.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// Counts a revert of `app`.
    pub fn revert(&self, app: &str) {
        *self.lock().reverts.entry(app.to_owned()).or_default() += 1;
    }

    /// Records when `app`'s last deploy finished, in Unix seconds.
    pub fn set_last_deploy(&self, app: &str, unix_seconds: f64) {
        self.lock().last_deploy.insert(app.to_owned(), unix_seconds);
    }

    /// Records how many releases newer than the live one are available.
    pub fn set_versions_behind(&self, app: &str, n: u64) {
        self.lock().versions_behind.insert(app.to_owned(), n);
    }

    /// Records how long a health-check round of `app` took, in `phase`
    /// (`staging`, `live`). A NaN or infinite duration is dropped: it would
    /// poison the sum forever.
    pub fn observe_health(&self, app: &str, phase: &str, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let seconds = seconds.max(0.0);
        let mut m = self.lock();
        let h = m
            .health
            .entry((app.to_owned(), phase.to_owned()))
            .or_default();
        if let Some(i) = HEALTH_BUCKETS.iter().position(|&le| seconds <= le) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Counts a webhook delivery by outcome (`accepted`, `duplicate`,
    /// `ignored`, `unauthorized`, `too_large`, `bad_request`, `ping`; also
    /// `timeout`, `disabled` and `unavailable`).
    pub fn webhook(&self, outcome: &str) {
        *self.lock().webhooks.entry(outcome.to_owned()).or_default() += 1;
    }

    /// Drops every series of `app`, for an app removed from the
    /// configuration: otherwise it would be reported until the agent
    /// restarts.
    pub fn forget_app(&self, app: &str) {
        let mut m = self.lock();
        m.app_info.remove(app);
        m.deploys.retain(|(a, _), _| a != app);
        m.reverts.remove(app);
        m.last_deploy.remove(app);
        m.versions_behind.remove(app);
        m.health.retain(|(a, _), _| a != app);
    }

    /// The metrics in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);

        let name = "switchyard_app_info";
        family(
            &mut out,
            name,
            "gauge",
            "The version live for each app; always 1.",
        );
        for (app, version) in &m.app_info {
            sample(
                &mut out,
                name,
                &[("app", app.as_str()), ("version", version.as_str())],
                &1,
            );
        }

        let name = "switchyard_deploys_total";
        family(&mut out, name, "counter", "Deploys finished, by outcome.");
        for ((app, outcome), n) in &m.deploys {
            sample(
                &mut out,
                name,
                &[("app", app.as_str()), ("outcome", outcome.as_str())],
                n,
            );
        }

        let name = "switchyard_reverts_total";
        family(
            &mut out,
            name,
            "counter",
            "Reverts to the previous release.",
        );
        for (app, n) in &m.reverts {
            sample(&mut out, name, &[("app", app.as_str())], n);
        }

        let name = "switchyard_last_deploy_timestamp_seconds";
        family(
            &mut out,
            name,
            "gauge",
            "When the app's last deploy finished, in Unix seconds.",
        );
        for (app, t) in &m.last_deploy {
            sample(&mut out, name, &[("app", app.as_str())], &Value(*t));
        }

        let name = "switchyard_versions_behind";
        family(
            &mut out,
            name,
            "gauge",
            "Releases newer than the live one that are available.",
        );
        for (app, n) in &m.versions_behind {
            sample(&mut out, name, &[("app", app.as_str())], n);
        }

        let name = "switchyard_health_check_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Duration of health-check rounds, by phase.",
        );
        for ((app, phase), h) in &m.health {
            let bucket = format!("{name}_bucket");
            let mut cumulative = 0;
            for (le, n) in HEALTH_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let le = Value(*le).to_string();
                let labels = [
                    ("app", app.as_str()),
                    ("phase", phase.as_str()),
                    ("le", le.as_str()),
                ];
                sample(&mut out, &bucket, &labels, &cumulative);
            }
            let labels = [
                ("app", app.as_str()),
                ("phase", phase.as_str()),
                ("le", "+Inf"),
            ];
            sample(&mut out, &bucket, &labels, &h.count);
            let labels = [("app", app.as_str()), ("phase", phase.as_str())];
            sample(&mut out, &format!("{name}_sum"), &labels, &Value(h.sum));
            sample(&mut out, &format!("{name}_count"), &labels, &h.count);
        }

        let name = "switchyard_webhook_deliveries_total";
        family(
            &mut out,
            name,
            "counter",
            "GitHub webhook deliveries, by outcome.",
        );
        for (outcome, n) in &m.webhooks {
            sample(&mut out, name, &[("outcome", outcome.as_str())], n);
        }
        out
    }
}

/// A sample value as the text format spells it (Rust writes `inf`).
struct Value(f64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_nan() {
            f.write_str("NaN")
        } else if self.0.is_infinite() {
            f.write_str(if self.0 > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // The help texts are constants without backslashes or newlines, the
    // only characters HELP would need escaped.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &dyn fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values are free text (app names, versions): a quote or newline
/// in one must not end the sample early.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use tower::ServiceExt;

    const SECRET: &[u8] = b"test secret \xe2\x9c\x93";

    struct Harness {
        app: Router,
        state: Arc<HttpState>,
        rx: UnboundedReceiver<Trigger>,
        metrics: Arc<Metrics>,
    }

    impl Harness {
        fn new(cfg: WebhookConfig) -> Harness {
            let (tx, rx) = unbounded_channel();
            let metrics = Arc::new(Metrics::new());
            let state = HttpState::new(cfg, tx, Arc::clone(&metrics));
            Harness {
                app: router(Arc::clone(&state)),
                state,
                rx,
                metrics,
            }
        }

        async fn send(&self, req: Request) -> (StatusCode, String) {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("response body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        /// Signs `body` with [`SECRET`] and delivers it.
        async fn deliver(&self, event: &str, body: &[u8]) -> (StatusCode, String) {
            let sig = sign_payload(SECRET, body);
            self.send(delivery(event, Some(&next_id()), Some(&sig), body.to_vec()))
                .await
        }

        fn triggers(&mut self) -> Vec<Trigger> {
            let mut out = Vec::new();
            while let Ok(t) = self.rx.try_recv() {
                out.push(t);
            }
            out
        }

        fn webhook_count(&self, outcome: &str) -> f64 {
            value_of(
                &self.metrics.render(),
                "switchyard_webhook_deliveries_total",
                &[("outcome", outcome)],
            )
            .unwrap_or(0.0)
        }
    }

    fn config(repo: &str, apps: &[(&str, bool)]) -> WebhookConfig {
        let watchers = apps
            .iter()
            .map(|(app, prerelease)| WatchingApp {
                app: (*app).to_owned(),
                prerelease: *prerelease,
            })
            .collect();
        WebhookConfig {
            secret: Some(SECRET.to_vec()),
            repos: HashMap::from([(repo.to_owned(), watchers)]),
        }
    }

    fn next_id() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "72d3162e-cc78-11e3-81ab-{:012}",
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn delivery(event: &str, id: Option<&str>, signature: Option<&str>, body: Vec<u8>) -> Request {
        let mut b = Request::builder()
            .method("POST")
            .uri("/hooks/github")
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/test")
            .header(EVENT_HEADER, event);
        if let Some(id) = id {
            b = b.header(DELIVERY_HEADER, id);
        }
        if let Some(sig) = signature {
            b = b.header(SIGNATURE_HEADER, sig);
        }
        b.body(Body::from(body)).expect("request")
    }

    fn get_req(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    fn testdata_dir() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhooks/octokit-payload-examples"
        ))
    }

    /// An octokit example payload; `None` (after a SKIP line) when the
    /// shared test data is not there, which only CI must not tolerate.
    fn payload(name: &str) -> Option<Vec<u8>> {
        let path = testdata_dir().join(name);
        match crate::fs::read_optional(&path) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIP: {} is missing", path.display());
                None
            }
            Ok(None) => panic!("{} is missing (CI=true)", path.display()),
            Err(e) => panic!("{e}"),
        }
    }

    fn json_str(body: &[u8], pointer: &str) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).expect("test payload is JSON");
        v.pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("test payload has no {pointer}"))
            .to_owned()
    }

    fn webhook(app: &str, delivery: &str, tag: &str) -> Trigger {
        Trigger::Webhook {
            app: app.to_owned(),
            delivery: delivery.to_owned(),
            tag: Some(tag.to_owned()),
        }
    }

    fn apps_of(triggers: &[Trigger]) -> Vec<String> {
        let mut apps: Vec<String> = triggers
            .iter()
            .map(|t| match t {
                Trigger::Webhook { app, .. } | Trigger::Poll { app } => app.clone(),
            })
            .collect();
        apps.sort();
        apps
    }

    #[test]
    fn github_signature_test_vector() {
        // From GitHub's "Validating webhook deliveries".
        assert_eq!(
            sign_payload(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[tokio::test]
    async fn github_test_vector_verifies() {
        let h = Harness::new(WebhookConfig {
            secret: Some(b"It's a Secret to Everybody".to_vec()),
            repos: HashMap::new(),
        });
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let req = delivery("ping", Some("1"), Some(sig), b"Hello, World!".to_vec());
        assert_eq!(h.send(req).await.0, StatusCode::OK);
        // Past the signature, a release event is parsed: this body is not one.
        let req = delivery("release", Some("2"), Some(sig), b"Hello, World!".to_vec());
        assert_eq!(h.send(req).await.0, StatusCode::BAD_REQUEST);
        // Upper-case hex is the same tag.
        let upper = format!("sha256={}", sig["sha256=".len()..].to_uppercase());
        let req = delivery("ping", Some("3"), Some(&upper), b"Hello, World!".to_vec());
        assert_eq!(h.send(req).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn octokit_payloads() {
        let Some(published) = payload("octokit_release_published.payload.json") else {
            return;
        };
        let repo = json_str(&published, "/repository/full_name");
        let tag = json_str(&published, "/release/tag_name");
        assert_ne!(repo, repo.to_ascii_lowercase(), "exercises case folding");
        let both = [("web", false), ("canary", true)];

        // published: every watching app, with the tag and the delivery id.
        let mut h = Harness::new(config(&repo.to_ascii_lowercase(), &both));
        let sig = sign_payload(SECRET, &published);
        let id = next_id();
        let (status, text) = h
            .send(delivery(
                "release",
                Some(&id),
                Some(&sig),
                published.clone(),
            ))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        let mut got = h.triggers();
        got.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(
            got,
            vec![webhook("canary", &id, &tag), webhook("web", &id, &tag)]
        );
        assert_eq!(h.webhook_count("accepted"), 1.0);

        // prereleased: only the prerelease channel.
        let Some(pre) = payload("octokit_release_prereleased.payload.json") else {
            return;
        };
        assert_eq!(json_str(&pre, "/repository/full_name"), repo);
        let (status, _) = h.deliver("release", &pre).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(apps_of(&h.triggers()), ["canary"]);
        let mut stable_only = Harness::new(config(&repo, &[("web", false)]));
        let (status, text) = stable_only.deliver("release", &pre).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(text.starts_with("ignored"), "{text}");
        assert!(stable_only.triggers().is_empty());

        // Everything else: 202, no trigger.
        for (file, event) in [
            ("octokit_release_created.payload.json", "release"),
            ("octokit_release_edited.payload.json", "release"),
            ("octokit_release_deleted.payload.json", "release"),
            ("octokit_release_released.json", "release"),
            ("octokit_push_payload.json", "push"),
        ] {
            let Some(body) = payload(file) else { return };
            let (status, text) = h.deliver(event, &body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{file}: {text}");
            assert!(text.starts_with("ignored"), "{file}: {text}");
            assert!(h.triggers().is_empty(), "{file} sent a trigger");
        }
        assert_eq!(h.webhook_count("ignored"), 5.0);

        // ping, from another repository: 200 whatever the repository.
        let Some(ping) = payload("octokit_ping_payload.json") else {
            return;
        };
        let (status, _) = h.deliver("ping", &ping).await;
        assert_eq!(status, StatusCode::OK);
        assert!(h.triggers().is_empty());
        assert_eq!(h.webhook_count("ping"), 1.0);
    }

    /// A signed, valid `published` payload for `repo`: what each refusal
    /// below would otherwise have acted on.
    fn published_body(repo: &str) -> Vec<u8> {
        serde_json::json!({
            "action": "published",
            "release": { "tag_name": "v1.2.0", "prerelease": false, "draft": false },
            "repository": { "full_name": repo },
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn bad_signatures_are_refused_before_parsing() {
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        let body = published_body("acme/web");
        let good = sign_payload(SECRET, &body);
        let sha1 = format!("sha1={}", &good["sha256=".len()..][..40]);
        let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
            ("missing", None, body.clone()),
            (
                "wrong secret",
                Some(sign_payload(b"another secret", &body)),
                body.clone(),
            ),
            ("sha1= prefix", Some(sha1), body.clone()),
            (
                "no prefix",
                Some(good["sha256=".len()..].to_owned()),
                body.clone(),
            ),
            ("not hex", Some("sha256=zz".to_owned()), body.clone()),
            (
                "truncated",
                Some(good[..good.len() - 2].to_owned()),
                body.clone(),
            ),
            (
                "other body",
                Some(sign_payload(SECRET, b"{}")),
                body.clone(),
            ),
            // Not JSON at all: refused as unauthorized, not as bad JSON.
            (
                "garbage body",
                Some(sign_payload(SECRET, &body)),
                b"\xff{".to_vec(),
            ),
        ];
        let n = cases.len();
        for (what, sig, body) in cases {
            let req = delivery("release", Some(&next_id()), sig.as_deref(), body);
            let (status, text) = h.send(req).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {text}");
        }
        // GitHub's older header alone is not enough.
        let req = Request::builder()
            .method("POST")
            .uri("/hooks/github")
            .header(EVENT_HEADER, "release")
            .header(DELIVERY_HEADER, next_id())
            .header(
                "x-hub-signature",
                "sha1=0123456789abcdef0123456789abcdef01234567",
            )
            .body(Body::from(body.clone()))
            .expect("request");
        assert_eq!(h.send(req).await.0, StatusCode::UNAUTHORIZED);
        // Two signatures, one of them right: ambiguous, refused.
        let req = Request::builder()
            .method("POST")
            .uri("/hooks/github")
            .header(EVENT_HEADER, "release")
            .header(DELIVERY_HEADER, next_id())
            .header(SIGNATURE_HEADER, "sha256=00")
            .header(SIGNATURE_HEADER, &good)
            .body(Body::from(body.clone()))
            .expect("request");
        assert_eq!(h.send(req).await.0, StatusCode::UNAUTHORIZED);

        assert!(h.triggers().is_empty());
        assert_eq!(h.webhook_count("unauthorized"), (n + 2) as f64);
        assert_eq!(h.webhook_count("accepted"), 0.0);

        // The same delivery, signed: accepted, so the refusals were the
        // signature's doing.
        let (status, _) = h.deliver("release", &body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(apps_of(&h.triggers()), ["web"]);
    }

    #[tokio::test]
    async fn body_size_limit() {
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        // Over the limit, streamed without a Content-Length: 413 even when
        // correctly signed.
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = h.deliver("release", &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // At the limit: read, verified, then refused as not JSON.
        let (status, _) = h.deliver("release", &big[..MAX_BODY_BYTES]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A declared length over the limit is refused on the header alone.
        let mut req = delivery("release", Some(&next_id()), Some("sha256=00"), Vec::new());
        req.headers_mut().insert(
            header::CONTENT_LENGTH,
            (MAX_BODY_BYTES + 1).to_string().parse().expect("header"),
        );
        assert_eq!(h.send(req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(h.webhook_count("too_large"), 2.0);
        assert_eq!(h.webhook_count("bad_request"), 1.0);
        assert!(h.triggers().is_empty());
    }

    #[tokio::test]
    async fn replayed_delivery_is_acted_on_once() {
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        let body = published_body("acme/web");
        let sig = sign_payload(SECRET, &body);
        let id = next_id();
        for expected in ["accepted", "duplicate", "duplicate"] {
            let req = delivery("release", Some(&id), Some(&sig), body.clone());
            let (status, text) = h.send(req).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            assert!(text.starts_with(expected), "{text}");
        }
        assert_eq!(h.triggers(), vec![webhook("web", &id, "v1.2.0")]);
        assert_eq!(h.webhook_count("duplicate"), 2.0);

        // Copies arriving at once: still one trigger.
        let id = next_id();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let app = h.app.clone();
            let req = delivery("release", Some(&id), Some(&sig), body.clone());
            tasks.push(tokio::spawn(async move { app.oneshot(req).await }));
        }
        for t in tasks {
            let resp = t.await.expect("task").expect("infallible");
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
        }
        assert_eq!(h.triggers().len(), 1);
    }

    #[tokio::test]
    async fn ignored_delivery_counts_again_after_reload() {
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        let body = published_body("acme/api");
        let sig = sign_payload(SECRET, &body);
        let id = next_id();
        let (status, text) = h
            .send(delivery("release", Some(&id), Some(&sig), body.clone()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(text.starts_with("ignored"), "{text}");
        assert!(h.triggers().is_empty());
        assert_eq!(h.webhook_count("ignored"), 1.0);

        // The operator adds the repository (written as on GitHub: case
        // does not matter) and redelivers: now it is acted on.
        h.state.reload(config("Acme/API", &[("api", false)]));
        let (status, _) = h
            .send(delivery("release", Some(&id), Some(&sig), body.clone()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(h.triggers(), vec![webhook("api", &id, "v1.2.0")]);
    }

    #[tokio::test]
    async fn missing_delivery_or_event_is_a_bad_request() {
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        let body = published_body("acme/web");
        let sig = sign_payload(SECRET, &body);
        let req = delivery("release", None, Some(&sig), body.clone());
        assert_eq!(h.send(req).await.0, StatusCode::BAD_REQUEST);
        let long = "x".repeat(MAX_DELIVERY_ID_BYTES + 1);
        let req = delivery("release", Some(&long), Some(&sig), body.clone());
        assert_eq!(h.send(req).await.0, StatusCode::BAD_REQUEST);
        let mut req = delivery("release", Some(&next_id()), Some(&sig), body.clone());
        req.headers_mut().remove(EVENT_HEADER);
        assert_eq!(h.send(req).await.0, StatusCode::BAD_REQUEST);
        let mut req = delivery("release", Some(&next_id()), Some(&sig), body.clone());
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        assert_eq!(h.send(req).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(h.webhook_count("bad_request"), 4.0);
        assert!(h.triggers().is_empty());
    }

    #[tokio::test]
    async fn without_a_secret_webhooks_are_disabled() {
        let body = published_body("acme/web");
        for secret in [None, Some(Vec::new())] {
            let mut cfg = config("acme/web", &[("web", false)]);
            cfg.secret = secret;
            let mut h = Harness::new(cfg);
            for sig in [None, Some(sign_payload(b"", &body))] {
                let req = delivery("release", Some(&next_id()), sig.as_deref(), body.clone());
                assert_eq!(h.send(req).await.0, StatusCode::NOT_FOUND);
            }
            let req = delivery("ping", Some(&next_id()), None, Vec::new());
            assert_eq!(h.send(req).await.0, StatusCode::NOT_FOUND);
            assert!(h.triggers().is_empty());

            // Enabled by a reload, disabled again by the next.
            h.state.reload(config("acme/web", &[("web", false)]));
            assert_eq!(h.deliver("release", &body).await.0, StatusCode::ACCEPTED);
            h.state.reload(WebhookConfig::default());
            assert_eq!(h.deliver("release", &body).await.0, StatusCode::NOT_FOUND);
            assert_eq!(h.triggers().len(), 1);
        }
    }

    #[tokio::test]
    async fn published_prerelease_reaches_only_the_prerelease_channel() {
        let mut h = Harness::new(config("acme/web", &[("web", false), ("canary", true)]));
        let body = serde_json::json!({
            "action": "published",
            "release": { "tag_name": "v2.0.0-rc.1", "prerelease": true },
            "repository": { "full_name": "acme/web" },
        })
        .to_string();
        assert_eq!(
            h.deliver("release", body.as_bytes()).await.0,
            StatusCode::ACCEPTED
        );
        assert_eq!(apps_of(&h.triggers()), ["canary"]);
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let text = format!("{:?}", config("acme/web", &[("web", false)]));
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("116"), "{text}"); // b't'
        assert!(!text.contains("test secret"), "{text}");
    }

    #[test]
    fn dedup_forgets_the_oldest() {
        let mut d = Dedup::new(3);
        for id in ["a", "b", "c"] {
            assert!(d.insert(id));
        }
        assert!(!d.insert("a"));
        assert!(d.insert("d")); // evicts "a"
        assert!(d.insert("a"));
        assert!(!d.insert("c"));
        assert_eq!(d.order.len(), 3);
        assert_eq!(d.ids.len(), 3);
    }

    #[tokio::test]
    async fn healthz_metrics_and_404() {
        let h = Harness::new(WebhookConfig::default());
        let (status, body) = h.send(get_req("/healthz")).await;
        assert_eq!((status, body.trim()), (StatusCode::OK, "ok"));

        let resp = h
            .app
            .clone()
            .oneshot(get_req("/metrics"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .expect("content type");
        assert!(
            ct.to_str()
                .expect("ascii")
                .starts_with("text/plain; version=0.0.4")
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let samples = parse_exposition(std::str::from_utf8(&body).expect("UTF-8"));
        assert_eq!(samples.len(), WEBHOOK_OUTCOMES.len());

        for (method, path) in [
            ("GET", "/"),
            ("GET", "/hooks/github"),
            ("POST", "/healthz"),
            ("DELETE", "/metrics"),
            ("GET", "/healthz/"),
            ("GET", "/hooks/github/x"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .expect("request");
            assert_eq!(
                h.send(req).await.0,
                StatusCode::NOT_FOUND,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn metrics_exposition() {
        let m = Metrics::new();
        m.set_current_version("web", Some("1.1.0"));
        m.set_current_version("web", Some("1.2.0"));
        m.set_current_version("api", Some("0.9.0"));
        m.set_current_version("api", None);
        let odd = "we\"b\\x\nz ü";
        m.set_current_version(odd, Some("1.0.0-rc.1+build.5"));
        m.deploy_outcome("web", "completed");
        m.deploy_outcome("web", "completed");
        m.deploy_outcome("web", "rolled_back");
        m.deploy_outcome(odd, "precheck_failed");
        m.revert("web");
        m.set_last_deploy("web", 1_767_225_600.5);
        m.set_versions_behind("web", 2);
        m.set_versions_behind("web", 0);
        m.observe_health("web", "live", 0.003);
        m.observe_health("web", "live", 0.3);
        m.observe_health("web", "live", 45.0);
        m.observe_health("web", "live", f64::NAN);
        m.observe_health("web", "staging", 0.01);
        m.webhook("accepted");
        m.set_last_deploy("odd-clock", f64::INFINITY);

        let text = m.render();
        let samples = parse_exposition(&text);
        let v = |name: &str, labels: &[(&str, &str)]| value_of(&text, name, labels);

        assert_eq!(
            v(
                "switchyard_app_info",
                &[("app", "web"), ("version", "1.2.0")]
            ),
            Some(1.0)
        );
        let info: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "switchyard_app_info")
            .collect();
        assert_eq!(info.len(), 2, "replaced and removed: {info:?}");
        assert_eq!(
            v(
                "switchyard_app_info",
                &[("app", odd), ("version", "1.0.0-rc.1+build.5")]
            ),
            Some(1.0),
            "label values round-trip through escaping"
        );
        let deploys = "switchyard_deploys_total";
        assert_eq!(
            v(deploys, &[("app", "web"), ("outcome", "completed")]),
            Some(2.0)
        );
        assert_eq!(
            v(deploys, &[("app", "web"), ("outcome", "rolled_back")]),
            Some(1.0)
        );
        assert_eq!(
            v(deploys, &[("app", odd), ("outcome", "precheck_failed")]),
            Some(1.0)
        );
        assert_eq!(v("switchyard_reverts_total", &[("app", "web")]), Some(1.0));
        assert_eq!(
            v(
                "switchyard_last_deploy_timestamp_seconds",
                &[("app", "web")]
            ),
            Some(1_767_225_600.5)
        );
        assert_eq!(
            v("switchyard_versions_behind", &[("app", "web")]),
            Some(0.0)
        );
        assert!(text.contains("{app=\"odd-clock\"} +Inf\n"), "{text}");

        let live = [("app", "web"), ("phase", "live")];
        let bucket = |le: &str| {
            v(
                "switchyard_health_check_seconds_bucket",
                &[("app", "web"), ("phase", "live"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.01"), Some(1.0));
        assert_eq!(bucket("0.5"), Some(2.0));
        assert_eq!(bucket("30"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(v("switchyard_health_check_seconds_count", &live), Some(3.0));
        let sum = v("switchyard_health_check_seconds_sum", &live).expect("sum");
        assert!((sum - 45.303).abs() < 1e-9, "{sum}");
        let staging = [("app", "web"), ("phase", "staging"), ("le", "0.01")];
        assert_eq!(
            v("switchyard_health_check_seconds_bucket", &staging),
            Some(1.0)
        );

        let hooks = "switchyard_webhook_deliveries_total";
        assert_eq!(v(hooks, &[("outcome", "accepted")]), Some(1.0));
        assert_eq!(v(hooks, &[("outcome", "unauthorized")]), Some(0.0));

        for family in [
            "switchyard_app_info",
            "switchyard_deploys_total",
            "switchyard_reverts_total",
            "switchyard_last_deploy_timestamp_seconds",
            "switchyard_versions_behind",
            "switchyard_health_check_seconds",
            "switchyard_webhook_deliveries_total",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }

        m.forget_app("web");
        let text = m.render();
        parse_exposition(&text);
        assert!(!text.contains("app=\"web\""), "{text}");
    }

    #[test]
    fn exposition_checker_catches_mistakes() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\n";
        parse_exposition(good);
        for bad in [
            "a_total 1\n",                                                       // no HELP/TYPE
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1} 1\n",     // unterminated
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"\\q\"} 1\n", // bad escape
            "# HELP a_total A.\n# TYPE a_total counter\na_total inf\n",          // Rust spelling
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1",              // no final newline
            "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n", // same series twice
        ] {
            let caught = std::panic::catch_unwind(|| parse_exposition(bad)).is_err();
            assert!(caught, "accepted {bad:?}");
        }
    }

    /// Serves the router on a real socket: what GitHub and Prometheus see.
    #[tokio::test]
    async fn over_real_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut h = Harness::new(config("acme/web", &[("web", false)]));
        let server = tokio::spawn(axum::serve(listener, h.app.clone()).into_future());

        // reqwest is built without a default crypto provider; plain HTTP
        // needs none, but building a client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let base = format!("http://{addr}");

        let body = published_body("acme/web");
        let id = next_id();
        let resp = client
            .post(format!("{base}/hooks/github"))
            .header("content-type", "application/json")
            .header(EVENT_HEADER, "release")
            .header(DELIVERY_HEADER, &id)
            .header(SIGNATURE_HEADER, sign_payload(SECRET, &body))
            .body(body.clone())
            .send()
            .await
            .expect("delivery");
        assert_eq!(resp.status().as_u16(), 202);
        assert_eq!(h.triggers(), vec![webhook("web", &id, "v1.2.0")]);

        let resp = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.expect("text").trim(), "ok");

        let resp = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(METRICS_CONTENT_TYPE)
        );
        let text = resp.text().await.expect("text");
        parse_exposition(&text);
        assert_eq!(
            value_of(
                &text,
                "switchyard_webhook_deliveries_total",
                &[("outcome", "accepted")]
            ),
            Some(1.0)
        );

        // A declared 2 MiB body, never sent: the answer must not wait for it.
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: release\r\nX-GitHub-Delivery: {}\r\n\
             X-Hub-Signature-256: sha256=00\r\nContent-Length: {}\r\n\r\n",
            next_id(),
            2 * MAX_BODY_BYTES
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        let got = read_head(&mut conn).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        assert_eq!(h.webhook_count("too_large"), 1.0);

        // A body that stops halfway: the connection is not held forever.
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: release\r\n\
             X-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\n{{\"action\""
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        let got = read_head(&mut conn).await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert_eq!(h.webhook_count("timeout"), 1.0);
        assert!(h.triggers().is_empty());

        server.abort();
    }

    type Labels = Vec<(String, String)>;

    /// Reads a response's status line and headers, failing after 10 s.
    async fn read_head(conn: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(read.is_ok(), "no answer within 10 s");
        String::from_utf8_lossy(&got).into_owned()
    }

    /// A sample of the text format, as parsed back.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Labels,
        value: f64,
    }

    /// The value of the series `name{labels}` (labels in any order).
    fn value_of(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        parse_exposition(text)
            .into_iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    /// Parses the Prometheus text format 0.0.4 strictly, panicking on the
    /// first mistake: every sample belongs to a family with HELP and TYPE
    /// given before it, families are not interleaved, series are unique,
    /// label values are correctly escaped, histograms are cumulative and end
    /// with a `+Inf` bucket equal to their count.
    fn parse_exposition(text: &str) -> Vec<Sample> {
        assert!(
            text.ends_with('\n'),
            "the exposition must end with a newline"
        );
        let mut help: HashMap<String, String> = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        let mut enter = |family: &str, n: usize| {
            if current.as_deref() != Some(family) {
                assert!(!done.contains(family), "line {n}: family {family} is split");
                if let Some(prev) = current.replace(family.to_owned()) {
                    done.insert(prev);
                }
            }
        };
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
                check_name(name, n);
                let mut chars = doc.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        assert!(
                            matches!(chars.next(), Some('\\' | 'n')),
                            "line {n}: bad escape in HELP"
                        );
                    }
                }
                enter(name, n);
                assert!(
                    help.insert(name.to_owned(), doc.to_owned()).is_none(),
                    "line {n}: second HELP"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("line {n}: TYPE without a type"));
                check_name(name, n);
                assert!(
                    matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "line {n}: unknown type {kind}"
                );
                enter(name, n);
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "line {n}: second TYPE"
                );
            } else if line.starts_with('#') || line.is_empty() {
                panic!("line {n}: unexpected line {line:?}");
            } else {
                let s = parse_sample(line, n);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .filter_map(|suffix| s.name.strip_suffix(suffix))
                    .find(|base| {
                        types
                            .get(*base)
                            .is_some_and(|t| t == "histogram" || t == "summary")
                    })
                    .unwrap_or(&s.name)
                    .to_owned();
                let kind = types
                    .get(&family)
                    .unwrap_or_else(|| panic!("line {n}: {} has no TYPE", s.name));
                assert!(
                    help.contains_key(&family),
                    "line {n}: {} has no HELP",
                    s.name
                );
                assert!(
                    kind != "histogram" || s.name != family,
                    "line {n}: histogram sample without a suffix"
                );
                enter(&family, n);
                let mut key: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                key.sort();
                assert!(
                    series.insert(format!("{}{{{}}}", s.name, key.join(","))),
                    "line {n}: series repeated"
                );
                samples.push(s);
            }
        }
        for name in types.keys() {
            assert!(help.contains_key(name), "{name} has TYPE but no HELP");
        }
        for name in help.keys() {
            assert!(types.contains_key(name), "{name} has HELP but no TYPE");
        }
        for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
            check_histogram(family, &samples);
        }
        samples
    }

    fn check_histogram(family: &str, samples: &[Sample]) {
        let without_le = |s: &Sample| {
            let mut l: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            l.sort();
            l
        };
        let bucket_name = format!("{family}_bucket");
        let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| parse_value(v))
                .unwrap_or_else(|| panic!("{bucket_name} without le"));
            let key = without_le(s);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, b)) => b.push((le, s.value)),
                None => groups.push((key, vec![(le, s.value)])),
            }
        }
        for (key, buckets) in groups {
            for w in buckets.windows(2) {
                assert!(w[0].0 < w[1].0, "{family}{key:?}: buckets out of order");
                assert!(w[0].1 <= w[1].1, "{family}{key:?}: buckets not cumulative");
            }
            let last = buckets.last().expect("one bucket");
            assert_eq!(last.0, f64::INFINITY, "{family}{key:?}: no +Inf bucket");
            let find = |suffix: &str| {
                samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && without_le(s) == key)
                    .map(|s| s.value)
                    .unwrap_or_else(|| panic!("{family}{key:?}: no {suffix}"))
            };
            assert_eq!(
                find("_count"),
                last.1,
                "{family}{key:?}: +Inf bucket != count"
            );
            find("_sum");
        }
    }

    fn check_name(name: &str, n: usize) {
        let ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        assert!(ok, "line {n}: bad metric name {name:?}");
    }

    fn parse_value(v: &str) -> f64 {
        match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => {
                assert!(
                    v.chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')),
                    "bad value {v:?}"
                );
                v.parse().unwrap_or_else(|_| panic!("bad value {v:?}"))
            }
        }
    }

    fn parse_sample(line: &str, n: usize) -> Sample {
        let end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("line {n}: no value"));
        let name = &line[..end];
        check_name(name, n);
        let mut chars = line[end..].chars().peekable();
        let mut labels: Vec<(String, String)> = Vec::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                if chars.peek() == Some(&'}') {
                    chars.next();
                    break;
                }
                let mut label = String::new();
                while let Some(c) = chars.next_if(|c| *c != '=') {
                    label.push(c);
                }
                let ok = !label.is_empty()
                    && !label.starts_with(|c: char| c.is_ascii_digit())
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                assert!(ok, "line {n}: bad label name {label:?}");
                assert_eq!(chars.next(), Some('='), "line {n}");
                assert_eq!(chars.next(), Some('"'), "line {n}");
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("line {n}: bad escape \\{other:?}"),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("line {n}: unterminated label value"),
                    }
                }
                assert!(
                    labels.iter().all(|(k, _)| *k != label),
                    "line {n}: label {label} twice"
                );
                labels.push((label, value));
                match chars.next() {
                    Some(',') => assert_ne!(chars.peek(), Some(&'}'), "line {n}: trailing comma"),
                    Some('}') => break,
                    other => panic!("line {n}: expected , or }} after a label, got {other:?}"),
                }
            }
        }
        let rest: String = chars.collect();
        let rest = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("line {n}: no space before the value"));
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or(""));
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("line {n}: bad timestamp {ts:?}"));
        }
        assert!(parts.next().is_none(), "line {n}: trailing fields");
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }
}
