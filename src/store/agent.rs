//! `.switchyard/agent.json`: what the agent remembers about an app between
//! polls and across restarts: failed automatic deploys (so a refused release
//! is not retried every poll) and the notifications already sent (so a
//! restart does not send them again). Only the agent writes it; `status`
//! reads it. Losing it is harmless: the agent tries once more and notifies
//! once more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError};
use crate::store::layout::AppPaths;

/// Why the memory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentMemoryError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The file is not what the agent writes.
    #[error("{} is damaged; delete it (the agent then retries once and may notify once more)", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
}

/// Whether a failure may go away on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureClass {
    /// The same release fails the same way every time (checksum, signature,
    /// unsafe archive, downgrade, a failed lifecycle): not retried until the
    /// release changes or an operator acts.
    Deterministic,
    /// The network, GitHub, the lock or the host: retried with back-off.
    Transient,
}

/// A failed automatic deploy of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RememberedFailure {
    /// Whether it is retried.
    pub class: FailureClass,
    /// The error, one line.
    pub reason: String,
    /// The release as it was when it failed (tag and publication time): a
    /// re-published release differs.
    pub release: String,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// When it last failed, RFC 3339 (the agent's clock).
    pub last: String,
    /// When it may be tried again (transient failures only), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// How many audit events existed after the failure: a later event by an
    /// operator makes the agent forget the failure.
    pub audit_count: u64,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AgentMemory {
    /// Failed automatic deploys, by version.
    #[serde(default)]
    pub failures: BTreeMap<String, RememberedFailure>,
    /// Notifications sent, by key (`<event>:<version>[:<escalation>]` for
    /// `notify_url`, the same after `email:` for e-mail), with when (RFC 3339).
    #[serde(default)]
    pub notified: BTreeMap<String, String>,
    /// When a version was first seen available, RFC 3339 (for `days_behind`
    /// when the source does not say when it was published).
    #[serde(default)]
    pub first_seen: BTreeMap<String, String>,
    /// Fleet rollouts: what this host last saw of the candidate's rollout
    /// (for `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetView>,
    /// Fleet rollouts: ledger statuses not posted yet (GitHub was down),
    /// oldest first; posted at the next poll, so none is lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet_pending: Vec<PendingStatus>,
    /// Fleet rollouts: this host's attempt of the live version, marked
    /// `inactive` when a later version replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_live: Option<LiveAttempt>,
}

/// A ledger status to post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingStatus {
    /// The attempt (GitHub deployment id).
    pub attempt: u64,
    /// The state to post.
    pub state: crate::source::ledger::AttemptState,
    /// Its description.
    pub description: String,
}

/// This host's attempt that put the live version in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveAttempt {
    /// The version.
    pub version: String,
    /// The attempt (GitHub deployment id).
    pub attempt: u64,
}

/// Where this host stands in the candidate release's rollout, as the last
/// poll saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FleetView {
    /// The candidate release.
    pub version: String,
    /// This host's id.
    pub host_id: String,
    /// Its bucket (0 to 9999).
    pub bucket: u64,
    /// Its wave, from 1.
    pub wave: usize,
    /// How many waves the plan has.
    pub waves: usize,
    /// When its wave opens (or opened), RFC 3339; `None` while it waits for
    /// a canary's success.
    pub opens_at: Option<String>,
    /// Whether its wave is open.
    pub open: bool,
    /// Failed hosts the ledger shows for the version.
    pub failures: usize,
    /// The plan's `max_failures`.
    pub max_failures: usize,
    /// Why the host does not deploy it (halted, too many failures, the
    /// ledger unreadable), if so.
    pub blocked: Option<String>,
    /// Halted by an operator or by `max_failures`.
    pub halted: bool,
    /// When this was seen (the agent's clock), RFC 3339.
    pub at: String,
}

impl AgentMemory {
    /// Loads the memory; a missing file is an empty memory.
    pub(crate) fn load(paths: &AppPaths) -> Result<AgentMemory, AgentMemoryError> {
        let path = paths.agent_file();
        match fs::read_optional(&path)? {
            None => Ok(AgentMemory::default()),
            Some(b) => serde_json::from_slice(&b)
                .map_err(|source| AgentMemoryError::Corrupt { path, source }),
        }
    }

    /// Saves the memory atomically (mode 0640). Creates `.switchyard/` when
    /// the app has never been deployed (a first deploy can fail too).
    pub(crate) fn save(&self, paths: &AppPaths) -> Result<(), AgentMemoryError> {
        let dir = paths.state_dir();
        if fs::metadata(&dir)?.is_none() {
            fs::create_private_dir_all(&dir)?;
        }
        let data = serde_json::to_vec_pretty(self).unwrap_or_default();
        fs::write_atomic_private(&paths.agent_file(), &data)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_absence() {
        let t = tempfile::tempdir().unwrap();
        let p = AppPaths::new(t.path());
        assert_eq!(AgentMemory::load(&p).unwrap(), AgentMemory::default());
        let mut m = AgentMemory::default();
        m.failures.insert(
            "1.0.1".into(),
            RememberedFailure {
                class: FailureClass::Deterministic,
                reason: "checksum mismatch".into(),
                release: "v1.0.1@x".into(),
                attempts: 1,
                last: "2026-01-01T00:00:00Z".into(),
                retry_at: None,
                audit_count: 3,
            },
        );
        m.notified.insert("deploy_failed:1.0.1".into(), "t".into());
        m.save(&p).unwrap();
        assert_eq!(AgentMemory::load(&p).unwrap(), m);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&p.agent_file())
            .unwrap()
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
