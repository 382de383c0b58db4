//! Posting a failure report to a chat webhook (`notify_url`).

use reqwest::{Url, redirect};
use tracing::debug;

use super::redact;
use super::{FailureReport, MAX_BODY_CHARS, ReportError, keep_end, origin, sanitized, summary};
use crate::chain::chain;
use crate::source::http::client_builder;

/// A webhook answer that takes longer than this fails.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a chat webhook receives: the report's fields, plus `text`, the
/// one-line summary that Slack-compatible webhooks require to show anything.
#[derive(serde::Serialize)]
struct NotifyPayload<'a> {
    text: String,
    #[serde(flatten)]
    report: &'a FailureReport,
}

/// POSTs the report as JSON (its fields, plus a one-line `text` for
/// Slack-compatible webhooks; the logs tail cut to its last 60 000
/// characters) to a chat webhook: 10 s timeout, no redirects (a redirect
/// could carry the report elsewhere), any non-2xx answer is an error.
pub(crate) async fn notify(url: &str, r: &FailureReport) -> Result<(), ReportError> {
    let mut r = sanitized(r);
    r.logs_tail = keep_end(&r.logs_tail, MAX_BODY_CHARS);
    let payload = NotifyPayload {
        text: summary(&r),
        report: &r,
    };
    post(url, &payload, "post the failure report to notify_url").await?;
    debug!(app = %r.app, version = %r.to_version, "failure report posted to notify_url");
    Ok(())
}

/// POSTs `payload` as JSON to a chat webhook: 10 s timeout, no redirects
/// (a redirect could carry the body elsewhere), any non-2xx answer is an
/// error. `what` names the attempt in errors. The caller redacts.
pub(crate) async fn post(
    url: &str,
    payload: &impl serde::Serialize,
    what: &str,
) -> Result<(), ReportError> {
    let u = Url::parse(url).map_err(|e| ReportError::BadNotifyUrl {
        reason: format!("not a URL ({e})"),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(ReportError::BadNotifyUrl {
            reason: "it must be an http:// or https:// URL with a host".to_string(),
        });
    }
    let host = origin(&u);
    let what = what.to_string();
    let client = client_builder(None)
        .redirect(redirect::Policy::none())
        .timeout(NOTIFY_TIMEOUT)
        .build()
        .map_err(|e| ReportError::Setup {
            reason: redact(&chain(&e.without_url())),
        })?;
    // reqwest's errors name the URL, and a webhook URL is a secret.
    let resp = client
        .post(u)
        .json(payload)
        .send()
        .await
        .map_err(|e| ReportError::Transport {
            what: what.clone(),
            host: host.clone(),
            reason: if e.is_timeout() {
                format!("no answer within {} s", NOTIFY_TIMEOUT.as_secs())
            } else {
                redact(&chain(&e.without_url()))
            },
        })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let hint = if status.is_redirection() {
            "redirects are not followed: set notify_url to the final URL".to_string()
        } else if status.is_server_error() {
            "the chat service is having trouble; the next failure will be posted again".to_string()
        } else {
            "check notify_url (the webhook may have been revoked) and what the chat service expects"
                .to_string()
        };
        return Err(ReportError::Status {
            what,
            host,
            status: status.as_u16(),
            message: redact(&text.trim().chars().take(200).collect::<String>()),
            hint,
        });
    }
    debug!(host = %host, "posted to notify_url");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Json;
    use axum::extract::State;
    use axum::http::{StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use serde_json::Value;

    type Seen = Arc<Mutex<Vec<Value>>>;

    async fn hook(State(m): State<Seen>, uri: Uri, Json(b): Json<Value>) -> Response {
        m.lock().unwrap().push(b);
        if uri.path() == "/fail" {
            return (AxStatus::INTERNAL_SERVER_ERROR, "upstream down").into_response();
        }
        "ok".into_response()
    }

    async fn redirect_hook() -> Response {
        (
            AxStatus::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
        )
            .into_response()
    }

    /// A chat service: `/hook` accepts, `/fail` answers 500, `/moved` redirects.
    async fn mock() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .route("/fail", post(hook))
            .route("/moved", post(redirect_hook))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, seen)
    }

    fn sample(to: &str) -> FailureReport {
        super::super::tests::sample(to)
    }

    #[tokio::test]
    async fn notify_posts_json_and_fails_on_errors() {
        let (base, state) = mock().await;
        notify(&format!("{base}/hook"), &sample("1.4.0"))
            .await
            .unwrap();
        {
            let m = state.lock().unwrap();
            let b = m.last().unwrap();
            assert_eq!(b["app"], "web");
            assert_eq!(b["to_version"], "1.4.0");
            assert_eq!(b["step"], "migrate");
            assert!(
                b["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("switchyard: web 1.4.0 failed at migrate")
            );
            assert!(!b.to_string().contains("hunter2"));
        }
        let e = notify(&format!("{base}/fail"), &sample("1.4.0"))
            .await
            .unwrap_err();
        assert!(matches!(e, ReportError::Status { status: 500, .. }), "{e}");
        let e = notify(&format!("{base}/moved"), &sample("1.4.0"))
            .await
            .unwrap_err();
        assert!(matches!(e, ReportError::Status { status: 302, .. }), "{e}");
        // The webhook URL is a secret: errors name the host only.
        let e = notify(
            "http://127.0.0.1:9/services/T000/B000/secretpart",
            &sample("1.4.0"),
        )
        .await
        .unwrap_err();
        assert!(!e.to_string().contains("secretpart"), "{e}");
        assert!(matches!(
            notify("ftp://x/y", &sample("1")).await,
            Err(ReportError::BadNotifyUrl { .. })
        ));
    }
}
