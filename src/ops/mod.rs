//! Every operation on an app: install, switch, the deploy lifecycle with its
//! hooks and health checks, backups, status. `cli` and `daemon` call only
//! this layer, through [`api`].
//!
//! Inside, one job per module, each building on the ones before it:
//! `error`, `session` (lock, journal, repair), `install`, `switch` (the bare
//! swap), `steps` (the lifecycle's building blocks), `rollback`, `lifecycle`
//! (deploy, and the checked promote and revert), `operator` (holds,
//! quarantine by hand, the re-check after waiting for the lock), `status` (read-only views),
//! `fleet` (the fleet's rollout as its ledger shows it, and operators' control actions),
//! then `api`. A session's repair finishes an interrupted deploy with the
//! rollback, so opening a session is the one call that reaches upwards.

pub(crate) mod api;
pub(crate) mod backup;
pub(crate) mod console_users;
mod diff;
pub(crate) mod error;
pub(crate) mod fleet;
mod fleet_error;
pub(crate) mod health;
pub(crate) mod hooks;
mod install;
mod lifecycle;
mod operator;
mod plan;
mod rollback;
pub(crate) mod schedule;
mod scheduler;
mod session;
mod status;
mod steps;
mod switch;
pub(crate) mod watch;

pub(crate) use error::{DeployError, exit};
