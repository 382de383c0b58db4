//! Who is asking: sessions of local users (argon2id passwords, in-memory
//! sessions that die with the agent), or the user a trusted reverse proxy
//! names; CSRF tokens for every form; and the login rate limit (per
//! address and per user, on the agent's clock).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use jiff::Timestamp;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::config::console::{ConsoleAuth, ConsoleConfig};
use crate::ops::console_users::Role;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "switchyard_session";

/// The login form's double-submit cookie (there is no session yet to hold
/// its CSRF token).
pub(crate) const LOGIN_COOKIE: &str = "switchyard_login";

/// Failed logins that lock an address or a user out.
pub(crate) const MAX_FAILURES: usize = 5;

/// The window failures are counted in, and how long a lock lasts.
pub(crate) const LOCK_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Sessions, failures and locks kept at most (an address flood cannot grow
/// the agent's memory without bound; the oldest entries go first).
const MAX_ENTRIES: usize = 10_000;

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Who {
    /// Their name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The token every form of theirs carries.
    pub csrf: String,
    /// Their session id (none behind a proxy: the proxy keeps the session).
    pub session: Option<String>,
}

impl Who {
    /// The audit log's actor name: `console:<name>`.
    pub(crate) fn actor(&self) -> String {
        format!("console:{}", self.name)
    }

    /// Whether `token` is this user's CSRF token (compared in constant time).
    pub(crate) fn csrf_ok(&self, token: &str) -> bool {
        same(token, &self.csrf)
    }
}

/// Constant-time equality of two tokens.
pub(crate) fn same(a: &str, b: &str) -> bool {
    !b.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// 256 random bits, hex.
pub(crate) fn token() -> String {
    let mut b = [0u8; 32];
    // The system's CSPRNG failing leaves nothing safe to do.
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system random number generator failed");
    hex::encode(b)
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Timestamp,
}

/// The login sessions, in memory.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// Keys the CSRF tokens of proxy users (a fresh one each start).
    proxy_key: ring::hmac::Key,
}

impl Sessions {
    /// No sessions yet.
    pub(crate) fn new() -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            proxy_key: ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &SystemRandom::new())
                .expect("the system random number generator failed"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `name`; returns its id.
    pub(crate) fn open(&self, name: &str, role: Role, now: Timestamp, ttl: Duration) -> String {
        let id = token();
        let mut m = self.lock();
        m.retain(|_, s| s.expires > now);
        if m.len() >= MAX_ENTRIES
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                name: name.to_string(),
                role,
                csrf: token(),
                // config check keeps the ttl within 30 days.
                expires: jiff::SignedDuration::try_from(ttl)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
                    .unwrap_or(now),
            },
        );
        id
    }

    /// The live session `id`.
    fn get(&self, id: &str, now: Timestamp) -> Option<Who> {
        let mut m = self.lock();
        let s = m.get(id)?;
        if s.expires <= now {
            m.remove(id);
            return None;
        }
        Some(Who {
            name: s.name.clone(),
            role: s.role,
            csrf: s.csrf.clone(),
            session: Some(id.to_string()),
        })
    }

    /// Ends session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn proxy_csrf(&self, user: &str) -> String {
        hex::encode(ring::hmac::sign(
            &self.proxy_key,
            format!("csrf:{user}").as_bytes(),
        ))
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// Whether the request came from one of the configured proxies.
pub(crate) fn from_proxy(cfg: &ConsoleConfig, peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    cfg.proxy_addresses.contains(&ip)
}

/// The client's address: the peer's, or the proxy's `X-Forwarded-For`
/// last hop when the peer is a configured proxy.
pub(crate) fn client_addr(cfg: &ConsoleConfig, peer: SocketAddr, headers: &HeaderMap) -> String {
    if from_proxy(cfg, peer)
        && let Some(last) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|v| v.parse::<IpAddr>().ok())
    {
        return last.to_string();
    }
    peer.ip().to_string()
}

/// Whether the browser reached the console over TLS (a proxy says so in
/// `X-Forwarded-Proto`): cookies are then `Secure`.
pub(crate) fn over_tls(cfg: &ConsoleConfig, peer: SocketAddr, headers: &HeaderMap) -> bool {
    from_proxy(cfg, peer)
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No (live) session: the login page.
    NoSession,
    /// Proxy authentication, and the request did not come through the
    /// proxy or carries no user.
    NotFromProxy,
}

/// Who sent the request, by session cookie or proxy header.
pub(crate) fn identify(
    cfg: &ConsoleConfig,
    sessions: &Sessions,
    peer: SocketAddr,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<Who, Refusal> {
    match &cfg.auth {
        ConsoleAuth::Local => cookie(headers, SESSION_COOKIE)
            .and_then(|id| sessions.get(&id, now))
            .ok_or(Refusal::NoSession),
        ConsoleAuth::Proxy { header, operators } => {
            if !from_proxy(cfg, peer) {
                return Err(Refusal::NotFromProxy);
            }
            let name = headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|n| crate::ops::console_users::valid_name(n))
                .ok_or(Refusal::NotFromProxy)?;
            let role = if operators.iter().any(|o| o == name) {
                Role::Operator
            } else {
                Role::Viewer
            };
            Ok(Who {
                name: name.to_string(),
                role,
                csrf: sessions.proxy_csrf(name),
                session: None,
            })
        }
    }
}

/// `Set-Cookie` for a session (`Max-Age` of the session's life; `Secure`
/// when the browser came over TLS).
pub(crate) fn session_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` for the login form's token.
pub(crate) fn login_cookie(token: &str, secure: bool) -> String {
    format!(
        "{LOGIN_COOKIE}={token}; Path=/login; Max-Age=3600; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn cleared_cookie(secure: bool) -> String {
    session_cookie("", Duration::ZERO, secure)
}

/// Failed logins per address and per user, and the locks they caused.
pub(crate) struct Limiter {
    inner: Mutex<LimiterInner>,
}

#[derive(Default)]
struct LimiterInner {
    failures: HashMap<String, Vec<Timestamp>>,
    locked: HashMap<String, Timestamp>,
}

fn window() -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(LOCK_WINDOW).unwrap_or_default()
}

impl Limiter {
    /// Nobody locked out.
    pub(crate) fn new() -> Limiter {
        Limiter {
            inner: Mutex::new(LimiterInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until `keys` may try again, when any of them is locked.
    pub(crate) fn locked(&self, keys: &[String], now: Timestamp) -> Option<Duration> {
        let mut g = self.lock();
        g.locked.retain(|_, until| *until > now);
        keys.iter()
            .filter_map(|k| g.locked.get(k))
            .max()
            .map(|until| until.duration_since(now).unsigned_abs())
    }

    /// Counts a failure against each of `keys`; one that reaches
    /// [`MAX_FAILURES`] within [`LOCK_WINDOW`] is locked for the window.
    /// Returns whether a lock was set.
    pub(crate) fn failed(&self, keys: &[String], now: Timestamp) -> bool {
        let mut g = self.lock();
        let since = now - window();
        g.failures.retain(|_, v| {
            v.retain(|t| *t > since);
            !v.is_empty()
        });
        if g.failures.len() >= MAX_ENTRIES {
            g.failures.clear();
        }
        let mut locked = false;
        for k in keys {
            let v = g.failures.entry(k.clone()).or_default();
            v.push(now);
            if v.len() >= MAX_FAILURES {
                g.failures.remove(k);
                if g.locked.len() < MAX_ENTRIES {
                    g.locked.insert(k.clone(), now + window());
                }
                locked = true;
            }
        }
        locked
    }

    /// A successful login forgets the user's failures.
    pub(crate) fn succeeded(&self, keys: &[String]) {
        let mut g = self.lock();
        for k in keys {
            g.failures.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_for_the_window() {
        let l = Limiter::new();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let keys = vec!["addr:10.0.0.1".to_string(), "user:alice".to_string()];
        for i in 0..4 {
            assert!(!l.failed(&keys, t0 + jiff::SignedDuration::from_secs(i)));
        }
        assert!(l.locked(&keys, t0).is_none());
        assert!(l.failed(&keys, t0 + jiff::SignedDuration::from_secs(10)));
        let left = l.locked(
            &["user:alice".into()],
            t0 + jiff::SignedDuration::from_secs(70),
        );
        assert_eq!(left, Some(LOCK_WINDOW - Duration::from_secs(60)));
        // Another address, same user: still locked.
        assert!(
            l.locked(&["addr:10.0.0.2".into(), "user:alice".into()], t0)
                .is_some()
        );
        assert!(
            l.locked(&keys, t0 + jiff::SignedDuration::from_secs(16 * 60))
                .is_none()
        );
        // Failures older than the window do not count.
        let t1 = t0 + jiff::SignedDuration::from_secs(3600);
        for i in 0..4 {
            l.failed(&keys, t1 + jiff::SignedDuration::from_secs(i * 300));
        }
        assert!(
            l.locked(&keys, t1 + jiff::SignedDuration::from_secs(1200))
                .is_none()
        );
    }

    #[test]
    fn sessions_expire_and_tokens_compare() {
        let s = Sessions::new();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let id = s.open("alice", Role::Viewer, t0, Duration::from_secs(60));
        let who = s.get(&id, t0).unwrap();
        assert!(who.csrf_ok(&who.csrf.clone()));
        assert!(!who.csrf_ok(""));
        assert!(!who.csrf_ok(&token()));
        assert!(
            s.get(&id, t0 + jiff::SignedDuration::from_secs(61))
                .is_none()
        );
        assert!(!same("", ""));
    }
}
