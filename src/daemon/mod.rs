//! `switchyard agent`: the long-running service. One tokio task per app
//! watches for new releases (polling, GitHub webhooks) and runs operations
//! (from the triggers, or from the CLI through the control socket) through
//! the same lifecycle as the CLI, one at a time per app.

pub mod agent;
pub mod control;
pub mod http;
pub mod policy;
pub mod report;

use tokio::sync::watch;

use crate::ops::deploy::DeployError;
use crate::store::layout::AppPaths;
use crate::store::state::AppState;

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

/// A failed deploy: (state, step, error, version).
pub(crate) type Failed = (String, String, String, Option<String>);

impl OpOutcome {
    /// Records a failed deploy: the state and step it ended in (from the
    /// state file), the error, and whether the live release was reverted.
    pub(crate) fn deploy_failed(&mut self, paths: &AppPaths, e: &DeployError, version: &str) {
        let (state, step) = AppState::load(paths)
            .ok()
            .and_then(|s| s.deploy)
            .map(|r| (r.state.as_str().to_string(), r.step))
            .unwrap_or_else(|| ("failed".into(), "unknown".into()));
        self.reverted = matches!(
            e,
            DeployError::Failed {
                rolled_back: true,
                ..
            }
        );
        self.deploy = Some(Err((state, step, e.to_string(), Some(version.to_string()))));
    }
}

/// What a check or operation did, for metrics and reports.
#[derive(Default)]
pub(crate) struct OpOutcome {
    pub current: Option<String>,
    pub behind: Option<u64>,
    pub deploy: Option<Result<crate::ops::lifecycle::DeployOutcome, Failed>>,
    pub reverted: bool,
    pub wait_until: Option<jiff::Timestamp>,
}
