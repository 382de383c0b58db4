//! Switchyard: a blue/green deployment agent.
//!
//! The modules form one-way layers; a module names only layers below its own
//! (`tests/it/layers.rs` enforces it):
//!
//! ```text
//! fs, clock, process, version leaves: file access, time, the process
//!                             supervisor, versions
//! config                      the whole configuration schema
//! source                      where releases come from (folder, GitHub)
//! verify                      checksums, signatures, safe unpacking
//! store                       the app root on disk: layout, state, journal, history
//! ops                         every operation (the only API of the edges)
//! daemon                      the agent: triggers, control socket, HTTP, reports
//! cli                         arguments, commands, rendering, pack, demo
//! ```

mod chain;
mod cli;
mod clock;
mod config;
mod daemon;
mod fs;
mod ops;
mod process;
mod source;
mod store;
mod verify;
mod version;

pub use cli::main;

/// The entry points the integration tests, the fuzz targets and
/// `examples/bench.rs` drive directly; everything else is crate-private.
pub mod testing {
    pub use crate::cli::demo::app::DemoApp;
    pub use crate::cli::pack::{
        PackFormat, Signing, pack_as, pack_signed, read_rollout, write_release_toml,
    };
    pub use crate::config::{Config, GithubSourceConfig, UnpackLimits};
    pub use crate::daemon::http::metrics::Metrics;
    pub use crate::daemon::http::webhook::{WatchingApp, WebhookConfig, sign_payload};
    pub use crate::daemon::http::{HttpState, router};
    pub use crate::source::ReleaseSource;
    pub use crate::source::github::GithubSource;
    pub use crate::source::github_api::GithubOptions;
    pub use crate::source::ledger::{
        AttemptPayload, AttemptState, ControlAction, ControlPayload, Ledger, Scope, Snapshot,
    };
    pub use crate::source::ledger_github::{GithubLedger, MAX_STATUS_READS};
    pub use crate::store::layout::AppPaths;
    pub use crate::store::state::AppLock;
    pub use crate::verify::signing::{keygen, sign_file};
    pub use crate::verify::trust::{TrustPolicy, begin, verify_bytes};
    pub use crate::verify::unpack::unpack_tar_gz;
    pub use crate::verify::{Sha256Sums, sha256_hex};
    pub use crate::version::VersionRequest;
}
