//! Issue #12: the agent remembers failures (one report per refused release,
//! back-off for outages), notifies each event once on `notify_url`, and
//! exports the metrics an operator alerts on. The real agent on a temporary
//! root, the mock GitHub, and a local chat webhook that records every POST.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::agent::{Agent, advance_clock, configure, current, eventually, publish, set_clock};
use crate::common::World;
use crate::mock_github::{Fault, MockGithub};

/// A chat webhook on 127.0.0.1 that keeps every JSON body it is sent.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s2 = seen.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(b): axum::Json<Value>| {
                let s = s2.clone();
                async move {
                    s.lock().unwrap().push(b);
                    "ok"
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, seen, _rt: rt }
    }

    fn all(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self, event: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|b| b["event"] == event)
            .collect()
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(agent: &Agent) -> String {
    let (code, text) = agent.get("/metrics");
    assert_eq!(code, 200);
    text
}

/// Audit events of the agent's deploys of `version` that started.
fn attempts(w: &World, version: &str) -> usize {
    w.json(&["history", "web"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == version && e["event"] == "system.update.started")
        .count()
}

/// Serves another, valid, archive as `tag`'s `asset`: its checksum does
/// not verify (a corrupt stream could be a broken download, and is retried).
fn tamper(m: &MockGithub, tag: &str, asset: &str, other: &[u8]) {
    let id = m.asset_id(tag, asset);
    m.with(|s| s.tampered.insert(id, other.to_vec()));
}

#[test]
fn a_refused_release_is_reported_once_and_tried_again_only_when_a_new_one_appears() {
    let m = MockGithub::start();
    let w = World::new();
    let hook = Receiver::start();
    configure(
        &w,
        &m,
        &format!(
            "poll_interval = \"1s\"\nauto = \"patch\"\nnotify_url = \"{}\"",
            hook.url
        ),
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.0.1");
    let other = std::fs::read(w.drop_dir.join("v1.0.0/web-1.0.0.tar.gz")).unwrap();
    tamper(&m, "v1.0.1", "web-1.0.1.tar.gz", &other);
    set_clock(&w, "2026-11-20T15:00:00Z");
    let mut agent = Agent::start(&w);
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            !hook.events("deploy_failed").is_empty()
        }),
        "no deploy_failed:\n{}",
        agent.log()
    );
    // Many more polls: nothing is tried, audited or posted again.
    let n = listings();
    assert!(
        eventually(Duration::from_secs(30), || {
            advance_clock(&w, 2);
            listings() >= n + 8
        }),
        "the agent stopped polling:\n{}",
        agent.log()
    );
    let failed = hook.events("deploy_failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["version"], "1.0.1");
    assert_eq!(
        failed[0]["to_version"], "1.0.1",
        "the failure report's fields stay"
    );
    assert!(
        failed[0]["text"].as_str().unwrap().contains("web 1.0.1"),
        "{}",
        failed[0]
    );
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("tampered with"),
        "a verification refusal: {error}"
    );
    assert_eq!(attempts(&w, "1.0.1"), 1, "one failed deploy in the history");
    assert!(
        agent.log().contains("will not retry 1.0.1"),
        "{}",
        agent.log()
    );
    let text = metrics(&agent);
    assert_eq!(
        metric(
            &text,
            "switchyard_deploys_total{app=\"web\",outcome=\"failed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "switchyard_versions_behind{app=\"web\"}"),
        Some(0.0),
        "a refused release is not deployable: {text}"
    );
    let st = w.ok(&["status", "web"]);
    assert!(st.contains("will not retry 1.0.1"), "{st}");

    // A restart does not forget (nor re-send).
    drop(agent);
    agent = Agent::start(&w);
    let n = listings();
    assert!(eventually(Duration::from_secs(30), || {
        advance_clock(&w, 2);
        listings() >= n + 4
    }));
    assert_eq!(hook.events("deploy_failed").len(), 1, "{:#?}", hook.all());
    assert_eq!(attempts(&w, "1.0.1"), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.root.join(".switchyard/agent.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    // A new release is tried, and its success announced once.
    publish(&w, &m, "v1.0.2");
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            current(&w).as_deref() == Some("releases/1.0.2")
        }),
        "1.0.2 not deployed:\n{}",
        agent.log()
    );
    assert!(eventually(Duration::from_secs(10), || hook
        .events("deploy_succeeded")
        .len()
        == 1));
    let ok = &hook.events("deploy_succeeded")[0];
    assert_eq!(ok["version"], "1.0.2");
    assert_eq!(ok["from_version"], "1.0.0");
}

#[test]
fn a_transient_failure_backs_off() {
    let m = MockGithub::start();
    let w = World::new();
    configure(&w, &m, "poll_interval = \"10s\"\nauto = \"patch\"");
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.0.1");
    // GitHub's storage is down for a long while.
    let sums = m.asset_id("v1.0.1", "SHA256SUMS");
    m.fail(
        &format!("storage:/github-production-release-asset/{sums}"),
        &vec![Fault::Status(503); 400],
    );
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    let memory = || -> Option<Value> {
        let b = std::fs::read(w.root.join(".switchyard/agent.json")).ok()?;
        serde_json::from_slice::<Value>(&b).ok()?["failures"]["1.0.1"]
            .as_object()
            .cloned()
            .map(Value::Object)
    };
    let ts = |v: &Value, k: &str| v[k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let mut gaps = Vec::new();
    for attempt in 1..=3u64 {
        assert!(
            eventually(Duration::from_secs(60), || {
                advance_clock(&w, 2);
                memory().is_some_and(|f| f["attempts"] == attempt)
            }),
            "attempt {attempt} did not happen:\n{}",
            agent.log()
        );
        let f = memory().unwrap();
        assert_eq!(f["class"], "transient", "{f}");
        gaps.push(
            ts(&f, "retry_at")
                .duration_since(ts(&f, "last"))
                .as_secs_f64(),
        );
        if attempt == 2 {
            // Polls go on meanwhile, without an attempt before retry_at.
            let listings = || m.api_hits(&MockGithub::list_path()).len();
            let n = listings();
            assert!(eventually(Duration::from_secs(20), || {
                advance_clock(&w, 3);
                listings() >= n + 3
            }));
            let now: jiff::Timestamp = std::fs::read_to_string(w.tmp.path().join("clock"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let f2 = memory().unwrap();
            if now < ts(&f, "retry_at") {
                assert_eq!(f2["attempts"], 2, "retried before its time");
            }
        }
    }
    // 10 s, 20 s, 40 s, each ±10%.
    for (g, want) in gaps.iter().zip([10.0, 20.0, 40.0]) {
        assert!((g - want).abs() <= want * 0.1 + 0.01, "gaps {gaps:?}");
    }
    assert!(agent.log().contains("trying again at"), "{}", agent.log());
    assert_eq!(current(&w).as_deref(), Some("releases/1.0.0"));
}

#[test]
fn updates_reverts_and_state_are_notified_and_measured() {
    let m = MockGithub::start();
    let w = World::new();
    let hook = Receiver::start();
    configure(
        &w,
        &m,
        &format!(
            "poll_interval = \"1s\"\nauto = \"patch\"\nnotify_url = \"{}\"",
            hook.url
        ),
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.1.0");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    // Every series from the start, at zero.
    let text = metrics(&agent);
    for s in [
        "switchyard_reverts_total{app=\"web\",trigger=\"manual\"}",
        "switchyard_reverts_total{app=\"web\",trigger=\"auto\"}",
        "switchyard_deploys_total{app=\"web\",outcome=\"failed\"}",
        "switchyard_hold{app=\"web\"}",
        "switchyard_needs_attention{app=\"web\"}",
        "switchyard_maintenance{app=\"web\"}",
        "switchyard_quarantined_releases{app=\"web\"}",
    ] {
        assert_eq!(metric(&text, s), Some(0.0), "{s}:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchyard_build_info{version=\"")
                && l.ends_with("} 1")
                && !l.contains("commit=\"\"")),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "switchyard_seconds_since_last_successful_poll{app=\"web\"}"
        )
        .is_some()
    );

    // 1.1.0 is not for the agent (auto = patch): announced once.
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    assert!(eventually(Duration::from_secs(30), || {
        advance_clock(&w, 2);
        listings() >= n + 5
    }));
    let ups = hook.events("update_available");
    assert_eq!(ups.len(), 1, "{:#?}", hook.all());
    assert_eq!(ups[0]["version"], "1.1.0");
    assert_eq!(ups[0]["versions_behind"], 1);
    assert_eq!(ups[0]["current_version"], "1.0.0");
    assert_eq!(ups[0]["command"], "switchyard deploy web 1.1.0");

    // A manual revert through the agent: counted and announced.
    w.ok(&["deploy", "web", "1.1.0"]);
    w.ok(&["revert", "web"]);
    assert!(
        eventually(Duration::from_secs(10), || !hook
            .events("reverted")
            .is_empty()),
        "{:#?}",
        hook.all()
    );
    let r = &hook.events("reverted")[0];
    assert_eq!(
        (&r["version"], &r["to_version"], &r["trigger"]),
        (&"1.1.0".into(), &"1.0.0".into(), &"manual".into())
    );
    let text = metrics(&agent);
    assert_eq!(
        metric(
            &text,
            "switchyard_reverts_total{app=\"web\",trigger=\"manual\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // A quarantined release is not counted as behind; a hold and a block show.
    let state_file = w.root.join(".switchyard/state.json");
    let mut st: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    st["quarantined"]["1.1.0"] = serde_json::json!({"reason": "test", "time": "2026-11-20T15:00:00Z", "deploy_id": "0000000000000000"});
    st["hold"] = serde_json::json!({"by": "alice", "since": "2026-11-20T15:00:00Z", "reason": "freeze", "automatic": false});
    std::fs::write(&state_file, serde_json::to_vec(&st).unwrap()).unwrap();
    let gauges = |t: &str| {
        (
            metric(t, "switchyard_versions_behind{app=\"web\"}"),
            metric(t, "switchyard_quarantined_releases{app=\"web\"}"),
            metric(t, "switchyard_hold{app=\"web\"}"),
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            gauges(&metrics(&agent)) == (Some(0.0), Some(1.0), Some(1.0))
        }),
        "{:?}",
        gauges(&metrics(&agent))
    );
    st["attention"] = serde_json::json!({"kind": "needs_attention", "reason": "migrate outcome unknown", "since": "2026-11-20T15:00:00Z", "deploy_id": "0000000000000000"});
    std::fs::write(&state_file, serde_json::to_vec(&st).unwrap()).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            metric(&metrics(&agent), "switchyard_needs_attention{app=\"web\"}") == Some(1.0)
                && hook.events("needs_attention").len() == 1
        }),
        "{:#?}",
        hook.all()
    );
    assert_eq!(
        hook.events("needs_attention")[0]["command"],
        "switchyard resolve web"
    );
}

#[test]
fn slack_bodies_and_escalation() {
    let m = MockGithub::start();
    let w = World::new();
    let hook = Receiver::start();
    configure(
        &w,
        &m,
        &format!(
            "poll_interval = \"1s\"\nauto = \"patch\"\nnotify_url = \"{}\"\nnotify_format = \"slack\"\nnotify_escalate = [\"1h\", \"1d\"]",
            hook.url
        ),
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v2.0.0");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            !hook.all().is_empty()
        }),
        "{}",
        agent.log()
    );
    let first = hook.all()[0].clone();
    let obj = first.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["text"], "{first}");
    let t = obj["text"].as_str().unwrap();
    assert!(
        t.starts_with("switchyard: web 2.0.0 is available on ")
            && t.contains("`switchyard deploy web 2.0.0`"),
        "{t}"
    );
    // Two hours later: one escalation; a day later: the next; never more.
    advance_clock(&w, 2 * 3600);
    assert!(
        eventually(Duration::from_secs(20), || {
            advance_clock(&w, 2);
            hook.all().len() == 2
        }),
        "{:#?}",
        hook.all()
    );
    advance_clock(&w, 86_400);
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    assert!(eventually(Duration::from_secs(30), || {
        advance_clock(&w, 2);
        listings() >= n + 5
    }));
    let all = hook.all();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[2]["text"].as_str().unwrap().contains("1 day(s) behind"),
        "{all:#?}"
    );
}

#[test]
fn a_failed_manual_revert_through_the_agent_is_reported() {
    let m = MockGithub::start();
    let w = World::new();
    let hook = Receiver::start();
    configure(
        &w,
        &m,
        &format!("poll_interval = \"1h\"\nnotify_url = \"{}\"", hook.url),
    );
    // An activate hook that fails once the marker exists.
    let marker = w.tmp.path().join("break-activate");
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.replace(
            "[apps.web.trust]",
            &format!(
                "[apps.web.hooks]\nactivate = 'test ! -e {}'\n\n[apps.web.trust]",
                marker.display()
            ),
        ),
    )
    .unwrap();
    publish(&w, &m, "v1.0.0");
    publish(&w, &m, "v1.0.1");
    let agent = Agent::start(&w);
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["deploy", "web", "1.0.1"]);
    std::fs::write(&marker, "").unwrap();
    let (code, _, err) = w.run(&["revert", "web"]);
    assert_eq!(code, 8, "{err}");
    assert!(
        eventually(Duration::from_secs(10), || hook
            .events("revert_failed")
            .len()
            == 1),
        "{:#?}\n{}",
        hook.all(),
        agent.log()
    );
    let r = &hook.events("revert_failed")[0];
    assert_eq!(r["version"], "1.0.0");
    assert_eq!(r["to_version"], "1.0.0");
    assert!(
        r["deploy_id"].as_str().is_some_and(|s| s.len() == 16),
        "{r}"
    );
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("revert to 1.0.0 failed"),
        "{r}"
    );
    assert_eq!(
        hook.events("deploy_succeeded").len(),
        2,
        "{:#?}",
        hook.all()
    );
}
