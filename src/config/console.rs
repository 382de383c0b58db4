//! `[console]`: the agent's web console (issue #16), off unless the table
//! is there. Checked in `check/console.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where `console add-user` writes and the console reads its users when
/// `users_file` is not set.
pub(crate) const DEFAULT_USERS_FILE: &str = "/etc/switchyard/console-users";

/// The header a reverse proxy names its authenticated user in, by default.
pub(crate) const DEFAULT_PROXY_HEADER: &str = "X-Forwarded-User";

/// How long a console session lasts when `session_ttl` is not set.
pub(crate) const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The validated `[console]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// The console's own listener (never the webhook listener).
    pub listen: SocketAddr,
    /// How users prove who they are.
    pub auth: ConsoleAuth,
    /// Local users and their roles (`console add-user`); with proxy
    /// authentication it is not read.
    pub users_file: PathBuf,
    /// Reverse proxies: only from these addresses is the proxy's user
    /// header believed (with `auth = "proxy"`), and `X-Forwarded-Proto` /
    /// `X-Forwarded-For` (either mode).
    pub proxy_addresses: Vec<IpAddr>,
    /// How long a login lasts.
    pub session_ttl: Duration,
}

/// `auth = "local"` or `auth = "proxy"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleAuth {
    /// Users and argon2id hashes in `users_file`.
    Local,
    /// A reverse proxy authenticates and names the user in a header.
    Proxy {
        /// The header (case does not matter).
        header: String,
        /// The proxy users who may act; every other one only reads.
        operators: Vec<String>,
    },
}

impl ConsoleAuth {
    /// `local` or `proxy`, as configured.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ConsoleAuth::Local => "local",
            ConsoleAuth::Proxy { .. } => "proxy",
        }
    }
}

impl ConsoleConfig {
    /// A console on `listen` with local users and every other default.
    pub(crate) fn local(listen: SocketAddr) -> ConsoleConfig {
        ConsoleConfig {
            listen,
            auth: ConsoleAuth::Local,
            users_file: PathBuf::from(DEFAULT_USERS_FILE),
            proxy_addresses: Vec::new(),
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}
