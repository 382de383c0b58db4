//! `switchyard demo`: the whole pipeline on a tiny app, locally, with no
//! network. It builds two versions into a release folder, writes a config,
//! then installs, promotes, deploys and reverts, printing each step and the
//! resulting layout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::deploy::{self, Session};
use crate::fs;
use crate::history::Actor;
use crate::layout::AppPaths;
use crate::source::LocalDirSource;
use crate::version::{Version, VersionRequest};

fn step(n: &mut u32, title: &str) {
    *n += 1;
    println!("\n==> {n}. {title}");
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
pub fn render_layout(root: &Path) -> anyhow::Result<String> {
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

/// Runs the demo in `dir` (kept) or in a temporary directory (removed).
pub fn run(dir: Option<&Path>) -> anyhow::Result<()> {
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
    println!("Switchyard demo in {}", base.display());

    step(&mut n, "generate a signing key (switchyard keygen)");
    let (pk, sk, key_id) = crate::trust::keygen(&base.join("keys"), None)?;
    let public = fs::read_to_string(&pk)?
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    println!("   key id {key_id}; public key {}", pk.display());

    step(
        &mut n,
        "build three versions of a tiny app, pack and sign them",
    );
    let signing = crate::pack::Signing {
        key: sk.clone(),
        password: None,
        repo: Some("acme/demo".into()),
    };
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        let src = build.join(format!("demo-{v}"));
        build_app(&src, v)?;
        let p = crate::pack::pack_signed(
            &src,
            &format!("v{v}"),
            &drop_dir,
            Some("demo-{version}.tar.gz"),
            Some(&signing),
        )?;
        println!(
            "   packed {} sha256 {}..., signed the asset and SHA256SUMS",
            p.asset.display(),
            &p.sha256[..16]
        );
    }

    step(&mut n, "write the configuration (the public key is pinned)");
    let cfg_path = base.join("switchyard.toml");
    let cfg_text = format!(
        "[apps.demo]\nroot = \"{}\"\nkeep_releases = 3\n\n[apps.demo.source]\ndir = \"{}\"\n\n[apps.demo.shared]\ndirs = [\"storage\"]\n\n[apps.demo.trust]\nkeys = [\"{public}\"]\n",
        root.display(),
        drop_dir.display()
    );
    fs::write_atomic(&cfg_path, cfg_text.as_bytes())?;
    print!("{}", indent(&cfg_text));
    let cfg = Config::load(&cfg_path)?;
    let app = cfg.app("demo")?;
    let actor = Actor::current_user();
    let source = LocalDirSource::new(&drop_dir);

    step(
        &mut n,
        "install 1.0.0 (stream once: SHA-256 and signature while unpacking)",
    );
    let v1 = Version::parse("1.0.0")?;
    {
        let s = Session::open(app, actor.clone(), "demo install", false)?;
        let r = s.install(
            &source,
            &VersionRequest::Exact(v1.clone()),
            Default::default(),
        )?;
        println!("   installed at {}", r.path.display());
    }

    step(&mut n, "promote 1.0.0 (atomic symlink swap)");
    {
        let s = Session::open(app, actor.clone(), "demo promote", false)?;
        s.promote(&v1)?;
    }
    print!("{}", render_layout(&root)?);

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
        let s = Session::open(app, actor.clone(), "demo install", false)?;
        match s.install(
            &source,
            &VersionRequest::Exact(Version::parse("1.2.0")?),
            Default::default(),
        ) {
            Ok(_) => anyhow::bail!("the tampered release was accepted"),
            Err(e) => println!("   refused, nothing installed:\n   {e}"),
        }
        fs::remove_dir_all(&drop_dir.join("v1.2.0"))?;
    }

    step(&mut n, "deploy latest (install 1.1.0, then promote)");
    {
        let s = Session::open(app, actor.clone(), "demo deploy", false)?;
        let r = s.install(&source, &VersionRequest::Latest, Default::default())?;
        s.promote(&r.version)?;
    }
    print!("{}", render_layout(&root)?);
    let live = fs::read_to_string(&root.join("current/public/index.html"))?;
    println!("   current/public/index.html: {}", live.trim());

    step(&mut n, "revert (current -> last-good, instantly)");
    {
        let s = Session::open(app, actor.clone(), "demo revert", false)?;
        let r = s.revert(None)?;
        println!(
            "   current -> {} (was {})",
            r.to,
            r.from.map(|v| v.to_string()).unwrap_or_default()
        );
    }
    print!("{}", render_layout(&root)?);
    let live = fs::read_to_string(&root.join("current/public/index.html"))?;
    println!("   current/public/index.html: {}", live.trim());

    step(&mut n, "status and history");
    print!(
        "{}",
        indent(&crate::cli::render_status(&deploy::status(app)?))
    );
    for e in crate::history::read(&AppPaths::new(&root))? {
        println!(
            "   {}  {:<28} {:<8} {}",
            e.event.time,
            e.event.event,
            e.event.to.unwrap_or_default(),
            e.event.outcome
        );
    }
    let lines = crate::history::verify(&AppPaths::new(&root))?;
    println!("   audit chain verified: {lines} lines");

    println!("\nDemo complete.");
    if dir.is_some() {
        println!(
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
