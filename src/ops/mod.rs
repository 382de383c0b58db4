//! Every operation on an app: install, switch, the deploy lifecycle with its
//! hooks and health checks, backups, status. `cli` and `daemon` call only
//! this layer.

pub mod backup;
pub mod deploy;
pub mod health;
pub mod hooks;
pub mod lifecycle;
