//! The console's pages: sign-in, the overview, an app's page and its hook
//! logs. Server-rendered with askama (every value HTML-escaped).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::console::ConsoleAuth;
use crate::daemon::console::ConsoleState;
use crate::daemon::console::auth::{self, Refusal, Who};
use crate::daemon::console::view::{self, AppRow, AppView, Filter, HookTail};

/// The page around every other: who is signed in.
pub(crate) struct Frame {
    /// Their name (empty: nobody).
    pub user_name: String,
    /// Their role.
    pub user_role: String,
    /// Their CSRF token.
    pub csrf: String,
    /// Signed in with a session (behind a proxy there is none to end).
    pub can_logout: bool,
}

impl Frame {
    /// The frame for `who`.
    pub(crate) fn of(who: Option<&Who>) -> Frame {
        match who {
            Some(w) => Frame {
                user_name: w.name.clone(),
                user_role: w.role.to_string(),
                csrf: w.csrf.clone(),
                can_logout: w.session.is_some(),
            },
            None => Frame {
                user_name: String::new(),
                user_role: String::new(),
                csrf: String::new(),
                can_logout: false,
            },
        }
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    login_token: String,
    error: String,
}

/// A short page: a heading, a message and a way back.
#[derive(Template)]
#[template(path = "console/message.html")]
pub(crate) struct MessagePage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    heading: String,
    text: String,
    class: String,
    back: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    rows: Vec<AppRow>,
}

#[derive(Template)]
#[template(path = "console/app.html")]
struct AppPage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    v: AppView,
    operator: bool,
    flash: String,
    filter_event: String,
    filter_actor: String,
}

#[derive(Template)]
#[template(path = "console/logs.html")]
struct LogsPage {
    user_name: String,
    user_role: String,
    csrf: String,
    can_logout: bool,
    app: String,
    deploy: String,
    logs: Vec<HookTail>,
}

/// Renders a template as an HTML response with `status`.
pub(crate) fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "console: a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render\n",
            )
                .into_response()
        }
    }
}

/// A message page.
pub(crate) fn message(
    status: StatusCode,
    who: Option<&Who>,
    heading: &str,
    text: &str,
    back: &str,
) -> Response {
    let f = Frame::of(who);
    html(
        status,
        &MessagePage {
            user_name: f.user_name,
            user_role: f.user_role,
            csrf: f.csrf,
            can_logout: f.can_logout,
            heading: heading.to_string(),
            text: text.to_string(),
            class: if status.is_success() {
                "notice"
            } else {
                "error"
            }
            .to_string(),
            back: back.to_string(),
        },
    )
}

/// The answer to a request nobody signed in for: the login page (401),
/// or with proxy authentication a plain 401.
pub(crate) fn refused(
    state: &ConsoleState,
    r: Refusal,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Response {
    match r {
        Refusal::NotFromProxy => (
            StatusCode::UNAUTHORIZED,
            "sign in through the reverse proxy: this console trusts only its configured proxy_addresses\n",
        )
            .into_response(),
        Refusal::NoSession => login_page(state, headers, peer, StatusCode::UNAUTHORIZED, ""),
    }
}

fn login_page(
    state: &ConsoleState,
    headers: &HeaderMap,
    peer: SocketAddr,
    status: StatusCode,
    error: &str,
) -> Response {
    let token = auth::token();
    let secure = auth::over_tls(&state.cfg, peer, headers);
    let mut resp = html(
        status,
        &LoginPage {
            user_name: String::new(),
            user_role: String::new(),
            csrf: String::new(),
            can_logout: false,
            login_token: token.clone(),
            error: error.to_string(),
        },
    );
    if let Ok(v) = auth::login_cookie(&token, secure).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Who sent the request, or the response that refuses it.
pub(crate) fn who(
    state: &ConsoleState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Who, Box<Response>> {
    auth::identify(
        &state.cfg,
        &state.sessions,
        peer,
        headers,
        state.clock.now(),
    )
    .map_err(|r| Box::new(refused(state, r, headers, peer)))
}

/// `GET /login`.
pub(crate) async fn login_form(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let ConsoleAuth::Proxy { .. } = state.cfg.auth {
        return (StatusCode::NOT_FOUND, "sign in through the reverse proxy\n").into_response();
    }
    login_page(&state, &headers, peer, StatusCode::OK, "")
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`: rate-limited per address and per user; an unknown user
/// and a wrong password get the same answer.
pub(crate) async fn login(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let ConsoleAuth::Proxy { .. } = state.cfg.auth {
        return (StatusCode::NOT_FOUND, "sign in through the reverse proxy\n").into_response();
    }
    let expected = auth::cookie(&headers, auth::LOGIN_COOKIE).unwrap_or_default();
    if !auth::same(&form.csrf, &expected) {
        return login_page(
            &state,
            &headers,
            peer,
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this console; sign in again.",
        );
    }
    let addr = auth::client_addr(&state.cfg, peer, &headers);
    let user: String = form.user.trim().chars().take(64).collect();
    let keys = vec![format!("addr:{addr}"), format!("user:{user}")];
    let now = state.clock.now();
    if let Some(wait) = state.limiter.locked(&keys, now) {
        return locked_out(wait);
    }
    let users_file = state.cfg.users_file.clone();
    let password = form.password;
    let name = user.clone();
    // argon2id is slow on purpose: off the runtime, two at a time.
    let permit = state.verifying.acquire().await;
    let role =
        tokio::task::spawn_blocking(move || match crate::ops::console_users::load(&users_file) {
            Ok(users) => users.verify(&name, &password),
            Err(e) => {
                warn!(error = %crate::chain::chain(&e), "console: cannot read the users file");
                None
            }
        })
        .await
        .ok()
        .flatten();
    drop(permit);
    let Some(role) = role else {
        let now = state.clock.now();
        if state.limiter.failed(&keys, now) {
            warn!(user = %user, addr = %addr, "console: login locked after repeated failures");
            if let Some(wait) = state.limiter.locked(&keys, now) {
                return locked_out(wait);
            }
        }
        info!(user = %user, addr = %addr, "console: login failed");
        return login_page(
            &state,
            &headers,
            peer,
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.",
        );
    };
    state.limiter.succeeded(&keys[1..]);
    let id = state
        .sessions
        .open(&user, role, state.clock.now(), state.cfg.session_ttl);
    info!(user = %user, role = %role, addr = %addr, "console: signed in");
    let secure = auth::over_tls(&state.cfg, peer, &headers);
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = auth::session_cookie(&id, state.cfg.session_ttl, secure).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn locked_out(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        format!(
            "too many failed logins: try again in {} minute(s)\n",
            secs.div_ceil(60)
        ),
    )
        .into_response()
}

/// The logout form.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    if !who.csrf_ok(&form.csrf) {
        return message(
            StatusCode::FORBIDDEN,
            Some(&who),
            "Refused",
            "The form's CSRF token is missing or wrong.",
            "/",
        );
    }
    if let Some(id) = &who.session {
        state.sessions.close(id);
    }
    let secure = auth::over_tls(&state.cfg, peer, &headers);
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    if let Ok(v) = auth::cleared_cookie(secure).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /`: every app.
pub(crate) async fn overview(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let apps = state.all_apps();
    let clock = state.clock.clone();
    let rows = tokio::task::spawn_blocking(move || {
        apps.iter()
            .map(|(cfg, src)| view::app_row(cfg, src, &clock))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let f = Frame::of(Some(&who));
    html(
        StatusCode::OK,
        &OverviewPage {
            user_name: f.user_name,
            user_role: f.user_role,
            csrf: f.csrf,
            can_logout: f.can_logout,
            rows,
        },
    )
}

/// `GET /apps/<app>`: `event` and `actor` filter the history.
pub(crate) async fn app(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let Some((cfg, src)) = state.app(&app) else {
        return no_app(&who, &app);
    };
    let filter = Filter {
        event: q.get("event").cloned().unwrap_or_default(),
        actor: q.get("actor").cloned().unwrap_or_default(),
    };
    let clock = state.clock.clone();
    let f2 = filter.clone();
    let v = match tokio::task::spawn_blocking(move || view::app_view(&cfg, &src, &clock, &f2)).await
    {
        Ok(v) => v,
        Err(_) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&who),
                "Error",
                "reading the app failed",
                "/",
            );
        }
    };
    let f = Frame::of(Some(&who));
    html(
        StatusCode::OK,
        &AppPage {
            user_name: f.user_name,
            user_role: f.user_role,
            csrf: f.csrf,
            can_logout: f.can_logout,
            v,
            operator: who.role == crate::ops::console_users::Role::Operator,
            flash: state.last_result(&app).unwrap_or_default(),
            filter_event: filter.event,
            filter_actor: filter.actor,
        },
    )
}

/// `GET /apps/<app>/logs/<deploy>`: that deploy's hook logs, redacted.
pub(crate) async fn logs(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((app, deploy)): Path<(String, String)>,
) -> Response {
    let who = match who(&state, peer, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let Some((cfg, _)) = state.app(&app) else {
        return no_app(&who, &app);
    };
    let id = deploy.clone();
    let logs = tokio::task::spawn_blocking(move || view::hook_logs(&cfg, &id))
        .await
        .unwrap_or_else(|_| Err("reading the logs failed".into()));
    match logs {
        Ok(logs) => {
            let f = Frame::of(Some(&who));
            html(
                StatusCode::OK,
                &LogsPage {
                    user_name: f.user_name,
                    user_role: f.user_role,
                    csrf: f.csrf,
                    can_logout: f.can_logout,
                    app,
                    deploy,
                    logs,
                },
            )
        }
        Err(e) => message(
            StatusCode::NOT_FOUND,
            Some(&who),
            "No such logs",
            &e,
            &format!("/apps/{app}"),
        ),
    }
}

/// The page for an app the agent does not run.
pub(crate) fn no_app(who: &Who, app: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        Some(who),
        "No such app",
        &format!("the agent runs no app named {app:?}"),
        "/",
    )
}
