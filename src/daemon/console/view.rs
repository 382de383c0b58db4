//! What the console's pages show, read through the operations API (status,
//! list, history, backups) and `ops::watch` (the running deploy and its hook
//! logs), never by reading the store on its own. Hook output passes
//! through the report redaction before any page or event carries it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, Tick};
use crate::config::AppConfig;
use crate::daemon::report::redact::redact;
use crate::ops::api::{self, Caller, Outcome, Request, Status};
use crate::ops::watch;
use crate::source::{FetchedRelease, ReleaseInfo, ReleaseSource, ReleaseToml, SourceError};
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::store::manifest::ReleaseMeta;

/// How long the console reuses a source's release list: pages and live
/// updates must not ask GitHub on every view.
const LIST_TTL: Duration = Duration::from_secs(60);

/// Bytes of each hook log's end the progress view shows.
const TAIL_BYTES: u64 = 4096;

/// Lines of each hook log's end the progress view shows.
const TAIL_LINES: usize = 20;

/// History events an app page shows at most.
const HISTORY_ROWS: usize = 200;

/// The release list as last read, and when (or why it could not be).
type Listing = Option<(Tick, Result<Vec<ReleaseInfo>, String>)>;

/// A source whose release list (and release.toml sidecars) are kept for
/// [`LIST_TTL`]: what the console's status reads ask.
pub(crate) struct CachedSource {
    inner: Box<dyn ReleaseSource>,
    clock: Arc<dyn Clock>,
    list: Mutex<Listing>,
    tomls: Mutex<HashMap<String, Option<ReleaseToml>>>,
}

impl CachedSource {
    /// The app's own source, cached.
    pub(crate) fn new(cfg: &AppConfig, clock: Arc<dyn Clock>) -> CachedSource {
        CachedSource {
            inner: crate::source::for_app(cfg),
            clock,
            list: Mutex::new(None),
            tomls: Mutex::new(HashMap::new()),
        }
    }
}

impl ReleaseSource for CachedSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn releases(&self) -> Result<Vec<ReleaseInfo>, SourceError> {
        let now = self.clock.tick();
        let mut g = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = g
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < LIST_TTL);
        let res = match fresh {
            Some((_, r)) => r.clone(),
            None => {
                let r = self.inner.releases().map_err(|e| crate::chain::chain(&e));
                *g = Some((now, r.clone()));
                r
            }
        };
        res.map_err(|reason| SourceError::NotFound {
            what: format!("the release list (the last attempt failed: {reason})"),
            source_desc: self.inner.describe(),
        })
    }

    fn fetch(&self, info: &ReleaseInfo) -> Result<FetchedRelease, SourceError> {
        self.inner.fetch(info)
    }

    fn release_toml(&self, info: &ReleaseInfo) -> Result<Option<ReleaseToml>, SourceError> {
        let key = info.version.to_string();
        if let Some(t) = self
            .tomls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(t.clone());
        }
        let t = self.inner.release_toml(info)?;
        self.tomls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, t.clone());
        Ok(t)
    }
}

/// One app's line on the overview.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppRow {
    /// The app.
    pub name: String,
    /// The live release.
    pub live: String,
    /// The rollback target.
    pub last_good: String,
    /// The last deploy's state and step, or `idle`.
    pub lifecycle: String,
    /// Who holds it and why.
    pub hold: Option<String>,
    /// The maintenance message.
    pub maintenance: Option<String>,
    /// What blocks deploys.
    pub attention: Option<String>,
    /// The live health check, as the last deploy left it.
    pub health: String,
    /// Deployable releases newer than the live one (`?` when unknown).
    pub behind: String,
    /// Newer releases marked critical, with their deadlines.
    pub critical: Option<String>,
    /// The next window opening or scheduled deploy.
    pub next: Option<String>,
    /// Problems the status noticed, or why it could not be read.
    pub problem: Option<String>,
}

/// A release on the app page.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseRow {
    /// The version.
    pub version: String,
    /// Live now.
    pub live: bool,
    /// The rollback target.
    pub last_good: bool,
    /// Unpacked size.
    pub size: String,
    /// When it was installed.
    pub installed_at: String,
    /// Why it is quarantined.
    pub quarantined: Option<String>,
    /// The key ids that signed it.
    pub signed_by: String,
}

/// One audit event on the app page.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRow {
    /// When.
    pub time: String,
    /// The event.
    pub event: String,
    /// Who.
    pub actor: String,
    /// Why, when they said (redacted like everything shown).
    pub reason: String,
    /// From -> to.
    pub change: String,
    /// ok, failed, ...
    pub outcome: String,
    /// The error, redacted.
    pub error: String,
}

/// A backup on the app page.
#[derive(Debug, Clone)]
pub(crate) struct BackupRow {
    /// Its id.
    pub id: String,
    /// When.
    pub time: String,
    /// The release live then.
    pub version: String,
    /// Archive size.
    pub size: String,
}

/// A hook log's end, redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookTail {
    /// The hook.
    pub hook: String,
    /// Its last lines.
    pub tail: String,
}

/// The running (or last) deploy, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Deploy id.
    pub id: String,
    /// deploy, promote, revert.
    pub op: String,
    /// Its state.
    pub state: String,
    /// The step.
    pub step: String,
    /// The release it brings live.
    pub to: String,
    /// Finished.
    pub terminal: bool,
    /// Why it failed, redacted.
    pub error: Option<String>,
    /// The hooks' output so far.
    pub hooks: Vec<HookTail>,
}

/// Everything the app page shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppView {
    /// The overview's line for it.
    pub row: AppRow,
    /// Newer releases the source offers.
    pub available: Vec<String>,
    /// Installed releases, newest first.
    pub releases: Vec<ReleaseRow>,
    /// The running or last deploy.
    pub progress: Option<Progress>,
    /// The audit log, newest first, filtered.
    pub history: Vec<HistoryRow>,
    /// Backups, newest first.
    pub backups: Vec<BackupRow>,
    /// Deploys with hook logs, newest first.
    pub log_deploys: Vec<String>,
}

/// Who reads (status reads take no lock, but the API wants a caller).
fn reader(clock: &Arc<dyn Clock>) -> Caller {
    Caller {
        clock: clock.clone(),
        actor: Actor {
            user: "console".into(),
            uid: None,
            reason: None,
        },
        wait: false,
        automatic: false,
    }
}

fn status(cfg: &AppConfig, src: &CachedSource, clock: &Arc<dyn Clock>) -> Result<Status, String> {
    match api::execute(
        cfg,
        src,
        &Request::Status {
            app: cfg.name.clone(),
        },
        &reader(clock),
    ) {
        Ok(Outcome::Status(s)) => Ok(*s),
        Ok(_) => Err("unexpected answer to a status request".into()),
        Err(e) => Err(redact(&crate::chain::chain(&e))),
    }
}

/// The overview's line for an app (blocking: run it off the runtime).
pub(crate) fn app_row(cfg: &AppConfig, src: &CachedSource, clock: &Arc<dyn Clock>) -> AppRow {
    row_of(cfg, src, clock, status(cfg, src, clock).as_ref())
}

/// The overview's line for an app whose status was read.
fn row_of(
    cfg: &AppConfig,
    src: &CachedSource,
    clock: &Arc<dyn Clock>,
    st: Result<&Status, &String>,
) -> AppRow {
    let mut row = AppRow {
        name: cfg.name.clone(),
        ..AppRow::default()
    };
    let st = match st {
        Ok(s) => s,
        Err(e) => {
            row.problem = Some(e.clone());
            row.behind = "?".into();
            return row;
        }
    };
    let show = |v: &Option<crate::version::Version>| {
        v.as_ref()
            .map_or_else(|| "none".to_string(), |v| v.to_string())
    };
    row.live = show(&st.current);
    row.last_good = show(&st.last_good);
    row.lifecycle = match (&st.running, &st.deploy) {
        (Some(r), _) => format!("running: {}", r.operation),
        (None, Some(d)) => format!("{} {} ({})", d.op, d.state.as_str(), d.step),
        (None, None) => "idle".into(),
    };
    row.hold = st
        .hold
        .as_ref()
        .map(|h| format!("held by {} since {}: {}", h.by, h.since, h.reason));
    row.maintenance = st.maintenance.as_ref().map(|m| m.message.clone());
    row.attention = st
        .attention
        .as_ref()
        .map(|a| format!("{}: {}", a.kind, a.reason));
    row.health = match (&cfg.health.live, &st.deploy) {
        (None, _) => "no live check configured".into(),
        (Some(_), Some(d)) if d.state.as_str() == "completed" => "passed at the last deploy".into(),
        (Some(_), Some(d)) => format!("last deploy {}", d.state.as_str()),
        (Some(_), None) => "not checked yet".into(),
    };
    let available = newer(cfg, src, st);
    row.behind = match &available {
        Some(v) => v.len().to_string(),
        None => "?".into(),
    };
    if !st.critical.is_empty() {
        row.critical = Some(
            st.critical
                .iter()
                .map(|c| match c.deadline {
                    Some(d) => format!("{} (deploy by {d})", c.version),
                    None => format!("{} (at once)", c.version),
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let window = cfg
        .agent
        .window
        .as_ref()
        .map(|w| format!("window {w}, next opening {}", w.next_open(clock.now())));
    let scheduled = st
        .next_scheduled
        .as_ref()
        .map(|n| format!("scheduled: {} at {}", n.entry.version, n.entry.at));
    row.next = match (scheduled, window) {
        (Some(s), Some(w)) => Some(format!("{s}; {w}")),
        (s, w) => s.or(w),
    };
    if !st.problems.is_empty() {
        row.problem = Some(st.problems.join("; "));
    }
    row
}

/// Deployable releases newer than the live one (not quarantined), newest
/// first; `None` when the source could not be asked.
fn newer(cfg: &AppConfig, src: &CachedSource, st: &Status) -> Option<Vec<String>> {
    let include = crate::source::include_prereleases(cfg);
    let mut v: Vec<_> = src
        .releases()
        .ok()?
        .into_iter()
        .filter(|r| include || !r.prerelease)
        .filter(|r| st.current.as_ref().is_none_or(|c| &r.version > c))
        .filter(|r| !st.quarantined.contains_key(&r.version.to_string()))
        .map(|r| r.version)
        .collect();
    v.sort();
    v.dedup();
    Some(v.into_iter().rev().map(|v| v.to_string()).collect())
}

/// What the history filter keeps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Part of the event name.
    pub event: String,
    /// Part of the actor's name.
    pub actor: String,
}

/// Everything the app page shows (blocking).
pub(crate) fn app_view(
    cfg: &AppConfig,
    src: &CachedSource,
    clock: &Arc<dyn Clock>,
    filter: &Filter,
) -> AppView {
    let st = status(cfg, src, clock);
    let row = row_of(cfg, src, clock, st.as_ref());
    let caller = reader(clock);
    let app = cfg.name.clone();
    let available = st
        .as_ref()
        .ok()
        .and_then(|s| newer(cfg, src, s))
        .unwrap_or_default();
    let paths = AppPaths::new(&cfg.root);
    let releases = match api::execute(cfg, src, &Request::List { app: app.clone() }, &caller) {
        Ok(Outcome::Listed(list)) => list
            .into_iter()
            .map(|r| ReleaseRow {
                signed_by: ReleaseMeta::load(&paths, &r.version)
                    .ok()
                    .flatten()
                    .map(|m| {
                        let mut ids: Vec<String> =
                            m.signatures.into_iter().map(|s| s.key_id).collect();
                        ids.sort();
                        ids.dedup();
                        ids.join(", ")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "unsigned".into()),
                version: r.version.to_string(),
                live: r.current,
                last_good: r.last_good,
                size: r.content_bytes.map(watch::human_bytes).unwrap_or_default(),
                installed_at: r.installed_at.unwrap_or_default(),
                quarantined: r.quarantined.map(|q| q.reason),
            })
            .collect(),
        _ => Vec::new(),
    };
    let history = match api::execute(
        cfg,
        src,
        &Request::History {
            app: app.clone(),
            limit: None,
        },
        &caller,
    ) {
        Ok(Outcome::History(events)) => events
            .into_iter()
            .rev()
            .filter(|e| filter.event.is_empty() || e.event.contains(&filter.event))
            .filter(|e| filter.actor.is_empty() || e.actor.user.contains(&filter.actor))
            .take(HISTORY_ROWS)
            .map(|e| HistoryRow {
                change: match (&e.from, &e.to) {
                    (Some(f), Some(t)) => format!("{f} → {t}"),
                    (None, Some(t)) => t.clone(),
                    (Some(f), None) => format!("{f} →"),
                    (None, None) => String::new(),
                },
                time: e.time,
                event: e.event,
                reason: e.actor.reason.as_deref().map(redact).unwrap_or_default(),
                actor: e.actor.user,
                outcome: e.outcome,
                error: e.error.map(|m| redact(&m)).unwrap_or_default(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let backups = match api::execute(cfg, src, &Request::BackupList { app }, &caller) {
        Ok(Outcome::Backups(b)) => b
            .into_iter()
            .rev()
            .map(|b| BackupRow {
                id: b.id,
                time: b.time,
                version: b.app_version.unwrap_or_default(),
                size: watch::human_bytes(b.size),
            })
            .collect(),
        _ => Vec::new(),
    };
    AppView {
        row,
        available,
        releases,
        progress: progress(cfg),
        history,
        backups,
        log_deploys: log_deploys(cfg),
    }
}

/// The deploys that have hook logs, newest first.
fn log_deploys(cfg: &AppConfig) -> Vec<String> {
    watch::deploys_with_logs(cfg)
}

/// The running (or last) deploy with its hooks' output so far (blocking).
pub(crate) fn progress(cfg: &AppConfig) -> Option<Progress> {
    let d = watch::deploy_view(cfg)?;
    let hooks = watch::hook_logs(cfg, Some(&d.id))
        .map(|(_, logs)| {
            logs.into_iter()
                .map(|l| HookTail {
                    tail: tail(&l.path),
                    hook: l.hook,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Progress {
        id: d.id,
        op: d.op,
        state: d.state.to_string(),
        step: d.step,
        to: d.to.unwrap_or_default(),
        terminal: d.terminal,
        error: d.last_error.map(|e| redact(&e)),
        hooks,
    })
}

/// A deploy's hook logs, each whole (up to 256 KiB from its end), redacted.
pub(crate) fn hook_logs(cfg: &AppConfig, id: &str) -> Result<Vec<HookTail>, String> {
    let (_, logs) = watch::hook_logs(cfg, Some(id)).map_err(|e| crate::chain::chain(&e))?;
    Ok(logs
        .into_iter()
        .map(|l| HookTail {
            tail: redact(&read_end(&l.path, 256 * 1024)),
            hook: l.hook,
        })
        .collect())
}

/// The last [`TAIL_LINES`] lines of a hook log, redacted.
fn tail(path: &std::path::Path) -> String {
    let text = read_end(path, TAIL_BYTES);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    redact(&lines[from..].join("\n"))
}

/// Up to `max` bytes from a log's end, from a line start.
fn read_end(path: &std::path::Path, max: u64) -> String {
    let len = crate::fs::symlink_metadata(path)
        .ok()
        .flatten()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    let start = len.saturating_sub(max);
    let (buf, _) = watch::read_from(path, start).unwrap_or_default();
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Cut to the first full line.
        text.split_once('\n')
            .map_or(text.clone(), |(_, r)| r.to_string())
    } else {
        text
    }
}
