//! Scheduled deploys: an operator's decision to deploy a release at a set
//! time, kept in `.switchyard/schedule.json` (written atomically under the
//! app's lock) and run by the agent once the time has come. An entry runs at
//! most once: it is marked `running` before its deploy starts and `done` or
//! `failed` after, so neither a failure nor a crash makes it run again.

use std::time::Instant;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::fs;
use crate::ops::error::{DeployError, chain};
use crate::ops::lifecycle::{DeployOptions, DeployOutcome};
use crate::ops::session::Session;
use crate::source::ReleaseSource;
use crate::store::layout::AppPaths;
use crate::store::state::{AppState, Hold, StateError, new_id, now_rfc3339};
use crate::version::{Version, VersionRequest};

/// Why a schedule could not be changed or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScheduleError {
    /// `--at` is not a date and time.
    #[error(
        "cannot read the time {at:?}: {why}; write it as \"2026-12-01 03:00\" (in --timezone, the system's zone by default) or as an RFC 3339 instant such as 2026-12-01T03:00:00Z"
    )]
    BadTime {
        /// As typed.
        at: String,
        /// What jiff said.
        why: String,
    },
    /// `--timezone` is not a zone this system knows.
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Berlin or UTC")]
    BadZone(String),
    /// The time has passed already.
    #[error("{at} is in the past (it is {now} now); schedule a later time")]
    Past {
        /// The time asked for.
        at: Timestamp,
        /// Now, on the clock the request ran on.
        now: Timestamp,
    },
    /// The same release is already scheduled.
    #[error(
        "{version} is already scheduled for {at} (id {id}); cancel that first: switchyard schedule cancel {app} {id}"
    )]
    Duplicate {
        /// The app.
        app: String,
        /// The release.
        version: Version,
        /// The pending entry.
        id: String,
        /// Its time.
        at: Timestamp,
    },
    /// No pending entry has that id or version.
    #[error(
        "no pending scheduled deploy of {app} matches {key}; see `switchyard schedule list {app}`"
    )]
    NotFound {
        /// The app.
        app: String,
        /// The id or version asked for.
        key: String,
    },
    /// `schedule.json` is not what Switchyard writes.
    #[error("{} is damaged; fix or remove it", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntryState {
    /// Waits for its time.
    Pending,
    /// Its deploy started (a crash leaves it here: it never runs again).
    Running,
    /// Deployed.
    Done,
    /// The deploy failed; `reason` says why.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl EntryState {
    /// The name shown to people.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Running => "running",
            EntryState::Done => "done",
            EntryState::Failed => "failed",
            EntryState::Cancelled => "cancelled",
        }
    }
}

/// One scheduled deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleEntry {
    /// Short id (for `schedule cancel`).
    pub id: String,
    /// The release to deploy.
    pub version: Version,
    /// When, as an instant.
    pub at: Timestamp,
    /// When, as the operator wrote it, with the zone it was read in.
    pub at_local: String,
    /// Deploy a major upgrade (the major gate applies otherwise).
    #[serde(default)]
    pub allow_major: bool,
    /// Who scheduled it.
    pub by: String,
    /// When it was scheduled (RFC 3339).
    pub created: String,
    /// Where it stands.
    pub state: EntryState,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it ran or was cancelled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

/// `.switchyard/schedule.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ScheduleFile {
    /// Every entry, oldest first (finished ones are kept as a record).
    #[serde(default)]
    pub entries: Vec<ScheduleEntry>,
}

impl ScheduleFile {
    /// The pending entry that comes first.
    pub(crate) fn next_pending(&self) -> Option<&ScheduleEntry> {
        self.entries
            .iter()
            .filter(|e| e.state == EntryState::Pending)
            .min_by_key(|e| e.at)
    }
}

/// What `schedule list` shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduleView {
    /// The app.
    pub app: String,
    /// Set when the app is held: pending entries wait for `unhold`.
    pub hold: Option<Hold>,
    /// Every entry, by time.
    pub entries: Vec<ScheduleEntry>,
}

/// The file's path.
pub(crate) fn path(paths: &AppPaths) -> std::path::PathBuf {
    paths.state_dir().join("schedule.json")
}

/// Reads the schedule; empty when there is none.
pub(crate) fn load(paths: &AppPaths) -> Result<ScheduleFile, DeployError> {
    let p = path(paths);
    match fs::read_optional(&p)? {
        None => Ok(ScheduleFile::default()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|source| ScheduleError::Corrupt { path: p, source }.into()),
    }
}

fn save(paths: &AppPaths, f: &ScheduleFile) -> Result<(), DeployError> {
    let body = serde_json::to_vec_pretty(f).map_err(|source| StateError::Corrupt {
        path: path(paths),
        source,
    })?;
    fs::write_atomic_private(&path(paths), &body)?;
    Ok(())
}

/// Reads `--at` in `zone` (the system's zone when `None`): a civil date and
/// time such as `2026-12-01 03:00`, or an instant with an offset.
pub(crate) fn parse_at(at: &str, zone: Option<&str>) -> Result<(Timestamp, String), ScheduleError> {
    let at = at.trim();
    if let Ok(ts) = at.parse::<Timestamp>() {
        return Ok((ts, at.to_string()));
    }
    let tz = match zone {
        Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::BadZone(name.to_string()))?,
        None => TimeZone::system(),
    };
    let bad = |e: jiff::Error| ScheduleError::BadTime {
        at: at.to_string(),
        why: e.to_string(),
    };
    let dt: jiff::civil::DateTime = at.parse().map_err(bad)?;
    let zoned = dt.to_zoned(tz.clone()).map_err(bad)?;
    let name = tz.iana_name().unwrap_or("local time");
    Ok((
        zoned.timestamp(),
        format!("{} {name}", dt.strftime("%Y-%m-%d %H:%M")),
    ))
}

/// An entry shown by its id or version.
fn matches(e: &ScheduleEntry, key: &str) -> bool {
    e.id == key || Version::parse(key).is_ok_and(|v| v == e.version)
}

impl Session<'_> {
    /// Schedules a deploy of `version` at `at`: refuses a time that has
    /// passed and a release the source does not offer.
    pub(super) fn schedule_add(
        &self,
        source: &dyn ReleaseSource,
        version: &Version,
        at: &str,
        zone: Option<&str>,
        allow_major: bool,
    ) -> Result<ScheduleEntry, DeployError> {
        let started = Instant::now();
        let (when, at_local) = parse_at(at, zone)?;
        let now = self.clock.now();
        if when <= now {
            return Err(ScheduleError::Past { at: when, now }.into());
        }
        // An unknown version is refused now, not at 3 a.m.
        let info = source.resolve(
            &VersionRequest::Exact(version.clone()),
            crate::source::include_prereleases(self.cfg),
        )?;
        let mut file = load(&self.paths)?;
        if let Some(e) = file
            .entries
            .iter()
            .find(|e| e.state == EntryState::Pending && e.version == info.version)
        {
            return Err(ScheduleError::Duplicate {
                app: self.cfg.name.clone(),
                version: e.version.clone(),
                id: e.id.clone(),
                at: e.at,
            }
            .into());
        }
        let entry = ScheduleEntry {
            id: new_id()[..8].to_string(),
            version: info.version.clone(),
            at: when,
            at_local,
            allow_major,
            by: self.actor.user.clone(),
            created: now_rfc3339(),
            state: EntryState::Pending,
            reason: None,
            finished: None,
        };
        file.entries.push(entry.clone());
        save(&self.paths, &file)?;
        self.audit("schedule.deploy.created", &entry, "ok", started, None)?;
        Ok(entry)
    }

    /// Cancels the pending entry with this id or version.
    pub(super) fn schedule_cancel(&self, key: &str) -> Result<ScheduleEntry, DeployError> {
        let started = Instant::now();
        let mut file = load(&self.paths)?;
        let Some(e) = file
            .entries
            .iter_mut()
            .find(|e| e.state == EntryState::Pending && matches(e, key))
        else {
            return Err(ScheduleError::NotFound {
                app: self.cfg.name.clone(),
                key: key.to_string(),
            }
            .into());
        };
        e.state = EntryState::Cancelled;
        e.reason = Some(format!("cancelled by {}", self.actor.user));
        e.finished = Some(now_rfc3339());
        let entry = e.clone();
        save(&self.paths, &file)?;
        self.audit("schedule.deploy.cancelled", &entry, "ok", started, None)?;
        Ok(entry)
    }

    /// Runs the pending entry `id` (the agent calls this once its time has
    /// come): marks it running, deploys, marks it done or failed.
    pub(super) fn schedule_run(
        &self,
        source: &dyn ReleaseSource,
        id: &str,
    ) -> Result<DeployOutcome, DeployError> {
        let started = Instant::now();
        let mut file = load(&self.paths)?;
        let Some(i) = file
            .entries
            .iter()
            .position(|e| e.id == id && e.state == EntryState::Pending)
        else {
            return Err(ScheduleError::NotFound {
                app: self.cfg.name.clone(),
                key: id.to_string(),
            }
            .into());
        };
        // A hold set while the agent waited for the lock still counts.
        if let Some(h) = AppState::load(&self.paths)?.hold {
            return Err(DeployError::Precheck(format!(
                "{} is held by {} ({}); the scheduled deploy of {} waits for `switchyard unhold {}`",
                self.cfg.name, h.by, h.reason, file.entries[i].version, self.cfg.name
            )));
        }
        // Marked before the deploy starts, so it never runs twice.
        file.entries[i].state = EntryState::Running;
        save(&self.paths, &file)?;
        let entry = file.entries[i].clone();
        let res = self.deploy(
            source,
            &VersionRequest::Exact(entry.version.clone()),
            DeployOptions {
                allow_downgrade: false,
                allow_major: entry.allow_major,
                force: false,
            },
        );
        let e = &mut file.entries[i];
        e.finished = Some(now_rfc3339());
        match &res {
            Ok(_) => e.state = EntryState::Done,
            Err(err) => {
                e.state = EntryState::Failed;
                e.reason = Some(chain(err));
            }
        }
        let entry = e.clone();
        save(&self.paths, &file)?;
        let (outcome, error) = match &res {
            Ok(_) => ("ok", None),
            Err(_) => ("failed", entry.reason.clone()),
        };
        self.audit("schedule.deploy.ran", &entry, outcome, started, error)?;
        res
    }

    fn audit(
        &self,
        event: &str,
        e: &ScheduleEntry,
        outcome: &str,
        started: Instant,
        error: Option<String>,
    ) -> Result<(), DeployError> {
        let mut details = serde_json::Map::new();
        details.insert("schedule_id".into(), e.id.clone().into());
        details.insert("at".into(), e.at.to_string().into());
        details.insert("allow_major".into(), e.allow_major.into());
        self.record(self.make_event(
            event,
            &e.id,
            None,
            Some(e.version.to_string()),
            outcome,
            started,
            error,
            details,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_reads_civil_times_in_a_zone_and_instants() {
        let (t, shown) = parse_at("2026-12-01 03:00", Some("Europe/Berlin")).unwrap();
        assert_eq!(t.to_string(), "2026-12-01T02:00:00Z");
        assert_eq!(shown, "2026-12-01 03:00 Europe/Berlin");
        let (t, _) = parse_at("2026-07-01T03:00", Some("Europe/Berlin")).unwrap();
        assert_eq!(t.to_string(), "2026-07-01T01:00:00Z", "summer time");
        let (t, _) = parse_at("2026-12-01T03:00:00Z", Some("Europe/Berlin")).unwrap();
        assert_eq!(t.to_string(), "2026-12-01T03:00:00Z", "an instant is kept");
        assert!(matches!(
            parse_at("tomorrow", Some("UTC")),
            Err(ScheduleError::BadTime { .. })
        ));
        assert!(matches!(
            parse_at("2026-12-01 03:00", Some("Mars/Olympus")),
            Err(ScheduleError::BadZone(_))
        ));
    }

    #[test]
    fn the_next_entry_is_the_earliest_pending_one() {
        let entry = |id: &str, at: &str, state| ScheduleEntry {
            id: id.into(),
            version: Version::parse("1.0.0").unwrap(),
            at: at.parse().unwrap(),
            at_local: String::new(),
            allow_major: false,
            by: "op".into(),
            created: String::new(),
            state,
            reason: None,
            finished: None,
        };
        let f = ScheduleFile {
            entries: vec![
                entry("a", "2026-01-01T00:00:00Z", EntryState::Failed),
                entry("b", "2026-01-03T00:00:00Z", EntryState::Pending),
                entry("c", "2026-01-02T00:00:00Z", EntryState::Pending),
            ],
        };
        assert_eq!(f.next_pending().unwrap().id, "c");
    }
}
