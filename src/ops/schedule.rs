//! Scheduled deploys (the file and its entries; `scheduler.rs` changes
//! and runs them): an operator's decision to deploy a release at a set
//! time, kept in `.switchyard/schedule.json` (written atomically under the
//! app's lock) and run by the agent once the time has come. An entry runs at
//! most once: it is marked `running` before its deploy starts and `done` or
//! `failed` after, so neither a failure nor a crash makes it run again.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError};
use crate::store::layout::AppPaths;
use crate::store::state::Hold;
use crate::version::Version;

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
    /// `schedule.json` could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
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
    /// The audit event of the change this write made, until it is in the
    /// audit log (as in `state.json`: the repair appends it after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_event: Option<serde_json::Value>,
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
pub(crate) fn load(paths: &AppPaths) -> Result<ScheduleFile, ScheduleError> {
    let p = path(paths);
    match fs::read_optional(&p)? {
        None => Ok(ScheduleFile::default()),
        Some(b) => {
            serde_json::from_slice(&b).map_err(|source| ScheduleError::Corrupt { path: p, source })
        }
    }
}

/// Writes the schedule atomically, closed to other users (0640). The
/// caller holds the app's lock.
pub(crate) fn save(paths: &AppPaths, f: &ScheduleFile) -> Result<(), ScheduleError> {
    let p = path(paths);
    let body = serde_json::to_vec_pretty(f).map_err(|source| ScheduleError::Corrupt {
        path: p.clone(),
        source,
    })?;
    fs::write_atomic_private(&p, &body)?;
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
            pending_event: None,
        };
        assert_eq!(f.next_pending().unwrap().id, "c");
    }
}
