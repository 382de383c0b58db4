//! The integration tests: one binary (link once), one module per area.

mod common;
mod mock_github;

mod agent;
mod cli;
mod crash;
mod github;
mod hostile;
mod layers;
mod lifecycle;
mod properties;
mod trust;
mod zero_downtime;
