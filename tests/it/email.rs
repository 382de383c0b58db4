//! Issue #16: e-mail notifications. The real agent sends them to an SMTP
//! server this test runs on 127.0.0.1 (STARTTLS or implicit TLS with a
//! certificate from a CA generated here, AUTH required); every delivered
//! message is read back and checked header by header and part by part.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ct_codecs::Decoder;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::agent::{Agent, advance_clock, configure, eventually, free_port, publish, set_clock};
use crate::common::World;
use crate::mock_github::MockGithub;

const USER: &str = "switchyard-mailer";
const PASSWORD: &str = "correct horse battery staple";

/// One message the server accepted.
#[derive(Clone, Debug)]
struct Delivered {
    /// The user that authenticated, if any.
    user: Option<String>,
    /// Whether the session was encrypted when the message came.
    tls: bool,
    /// RCPT TO addresses.
    rcpt: Vec<String>,
    /// The message as sent (dot-stuffing undone).
    data: String,
}

#[derive(Default)]
struct Seen {
    messages: Mutex<Vec<Delivered>>,
    connections: AtomicUsize,
}

/// A CA and a certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "switchyard test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    Pki {
        ca_pem,
        config: Arc::new(config),
    }
}

/// An SMTP server on 127.0.0.1: STARTTLS (`implicit` false) or TLS from
/// the first byte, AUTH PLAIN/LOGIN required (and offered only once
/// encrypted), every accepted message kept.
struct Smtp {
    port: u16,
    seen: Arc<Seen>,
    ca_pem: String,
    _rt: tokio::runtime::Runtime,
}

impl Smtp {
    fn start(implicit: bool) -> Smtp {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pki = pki();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Seen> = Arc::default();
        let s2 = seen.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.config.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s2.connections.fetch_add(1, Ordering::SeqCst);
                let (seen, acceptor) = (s2.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if implicit {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = session(tls, true, true, &seen).await;
                    } else if let Ok(Some(tcp)) = session(tcp, false, true, &seen).await
                        && let Ok(tls) = acceptor.accept(tcp).await
                    {
                        let _ = session(tls, true, false, &seen).await;
                    }
                });
            }
        });
        Smtp {
            port,
            seen,
            ca_pem: pki.ca_pem,
            _rt: rt,
        }
    }

    fn messages(&self) -> Vec<Delivered> {
        self.seen.messages.lock().unwrap().clone()
    }

    fn with_subject(&self, part: &str) -> Vec<Delivered> {
        self.messages()
            .into_iter()
            .filter(|m| header(&m.data, "Subject").is_some_and(|s| s.contains(part)))
            .collect()
    }
}

/// One SMTP session; returns the stream when the client asked for STARTTLS.
/// `greet` is false after STARTTLS, where the client speaks first (EHLO).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    tls: bool,
    greet: bool,
    seen: &Seen,
) -> std::io::Result<Option<S>> {
    let mut r = BufReader::new(s);
    if greet {
        r.get_mut().write_all(b"220 test.invalid ESMTP\r\n").await?;
    }
    let mut user = None;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if tls {
                "250-test.invalid\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            } else {
                "250-test.invalid\r\n250-STARTTLS\r\n250 8BITMIME\r\n".into()
            }
        } else if upper == "STARTTLS" && !tls {
            r.get_mut().write_all(b"220 go ahead\r\n").await?;
            r.get_mut().flush().await?;
            return Ok(Some(r.into_inner()));
        } else if upper.starts_with("AUTH PLAIN ") {
            let b64 = &cmd["AUTH PLAIN ".len()..];
            let raw = ct_codecs::Base64::decode_to_vec(b64, None).unwrap_or_default();
            let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            if tls
                && parts.len() == 3
                && parts[1] == USER.as_bytes()
                && parts[2] == PASSWORD.as_bytes()
            {
                user = Some(USER.to_string());
                "235 2.7.0 accepted\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper == "AUTH LOGIN" {
            r.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let mut u = String::new();
            r.read_line(&mut u).await?;
            r.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let mut p = String::new();
            r.read_line(&mut p).await?;
            let dec =
                |s: &str| ct_codecs::Base64::decode_to_vec(s.trim(), None).unwrap_or_default();
            if tls && dec(&u) == USER.as_bytes() && dec(&p) == PASSWORD.as_bytes() {
                user = Some(USER.to_string());
                "235 2.7.0 accepted\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            if user.is_none() {
                "530 5.7.0 authentication required\r\n".into()
            } else {
                rcpt.clear();
                "250 ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            rcpt.push(
                cmd["RCPT TO:".len()..]
                    .trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            "250 ok\r\n".into()
        } else if upper == "DATA" {
            r.get_mut().write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).await? == 0 {
                    return Ok(None);
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            seen.messages.lock().unwrap().push(Delivered {
                user: user.clone(),
                tls,
                rcpt: rcpt.clone(),
                data,
            });
            "250 2.0.0 queued\r\n".into()
        } else if upper == "QUIT" {
            r.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(None);
        } else if upper == "RSET" || upper == "NOOP" {
            "250 ok\r\n".into()
        } else {
            "502 5.5.2 not implemented\r\n".into()
        };
        r.get_mut().write_all(reply.as_bytes()).await?;
        r.get_mut().flush().await?;
    }
}

/// A header's value (unfolded), from a message or a MIME part.
fn header(data: &str, name: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The parts of a multipart message: (Content-Type, decoded body).
fn parts(data: &str) -> Vec<(String, String)> {
    let ct = header(data, "Content-Type").unwrap_or_default();
    let Some(b) = ct.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let boundary = format!("--{}", b.trim_matches('"'));
    let body = data.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    body.split(boundary.as_str())
        .skip(1)
        .filter(|p| !p.starts_with("--"))
        .filter_map(|p| {
            let p = p.trim_start_matches("\r\n");
            let ct = header(p, "Content-Type")?;
            let cte = header(p, "Content-Transfer-Encoding").unwrap_or_default();
            let raw = p.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
            Some((ct, decode(raw, &cte.to_ascii_lowercase())))
        })
        .collect()
}

fn decode(raw: &str, cte: &str) -> String {
    match cte {
        "base64" => {
            let joined: String = raw.split_whitespace().collect();
            String::from_utf8(ct_codecs::Base64::decode_to_vec(&joined, None).unwrap()).unwrap()
        }
        "quoted-printable" => {
            let mut out = Vec::new();
            let soft = raw.replace("=\r\n", "");
            let b = soft.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'='
                    && i + 3 <= b.len()
                    && let Ok(x) = u8::from_str_radix(&soft[i + 1..i + 3], 16)
                {
                    out.push(x);
                    i += 3;
                    continue;
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8(out).unwrap()
        }
        _ => raw.to_string(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// The `[notify.email]` table for `smtp`, trusting `ca` (a file written here).
fn email_table(w: &World, smtp: &Smtp, security: &str, ca: &str) -> String {
    let creds = w.tmp.path().join("smtp-credentials");
    std::fs::write(&creds, format!("{USER}\n{PASSWORD}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca_file = w.tmp.path().join("smtp-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    format!(
        "\n[notify.email]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"{security}\"\ncredentials_file = \"{}\"\nca_file = \"{}\"\nfrom = \"Switchyard <switchyard@example.com>\"\nto = [\"ops@example.com\"]\n",
        smtp.port,
        creds.display(),
        ca_file.display()
    )
}

fn memory(w: &World) -> serde_json::Value {
    std::fs::read(w.root.join(".switchyard/agent.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[test]
fn a_failed_deploy_is_emailed_over_starttls_once_with_headers_and_a_redacted_body() {
    let m = MockGithub::start();
    let w = World::new();
    let smtp = Smtp::start(false);
    // notify_url points at a closed port: that channel fails on every poll
    // while the e-mail channel, delivered once, stays quiet.
    configure(
        &w,
        &m,
        &format!(
            "poll_interval = \"1s\"\nauto = \"patch\"\nnotify_url = \"http://127.0.0.1:{}/hook\"",
            free_port()
        ),
    );
    let marker = w.tmp.path().join("break-warm");
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    let cfg = cfg.replace(
        "[apps.web.trust]",
        &format!(
            "[apps.web.hooks]\nwarm = 'if [ -e {} ]; then echo \"connecting to the database with password=hunter2-sekrit\"; exit 3; fi'\n\n[apps.web.email]\nto = [\"Web Team <web-team@example.com>\"]\nevents = [\"deploy_failed\", \"update_available\"]\n\n[apps.web.trust]",
            marker.display()
        ),
    );
    std::fs::write(
        &w.config,
        cfg + &email_table(&w, &smtp, "starttls", &smtp.ca_pem),
    )
    .unwrap();
    let check = w.ok(&["config", "check"]);
    assert!(
        check.contains("ok (1 app: web)") && !check.contains("notify.email"),
        "{check}"
    );
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    std::fs::write(&marker, "").unwrap();
    publish(&w, &m, "v1.0.1");
    publish(&w, &m, "v1.1.0");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    assert!(
        eventually(Duration::from_secs(30), || {
            advance_clock(&w, 2);
            !smtp.with_subject("deploy failed").is_empty()
                && !smtp.with_subject("update available").is_empty()
        }),
        "no e-mail: {:#?}\n{}",
        smtp.messages(),
        agent.log()
    );
    // Many more polls: update_available recurs on each, the e-mail goes once.
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    assert!(
        eventually(Duration::from_secs(40), || {
            advance_clock(&w, 2);
            listings() >= n + 6
        }),
        "the agent stopped polling:\n{}",
        agent.log()
    );
    let host = hostname();
    let failed = smtp.with_subject("deploy failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let updates = smtp.with_subject("update available");
    assert_eq!(updates.len(), 1, "sent twice: {updates:#?}");
    assert_eq!(smtp.messages().len(), 2, "{:#?}", smtp.messages());
    let mem = memory(&w);
    assert!(
        mem["notified"]["email:update_available:1.1.0"].is_string(),
        "{mem}"
    );
    assert!(
        mem["notified"]["update_available:1.1.0"].is_null(),
        "the URL channel failed and stays to be retried: {mem}"
    );
    assert!(
        agent.log().matches("notification not sent").count() >= 3,
        "the URL channel is retried on each poll:\n{}",
        agent.log()
    );

    let mail = &failed[0];
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.user.as_deref(), Some(USER), "authenticated");
    assert_eq!(
        mail.rcpt,
        ["web-team@example.com"],
        "the app's own recipients"
    );
    let d = &mail.data;
    assert_eq!(
        header(d, "From").as_deref(),
        Some("Switchyard <switchyard@example.com>")
    );
    let to = header(d, "To").unwrap();
    assert!(
        to.contains("<web-team@example.com>") && !to.contains("ops@"),
        "{to}"
    );
    assert_eq!(
        header(d, "Subject").unwrap(),
        format!("[switchyard] web 1.0.1 deploy failed on {host}")
    );
    assert!(header(d, "Date").is_some(), "{d}");
    assert!(
        header(d, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative;"),
        "{d}"
    );
    let p = parts(d);
    let types: Vec<&str> = p
        .iter()
        .map(|(t, _)| t.split(';').next().unwrap())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"], "{d}");
    for (t, body) in &p {
        for want in [
            "web",
            "1.0.1",
            host.as_str(),
            "warm",
            "switchyard status web",
            "[REDACTED:secret]",
            "connecting to the database",
        ] {
            assert!(body.contains(want), "{t} lacks {want:?}:\n{body}");
        }
        assert!(!body.contains("hunter2"), "{t} leaks the secret:\n{body}");
    }
    let reason_line = p[0]
        .1
        .lines()
        .find(|l| l.starts_with("Reason:"))
        .unwrap_or_default()
        .to_string();
    assert!(reason_line.len() > "Reason:".len() + 5, "{}", p[0].1);
    assert!(p[1].1.contains("<table"), "{}", p[1].1);
    assert!(
        d.contains("switchyard deploy web 1.1.0") || {
            let u = parts(&updates[0].data);
            u.iter()
                .all(|(_, b)| b.contains("switchyard deploy web 1.1.0"))
        },
        "the update's command"
    );
    assert!(
        agent.log().contains("e-mail notification sent"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_wrong_ca_fails_the_send_with_a_clear_error_and_the_agent_keeps_running() {
    let m = MockGithub::start();
    let w = World::new();
    let smtp = Smtp::start(true);
    let other_ca = pki().ca_pem;
    configure(&w, &m, "poll_interval = \"1s\"\nauto = \"patch\"");
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg.clone() + &email_table(&w, &smtp, "tls", &other_ca),
    )
    .unwrap();
    publish(&w, &m, "v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    publish(&w, &m, "v1.1.0");
    set_clock(&w, "2026-11-20T15:00:00Z");
    let agent = Agent::start(&w);
    let listings = || m.api_hits(&MockGithub::list_path()).len();
    let n = listings();
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("e-mail notification not sent"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(40), || {
            advance_clock(&w, 2);
            failures(&agent.log()).len() >= 2 && listings() >= n + 4
        }),
        "{}",
        agent.log()
    );
    let log = agent.log();
    let line = &failures(&log)[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!(
            "cannot send the e-mail notification through 127.0.0.1:{} (connecting and the TLS handshake)",
            smtp.port
        )),
        "{line}"
    );
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(!line.contains("REDACTED"), "{line}");
    assert!(line.contains("ca_file"), "says what to check: {line}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(smtp.messages().is_empty(), "{:#?}", smtp.messages());
    assert!(
        smtp.seen.connections.load(Ordering::SeqCst) >= 2,
        "tried again"
    );
    assert!(
        !memory(&w)["notified"]
            .as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("email:"))),
        "{}",
        memory(&w)
    );
    let (code, _) = agent.get("/metrics");
    assert_eq!(code, 200, "the agent keeps serving");

    // With the right CA, the same notice goes out over implicit TLS.
    drop(agent);
    std::fs::write(
        &w.config,
        cfg + &email_table(&w, &smtp, "tls", &smtp.ca_pem),
    )
    .unwrap();
    let agent = Agent::start(&w);
    assert!(
        eventually(Duration::from_secs(30), || {
            advance_clock(&w, 2);
            !smtp.messages().is_empty()
        }),
        "{}",
        agent.log()
    );
    let mail = &smtp.messages()[0];
    assert!(mail.tls && mail.user.as_deref() == Some(USER), "{mail:?}");
    assert_eq!(mail.rcpt, ["ops@example.com"], "the default recipients");
    assert_eq!(
        header(&mail.data, "Subject").unwrap(),
        format!("[switchyard] web 1.1.0 update available on {}", hostname())
    );
}

#[test]
fn config_test_email_sends_one_message_and_names_the_step_that_failed() {
    let w = World::new();
    let smtp = Smtp::start(false);
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(
        &w.config,
        cfg + &email_table(&w, &smtp, "starttls", &smtp.ca_pem),
    )
    .unwrap();
    let out = w.ok(&["config", "test-email", "web"]);
    assert_eq!(
        out,
        format!(
            "sent a test e-mail about web to ops@example.com through 127.0.0.1:{}\n",
            smtp.port
        )
    );
    let sent = smtp.messages();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].tls && sent[0].user.as_deref() == Some(USER));
    assert_eq!(
        header(&sent[0].data, "Subject").unwrap(),
        format!("[switchyard] web test e-mail on {}", hostname())
    );
    // A wrong password: refused at AUTH, said so, the password not shown.
    std::fs::write(
        w.tmp.path().join("smtp-credentials"),
        format!("{USER}\nnot-the-password\n"),
    )
    .unwrap();
    let (code, out, err) = w.run(&["config", "test-email", "web"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "cannot send the e-mail notification through 127.0.0.1:{} (AUTH)",
            smtp.port
        )) && err.contains("credentials_file"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    assert_eq!(smtp.messages().len(), 1);
}
