//! `[console]`: its listener, its authentication mode and the files and
//! addresses it trusts.

use std::net::IpAddr;
use std::time::Duration;

use toml::Spanned;

use super::Checker;
use crate::config::console::{ConsoleAuth, ConsoleConfig, DEFAULT_PROXY_HEADER};
use crate::config::raw::RawConsole;
use crate::config::{AgentConfig, hooks};

/// Validates `[console]`; `None` when it is absent (the console is off) or
/// too broken to use (its problems are recorded).
pub(super) fn check_console(
    ck: &mut Checker<'_>,
    raw: Option<Spanned<RawConsole>>,
    agent: &AgentConfig,
) -> Option<ConsoleConfig> {
    let raw = raw?;
    let table = raw.span();
    let c = raw.into_inner();
    let Some(listen) = c.listen else {
        ck.at(
            table,
            "[console] has no listen: add listen = \"127.0.0.1:9001\" (its own port, not [agent] listen), or remove the table to turn the console off",
        );
        return None;
    };
    let Ok(addr) = listen.get_ref().parse::<std::net::SocketAddr>() else {
        ck.at(
            listen.span(),
            format!(
                "console.listen: {:?} is not an address like 127.0.0.1:9001",
                listen.get_ref()
            ),
        );
        return None;
    };
    if addr.port() == agent.listen.port() && addr.port() != 0 {
        ck.at(
            listen.span(),
            format!(
                "console.listen: port {} is [agent] listen's (the webhook listener); the console needs a port of its own",
                addr.port()
            ),
        );
    }
    let mut out = ConsoleConfig::local(addr);
    for a in c.proxy_addresses.unwrap_or_default() {
        match a.get_ref().parse::<IpAddr>() {
            Ok(ip) => out.proxy_addresses.push(ip),
            Err(_) => ck.at(
                a.span(),
                format!(
                    "console.proxy_addresses: {:?} is not an IP address (such as 127.0.0.1 or ::1)",
                    a.get_ref()
                ),
            ),
        }
    }
    if let Some(t) = c.session_ttl {
        match hooks::parse_duration(t.get_ref()) {
            Ok(d) if d >= Duration::from_secs(60) && d <= Duration::from_secs(30 * 86_400) => {
                out.session_ttl = d
            }
            Ok(_) => ck.at(t.span(), "console.session_ttl must be between 1m and 30d"),
            Err(m) => ck.at(t.span(), format!("console.session_ttl: {m}")),
        }
    }
    let mode = c
        .auth
        .as_ref()
        .map_or("local", |a| a.get_ref().as_str())
        .to_string();
    match mode.as_str() {
        "local" => {
            if let Some(h) = &c.proxy_header {
                ck.at(
                    h.span(),
                    "console.proxy_header is only read with auth = \"proxy\"",
                );
            }
            if let Some(o) = &c.operators {
                ck.at(
                    o.span(),
                    "console.operators is only read with auth = \"proxy\"; local users get their role from `switchyard console add-user --role`",
                );
            }
            if let Some(f) = c.users_file {
                if f.get_ref().is_absolute() {
                    out.users_file = f.get_ref().clone();
                } else {
                    ck.at(f.span(), "console.users_file must be an absolute path");
                    return None;
                }
                users_file(ck, f.span(), &out.users_file);
            } else {
                users_file(ck, table, &out.users_file);
            }
        }
        "proxy" => {
            let span = c.auth.as_ref().map_or(table.clone(), |a| a.span());
            if out.proxy_addresses.is_empty() {
                ck.at(
                    span,
                    "console: auth = \"proxy\" needs proxy_addresses (the reverse proxy's address, such as [\"127.0.0.1\"]): the user header is believed only from there",
                );
            }
            let header = match c.proxy_header {
                Some(h) => {
                    if axum::http::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err() {
                        ck.at(
                            h.span(),
                            format!(
                                "console.proxy_header: {:?} is not a header name",
                                h.get_ref()
                            ),
                        );
                    }
                    h.into_inner()
                }
                None => DEFAULT_PROXY_HEADER.to_string(),
            };
            out.auth = ConsoleAuth::Proxy {
                header,
                operators: c.operators.map(|o| o.into_inner()).unwrap_or_default(),
            };
        }
        other => {
            let span = c.auth.as_ref().map_or(table, |a| a.span());
            ck.at(
                span,
                format!("console.auth must be \"local\" or \"proxy\", got {other:?}"),
            );
            return None;
        }
    }
    Some(out)
}

/// The users file holds password hashes: it must exist (`console add-user`
/// creates it) and no other user may read or write it.
fn users_file(ck: &mut Checker<'_>, span: std::ops::Range<usize>, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    match crate::fs::metadata(path) {
        Ok(None) => ck.unavailable(
            span,
            format!(
                "console.users_file: {} does not exist; create it with `switchyard console add-user NAME --role operator`",
                path.display()
            ),
        ),
        Ok(Some(_)) => {
            let Some(m) = ck.reference(span.clone(), "console.users_file", path, false) else {
                return;
            };
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o006 != 0 {
                ck.at(
                    span,
                    format!(
                        "console.users_file: {} is readable or writable by other users (mode {mode:04o}); its password hashes must stay private: chmod 0600 {}",
                        path.display(),
                        path.display()
                    ),
                );
            }
        }
        Err(e) => ck.unavailable(
            span,
            format!("console.users_file: {}", crate::chain::chain(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::console::ConsoleAuth;
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    const APP: &str =
        "[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\ntrust.require_signature = false\n";

    /// The problems of `[console]` `body` (line 6 on), without the missing
    /// source folder's.
    fn problems(body: &str) -> Vec<(Option<usize>, String)> {
        match Config::parse(&format!("{APP}[console]\n{body}"), Path::new("t.toml")) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .filter(|p| !p.message.contains("source.dir"))
                .map(|p| (p.line, p.message))
                .collect(),
            Ok(c) => c
                .unavailable
                .into_iter()
                .filter(|p| !p.message.contains("source.dir"))
                .map(|p| (p.line, p.message))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn console_problems_are_located() {
        let p = problems("listen = \"nowhere\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, Some(6), "{p:?}");
        let p = problems("auth = \"ldap\"\nlisten = \"127.0.0.1:9001\"\n");
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(6) && m.contains("\"local\" or \"proxy\"")),
            "{p:?}"
        );
        let p = problems(
            "listen = \"127.0.0.1:9001\"\nauth = \"proxy\"\nproxy_addresses = [\"proxy.example\"]\n",
        );
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(8) && m.contains("not an IP")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(7) && m.contains("needs proxy_addresses")),
            "{p:?}"
        );
        let p = problems("listen = \"127.0.0.1:9001\"\nusers_file = \"rel/users\"\n");
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(7) && m.contains("absolute")),
            "{p:?}"
        );
        let p =
            problems("listen = \"127.0.0.1:9001\"\noperators = [\"a\"]\nsession_ttl = \"5s\"\n");
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(7) && m.contains("only read with auth")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(l, m)| *l == Some(8) && m.contains("between 1m and 30d")),
            "{p:?}"
        );
        let p = problems("users_file = \"/x\"\n");
        assert!(p.iter().any(|(_, m)| m.contains("has no listen")), "{p:?}");
    }

    #[test]
    fn proxy_console_parses() {
        let c = Config::parse(
            &format!("{APP}[console]\nlisten = \"127.0.0.1:9001\"\nauth = \"proxy\"\nproxy_addresses = [\"127.0.0.1\", \"::1\"]\noperators = [\"alice\"]\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let con = c.console.unwrap();
        assert_eq!(con.proxy_addresses.len(), 2);
        assert_eq!(
            con.auth,
            ConsoleAuth::Proxy {
                header: "X-Forwarded-User".into(),
                operators: vec!["alice".into()]
            }
        );
        assert!(
            Config::parse(APP, Path::new("t.toml"))
                .unwrap()
                .console
                .is_none()
        );
    }
}
