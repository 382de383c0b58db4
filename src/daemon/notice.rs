//! Notifications to `notify_url`: what happened to an app, one JSON object
//! per event (or a Slack-compatible `{"text": ...}` with
//! `notify_format = "slack"`), each sent once per version and event: the
//! keys sent are kept in `.switchyard/agent.json`, so a restart does not
//! send them again. Events and fields are listed in the README
//! ("Notifications"). Every string leaves redacted, as failure reports do.

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::{AppConfig, NotifyFormat};
use crate::daemon::report::{self, FailureReport, redact};
use crate::store::agent::AgentMemory;
use crate::store::layout::AppPaths;

/// Longest `text`; chat services cut or refuse longer lines.
const MAX_TEXT_CHARS: usize = 600;

/// Longest `logs_tail` in a notification.
const MAX_LOGS_CHARS: usize = 60_000;

/// One notification, not yet sent.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    /// Sent once per key: `<event>:<version>[:<escalation>]`.
    pub key: String,
    /// Keys this one makes moot (shorter escalations skipped over).
    pub covers: Vec<String>,
    /// The JSON fields (`event`, `app`, `host`, `version`, `time`, ...).
    pub fields: Map<String, Value>,
}

impl Notice {
    /// A notice of `event` about `app` `version`, keyed by event and version.
    pub(crate) fn new(event: &str, app: &str, version: &str) -> Notice {
        let mut fields = Map::new();
        fields.insert("event".into(), event.into());
        fields.insert("app".into(), app.into());
        fields.insert("host".into(), report::hostname().into());
        fields.insert("version".into(), version.into());
        fields.insert(
            "time".into(),
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string()
                .into(),
        );
        Notice {
            key: format!("{event}:{version}"),
            covers: Vec::new(),
            fields,
        }
    }

    /// A failure (`deploy_failed`, `revert_failed`): the failure report's
    /// fields, as `notify_url` always received them, plus the event's.
    pub(crate) fn failure(event: &str, r: &FailureReport) -> Notice {
        let mut n = Notice::new(event, &r.app, &r.to_version);
        if let Ok(Value::Object(m)) = serde_json::to_value(r) {
            n.fields.extend(m);
        }
        let first = r
            .error
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        n.with("reason", first)
            .with("command", format!("switchyard status {}", r.app))
    }

    /// Adds a field.
    pub(crate) fn with(mut self, k: &str, v: impl Into<Value>) -> Notice {
        self.fields.insert(k.into(), v.into());
        self
    }

    fn get(&self, k: &str) -> &str {
        self.fields.get(k).and_then(Value::as_str).unwrap_or("")
    }

    /// The one line a person reads: what, where, why, and what to run.
    pub(crate) fn text(&self) -> String {
        let (app, v, host) = (self.get("app"), self.get("version"), self.get("host"));
        let reason = self.get("reason");
        let cmd = self.get("command");
        let body = match self.get("event") {
            "update_available" => format!(
                "{app} {v} is available on {host} ({} version(s), {} day(s) behind; running {})",
                self.fields.get("versions_behind").unwrap_or(&Value::Null),
                self.fields.get("days_behind").unwrap_or(&Value::Null),
                self.fields
                    .get("current_version")
                    .and_then(Value::as_str)
                    .unwrap_or("nothing"),
            ),
            "deploy_succeeded" => format!("{app} {v} deployed on {host}"),
            "deploy_failed" => format!(
                "{app} {v} failed on {host} at {} ({}): {reason}",
                self.get("step"),
                self.get("state")
            ),
            "revert_failed" => format!(
                "{app}: revert to {v} failed on {host} at {}: {reason}",
                self.get("step")
            ),
            "reverted" => format!(
                "{app} reverted on {host} from {v} to {} ({})",
                self.get("to_version"),
                self.get("trigger")
            ),
            "needs_attention" => format!("{app} on {host} needs an operator: {reason}"),
            "critical_pending" => format!(
                "{app} {v} is a critical release; it deploys on {host} by {}",
                self.fields
                    .get("deadline")
                    .and_then(Value::as_str)
                    .unwrap_or("the next window")
            ),
            other => format!("{app} {v} on {host}: {other}"),
        };
        let line = if cmd.is_empty() {
            format!("switchyard: {body}")
        } else {
            format!("switchyard: {body} — run `{cmd}`")
        };
        let line = line.replace(['\n', '\r'], " ");
        line.chars().take(MAX_TEXT_CHARS).collect()
    }

    /// The body to POST, redacted.
    pub(crate) fn body(&self, format: NotifyFormat) -> Value {
        let mut n = self.clone();
        for v in n.fields.values_mut() {
            redact_value(v);
        }
        if let Some(Value::String(t)) = n.fields.get_mut("logs_tail") {
            let c = t.chars().count();
            if c > MAX_LOGS_CHARS {
                *t = t.chars().skip(c - MAX_LOGS_CHARS).collect();
            }
        }
        let text = n.text();
        match format {
            NotifyFormat::Slack => serde_json::json!({ "text": text }),
            NotifyFormat::Json => {
                n.fields.insert("text".into(), text.into());
                Value::Object(n.fields)
            }
        }
    }
}

fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = redact(s),
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Object(m) => m.values_mut().for_each(redact_value),
        _ => {}
    }
}

/// Sends the notices not sent before (by key) to the app's `notify_url`,
/// remembering each one that was delivered. Failures are logged; an
/// undelivered notice is tried again when its event recurs.
pub(crate) async fn send(cfg: &AppConfig, notices: Vec<Notice>) {
    let Some(url) = cfg.agent.notify_url.clone() else {
        return;
    };
    if notices.is_empty() {
        return;
    }
    let paths = AppPaths::new(&cfg.root);
    let mut mem = match AgentMemory::load(&paths) {
        Ok(m) => m,
        Err(e) => {
            warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot read the agent's memory; notifications not sent");
            return;
        }
    };
    let mut changed = false;
    for n in notices {
        if mem.notified.contains_key(&n.key) {
            continue;
        }
        let body = n.body(cfg.agent.notify_format);
        let u = url.clone();
        // Its own task: the HTTP client wants a whole thread stack.
        let res = tokio::spawn(async move {
            report::post(&u, &body, "post a notification to notify_url").await
        })
        .await;
        match res {
            Ok(Ok(())) => {
                info!(app = %cfg.name, event = %n.get("event"), version = %n.get("version"), "notification sent");
                let t = jiff::Timestamp::now().to_string();
                for k in n.covers.iter().chain(std::iter::once(&n.key)) {
                    mem.notified.insert(k.clone(), t.clone());
                }
                changed = true;
            }
            Ok(Err(e)) => {
                warn!(app = %cfg.name, event = %n.get("event"), error = %e, "notification not sent");
            }
            Err(e) => warn!(app = %cfg.name, error = %e, "notification not sent"),
        }
    }
    if changed && let Err(e) = mem.save(&paths) {
        warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot remember the notifications sent; a restart may send them again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_bodies_are_one_readable_line_and_redacted() {
        let n = Notice::new("deploy_failed", "web", "1.0.1")
            .with("step", "prechecks")
            .with("state", "failed")
            .with(
                "reason",
                "checksum mismatch, token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            )
            .with("command", "switchyard status web");
        let b = n.body(NotifyFormat::Slack);
        let obj = b.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{b}");
        let t = obj["text"].as_str().unwrap();
        assert!(t.starts_with("switchyard: web 1.0.1 failed on "), "{t}");
        assert!(
            t.contains("prechecks") && t.contains("`switchyard status web`"),
            "{t}"
        );
        assert!(!t.contains("ghp_abc"), "{t}");
        let j = n.body(NotifyFormat::Json);
        assert_eq!(j["event"], "deploy_failed");
        assert_eq!(j["version"], "1.0.1");
        assert!(!j.to_string().contains("ghp_abc"));
    }
}
