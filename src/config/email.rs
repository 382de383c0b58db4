//! E-mail notifications: the SMTP server (`[notify.email]`, one for the
//! host) and who gets which event of which app (`to` and `events`, there
//! as defaults, and per app in `[apps.<name>.email]`). Checked in
//! `check/email.rs`; sent by the agent (`daemon/report/email.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The events a notification can be about (README, "Notifications"): the
/// names `events` may list.
pub(crate) const EVENTS: &[&str] = &[
    "update_available",
    "deploy_succeeded",
    "deploy_failed",
    "revert_failed",
    "reverted",
    "needs_attention",
    "critical_pending",
];

/// How long one message may take, connection to QUIT.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected (`security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on this host (127.0.0.1, ::1, localhost).
    None,
}

impl Security {
    /// The port used when `port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// `[notify.email]`: the SMTP server and the sender. Only where the
/// credentials are is kept (never the credentials), so this can be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailServer {
    /// Host name (or address) of the SMTP server; also the name its
    /// certificate must carry.
    pub server: String,
    /// TCP port.
    pub port: u16,
    /// STARTTLS, TLS, or none.
    pub security: Security,
    /// A file with the user name on its first line and the password on its
    /// second; no authentication without it.
    pub credentials_file: Option<PathBuf>,
    /// The `From:` mailbox, as written (`Name <addr>` or `addr`).
    pub from: String,
    /// An extra PEM root (a private CA), trusted beside the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl EmailServer {
    /// `server:port`, as errors and logs name it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.server, self.port)
    }
}

/// Who gets e-mail about one app: the recipients and the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEmail {
    /// The server and sender.
    pub server: Arc<EmailServer>,
    /// `To:` mailboxes, as written.
    pub to: Vec<String>,
    /// The events e-mailed (names from [`EVENTS`]).
    pub events: Vec<String>,
}

impl AppEmail {
    /// Whether `event` is e-mailed for this app.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// The user name (first line) and password (second line) of a
/// `credentials_file`, trimmed of surrounding whitespace; `None` unless both
/// are there and nothing follows.
pub(crate) fn credentials(text: &str) -> Option<(String, String)> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let user = lines.next()?.to_string();
    let password = lines.next()?.to_string();
    lines.next().is_none().then_some((user, password))
}

/// Whether `host` names this host's loopback interface, where a relay may
/// be spoken to without TLS.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Severity;
    use crate::config::tests::{parse, problems};

    const APP: &str =
        "[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\ntrust.require_signature = false\n";

    #[test]
    fn defaults_and_per_app_routing() {
        let c = parse(&format!(
            "{APP}[apps.api]\nroot = \"/srv/api\"\nsource.dir = \"/d\"\ntrust.require_signature = false\n[apps.api.email]\nto = [\"api-team@example.com\"]\nevents = [\"deploy_failed\"]\n[apps.quiet]\nroot = \"/srv/quiet\"\nsource.dir = \"/d\"\ntrust.require_signature = false\nemail.to = []\n[notify.email]\nserver = \"smtp.example.com\"\nfrom = \"Switchyard <switchyard@example.com>\"\nto = [\"ops@example.com\"]\n"
        ))
        .unwrap();
        let web = c.app("web").unwrap().agent.email.clone().unwrap();
        assert_eq!(web.server.port, 587, "starttls by default, on 587");
        assert_eq!(web.server.security, super::Security::StartTls);
        assert_eq!(web.to, ["ops@example.com"]);
        assert!(super::EVENTS.iter().all(|e| web.wants(e)), "all events");
        let api = c.app("api").unwrap().agent.email.clone().unwrap();
        assert_eq!(api.to, ["api-team@example.com"]);
        assert!(api.wants("deploy_failed") && !api.wants("update_available"));
        assert!(c.app("quiet").unwrap().agent.email.is_none(), "to = []");
        let c = parse(&format!(
            "{APP}[notify.email]\nserver = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"s@example.com\"\nto = [\"o@example.com\"]\nevents = [\"reverted\"]\n"
        ))
        .unwrap();
        let web = c.app("web").unwrap().agent.email.clone().unwrap();
        assert_eq!(
            (web.server.port, web.events.as_slice()),
            (25, &["reverted".to_string()][..])
        );
    }

    #[test]
    fn every_mistake_is_located_and_says_what_to_write() {
        let p = problems(&format!(
            "{APP}[apps.web.email]\nevents = [\"deploy_failure\"]\n[notify.email]\nserver = \"smtp.example.com\"\nsecurity = \"none\"\nport = 0\nfrom = \"not an address\"\nto = [\"ops@example.com\", \"bob\"]\nca_file = \"ca.pem\"\n"
        ));
        let got: Vec<(Option<usize>, &str)> =
            p.iter().map(|p| (p.line, p.message.as_str())).collect();
        let want = [
            (
                6,
                "apps.web.email.events: unknown event \"deploy_failure\"; known events: update_available, deploy_succeeded, deploy_failed,",
            ),
            (
                9,
                "notify.email.security = \"none\" sends the password and the mail unencrypted",
            ),
            (10, "notify.email.port must be"),
            (
                11,
                "notify.email.from: \"not an address\" is not an e-mail address",
            ),
            (12, "notify.email.to: \"bob\" is not an e-mail address"),
            (13, "notify.email.ca_file must be an absolute path"),
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((line, msg), (wl, wm)) in got.iter().zip(want) {
            assert_eq!(*line, Some(wl), "{msg}");
            assert!(msg.starts_with(wm), "{msg}\nwanted: {wm}");
        }
        assert!(
            p[0].message.contains("did you mean \"deploy_failed\""),
            "{}",
            p[0].message
        );
        let p = problems(&format!(
            "{APP}[apps.web.email]\nto = [\"a@example.com\"]\n"
        ));
        assert!(
            p[0].message.contains("needs a [notify.email] table"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{APP}[notify.email]\nserver = \"smtp.example.com\"\nfrom = \"s@example.com\"\n"
        ));
        assert!(p[0].message.contains("no recipients"), "{p:?}");
    }

    #[test]
    fn the_credentials_file_is_checked_like_other_secrets() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("smtp");
        crate::fs::write_atomic(&f, b"user\npassword\n").unwrap();
        let text = |f: &Path| {
            format!(
                "{APP}[notify.email]\nserver = \"smtp.example.com\"\nfrom = \"s@example.com\"\nto = [\"o@example.com\"]\ncredentials_file = \"{}\"\n",
                f.display()
            )
        };
        crate::fs::set_mode(&f, 0o644).unwrap();
        let c = parse(&text(&f)).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.severity == Severity::Warning
                && w.message.contains("readable by other users")),
            "{:?}",
            c.warnings
        );
        crate::fs::set_mode(&f, 0o602).unwrap();
        let p = problems(&text(&f));
        assert!(p[0].message.contains("writable by other users"), "{p:?}");
        crate::fs::set_mode(&f, 0o600).unwrap();
        crate::fs::write_atomic(&f, b"only-a-user\n").unwrap();
        let p = problems(&text(&f));
        assert!(
            p[0].message
                .contains("user name on its first line and the password on its second"),
            "{p:?}"
        );
        assert!(!p[0].message.contains("only-a-user"), "never shown: {p:?}");
    }
}
