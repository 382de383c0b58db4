//! The app root on disk: its layout and links, install manifests and shared
//! disk blocks, the lock, state and journal, and the audit history.

pub mod dedup;
pub mod history;
pub mod layout;
pub mod manifest;
pub mod state;
