//! What follows an operation or a check: metrics, failure reports (GitHub
//! issues) and notifications (`notify_url`).

use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{AppConfig, SourceConfig};
use crate::daemon::http::Metrics;
use crate::daemon::notice::{self, Notice};
use crate::daemon::{FailedDeploy, OpOutcome, report, systemd_status as status};
use crate::store::agent::AgentMemory;
use crate::store::layout::{AppPaths, maintenance};
use crate::store::state::AppState;

/// Metrics, failure reports and notifications after an operation.
pub(crate) async fn after_operation(
    cfg: &AppConfig,
    m: &Metrics,
    clock: &dyn Clock,
    out: &OpOutcome,
) {
    let paths = AppPaths::new(&cfg.root);
    m.set_current_version(&cfg.name, out.current.as_deref());
    if let Some(b) = out.behind {
        m.set_versions_behind(&cfg.name, b);
    }
    if out.polled {
        m.polled(&cfg.name);
    }
    if let Some(f) = &out.fleet {
        m.set_fleet(&cfg.name, f);
    }
    let st = AppState::load(&paths).unwrap_or_default();
    m.set_app_state(
        &cfg.name,
        st.attention.is_some(),
        matches!(maintenance::get(&paths), Ok(Some(_))),
        st.quarantined.len() as u64,
        st.hold.is_some(),
    );
    let mut notices = Vec::new();
    match &out.deploy {
        None => {}
        Some(Ok(o)) => {
            m.deploy_outcome(&cfg.name, "completed");
            m.set_last_deploy(
                &cfg.name,
                jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
            );
            for h in &o.health {
                m.observe_health(&cfg.name, &h.phase, h.report.elapsed.as_secs_f64());
            }
            let pruned = if o.pruned.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = o.pruned.iter().map(|v| v.to_string()).collect();
                format!("; pruned {}", names.join(", "))
            };
            status(&format!("{}: deployed {}{pruned}", cfg.name, o.to));
            if !o.already_live {
                let mut n = Notice::new("deploy_succeeded", &cfg.name, &o.to.to_string())
                    .with("deploy_id", o.id.clone())
                    .with("command", format!("switchyard status {}", cfg.name));
                if let Some(f) = &o.from {
                    n = n.with("from_version", f.to_string());
                }
                notices.push(n);
            }
        }
        Some(Err(f)) => {
            let state = f.state.as_str();
            let rolled_back = out.revert.as_ref().is_some_and(|r| r.trigger == "auto");
            m.deploy_outcome(&cfg.name, if rolled_back { "rolled_back" } else { state });
            status(&format!(
                "{}: deploy of {} failed{}",
                cfg.name,
                f.target,
                crate::ops::error::ended_in(f.state)
            ));
            notices.push(report_failure(cfg, f, "deploy_failed").await);
        }
    }
    if let Some(f) = &out.failed_revert {
        status(&format!("{}: revert to {} failed", cfg.name, f.target));
        notices.push(report_failure(cfg, f, "revert_failed").await);
    }
    if let Some(r) = &out.revert {
        m.revert(&cfg.name, r.trigger);
        let from = r.from.clone().unwrap_or_default();
        notices.push(
            Notice::new("reverted", &cfg.name, &from)
                .with("to_version", r.to.clone())
                .with("trigger", r.trigger)
                .with("command", format!("switchyard status {}", cfg.name)),
        );
    }
    if let Some(a) = &st.attention {
        let version = st
            .deploy
            .as_ref()
            .and_then(|d| d.to.as_ref())
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut n = Notice::new("needs_attention", &cfg.name, &version)
            .with("kind", a.kind.clone())
            .with("reason", a.reason.clone())
            .with("since", a.since.clone())
            .with("command", format!("switchyard resolve {}", cfg.name));
        // Once per incident, not once per version.
        n.key = format!("needs_attention:{}", a.since);
        notices.push(n);
    }
    let just_tried = |v: &str| match &out.deploy {
        Some(Ok(o)) => o.to.to_string() == v,
        Some(Err(f)) => f.target == v,
        None => false,
    };
    if let Some(u) = &out.update
        && !just_tried(&u.version)
    {
        notices.push(update_notice(cfg, clock, &paths, u, out.current.as_deref()));
    }
    if let Some((v, deadline)) = &out.critical {
        notices.push(
            Notice::new("critical_pending", &cfg.name, v)
                .with("deadline", deadline.map(|d| d.to_string()))
                .with("command", format!("switchyard deploy {} {v}", cfg.name)),
        );
    }
    notice::send(cfg, notices).await;
}

/// `update_available` for `u`, keyed by the longest escalation interval
/// the app has been behind for (each sent once; a later one covers the
/// shorter ones it skipped).
fn update_notice(
    cfg: &AppConfig,
    clock: &dyn Clock,
    paths: &AppPaths,
    u: &crate::daemon::Update,
    current: Option<&str>,
) -> Notice {
    let now = clock.now();
    let first_seen = AgentMemory::load(paths)
        .ok()
        .and_then(|m| m.first_seen.get(&u.version).cloned())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or(now);
    let age = now.duration_since(first_seen).unsigned_abs();
    let mut n = Notice::new("update_available", &cfg.name, &u.version)
        .with("current_version", current.map(str::to_string))
        .with("versions_behind", u.behind)
        .with("days_behind", age.as_secs() / 86_400)
        .with("first_seen", first_seen.to_string())
        .with("published_at", u.published_at.clone())
        .with(
            "command",
            format!("switchyard deploy {} {}", cfg.name, u.version),
        );
    let passed: Vec<String> = cfg
        .agent
        .notify_escalate
        .iter()
        .filter(|d| age >= **d)
        .map(|d| crate::config::hooks::show_duration(*d))
        .collect();
    if let Some(last) = passed.last() {
        let base = n.key.clone();
        n.covers = std::iter::once(base.clone())
            .chain(
                passed[..passed.len() - 1]
                    .iter()
                    .map(|e| format!("{base}:{e}")),
            )
            .collect();
        n.key = format!("{base}:{last}");
        n = n.with("escalation", last.clone());
    }
    n
}

/// Opens or comments on the GitHub issue (`report_issues`) and returns the
/// failure's notification (sent once per version by the caller).
async fn report_failure(cfg: &AppConfig, f: &FailedDeploy, event: &str) -> Notice {
    let github = match (&cfg.source, cfg.agent.report_issues) {
        (SourceConfig::Github(g), true) => {
            let (owner, repo) = g
                .slug()
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            Some(report::GithubTarget {
                api_url: g.api_url.clone(),
                owner,
                repo,
                token: crate::source::github::read_token(g).ok().flatten(),
            })
        }
        _ => None,
    };
    let paths = AppPaths::new(&cfg.root);
    let rec = AppState::load(&paths).ok().and_then(|s| s.deploy);
    let deploy_id = rec.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let from = rec.and_then(|r| r.from.map(|v| v.to_string()));
    let r = report::build(
        &cfg.root,
        &cfg.name,
        from.as_deref(),
        &f.target,
        &deploy_id,
        f.state.as_str(),
        &f.step,
        &f.error,
        40,
    );
    if github.is_some() {
        // The chat webhook gets the notification instead (sent once).
        let target = report::ReportTarget {
            github,
            notify_url: None,
        };
        for res in report::send(&target, &r).await {
            match res {
                Ok(what) => info!(app = %cfg.name, "failure reported: {what}"),
                Err(e) => warn!(app = %cfg.name, error = %e, "could not report the failure"),
            }
        }
    }
    Notice::failure(event, &r)
}
