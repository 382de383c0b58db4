//! The agent's HTTP server: GitHub webhooks (`POST /hooks/github`, see
//! [`webhook`]), Prometheus metrics (`GET /metrics`, see [`metrics`]) and its
//! own liveness (`GET /healthz`); every other request gets 404.
//!
//! Nothing here controls a deploy: deploy control is the unix socket,
//! elsewhere.

pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc::UnboundedSender;

use crate::daemon::Trigger;
use crate::daemon::http::webhook::Webhooks;

pub(crate) use crate::daemon::http::metrics::{METRICS_CONTENT_TYPE, Metrics};
pub(crate) use crate::daemon::http::webhook::{WatchingApp, WebhookConfig};

/// What the HTTP server shares between requests: the webhooks (their
/// configuration, the trigger channel to the app tasks, the deliveries
/// already acted on) and the metrics.
pub struct HttpState {
    webhooks: Webhooks,
    metrics: Arc<Metrics>,
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
            webhooks: Webhooks::new(cfg, triggers),
            metrics,
        })
    }

    /// Puts a new webhook configuration in force (on SIGHUP). A delivery
    /// being handled finishes under the configuration it started with. The
    /// remembered delivery ids are kept: a reload must not reopen the door
    /// to a replay.
    pub fn reload(&self, cfg: WebhookConfig) {
        self.webhooks.reload(cfg);
    }
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
    state.webhooks.respond(req, &state.metrics).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::http::webhook::MAX_BODY_BYTES;
    use crate::daemon::http::webhook::sign_payload;

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
    use tower::ServiceExt;

    use crate::daemon::http::metrics::WEBHOOK_OUTCOMES;
    use crate::daemon::http::metrics::tests::{sample_count, value_of};
    use crate::daemon::http::webhook::{
        DELIVERY_HEADER, EVENT_HEADER, MAX_DELIVERY_ID_BYTES, SIGNATURE_HEADER,
    };

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

    #[tokio::test]
    async fn github_test_vector_authenticates() {
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
        let text = std::str::from_utf8(&body).expect("UTF-8");
        // The webhook outcomes at 0, and build_info.
        assert_eq!(sample_count(text), WEBHOOK_OUTCOMES.len() + 1, "{text}");
        assert!(text.contains("switchyard_build_info{version=\""), "{text}");

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
}
