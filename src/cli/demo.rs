//! `switchyard demo`: the whole pipeline on a tiny app, locally, with no
//! network. It builds two versions into a release folder, writes a config,
//! then installs, promotes, deploys and reverts, printing each step and the
//! resulting layout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A line of the demo's story on stdout (see [`crate::cli::out`]: a closed
/// pipe ends the demo quietly).
macro_rules! say {
    () => { say_raw!("\n") };
    ($($a:tt)*) => { say_raw!("{}\n", format!($($a)*)) };
}

/// Text on stdout, without a newline.
macro_rules! say_raw {
    ($($a:tt)*) => {
        // Only a demo: a closed pipe ends it (inside `out`), other output
        // errors are not worth stopping it for.
        { let _ = crate::cli::out(&format!($($a)*), true); }
    };
}

use anyhow::Context;

use crate::config::Config;
use crate::fs;
use crate::ops::api::{self, Caller, Outcome, Request};
use crate::source::LocalDirSource;
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::version::{Version, VersionRequest};

fn step(n: &mut u32, title: &str) {
    *n += 1;
    say!("\n==> {n}. {title}");
}

fn build_app(dir: &Path, version: &str) -> anyhow::Result<()> {
    fs::create_dir_all(&dir.join("public"))?;
    fs::write_atomic(
        &dir.join("public/index.html"),
        format!("<h1>demo app {version}</h1>\n").as_bytes(),
    )?;
    fs::write_atomic(&dir.join("VERSION"), format!("{version}\n").as_bytes())?;
    Ok(())
}

/// Renders the app root: the two links, the releases and shared paths.
pub(crate) fn render_layout(root: &Path) -> anyhow::Result<String> {
    let paths = AppPaths::new(root);
    let mut s = String::new();
    writeln!(s, "   {}/", root.display())?;
    for link in [paths.current(), paths.last_good()] {
        let name = link.file_name().unwrap_or_default().to_string_lossy();
        match fs::read_link(&link)? {
            Some(t) => writeln!(s, "   ├── {name} -> {}", t.display())?,
            None => writeln!(s, "   ├── {name} (not set)")?,
        }
    }
    writeln!(s, "   ├── releases/")?;
    for v in paths.installed()? {
        let ver = fs::read_to_string(&paths.release(&v).join("VERSION")).unwrap_or_default();
        writeln!(s, "   │   ├── {v}/  (VERSION: {})", ver.trim())?;
    }
    writeln!(s, "   ├── shared/")?;
    writeln!(
        s,
        "   └── .switchyard/  (lock, journal, state, audit log, manifests)"
    )?;
    Ok(s)
}

/// A plain HTTP GET (the demo has no client of its own to show).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return "(no answer)".into();
    };
    let _ = write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.lines().next().unwrap_or("").to_string();
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    format!("{status} | {body}")
}

/// Runs the demo in `dir` (kept) or in a temporary directory (removed).
pub(crate) fn run(dir: Option<&Path>) -> anyhow::Result<()> {
    let tmp;
    let base: PathBuf = match dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            d.canonicalize()
                .with_context(|| format!("resolve {}", d.display()))?
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("switchyard-demo-")
                .tempdir()
                .context("create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let drop_dir = base.join("drop");
    let root = base.join("app");
    let build = base.join("build");
    let mut n = 0;
    say!("Switchyard demo in {}", base.display());

    step(&mut n, "generate a signing key (switchyard keygen)");
    let (pk, sk, key_id) = crate::verify::trust::keygen(&base.join("keys"), None)?;
    let public = fs::read_to_string(&pk)?
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    say!("   key id {key_id}; public key {}", pk.display());

    step(
        &mut n,
        "build four versions of a tiny app, pack and sign them",
    );
    let signing = crate::cli::pack::Signing {
        key: sk.clone(),
        password: None,
        repo: Some("acme/demo".into()),
    };
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
        let src = build.join(format!("demo-{v}"));
        build_app(&src, v)?;
        if v == "1.3.0" {
            // This release passes every check before the swap, then fails
            // its live health check.
            fs::write_atomic(
                &src.join("BROKEN"),
                b"this release answers 500 on /health\n",
            )?;
        }
        let p = crate::cli::pack::pack_signed(
            &src,
            &format!("v{v}"),
            &drop_dir,
            Some("demo-{version}.tar.gz"),
            Some(&signing),
        )?;
        say!(
            "   packed {} sha256 {}..., signed the asset and SHA256SUMS",
            p.asset.display(),
            &p.sha256[..16]
        );
    }

    step(
        &mut n,
        "start the app (a tiny HTTP server serving root/current) and write the configuration",
    );
    let app_server = app::DemoApp::start(&root)?;
    fs::create_dir_all(&root.join("shared/data"))?;
    fs::write_atomic(&root.join("shared/data/db.txt"), b"users table\n")?;
    let cfg_path = base.join("switchyard.toml");
    let cfg_text = format!(
        r#"[apps.demo]
root = "{root}"
keep_releases = 3

[apps.demo.source]
dir = "{drop}"

[apps.demo.shared]
dirs = ["storage", "data"]

[apps.demo.trust]
keys = ["{public}"]

[apps.demo.hooks]
backup = 'cp "$SWITCHYARD_ROOT/shared/data/db.txt" "$SWITCHYARD_BACKUP_FILE"'
migrate = 'echo "column added by $SWITCHYARD_VERSION" >> "$SWITCHYARD_ROOT/shared/data/db.txt"'
restore = 'cp "$SWITCHYARD_BACKUP_FILE" "$SWITCHYARD_ROOT/shared/data/db.txt"'
activate = 'touch "$SWITCHYARD_ROOT/shared/.reload"'

[apps.demo.health.live]
retries = 2
interval = "100ms"
deadline = "10s"
expect_version = "body"

[[apps.demo.health.live.checks]]
kind = "http"
url = "{url}/health"
"#,
        root = root.display(),
        drop = drop_dir.display(),
        url = app_server.url(),
    );
    fs::write_atomic(&cfg_path, cfg_text.as_bytes())?;
    say_raw!("{}", indent(&cfg_text));
    let cfg = Config::load(&cfg_path)?;
    let app = cfg.app("demo")?;
    let caller = Caller::operator(Actor::current_user(), false);
    let source = LocalDirSource::new(&drop_dir);
    let op = |req: Request| api::execute(app, &source, &req, &caller);
    let deploy_v = |v: &str| -> anyhow::Result<_> {
        Ok(op(Request::Deploy {
            app: "demo".into(),
            version: VersionRequest::Exact(Version::parse(v)?),
            allow_downgrade: false,
            allow_major: false,
            force: false,
            seen: None,
            reason: None,
        }))
    };
    let db = || fs::read_to_string(&root.join("shared/data/db.txt")).unwrap_or_default();

    step(
        &mut n,
        "deploy 1.0.0: verify while streaming, back up, migrate, swap, activate, check health",
    );
    deploy_v("1.0.0")??;
    say_raw!("{}", render_layout(&root)?);
    say!(
        "   GET /health -> {}",
        http_get(&format!("{}/health", app_server.url()))
    );

    step(
        &mut n,
        "tamper with 1.2.0 (one flipped byte) and try to install it",
    );
    {
        let asset = drop_dir.join("v1.2.0/demo-1.2.0.tar.gz");
        let mut bytes = fs::read(&asset)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write_atomic(&asset, &bytes)?;
        match op(Request::Install {
            app: "demo".into(),
            version: VersionRequest::Exact(Version::parse("1.2.0")?),
            allow_downgrade: false,
        }) {
            Ok(_) => anyhow::bail!("the tampered release was accepted"),
            Err(e) => say!(
                "   refused, nothing installed:\n   {:#}",
                anyhow::Error::from(e)
            ),
        }
        fs::remove_dir_all(&drop_dir.join("v1.2.0"))?;
    }

    step(&mut n, "deploy 1.1.0");
    deploy_v("1.1.0")??;
    say!(
        "   GET /health -> {}",
        http_get(&format!("{}/health", app_server.url()))
    );

    step(
        &mut n,
        "revert (current -> last-good, instantly), then promote 1.1.0 again",
    );
    {
        let Outcome::Switched(r) = op(Request::Revert {
            app: "demo".into(),
            to: None,
            seen: None,
            reason: None,
        })?
        else {
            anyhow::bail!("a revert that did not switch");
        };
        say!(
            "   current -> {} (was {})",
            r.to,
            r.from.map(|v| v.to_string()).unwrap_or_default()
        );
        say!(
            "   GET /health -> {}",
            http_get(&format!("{}/health", app_server.url()))
        );
        let Outcome::Switched(r) = op(Request::Promote {
            app: "demo".into(),
            version: Version::parse("1.1.0")?,
            force: false,
            allow_major: false,
            skip_lifecycle: false,
            seen: None,
            reason: None,
        })?
        else {
            anyhow::bail!("a promote that did not switch");
        };
        say!("   current -> {}", r.to);
    }
    say_raw!("{}", render_layout(&root)?);

    step(&mut n, "deploy 1.3.0, whose live health check fails");
    say!("   shared/data/db.txt before:\n{}", indent(&db()));
    match deploy_v("1.3.0")? {
        Ok(_) => anyhow::bail!("the broken release was kept live"),
        Err(e) => say!("   {:#}", anyhow::Error::from(e)),
    }
    say!(
        "   shared/data/db.txt after the automatic revert and restore:\n{}",
        indent(&db())
    );
    say!(
        "   GET /health -> {}",
        http_get(&format!("{}/health", app_server.url()))
    );
    say_raw!("{}", render_layout(&root)?);

    step(&mut n, "status and history (the audit log)");
    let status = op(Request::Status { app: "demo".into() })?;
    say_raw!(
        "{}",
        indent(&crate::cli::render::outcome("demo", &status, false))
    );
    for e in crate::store::history::read(&AppPaths::new(&root))? {
        say!(
            "   {}  {:<28} {:<8} {}",
            e.event.time,
            e.event.event,
            e.event.to.unwrap_or_default(),
            e.event.outcome
        );
    }
    let lines = crate::store::history::check_chain(&AppPaths::new(&root))?;
    say!("   audit chain verified: {lines} lines");
    drop(app_server);

    say!("\nDemo complete.");
    if dir.is_some() {
        say!(
            "Everything is kept in {}; try: switchyard --config {} status demo",
            base.display(),
            cfg_path.display()
        );
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}

/// A tiny app for the demo and the tests: an HTTP server on 127.0.0.1 that
/// serves the release it loaded from `root/current`, like a real process
/// would. It reloads only when `root/shared/.reload` appears (what an
/// `activate` hook such as `touch $SWITCHYARD_ROOT/shared/.reload` does), so
/// a release that was swapped in without activation keeps the old version
/// running, and `expect_version` catches it. A release holding a file named
/// `BROKEN` answers 500 on `/health`.
pub(crate) mod app {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// A running demo app; stops when dropped.
    pub struct DemoApp {
        /// The port it listens on.
        pub port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    struct Loaded {
        version: String,
        broken: bool,
    }

    fn load(root: &Path) -> Loaded {
        let cur = root.join("current");
        Loaded {
            version: crate::fs::read_to_string(&cur.join("VERSION"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "none".into()),
            broken: crate::fs::symlink_metadata(&cur.join("BROKEN"))
                .ok()
                .flatten()
                .is_some(),
        }
    }

    impl DemoApp {
        /// Starts serving `root/current` on a free port.
        pub fn start(root: impl Into<PathBuf>) -> std::io::Result<DemoApp> {
            let root = root.into();
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let port = listener.local_addr()?.port();
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = stop.clone();
            let state = Arc::new(Mutex::new(load(&root)));
            let thread = std::thread::spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = serve(s, &root, &state);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                    }
                }
            });
            Ok(DemoApp {
                port,
                stop,
                thread: Some(thread),
            })
        }

        /// `http://127.0.0.1:<port>`.
        pub fn url(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for DemoApp {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn serve(mut s: TcpStream, root: &Path, state: &Mutex<Loaded>) -> std::io::Result<()> {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let marker = root.join("shared/.reload");
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if crate::fs::symlink_metadata(&marker)
            .ok()
            .flatten()
            .is_some()
        {
            *st = load(root);
            let _ = crate::fs::remove_file(&marker);
        }
        let (code, body) = match path.as_str() {
            "/health" if st.broken => (
                "500 Internal Server Error",
                format!("broken {}\n", st.version),
            ),
            "/health" => ("200 OK", format!("ok {}\n", st.version)),
            _ => ("200 OK", format!("<h1>demo app {}</h1>\n", st.version)),
        };
        write!(
            s,
            "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nX-App-Version: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            st.version,
            body.len()
        )?;
        s.flush()
    }
}
