//! Switchyard: a blue/green deployment agent. Releases flow one way through
//! the modules: `config` → `source` → `verify` + `unpack` → `layout` →
//! `deploy` (journal, lock, swap) → `history`; `cli` is the edge.

#![warn(missing_docs)]

pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dedup;
pub mod demo;
pub mod deploy;
pub mod fs;
pub mod github;
pub mod health;
pub mod history;
pub mod hooks;
pub mod layout;
pub mod lifecycle;
pub mod pack;
pub mod source;
pub mod state;
pub mod trust;
pub mod unpack;
pub mod verify;
pub mod version;
