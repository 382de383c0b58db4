//! How the CLI shows deploy plans (`deploy --dry-run`), release diffs,
//! scheduled deploys and critical releases, for people.

use crate::ops::api::{DeployPlan, ReleaseDiff, ScheduleEntry, ScheduleView, Status};
use crate::source::CriticalRelease;

/// `deploy --dry-run`.
pub(super) fn plan(p: &DeployPlan) -> String {
    let from = p.from.as_ref().map_or("none".into(), |v| v.to_string());
    let mut s = format!(
        "dry run: nothing was changed\napp:        {}\nsource:     {}\nplan:       {from} -> {}{}\n",
        p.app,
        p.source,
        p.to,
        if p.already_live {
            " (live already: nothing to do)"
        } else {
            ""
        }
    );
    s.push_str(&format!(
        "install:    {}\n",
        if p.installed {
            "installed already (no download)"
        } else {
            "download, verify and unpack"
        }
    ));
    s.push_str("pre-checks:\n");
    for c in &p.checks {
        let mark = if c.pass { "ok  " } else { "FAIL" };
        s.push_str(&format!("  {mark} {:<11} {}\n", c.check, c.detail));
    }
    s.push_str(&format!(
        "would pass: {}\n",
        if p.would_pass { "yes" } else { "NO" }
    ));
    if p.hooks.is_empty() {
        s.push_str("hooks:      none configured\n");
    }
    for h in &p.hooks {
        s.push_str(&format!(
            "hook:       {} ({}): {}\n",
            h.hook, h.when, h.command
        ));
    }
    s.push_str(&format!(
        "backup:     {}\nmigrate:    {}\n",
        if p.backup { "yes" } else { "no" },
        if p.migrate { "yes" } else { "no" }
    ));
    if p.health.is_empty() {
        s.push_str("health:     none configured\n");
    }
    for (phase, checks) in &p.health {
        s.push_str(&format!("health:     {phase}: {}\n", checks.join("; ")));
    }
    if p.prune.is_empty() {
        s.push_str("prune:      would remove nothing\n");
    } else {
        let list: Vec<String> = p.prune.iter().map(|v| v.to_string()).collect();
        s.push_str(&format!("prune:      would remove {}\n", list.join(", ")));
    }
    s
}

/// `diff`.
pub(super) fn diff(d: &ReleaseDiff) -> String {
    let mut s = String::new();
    for e in &d.added {
        s.push_str(&format!(
            "added    {} ({})\n",
            e.path,
            crate::ops::api::kind_name(e)
        ));
    }
    for e in &d.removed {
        s.push_str(&format!(
            "removed  {} ({})\n",
            e.path,
            crate::ops::api::kind_name(e)
        ));
    }
    for c in &d.changed {
        s.push_str(&format!("changed  {} ({})\n", c.path, c.what.join(", ")));
    }
    s.push_str(&format!(
        "{} -> {}: {} added, {} removed, {} changed, {} unchanged\n",
        d.from,
        d.to,
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.unchanged
    ));
    s
}

fn entry(e: &ScheduleEntry) -> String {
    let mut s = format!(
        "{}  {:<9} {}  at {} ({}){}",
        e.id,
        e.state.as_str(),
        e.version,
        e.at,
        e.at_local,
        if e.allow_major { ", major allowed" } else { "" }
    );
    if let Some(r) = &e.reason {
        s.push_str(&format!(": {r}"));
    }
    s.push('\n');
    s
}

/// `schedule add` and `schedule cancel`.
pub(super) fn scheduled(app: &str, e: &ScheduleEntry, cancelled: bool) -> String {
    if cancelled {
        format!(
            "{app}: cancelled the scheduled deploy of {} ({})\n",
            e.version, e.id
        )
    } else {
        format!(
            "{app}: {} scheduled for {} ({}), id {}; the agent deploys it then\n",
            e.version, e.at, e.at_local, e.id
        )
    }
}

/// `schedule list`.
pub(super) fn schedule(v: &ScheduleView) -> String {
    let mut s = String::new();
    if let Some(h) = &v.hold {
        s.push_str(&format!(
            "{} is HELD by {} since {} ({}): pending deploys wait for `switchyard unhold {}`\n",
            v.app, h.by, h.since, h.reason, v.app
        ));
    }
    if v.entries.is_empty() {
        s.push_str(&format!("{}: nothing scheduled\n", v.app));
    }
    for e in &v.entries {
        s.push_str(&entry(e));
    }
    s
}

/// The critical releases, one line each.
pub(super) fn critical(all: &[CriticalRelease]) -> String {
    all.iter()
        .map(|c| match &c.deadline {
            Some(d) => format!("CRITICAL:   {} must be deployed by {d}\n", c.version),
            None => format!("CRITICAL:   {} must be deployed at once\n", c.version),
        })
        .collect()
}

/// The lines `status` adds for the schedule and critical releases.
pub(super) fn status_extra(st: &Status) -> String {
    let mut s = String::new();
    if let Some(n) = &st.next_scheduled {
        s.push_str(&format!(
            "scheduled:  {} at {} ({}), id {}{}\n",
            n.entry.version,
            n.entry.at,
            n.entry.at_local,
            n.entry.id,
            match &n.held_by {
                Some(by) => format!("; WAITS: the app is held by {by}"),
                None => String::new(),
            }
        ));
    }
    s.push_str(&critical(&st.critical));
    s
}
