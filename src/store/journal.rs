//! The journal of the operation in progress (`.switchyard/journal.json`):
//! its intent, written before anything changes, and at the commit point the
//! audit event that reports it. The repair every session runs first undoes
//! an uncommitted journal and finishes a committed one.

use std::path::{Path, PathBuf};

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
    /// A restore's shared paths: each new copy placed beside its target,
    /// then exchanged with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<Exchange>,
}

/// One shared path a restore swaps in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Exchange {
    /// The shared path.
    pub target: PathBuf,
    /// The new copy's name beside it; after the exchange, the old data's.
    pub staged: PathBuf,
    /// Whether the target existed (else the new copy is renamed in).
    pub existed: bool,
    /// Device and inode of the new copy once placed: where `target` has
    /// them, the exchange happened.
    #[serde(default)]
    pub inode: Option<(u64, u64)>,
}

impl Exchange {
    /// The staged name, in the target's directory.
    fn staged_name(&self) -> &Path {
        Path::new(self.staged.file_name().unwrap_or_default())
    }

    /// Puts the old data back where the exchange happened and removes the
    /// new copy: the undo of an uncommitted restore. Both names are reached
    /// from the root without following a symlink.
    pub(crate) fn undo(&self, paths: &AppPaths) -> Result<(), StateError> {
        use std::os::unix::fs::MetadataExt;
        let rel = paths.shared_rel(&self.target)?;
        let Some((dir, name)) = paths.shared_parent(rel, false)? else {
            return Ok(()); // its directory never came to be: nothing was placed
        };
        // Where the target has the new copy's inode, the exchange happened.
        let swapped = match (self.inode, dir.stat(&name)?) {
            (Some(i), Some(m)) => (m.dev(), m.ino()) == i,
            _ => false,
        };
        if swapped {
            if self.existed {
                dir.exchange(self.staged_name(), &name)?;
            } else {
                dir.rename(&name, self.staged_name())?;
            }
        }
        dir.remove_any(self.staged_name())?;
        dir.fsync()?;
        Ok(())
    }

    /// Removes what the staged name holds: after the commit, the old data.
    fn remove_staged(&self, paths: &AppPaths) -> Result<(), StateError> {
        if let Some((dir, _)) = paths.shared_parent(paths.shared_rel(&self.target)?, false)? {
            dir.remove_any(self.staged_name())?;
        }
        Ok(())
    }
}

impl Journal {
    /// Writes the journal durably.
    pub(crate) fn write(&self, paths: &AppPaths) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        fs::write_atomic_private(&paths.journal(), &data)?;
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
    // A committed restore: the old data now sits at the staged names.
    for x in &j.exchanges {
        x.remove_staged(paths)?;
    }
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
