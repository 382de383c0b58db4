//! The web console (#16) end to end: the real agent with `[console]` on a
//! port of its own, spoken to over plain HTTP (a tiny client that keeps
//! the session cookie by hand), and `console add-user`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::agent::{Agent, free_port, set_clock};
use crate::common::World;

pub(crate) const PASSWORD: &str = "a long console password";

/// One HTTP response.
struct Resp {
    status: u16,
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap_or("").to_string())
    }

    /// The value of the first hidden `csrf` input.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole answer.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `application/x-www-form-urlencoded`.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".into(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An agent with the console, and the world it runs in.
struct Setup {
    w: World,
    agent: Agent,
    console: u16,
}

impl Setup {
    /// `console_extra` goes into `[console]`; `users` are added first.
    fn start(console_extra: &str, users: &[(&str, &str)]) -> Setup {
        let (w, console) = world(console_extra, users);
        let agent = Agent::start(&w);
        Setup { w, agent, console }
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let c = cookie.map(|c| format!("switchyard_session={c}"));
        let h: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
        http(self.console, "GET", path, &h, "")
    }

    fn post(&self, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Resp {
        let c = cookie.map(|c| format!("switchyard_session={c}"));
        let h: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
        http(self.console, "POST", path, &h, &form(fields))
    }

    /// Tries to sign in; the response.
    fn try_login(&self, user: &str, password: &str) -> Resp {
        let page = http(self.console, "GET", "/login", &[], "");
        assert_eq!(page.status, 200, "{}", page.body);
        let token = page.set_cookie("switchyard_login").expect("login cookie");
        let cookie = format!("switchyard_login={token}");
        http(
            self.console,
            "POST",
            "/login",
            &[("Cookie", &cookie)],
            &form(&[
                ("user", user),
                ("password", password),
                ("csrf", &page.csrf()),
            ]),
        )
    }

    /// Signs in; the session cookie's value.
    fn login(&self, user: &str) -> String {
        let r = self.try_login(user, PASSWORD);
        assert_eq!(r.status, 303, "{}", r.body);
        r.set_cookie("switchyard_session").expect("session cookie")
    }
}

/// A world with an agent and console config (ports free now), its users
/// added; the console's port.
pub(crate) fn world(console_extra: &str, users: &[(&str, &str)]) -> (World, u16) {
    let w = World::new();
    let console = free_port();
    let users_file = w.tmp.path().join("console-users");
    let mut cfg = std::fs::read_to_string(&w.config).unwrap();
    cfg.push_str(&format!(
        "\n[agent]\nlisten = \"127.0.0.1:{}\"\ncontrol_socket = \"{}\"\nshutdown_timeout = \"20s\"\n\n[console]\nlisten = \"127.0.0.1:{console}\"\nusers_file = \"{}\"\n{console_extra}",
        free_port(),
        w.tmp.path().join("control.sock").display(),
        users_file.display(),
    ));
    std::fs::write(&w.config, cfg).unwrap();
    for (name, role) in users {
        add_user(&w, name, role, PASSWORD);
    }
    (w, console)
}

fn add_user(w: &World, name: &str, role: &str, password: &str) -> assert_cmd::assert::Assert {
    w.cmd()
        .args([
            "console",
            "add-user",
            name,
            "--role",
            role,
            "--password-stdin",
        ])
        .write_stdin(format!("{password}\n"))
        .assert()
}

fn assert_security_headers(r: &Resp, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
}

#[test]
fn unauthenticated_requests_get_the_login_page_or_401() {
    let s = Setup::start("", &[("olga", "operator")]);
    for path in [
        "/",
        "/apps/web",
        "/apps/web/logs/x",
        "/apps/web/confirm?action=hold",
    ] {
        let r = s.get(path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.body.contains("id=\"login-form\""), "{path}: {}", r.body);
        assert_security_headers(&r, path);
    }
    let r = s.get("/apps/web/events", None);
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("event: progress"), "{}", r.body);
    // A made-up session is no session.
    let r = s.get("/", Some(&"ab".repeat(32)));
    assert_eq!(r.status, 401);
    let r = s.post(
        "/apps/web/actions",
        None,
        &[("action", "hold"), ("reason", "x")],
    );
    assert_eq!(r.status, 401);
    // Signed in, the same page is the overview, headers and all.
    let c = s.login("olga");
    let r = s.get("/", Some(&c));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"app-web\""), "{}", r.body);
    assert_security_headers(&r, "overview");
    for path in ["/apps/web", "/login", "/static/console.js", "/nowhere"] {
        assert_security_headers(&s.get(path, Some(&c)), path);
    }
    // Signing out ends the session.
    let c2 = s.login("olga");
    let page = s.get("/", Some(&c2));
    let r = s.post("/logout", Some(&c2), &[("csrf", &page.csrf())]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(s.get("/", Some(&c2)).status, 401);
    assert_eq!(s.get("/", Some(&c)).status, 200, "another session lives on");
    // The session cookie is HttpOnly and SameSite=Strict (not Secure: plain HTTP).
    let r = s.try_login("olga", PASSWORD);
    let sc = r.header("set-cookie").unwrap();
    assert!(
        sc.contains("HttpOnly") && sc.contains("SameSite=Strict"),
        "{sc}"
    );
    assert!(!sc.contains("Secure"), "{sc}");
    // The page has no inline script or style for the CSP to refuse.
    let page = s.get("/apps/web", Some(&c)).body;
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    assert!(
        page.contains("<script src=\"/static/console.js\""),
        "{page}"
    );
}

#[test]
fn a_viewer_reads_but_cannot_act() {
    let s = Setup::start("", &[("vera", "viewer")]);
    let c = s.login("vera");
    let page = s.get("/apps/web", Some(&c));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"actions\""), "{}", page.body);
    assert_eq!(s.get("/apps/web/confirm?action=hold", Some(&c)).status, 403);
    let csrf = page.csrf();
    let r = s.post(
        "/apps/web/actions",
        Some(&c),
        &[
            ("csrf", &csrf),
            ("action", "hold"),
            ("reason", "viewer tries"),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let st = s.w.json(&["status", "web"]);
    assert!(st["hold"].is_null(), "{st}");
}

#[test]
fn an_operators_hold_is_audited_under_the_console_user_and_csrf_is_required() {
    let s = Setup::start("", &[("olga", "operator")]);
    let c = s.login("olga");
    let confirm = s.get("/apps/web/confirm?action=hold&version=", Some(&c));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains("id=\"confirm-form\""),
        "{}",
        confirm.body
    );
    let csrf = confirm.csrf();
    // Without the token, or with another one: refused, nothing done.
    for bad in [None, Some("0".repeat(64))] {
        let mut f = vec![("action", "hold"), ("reason", "no token")];
        if let Some(b) = &bad {
            f.push(("csrf", b));
        }
        let r = s.post("/apps/web/actions", Some(&c), &f);
        assert_eq!(r.status, 403, "{bad:?}: {}", r.body);
    }
    assert!(s.w.json(&["status", "web"])["hold"].is_null());
    // No reason: refused too.
    let r = s.post(
        "/apps/web/actions",
        Some(&c),
        &[("csrf", &csrf), ("action", "hold"), ("reason", " ")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.post(
        "/apps/web/actions",
        Some(&c),
        &[
            ("csrf", &csrf),
            ("action", "hold"),
            ("reason", "freeze for the audit"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let st = s.w.json(&["status", "web"]);
    assert_eq!(st["hold"]["by"], "console:olga", "{st}");
    assert_eq!(st["hold"]["reason"], "freeze for the audit", "{st}");
    let h = s.w.ok(&["history", "web"]);
    assert!(
        h.lines()
            .any(|l| l.contains("app.hold") && l.contains("console:olga")),
        "{h}"
    );
    // The app page shows it, and its history filter finds it.
    let page = s.get("/apps/web?event=app.hold&actor=olga", Some(&c)).body;
    assert!(
        page.contains("data-event=\"app.hold\" data-actor=\"console:olga\""),
        "{page}"
    );
    let page = s.get("/apps/web?actor=nobody-at-all", Some(&c)).body;
    assert!(!page.contains("data-event=\"app.hold\""), "{page}");
}

#[test]
fn repeated_failed_logins_lock_out_for_fifteen_minutes() {
    let (w, console) = world("", &[("olga", "operator"), ("vera", "viewer")]);
    set_clock(&w, "2026-03-01T10:00:00Z");
    let s = Setup {
        agent: Agent::start(&w),
        w,
        console,
    };
    for i in 0..4 {
        let r = s.try_login("olga", "wrong password!");
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
        assert!(
            r.body.contains("Wrong user name or password."),
            "{}",
            r.body
        );
    }
    // An unknown user gets the very same answer.
    let unknown = s.try_login("mallory", "wrong password!");
    assert_eq!(
        unknown.status, 429,
        "the fifth failure from this address locks it"
    );
    // Locked: the right password does not help, for either user.
    for user in ["olga", "vera"] {
        let r = s.try_login(user, PASSWORD);
        assert_eq!(r.status, 429, "{user}: {}", r.body);
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(after > 0 && after <= 15 * 60, "{after}");
    }
    // The agent's clock moves past the lock: in again.
    set_clock(&s.w, "2026-03-01T10:16:00Z");
    s.login("olga");
    // Five failures for one user from wherever: that user is locked.
    for _ in 0..5 {
        s.try_login("vera", "still wrong!!");
    }
    assert_eq!(s.try_login("vera", PASSWORD).status, 429);
    drop(s.agent);
}

#[test]
fn proxy_authentication_only_from_the_proxy() {
    // The proxy is elsewhere: a header from 127.0.0.1 is not believed.
    let s = Setup::start(
        "auth = \"proxy\"\nproxy_addresses = [\"192.0.2.10\"]\noperators = [\"olga\"]\n",
        &[],
    );
    let r = http(s.console, "GET", "/", &[("X-Forwarded-User", "olga")], "");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("reverse proxy"), "{}", r.body);
    drop(s);
    // The proxy is here: its header names the user and the role.
    let s = Setup::start(
        "auth = \"proxy\"\nproxy_addresses = [\"127.0.0.1\"]\noperators = [\"olga\"]\n",
        &[],
    );
    assert_eq!(http(s.console, "GET", "/", &[], "").status, 401);
    let r = http(
        s.console,
        "GET",
        "/apps/web",
        &[("X-Forwarded-User", "olga")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"actions\""), "{}", r.body);
    let r = http(
        s.console,
        "GET",
        "/apps/web",
        &[("X-Forwarded-User", "vera")],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains("id=\"actions\""),
        "a proxy user not in operators only reads"
    );
    // An operator's action through the proxy still needs the CSRF token.
    let page = http(
        s.console,
        "GET",
        "/apps/web/confirm?action=hold",
        &[("X-Forwarded-User", "olga")],
        "",
    );
    let h = [("X-Forwarded-User", "olga")];
    let r = http(
        s.console,
        "POST",
        "/apps/web/actions",
        &h,
        &form(&[("action", "hold"), ("reason", "r")]),
    );
    assert_eq!(r.status, 403);
    let r = http(
        s.console,
        "POST",
        "/apps/web/actions",
        &h,
        &form(&[
            ("action", "hold"),
            ("reason", "via proxy"),
            ("csrf", &page.csrf()),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.w.json(&["status", "web"])["hold"]["by"], "console:olga");
    // Over TLS at the proxy, cookies would be Secure; no login page here.
    assert_eq!(http(s.console, "GET", "/login", &[], "").status, 404);
}

#[test]
fn hook_output_secrets_do_not_reach_the_pages() {
    let (w, console) = world("", &[("olga", "operator")]);
    // The warm hook prints secrets, as hooks do.
    let cfg = std::fs::read_to_string(&w.config).unwrap().replacen(
        "keep_releases = 3\n",
        "keep_releases = 3\nhooks.warm = 'echo DB_PASSWORD=hunter2hunter2; echo \"using token ghp_abcdefghijklmnopqrstuvwxyz0123456789\"; echo warm done'\n",
        1,
    );
    std::fs::write(&w.config, cfg).unwrap();
    w.simple_release("1.0.0");
    let s = Setup {
        agent: Agent::start(&w),
        w,
        console,
    };
    // Deployed from the console, through the app's task, as olga.
    let c = s.login("olga");
    let confirm = s.get("/apps/web/confirm?action=deploy&version=1.0.0", Some(&c));
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains("name=\"live\" value=\"\""),
        "{}",
        confirm.body
    );
    let r = s.post(
        "/apps/web/actions",
        Some(&c),
        &[
            ("csrf", &confirm.csrf()),
            ("action", "deploy"),
            ("version", "1.0.0"),
            ("live", ""),
            ("reason", "first release"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("1.0.0 is live"), "{}", r.body);
    let h = s.w.ok(&["history", "web"]);
    assert!(
        h.lines()
            .any(|l| l.contains("1.0.0") && l.contains("console:olga")),
        "{h}"
    );
    // The reason typed on the confirmation page is in the audit log.
    assert!(h.contains("reason: first release"), "{h}");
    let page = s.get("/apps/web", Some(&c)).body;
    assert!(page.contains("<td>first release</td>"), "{page}");
    let page = s.get("/apps/web", Some(&c)).body;
    assert!(
        page.contains("warm done"),
        "the hook's output is shown: {page}"
    );
    assert!(page.contains("[REDACTED:"), "{page}");
    let logs_link = page
        .split("href=\"/apps/web/logs/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a hook logs link")
        .to_string();
    let logs = s.get(&format!("/apps/web/logs/{logs_link}"), Some(&c)).body;
    assert!(logs.contains("warm done"), "{logs}");
    let events = sse_first_event(s.console, &c);
    assert!(events.contains("warm done"), "{events}");
    for text in [&page, &logs, &events] {
        assert!(!text.contains("hunter2hunter2"), "{text}");
        assert!(
            !text.contains("ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            "{text}"
        );
    }
    // The raw log still has it: the console redacts, the log is the record.
    let raw = std::fs::read_to_string(
        s.w.root
            .join(format!(".switchyard/logs/{logs_link}/warm.log")),
    )
    .unwrap();
    assert!(raw.contains("hunter2hunter2"), "{raw}");
    // The overview shows the live release.
    let o = s.get("/", Some(&c)).body;
    assert!(o.contains("<td data-field=\"live\">1.0.0</td>"), "{o}");
    // A major upgrade needs its box ticked; what the page showed live is
    // checked against what is live when the action runs.
    s.w.simple_release("2.0.0");
    let deploy = |live: &str, major: &str| {
        let confirm = s.get("/apps/web/confirm?action=deploy&version=2.0.0", Some(&c));
        assert!(
            confirm.body.contains("id=\"confirm-allow-major\""),
            "{}",
            confirm.body
        );
        s.post(
            "/apps/web/actions",
            Some(&c),
            &[
                ("csrf", &confirm.csrf()),
                ("action", "deploy"),
                ("version", "2.0.0"),
                ("live", live),
                ("allow_major", major),
                ("reason", "major"),
            ],
        )
    };
    let r = deploy("1.0.0", "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("major"), "{}", r.body);
    let r = deploy("0.9.0", "yes");
    assert_eq!(
        r.status, 409,
        "the live release is not what the page showed: {}",
        r.body
    );
    let r = deploy("1.0.0", "yes");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("2.0.0 is live"), "{}", r.body);
}

/// The first Server-Sent Event of `/apps/web/events`.
fn sse_first_event(port: u16, session: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /apps/web/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: switchyard_session={session}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\n\n")
        || !String::from_utf8_lossy(&got).contains("data:")
    {
        let n = s.read(&mut buf).expect("an event within 10 s");
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{text}"
    );
    assert!(text.contains("event: progress"), "{text}");
    text
}

#[test]
fn no_console_without_its_table_and_never_on_the_webhook_port() {
    // Configured: the console answers on its port, the webhook port has no console.
    let s = Setup::start("", &[("olga", "operator")]);
    assert_eq!(s.get("/login", None).status, 200);
    assert_ne!(s.console, s.agent.port);
    assert_eq!(s.agent.get("/login").0, 404);
    assert_eq!(s.agent.get("/").0, 404);
    drop(s);
    // Not configured: nothing listens on the port it would have had.
    let (w, console) = world("", &[]);
    let text = std::fs::read_to_string(&w.config).unwrap();
    let cut = text.find("\n[console]").unwrap();
    std::fs::write(&w.config, &text[..cut]).unwrap();
    let a = Agent::start(&w);
    assert!(!a.log().contains("console ready"), "{}", a.log());
    assert!(std::net::TcpStream::connect(("127.0.0.1", console)).is_err());
    assert_eq!(a.get("/login").0, 404);
    // And config check refuses the console on the webhook's port.
    let port = a.port;
    drop(a);
    std::fs::write(
        &w.config,
        format!(
            "{}\n[console]\nlisten = \"127.0.0.1:{port}\"\nusers_file = \"/nonexistent\"\n",
            &text[..cut]
        ),
    )
    .unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_ne!(code, 0, "{out}{err}");
    let err = format!("{out}{err}");
    let line = text[..cut].lines().count() + 3;
    assert!(
        err.contains(&format!("{}:{line}:", w.config.display()))
            && err.contains("is [agent] listen's"),
        "{err}"
    );
}

#[test]
fn add_user_writes_an_argon2id_hash_only_root_reads() {
    let (w, _) = world("", &[]);
    let file = w.tmp.path().join("console-users");
    add_user(&w, "olga", "operator", PASSWORD)
        .success()
        .stdout(predicates::str::contains(
            "added console user olga (operator)",
        ));
    add_user(&w, "vera", "viewer", PASSWORD).success();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("olga:operator:$argon2id$v=19$")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("vera:viewer:$argon2id$v=19$")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    // Two users with one password: two different salts, two hashes.
    let hashes: Vec<&str> = text.lines().filter_map(|l| l.rsplit(':').next()).collect();
    assert_ne!(hashes[1], hashes[2], "{text}");
    // Replacing a user's password keeps one line for them.
    add_user(&w, "vera", "operator", "another long password")
        .success()
        .stdout(predicates::str::contains("updated"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("vera:")).count(),
        1,
        "{text}"
    );
    // Refusals: a short password, a bad name, an unknown role.
    add_user(&w, "carl", "viewer", "short").code(2);
    add_user(&w, "a:b", "viewer", PASSWORD).code(2);
    add_user(&w, "carl", "admin", PASSWORD).code(2);
    // config check: fine at 0600, refused (located) once others may read it.
    w.ok(&["config", "check"]);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_ne!(code, 0);
    let err = format!("{out}{err}");
    assert!(
        err.contains("console.users_file") && err.contains("chmod 0600"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:", w.config.display())), "{err}");
    // And a console whose users file is missing names the command that writes it.
    std::fs::remove_file(&file).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_ne!(code, 0);
    let err = format!("{out}{err}");
    assert!(err.contains("switchyard console add-user"), "{err}");
}

#[test]
fn cookies_are_secure_when_the_proxy_says_tls() {
    let s = Setup::start(
        "proxy_addresses = [\"127.0.0.1\"]\n",
        &[("olga", "operator")],
    );
    let page = http(
        s.console,
        "GET",
        "/login",
        &[("X-Forwarded-Proto", "https")],
        "",
    );
    let token = page.set_cookie("switchyard_login").unwrap();
    let cookie = format!("switchyard_login={token}");
    let r = http(
        s.console,
        "POST",
        "/login",
        &[("Cookie", &cookie), ("X-Forwarded-Proto", "https")],
        &form(&[
            ("user", "olga"),
            ("password", PASSWORD),
            ("csrf", &page.csrf()),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let sc = r.header("set-cookie").unwrap();
    assert!(sc.contains("; Secure") && sc.contains("HttpOnly"), "{sc}");
    // A login form without its double-submit cookie is refused.
    let r = http(
        s.console,
        "POST",
        "/login",
        &[],
        &form(&[
            ("user", "olga"),
            ("password", PASSWORD),
            ("csrf", &page.csrf()),
        ]),
    );
    assert_eq!(r.status, 403, "{}", r.body);
}
