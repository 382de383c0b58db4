//! Sending one e-mail through the `[notify.email]` server: STARTTLS (which
//! must succeed) or implicit TLS on rustls, the system's roots plus
//! `ca_file`, AUTH with the `credentials_file`, 30 s for the whole
//! exchange. Each SMTP step is taken on its own, so an error names the one
//! that failed. The caller redacts the message's content.

use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tracing::debug;

use super::ReportError;
use crate::chain::chain;
use crate::config::email::{EmailServer, SEND_TIMEOUT, Security, credentials};

/// An e-mail, ready to go: the subject and both bodies.
pub(crate) struct Mail {
    /// `Subject:`.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// A step of the exchange, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Reading `credentials_file` or `ca_file`, before any connection.
    Setup,
    /// Building the message from the configured addresses.
    Message,
    /// TCP connection and EHLO.
    Connect,
    /// TCP connection, the TLS handshake (`security = "tls"`) and EHLO.
    TlsConnect,
    /// STARTTLS and its handshake.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM, RCPT TO and DATA.
    Send,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Setup => "reading credentials_file and ca_file",
            Step::Message => "building the message",
            Step::Connect => "connecting",
            Step::TlsConnect => "connecting and the TLS handshake",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::Send => "MAIL FROM/RCPT TO/DATA",
        })
    }
}

impl Step {
    /// What an operator can do about a failure at this step.
    fn hint(self, server: &EmailServer) -> &'static str {
        match (self, server.security) {
            (Step::Setup, _) => {
                "check notify.email.credentials_file (user on the first line, password on the second) and ca_file (PEM); `switchyard config check` names the problem"
            }
            (Step::Message, _) => "check notify.email.from and the to addresses",
            (Step::TlsConnect, _) => {
                "check server and port (465 for security = \"tls\"), the firewall, and that the server's certificate chains to the system's roots or to ca_file and names the server"
            }
            (Step::Connect, _) => "check server, port and the firewall",
            (Step::StartTls, _) => {
                "the server's certificate must chain to the system's roots or to notify.email.ca_file and name the server; a server without STARTTLS needs security = \"tls\" (port 465)"
            }
            (Step::Auth, _) => {
                "check the user and password in notify.email.credentials_file, and that the server allows AUTH PLAIN or LOGIN"
            }
            (Step::Send, _) => {
                "the server refused the sender or a recipient: check notify.email.from (an address this account may send from) and the to addresses"
            }
        }
    }
}

/// Sends `mail` to `to` through `server`; any failure names the server and
/// the step. A whole exchange longer than 30 s fails.
pub(crate) async fn send(
    server: &EmailServer,
    to: &[String],
    mail: &Mail,
) -> Result<(), ReportError> {
    match tokio::time::timeout(SEND_TIMEOUT, exchange(server, to, mail)).await {
        Ok(r) => r,
        Err(_) => Err(ReportError::Email {
            server: server.address(),
            step: Step::Connect,
            reason: format!("no answer within {} s", SEND_TIMEOUT.as_secs()),
            hint: "check server, port and the firewall; the next notice tries again",
        }),
    }
}

async fn exchange(server: &EmailServer, to: &[String], mail: &Mail) -> Result<(), ReportError> {
    // lettre's errors name no secret (not the credentials; the server's
    // own replies at most), and their Display already carries their
    // source: shown once, as they are.
    let fail = |step: Step, reason: String| ReportError::Email {
        server: server.address(),
        step,
        reason,
        hint: step.hint(server),
    };
    let login = match &server.credentials_file {
        None => None,
        Some(p) => {
            let text = crate::fs::read_to_string(p).map_err(|e| fail(Step::Setup, chain(&e)))?;
            // Never the content: it is the password.
            let (user, password) = credentials(&text).ok_or_else(|| {
                fail(
                    Step::Setup,
                    format!(
                        "{} does not hold a user line and a password line",
                        p.display()
                    ),
                )
            })?;
            Some(Credentials::new(user, password))
        }
    };
    let message = build(server, to, mail).map_err(|e| fail(Step::Message, e))?;
    let envelope = message.envelope().clone();
    let tls = match server.security {
        Security::None => None,
        Security::StartTls | Security::Tls => {
            Some(tls_parameters(server).map_err(|e| fail(Step::Setup, e))?)
        }
    };
    let hello = ClientId::Domain(super::hostname());
    let timeout = Some(Duration::from_secs(15));
    let (implicit, upgrade, connect) = match server.security {
        Security::Tls => (tls, None, Step::TlsConnect),
        _ => (None, tls, Step::Connect),
    };
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (server.server.as_str(), server.port),
        timeout,
        &hello,
        implicit,
        None,
    )
    .await
    .map_err(|e| fail(connect, e.to_string()))?;
    if let Some(tls) = upgrade {
        conn.starttls(tls, &hello)
            .await
            .map_err(|e| fail(Step::StartTls, e.to_string()))?;
    }
    if let Some(c) = &login {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
            .await
            .map_err(|e| fail(Step::Auth, e.to_string()))?;
    }
    conn.send(&envelope, &message.formatted())
        .await
        .map_err(|e| fail(Step::Send, e.to_string()))?;
    // The message is accepted; a failed QUIT changes nothing.
    if let Err(e) = conn.quit().await {
        debug!(server = %server.address(), error = %e, "QUIT failed after the message was accepted");
    }
    Ok(())
}

/// The message: From, To, Subject, Date, and a multipart/alternative body
/// with the text and HTML parts.
fn build(server: &EmailServer, to: &[String], mail: &Mail) -> Result<Message, String> {
    let parse = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| format!("{s:?} is not an e-mail address ({e})"))
    };
    let mut b = Message::builder()
        .from(parse(&server.from)?)
        .subject(mail.subject.clone());
    for t in to {
        b = b.to(parse(t)?);
    }
    b.multipart(MultiPart::alternative_plain_html(
        mail.text.clone(),
        mail.html.clone(),
    ))
    .map_err(|e| e.to_string())
}

/// TLS for `server`: its name checked against its certificate, which must
/// chain to the system's roots or to `ca_file`.
fn tls_parameters(server: &EmailServer) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(server.server.clone());
    if let Some(ca) = &server.ca_file {
        let pem = crate::fs::read(ca).map_err(|e| chain(&e))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> EmailServer {
        EmailServer {
            server: "127.0.0.1".into(),
            port: 9,
            security: Security::StartTls,
            credentials_file: None,
            from: "Switchyard <switchyard@example.com>".into(),
            ca_file: None,
        }
    }

    #[test]
    fn the_message_is_multipart_alternative_with_both_bodies() {
        let mail = Mail {
            subject: "[switchyard] web 1.0.1 deploy failed on host01".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
        };
        let m = build(&server(), &["ops@example.com".into()], &mail).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        for want in [
            "From: Switchyard <switchyard@example.com>",
            "To: ops@example.com",
            "Subject: [switchyard] web 1.0.1 deploy failed on host01",
            "Content-Type: multipart/alternative",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
            "plain body",
            "<p>html body</p>",
        ] {
            assert!(raw.contains(want), "{want}:\n{raw}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_server_and_the_step() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let s = EmailServer { port, ..server() };
        let mail = Mail {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        };
        let e = send(&s, &["ops@example.com".into()], &mail)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ReportError::Email {
                    step: Step::Connect,
                    ..
                }
            ),
            "{e}"
        );
        let m = e.to_string();
        assert!(
            m.contains(&format!("127.0.0.1:{port}")) && m.contains("connecting"),
            "{m}"
        );
    }
}
