//! `GET /apps/<app>/events`: Server-Sent Events with the app's live state
//! and the running deploy's progress (state, step, hook output tails,
//! redacted), read from the same state file and hook logs `switchyard
//! watch` follows. An event goes out when something changed; a stream
//! ends after [`STREAM_LIFE`] (the browser's EventSource reconnects) or
//! when the agent stops, so no connection is held forever.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::AppConfig;
use crate::daemon::console::ConsoleState;
use crate::daemon::console::pages::{no_app, who};
use crate::daemon::console::view::{self, Progress};

/// How often the state file and hook logs are looked at. Polling cadence
/// only (no time is recorded or compared), hence tokio's timer and not the
/// agent's clock, which tests stand still.
const EVERY: Duration = Duration::from_millis(500);

/// How long one stream lasts.
const STREAM_LIFE: Duration = Duration::from_secs(300);

/// What one event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Live {
    /// The live release.
    pub live: String,
    /// The lock holder's operation, or the last deploy's state.
    pub lifecycle: String,
    /// The running or last deploy.
    pub progress: Option<ProgressJson>,
}

/// [`Progress`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ProgressJson {
    id: String,
    op: String,
    state: String,
    step: String,
    to: String,
    terminal: bool,
    error: Option<String>,
    hooks: Vec<HookJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct HookJson {
    hook: String,
    tail: String,
}

impl From<Progress> for ProgressJson {
    fn from(p: Progress) -> Self {
        ProgressJson {
            id: p.id,
            op: p.op,
            state: p.state,
            step: p.step,
            to: p.to,
            terminal: p.terminal,
            error: p.error,
            hooks: p
                .hooks
                .into_iter()
                .map(|h| HookJson {
                    hook: h.hook,
                    tail: h.tail,
                })
                .collect(),
        }
    }
}

/// The app's live state now (blocking).
pub(crate) fn live(cfg: &AppConfig) -> Live {
    let paths = crate::store::layout::AppPaths::new(&cfg.root);
    let progress = view::progress(cfg);
    let running = crate::store::state::AppLock::holder(&paths).ok().flatten();
    Live {
        live: paths
            .current_version()
            .ok()
            .flatten()
            .map_or_else(|| "none".into(), |v| v.to_string()),
        lifecycle: match (&running, &progress) {
            (Some(r), _) => format!("running: {}", r.operation),
            (None, Some(p)) => format!("{} {} ({})", p.op, p.state, p.step),
            (None, None) => "idle".into(),
        },
        progress: progress.map(ProgressJson::from),
    }
}

/// `GET /apps/<app>/events`.
pub(crate) async fn events(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let Some((cfg, _)) = state.app(&app) else {
        return no_app(&who, &app);
    };
    let end = tokio::time::Instant::now() + STREAM_LIFE;
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (cfg, None::<Live>, shutdown, true),
        move |(cfg, last, mut shutdown, first)| async move {
            loop {
                if !first || last.is_some() {
                    tokio::select! {
                        _ = tokio::time::sleep(EVERY) => {}
                        _ = crate::daemon::stopped(&mut shutdown) => return None,
                    }
                }
                if tokio::time::Instant::now() >= end || *shutdown.borrow() {
                    return None;
                }
                let c = cfg.clone();
                let now = tokio::task::spawn_blocking(move || live(&c)).await.ok()?;
                if last.as_ref() != Some(&now) {
                    let data = serde_json::to_string(&now).unwrap_or_default();
                    let ev = Event::default().event("progress").data(data);
                    return Some((
                        Ok::<Event, Infallible>(ev),
                        (cfg, Some(now), shutdown, false),
                    ));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
