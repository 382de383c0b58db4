//! Everything the CLI prints on stdout, for people or as `--json`: each
//! outcome rendered in one place, whether the operation ran here or in the
//! agent.

use std::path::Path;

use serde::Serialize;

use crate::ops::api::{
    DeployOutcome, InstallReport, ListedRelease, Outcome, Status, SwitchReport, VerifyReport,
};
use crate::ops::backup::BackupMeta;
use crate::ops::watch::human_bytes;
use crate::source::UpdateCheck;
use crate::store::history::{Event, SealInfo};
use crate::version::Version;

use super::render_plan;

/// Pretty JSON and a newline.
pub(crate) fn json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("output serializes");
    s.push('\n');
    s
}

/// The line before a hook's log in `switchyard logs`.
pub(crate) fn hook_log_header(hook: &str, path: &Path) -> String {
    format!("==> {hook} ({}) <==\n", path.display())
}

/// `switchyard logs`: each hook's log after its header, or as JSON.
pub(crate) fn hook_logs(
    app: &str,
    deploy: &str,
    logs: &[(String, std::path::PathBuf, String)],
    as_json: bool,
) -> String {
    if as_json {
        let hooks: Vec<_> = logs
            .iter()
            .map(|(h, p, t)| serde_json::json!({"hook": h, "path": p, "log": t}))
            .collect();
        return json(&serde_json::json!({"app": app, "deploy": deploy, "hooks": hooks}));
    }
    let mut s = String::new();
    for (h, p, t) in logs {
        s.push_str(&hook_log_header(h, p));
        s.push_str(t);
        if !t.ends_with('\n') && !t.is_empty() {
            s.push('\n');
        }
    }
    if logs.is_empty() {
        s.push_str(&format!("deploy {deploy} of {app} has no hook logs\n"));
    }
    s
}

/// The one-line JSON a failed `--json` command prints on stdout.
pub(crate) fn error_json(message: &str, exit_code: i32) -> String {
    format!(
        "{}\n",
        serde_json::json!({"error": message, "exit_code": exit_code})
    )
}

/// An operation's outcome, as JSON or for people.
pub(crate) fn outcome(app: &str, o: &Outcome, as_json: bool) -> String {
    if as_json {
        return match o {
            Outcome::Switched(r) => json(r),
            Outcome::Deployed(r) => json(r),
            Outcome::Status(s) => json(s),
            Outcome::Installed(r) => json(r),
            Outcome::Listed(rows) => json(rows),
            Outcome::History(events) => json(events),
            Outcome::Pruned { removed, .. } => json(&serde_json::json!({"removed": removed})),
            Outcome::Checked(r) => json(r),
            Outcome::Resolved { cleared } => json(&serde_json::json!({"cleared": cleared})),
            // `maintenance` has no --json: the same line either way.
            Outcome::Maintenance { on, flag } => maintenance(app, *on, flag),
            Outcome::Verified(r) => json(r),
            Outcome::AuditVerified { lines, seal } => {
                json(&serde_json::json!({"ok": true, "lines": lines, "seal": seal}))
            }
            Outcome::AuditSealed(s) => json(s),
            Outcome::BackupCreated(m) => json(m),
            Outcome::Backups(all) => json(all),
            Outcome::BackupVerified(m) => json(&serde_json::json!({"ok": true, "backup": m})),
            Outcome::BackupRestored { id } => json(&serde_json::json!({"restored": id})),
            Outcome::Held(h) => json(&serde_json::json!({"held": h})),
            Outcome::Unheld { lifted } => json(&serde_json::json!({"lifted": lifted})),
            Outcome::Quarantined {
                version,
                quarantine,
            } => json(&serde_json::json!({"version": version, "quarantine": quarantine})),
            Outcome::Unquarantined { version, lifted } => {
                json(&serde_json::json!({"version": version, "lifted": lifted}))
            }
            Outcome::Plan(p) => json(p),
            Outcome::Diff(d) => json(d),
            Outcome::Scheduled(e) | Outcome::ScheduleCancelled(e) => json(e),
            Outcome::Schedule(v) => json(v),
            Outcome::FleetStatus(s) => json(s),
            Outcome::FleetControl(r) => json(r),
        };
    }
    match o {
        Outcome::FleetStatus(s) => super::render_fleet::status(s),
        Outcome::FleetControl(r) => super::render_fleet::control(r),
        Outcome::Switched(r) => switch(app, r),
        Outcome::Deployed(r) => deploy(app, r),
        Outcome::Status(s) => status(s),
        Outcome::Installed(r) => install(app, r),
        Outcome::Listed(rows) => list(app, rows),
        Outcome::History(events) => history(app, events),
        Outcome::Pruned { removed, keep } if removed.is_empty() => {
            format!("nothing to prune (keep_releases = {keep})\n")
        }
        Outcome::Pruned { removed, .. } => removed
            .iter()
            .map(|v| format!("pruned {app} {v}\n"))
            .collect(),
        Outcome::Checked(r) => check(r),
        Outcome::Resolved { cleared: Some(a) } => format!(
            "{app}: cleared {} ({}); deploys are allowed again\n",
            a.kind, a.reason
        ),
        Outcome::Resolved { cleared: None } => {
            format!("{app}: nothing was blocked; the maintenance flag is off\n")
        }
        Outcome::Maintenance { on, flag } => maintenance(app, *on, flag),
        Outcome::Verified(r) => verify(app, r),
        Outcome::AuditVerified { lines, seal } => {
            let mut s = format!("audit log of {app}: {lines} lines, chain intact\n");
            if let Some(seal) = seal {
                s.push_str(&sealed(seal));
            }
            s
        }
        Outcome::AuditSealed(seal) => format!(
            "audit log of {app} sealed: the damaged log is kept as {} ({} lines, sha256 {}); a new chain starts with the seal; deploys can go on\n",
            seal.damaged_file, seal.damaged_lines, seal.damaged_sha256
        ),
        Outcome::BackupCreated(m) => format!(
            "backup {} ({}, sha256 {})\n",
            m.id,
            human_bytes(m.size),
            m.sha256
        ),
        Outcome::Backups(all) => backups(app, all),
        Outcome::BackupVerified(m) => format!("backup {}: checksum ok ({})\n", m.id, m.sha256),
        Outcome::BackupRestored { id } => format!("{app}: restored backup {id}\n"),
        Outcome::Held(h) => format!(
            "{app}: held ({}); the agent deploys nothing on its own until `switchyard unhold {app}`\n",
            h.reason
        ),
        Outcome::Unheld { lifted: Some(h) } => format!(
            "{app}: hold lifted (held by {} since {}: {}); automatic deploys resume\n",
            h.by, h.since, h.reason
        ),
        Outcome::Unheld { lifted: None } => {
            format!("{app}: was not held; automatic deploys run per policy\n")
        }
        Outcome::Quarantined {
            version,
            quarantine,
        } => format!(
            "{app} {version}: quarantined ({}); deploy and promote need --force, the agent will not take it, and it does not count for the downgrade floor; lift it with `switchyard unquarantine {app} {version}`\n",
            quarantine.reason
        ),
        Outcome::Unquarantined {
            version,
            lifted: Some(q),
        } => format!(
            "{app} {version}: quarantine lifted (was: {}, since {})\n",
            q.reason, q.time
        ),
        Outcome::Unquarantined {
            version,
            lifted: None,
        } => format!("{app} {version} was not quarantined\n"),
        Outcome::Plan(p) => render_plan::plan(p),
        Outcome::Diff(d) => render_plan::diff(d),
        Outcome::Scheduled(e) => render_plan::scheduled(app, e, false),
        Outcome::ScheduleCancelled(e) => render_plan::scheduled(app, e, true),
        Outcome::Schedule(v) => render_plan::schedule(v),
    }
}

/// How `audit verify` explains a chain that starts with a seal.
fn sealed(s: &SealInfo) -> String {
    let now = match s.file_now.as_str() {
        "kept" => "it is still there, unchanged",
        "changed" => "it has CHANGED since (its hash differs)",
        _ => "it is no longer beside the log",
    };
    format!(
        "the chain starts with a seal: sealed on {} by {}, who set the damaged log before it aside as {} ({} lines, sha256 {}; damaged at line {}: {}), saying {:?}; {now}\n",
        s.time,
        s.actor.user,
        s.damaged_file,
        s.damaged_lines,
        s.damaged_sha256,
        s.damaged_at_line,
        s.problem,
        s.reason
    )
}

fn or_none(v: &Option<Version>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "none".into())
}

fn install(app: &str, r: &InstallReport) -> String {
    if r.installed {
        let mut s = format!("installed {app} {} at {}\n", r.version, r.path.display());
        if let Some(top) = &r.stripped_top_dir {
            s.push_str(&stripped_line(top));
        }
        s
    } else {
        format!(
            "{app} {} is already installed at {}\n",
            r.version,
            r.path.display()
        )
    }
}

/// Says that an archive's single top directory was stripped, and how to keep it.
pub(crate) fn stripped_line(top: &str) -> String {
    format!(
        "stripped the top directory {top}/: every entry was under it, so its contents are the release root (set unpack.strip_top_dir = false to keep it)\n"
    )
}

fn switch(app: &str, r: &SwitchReport) -> String {
    if !r.changed {
        return format!("{app} {} is already live\n", r.to);
    }
    let mut s = format!(
        "{app}: current -> {} (was {}); last-good -> {}\n",
        r.to,
        or_none(&r.from),
        or_none(&r.last_good)
    );
    if r.held {
        s.push_str(&format!(
            "{app} is held: the agent deploys nothing on its own until `switchyard unhold {app}`\n"
        ));
    }
    s
}

fn deploy(app: &str, r: &DeployOutcome) -> String {
    if r.already_live {
        return format!("{app} {} is already live; nothing to do\n", r.to);
    }
    let mut s = format!(
        "{app}: deployed {} (was {}); deploy id {}\n",
        r.to,
        or_none(&r.from),
        r.id
    );
    if let Some(b) = &r.backup_id {
        s.push_str(&format!("backup {b} taken before migrating\n"));
    }
    for h in &r.health {
        s.push_str(&format!(
            "{} health: passed after {} round(s) in {} ms\n",
            h.phase,
            h.report.attempts,
            h.report.elapsed.as_millis()
        ));
    }
    if !r.pruned.is_empty() {
        s.push_str(&format!(
            "pruned old releases (keep_releases): {}\n",
            join_versions(&r.pruned)
        ));
    }
    s
}

/// `1.0.0, 1.1.0`.
fn join_versions(vs: &[crate::version::Version]) -> String {
    vs.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn maintenance(app: &str, on: bool, flag: &Path) -> String {
    if on {
        format!("{app}: maintenance on ({})\n", flag.display())
    } else {
        format!("{app}: maintenance off\n")
    }
}

fn list(app: &str, rows: &[ListedRelease]) -> String {
    if rows.is_empty() {
        return format!("no releases of {app} installed\n");
    }
    let mut s = String::new();
    for r in rows {
        let mark = match (r.current, r.last_good) {
            (true, _) => "* current  ",
            (_, true) => "  last-good",
            _ => "           ",
        };
        let disk = match &r.disk {
            Some(d) if d.shared_bytes > 0 => format!(
                "{} (+{} shared)",
                human_bytes(d.unique_bytes),
                human_bytes(d.shared_bytes)
            ),
            Some(d) => human_bytes(d.unique_bytes),
            None => String::new(),
        };
        s.push_str(&format!(
            "{mark} {:<16} {:>24}  {}{}\n",
            r.version.to_string(),
            disk,
            r.installed_at.as_deref().unwrap_or_default(),
            r.quarantined
                .as_ref()
                .map(|q| format!("  QUARANTINED: {}", q.reason))
                .unwrap_or_default()
        ));
    }
    s
}

fn history(app: &str, events: &[Event]) -> String {
    if events.is_empty() {
        return format!("no history for {app} yet\n");
    }
    let mut s = String::new();
    for e in events {
        let versions = match (&e.from, &e.to) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            (None, Some(t)) => t.clone(),
            (Some(f), None) => f.clone(),
            (None, None) => String::new(),
        };
        s.push_str(&format!(
            "{}  {:<30} {:<18} {:<12} by {}{}\n",
            e.time,
            e.event,
            versions,
            e.outcome,
            e.actor.user,
            e.error
                .as_ref()
                .map(|m| format!("\n    {m}"))
                .unwrap_or_default()
        ));
        if let Some(r) = &e.actor.reason {
            s.push_str(&format!("    reason: {r}\n"));
        }
        // A prune names no single version: list what it removed.
        if let Some(removed) = e.details.get("removed").and_then(|v| v.as_array()) {
            let names: Vec<&str> = removed.iter().filter_map(|v| v.as_str()).collect();
            s.push_str(&format!("    removed {}\n", names.join(", ")));
        }
        if let Some(sigs) = e.details.get("signatures").and_then(|v| v.as_array()) {
            for sig in sigs {
                s.push_str(&format!(
                    "    signed {} by key {}: {}\n",
                    sig["file"].as_str().unwrap_or(""),
                    sig["key_id"].as_str().unwrap_or(""),
                    sig["trusted_comment"].as_str().unwrap_or("")
                ));
            }
        }
    }
    s
}

fn verify(app: &str, r: &VerifyReport) -> String {
    if r.drift.is_clean() {
        return format!(
            "{app} {}: {} entries match the manifest\n",
            r.version, r.entries
        );
    }
    let mut s = String::new();
    for p in &r.drift.changed {
        s.push_str(&format!("changed  {p}\n"));
    }
    for p in &r.drift.added {
        s.push_str(&format!("added    {p}\n"));
    }
    for p in &r.drift.missing {
        s.push_str(&format!("missing  {p}\n"));
    }
    s
}

fn backups(app: &str, all: &[BackupMeta]) -> String {
    if all.is_empty() {
        return format!("no backups of {app}\n");
    }
    let mut s = String::new();
    for m in all {
        s.push_str(&format!(
            "{}  {:>10}  version {:<10} deploy {:<16} {}\n",
            m.id,
            human_bytes(m.size),
            m.app_version.as_deref().unwrap_or("-"),
            if m.deploy_id.is_empty() {
                "-"
            } else {
                &m.deploy_id
            },
            m.time
        ));
    }
    s
}

/// An update check for people.
pub(crate) fn check(r: &UpdateCheck) -> String {
    let current = or_none(&r.current);
    let mut s = format!(
        "app:        {}\nsource:     {}\nchannel:    {}\ncurrent:    {current}\n",
        r.app, r.source, r.channel
    );
    match (&r.latest, &r.latest_tag) {
        (Some(v), Some(tag)) => {
            s.push_str(&format!("latest:     {v} (tag {tag})\n"));
            if let Some(p) = &r.published_at {
                s.push_str(&format!("published:  {p}\n"));
            }
        }
        _ => s.push_str(&format!("latest:     none on the {} channel\n", r.channel)),
    }
    if r.update_available {
        let newer = r
            .newer
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "status:     {} version{} behind ({newer}){}\n",
            r.behind,
            if r.behind == 1 { "" } else { "s" },
            if r.major_upgrade {
                "; a MAJOR (breaking) upgrade: read the notes first"
            } else {
                ""
            }
        ));
        for q in &r.quarantined {
            s.push_str(&format!(
                "quarantined: {q} (not suggested; `switchyard unquarantine {} {q}` lifts it)\n",
                r.app
            ));
        }
        if let Some(cmd) = &r.suggest {
            s.push_str(&format!("upgrade:    {cmd}\n"));
        }
    } else {
        s.push_str("status:     up to date\n");
    }
    s.push_str(&render_plan::critical(&r.critical));
    if let Some(n) = &r.notes {
        s.push_str("\nrelease notes:\n");
        for line in n.lines() {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s
}

/// The `fleet:` line of `status`: where this host stands in the rollout.
fn fleet_line(f: &crate::store::agent::FleetView) -> String {
    let place = format!(
        "{} wave {}/{} (host {}, bucket {})",
        f.version, f.wave, f.waves, f.host_id, f.bucket
    );
    let state = match (&f.blocked, f.open, &f.opens_at) {
        (Some(why), _, _) => format!("not deploying: {why}"),
        (None, true, _) => "wave open".to_string(),
        (None, false, Some(t)) => format!("wave opens at {t}"),
        (None, false, None) => "waiting for a first-wave host to succeed".to_string(),
    };
    format!(
        "fleet:      {place}: {state}; {} of max {} host(s) failed (as of {})\n",
        f.failures, f.max_failures, f.at
    )
}

/// A status for people.
pub(crate) fn status(st: &Status) -> String {
    let mut s = format!(
        "app:        {}\nroot:       {}\ncurrent:    {}\nlast-good:  {}\ninstalled:  {}\n",
        st.app,
        st.root.display(),
        or_none(&st.current),
        or_none(&st.last_good),
        if st.installed.is_empty() {
            "none".to_string()
        } else {
            st.installed
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for sig in &st.current_signatures {
        s.push_str(&format!(
            "signed:     {} by key {}: {}{}\n",
            sig.file,
            sig.key_id,
            sig.trusted_comment,
            if sig.legacy {
                " (legacy signature)"
            } else {
                ""
            }
        ));
    }
    if let Some(d) = &st.deploy {
        s.push_str(&format!(
            "deploy:     {} {} -> {}: {} ({}), updated {}\n",
            d.id,
            or_none(&d.from),
            d.to.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            d.state.as_str(),
            d.step,
            d.updated
        ));
        if let Some(e) = &d.last_error {
            s.push_str(&format!("last error: {e}\n"));
        }
    }
    if let Some(a) = &st.attention {
        s.push_str(&format!(
            "BLOCKED:    {} since {}: {}\n",
            a.kind, a.since, a.reason
        ));
    }
    if let Some(m) = &st.maintenance {
        s.push_str(&format!(
            "maintenance: on since {} ({}): {}\n",
            m.since, m.reason, m.message
        ));
    }
    for (v, q) in &st.quarantined {
        s.push_str(&format!(
            "quarantined: {v} since {}: {}\n",
            q.time, q.reason
        ));
    }
    for (v, f) in &st.agent_failures {
        s.push_str(&match &f.retry_at {
            None => format!(
                "agent:      will not retry {v}: {}; deploy it by hand or publish a new release\n",
                f.reason
            ),
            Some(at) => format!(
                "agent:      retries {v} at {at} (failed {} time(s)): {}\n",
                f.attempts, f.reason
            ),
        });
    }
    if let Some(f) = &st.fleet {
        s.push_str(&fleet_line(f));
    }
    if let Some(h) = &st.hold {
        s.push_str(&format!(
            "HELD:       by {} since {}: {}; the agent deploys nothing on its own; resume with `switchyard unhold {}`\n",
            h.by, h.since, h.reason, st.app
        ));
    }
    match (&st.downgrade_floor, &st.highest_verified) {
        (Some(f), Some(h)) if f != h => s.push_str(&format!(
            "downgrade floor: {f} (the highest verified, {h}, is quarantined)\n"
        )),
        (Some(f), _) => s.push_str(&format!("downgrade floor: {f}\n")),
        _ => {}
    }
    if let Some(r) = &st.running {
        s.push_str(&format!(
            "running:    pid {} '{}' since {}\n",
            r.pid, r.operation, r.since
        ));
    }
    if let Some(i) = &st.interrupted {
        s.push_str(&format!("interrupted: {i}\n"));
    }
    if let Some(e) = &st.last_event {
        s.push_str(&format!(
            "last event: {} {} {} ({}) by {}\n",
            e.time,
            e.event,
            e.to.clone().unwrap_or_default(),
            e.outcome,
            e.actor.user
        ));
    }
    s.push_str(&render_plan::status_extra(st));
    for p in &st.problems {
        s.push_str(&format!("PROBLEM:    {p}\n"));
    }
    s
}

/// What `backup restore` is about to replace, and the question.
pub(crate) fn restore_prompt(
    app: &crate::config::AppConfig,
    m: &crate::ops::backup::BackupMeta,
) -> String {
    let mut s = format!(
        "backup restore replaces data of {} with backup {} (taken {}, release {}, checksum ok):\n",
        app.name,
        m.id,
        m.time,
        m.app_version.as_deref().unwrap_or("none")
    );
    for p in &m.shared {
        s.push_str(&format!(
            "  {} is replaced by its copy in the backup\n",
            app.root.join("shared").join(p).display()
        ));
    }
    if m.has_hook_dump {
        match &app.hooks.restore {
            Some(h) => s.push_str(&format!(
                "  the restore hook runs on the backup's dump: {}\n",
                h.command
            )),
            None => {
                s.push_str("  its hook dump cannot be restored: no restore hook is configured\n")
            }
        }
    }
    s.push_str("Restore it? Type yes to go on: ");
    s
}

/// `config check` on a valid file: its apps, then any warnings as
/// `FILE:LINE:COL: warning: message` lines.
pub(crate) fn config_ok(
    path: &Path,
    apps: &[&String],
    warnings: &[crate::config::Problem],
    as_json: bool,
) -> String {
    if as_json {
        return json(
            &serde_json::json!({"ok": true, "path": path, "apps": apps, "problems": warnings}),
        );
    }
    let mut s = if apps.is_empty() {
        format!("{}: ok (no app yet)\n", path.display())
    } else {
        format!(
            "{}: ok ({} app{}: {})\n",
            path.display(),
            apps.len(),
            if apps.len() == 1 { "" } else { "s" },
            apps.iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    for w in warnings {
        s.push_str(&format!("{w}\n"));
    }
    s
}

/// `config check` on an invalid file: every problem, one
/// `FILE:LINE:COL: message` line each.
pub(crate) fn config_problems(problems: &[crate::config::Problem], as_json: bool) -> String {
    if as_json {
        return json(&serde_json::json!({"ok": false, "problems": problems}));
    }
    problems.iter().map(|p| format!("{p}\n")).collect()
}

/// What `pack` wrote.
pub(crate) fn packed(p: &crate::cli::pack::Packed, as_json: bool) -> String {
    if as_json {
        return json(p);
    }
    let mut s = format!("packed {} ({})\n", p.asset.display(), p.sha256);
    s.push_str(&format!("wrote  {}\n", p.sums.display()));
    for sig in &p.signatures {
        s.push_str(&format!("signed {}\n", sig.display()));
    }
    if let Some(top) = &p.single_top_dir {
        if p.stripped_on_install {
            s.push_str(&format!(
                "note: everything is under {top}/, whose name carries the version: install strips it, so its contents are the release root (unpack.strip_top_dir = false keeps it)\n"
            ));
        } else {
            s.push_str(&format!(
                "note: everything is under {top}/: install keeps it, so files land in releases/<version>/{top}/ (point the web server there, or set unpack.strip_top_dir = true)\n"
            ));
        }
    }
    s
}

/// What `keygen` wrote, and how to pin the key.
pub(crate) fn keygen(
    public_file: &Path,
    secret_file: &Path,
    key_id: &str,
    public: &str,
    as_json: bool,
) -> String {
    if as_json {
        return json(&serde_json::json!({
            "public_key_file": public_file, "secret_key_file": secret_file, "key_id": key_id, "public_key": public
        }));
    }
    format!(
        "public key: {}  (key id {key_id})\nsecret key: {}  (keep it secret; mode 0600)\n\nPin it on every host:\n  [apps.<name>.trust]\n  keys = [\"{public}\"]\n",
        public_file.display(),
        secret_file.display()
    )
}

/// `console add-user`'s one line.
pub(crate) fn console_user(a: &crate::ops::console_users::AddedUser) -> String {
    let what = if a.replaced { "updated" } else { "added" };
    format!(
        "{what} console user {} ({}) in {}\n",
        a.name,
        a.role,
        a.file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_switch_reads_the_same_from_anywhere() {
        let v = |s: &str| Version::parse(s).unwrap();
        let r = SwitchReport {
            from: Some(v("1.0.0")),
            to: v("1.1.0"),
            last_good: Some(v("1.0.0")),
            changed: true,
            held: false,
        };
        // What the agent sends back renders like a direct call.
        let wire: Outcome =
            serde_json::from_str(&serde_json::to_string(&Outcome::Switched(r)).unwrap()).unwrap();
        assert_eq!(
            outcome("web", &wire, false),
            "web: current -> 1.1.0 (was 1.0.0); last-good -> 1.0.0\n"
        );
        assert!(outcome("web", &wire, true).contains("\"changed\": true"));
    }
}
