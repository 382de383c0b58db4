//! Zero downtime, shown under load (issue 7): a real nginx serves
//! `root/current/public` with the configuration operators copy
//! (`examples/nginx.conf`), wrk drives it for the whole run, and meanwhile the
//! real binary promotes and reverts 200 times between two releases. Every
//! response must be a 2xx carrying one of the two releases' content, with no
//! socket errors.
//!
//! Needs `nginx` and `wrk` (`apt-get install nginx wrk`, as `.ci/run` does):
//! without them the test is skipped with a `SKIP` line, or fails under
//! `CI=true` (see `crate::common::skip`).
#![allow(clippy::disallowed_methods)]

use crate::common::{World, require_tool};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CYCLES: usize = 200;
const BODY_1_0: &str = "release 1.0.0\n";
const BODY_1_1: &str = "release 1.1.0\n";
/// wrk: two threads, sixteen connections.
const WRK_THREADS: &str = "2";
const WRK_CONNECTIONS: usize = 16;
/// Long enough to outlast the cycles by far: wrk is stopped with SIGINT
/// once they are done, so this is only a ceiling.
const WRK_MAX_DURATION: &str = "300s";
/// A request still unanswered after this counts as a socket error (timeout).
const WRK_TIMEOUT: &str = "10s";
/// The least number of requests the run must see for it to mean anything.
const MIN_REQUESTS: u64 = 1000;

#[test]
fn promote_revert_under_load_serves_every_request() {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx.conf");
    let example = std::fs::read_to_string(&example_path)
        .unwrap_or_else(|e| panic!("{}: {e}", example_path.display()));
    // What makes swaps invisible, and what operators must not lose.
    for needle in [
        "root /srv/web/current/public;",
        "open_file_cache off;",
        "if (-f /srv/web/shared/maintenance.json)",
        "fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;",
        "fastcgi_param DOCUMENT_ROOT $realpath_root;",
        "releases-layout.md",
    ] {
        assert!(
            example.contains(needle),
            "examples/nginx.conf lost `{needle}`"
        );
    }
    assert!(
        !example
            .lines()
            .any(|l| l.trim_start().starts_with("disable_symlinks")),
        "examples/nginx.conf must leave disable_symlinks off: `current` is a symlink"
    );

    let Some(nginx_bin) = require_tool("nginx") else {
        return;
    };
    let Some(wrk_bin) = require_tool("wrk") else {
        return;
    };

    let w = World::new();
    for tag in ["v1.0.0", "v1.1.0"] {
        let v = tag.trim_start_matches('v');
        w.release(
            tag,
            &[
                // Two top-level entries: a lone public/ would be stripped.
                ("VERSION", &format!("{v}\n")),
                ("public/index.html", &format!("release {v}\n")),
                ("public/maintenance.html", &format!("maintenance {v}\n")),
            ],
        );
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["install", "web", "1.1.0"]);
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));

    let dir = w.tmp.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let nginx = Nginx::start(&nginx_bin, &dir, &example, &w.root);
    let port = nginx.port;
    let (status, _, body) = http_get(port, "/", "").unwrap();
    assert_eq!((status, body.as_str()), (200, BODY_1_0));

    // Load for the whole run.
    let script = dir.join("record.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let wrk_out = dir.join("wrk.out");
    let mut wrk = Reaper(
        Command::new(&wrk_bin)
            .args(["-t", WRK_THREADS, "-c"])
            .arg(WRK_CONNECTIONS.to_string())
            .args(["-d", WRK_MAX_DURATION, "--timeout", WRK_TIMEOUT, "-s"])
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}/"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&wrk_out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", wrk_bin.display())),
    );
    // Let every connection get going before the first swap.
    std::thread::sleep(Duration::from_millis(500));

    let cycles_started = Instant::now();
    for i in 0..CYCLES {
        w.ok(&["promote", "web", "1.1.0"]);
        assert_eq!(
            w.link("current").as_deref(),
            Some("releases/1.1.0"),
            "cycle {i}: promote"
        );
        w.ok(&["revert", "web"]);
        assert_eq!(
            w.link("current").as_deref(),
            Some("releases/1.0.0"),
            "cycle {i}: revert"
        );
    }
    let cycles_took = cycles_started.elapsed();
    std::thread::sleep(Duration::from_millis(300));

    assert!(
        wrk.0.try_wait().unwrap().is_none(),
        "wrk stopped before the {CYCLES} cycles were done: they did not all run under load"
    );
    // On SIGINT wrk stops, prints its summary and runs the script's done().
    kill(Pid::from_raw(wrk.0.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_timeout(&mut wrk.0, Duration::from_secs(20))
        .expect("wrk did not stop within 20 s of SIGINT");
    let mut wrk_err = String::new();
    if let Some(mut e) = wrk.0.stderr.take() {
        e.read_to_string(&mut wrk_err).unwrap();
    }
    let text = std::fs::read_to_string(&wrk_out).unwrap();
    assert!(
        status.success(),
        "wrk failed ({status}):\n{text}\n{wrk_err}"
    );
    let r = WrkReport::parse(&text);

    // Server side: nginx's own account, written for every request it served.
    std::thread::sleep(Duration::from_millis(200));
    let access = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let mut logged: BTreeMap<u16, u64> = BTreeMap::new();
    for line in access.lines() {
        let code = line.split(' ').next().unwrap().parse().unwrap();
        *logged.entry(code).or_default() += 1;
    }
    let error_log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let errors: Vec<&str> = error_log
        .lines()
        .filter(|l| {
            ["[error]", "[crit]", "[alert]", "[emerg]"]
                .iter()
                .any(|s| l.contains(s))
        })
        .collect();

    let mut bodies: Vec<String> = r.bodies.keys().cloned().collect();
    bodies.sort();
    let socket_errors = r.connect + r.read + r.write + r.timeout;
    println!(
        "zero-downtime: {} requests, {} non-2xx, {} socket errors, {CYCLES} cycles, bodies seen: {bodies:?}",
        r.requests, r.non2xx, socket_errors
    );
    println!(
        "zero-downtime: {:.1} s of cycles ({:.0} ms per promote+revert), {:.0} requests/s; per body {:?}; statuses {:?}; nginx logged {:?}",
        cycles_took.as_secs_f64(),
        cycles_took.as_secs_f64() * 1000.0 / CYCLES as f64,
        r.requests as f64 / r.seconds.max(0.001),
        r.bodies,
        r.statuses,
        logged
    );

    let context = format!("wrk output:\n{text}\n{wrk_err}");
    assert_eq!(r.non2xx, 0, "non-2xx responses; {context}");
    assert_eq!(
        r.summary_non2xx3xx, 0,
        "wrk: Non-2xx or 3xx responses; {context}"
    );
    assert_eq!(
        (r.connect, r.read, r.write, r.timeout, r.status_errors),
        (0, 0, 0, 0, 0),
        "socket errors (connect, read, write, timeout) or status errors; {context}"
    );
    assert_eq!(r.summary_socket_errors, 0, "wrk: Socket errors; {context}");
    for b in &bodies {
        assert!(
            b == BODY_1_0 || b == BODY_1_1,
            "a response carried neither release's content: {b:?}; {context}"
        );
    }
    assert_eq!(
        r.bodies.values().sum::<u64>(),
        r.requests,
        "every completed request must have gone through the script; {context}"
    );
    assert_eq!(r.responses, r.requests, "{context}");
    assert!(
        r.requests >= MIN_REQUESTS,
        "only {} requests: too few to show anything; {context}",
        r.requests
    );
    assert!(
        r.bodies.contains_key(BODY_1_0) && r.bodies.contains_key(BODY_1_1),
        "both releases must have been served during the run; {context}"
    );
    // wrk closing its connections at SIGINT can make nginx log 499 for a
    // request it never finished; anything else but 200 is a failure.
    let closed = logged.get(&499).copied().unwrap_or(0);
    assert!(
        closed <= WRK_CONNECTIONS as u64,
        "nginx logged {closed} requests closed by the client: {logged:?}"
    );
    assert!(
        logged.keys().all(|&c| c == 200 || c == 499),
        "nginx logged non-200 answers: {logged:?}"
    );
    assert!(
        logged.get(&200).copied().unwrap_or(0) >= r.requests,
        "nginx logged fewer requests than wrk counted: {logged:?} < {}",
        r.requests
    );
    assert!(errors.is_empty(), "nginx error log:\n{}", errors.join("\n"));

    // Every release's files carry the archive's fixed mtime, so validators
    // would match across releases: the example turns them off, and a
    // browser revalidating gets the full, current file, never a 304.
    let (status, head, body) = http_get(
        port,
        "/",
        "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\nIf-None-Match: \"386d4380-e\"\r\n",
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (200, BODY_1_0), "{head}");
    let head_lc = head.to_ascii_lowercase();
    assert!(!head_lc.contains("\r\netag:"), "{head}");
    assert!(!head_lc.contains("\r\nlast-modified:"), "{head}");
    assert!(head_lc.contains("\r\ncache-control: no-cache"), "{head}");

    // The maintenance flag: 503 with the release's maintenance page while
    // it exists, the flag itself readable, and back to normal without it.
    w.ok(&["maintenance", "on", "web"]);
    let (status, _, body) = http_get(port, "/", "").unwrap();
    assert_eq!((status, body.as_str()), (503, "maintenance 1.0.0\n"));
    let (status, _, body) = http_get(port, "/maintenance.json", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    w.ok(&["maintenance", "off", "web"]);
    let (status, _, body) = http_get(port, "/", "").unwrap();
    assert_eq!((status, body.as_str()), (200, BODY_1_0));

    drop(nginx);
    w.assert_consistent();
    w.assert_no_debris();
    w.ok(&["audit", "verify", "web"]);
}

/// The wrk script. Each wrk thread runs its own Lua state, so the
/// `response` hook counts per thread; `done` (in the main state) gathers
/// every thread's tables through `thread:get` and prints machine-readable
/// lines. Bodies are hex-encoded.
const WRK_SCRIPT: &str = r#"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

responses = 0
statuses = {}
bodies = {}

function response(status, headers, body)
  responses = responses + 1
  statuses[status] = (statuses[status] or 0) + 1
  bodies[body] = (bodies[body] or 0) + 1
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function done(summary, latency, requests)
  local total, all_statuses, all_bodies = 0, {}, {}
  for _, t in ipairs(threads) do
    total = total + t:get("responses")
    for k, v in pairs(t:get("statuses")) do
      all_statuses[k] = (all_statuses[k] or 0) + v
    end
    for k, v in pairs(t:get("bodies")) do
      all_bodies[k] = (all_bodies[k] or 0) + v
    end
  end
  local non2xx = 0
  for k, v in pairs(all_statuses) do
    io.write(string.format("STATUS %d %d\n", k, v))
    if k < 200 or k > 299 then
      non2xx = non2xx + v
    end
  end
  for k, v in pairs(all_bodies) do
    io.write(string.format("BODY %d %s\n", v, hex(k)))
  end
  io.write(string.format("RESPONSES %d\n", total))
  io.write(string.format("NON2XX %d\n", non2xx))
  io.write(string.format("REQUESTS %d\n", summary.requests))
  io.write(string.format("SECONDS %.3f\n", summary.duration / 1e6))
  local e = summary.errors
  io.write(string.format("ERRORS %d %d %d %d %d\n", e.connect, e.read, e.write, e.timeout, e.status))
end
"#;

/// What wrk and the script reported.
#[derive(Debug, Default)]
struct WrkReport {
    requests: u64,
    responses: u64,
    seconds: f64,
    non2xx: u64,
    statuses: BTreeMap<u16, u64>,
    bodies: BTreeMap<String, u64>,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    status_errors: u64,
    /// wrk's own summary lines, present only when non-zero.
    summary_socket_errors: u64,
    summary_non2xx3xx: u64,
}

impl WrkReport {
    fn parse(text: &str) -> WrkReport {
        let mut r = WrkReport::default();
        let mut seen_done = false;
        let num = |s: &str| -> u64 {
            s.trim()
                .trim_end_matches(',')
                .parse()
                .unwrap_or_else(|e| panic!("wrk output: {s:?}: {e}\n{text}"))
        };
        for line in text.lines() {
            let t = line.trim();
            let f: Vec<&str> = t.split(' ').collect();
            match f[0] {
                "STATUS" => {
                    r.statuses.insert(num(f[1]) as u16, num(f[2]));
                }
                "BODY" => {
                    let body = hex::decode(f.get(2).copied().unwrap_or(""))
                        .unwrap_or_else(|e| panic!("wrk output: {t}: {e}"));
                    r.bodies
                        .insert(String::from_utf8_lossy(&body).into_owned(), num(f[1]));
                }
                "RESPONSES" => r.responses = num(f[1]),
                "NON2XX" => r.non2xx = num(f[1]),
                "REQUESTS" => {
                    r.requests = num(f[1]);
                    seen_done = true;
                }
                "SECONDS" => r.seconds = f[1].parse().unwrap(),
                "ERRORS" => {
                    r.connect = num(f[1]);
                    r.read = num(f[2]);
                    r.write = num(f[3]);
                    r.timeout = num(f[4]);
                    r.status_errors = num(f[5]);
                }
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                "Socket" => {
                    r.summary_socket_errors = num(f[3]) + num(f[5]) + num(f[7]) + num(f[9]);
                }
                // "Non-2xx or 3xx responses: 12"
                "Non-2xx" => r.summary_non2xx3xx = num(f[4]),
                _ => {}
            }
        }
        assert!(seen_done, "the script's done() did not run:\n{text}");
        r
    }
}

/// Kills the child, if still running, when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An unprivileged nginx (a child of the test, everything in `dir`),
/// stopped when dropped.
struct Nginx {
    child: Option<Child>,
    port: u16,
}

impl Nginx {
    /// Runs the server block of `examples/nginx.conf` with `/srv/web`
    /// replaced by `root` and its `listen` lines by a free local port.
    fn start(bin: &Path, dir: &Path, example: &str, root: &Path) -> Nginx {
        let mut last = String::new();
        // A port picked free can be taken before nginx binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(dir.join("site.conf"), site_config(example, root, port)).unwrap();
            std::fs::write(dir.join("nginx.conf"), main_config(dir)).unwrap();
            let _ = std::fs::remove_file(dir.join("error.log"));
            let child = Command::new(bin)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("nginx.stdout")).unwrap())
                .stderr(std::fs::File::create(dir.join("nginx.stderr")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
            let mut n = Nginx {
                child: Some(child),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let answer = http_get(port, "/", "");
                if let Ok((200, _, _)) = answer {
                    return n;
                }
                let exited = n.child.as_mut().unwrap().try_wait().unwrap();
                if exited.is_some() || Instant::now() >= deadline {
                    last = format!(
                        "nginx {}: {exited:?}, last answer {answer:?}\n{}{}",
                        if exited.is_some() {
                            "exited"
                        } else {
                            "did not answer within 15 s"
                        },
                        std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default(),
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(n);
            if !last.contains("Address already in use") {
                break;
            }
        }
        panic!(
            "{last}\nsite.conf:\n{}",
            std::fs::read_to_string(dir.join("site.conf")).unwrap()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: the master stops its worker and exits (a SIGKILL to the
        // master alone would leave the worker serving).
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator's server block, pointed at the test's root and port.
fn site_config(example: &str, root: &Path, port: u16) -> String {
    let root = root.to_str().unwrap();
    let mut out = String::new();
    let mut listen = false;
    for line in example.lines() {
        if line.trim_start().starts_with("listen ") {
            if !listen {
                writeln!(out, "    listen 127.0.0.1:{port};").unwrap();
                listen = true;
            }
            continue;
        }
        writeln!(out, "{}", line.replace("/srv/web", root)).unwrap();
    }
    assert!(listen, "examples/nginx.conf has no listen line");
    out
}

/// Everything nginx writes goes to `dir`; as root, the worker stays root
/// (there is nobody to switch to in a test), otherwise `user` is omitted.
fn main_config(dir: &Path) -> String {
    let d = dir.to_str().unwrap();
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    types {{
        text/html html;
        application/json json;
    }}
    default_type application/octet-stream;
    log_format status '$status $body_bytes_sent';
    access_log {d}/access.log status;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    include {d}/site.conf;
}}
"
    )
}

/// One HTTP/1.0 GET: (status, head, body).
fn http_get(port: u16, path: &str, headers: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let bad = || std::io::Error::other(format!("bad HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, head.to_string(), body.to_string()))
}
