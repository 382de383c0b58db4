//! `switchyard agent`: the long-running service. One tokio task per app
//! watches for new releases (polling, GitHub webhooks) and runs operations
//! (from the triggers, or from the CLI through the control socket) through
//! the same lifecycle as the CLI, one at a time per app.

pub(crate) mod agent;
pub(crate) mod control;
pub(crate) mod http;
pub(crate) mod policy;
pub(crate) mod report;

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
            (Request::Revert { .. }, Ok(Outcome::Switched(r))) => self.reverted = r.changed,
            (_, Ok(Outcome::Deployed(o))) => self.deploy = Some(Ok(o.clone())),
            (Request::Deploy { version, .. }, Err(e)) => {
                let rec = AppState::load(paths)
                    .ok()
                    .and_then(|s| s.deploy)
                    .filter(|r| Some(&r.id) != before.as_ref());
                self.reverted = matches!(
                    e,
                    DeployError::Failed {
                        rolled_back: true,
                        ..
                    }
                );
                let (state, step) = match rec {
                    Some(r) => (r.state, r.step),
                    None if automatic => (DeployState::Failed, "prechecks".into()),
                    None => return,
                };
                self.deploy = Some(Err(FailedDeploy {
                    state,
                    step,
                    error: chain(e),
                    target: show(version),
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

/// What a check or operation did, for metrics and reports.
#[derive(Default)]
pub(crate) struct OpOutcome {
    pub current: Option<String>,
    pub behind: Option<u64>,
    pub deploy: Option<Result<Box<DeployOutcome>, FailedDeploy>>,
    pub reverted: bool,
    pub wait_until: Option<jiff::Timestamp>,
}
