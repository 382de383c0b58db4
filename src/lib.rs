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

#![warn(missing_docs)]

pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod fs;
pub mod ops;
pub mod process;
pub mod source;
pub mod store;
pub mod verify;
pub mod version;
