//! The operations API: every operation on an app is a typed [`Request`]
//! that [`execute`] turns into a typed [`Outcome`] or a [`DeployError`].
//! The CLI calls it directly; the agent runs the requests its control socket
//! brings through the same function. What crosses the socket is exactly
//! these types: a [`Request`] one way, a [`Reply`] (an [`Outcome`] or a
//! [`RemoteError`]) the other; the CLI renders both the same way, whichever
//! way they came.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) use crate::ops::diff::{ReleaseDiff, kind_name};
pub(crate) use crate::ops::install::InstallReport;
pub(crate) use crate::ops::lifecycle::DeployOutcome;
pub(crate) use crate::ops::plan::DeployPlan;
pub(crate) use crate::ops::schedule::{ScheduleEntry, ScheduleView};
pub(crate) use crate::ops::status::{ListedRelease, Status, VerifyReport};
pub(crate) use crate::ops::switch::SwitchReport;

use crate::config::AppConfig;
use crate::ops::backup::{self, BackupMeta};
use crate::ops::error::{DeployError, messages};
pub(crate) use crate::ops::fleet::{ControlReport, FleetStatus};
use crate::ops::install::InstallOptions;
use crate::ops::lifecycle::{DeployOptions, PromoteOptions};
pub(crate) use crate::ops::operator::Seen;
use crate::ops::session::Session;
use crate::ops::status;
use crate::source::ledger::ControlAction;
use crate::source::{ReleaseSource, UpdateCheck};
use crate::store::history::{self, Actor, Event, SealInfo};
use crate::store::layout::{AppPaths, maintenance};
use crate::store::state::{AppLock, Attention, Hold, Quarantine};
use crate::version::{Version, VersionRequest};

/// Who asks for an operation, and how.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The clock hooks and health checks are timed on (the agent's, which
    /// tests may fake).
    pub clock: Arc<dyn Clock>,
    /// Recorded in the audit log.
    pub actor: Actor,
    /// Wait for the app's lock instead of failing at once when it is taken.
    pub wait: bool,
    /// The agent acting on its own (its lock then says `agent deploy ...`).
    pub automatic: bool,
}

impl Caller {
    /// An operator, waiting for the lock or not.
    pub(crate) fn operator(actor: Actor, wait: bool) -> Caller {
        Caller {
            clock: Arc::new(SystemClock),
            actor,
            wait,
            automatic: false,
        }
    }
}

/// An operation on one app. The variants not marked `skip` are the ones the
/// control socket carries (the CLI hands them to a running agent, so they
/// queue behind its own work); the others always run where they are asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Make an installed release live, activate it and check it.
    Promote {
        /// The app.
        app: String,
        /// An installed release.
        version: Version,
        /// Promote a quarantined release.
        #[serde(default)]
        force: bool,
        /// Accept a major upgrade.
        #[serde(default)]
        allow_major: bool,
        /// Make live a release that was only installed, without the deploy
        /// steps it missed (warm, staging check, backup, migrate).
        #[serde(default)]
        skip_lifecycle: bool,
        /// What the operator saw live.
        #[serde(default)]
        seen: Option<Seen>,
        /// Why, as the operator said (kept in the audit log with each event).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Swap back through the live history (or to `to`), activate and check.
    Revert {
        /// The app.
        app: String,
        /// Target instead of the previous live release.
        #[serde(default)]
        to: Option<Version>,
        /// What the operator saw live.
        #[serde(default)]
        seen: Option<Seen>,
        /// Why, as the operator said (kept in the audit log with each event).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The whole deploy lifecycle.
    Deploy {
        /// The app.
        app: String,
        /// A version or `latest`.
        #[serde(with = "version_request")]
        version: VersionRequest,
        /// Accept a version older than the highest verified.
        #[serde(default)]
        allow_downgrade: bool,
        /// Accept a major upgrade.
        #[serde(default)]
        allow_major: bool,
        /// Deploy a quarantined release.
        #[serde(default)]
        force: bool,
        /// What the operator saw live.
        #[serde(default)]
        seen: Option<Seen>,
        /// Why, as the operator said (kept in the audit log with each event).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// What is live, what is installed, what runs.
    Status {
        /// The app.
        app: String,
    },
    /// Download, verify and unpack a release without making it live.
    #[serde(skip)]
    Install {
        /// The app.
        app: String,
        /// A version or `latest`.
        version: VersionRequest,
        /// Accept a version older than the highest verified.
        allow_downgrade: bool,
    },
    /// The installed releases.
    #[serde(skip)]
    List {
        /// The app.
        app: String,
    },
    /// The audit log.
    #[serde(skip)]
    History {
        /// The app.
        app: String,
        /// Only the last N events.
        limit: Option<usize>,
    },
    /// Remove old releases.
    #[serde(skip)]
    Prune {
        /// The app.
        app: String,
    },
    /// Compare the live release with the newest the source offers.
    #[serde(skip)]
    Check {
        /// The app.
        app: String,
    },
    /// Clear an operator block and the maintenance flag.
    #[serde(skip)]
    Resolve {
        /// The app.
        app: String,
    },
    /// Turn the maintenance flag on or off.
    #[serde(skip)]
    Maintenance {
        /// The app.
        app: String,
        /// On or off.
        on: bool,
        /// The message for users (with `on`).
        message: String,
    },
    /// Check a release on disk against its install manifest.
    #[serde(skip)]
    Verify {
        /// The app.
        app: String,
        /// The release; the live one by default.
        version: Option<Version>,
    },
    /// Check the audit log's hash chain.
    #[serde(skip)]
    AuditVerify {
        /// The app.
        app: String,
    },
    /// Set a damaged audit log aside and start a new chain that records it.
    #[serde(skip)]
    AuditSeal {
        /// The app.
        app: String,
        /// Why, in the operator's words (kept in the seal event).
        reason: String,
    },
    /// Take a backup now.
    #[serde(skip)]
    BackupCreate {
        /// The app.
        app: String,
    },
    /// The backups, oldest first.
    #[serde(skip)]
    BackupList {
        /// The app.
        app: String,
    },
    /// Re-check a backup's checksum.
    #[serde(skip)]
    BackupVerify {
        /// The app.
        app: String,
        /// The backup; the newest by default.
        id: Option<String>,
    },
    /// Restore a backup.
    #[serde(skip)]
    BackupRestore {
        /// The app.
        app: String,
        /// The backup; the newest by default.
        id: Option<String>,
    },
    /// Stop automatic deploys (the agent's) until `unhold`.
    #[serde(skip)]
    Hold {
        /// The app.
        app: String,
        /// Why.
        reason: Option<String>,
    },
    /// Resume automatic deploys.
    #[serde(skip)]
    Unhold {
        /// The app.
        app: String,
    },
    /// Quarantine a release by hand.
    #[serde(skip)]
    Quarantine {
        /// The app.
        app: String,
        /// The release.
        version: Version,
        /// Why.
        reason: Option<String>,
    },
    /// Lift a release's quarantine.
    #[serde(skip)]
    Unquarantine {
        /// The app.
        app: String,
        /// The release.
        version: Version,
    },
    /// The plan of a deploy, changing nothing (`deploy --dry-run`).
    #[serde(skip)]
    DeployPlan {
        /// The app.
        app: String,
        /// A version or `latest`.
        version: VersionRequest,
        /// As for the deploy.
        allow_downgrade: bool,
        /// As for the deploy.
        allow_major: bool,
        /// As for the deploy.
        force: bool,
    },
    /// Files added, removed and changed between two installed releases.
    #[serde(skip)]
    Diff {
        /// The app.
        app: String,
        /// The first release.
        from: Version,
        /// The second release.
        to: Version,
    },
    /// Schedule a deploy.
    #[serde(skip)]
    ScheduleAdd {
        /// The app.
        app: String,
        /// The release.
        version: Version,
        /// When, as typed.
        at: String,
        /// The zone `at` is read in; the system's by default.
        timezone: Option<String>,
        /// Accept a major upgrade.
        allow_major: bool,
    },
    /// The scheduled deploys.
    #[serde(skip)]
    ScheduleList {
        /// The app.
        app: String,
    },
    /// Cancel a pending scheduled deploy.
    #[serde(skip)]
    ScheduleCancel {
        /// The app.
        app: String,
        /// Its id or version.
        key: String,
    },
    /// Run a scheduled deploy whose time has come (the agent's).
    #[serde(skip)]
    ScheduleRun {
        /// The app.
        app: String,
        /// The entry.
        id: String,
        /// Its release (for the lock and the failure report).
        version: Version,
    },
    /// The fleet's rollout of a release, from the ledger and the plan.
    #[serde(skip)]
    FleetStatus {
        /// The app.
        app: String,
        /// The release; the newest the source offers by default.
        version: Option<Version>,
    },
    /// Posts a fleet control action (halt, resume, revert).
    #[serde(skip)]
    FleetControl {
        /// The app.
        app: String,
        /// The release.
        version: Version,
        /// What.
        action: ControlAction,
        /// Why (required for halt and revert by the CLI).
        reason: Option<String>,
        /// A revert outside each host's window.
        now: bool,
    },
}

impl Request {
    /// The app it concerns.
    pub(crate) fn app(&self) -> &str {
        match self {
            Request::Promote { app, .. }
            | Request::Revert { app, .. }
            | Request::Deploy { app, .. }
            | Request::Status { app }
            | Request::Install { app, .. }
            | Request::List { app }
            | Request::History { app, .. }
            | Request::Prune { app }
            | Request::Check { app }
            | Request::Resolve { app }
            | Request::Maintenance { app, .. }
            | Request::Verify { app, .. }
            | Request::AuditVerify { app }
            | Request::AuditSeal { app, .. }
            | Request::BackupCreate { app }
            | Request::BackupList { app }
            | Request::BackupVerify { app, .. }
            | Request::BackupRestore { app, .. }
            | Request::Hold { app, .. }
            | Request::Unhold { app }
            | Request::Quarantine { app, .. }
            | Request::Unquarantine { app, .. }
            | Request::DeployPlan { app, .. }
            | Request::Diff { app, .. }
            | Request::ScheduleAdd { app, .. }
            | Request::ScheduleList { app }
            | Request::ScheduleCancel { app, .. }
            | Request::ScheduleRun { app, .. }
            | Request::FleetStatus { app, .. }
            | Request::FleetControl { app, .. } => app,
        }
    }

    /// The reason an operator gave with a deploy, promote or revert.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Request::Promote { reason, .. }
            | Request::Revert { reason, .. }
            | Request::Deploy { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Whether a running agent takes it (the CLI then hands it over): the
    /// operations that change what is live, and status.
    pub(crate) fn through_agent(&self) -> bool {
        matches!(
            self,
            Request::Promote { .. }
                | Request::Revert { .. }
                | Request::Deploy { .. }
                | Request::Status { .. }
        )
    }

    /// What the app's lock says is running.
    fn label(&self, caller: &Caller) -> String {
        match self {
            Request::Install { version, .. } => format!("install {}", show(version)),
            Request::Promote { version, .. } => format!("promote {version}"),
            Request::Deploy { version, .. } if caller.automatic => {
                format!("agent deploy {}", show(version))
            }
            Request::Deploy { version, .. } => format!("deploy {}", show(version)),
            Request::Revert { .. } => "revert".into(),
            Request::Prune { .. } => "prune".into(),
            Request::Resolve { .. } => "resolve".into(),
            Request::BackupCreate { .. } => "backup create".into(),
            Request::BackupRestore { .. } => "backup restore".into(),
            Request::AuditSeal { .. } => "audit seal".into(),
            Request::Hold { .. } => "hold".into(),
            Request::Unhold { .. } => "unhold".into(),
            Request::Quarantine { version, .. } => format!("quarantine {version}"),
            Request::Unquarantine { version, .. } => format!("unquarantine {version}"),
            Request::ScheduleAdd { version, .. } => format!("schedule {version}"),
            Request::ScheduleCancel { .. } => "schedule cancel".into(),
            Request::ScheduleRun { version, .. } => format!("agent scheduled deploy {version}"),
            Request::FleetControl {
                action, version, ..
            } => format!("fleet {action} {version}"),
            // The others take no lock.
            _ => String::new(),
        }
    }
}

/// What an operation did. The variants not marked `skip` are the outcomes
/// of the requests the control socket carries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "result", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// A promote or revert.
    Switched(SwitchReport),
    /// A deploy.
    Deployed(Box<DeployOutcome>),
    /// The app's status.
    Status(Box<Status>),
    /// An install.
    #[serde(skip)]
    Installed(InstallReport),
    /// Installed releases, newest first.
    #[serde(skip)]
    Listed(Vec<ListedRelease>),
    /// Audit log events, oldest first.
    #[serde(skip)]
    History(Vec<Event>),
    /// Releases pruned.
    #[serde(skip)]
    Pruned {
        /// What was removed.
        removed: Vec<Version>,
        /// The app's `keep_releases`.
        keep: usize,
    },
    /// An update check.
    #[serde(skip)]
    Checked(Box<UpdateCheck>),
    /// The operator block cleared, if there was one.
    #[serde(skip)]
    Resolved {
        /// The block that was cleared.
        cleared: Option<Attention>,
    },
    /// The maintenance flag set or cleared.
    #[serde(skip)]
    Maintenance {
        /// On now.
        on: bool,
        /// The flag file.
        flag: PathBuf,
    },
    /// A release checked against its manifest (drift is a failure: see
    /// [`Outcome::failure`]).
    #[serde(skip)]
    Verified(VerifyReport),
    /// The audit log's chain verified.
    #[serde(skip)]
    AuditVerified {
        /// Lines checked.
        lines: u64,
        /// The seal the chain starts with, when an earlier log was damaged.
        seal: Option<SealInfo>,
    },
    /// A damaged audit log set aside; a new chain started.
    #[serde(skip)]
    AuditSealed(SealInfo),
    /// A backup taken.
    #[serde(skip)]
    BackupCreated(BackupMeta),
    /// The backups, oldest first.
    #[serde(skip)]
    Backups(Vec<BackupMeta>),
    /// A backup whose checksum matches.
    #[serde(skip)]
    BackupVerified(BackupMeta),
    /// A backup restored.
    #[serde(skip)]
    BackupRestored {
        /// The backup.
        id: String,
    },
    /// The app held.
    #[serde(skip)]
    Held(Hold),
    /// The hold lifted, if there was one.
    #[serde(skip)]
    Unheld {
        /// The hold that was lifted.
        lifted: Option<Hold>,
    },
    /// A release quarantined by hand.
    #[serde(skip)]
    Quarantined {
        /// The release.
        version: Version,
        /// Why and since when.
        quarantine: Quarantine,
    },
    /// A release's quarantine lifted, if it had one.
    #[serde(skip)]
    Unquarantined {
        /// The release.
        version: Version,
        /// The quarantine that was lifted.
        lifted: Option<Quarantine>,
    },
    /// What a deploy would do.
    #[serde(skip)]
    Plan(Box<DeployPlan>),
    /// Two releases compared.
    #[serde(skip)]
    Diff(Box<ReleaseDiff>),
    /// A deploy scheduled.
    #[serde(skip)]
    Scheduled(ScheduleEntry),
    /// A scheduled deploy cancelled.
    #[serde(skip)]
    ScheduleCancelled(ScheduleEntry),
    /// The scheduled deploys.
    #[serde(skip)]
    Schedule(ScheduleView),
    /// The fleet's rollout of a release.
    #[serde(skip)]
    FleetStatus(Box<FleetStatus>),
    /// A fleet control action posted and recorded.
    #[serde(skip)]
    FleetControl(Box<ControlReport>),
}

impl Outcome {
    /// Whether the operation changed the app (so a failure to print its
    /// outcome must not read as a failure of the operation).
    pub(crate) fn changed(&self) -> bool {
        match self {
            Outcome::Switched(r) => r.changed,
            Outcome::Deployed(_)
            | Outcome::Installed(_)
            | Outcome::Resolved { .. }
            | Outcome::Maintenance { .. }
            | Outcome::BackupCreated(_)
            | Outcome::AuditSealed(_)
            | Outcome::BackupRestored { .. }
            | Outcome::Held(_)
            | Outcome::Quarantined { .. }
            | Outcome::Scheduled(_)
            | Outcome::ScheduleCancelled(_)
            | Outcome::FleetControl(_) => true,
            Outcome::Unheld { lifted } => lifted.is_some(),
            Outcome::Unquarantined { lifted, .. } => lifted.is_some(),
            Outcome::Pruned { removed, .. } => !removed.is_empty(),
            _ => false,
        }
    }

    /// The error an outcome still ends with once it is shown: a release
    /// that differs from its manifest, a dry run whose deploy would be
    /// refused.
    pub(crate) fn failure(&self, app: &str) -> Option<DeployError> {
        match self {
            Outcome::Verified(r) if !r.drift.is_clean() => Some(DeployError::Drift {
                app: app.to_string(),
                version: r.version.to_string(),
                changed: r.drift.changed.len(),
                added: r.drift.added.len(),
                missing: r.drift.missing.len(),
            }),
            // A plan whose deploy would be refused ends like that deploy.
            Outcome::Plan(p) if !p.would_pass => Some(DeployError::Precheck(format!(
                "the deploy would be refused: {}",
                p.checks
                    .iter()
                    .filter(|c| !c.pass)
                    .map(|c| c.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            _ => None,
        }
    }
}

/// The agent's answer on the control socket.
pub(crate) type Reply = Result<Outcome, RemoteError>;

/// An error as it crosses the control socket: the exit code the CLI ends
/// with, and each message of the error's chain, outermost first (the CLI
/// prints the chain once, like any other error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    /// The exit code.
    pub exit_code: i32,
    /// The error and its sources, outermost first.
    pub chain: Vec<String>,
}

impl RemoteError {
    /// Captures `e` and its sources.
    pub(crate) fn new(exit_code: i32, e: &(dyn std::error::Error + 'static)) -> RemoteError {
        RemoteError {
            exit_code,
            chain: messages(e),
        }
    }
}

impl From<&DeployError> for RemoteError {
    fn from(e: &DeployError) -> RemoteError {
        RemoteError::new(e.exit_code(), e)
    }
}

/// Runs one operation on `cfg`'s app. Operations that change the app open a
/// session first (its lock, then the repair of whatever a killed process
/// left); `source` is asked only by those that need a release.
pub(crate) fn execute(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    req: &Request,
    caller: &Caller,
) -> Result<Outcome, DeployError> {
    // A hold is the operator's brake: it is never refused because the
    // agent is busy, it waits for the running operation instead.
    let wait = caller.wait || matches!(req, Request::Hold { .. } | Request::Unhold { .. });
    let open = || {
        Session::open(
            cfg,
            caller.actor.clone(),
            &req.label(caller),
            wait,
            caller.clock.clone(),
        )
    };
    let paths = AppPaths::new(&cfg.root);
    // Read-only requests too: another app's root is not this app's to show.
    paths.check_owner(&cfg.name)?;
    Ok(match req {
        Request::Install {
            version,
            allow_downgrade,
            ..
        } => Outcome::Installed(open()?.install_alone(
            source,
            version,
            InstallOptions {
                allow_downgrade: *allow_downgrade,
            },
        )?),
        Request::Promote {
            version,
            force,
            allow_major,
            skip_lifecycle,
            seen,
            ..
        } => {
            let s = open()?;
            s.check_seen(seen.as_ref(), &format!("promote {version}"))?;
            Outcome::Switched(s.promote_checked(
                version,
                PromoteOptions {
                    force: *force,
                    allow_major: *allow_major,
                    skip_lifecycle: *skip_lifecycle,
                },
            )?)
        }
        Request::Revert { to, seen, .. } => {
            let s = open()?;
            s.check_seen(seen.as_ref(), "revert")?;
            Outcome::Switched(s.revert_checked(to.as_ref())?)
        }
        Request::Deploy {
            version,
            allow_downgrade,
            allow_major,
            force,
            seen,
            ..
        } => {
            let s = open()?;
            s.check_seen(seen.as_ref(), &format!("deploy {}", show(version)))?;
            Outcome::Deployed(Box::new(s.deploy(
                source,
                version,
                DeployOptions {
                    allow_downgrade: *allow_downgrade,
                    allow_major: *allow_major,
                    force: *force,
                    automatic: caller.automatic,
                },
            )?))
        }
        Request::Status { .. } => Outcome::Status(Box::new(status::status(cfg, source)?)),
        Request::List { .. } => Outcome::Listed(status::list(cfg)?),
        Request::History { limit, .. } => {
            let mut events: Vec<Event> = history::read_all(&paths)?
                .into_iter()
                .map(|s| s.event)
                .collect();
            if let Some(n) = limit {
                events.drain(..events.len().saturating_sub(*n));
            }
            Outcome::History(events)
        }
        Request::Prune { .. } => Outcome::Pruned {
            removed: open()?.prune()?,
            keep: cfg.keep_releases,
        },
        Request::Check { .. } => {
            let current = paths.current_version()?;
            // One listing for both.
            let releases = source.releases()?;
            let critical = crate::verify::critical::critical_releases(
                cfg,
                source,
                &releases,
                current.as_ref(),
            );
            let mut check = crate::source::check_updates(cfg, source, releases, current);
            check.critical = critical;
            status::suggest(cfg, &paths, &mut check)?;
            Outcome::Checked(Box::new(check))
        }
        Request::Resolve { .. } => Outcome::Resolved {
            cleared: open()?.resolve()?,
        },
        Request::Maintenance { on, message, .. } => {
            if *on {
                maintenance::on(&paths, message, "operator")?;
            } else {
                maintenance::off(&paths)?;
            }
            Outcome::Maintenance {
                on: *on,
                flag: maintenance::path(&paths),
            }
        }
        Request::Verify { version, .. } => {
            let v = match version {
                Some(v) => v.clone(),
                None => paths
                    .current_version()?
                    .ok_or_else(|| DeployError::NoLiveRelease {
                        app: cfg.name.clone(),
                    })?,
            };
            Outcome::Verified(status::verify_release(cfg, &v)?)
        }
        Request::AuditVerify { .. } => Outcome::AuditVerified {
            lines: history::check_chain(&paths).map_err(DeployError::Audit)?,
            seal: history::seal_of_chain(&paths)?,
        },
        Request::AuditSeal { reason, .. } => {
            // The lock, but not a session: a session refuses a damaged log
            // and its repair would append to it.
            paths.ensure()?;
            let _lock = AppLock::acquire(&paths, &cfg.name, &req.label(caller), caller.wait)?;
            Outcome::AuditSealed(history::seal(&paths, &cfg.name, reason, &caller.actor)?)
        }
        Request::BackupCreate { .. } => {
            // An empty archive would pass for a backup: refuse, and say what to set.
            let shared = cfg.policy.backup_shared
                && !(cfg.shared.dirs.is_empty() && cfg.shared.files.is_empty());
            if cfg.hooks.backup.is_none() && !shared {
                return Err(DeployError::NothingToBackUp {
                    app: cfg.name.clone(),
                });
            }
            Outcome::BackupCreated(open()?.backup_now()?)
        }
        Request::BackupList { .. } => Outcome::Backups(backup::list(&paths)?),
        Request::BackupVerify { id, .. } => {
            let id = backup::resolve_id(&paths, id.as_deref())?;
            Outcome::BackupVerified(backup::verify(&paths, &id)?)
        }
        Request::BackupRestore { id, .. } => Outcome::BackupRestored {
            id: open()?.restore_now(id.as_deref())?,
        },
        Request::Hold { reason, .. } => Outcome::Held(open()?.hold(reason.as_deref())?),
        Request::Unhold { .. } => Outcome::Unheld {
            lifted: open()?.unhold()?,
        },
        Request::Quarantine {
            version, reason, ..
        } => Outcome::Quarantined {
            version: version.clone(),
            quarantine: open()?.quarantine_by_hand(version, reason.as_deref())?,
        },
        Request::Unquarantine { version, .. } => Outcome::Unquarantined {
            version: version.clone(),
            lifted: open()?.unquarantine(version, "lifted by an operator")?,
        },
        Request::DeployPlan {
            version,
            allow_downgrade,
            allow_major,
            force,
            ..
        } => Outcome::Plan(Box::new(crate::ops::plan::plan(
            cfg,
            source,
            version,
            DeployOptions {
                allow_downgrade: *allow_downgrade,
                allow_major: *allow_major,
                force: *force,
                automatic: false,
            },
        )?)),
        Request::Diff { from, to, .. } => {
            Outcome::Diff(Box::new(crate::ops::diff::diff(cfg, from, to)?))
        }
        Request::ScheduleAdd {
            version,
            at,
            timezone,
            allow_major,
            ..
        } => Outcome::Scheduled(open()?.schedule_add(
            source,
            version,
            at,
            timezone.as_deref(),
            *allow_major,
        )?),
        Request::ScheduleList { .. } => {
            let st = if crate::fs::metadata(&paths.state_dir())?.is_some() {
                crate::store::state::AppState::load(&paths)?
            } else {
                Default::default()
            };
            let mut entries = if crate::fs::metadata(&paths.state_dir())?.is_some() {
                crate::ops::schedule::load(&paths)?.entries
            } else {
                Vec::new()
            };
            entries.sort_by_key(|e| e.at);
            Outcome::Schedule(ScheduleView {
                app: cfg.name.clone(),
                hold: st.hold,
                entries,
            })
        }
        Request::ScheduleCancel { key, .. } => {
            Outcome::ScheduleCancelled(open()?.schedule_cancel(key)?)
        }
        Request::ScheduleRun { id, .. } => {
            Outcome::Deployed(Box::new(open()?.schedule_run(source, id)?))
        }
        Request::FleetStatus { version, .. } => Outcome::FleetStatus(Box::new(
            crate::ops::fleet::status(cfg, source, version.as_ref(), caller.clock.now())?,
        )),
        Request::FleetControl {
            version,
            action,
            reason,
            now,
            ..
        } => {
            let ask = crate::ops::fleet::ControlAsk {
                action: *action,
                version,
                reason: reason.as_deref(),
                now: *now,
            };
            // The audit line waits for the lock, like a hold: a brake is never
            // refused because this host is busy.
            let record = || {
                Session::open(
                    cfg,
                    caller.actor.clone(),
                    &req.label(caller),
                    true,
                    caller.clock.clone(),
                )
            };
            Outcome::FleetControl(Box::new(crate::ops::fleet::control(
                cfg,
                source,
                &ask,
                &caller.actor.user,
                record,
            )?))
        }
    })
}

/// `req` with what is live now noted, for the commands that switch the
/// live release: run after waiting for the lock, they refuse when it changed.
pub(crate) fn observed(cfg: &AppConfig, mut req: Request) -> Request {
    let live = AppPaths::new(&cfg.root).current_version().ok().flatten();
    match &mut req {
        Request::Promote { seen, .. }
        | Request::Revert { seen, .. }
        | Request::Deploy { seen, .. } => {
            *seen = Some(Seen { live });
        }
        _ => {}
    }
    req
}

/// `latest` or the version.
pub(crate) fn show(r: &VersionRequest) -> String {
    match r {
        VersionRequest::Latest => "latest".into(),
        VersionRequest::Exact(v) => v.to_string(),
    }
}

/// A [`VersionRequest`] on the wire: `"latest"` or `"1.2.3"`, as typed.
mod version_request {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::version::VersionRequest;

    pub(super) fn serialize<S: Serializer>(r: &VersionRequest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::show(r))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VersionRequest, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_request_keeps_its_shape() {
        let req = Request::Deploy {
            app: "web".into(),
            version: VersionRequest::Latest,
            allow_downgrade: false,
            allow_major: true,
            force: false,
            seen: None,
            reason: None,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"op":"deploy","app":"web","version":"latest","allow_downgrade":false,"allow_major":true,"force":false,"seen":null}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let promote: Request =
            serde_json::from_str(r#"{"op":"promote","app":"web","version":"v1.2.0"}"#).unwrap();
        assert_eq!(
            promote,
            Request::Promote {
                app: "web".into(),
                version: Version::parse("1.2.0").unwrap(),
                force: false,
                allow_major: false,
                skip_lifecycle: false,
                seen: None,
                reason: None,
            }
        );
    }

    #[test]
    fn only_agent_requests_cross_the_socket() {
        for op in [
            r#"{"op":"install","app":"web","version":"1.0.0","allow_downgrade":false}"#,
            r#"{"op":"backup_restore","app":"web","id":null}"#,
            r#"{"op":"status","app":"web","extra":1}"#,
        ] {
            assert!(
                serde_json::from_str::<Request>(op).is_err(),
                "{op} accepted"
            );
        }
        let local = Request::Prune { app: "web".into() };
        assert!(!local.through_agent());
        assert!(serde_json::to_string(&local).is_err());
    }

    #[test]
    fn remote_errors_keep_the_chain_and_the_code() {
        let e = DeployError::NoLiveRelease { app: "web".into() };
        let r = RemoteError::from(&e);
        assert_eq!(r.exit_code, crate::ops::error::exit::NOT_FOUND);
        assert_eq!(r.chain, vec![e.to_string()]);
        let reply: Reply = Err(r.clone());
        let back: Reply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        assert_eq!(back.unwrap_err(), r);
    }
}
