//! Operators' actions: a confirmation page (with the reason asked for),
//! then a POST carrying the CSRF token, run as an operations-API request in
//! the app's task (queued behind whatever the agent does for the app, as
//! control-socket commands are), with `console:<user>` as the audit log's
//! actor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::info;

use crate::daemon::console::ConsoleState;
use crate::daemon::console::auth::Who;
use crate::daemon::console::pages::{Frame, html, message, no_app, who};
use crate::daemon::report::redact::redact;
use crate::ops::api::{Outcome, Reply, Request, Seen};
use crate::ops::console_users::Role;
use crate::store::history::Actor;
use crate::version::{Version, VersionRequest};

/// How long the POST waits for the action before answering "still
/// running" (a deploy can take longer than a request may).
const WAIT: Duration = Duration::from_secs(20);

/// Longest reason kept.
const MAX_REASON: usize = 500;

/// The actions, as the forms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Deploy,
    Promote,
    Revert,
    Hold,
    Unhold,
    Quarantine,
    Unquarantine,
    MaintenanceOn,
    MaintenanceOff,
    Backup,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "deploy" => Action::Deploy,
            "promote" => Action::Promote,
            "revert" => Action::Revert,
            "hold" => Action::Hold,
            "unhold" => Action::Unhold,
            "quarantine" => Action::Quarantine,
            "unquarantine" => Action::Unquarantine,
            "maintenance-on" => Action::MaintenanceOn,
            "maintenance-off" => Action::MaintenanceOff,
            "backup" => Action::Backup,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Promote => "promote",
            Action::Revert => "revert",
            Action::Hold => "hold",
            Action::Unhold => "unhold",
            Action::Quarantine => "quarantine",
            Action::Unquarantine => "unquarantine",
            Action::MaintenanceOn => "maintenance-on",
            Action::MaintenanceOff => "maintenance-off",
            Action::Backup => "backup",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Promote => "promote",
            Action::Revert => "revert",
            Action::Hold => "hold",
            Action::Unhold => "unhold",
            Action::Quarantine => "quarantine",
            Action::Unquarantine => "lift the quarantine",
            Action::MaintenanceOn => "maintenance on",
            Action::MaintenanceOff => "maintenance off",
            Action::Backup => "create a backup",
        }
    }

    /// What the form's version field must hold.
    fn version(self) -> VersionNeed {
        match self {
            Action::Deploy => VersionNeed::OrLatest,
            Action::Promote | Action::Quarantine | Action::Unquarantine => VersionNeed::Exact,
            _ => VersionNeed::None,
        }
    }

    /// Where the reason ends up.
    fn reason_note(self) -> &'static str {
        match self {
            Action::Hold | Action::Quarantine => "kept in the audit log and the agent's log",
            Action::MaintenanceOn => {
                "shown to users as the maintenance message, and kept in the audit log"
            }
            _ => {
                "kept in the audit log with your name (console:<user>) on each event of the action"
            }
        }
    }
}

enum VersionNeed {
    None,
    Exact,
    OrLatest,
}

/// The version field, checked against what the action needs.
fn version_of(a: Action, raw: &str) -> Result<Option<VersionRequest>, String> {
    let raw = raw.trim();
    match a.version() {
        VersionNeed::None => Ok(None),
        VersionNeed::OrLatest if raw.is_empty() || raw == "latest" => {
            Ok(Some(VersionRequest::Latest))
        }
        _ if raw.is_empty() => Err(format!("{} needs a version", a.label())),
        _ => raw
            .parse::<Version>()
            .map(|v| Some(VersionRequest::Exact(v)))
            .map_err(|e| format!("{raw:?} is not a version: {e}")),
    }
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    app: String,
    action: String,
    label: String,
    version: String,
    live: String,
    live_shown: String,
    reason_note: String,
}

/// The confirmation page's query.
#[derive(Deserialize)]
pub(crate) struct ConfirmQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    version: String,
}

fn forbidden(who: &Who, app: &str) -> Response {
    message(
        StatusCode::FORBIDDEN,
        Some(who),
        "Not allowed",
        "Your role is viewer: you can read every page, but only operators act.",
        &format!("/apps/{app}"),
    )
}

/// `GET /apps/<app>/confirm?action=..&version=..`: asks for the reason.
pub(crate) async fn confirm(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if who.role != Role::Operator {
        return forbidden(&who, &app);
    }
    let Some((cfg, _)) = state.app(&app) else {
        return no_app(&who, &app);
    };
    let back = format!("/apps/{app}");
    let Some(action) = Action::parse(&q.action) else {
        return message(
            StatusCode::BAD_REQUEST,
            Some(&who),
            "Unknown action",
            &format!("{:?} is not an action", q.action),
            &back,
        );
    };
    let version = match version_of(action, &q.version) {
        Ok(Some(VersionRequest::Exact(v))) => v.to_string(),
        Ok(Some(VersionRequest::Latest)) => "latest".to_string(),
        Ok(None) => String::new(),
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(&who),
                "Bad version",
                &e,
                &back,
            );
        }
    };
    let live = tokio::task::spawn_blocking(move || {
        crate::store::layout::AppPaths::new(&cfg.root)
            .current_version()
            .ok()
            .flatten()
    })
    .await
    .ok()
    .flatten();
    let f = Frame::of(Some(&who));
    html(
        StatusCode::OK,
        &ConfirmPage {
            user_name: f.user_name,
            user_role: f.user_role,
            csrf: f.csrf,
            can_logout: f.can_logout,
            app,
            action: action.name().to_string(),
            label: action.label().to_string(),
            version,
            live: live.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            live_shown: live.map_or_else(|| "nothing".to_string(), |v| v.to_string()),
            reason_note: action.reason_note().to_string(),
        },
    )
}

/// The confirmed action.
#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    reason: String,
    /// The live release the confirmation page showed: a deploy, promote or
    /// revert refuses if it changed meanwhile.
    #[serde(default)]
    live: String,
    /// `yes`: a deploy or promote may cross a major version.
    #[serde(default)]
    allow_major: String,
}

/// `POST /apps/<app>/actions`.
pub(crate) async fn act(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let back = format!("/apps/{app}");
    if !who.csrf_ok(&form.csrf) {
        info!(app = %app, user = %who.name, "console: action refused, CSRF token missing or wrong");
        return message(
            StatusCode::FORBIDDEN,
            Some(&who),
            "Refused",
            "The form's CSRF token is missing or wrong: open the action again from the app's page.",
            &back,
        );
    }
    if who.role != Role::Operator {
        return forbidden(&who, &app);
    }
    if state.app(&app).is_none() {
        return no_app(&who, &app);
    }
    let Some(action) = Action::parse(&form.action) else {
        return message(
            StatusCode::BAD_REQUEST,
            Some(&who),
            "Unknown action",
            &format!("{:?} is not an action", form.action),
            &back,
        );
    };
    // One line: it goes into log lines and the audit log.
    let reason: String = form
        .reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    if reason.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            Some(&who),
            "Reason needed",
            "Say why: every console action records a reason.",
            &back,
        );
    }
    let version = match version_of(action, &form.version) {
        Ok(v) => v,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(&who),
                "Bad version",
                &e,
                &back,
            );
        }
    };
    let seen = Some(Seen {
        live: form.live.trim().parse::<Version>().ok(),
    });
    let allow_major = form.allow_major == "yes";
    let Some(req) = request(action, &app, version, &reason, seen, allow_major) else {
        return message(
            StatusCode::BAD_REQUEST,
            Some(&who),
            "Bad version",
            "this action needs an exact version",
            &back,
        );
    };
    info!(app = %app, user = %who.name, action = %action.name(), reason = %reason, "console action");
    let actor = Actor {
        user: who.actor(),
        uid: None,
        reason: Some(reason.clone()),
    };
    let (tx, rx) = oneshot::channel::<Reply>();
    if state.jobs.send((req, actor, tx)).is_err() {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&who),
            "Not done",
            "The agent is shutting down.",
            &back,
        );
    }
    // The answer goes to the app page's banner whenever it comes.
    let (done_tx, done_rx) = oneshot::channel::<String>();
    let st = state.clone();
    let key = app.clone();
    let what = action.label();
    tokio::spawn(async move {
        let text = match rx.await {
            Ok(Ok(o)) => format!("{what}: {}", summary(&o)),
            Ok(Err(e)) => format!("{what} failed: {}", redact(&e.chain.join(": "))),
            Err(_) => format!("{what}: the agent stopped before answering; check the history"),
        };
        st.set_result(&key, &text);
        let _ = done_tx.send(text);
    });
    match tokio::time::timeout(WAIT, done_rx).await {
        Ok(Ok(text)) => {
            let status = if text.contains(" failed: ") {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            message(status, Some(&who), "Done", &text, &back)
        }
        _ => message(
            StatusCode::ACCEPTED,
            Some(&who),
            "Running",
            &format!(
                "{} is running; the app's page follows its progress",
                action.label()
            ),
            &back,
        ),
    }
}

/// The operations-API request an action is; `None` when it needs an
/// exact version and has none.
fn request(
    a: Action,
    app: &str,
    version: Option<VersionRequest>,
    reason: &str,
    seen: Option<Seen>,
    allow_major: bool,
) -> Option<Request> {
    let app = app.to_string();
    let exact = |v: Option<VersionRequest>| match v {
        Some(VersionRequest::Exact(v)) => Some(v),
        _ => None,
    };
    Some(match a {
        Action::Deploy => Request::Deploy {
            app,
            version: version.unwrap_or(VersionRequest::Latest),
            allow_downgrade: false,
            allow_major,
            force: false,
            seen,
            reason: Some(reason.to_string()),
        },
        Action::Promote => Request::Promote {
            app,
            version: exact(version)?,
            force: false,
            allow_major,
            skip_lifecycle: false,
            seen,
            reason: Some(reason.to_string()),
        },
        Action::Revert => Request::Revert {
            app,
            to: None,
            seen,
            reason: Some(reason.to_string()),
        },
        Action::Hold => Request::Hold {
            app,
            reason: Some(reason.to_string()),
        },
        Action::Unhold => Request::Unhold { app },
        Action::Quarantine => Request::Quarantine {
            app,
            version: exact(version)?,
            reason: Some(reason.to_string()),
        },
        Action::Unquarantine => Request::Unquarantine {
            app,
            version: exact(version)?,
        },
        Action::MaintenanceOn => Request::Maintenance {
            app,
            on: true,
            message: reason.to_string(),
        },
        Action::MaintenanceOff => Request::Maintenance {
            app,
            on: false,
            message: String::new(),
        },
        Action::Backup => Request::BackupCreate { app },
    })
}

/// One line for what an action did.
fn summary(o: &Outcome) -> String {
    match o {
        Outcome::Switched(r) if r.changed => format!("{} is live", r.to),
        Outcome::Switched(r) => format!("{} was live already", r.to),
        Outcome::Deployed(d) if d.already_live => format!("{} was live already", d.to),
        Outcome::Deployed(d) => format!("{} is live (deploy {})", d.to, d.id),
        Outcome::Held(h) => format!("held: {}", h.reason),
        Outcome::Unheld { lifted: Some(_) } => "hold lifted".into(),
        Outcome::Unheld { lifted: None } => "it was not held".into(),
        Outcome::Quarantined { version, .. } => format!("{version} quarantined"),
        Outcome::Unquarantined {
            version,
            lifted: Some(_),
        } => format!("{version}'s quarantine lifted"),
        Outcome::Unquarantined { version, .. } => format!("{version} was not quarantined"),
        Outcome::Maintenance { on: true, .. } => "maintenance is on".into(),
        Outcome::Maintenance { on: false, .. } => "maintenance is off".into(),
        Outcome::BackupCreated(b) => format!("backup {} taken", b.id),
        _ => "done".into(),
    }
}
