//! `switchyard fleet ...` for people: the rollout's summary, a table of its
//! waves and one of its hosts; what a control action did. (`--json` prints
//! the ops types as they are: their shape is documented in the README.)

use std::fmt::Write;
use std::time::Duration;

use crate::ops::api::{ControlReport, FleetStatus};
use crate::source::ledger::ControlAction;

/// `90` as `1m 30s`.
fn age(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0) as u64)).to_string()
}

/// `fleet status` as text.
pub(super) fn status(s: &FleetStatus) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} {} (tag {}) in {}, from {}",
        s.app, s.version, s.tag, s.environment, s.ledger
    );
    match (&s.halt, s.halted) {
        (Some(h), true) => {
            let at =
                h.at.map(|t| {
                    format!(
                        " since {t} ({} ago)",
                        age(s.now.as_second() - t.as_second())
                    )
                })
                .unwrap_or_default();
            let how = match h.action {
                Some(ControlAction::Revert) => "HALTED and REVERTED",
                _ => "HALTED",
            };
            let host = h
                .host
                .as_deref()
                .map(|x| format!(" on {x}"))
                .unwrap_or_default();
            let _ = writeln!(o, "{how} by {}{host}{at}: {}", h.by, h.reason);
        }
        _ => {
            let _ = writeln!(o, "not halted");
        }
    }
    for c in &s.ignored {
        let _ = writeln!(
            o,
            "IGNORED {} (control deployment {}) by GitHub login {} (payload says {} on {}): not in apps.{}.fleet.operators [{}]",
            c.payload.action,
            c.id,
            if c.creator.is_empty() {
                "(unknown)"
            } else {
                &c.creator
            },
            c.payload.by,
            c.payload.host,
            s.app,
            s.operators.join(", ")
        );
    }
    match s.max_failures {
        Some(m) => {
            let _ = writeln!(o, "failed hosts: {} (the rollout halts at {m})", s.failures);
        }
        None => {
            let _ = writeln!(o, "failed hosts: {}", s.failures);
        }
    }
    if let Some(e) = &s.plan_error {
        let _ = writeln!(o, "plan refused (agents refuse this release): {e}");
    } else if !s.plan {
        let _ = writeln!(
            o,
            "no rollout plan: every host takes the release per its own policy"
        );
    }
    if let Some(w) = s.open_wave {
        let _ = write!(o, "open: wave {w} of {}", s.waves.len());
        match &s.next_wave {
            Some(n) => match (n.opens_at, n.in_secs) {
                (Some(t), Some(secs)) => {
                    let _ = writeln!(o, "; wave {} opens at {t} (in {})", n.wave, age(secs));
                }
                _ => {
                    let _ = writeln!(o, "; wave {} opens after the first canary success", n.wave);
                }
            },
            None => {
                let _ = writeln!(o, "; every wave is open");
            }
        }
    }
    if !s.waves.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<5} {:<14} {:<26} {:<5} HOSTS",
            "WAVE", "TAKES", "OPENS", "OPEN"
        );
        for w in &s.waves {
            let takes = match w.percent {
                Some(p) => format!("{p}%"),
                None => w.labels.join(","),
            };
            let opens = w
                .opens_at
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into());
            let hosts = if w.hosts.is_empty() {
                "-".to_string()
            } else {
                w.hosts
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let open = if w.open { "yes" } else { "no" };
            let _ = writeln!(o, "{:<5} {takes:<14} {opens:<26} {open:<5} {hosts}", w.wave);
        }
    }
    if s.hosts.is_empty() {
        let _ = writeln!(o, "\nno host has attempted {} yet", s.version);
    } else {
        let _ = writeln!(
            o,
            "\n{:<18} {:<20} {:<5} {:<12} {:<12} {:<9} NOTE",
            "HOST", "NAME", "WAVE", "STATE", "AGE", "ATTEMPTS"
        );
        for h in &s.hosts {
            let note = h.description.as_deref().unwrap_or("");
            let _ = writeln!(
                o,
                "{:<18} {:<20} {:<5} {:<12} {:<12} {:<9} {note}",
                h.host_id,
                h.hostname,
                h.wave,
                h.state.as_str(),
                age(h.age_secs),
                h.attempts
            );
        }
    }
    let _ = writeln!(o, "({} requests to the ledger)", s.requests);
    o
}

/// `fleet halt|resume|revert` as text.
pub(super) fn control(r: &ControlReport) -> String {
    let p = &r.payload;
    let what = match p.action {
        ControlAction::Halt => format!(
            "halted: no agent starts {} {} from its next poll; hosts already on it stay on it",
            r.app, r.version
        ),
        ControlAction::Resume => format!(
            "resumed: the waves of {} {} proceed per its plan from each agent's next poll",
            r.app, r.version
        ),
        ControlAction::Revert if p.now => format!(
            "reverted: every host live on {} {} goes back at its next poll, outside its window (--now)",
            r.app, r.version
        ),
        ControlAction::Revert => format!(
            "reverted: every host live on {} {} goes back at its next poll inside its deploy window",
            r.app, r.version
        ),
    };
    let mut o = format!(
        "{what}\n  {} by {} on {}: {} (control deployment {} on {}, environment {})\n",
        p.action, p.by, p.host, p.reason, r.control_id, r.ledger, r.environment
    );
    if let Some(prev) = &r.previous {
        let _ = writeln!(
            o,
            "  replaces: {} by {} at {}: {}",
            prev.payload.action, prev.payload.by, prev.at, prev.payload.reason
        );
    }
    if p.action == ControlAction::Resume && r.failures > 0 {
        let _ = writeln!(
            o,
            "  note: {} hosts failed this release; if that reaches the plan's max_failures the rollout stays halted (see `switchyard fleet status {} --version {}`)",
            r.failures, r.app, r.version
        );
    }
    let _ = writeln!(
        o,
        "  recorded as fleet.{} in this host's audit log",
        p.action
    );
    o
}
