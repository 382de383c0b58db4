//! The one bridge from blocking code to async code.
//!
//! [`ReleaseSource`](crate::source::ReleaseSource) and the health checks are
//! synchronous, because the verify-and-unpack pipeline is; HTTP (octocrab,
//! reqwest) is async. Blocking code reaches it only through [`block_on`] and
//! [`handle`]:
//!
//! - inside a runtime context, the current runtime is used. The agent runs
//!   operations on `tokio::task::spawn_blocking` threads, where
//!   `Handle::block_on` is valid, so everything shares the agent's runtime;
//! - outside one (the one-shot CLI, plain test threads), one process-wide
//!   runtime, built on first use and never dropped.
//!
//! **Never call these from an async task** (a runtime worker thread): tokio
//! panics there ("Cannot start a runtime from within a runtime"). From async
//! code, call the blocking function inside `spawn_blocking`.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// The process-wide runtime for callers outside any runtime.
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start the runtime for network requests; check the process's thread and file-descriptor limits"
)]
pub struct BridgeError {
    #[source]
    source: std::io::Error,
}

/// The runtime async work of a blocking caller runs on: the current one, or
/// the process-wide one.
pub(crate) fn handle() -> Result<Handle, BridgeError> {
    if let Ok(h) = Handle::try_current() {
        return Ok(h);
    }
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    // One worker is plenty: callers drive their own futures in `block_on`;
    // the worker runs spawned tasks (a download feeding its reader) and the
    // I/O driver.
    let rt = Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchyard-net")
        // octocrab's models deserialize deep (see `daemon::agent`).
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .map_err(|source| BridgeError { source })?;
    // Two threads may race here; the loser's runtime is dropped, which is
    // fine outside async contexts.
    let _ = RUNTIME.set(rt);
    match RUNTIME.get() {
        Some(rt) => Ok(rt.handle().clone()),
        None => Err(BridgeError {
            source: std::io::Error::other("the runtime vanished after being set"),
        }),
    }
}

/// Runs `f` to completion from blocking code (see the module docs).
pub(crate) fn block_on<F: Future>(f: F) -> Result<F::Output, BridgeError> {
    Ok(handle()?.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works_outside_and_inside_a_runtime_context() {
        assert_eq!(block_on(async { 1 + 1 }).unwrap(), 2);
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let on = rt.block_on(async {
            tokio::task::spawn_blocking(|| {
                block_on(async {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    std::thread::current().name().map(str::to_string)
                })
                .unwrap()
            })
            .await
            .unwrap()
        });
        // Ran on the blocking thread, through the caller's runtime.
        assert_ne!(on.as_deref(), Some("switchyard-net"));
    }
}
