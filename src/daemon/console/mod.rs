//! The web console (issue #16): server-rendered pages on a listener of its
//! own (`[console] listen`, never the webhook listener; off without the
//! table), with the same connection limits and timeouts as the webhook
//! listener. Reads go through the operations API; operators' actions run
//! as requests in the app's task, exactly as the control socket's do, with
//! `console:<user>` as the audit log's actor.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from the console itself only: no inline script or style), and
//! `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
//! `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.

mod actions;
pub(crate) mod auth;
mod pages;
mod sse;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::config::console::ConsoleConfig;
use crate::daemon::console::view::CachedSource;
use crate::daemon::control::Job;

/// The stylesheet, served from the binary.
const CSS: &str = include_str!("../../../assets/console/console.css");

/// The one script (live updates), served from the binary.
const JS: &str = include_str!("../../../assets/console/console.js");

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Logins checked at once (argon2id takes a CPU and 19 MiB each).
const CONCURRENT_LOGINS: usize = 2;

/// The Content-Security-Policy of every response.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An app's configuration and its cached source.
type AppEntry = (Arc<AppConfig>, Arc<CachedSource>);

/// What the console's requests share.
pub(crate) struct ConsoleState {
    cfg: ConsoleConfig,
    apps: RwLock<BTreeMap<String, AppEntry>>,
    jobs: mpsc::UnboundedSender<Job>,
    clock: Arc<dyn Clock>,
    sessions: auth::Sessions,
    limiter: auth::Limiter,
    verifying: Semaphore,
    results: Mutex<HashMap<String, String>>,
    shutdown: watch::Receiver<bool>,
}

impl ConsoleState {
    /// The console for `apps`, sending operators' actions to `jobs` (the
    /// control socket's queue to the app tasks).
    pub(crate) fn new(
        cfg: ConsoleConfig,
        apps: &BTreeMap<String, AppConfig>,
        jobs: mpsc::UnboundedSender<Job>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<ConsoleState> {
        let s = Arc::new(ConsoleState {
            cfg,
            apps: RwLock::new(BTreeMap::new()),
            jobs,
            clock,
            sessions: auth::Sessions::new(),
            limiter: auth::Limiter::new(),
            verifying: Semaphore::new(CONCURRENT_LOGINS),
            results: Mutex::new(HashMap::new()),
            shutdown,
        });
        s.reload(apps);
        s
    }

    /// Puts a reloaded configuration's apps in force (on SIGHUP). The
    /// `[console]` table itself takes effect on restart.
    pub(crate) fn reload(&self, apps: &BTreeMap<String, AppConfig>) {
        let map = apps
            .values()
            .map(|a| {
                (
                    a.name.clone(),
                    (
                        Arc::new(a.clone()),
                        Arc::new(CachedSource::new(a, self.clock.clone())),
                    ),
                )
            })
            .collect();
        *self.apps.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    fn app(&self, name: &str) -> Option<AppEntry> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn all_apps(&self) -> Vec<AppEntry> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn set_result(&self, app: &str, text: &str) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), text.to_string());
    }

    fn last_result(&self, app: &str) -> Option<String> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
    }
}

/// The console's routes; anything else is 404.
pub(crate) fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/apps/{app}", get(pages::app))
        .route("/apps/{app}/logs/{deploy}", get(pages::logs))
        .route("/apps/{app}/confirm", get(actions::confirm))
        .route("/apps/{app}/actions", post(actions::act))
        .route("/apps/{app}/events", get(sse::events))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .method_not_allowed_fallback(not_found)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// The headers every console response carries.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}
