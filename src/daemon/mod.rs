//! `switchyard agent`: the long-running service. One tokio task per app
//! watches for new releases (polling, GitHub webhooks) and runs operations
//! (from the triggers, or from the CLI through the control socket) through
//! the same lifecycle as the CLI, one at a time per app.

pub(crate) mod aftermath;
pub(crate) mod agent;
pub(crate) mod console;
pub(crate) mod control;
pub(crate) mod fleet;
pub(crate) mod http;
pub(crate) mod memory;
pub(crate) mod notice;
pub(crate) mod policy;
pub(crate) mod report;
mod scheduled;

use tokio::sync::watch;

use crate::config::AppConfig;
use crate::ops::DeployError;
use crate::ops::api::{self, Caller, DeployOutcome, Outcome, Request, show};
use crate::ops::error::chain;
use crate::source::ReleaseSource;
use crate::store::layout::AppPaths;
use crate::store::state::{AppState, DeployState};

/// Why an app task should look at its releases or act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A verified GitHub `release` webhook for the app's repository: a hint
    /// only, the release is then read through the API.
    Webhook {
        /// The app it concerns.
        app: String,
        /// `X-GitHub-Delivery`.
        delivery: String,
        /// The release's tag, as the payload claims it.
        tag: Option<String>,
    },
    /// Time to poll.
    Poll {
        /// The app.
        app: String,
    },
}

/// Tells systemd what the agent is doing (`systemctl status`); outside
/// systemd (NOTIFY_SOCKET unset) a no-op.
pub(crate) fn systemd_status(msg: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(msg)]);
}

/// Resolves once shutdown is asked for. (The guard `wait_for` returns is
/// not `Send`; it is dropped here, before the caller's next await.)
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A failed deploy, for metrics and the failure report.
pub(crate) struct FailedDeploy {
    /// The state it ended in.
    pub state: DeployState,
    /// The step it ended in.
    pub step: String,
    /// The error, with its chain.
    pub error: String,
    /// What was asked for: a version, or `latest`.
    pub target: String,
}

/// Runs a request through the operations API (blocking), noting in `out`
/// what it did.
pub(crate) fn run_op(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    req: &Request,
    caller: &Caller,
    out: &mut OpOutcome,
) -> Result<Outcome, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let before = recorded_deploy(&paths);
    let res = api::execute(cfg, source, req, caller);
    if let Err(e) = &res {
        // The full chain: the agent's log is where an operator looks first.
        tracing::warn!(app = %cfg.name, actor = %caller.actor.user,
            error = %crate::ops::error::chain(e), "operation failed");
    }
    out.record(&paths, req, &res, before, caller.automatic);
    res
}

/// The id of the deploy the state file records, if any.
fn recorded_deploy(paths: &AppPaths) -> Option<String> {
    AppState::load(paths).ok()?.deploy.map(|r| r.id)
}

impl OpOutcome {
    /// Records what a request did. A deploy counts as failed when it got
    /// as far as recording itself in the state file (`before` is the deploy
    /// recorded when it was asked for), or, for the agent's own deploys,
    /// when its session would not even open.
    fn record(
        &mut self,
        paths: &AppPaths,
        req: &Request,
        res: &Result<Outcome, DeployError>,
        before: Option<String>,
        automatic: bool,
    ) {
        match (req, res) {
            (Request::Revert { .. }, Ok(Outcome::Switched(r))) if r.changed => {
                self.revert = Some(Reverted {
                    from: r.from.as_ref().map(|v| v.to_string()),
                    to: r.to.to_string(),
                    trigger: "manual",
                });
            }
            (_, Ok(Outcome::Deployed(o))) => self.deploy = Some(Ok(o.clone())),
            (Request::Revert { to, .. }, Err(e)) => {
                // Reported when it got as far as recording itself, as a
                // deploy is: a refusal before that changed nothing.
                if let Some(r) = AppState::load(paths)
                    .ok()
                    .and_then(|s| s.deploy)
                    .filter(|r| Some(&r.id) != before.as_ref())
                {
                    self.failed_revert = Some(FailedDeploy {
                        state: r.state,
                        step: r.step,
                        error: chain(e),
                        target: to
                            .as_ref()
                            .or(r.to.as_ref())
                            .map_or_else(|| "last-good".to_string(), |v| v.to_string()),
                    });
                }
            }
            (Request::Deploy { .. } | Request::ScheduleRun { .. }, Err(e)) => {
                let target = match req {
                    Request::Deploy { version, .. } => show(version),
                    Request::ScheduleRun { version, .. } => version.to_string(),
                    _ => unreachable!("matched above"),
                };
                let rec = AppState::load(paths)
                    .ok()
                    .and_then(|s| s.deploy)
                    .filter(|r| Some(&r.id) != before.as_ref());
                if matches!(
                    e,
                    DeployError::Failed {
                        rolled_back: true,
                        ..
                    }
                ) {
                    self.revert = Some(Reverted {
                        from: Some(target.clone()),
                        to: paths
                            .current_version()
                            .ok()
                            .flatten()
                            .map_or_else(String::new, |v| v.to_string()),
                        trigger: "auto",
                    });
                }
                let (state, step) = match rec {
                    Some(r) => (r.state, r.step),
                    None if automatic => (DeployState::Failed, "prechecks".into()),
                    None => return,
                };
                self.deploy = Some(Err(FailedDeploy {
                    state,
                    step,
                    error: chain(e),
                    target,
                }));
            }
            _ => {}
        }
        self.current = paths
            .current_version()
            .ok()
            .flatten()
            .map(|v| v.to_string());
    }
}

/// A revert that happened: automatic (a failed deploy rolled back) or an
/// operator's `revert`.
pub(crate) struct Reverted {
    /// Live before.
    pub from: Option<String>,
    /// Live after.
    pub to: String,
    /// `auto` or `manual`.
    pub trigger: &'static str,
}

/// A newer deployable release the check saw.
pub(crate) struct Update {
    /// The newest deployable version.
    pub version: String,
    /// How many deployable versions are newer than the live one.
    pub behind: u64,
    /// When the source says it was published.
    pub published_at: Option<String>,
}

/// What a check or operation did, for metrics and reports.
#[derive(Default)]
pub(crate) struct OpOutcome {
    /// The live version after it.
    pub current: Option<String>,
    /// Deployable versions newer than the live one (a check only).
    pub behind: Option<u64>,
    /// A deploy's outcome.
    pub deploy: Option<Result<Box<DeployOutcome>, FailedDeploy>>,
    /// A revert, automatic or manual.
    pub revert: Option<Reverted>,
    /// A manual revert that failed.
    pub failed_revert: Option<FailedDeploy>,
    /// The newest deployable release, when newer than the live one.
    pub update: Option<Update>,
    /// A critical release waiting for the window, with its deadline.
    pub critical: Option<(String, Option<jiff::Timestamp>)>,
    /// The listing succeeded (for the last-successful-poll gauge).
    pub polled: bool,
    /// When to look again.
    pub wait_until: Option<jiff::Timestamp>,
    /// Where this host stands in the candidate's fleet rollout.
    pub fleet: Option<crate::store::agent::FleetView>,
}
