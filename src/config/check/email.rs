//! `[notify.email]` and `[apps.<name>.email]`: the SMTP server, the
//! addresses, the event names and the secret and CA files, each problem
//! located.

use std::sync::Arc;

use toml::Spanned;

use super::Checker;
use crate::config::email::{AppEmail, EVENTS, EmailServer, Security, is_loopback};
use crate::config::raw::{RawAppEmail, RawEmail, RawNotify};

/// What the checker knows of `[notify.email]` while it reads the apps.
#[derive(Default)]
pub(super) struct EmailState {
    /// The usable table, if any.
    defaults: Option<EmailDefaults>,
    /// Whether the table is written at all (usable or not).
    table: bool,
    /// Whether some app gets e-mail.
    used: bool,
}

/// What `[notify.email]` gives every app that does not say otherwise.
struct EmailDefaults {
    /// The server and sender.
    server: Arc<EmailServer>,
    /// Default recipients.
    to: Vec<String>,
    /// Default events (every one when not set).
    events: Vec<String>,
    /// Where the table is, for a problem about it as a whole.
    span: std::ops::Range<usize>,
}

/// Checks `[notify.email]` (its problems recorded), before the apps.
pub(super) fn check_notify(ck: &mut Checker<'_>, raw: Option<Spanned<RawNotify>>) {
    let Some(raw) = raw.and_then(|r| r.into_inner().email) else {
        return;
    };
    ck.email.table = true;
    ck.email.defaults = read_email(ck, raw);
}

/// `[notify.email]`; `None` when unusable.
fn read_email(ck: &mut Checker<'_>, raw: Spanned<RawEmail>) -> Option<EmailDefaults> {
    let span = raw.span();
    let e = raw.into_inner();
    let key = "notify.email";
    let server = match &e.server {
        Some(s) if valid_host(s.get_ref()) => Some(s.get_ref().clone()),
        Some(s) => {
            ck.at(
                s.span(),
                format!(
                    "{key}.server: {:?} is not a host name; write the SMTP server's name alone, like \"smtp.example.com\" (no scheme, no port: the port goes in port)",
                    s.get_ref()
                ),
            );
            None
        }
        None => {
            ck.at(
                span.clone(),
                format!("{key} has no server: add server = \"smtp.example.com\""),
            );
            None
        }
    };
    let security = match &e.security {
        None => Security::StartTls,
        Some(s) => match s.get_ref().as_str() {
            "starttls" => Security::StartTls,
            "tls" => Security::Tls,
            "none" if server.as_deref().is_none_or(is_loopback) => Security::None,
            "none" => {
                ck.at(
                    s.span(),
                    format!("{key}.security = \"none\" sends the password and the mail unencrypted; it is only allowed for a relay on this host (server = \"127.0.0.1\", \"::1\" or \"localhost\"): use \"starttls\" (port 587) or \"tls\" (port 465)"),
                );
                Security::StartTls
            }
            other => {
                ck.at(
                    s.span(),
                    format!("{key}.security must be \"starttls\" (port 587), \"tls\" (port 465) or, for a relay on this host only, \"none\"; got {other:?}"),
                );
                Security::StartTls
            }
        },
    };
    let port = match &e.port {
        None => security.default_port(),
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                ck.at(
                    p.span(),
                    format!(
                        "{key}.port must be between 1 and 65535, got {}",
                        p.get_ref()
                    ),
                );
                security.default_port()
            }
        },
    };
    let from = match &e.from {
        Some(f) => mailbox(ck, &format!("{key}.from"), f),
        None => {
            ck.at(
                span.clone(),
                format!("{key} has no from: add from = \"Switchyard <switchyard@example.com>\" (an address the server lets you send from)"),
            );
            None
        }
    };
    let to = mailboxes(ck, &format!("{key}.to"), &e.to);
    let events = match &e.events {
        Some(list) => events(ck, &format!("{key}.events"), list),
        None => EVENTS.iter().map(|e| e.to_string()).collect(),
    };
    let credentials_file = credentials(ck, key, &e);
    let ca_file = ca(ck, key, &e);
    Some(EmailDefaults {
        server: Arc::new(EmailServer {
            server: server?,
            port,
            security,
            credentials_file,
            from: from?,
            ca_file,
        }),
        to,
        events,
        span,
    })
}

/// The app's routing: its own `to` and `events`, or the defaults. `None`
/// when it gets no e-mail (no server, or no recipient).
pub(super) fn check_app_email(
    ck: &mut Checker<'_>,
    name: &str,
    raw: Option<Spanned<RawAppEmail>>,
) -> Option<AppEmail> {
    let (to, events) = match raw {
        None => (None, None),
        Some(r) => {
            let span = r.span();
            let r = r.into_inner();
            let key = format!("apps.{name}.email");
            let to =
                r.to.as_ref()
                    .map(|t| mailboxes(ck, &format!("{key}.to"), t));
            let events = r
                .events
                .as_ref()
                .map(|e| events(ck, &format!("{key}.events"), e));
            if !ck.email.table {
                ck.at(
                    span,
                    format!("{key} needs a [notify.email] table with the SMTP server (server, from, and optionally credentials_file); see README.md, \"E-mail notifications\""),
                );
            }
            (to, events)
        }
    };
    let d = ck.email.defaults.as_ref()?;
    let to = to.unwrap_or_else(|| d.to.clone());
    if to.is_empty() {
        return None;
    }
    let app = AppEmail {
        server: d.server.clone(),
        to,
        events: events.unwrap_or_else(|| d.events.clone()),
    };
    ck.email.used = true;
    Some(app)
}

/// After every app: a server that mails nobody is a mistake.
pub(super) fn check_recipients(ck: &mut Checker<'_>) {
    if let Some(d) = &ck.email.defaults
        && !ck.email.used
        && d.to.is_empty()
    {
        let span = d.span.clone();
        ck.at(
            span,
            "notify.email has no recipients: add to = [\"ops@example.com\"] here, or to = [...] in [apps.<name>.email]",
        );
    }
}

/// A host name or address, without scheme, port, user or spaces.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && (h.parse::<std::net::IpAddr>().is_ok()
            || h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
}

/// One `Name <addr>` or `addr`, checked as the message builder reads it.
fn mailbox(ck: &mut Checker<'_>, key: &str, s: &Spanned<String>) -> Option<String> {
    match s.get_ref().parse::<lettre::message::Mailbox>() {
        Ok(_) => Some(s.get_ref().clone()),
        Err(e) => {
            ck.at(
                s.span(),
                format!(
                    "{key}: {:?} is not an e-mail address ({e}); write \"ops@example.com\" or \"Ops <ops@example.com>\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

fn mailboxes(ck: &mut Checker<'_>, key: &str, list: &[Spanned<String>]) -> Vec<String> {
    list.iter().filter_map(|s| mailbox(ck, key, s)).collect()
}

/// Event names, each one of [`EVENTS`].
fn events(ck: &mut Checker<'_>, key: &str, list: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for e in list {
        let name = e.get_ref();
        if EVENTS.contains(&name.as_str()) {
            out.push(name.clone());
            continue;
        }
        let near = EVENTS
            .iter()
            .map(|k| (strsim::levenshtein(k, name), *k))
            .min()
            .filter(|(d, _)| *d <= 4)
            .map(|(_, k)| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        ck.at(
            e.span(),
            format!(
                "{key}: unknown event {name:?}; known events: {}{near}",
                EVENTS.join(", ")
            ),
        );
    }
    out
}

/// `credentials_file`: absolute, not writable by others (a warning when
/// others can read it), and, when readable here, a user line and a
/// password line. Its content is never shown.
fn credentials(ck: &mut Checker<'_>, key: &str, e: &RawEmail) -> Option<std::path::PathBuf> {
    let f = e.credentials_file.as_ref()?;
    let path = f.get_ref();
    let k = format!("{key}.credentials_file");
    if !path.is_absolute() {
        ck.at(f.span(), format!("{k} must be an absolute path"));
        return None;
    }
    let before = ck.problems.len() + ck.unavailable.len();
    ck.file_mode(f.span(), &k, path, true);
    if ck.problems.len() + ck.unavailable.len() == before
        && let Ok(text) = crate::fs::read_to_string(path)
        && crate::config::email::credentials(&text).is_none()
    {
        ck.at(
            f.span(),
            format!(
                "{k}: {} must hold the user name on its first line and the password on its second",
                path.display()
            ),
        );
    }
    Some(path.clone())
}

/// `ca_file`: absolute, not writable by others, and PEM certificates.
fn ca(ck: &mut Checker<'_>, key: &str, e: &RawEmail) -> Option<std::path::PathBuf> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let f = e.ca_file.as_ref()?;
    let path = f.get_ref();
    let k = format!("{key}.ca_file");
    if !path.is_absolute() {
        ck.at(f.span(), format!("{k} must be an absolute path"));
        return None;
    }
    let before = ck.problems.len() + ck.unavailable.len();
    ck.file_mode(f.span(), &k, path, false);
    if ck.problems.len() + ck.unavailable.len() == before
        && let Ok(pem) = crate::fs::read(path)
    {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        if !certs.is_ok_and(|c| !c.is_empty()) {
            ck.at(
                f.span(),
                format!(
                    "{k}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA certificate that signed the SMTP server's",
                    path.display()
                ),
            );
        }
    }
    Some(path.clone())
}
