//! The journal of the operation in progress (`.switchyard/journal.json`):
//! its intent, written before anything changes, and at the commit point the
//! audit event that reports it. The repair every session runs first undoes
//! an uncommitted journal and finishes a committed one.

use serde::{Deserialize, Serialize};

use crate::fs;
use crate::store::history::{self, Event, HistoryError};
use crate::store::layout::AppPaths;
use crate::store::state::StateError;
use crate::version::Version;

/// What an operation in progress intends, written before it changes anything
/// so the next start can undo it after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Journal {
    /// Operation id (shared with the history line).
    pub id: String,
    /// `install`, `promote` or `revert`.
    pub op: String,
    /// The process that wrote it.
    pub pid: u32,
    /// When it started.
    pub started: String,
    /// The release the operation installs or switches to.
    pub target: Option<Version>,
    /// `current` before the operation.
    pub prev_current: Option<Version>,
    /// `last-good` before the operation.
    pub prev_last_good: Option<Version>,
    /// True when the operation creates `releases/<target>` (install).
    #[serde(default)]
    pub creates_release: bool,
    /// Set at the commit point: the audit event that reports the change. A
    /// journal with it is finished (the event appended if it is missing),
    /// never undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Event>,
}

impl Journal {
    /// Writes the journal durably.
    pub(crate) fn write(&self, paths: &AppPaths) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        fs::write_atomic(&paths.journal(), &data)?;
        Ok(())
    }

    /// Reads the journal left by an operation that did not finish.
    pub(crate) fn read(paths: &AppPaths) -> Result<Option<Journal>, StateError> {
        let path = paths.journal();
        match fs::read_optional(&path)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
        }
    }

    /// Removes the journal: the operation is committed (or undone).
    pub(crate) fn clear(paths: &AppPaths) -> Result<(), StateError> {
        fs::remove_file(&paths.journal())?;
        fs::fsync_dir(&paths.state_dir())?;
        Ok(())
    }
}

/// Appends the event of a committed journal if the audit log does not end
/// with it yet, then removes the journal. Idempotent: a crash anywhere in it
/// leaves work the next call finishes.
pub(crate) fn finish_committed(paths: &AppPaths, j: &Journal) -> Result<(), HistoryError> {
    if let Some(e) = &j.commit {
        let last = history::read(paths)?.pop();
        let written = last.is_some_and(|l| l.event.id == e.id && l.event.event == e.event);
        if !written {
            history::append(paths, e)?;
        }
    }
    Journal::clear(paths)?;
    Ok(())
}
