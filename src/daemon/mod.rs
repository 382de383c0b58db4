//! `switchyard agent`: the long-running service. One tokio task per app
//! watches for new releases (polling, GitHub webhooks) and runs operations
//! (from the triggers, or from the CLI through the control socket) through
//! the same lifecycle as the CLI, one at a time per app.

pub mod agent;
pub mod control;
pub mod http;
pub mod policy;
pub mod report;

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
