//! An in-process mock of the GitHub REST API on 127.0.0.1, plus a second
//! server standing in for the storage host the asset endpoint redirects to.
//!
//! Its JSON is built from real recorded GitHub answers in
//! `tests/fixtures/github-api/` (a release from octocrab's recording of
//! `GET /repos/{o}/{r}/releases`, an asset from GitHub's docs example with its
//! `digest`), rewritten to point at the mock. Headers follow the octokit
//! recordings: `ETag`, `Link` to `/repositories/{id}/releases?page=N`,
//! `X-RateLimit-*`, and a `302` from the asset endpoint to another host.
//! Issues (failure reports) start from a recorded issue of octokit's
//! `paginate-issues` scenario. Every request is recorded (host, path,
//! headers, time) so tests can assert what was sent and how often.
#![allow(dead_code, clippy::disallowed_methods)]

pub(crate) mod deployments;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use sha2::Digest;

pub(crate) const OWNER: &str = "acme";
pub(crate) const REPO: &str = "web";
/// The repository id used in `Link` URLs, as GitHub does.
pub(crate) const REPO_ID: u64 = 1000;

/// Which server saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Api,
    Storage,
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub host: Host,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub status: u16,
    pub at: SystemTime,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A scripted failure, answered instead of the real thing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// A plain status with GitHub's error body.
    Status(u16),
    /// 403 with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` at this
    /// Unix time (see [`in_secs`]).
    RateLimit { reset_at: i64 },
    /// 429 with `Retry-After`.
    RetryAfter(u64),
    /// Closes the answer abruptly (a connection-level failure): a 200 whose
    /// body is shorter than its Content-Length.
    Truncate,
    /// On the storage host: a 200 that sends the first half of the asset,
    /// then breaks the connection (a download cut mid-stream).
    CutHalfway,
}

#[derive(Debug, Clone)]
pub(crate) struct MockAsset {
    pub id: u64,
    pub name: String,
    pub data: Vec<u8>,
    pub state: String,
    /// `Some(None)`: no digest field; `None`: the real SHA-256.
    pub digest: Option<Option<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct MockRelease {
    pub id: u64,
    pub tag: String,
    pub name: Option<String>,
    pub draft: bool,
    pub prerelease: bool,
    pub published_at: String,
    pub body: Option<String>,
    pub assets: Vec<MockAsset>,
}

#[derive(Debug, Clone)]
pub(crate) struct MockIssue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
    pub authorization: Option<String>,
}

pub(crate) struct MockState {
    /// Listing order: newest created first, as GitHub lists.
    pub releases: Vec<MockRelease>,
    /// Largest page the mock serves, whatever `per_page` asks.
    pub page_size: usize,
    /// A private repository: every API request needs `Bearer <token>`, or 404.
    pub token: Option<String>,
    /// The asset endpoint answers 302 to the storage host.
    pub redirect: bool,
    /// Failures to answer first, per path.
    pub faults: HashMap<String, VecDeque<Fault>>,
    /// Served instead of the asset's bytes (a tampered download), by asset id.
    pub tampered: HashMap<u64, Vec<u8>>,
    pub seen: Vec<Seen>,
    /// Issues opened through the API (failure reports), with their comments.
    pub issues: Vec<MockIssue>,
    /// Deployments (the fleet ledger), oldest first.
    pub deployments: Vec<deployments::MockDeployment>,
    /// The fake clock file whose time stamps deployments and statuses.
    pub clock_file: Option<PathBuf>,
    deployment_template: serde_json::Value,
    status_template: serde_json::Value,
    release_template: serde_json::Value,
    asset_template: serde_json::Value,
    issue_template: serde_json::Value,
    next_id: u64,
}

pub(crate) struct MockGithub {
    pub api: SocketAddr,
    pub storage: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for MockGithub {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Unix time `n` seconds from now (whole seconds, as `X-RateLimit-Reset`).
pub(crate) fn in_secs(n: i64) -> i64 {
    now_secs() + n
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sha256_hex(d: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(d))
}

impl MockGithub {
    /// Starts both servers.
    pub(crate) fn start() -> MockGithub {
        let data = crate::common::fixture("github-api");
        let list: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("octocrab/repos_releases_list.json")).unwrap(),
        )
        .unwrap();
        let docs: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("github-docs/list-releases.example.json")).unwrap(),
        )
        .unwrap();
        let issues: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("octokit-fixtures/paginate-issues.normalized-fixture.json"))
                .unwrap(),
        )
        .unwrap();
        let deployment: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("octocrab/repo_deployment.json")).unwrap(),
        )
        .unwrap();
        let statuses: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("octocrab/repo_deployment_statuses.json")).unwrap(),
        )
        .unwrap();
        let state = Arc::new(Mutex::new(MockState {
            deployments: Vec::new(),
            clock_file: None,
            deployment_template: deployment,
            status_template: statuses[0].clone(),
            releases: Vec::new(),
            page_size: 100,
            token: None,
            redirect: true,
            faults: HashMap::new(),
            tampered: HashMap::new(),
            seen: Vec::new(),
            issues: Vec::new(),
            release_template: list[0].clone(),
            asset_template: docs[0]["assets"][0].clone(),
            issue_template: issues[0]["response"][0].clone(),
            next_id: 150_000_000,
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (api, storage) = rt.block_on(async {
            let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let s = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (a, s)
        });
        let api_addr = api.local_addr().unwrap();
        let storage_addr = storage.local_addr().unwrap();
        let ctx = Ctx {
            state: state.clone(),
            api: api_addr,
            storage: storage_addr,
        };
        let api_app = axum::Router::new()
            .fallback(api_handler)
            .with_state(ctx.clone());
        let storage_app = axum::Router::new()
            .fallback(storage_handler)
            .with_state(ctx);
        rt.spawn(async move { axum::serve(api, api_app).await.unwrap() });
        rt.spawn(async move { axum::serve(storage, storage_app).await.unwrap() });
        MockGithub {
            api: api_addr,
            storage: storage_addr,
            state,
            rt: Some(rt),
        }
    }

    pub(crate) fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a release at the end of the listing (so: the oldest created).
    pub(crate) fn push(&self, r: MockRelease) {
        self.with(|s| s.releases.push(r));
    }

    /// A release whose assets are every file in `dir` (a `switchyard pack` output).
    pub(crate) fn release_from_dir(&self, tag: &str, dir: &Path) -> MockRelease {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let assets = names
            .into_iter()
            .map(|n| self.asset(&n, std::fs::read(dir.join(&n)).unwrap()))
            .collect();
        self.release(tag, assets)
    }

    pub(crate) fn release(&self, tag: &str, assets: Vec<MockAsset>) -> MockRelease {
        MockRelease {
            id: self.id(),
            tag: tag.to_string(),
            name: Some(tag.to_string()),
            draft: false,
            prerelease: false,
            published_at: "2024-04-09T10:50:08Z".to_string(),
            body: Some(format!("Release {tag}\n\n- changes")),
            assets,
        }
    }

    pub(crate) fn asset(&self, name: &str, data: Vec<u8>) -> MockAsset {
        MockAsset {
            id: self.id(),
            name: name.to_string(),
            data,
            state: "uploaded".to_string(),
            digest: None,
        }
    }

    fn id(&self) -> u64 {
        self.with(|s| {
            s.next_id += 1;
            s.next_id
        })
    }

    /// Scripts failures on a path (answered in order, before normal answers).
    pub(crate) fn fail(&self, path: &str, faults: &[Fault]) {
        self.with(|s| {
            s.faults
                .entry(path.to_string())
                .or_default()
                .extend(faults.iter().cloned())
        });
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    /// Requests on the API host per `Authorization` header (each simulated
    /// host has a token of its own) and path, for request budgets.
    pub(crate) fn api_hits_by_token(&self) -> HashMap<String, Vec<Seen>> {
        let mut out: HashMap<String, Vec<Seen>> = HashMap::new();
        for s in self.seen().into_iter().filter(|s| s.host == Host::Api) {
            let t = s.header("authorization").unwrap_or("").to_string();
            out.entry(t).or_default().push(s);
        }
        out
    }

    /// Every deployment, oldest first.
    pub(crate) fn deployments(&self) -> Vec<deployments::MockDeployment> {
        self.with(|s| s.deployments.clone())
    }

    pub(crate) fn deployments_path() -> String {
        format!("/repos/{OWNER}/{REPO}/deployments")
    }

    /// Requests to `path` on the API host.
    pub(crate) fn api_hits(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.host == Host::Api && s.path == path)
            .collect()
    }

    pub(crate) fn storage_hits(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.host == Host::Storage)
            .collect()
    }

    pub(crate) fn list_path() -> String {
        format!("/repos/{OWNER}/{REPO}/releases")
    }

    pub(crate) fn asset_path(id: u64) -> String {
        format!("/repos/{OWNER}/{REPO}/releases/assets/{id}")
    }

    pub(crate) fn asset_id(&self, tag: &str, name: &str) -> u64 {
        self.with(|s| {
            s.releases
                .iter()
                .find(|r| r.tag == tag)
                .and_then(|r| r.assets.iter().find(|a| a.name == name))
                .map(|a| a.id)
                .unwrap_or_else(|| panic!("no asset {name} in {tag}"))
        })
    }
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<MockState>>,
    api: SocketAddr,
    storage: SocketAddr,
}

fn record(ctx: &Ctx, host: Host, req: &Request, status: u16) {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    ctx.state.lock().unwrap().seen.push(Seen {
        host,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers,
        status,
        at: SystemTime::now(),
    });
}

fn rate_headers(b: axum::http::response::Builder, remaining: u64) -> axum::http::response::Builder {
    b.header("X-RateLimit-Limit", "5000")
        .header("X-RateLimit-Remaining", remaining.to_string())
        .header("X-RateLimit-Reset", (now_secs() + 3600).to_string())
        .header("X-RateLimit-Used", (5000 - remaining).to_string())
        .header("X-RateLimit-Resource", "core")
        .header("X-GitHub-Media-Type", "github.v3; format=json")
}

fn error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/releases/releases#list-releases",
        "status": status.to_string(),
    });
    rate_headers(Response::builder().status(status), 4999)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn fault_response(f: &Fault) -> Response {
    match f {
        Fault::Status(s) => error(*s, if *s >= 500 { "Server Error" } else { "Not Found" }),
        Fault::RateLimit { reset_at } => Response::builder()
            .status(403)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-RateLimit-Limit", "60")
            .header("X-RateLimit-Remaining", "0")
            .header("X-RateLimit-Reset", reset_at.to_string())
            .header("X-RateLimit-Used", "60")
            .header("X-RateLimit-Resource", "core")
            .body(Body::from(
                serde_json::json!({
                    "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)",
                    "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
                })
                .to_string(),
            ))
            .unwrap(),
        Fault::RetryAfter(secs) => Response::builder()
            .status(429)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Retry-After", secs.to_string())
            .body(Body::from(
                serde_json::json!({
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
                })
                .to_string(),
            ))
            .unwrap(),
        Fault::CutHalfway => unreachable!("answered by the storage host with the asset's bytes"),
        Fault::Truncate => Response::builder()
            .status(200)
            .header("Content-Length", "100000")
            .body(Body::from(vec![0u8; 10]))
            .unwrap(),
    }
}

fn asset_json(s: &MockState, api: SocketAddr, r: &MockRelease, a: &MockAsset) -> serde_json::Value {
    let mut j = s.asset_template.clone();
    let base = format!("http://{api}");
    j["url"] = format!("{base}/repos/{OWNER}/{REPO}/releases/assets/{}", a.id).into();
    j["browser_download_url"] = format!(
        "https://github.com/{OWNER}/{REPO}/releases/download/{}/{}",
        r.tag, a.name
    )
    .into();
    j["id"] = a.id.into();
    j["node_id"] = format!("RA_kwDOMock{}", a.id).into();
    j["name"] = a.name.clone().into();
    j["label"] = serde_json::Value::Null;
    j["state"] = a.state.clone().into();
    j["content_type"] = if a.name.ends_with(".tar.gz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
    .into();
    j["size"] = a.data.len().into();
    match &a.digest {
        None => j["digest"] = format!("sha256:{}", sha256_hex(&a.data)).into(),
        Some(Some(d)) => j["digest"] = d.clone().into(),
        Some(None) => {
            j.as_object_mut().unwrap().remove("digest");
        }
    }
    j["created_at"] = r.published_at.clone().into();
    j["updated_at"] = r.published_at.clone().into();
    j
}

fn release_json(s: &MockState, api: SocketAddr, r: &MockRelease) -> serde_json::Value {
    let mut j = s.release_template.clone();
    let base = format!("http://{api}");
    j["url"] = format!("{base}/repos/{OWNER}/{REPO}/releases/{}", r.id).into();
    j["assets_url"] = format!("{base}/repos/{OWNER}/{REPO}/releases/{}/assets", r.id).into();
    j["upload_url"] = format!(
        "https://uploads.github.com/repos/{OWNER}/{REPO}/releases/{}/assets{{?name,label}}",
        r.id
    )
    .into();
    j["html_url"] = format!("https://github.com/{OWNER}/{REPO}/releases/tag/{}", r.tag).into();
    j["tarball_url"] = format!("{base}/repos/{OWNER}/{REPO}/tarball/{}", r.tag).into();
    j["zipball_url"] = format!("{base}/repos/{OWNER}/{REPO}/zipball/{}", r.tag).into();
    j["id"] = r.id.into();
    j["node_id"] = format!("RE_kwDOMock{}", r.id).into();
    j["tag_name"] = r.tag.clone().into();
    j["name"] = r.name.clone().into();
    j["body"] = r.body.clone().into();
    j["draft"] = r.draft.into();
    j["prerelease"] = r.prerelease.into();
    j["created_at"] = r.published_at.clone().into();
    j["published_at"] = if r.draft {
        serde_json::Value::Null
    } else {
        r.published_at.clone().into()
    };
    j["assets"] = r
        .assets
        .iter()
        .map(|a| asset_json(s, api, r, a))
        .collect::<Vec<_>>()
        .into();
    j
}

fn query_param(q: &str, key: &str) -> Option<usize> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn authorized(s: &MockState, h: &HeaderMap) -> bool {
    match &s.token {
        None => true,
        Some(t) => h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {t}") || v == format!("token {t}")),
    }
}

async fn api_handler(State(ctx): State<Ctx>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let req = Request::from_parts(parts, axum::body::Body::empty());
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let resp = {
        let mut s = ctx.state.lock().unwrap();
        // GitHub Enterprise serves the API under /api/v3.
        let (prefix, rest) = match path.strip_prefix("/api/v3") {
            Some(r) => ("/api/v3", r.to_string()),
            None => ("", path.clone()),
        };
        // Rewrite GitHub's `/repositories/{id}/...` pagination form.
        let canonical = rest.replace(
            &format!("/repositories/{REPO_ID}/"),
            &format!("/repos/{OWNER}/{REPO}/"),
        );
        let fault = s.faults.get_mut(&canonical).and_then(|q| q.pop_front());
        if let Some(f) = fault {
            fault_response(&f)
        } else if !authorized(&s, req.headers()) {
            // A private repository is invisible without its token.
            error(404, "Not Found")
        } else if canonical == format!("/repos/{OWNER}/{REPO}/issues") {
            issues(&mut s, ctx.api, req.method().as_str(), req.headers(), &body)
        } else if let Some(n) = canonical
            .strip_prefix(&format!("/repos/{OWNER}/{REPO}/issues/"))
            .and_then(|r| r.strip_suffix("/comments"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            let text = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["body"].as_str().map(String::from))
                .unwrap_or_default();
            let user = s.issue_template["user"].clone();
            match s.issues.iter_mut().find(|i| i.number == n) {
                Some(i) => {
                    i.comments.push(text.clone());
                    let id = 1000 + i.comments.len();
                    let c = serde_json::json!({
                        "id": id,
                        "node_id": format!("IC_kwDOMock{id}"),
                        "url": format!("http://{}/repos/{OWNER}/{REPO}/issues/comments/{id}", ctx.api),
                        "html_url": format!("https://github.com/{OWNER}/{REPO}/issues/{n}#issuecomment-{id}"),
                        "issue_url": format!("http://{}/repos/{OWNER}/{REPO}/issues/{n}", ctx.api),
                        "body": text,
                        "user": user,
                        "author_association": "NONE",
                        "created_at": "2024-04-09T10:50:08Z",
                        "updated_at": "2024-04-09T10:50:08Z",
                    });
                    axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::CREATED,
                        axum::Json(c),
                    ))
                }
                None => error(404, "Not Found"),
            }
        } else if let Some(r) = deployments::route(
            &mut s,
            ctx.api,
            prefix,
            req.method().as_str(),
            &canonical,
            &query,
            req.headers(),
            &body,
        ) {
            r
        } else if canonical == format!("/repos/{OWNER}/{REPO}/releases") {
            list(&s, ctx.api, prefix, &query, req.headers())
        } else if let Some(id) = canonical
            .strip_prefix(&format!("/repos/{OWNER}/{REPO}/releases/assets/"))
            .and_then(|i| i.parse::<u64>().ok())
        {
            asset(&s, &ctx, id, req.headers())
        } else {
            error(404, "Not Found")
        }
    };
    record(&ctx, Host::Api, &req, resp.status().as_u16());
    resp
}

fn issue_json(s: &MockState, api: SocketAddr, i: &MockIssue) -> serde_json::Value {
    let mut j = s.issue_template.clone();
    let url = format!("http://{api}/repos/{OWNER}/{REPO}/issues/{}", i.number);
    j["url"] = url.clone().into();
    j["repository_url"] = format!("http://{api}/repos/{OWNER}/{REPO}").into();
    j["labels_url"] = format!("{url}/labels{{/name}}").into();
    j["comments_url"] = format!("{url}/comments").into();
    j["events_url"] = format!("{url}/events").into();
    j["html_url"] = format!("https://github.com/{OWNER}/{REPO}/issues/{}", i.number).into();
    j["id"] = (2000 + i.number).into();
    j["number"] = i.number.into();
    j["title"] = i.title.clone().into();
    j["body"] = i.body.clone().into();
    j["comments"] = i.comments.len().into();
    j["labels"] = i
        .labels
        .iter()
        .enumerate()
        .map(|(k, l)| {
            serde_json::json!({
                "id": 300 + k, "node_id": format!("LA_kwDOMock{k}"),
                "url": format!("http://{api}/repos/{OWNER}/{REPO}/labels/{l}"),
                "name": l, "color": "ededed", "default": false, "description": null,
            })
        })
        .collect::<Vec<_>>()
        .into();
    j
}

fn issues(
    s: &mut MockState,
    api: SocketAddr,
    method: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Response {
    if method == "POST" {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let issue = MockIssue {
            number: s.issues.len() as u64 + 1,
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            labels: v["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            comments: Vec::new(),
            authorization: h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        };
        let out = issue_json(s, api, &issue);
        s.issues.push(issue);
        return axum::response::IntoResponse::into_response((
            axum::http::StatusCode::CREATED,
            axum::Json(out),
        ));
    }
    let all: Vec<_> = s.issues.iter().map(|i| issue_json(s, api, i)).collect();
    axum::response::IntoResponse::into_response(axum::Json(all))
}

fn list(s: &MockState, api: SocketAddr, prefix: &str, query: &str, h: &HeaderMap) -> Response {
    let per_page = query_param(query, "per_page")
        .unwrap_or(30)
        .min(s.page_size)
        .max(1);
    let page = query_param(query, "page").unwrap_or(1).max(1);
    let all: Vec<serde_json::Value> = s.releases.iter().map(|r| release_json(s, api, r)).collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let items: Vec<_> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let body = serde_json::Value::from(items).to_string();
    let etag = format!("W/\"{}\"", sha256_hex(body.as_bytes()));
    let link = |p: usize| {
        format!(
            "<http://{api}{prefix}/repositories/{REPO_ID}/releases?per_page={per_page}&page={p}>"
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

fn find_asset(s: &MockState, id: u64) -> Option<(&MockRelease, &MockAsset)> {
    s.releases
        .iter()
        .find_map(|r| r.assets.iter().find(|a| a.id == id).map(|a| (r, a)))
}

fn asset(s: &MockState, ctx: &Ctx, id: u64, h: &HeaderMap) -> Response {
    let Some((r, a)) = find_asset(s, id) else {
        return error(404, "Not Found");
    };
    let octet = h
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/octet-stream"));
    if !octet {
        return rate_headers(Response::builder(), 4990)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(Body::from(asset_json(s, ctx.api, r, a).to_string()))
            .unwrap();
    }
    if s.redirect {
        // Like objects.githubusercontent.com: a signed, short-lived URL.
        return Response::builder()
            .status(302)
            .header(
                "Location",
                format!(
                    "http://{}/github-production-release-asset/{id}?X-Amz-Signature=mock&response-content-disposition=attachment",
                    ctx.storage
                ),
            )
            .header("Content-Length", "0")
            .body(Body::empty())
            .unwrap();
    }
    bytes(s, a)
}

fn bytes(s: &MockState, a: &MockAsset) -> Response {
    let data = s
        .tampered
        .get(&a.id)
        .cloned()
        .unwrap_or_else(|| a.data.clone());
    Response::builder()
        .status(200)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string())
        .header(
            "Content-Disposition",
            format!("attachment; filename={}", a.name),
        )
        .body(Body::from(data))
        .unwrap()
}

async fn storage_handler(State(ctx): State<Ctx>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let resp = {
        let mut s = ctx.state.lock().unwrap();
        let key = format!("storage:{path}");
        let fault = s.faults.get_mut(&key).and_then(|q| q.pop_front());
        let id = path
            .strip_prefix("/github-production-release-asset/")
            .and_then(|i| i.parse::<u64>().ok());
        match (fault, id.and_then(|id| find_asset(&s, id))) {
            (Some(Fault::CutHalfway), Some((_, a))) => {
                let half = bytes::Bytes::copy_from_slice(&a.data[..a.data.len() / 2]);
                // The half is sent and received before the cut: an error
                // right away would end the connection before the headers.
                let body = futures_util::stream::unfold(Some(half), |half| async move {
                    match half {
                        Some(h) => Some((Ok::<_, std::io::Error>(h), None)),
                        None => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Some((
                                Err(std::io::Error::other("the mock cuts the connection")),
                                None,
                            ))
                        }
                    }
                });
                Response::builder()
                    .status(200)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", a.data.len().to_string())
                    .body(Body::from_stream(body))
                    .unwrap()
            }
            (Some(f), _) => fault_response(&f),
            (None, Some((_, a))) => bytes(&s, a),
            (None, None) => Response::builder()
                .status(404)
                .body(Body::from("<Error><Code>NoSuchKey</Code></Error>"))
                .unwrap(),
        }
    };
    record(&ctx, Host::Storage, &req, resp.status().as_u16());
    resp
}

/// Waits until `f` holds or a few seconds pass.
pub(crate) fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
