#![no_main]
//! The webhook handler on arbitrary bodies, signed and unsigned: it answers
//! with a status, never panics, and sends a trigger only for a correctly
//! signed release event of a configured repository.
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use switchyard::testing::{HttpState, Metrics, WatchingApp, WebhookConfig, router, sign_payload};
use tower::ServiceExt;

fuzz_target!(|input: (bool, &str, &[u8])| {
    let (signed, event, body) = input;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut repos = std::collections::HashMap::new();
        repos.insert("acme/web".to_string(), vec![WatchingApp { app: "web".into(), prerelease: false }]);
        let state = HttpState::new(WebhookConfig { secret: Some(b"secret".to_vec()), repos }, tx, Arc::new(Metrics::new()));
        let mut req = axum::http::Request::post("/hooks/github")
            .header("X-GitHub-Event", event.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>())
            .header("X-GitHub-Delivery", "fuzz");
        if signed {
            req = req.header("X-Hub-Signature-256", sign_payload(b"secret", body));
        }
        let resp = router(state).oneshot(req.body(axum::body::Body::from(body.to_vec())).unwrap()).await.unwrap();
        if !signed {
            assert_eq!(resp.status(), 401);
            assert!(rx.try_recv().is_err(), "an unsigned delivery triggered a deploy");
        }
    });
});
