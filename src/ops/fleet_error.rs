//! Why a `switchyard fleet` command failed (`ops::fleet`), apart so that
//! `ops::error` can name it without a cycle.

use crate::source::ledger::{ControlAction, LedgerError};

/// Why a fleet command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// The app has no `[apps.<name>.fleet]`.
    #[error(
        "{app} does not roll out as a fleet: [apps.{app}.fleet] is not set; add it (environment = \"production\") to an app with a github source, on every host of the fleet"
    )]
    NotConfigured {
        /// The app.
        app: String,
    },
    /// The ledger could not be read.
    #[error(
        "cannot read the rollout of {app} {version} from {ledger}; nothing was posted. Check the network and the token ([apps.{app}.source] token_env or token_file), then try again"
    )]
    Read {
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// The ledger, described.
        ledger: String,
        /// Why.
        #[source]
        source: LedgerError,
    },
    /// The control action could not be posted.
    #[error(
        "could not post `fleet {action}` for {app} {version} to {ledger}: it is not in force, the fleet goes on as before. The token needs write access to deployments (fine-grained: Deployments read and write; classic: repo_deployment); try again"
    )]
    Post {
        /// What.
        action: ControlAction,
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// The ledger, described.
        ledger: String,
        /// Why.
        #[source]
        source: LedgerError,
    },
    /// Posted, but the local audit log could not record it.
    #[error(
        "`fleet {action}` for {app} {version} is in force (control deployment {id} on {ledger}), but this host's audit log could not record it"
    )]
    Unrecorded {
        /// What.
        action: ControlAction,
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// The ledger, described.
        ledger: String,
        /// The control deployment.
        id: u64,
        /// Why (a `DeployError`, boxed as a trait object so that this
        /// module does not name `ops::error`, which names it).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}
