//! The error of every operation, its exit codes, and the one place an error
//! chain becomes text that is kept (state file, audit log, the control socket).

pub(crate) use crate::chain::{chain, messages};
use crate::fs::FsError;
use crate::ops::backup::BackupError;
use crate::ops::schedule::ScheduleError;
use crate::source::SourceError;
use crate::store::history::HistoryError;
use crate::store::layout::LayoutError;
use crate::store::state::{DeployState, StateError};
use crate::verify::VerifyError;
use crate::verify::trust::TrustError;
use crate::verify::unpack::UnpackError;

/// How a failed deploy ended, after "deploy failed": nothing when the
/// state says no more than that ("deploy failed (failed)" said it twice).
pub(crate) fn ended_in(state: DeployState) -> String {
    match state {
        DeployState::Failed => String::new(),
        s => format!(" ({})", s.as_str().replace('_', " ")),
    }
}

/// Errors of an operation. Each maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
    /// The source failed or lacks the release.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Checksum or signature verification failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The archive was refused or is corrupt.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Lock, journal or state failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// Audit log failure.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The audit log's hash chain does not verify (`audit verify`).
    #[error(transparent)]
    Audit(HistoryError),
    /// Shared paths could not be linked, or the root's layout is refused.
    #[error(transparent)]
    Link(#[from] LayoutError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A backup asked for could not be found, read or checked.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Taking or restoring a backup failed under a session (reported, as
    /// always, as a refused pre-check).
    #[error("pre-check failed")]
    BackupFailed(#[source] BackupError),
    /// The release is missing a file the policy requires.
    #[error("release {version} has no {file}; {hint}")]
    MissingSidecar {
        /// The release.
        version: String,
        /// The missing file.
        file: String,
        /// What to do.
        hint: String,
    },
    /// A release that is not installed.
    #[error(
        "release {version} of {app} is not installed (installed: {installed}); run `switchyard install {app} {version}` first"
    )]
    NotInstalled {
        /// The app.
        app: String,
        /// The release asked for.
        version: String,
        /// What is installed.
        installed: String,
    },
    /// `verify` without a version, and nothing is live.
    #[error("{app} has no live release; name one: switchyard verify {app} <version>")]
    NoLiveRelease {
        /// The app.
        app: String,
    },
    /// A release on disk differs from its manifest.
    #[error(
        "{app} {version} differs from its manifest: {changed} changed, {added} added, {missing} missing; reinstall it (prune it, then install) or investigate who changed it"
    )]
    Drift {
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// Entries changed.
        changed: usize,
        /// Entries added.
        added: usize,
        /// Entries missing.
        missing: usize,
    },
    /// A signature was refused.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// No signature while the policy requires one.
    #[error(
        "release {version} is not signed: neither {asset}.minisig nor SHA256SUMS.minisig was published, and [apps.{app}.trust] require_signature = true; sign it with `switchyard sign` or `minisign -S` (or `switchyard pack --key`)"
    )]
    Unsigned {
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// The asset's name.
        asset: String,
    },
    /// A valid signature whose trusted comment names another release or file.
    #[error(
        "{file}: the signature is valid, but its trusted comment {comment:?} names {field} {found:?} where {expected:?} was expected: a signed file from another release was replayed; nothing was installed"
    )]
    Replayed {
        /// The signature file.
        file: String,
        /// The trusted comment.
        comment: String,
        /// `tag` or `file`.
        field: String,
        /// What the comment says.
        found: String,
        /// What it should say.
        expected: String,
    },
    /// An older version than the highest ever verified.
    #[error(
        "refusing to install {app} {version}: it is older than {highest}, the highest version already verified here (downgrade protection); pass --allow-downgrade if you mean it, or use `switchyard revert`/`promote` to return to an installed release"
    )]
    Downgrade {
        /// The app.
        app: String,
        /// The release asked for.
        version: String,
        /// The floor.
        highest: String,
    },
    /// A pre-check refused the deploy; nothing changed.
    #[error("pre-check failed: {0}")]
    Precheck(String),
    /// Deploys are blocked until an operator runs `switchyard resolve`.
    #[error(
        "deploys of {app} are blocked ({kind}): {reason}\nWhen the app is back in order, run `switchyard resolve {app}`"
    )]
    Blocked {
        /// The app.
        app: String,
        /// `needs_attention` or `rollback_failed`.
        kind: String,
        /// What happened.
        reason: String,
    },
    /// The deploy failed (and was undone where anything had changed).
    #[error("deploy failed{}: {reason}", ended_in(*state))]
    Failed {
        /// The state it ended in.
        state: DeployState,
        /// What failed and what was done about it.
        reason: String,
        /// The live release was swapped back.
        rolled_back: bool,
    },
    /// Switchyard stopped rather than guess; an operator must look.
    #[error(
        "the agent is stopping: the operation stopped before its next step; the agent's next start (or the next command) finishes or undoes it"
    )]
    Stopped,
    #[error("the app needs an operator: {reason}")]
    NeedsAttention {
        /// What happened and what to do.
        reason: String,
    },
    /// A command that waited for the lock found another live release than
    /// its operator saw.
    #[error(
        "{app} changed while `{asked}` waited for the lock: {seen} was live when you asked, {now} is live now{by}; nothing was done. Check `switchyard status {app}`, then run the command again if you still want it"
    )]
    ChangedMeanwhile {
        /// The app.
        app: String,
        /// The command.
        asked: String,
        /// Live when asked.
        seen: String,
        /// Live now.
        now: String,
        /// Who changed it, when (` (release.revert.completed by alice at ...)`).
        by: String,
    },
    /// The agent may not deploy: an operator holds the app.
    #[error(
        "{app} is held by {by} since {since} ({reason}); the agent deploys nothing on its own. Resume automatic deploys with `switchyard unhold {app}`"
    )]
    Held {
        /// The app.
        app: String,
        /// Who.
        by: String,
        /// Since when.
        since: String,
        /// Why.
        reason: String,
    },
    /// `backup create` for an app with neither a backup hook nor shared
    /// paths to back up.
    #[error(
        "{app} has nothing to back up: no backup hook and no shared paths in backups; in [apps.{app}] set hooks.backup = \"COMMAND\" (it writes its dump to $SWITCHYARD_BACKUP_FILE), or backup_shared = true with the paths in [apps.{app}.shared] (dirs, files)"
    )]
    NothingToBackUp {
        /// The app.
        app: String,
    },
    /// `revert` with no rollback target.
    #[error(
        "{app} has no release to revert to: {why}; name one with `switchyard revert {app} --to <version>`"
    )]
    NothingToRevert {
        /// The app.
        app: String,
        /// Why not.
        why: String,
    },
    /// A scheduled deploy could not be added, cancelled or read.
    #[error(transparent)]
    Schedule(#[from] crate::ops::schedule::ScheduleError),
    /// A fleet command failed (no fleet, ledger unreachable); boxed, as
    /// it carries the ledger's error.
    #[error(transparent)]
    Fleet(Box<crate::ops::fleet_error::FleetError>),
}

impl From<crate::ops::fleet_error::FleetError> for DeployError {
    fn from(e: crate::ops::fleet_error::FleetError) -> Self {
        DeployError::Fleet(Box::new(e))
    }
}

/// Exit codes, documented in the README.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: i32 = 0;
    /// A runtime failure not covered below.
    pub(crate) const FAILURE: i32 = 1;
    /// Usage or configuration error.
    pub(crate) const USAGE: i32 = 2;
    /// Checksum or signature verification failed, or the archive was refused.
    pub(crate) const VERIFY: i32 = 3;
    /// Another operation holds the app's lock.
    pub(crate) const BUSY: i32 = 4;
    /// The app, release or version was not found.
    pub(crate) const NOT_FOUND: i32 = 5;
    /// A pre-check refused the deploy, or deploys are blocked; nothing changed.
    pub(crate) const PRECHECK: i32 = 6;
    /// The deploy failed; the live release was kept or reverted to.
    pub(crate) const DEPLOY_FAILED: i32 = 7;
    /// Switchyard stopped rather than guess (unknown migrate outcome, failed
    /// revert): the maintenance flag is on, `switchyard resolve` unblocks.
    pub(crate) const NEEDS_ATTENTION: i32 = 8;
    pub(crate) const STORAGE: i32 = 9;

    /// Every code with a one-line meaning, for `--help`.
    pub(crate) const ALL: [(i32, &str); 10] = [
        (OK, "success"),
        (FAILURE, "failure"),
        (USAGE, "usage or configuration error"),
        (
            VERIFY,
            "verification failed (checksum, signature, downgrade, unsafe archive, drift)",
        ),
        (BUSY, "the app is busy (another operation holds its lock)"),
        (NOT_FOUND, "not found (app, release, version or backup)"),
        (
            PRECHECK,
            "a pre-check refused the deploy, or deploys are blocked; nothing changed",
        ),
        (
            DEPLOY_FAILED,
            "the deploy failed; the live release was kept or reverted to",
        ),
        (
            NEEDS_ATTENTION,
            "the app needs an operator (maintenance on; `switchyard resolve` unblocks)",
        ),
        (
            STORAGE,
            "the disk is full or failing (ENOSPC, EDQUOT, EIO, EROFS); nothing was left half done",
        ),
    ];
}

impl DeployError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        // A full or failing disk is said as such, whatever step met it;
        // outcomes that describe what was done (failed and reverted, needs
        // an operator) keep their own code.
        if !matches!(
            self,
            DeployError::Failed { .. } | DeployError::NeedsAttention { .. }
        ) && crate::fs::storage_failure(self).is_some()
        {
            return exit::STORAGE;
        }
        match self {
            DeployError::Verify(_)
            | DeployError::Unpack(_)
            | DeployError::MissingSidecar { .. }
            | DeployError::Trust(_)
            | DeployError::Unsigned { .. }
            | DeployError::Replayed { .. }
            | DeployError::Downgrade { .. }
            | DeployError::Audit(_)
            | DeployError::Drift { .. }
            | DeployError::Backup(BackupError::Damaged { .. }) => exit::VERIFY,
            DeployError::State(StateError::Busy { .. }) => exit::BUSY,
            DeployError::Source(SourceError::NotFound { .. })
            | DeployError::NotInstalled { .. }
            | DeployError::NoLiveRelease { .. }
            | DeployError::NothingToRevert { .. }
            | DeployError::Backup(BackupError::NotFound { .. }) => exit::NOT_FOUND,
            DeployError::Source(SourceError::Version(_))
            | DeployError::Link(LayoutError::OtherApp { .. })
            | DeployError::State(StateError::Layout(LayoutError::OtherApp { .. })) => exit::USAGE,
            DeployError::Source(SourceError::Refused { .. }) => exit::VERIFY,
            DeployError::Precheck(_)
            | DeployError::Blocked { .. }
            | DeployError::ChangedMeanwhile { .. }
            | DeployError::Held { .. }
            | DeployError::History(HistoryError::Damaged { .. })
            | DeployError::BackupFailed(_) => exit::PRECHECK,
            DeployError::History(HistoryError::NothingToSeal { .. })
            | DeployError::NothingToBackUp { .. } => exit::USAGE,
            DeployError::Schedule(ScheduleError::NotFound { .. }) => exit::NOT_FOUND,
            DeployError::Schedule(ScheduleError::Corrupt { .. } | ScheduleError::Fs(_)) => {
                exit::FAILURE
            }
            DeployError::Schedule(_) => exit::USAGE,
            DeployError::Fleet(e)
                if matches!(
                    **e,
                    crate::ops::fleet_error::FleetError::NotConfigured { .. }
                ) =>
            {
                exit::USAGE
            }
            DeployError::Failed { .. } => exit::DEPLOY_FAILED,
            DeployError::NeedsAttention { .. } => exit::NEEDS_ATTENTION,
            _ => exit::FAILURE,
        }
    }
}
