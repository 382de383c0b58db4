//! The HTTP listener, built so that no client can starve it: at most
//! [`Limits::max_connections`] connections at once (when full, the oldest
//! one not in the middle of a request is closed to make room, so a flood of
//! half-open connections cannot keep `/healthz` or a webhook out), a
//! deadline for each request's headers (which also ends idle keep-alive
//! connections) and another for each request, its body included.
//!
//! hyper serves each connection; axum's own `serve` has none of these limits.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::daemon::stopped;

/// How much one client may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From a connection's start, or the end of its last response, to the
    /// end of the next request's headers.
    pub header_timeout: Duration,
    /// From a request's headers to its response (reading the body included).
    pub request_timeout: Duration,
    /// On shutdown, how long requests being answered may take to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // GitHub and a Prometheus scraper need a handful.
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Conn {
    /// Requests being handled right now (a connection with none may be
    /// closed to make room).
    busy: AtomicUsize,
    /// Told to close at once.
    close: Notify,
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(c: &Arc<Conn>) -> Busy {
        c.busy.fetch_add(1, Ordering::SeqCst);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Open connections, oldest first.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Table {
    /// Makes room for one more connection: when full, the oldest idle one
    /// is told to close. `None` when every connection is handling a request
    /// (the new one is then turned away).
    fn admit(&mut self, max: usize) -> Option<(u64, Arc<Conn>)> {
        if self.open.len() >= max {
            let idle = self
                .open
                .iter()
                .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)?;
            if let Some(c) = self.open.remove(&idle) {
                c.close.notify_one();
            }
        }
        let id = self.next;
        self.next += 1;
        let c = Arc::new(Conn::default());
        self.open.insert(id, c.clone());
        Some((id, c))
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `router` on `listener` until `shutdown`, then lets the requests
/// being answered finish (up to [`Limits::drain_timeout`]).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            acc = listener.accept() => match acc {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, or the like: wait instead of
                    // spinning on the error.
                    warn!(error = %e, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some((id, conn)) = lock(&table).admit(limits.max_connections) else {
            debug!("HTTP listener: every connection is busy; turning one away");
            continue;
        };
        let table = table.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            serve_conn(stream, peer, router, conn, limits, shutdown).await;
            lock(&table).open.remove(&id);
        });
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

/// Serves one connection. Each request carries the peer's address as
/// axum's `ConnectInfo` (the console trusts proxy headers only from its
/// configured proxies, and counts failed logins per address).
async fn serve_conn(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let inner = TowerToHyperService::new(router);
    let tracked = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let busy = Busy::new(&tracked);
        let answer = inner.call(req);
        async move {
            let _busy = busy;
            Ok::<Response, Infallible>(
                match tokio::time::timeout(limits.request_timeout, answer).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(_) => (
                        StatusCode::REQUEST_TIMEOUT,
                        [(header::CONNECTION, "close")],
                        "request timeout\n",
                    )
                        .into_response(),
                },
            )
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let c = http.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(c);
    tokio::select! {
        res = c.as_mut() => {
            if let Err(e) = res {
                debug!(error = %e, "HTTP connection ended");
            }
        }
        // Closed to make room: dropping the connection closes it.
        _ = conn.close.notified() => {}
        _ = stopped(&mut shutdown) => {
            c.as_mut().graceful_shutdown();
            let _ = c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_closes_the_oldest_idle_connection() {
        let mut t = Table::default();
        let (a, ca) = t.admit(2).unwrap();
        let (_, cb) = t.admit(2).unwrap();
        let _busy = Busy::new(&ca);
        // `a` is handling a request: `b`, the oldest idle one, makes room.
        let (c, _) = t.admit(2).unwrap();
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), vec![a, c]);
        assert_eq!(cb.busy.load(Ordering::SeqCst), 0);
        let _busy_c = Busy::new(&t.open[&c].clone());
        // Every connection busy: the newcomer is turned away.
        assert!(t.admit(2).is_none());
        drop(_busy);
        assert!(t.admit(2).is_some());
    }
}
