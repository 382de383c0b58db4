//! The app root on disk: its layout and links, install manifests and shared
//! disk blocks, the lock, state and journal, and the audit history.

pub(crate) mod agent;
pub(crate) mod dedup;
pub(crate) mod history;
pub(crate) mod journal;
pub(crate) mod layout;
pub(crate) mod manifest;
pub(crate) mod state;
