//! Notifications to `notify_url`: what happened to an app, one JSON object
//! per event (or a Slack-compatible `{"text": ...}` with
//! `notify_format = "slack"`), each sent once per version and event: the
//! keys sent are kept in `.switchyard/agent.json`, so a restart does not
//! send them again. Events and fields are listed in the README
//! ("Notifications"). Every string leaves redacted, as failure reports do.
//!
//! The same notices go by e-mail (`[notify.email]`) to the app's recipients
//! for the events they chose; each channel remembers its own deliveries
//! (e-mail keys are `email:<key>`), so one that is down is tried again
//! without the other sending twice.

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::{AppConfig, NotifyFormat};
use crate::daemon::report::email::Mail;
use crate::daemon::report::{self, FailureReport, redact};
use crate::store::agent::AgentMemory;
use crate::store::layout::AppPaths;

/// Longest `text`; chat services cut or refuse longer lines.
const MAX_TEXT_CHARS: usize = 600;

/// Longest `logs_tail` in a notification.
const MAX_LOGS_CHARS: usize = 60_000;

/// Longest `logs_tail` in an e-mail: the end of the output says why.
const MAX_MAIL_LOGS_CHARS: usize = 20_000;

/// The prefix of a notice's key in the memory once e-mailed.
const EMAIL_KEY: &str = "email:";

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
            "test_email" => {
                format!("a test e-mail about {app} from {host}: e-mail notifications reach you")
            }
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

    /// A copy with every value redacted and the logs tail cut to its last
    /// `max_logs` characters.
    fn redacted(&self, max_logs: usize) -> Notice {
        let mut n = self.clone();
        for v in n.fields.values_mut() {
            redact_value(v);
        }
        if let Some(Value::String(t)) = n.fields.get_mut("logs_tail") {
            let c = t.chars().count();
            if c > max_logs {
                *t = t.chars().skip(c - max_logs).collect();
            }
        }
        n
    }

    /// The body to POST, redacted.
    pub(crate) fn body(&self, format: NotifyFormat) -> Value {
        let mut n = self.redacted(MAX_LOGS_CHARS);
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

/// The words of a subject line for each event.
fn subject_words(event: &str) -> &str {
    match event {
        "update_available" => "update available",
        "deploy_succeeded" => "deployed",
        "deploy_failed" => "deploy failed",
        "revert_failed" => "revert failed",
        "reverted" => "reverted",
        "needs_attention" => "needs attention",
        "critical_pending" => "critical release pending",
        "test_email" => "test e-mail",
        other => other,
    }
}

/// The e-mail's HTML part; askama escapes every value.
#[derive(askama::Template)]
#[template(
    ext = "html",
    source = r#"<!DOCTYPE html>
<html><body style="font-family: sans-serif">
<p><strong>{{ summary }}</strong></p>
<table cellpadding="3">
{%- for row in rows %}
<tr><th align="left" valign="top">{{ row.0 }}</th><td>{{ row.1 }}</td></tr>
{%- endfor %}
</table>
{%- if !command.is_empty() %}
<p>Next: run <code>{{ command }}</code> on {{ host }}.</p>
{%- endif %}
{%- if !logs.is_empty() %}
<p>The end of the hook output:</p>
<pre>{{ logs }}</pre>
{%- endif %}
<p style="color: #666">Sent once by the switchyard agent on {{ host }}.</p>
</body></html>
"#
)]
struct MailHtml<'a> {
    summary: &'a str,
    rows: &'a [(&'static str, String)],
    command: &'a str,
    host: &'a str,
    logs: &'a str,
}

impl Notice {
    /// The e-mail: a subject like `[switchyard] web 1.4.2 deploy failed on
    /// host01`, and the same rows (app, version, host, reason, ..., the
    /// command to run) as plain text and HTML, every value redacted.
    pub(crate) fn mail(&self) -> Mail {
        let n = self.redacted(MAX_MAIL_LOGS_CHARS);
        let (app, version, host) = (n.get("app"), n.get("version"), n.get("host"));
        let event = n.get("event");
        let what = [app, version, subject_words(event)]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let subject = format!("[switchyard] {what} on {host}").replace(['\n', '\r'], " ");
        let command = n.get("command");
        // The command has its own line below.
        let line = n.text();
        let summary = line.strip_prefix("switchyard: ").unwrap_or(&line);
        let summary = summary
            .strip_suffix(&format!(" — run `{command}`"))
            .unwrap_or(summary);
        let mut rows: Vec<(&'static str, String)> = Vec::new();
        for (label, key) in [
            ("App", "app"),
            ("Version", "version"),
            ("Host", "host"),
            ("Event", "event"),
            ("Running", "current_version"),
            ("From version", "from_version"),
            ("To version", "to_version"),
            ("Step", "step"),
            ("State", "state"),
            ("Trigger", "trigger"),
            ("Reason", "reason"),
            ("Deadline", "deadline"),
            ("Deploy id", "deploy_id"),
            ("Time", "time"),
        ] {
            let v = match n.fields.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(x)) => x.to_string(),
                _ => continue,
            };
            if !v.is_empty() {
                rows.push((label, v));
            }
        }
        let logs = n.get("logs_tail").trim_end();
        let mut text = format!("{summary}\n\n");
        for (k, v) in &rows {
            text.push_str(&format!("{:<14} {v}\n", format!("{k}:")));
        }
        if !command.is_empty() {
            text.push_str(&format!("\nNext: run `{command}` on {host}.\n"));
        }
        if !logs.is_empty() {
            text.push_str(&format!("\nThe end of the hook output:\n{logs}\n"));
        }
        text.push_str(&format!(
            "\n-- \nSent once by the switchyard agent on {host}.\n"
        ));
        let html = askama::Template::render(&MailHtml {
            summary,
            rows: &rows,
            command,
            host,
            logs,
        })
        // Rendering into a String fails only if a value's Display does.
        .unwrap_or_else(|e| format!("<pre>{}</pre>", e.to_string().replace('<', "&lt;")));
        Mail {
            subject,
            text,
            html,
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

/// Sends the notices not sent before on each channel: the app's
/// `notify_url`, and e-mail for the events its recipients chose. Each
/// delivery is remembered by key, per channel. Failures are logged at warn
/// and never stop the agent; an undelivered notice is tried again when its
/// event recurs.
pub(crate) async fn send(cfg: &AppConfig, notices: Vec<Notice>) {
    let url = cfg.agent.notify_url.clone();
    let email = cfg.agent.email.clone();
    if notices.is_empty() || (url.is_none() && email.is_none()) {
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
    // Set when the server cannot be reached or refuses this host: the
    // other messages of this round would wait out the same failure (30 s
    // each) while the app's task waits; they go when their events recur.
    let mut email_down = false;
    for n in notices {
        let (event, version) = (n.get("event").to_string(), n.get("version").to_string());
        if let Some(u) = &url
            && !mem.notified.contains_key(&n.key)
        {
            let body = n.body(cfg.agent.notify_format);
            let u = u.clone();
            // Its own task: the HTTP client wants a whole thread stack.
            let res = tokio::spawn(async move {
                report::post(&u, &body, "post a notification to notify_url").await
            })
            .await;
            match res {
                Ok(Ok(())) => {
                    info!(app = %cfg.name, event = %event, version = %version, "notification sent");
                    remember(&mut mem, &n, "");
                    changed = true;
                }
                Ok(Err(e)) => {
                    warn!(app = %cfg.name, event = %event, error = %e, "notification not sent");
                }
                Err(e) => warn!(app = %cfg.name, error = %e, "notification not sent"),
            }
        }
        if let Some(m) = &email
            && !email_down
            && m.wants(&event)
            && !mem.notified.contains_key(&format!("{EMAIL_KEY}{}", n.key))
        {
            let mail = n.mail();
            let m2 = m.clone();
            let res =
                tokio::spawn(async move { report::email::send(&m2.server, &m2.to, &mail).await })
                    .await;
            match res {
                Ok(Ok(())) => {
                    info!(app = %cfg.name, event = %event, version = %version, server = %m.server.address(), recipients = m.to.len(), "e-mail notification sent");
                    remember(&mut mem, &n, EMAIL_KEY);
                    changed = true;
                }
                Ok(Err(e)) => {
                    warn!(app = %cfg.name, event = %event, version = %version, error = %e, "e-mail notification not sent");
                    email_down = e.server_down();
                }
                Err(e) => {
                    warn!(app = %cfg.name, event = %event, error = %e, "e-mail notification not sent")
                }
            }
        }
    }
    if changed && let Err(e) = mem.save(&paths) {
        warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot remember the notifications sent; a restart may send them again");
    }
}

/// `switchyard config test-email`: one message through the app's e-mail
/// route now, whatever its events, remembered nowhere.
pub(crate) async fn test_email(cfg: &AppConfig) -> Result<(), report::ReportError> {
    let Some(m) = &cfg.agent.email else {
        return Ok(());
    };
    let current = AppPaths::new(&cfg.root)
        .current_version()
        .ok()
        .flatten()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let n = Notice::new("test_email", &cfg.name, &current)
        .with("reason", "sent by `switchyard config test-email`")
        .with("command", format!("switchyard status {}", cfg.name));
    report::email::send(&m.server, &m.to, &n.mail()).await
}

/// Marks `n` (and the keys it covers) as delivered on the channel whose
/// keys start with `prefix`.
fn remember(mem: &mut AgentMemory, n: &Notice, prefix: &str) {
    let t = jiff::Timestamp::now().to_string();
    for k in n.covers.iter().chain(std::iter::once(&n.key)) {
        mem.notified.insert(format!("{prefix}{k}"), t.clone());
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

    #[test]
    fn mails_carry_the_facts_redacted_and_html_escaped() {
        let n = Notice::new("deploy_failed", "web", "1.0.1")
            .with("step", "warm")
            .with("state", "failed")
            .with("reason", "hook <warm> failed, password=hunter2")
            .with(
                "logs_tail",
                "connecting as bob with token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n",
            )
            .with("command", "switchyard status web");
        let host = report::hostname();
        let m = n.mail();
        assert_eq!(
            m.subject,
            format!("[switchyard] web 1.0.1 deploy failed on {host}")
        );
        for body in [&m.text, &m.html] {
            for want in [
                "web",
                "1.0.1",
                host.as_str(),
                "switchyard status web",
                "warm",
                "[REDACTED:",
            ] {
                assert!(body.contains(want), "{want}:\n{body}");
            }
            assert!(
                !body.contains("hunter2") && !body.contains("ghp_abc"),
                "{body}"
            );
        }
        assert!(m.text.contains("hook <warm> failed"), "{}", m.text);
        assert!(
            m.html.contains("hook &#60;warm&#62; failed")
                || m.html.contains("hook &lt;warm&gt; failed"),
            "{}",
            m.html
        );
        assert!(!m.html.contains("<warm>"), "{}", m.html);
        let n = Notice::new("needs_attention", "web", "").with("reason", "x");
        assert_eq!(
            n.mail().subject,
            format!("[switchyard] web needs attention on {host}")
        );
    }
}
