//! The Deployments API of the mock (issue #15's fleet ledger):
//! `GET/POST /repos/{o}/{r}/deployments` and
//! `GET/POST /repos/{o}/{r}/deployments/{id}/statuses`, shaped as GitHub
//! documents them (templates: octocrab's recorded answers in
//! `tests/fixtures/github-api/octocrab/repo_deployment*.json`).
//!
//! As GitHub does: listings are newest first, filtered by `environment`,
//! `ref`, `task` and `sha`, paginated with `Link` and answered `304` to a
//! matching `If-None-Match`; creating a deployment of a ref that does not
//! exist (no release has that tag) is a `422`; a `success` status with
//! `auto_inactive` left at its default marks the earlier successful
//! deployments of the same non-production environment `inactive`.
//! Timestamps come from the test's fake clock file when one is set.
#![allow(dead_code, clippy::disallowed_methods)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;

use super::{MockState, OWNER, REPO, REPO_ID, error, query_param, rate_headers, sha256_hex};

/// One status of a deployment.
#[derive(Debug, Clone)]
pub(crate) struct MockStatus {
    pub id: u64,
    pub state: String,
    pub description: String,
    pub created_at: String,
    /// What the request said (`None`: left at GitHub's default, true).
    pub auto_inactive: Option<bool>,
}

/// One deployment.
#[derive(Debug, Clone)]
pub(crate) struct MockDeployment {
    pub id: u64,
    pub git_ref: String,
    pub task: String,
    pub environment: String,
    pub payload: serde_json::Value,
    pub description: String,
    pub created_at: String,
    pub transient: bool,
    pub production: bool,
    /// Oldest first.
    pub statuses: Vec<MockStatus>,
    /// The `Authorization` header that created it (which host).
    pub authorization: Option<String>,
    /// The request body as sent.
    pub request: serde_json::Value,
}

impl MockDeployment {
    /// The latest state, `None` before any status.
    pub(crate) fn state(&self) -> Option<&str> {
        self.statuses.last().map(|s| s.state.as_str())
    }

    /// A payload field as a string.
    pub(crate) fn field(&self, k: &str) -> String {
        match &self.payload[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        }
    }
}

const STATES: &[&str] = &[
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];

fn now(s: &MockState) -> String {
    if let Some(p) = &s.clock_file
        && let Ok(t) = std::fs::read_to_string(p)
        && let Ok(ts) = t.trim().parse::<jiff::Timestamp>()
    {
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The login of the deployment's creator: GitHub takes it from the token,
/// so the mock does too. The operators' CLI tokens (`cli-…`) belong to
/// [`OPERATOR_LOGIN`]; any other token is a host's, whose login is the token
/// itself (`tok-h01`); no token, the fixture's `octocat`.
pub(crate) fn creator_login(authorization: Option<&str>) -> String {
    let token = authorization
        .map(|a| a.trim_start_matches("Bearer ").trim_start_matches("token "))
        .filter(|t| !t.is_empty());
    match token {
        Some(t) if t.starts_with("cli-") => OPERATOR_LOGIN.to_string(),
        Some(t) => t.to_string(),
        None => "octocat".to_string(),
    }
}

/// The GitHub login of the operators' CLI tokens.
pub(crate) const OPERATOR_LOGIN: &str = "fleet-operator";

fn deployment_json(s: &MockState, api: SocketAddr, d: &MockDeployment) -> serde_json::Value {
    let mut j = s.deployment_template.clone();
    let base = format!("http://{api}/repos/{OWNER}/{REPO}");
    j["url"] = format!("{base}/deployments/{}", d.id).into();
    j["id"] = d.id.into();
    j["node_id"] = format!("DE_kwDOMock{}", d.id).into();
    j["sha"] = sha256_hex(d.git_ref.as_bytes())[..40].to_string().into();
    j["ref"] = d.git_ref.clone().into();
    j["task"] = d.task.clone().into();
    j["payload"] = d.payload.clone();
    j["creator"]["login"] = creator_login(d.authorization.as_deref()).into();
    j["original_environment"] = d.environment.clone().into();
    j["environment"] = d.environment.clone().into();
    j["description"] = d.description.clone().into();
    j["created_at"] = d.created_at.clone().into();
    j["updated_at"] = d
        .statuses
        .last()
        .map_or(d.created_at.clone(), |st| st.created_at.clone())
        .into();
    j["statuses_url"] = format!("{base}/deployments/{}/statuses", d.id).into();
    j["repository_url"] = base.into();
    j["transient_environment"] = d.transient.into();
    j["production_environment"] = d.production.into();
    j
}

fn status_json(
    s: &MockState,
    api: SocketAddr,
    d: &MockDeployment,
    st: &MockStatus,
) -> serde_json::Value {
    let mut j = s.status_template.clone();
    let base = format!("http://{api}/repos/{OWNER}/{REPO}");
    j["url"] = format!("{base}/deployments/{}/statuses/{}", d.id, st.id).into();
    j["id"] = st.id.into();
    j["node_id"] = format!("DES_kwDOMock{}", st.id).into();
    j["state"] = st.state.clone().into();
    j["description"] = st.description.clone().into();
    j["environment"] = d.environment.clone().into();
    j["target_url"] = "".into();
    j["log_url"] = "".into();
    j["environment_url"] = "".into();
    j["created_at"] = st.created_at.clone().into();
    j["updated_at"] = st.created_at.clone().into();
    j["deployment_url"] = format!("{base}/deployments/{}", d.id).into();
    j["repository_url"] = base.into();
    j
}

fn query_str(q: &str, key: &str) -> Option<String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn created(v: serde_json::Value) -> Response {
    axum::response::IntoResponse::into_response((axum::http::StatusCode::CREATED, axum::Json(v)))
}

fn unprocessable(message: &str) -> Response {
    error(422, message)
}

/// Paginated, ETag'd JSON listing, as `list` does for releases.
fn paged(
    items: Vec<serde_json::Value>,
    api: SocketAddr,
    prefix: &str,
    path_tail: &str,
    query: &str,
    page_size: usize,
    h: &HeaderMap,
) -> Response {
    let per_page = query_param(query, "per_page")
        .unwrap_or(30)
        .min(page_size)
        .max(1);
    let page = query_param(query, "page").unwrap_or(1).max(1);
    let pages = items.len().div_ceil(per_page).max(1);
    let items: Vec<_> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let body = serde_json::Value::from(items).to_string();
    let etag = format!("W/\"{}\"", sha256_hex(body.as_bytes()));
    // Keep the filters on every link, as GitHub does.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("page=") && !kv.starts_with("per_page=") && !kv.is_empty())
        .collect();
    let link = |p: usize| {
        let mut q = kept.join("&");
        if !q.is_empty() {
            q.push('&');
        }
        format!(
            "<http://{api}{prefix}/repositories/{REPO_ID}/{path_tail}?{q}per_page={per_page}&page={p}>"
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link(page - 1)));
    }
    if page < pages {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
        links.push(format!("{}; rel=\"last\"", link(pages)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
    }
    let not_modified = h
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut b = rate_headers(Response::builder(), 4990)
        .header("ETag", &etag)
        .header("Cache-Control", "private, max-age=60, s-maxage=60")
        .header("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP");
    if !links.is_empty() {
        b = b.header("Link", links.join(", "));
    }
    if not_modified {
        return b.status(304).body(Body::empty()).unwrap();
    }
    b.status(200)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Body::from(body))
        .unwrap()
}

/// Answers a Deployments request, or `None` when `path` is not one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn route(
    s: &mut MockState,
    api: SocketAddr,
    prefix: &str,
    method: &str,
    path: &str,
    query: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let base = format!("/repos/{OWNER}/{REPO}/deployments");
    let rest = path.strip_prefix(&base)?;
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if rest.is_empty() {
        return Some(match method {
            "POST" => create(s, api, body, auth),
            _ => {
                let env = query_str(query, "environment");
                let git_ref = query_str(query, "ref");
                let task = query_str(query, "task");
                let items: Vec<_> = s
                    .deployments
                    .iter()
                    .rev()
                    .filter(|d| env.as_ref().is_none_or(|e| &d.environment == e))
                    .filter(|d| git_ref.as_ref().is_none_or(|r| &d.git_ref == r))
                    .filter(|d| task.as_ref().is_none_or(|t| &d.task == t))
                    .map(|d| deployment_json(s, api, d))
                    .collect();
                paged(items, api, prefix, "deployments", query, s.page_size, h)
            }
        });
    }
    let (id, tail) = rest
        .strip_prefix('/')?
        .split_once('/')
        .unwrap_or((rest.strip_prefix('/')?, ""));
    let id: u64 = id.parse().ok()?;
    let Some(idx) = s.deployments.iter().position(|d| d.id == id) else {
        return Some(error(404, "Not Found"));
    };
    match (method, tail) {
        ("GET", "") => Some(
            rate_headers(Response::builder(), 4990)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(Body::from(
                    deployment_json(s, api, &s.deployments[idx]).to_string(),
                ))
                .unwrap(),
        ),
        ("GET", "statuses") => {
            let d = &s.deployments[idx];
            let items: Vec<_> = d
                .statuses
                .iter()
                .rev()
                .map(|st| status_json(s, api, d, st))
                .collect();
            Some(paged(
                items,
                api,
                prefix,
                &format!("deployments/{id}/statuses"),
                query,
                s.page_size,
                h,
            ))
        }
        ("POST", "statuses") => Some(post_status(s, api, idx, body)),
        _ => None,
    }
}

fn create(s: &mut MockState, api: SocketAddr, body: &[u8], auth: Option<String>) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(400, "Problems parsing JSON");
    };
    let Some(git_ref) = v["ref"].as_str() else {
        return unprocessable("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    if !s.releases.iter().any(|r| r.tag == git_ref) {
        return unprocessable(&format!("No ref found for: {git_ref}"));
    }
    let environment = v["environment"]
        .as_str()
        .unwrap_or("production")
        .to_string();
    s.next_id += 1;
    let d = MockDeployment {
        id: s.next_id,
        git_ref: git_ref.to_string(),
        task: v["task"].as_str().unwrap_or("deploy").to_string(),
        production: v["production_environment"]
            .as_bool()
            .unwrap_or(environment == "production"),
        transient: v["transient_environment"].as_bool().unwrap_or(false),
        environment,
        payload: match &v["payload"] {
            serde_json::Value::Null => serde_json::json!({}),
            // GitHub also accepts the payload as a JSON string.
            serde_json::Value::String(t) => serde_json::from_str(t).unwrap_or_default(),
            p => p.clone(),
        },
        description: v["description"].as_str().unwrap_or("").to_string(),
        created_at: now(s),
        statuses: Vec::new(),
        authorization: auth,
        request: v.clone(),
    };
    let out = deployment_json(s, api, &d);
    s.deployments.push(d);
    created(out)
}

fn post_status(s: &mut MockState, api: SocketAddr, idx: usize, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error(400, "Problems parsing JSON");
    };
    let state = v["state"].as_str().unwrap_or("");
    if !STATES.contains(&state) {
        return unprocessable(&format!(
            "Validation Failed: state {state:?} is not included in the list"
        ));
    }
    let description = v["description"].as_str().unwrap_or("").to_string();
    if description.chars().count() > 140 {
        return unprocessable(
            "Validation Failed: description is too long (maximum is 140 characters)",
        );
    }
    s.next_id += 1;
    let st = MockStatus {
        id: s.next_id,
        state: state.to_string(),
        description,
        created_at: now(s),
        auto_inactive: v["auto_inactive"].as_bool(),
    };
    let d = &s.deployments[idx];
    // GitHub's documented default: a success marks the earlier successful
    // deployments of the same non-transient, non-production environment
    // inactive.
    if state == "success" && st.auto_inactive != Some(false) && !d.transient && !d.production {
        let env = d.environment.clone();
        let id = d.id;
        let at = st.created_at.clone();
        let mut extra = Vec::new();
        for o in s
            .deployments
            .iter()
            .filter(|o| o.environment == env && o.id < id)
        {
            if o.state() == Some("success") {
                extra.push(o.id);
            }
        }
        for oid in extra {
            s.next_id += 1;
            let nid = s.next_id;
            if let Some(o) = s.deployments.iter_mut().find(|o| o.id == oid) {
                o.statuses.push(MockStatus {
                    id: nid,
                    state: "inactive".into(),
                    description: String::new(),
                    created_at: at.clone(),
                    auto_inactive: None,
                });
            }
        }
    }
    let out = status_json(s, api, &s.deployments[idx], &st);
    s.deployments[idx].statuses.push(st);
    created(out)
}
