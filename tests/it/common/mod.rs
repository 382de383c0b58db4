//! Helpers shared by the integration tests: a temporary app root with a
//! config, release fixtures generated on the fly, hostile-archive builders,
//! and the on-disk invariant checker.
#![allow(dead_code, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use assert_cmd::Command;
use flate2::Compression;
use flate2::write::GzEncoder;

/// A temporary world: `drop/` (release folder), `root/` (app root),
/// `outside/` (must stay empty), and `switchyard.toml`.
pub(crate) struct World {
    pub tmp: tempfile::TempDir,
    pub drop_dir: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
    pub config: PathBuf,
    /// The signing key pair pinned in the config.
    pub secret_key: PathBuf,
    pub public_key: PathBuf,
    /// The public key's base64 line.
    pub public_b64: String,
    /// Extra TOML inside [apps.web], kept so the trust table can be rewritten.
    pub extra: std::cell::RefCell<String>,
}

impl World {
    pub(crate) fn new() -> World {
        Self::with_extra("")
    }

    /// `extra` is appended inside `[apps.web]` (before any sub-table).
    pub(crate) fn with_extra(extra: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let keys = base.join("keys");
        let (public_key, secret_key, _) = switchyard::testing::keygen(&keys, None).unwrap();
        let public_b64 = std::fs::read_to_string(&public_key)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        let w = World {
            drop_dir: base.join("drop"),
            root: base.join("root"),
            outside: base.join("outside"),
            config: base.join("switchyard.toml"),
            tmp,
            secret_key,
            public_key,
            public_b64,
            extra: std::cell::RefCell::new(String::new()),
        };
        std::fs::create_dir_all(&w.drop_dir).unwrap();
        std::fs::create_dir_all(&w.outside).unwrap();
        w.write_config(extra);
        w
    }

    /// Rewrites the config; `extra` goes inside [apps.web]. The trust table
    /// pins this world's key unless `trust` overrides it.
    pub(crate) fn write_config(&self, extra: &str) {
        self.write_config_with_trust(extra, &format!("keys = [\"{}\"]\n", self.public_b64));
    }

    pub(crate) fn write_config_with_trust(&self, extra: &str, trust: &str) {
        *self.extra.borrow_mut() = extra.to_string();
        let text = format!(
            "[apps.web]\nroot = \"{}\"\nkeep_releases = 3\n{extra}\n[apps.web.source]\ndir = \"{}\"\n\n[apps.web.shared]\ndirs = [\"storage\"]\n\n[apps.web.trust]\n{trust}",
            self.root.display(),
            self.drop_dir.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Accept unsigned releases (for tests about something else).
    pub(crate) fn allow_unsigned(&self) {
        let extra = self.extra.borrow().clone();
        self.write_config_with_trust(&extra, "require_signature = false\n");
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("switchyard").unwrap();
        c.arg("--config").arg(&self.config);
        c.env_remove("SWITCHYARD_CRASH_AT");
        c
    }

    /// Runs the binary and returns (exit code, stdout, stderr).
    pub(crate) fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and expects success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "switchyard {args:?} failed:\n{out}\n{err}");
        out
    }

    /// Runs with `--json` and parses stdout.
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
    }

    /// Packs a release of generated files into `drop/<tag>/`.
    pub(crate) fn release(&self, tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let src = self.tmp.path().join(format!("build-{tag}"));
        for (p, content) in files {
            let f = src.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        if files.is_empty() {
            std::fs::create_dir_all(&src).unwrap();
        }
        let signing = switchyard::testing::Signing {
            key: self.secret_key.clone(),
            password: None,
            repo: Some("acme/web".into()),
        };
        switchyard::testing::pack_signed(
            &src,
            tag,
            &self.drop_dir,
            Some("web-{version}.tar.gz"),
            Some(&signing),
        )
        .unwrap()
        .dir
    }

    /// A standard two-file release whose content names its version.
    pub(crate) fn simple_release(&self, tag: &str) -> PathBuf {
        let v = tag.trim_start_matches('v');
        self.release(
            tag,
            &[
                ("VERSION", &format!("{v}\n")),
                ("public/index.html", &format!("<h1>{v}</h1>\n")),
            ],
        )
    }

    /// Puts raw `.tar.gz` bytes as release `tag` with a matching SHA256SUMS,
    /// unsigned (the world is switched to accept unsigned releases).
    pub(crate) fn raw_release(&self, tag: &str, targz: &[u8]) -> PathBuf {
        self.allow_unsigned();
        let dir = self.drop_dir.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("web-{}.tar.gz", tag.trim_start_matches('v'));
        std::fs::write(dir.join(&name), targz).unwrap();
        std::fs::write(
            dir.join("SHA256SUMS"),
            format!("{}  {name}\n", switchyard::testing::sha256_hex(targz)),
        )
        .unwrap();
        dir
    }

    pub(crate) fn link(&self, name: &str) -> Option<String> {
        std::fs::read_link(self.root.join(name))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    pub(crate) fn current_content(&self) -> String {
        std::fs::read_to_string(self.root.join("current/VERSION")).unwrap()
    }

    /// Nothing may ever be written outside the app root and drop folder.
    pub(crate) fn assert_outside_untouched(&self) {
        let n = std::fs::read_dir(&self.outside).unwrap().count();
        assert_eq!(n, 0, "something was written outside the release directory");
    }

    /// The crash-consistency invariant: `current` and `last-good`, when
    /// present, are `releases/<v>` links to complete releases whose every
    /// file matches the manifest written at install.
    pub(crate) fn assert_consistent(&self) {
        for link in ["current", "last-good"] {
            let p = self.root.join(link);
            let Ok(t) = std::fs::read_link(&p) else {
                continue;
            };
            let t = t.to_string_lossy().into_owned();
            let v = t
                .strip_prefix("releases/")
                .unwrap_or_else(|| panic!("{link} -> {t} is not releases/<v>"));
            assert!(
                self.root.join(&t).is_dir(),
                "{link} -> {t} does not resolve to a directory"
            );
            check_against_manifest(&self.root, v);
        }
    }

    /// No staging folders, temporary names or journal left behind.
    pub(crate) fn assert_no_debris(&self) {
        let mut found = Vec::new();
        for dir in [
            self.root.join("releases"),
            self.root.clone(),
            self.root.join(".switchyard"),
        ] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                if n.starts_with(".staging-") || n.contains(".tmp-") {
                    found.push(dir.join(n));
                }
            }
        }
        assert!(found.is_empty(), "debris left: {found:?}");
        assert!(
            !self.root.join(".switchyard/journal.json").exists(),
            "journal left behind"
        );
    }
}

/// Checks `releases/<v>` against `.switchyard/manifests/<v>.json`.
pub(crate) fn check_against_manifest(root: &Path, v: &str) {
    use sha2::Digest;
    let meta_path = root.join(format!(".switchyard/manifests/{v}.json"));
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&meta_path).unwrap_or_else(|e| panic!("{}: {e}", meta_path.display())),
    )
    .unwrap();
    let rel = root.join("releases").join(v);
    for e in meta["entries"].as_array().unwrap() {
        let p = rel.join(e["path"].as_str().unwrap());
        match e["kind"].as_str().unwrap() {
            "file" => {
                let data = std::fs::read(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
                assert_eq!(
                    hex::encode(sha2::Sha256::digest(&data)),
                    e["sha256"].as_str().unwrap(),
                    "{} differs from its manifest",
                    p.display()
                );
            }
            "dir" => assert!(p.is_dir(), "{} missing", p.display()),
            _ => assert!(
                std::fs::symlink_metadata(&p).is_ok(),
                "{} missing",
                p.display()
            ),
        }
    }
}

/// Builds a tar.gz from raw entries, bypassing every safety check of the
/// `tar` crate's builder so hostile names and links can be written.
pub(crate) struct RawTar {
    b: tar::Builder<GzEncoder<Vec<u8>>>,
}

pub(crate) enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Hardlink(&'a str),
    Char,
    Block,
    Fifo,
}

impl RawTar {
    pub(crate) fn new() -> RawTar {
        RawTar {
            b: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast())),
        }
    }

    /// Appends one entry. A name or link target longer than the header's
    /// 100 bytes goes first into a GNU long-name (`L`) or long-link (`K`)
    /// entry, as GNU tar writes it, the header keeping the first 100 bytes.
    pub(crate) fn entry(mut self, name: &[u8], kind: Kind<'_>, mode: u32) -> Self {
        if name.len() > 100 {
            self = self.long_name(name);
        }
        if let Kind::Symlink(t) | Kind::Hardlink(t) = kind
            && t.len() > 100
        {
            self = self.meta(b'K', b"././@LongLink", &[t.as_bytes(), b"\0"].concat());
        }
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name = [0; 100];
            let n = name.len().min(100);
            g.name[..n].copy_from_slice(&name[..n]);
        }
        h.set_mode(mode);
        h.set_mtime(946_684_800);
        let data: &[u8] = match kind {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                h.set_entry_type(if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let g = h.as_gnu_mut().unwrap();
                g.linkname = [0; 100];
                let n = t.len().min(100);
                g.linkname[..n].copy_from_slice(&t.as_bytes()[..n]);
                &[]
            }
            Kind::Char => {
                h.set_entry_type(tar::EntryType::Char);
                &[]
            }
            Kind::Block => {
                h.set_entry_type(tar::EntryType::Block);
                &[]
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A GNU long-name entry (`L`, `././@LongLink`): the name of the next
    /// entry, whatever that entry's own header says.
    pub(crate) fn long_name(self, name: &[u8]) -> Self {
        self.meta(b'L', b"././@LongLink", &[name, b"\0"].concat())
    }

    /// A PAX extended header (`x`) whose records (`path`, `linkpath`, ...)
    /// override the next entry's header, as Python's `tarfile` writes
    /// non-ASCII names.
    pub(crate) fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts its own digits.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.meta(b'x', b"././@PaxHeader", &data)
    }

    /// A metadata entry of type `kind` carrying `data`.
    fn meta(mut self, kind: u8, name: &[u8], data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name = [0; 100];
            g.name[..name.len()].copy_from_slice(name);
        }
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), Kind::File(data), 0o644)
    }

    /// Appends raw bytes after the archive's end-of-archive marker.
    pub(crate) fn finish_with_trailer(self, trailer_zeros: usize) -> Vec<u8> {
        let mut gz = self.b.into_inner().unwrap();
        let zeros = vec![0u8; 1 << 16];
        let mut left = trailer_zeros;
        while left > 0 {
            let n = left.min(zeros.len());
            gz.write_all(&zeros[..n]).unwrap();
            left -= n;
        }
        gz.finish().unwrap()
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.finish_with_trailer(0)
    }
}

/// gzips bytes (for the corpus's plain `.tar` files).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A file or folder under `tests/fixtures/` (see its `PROVENANCE.md`).
/// Fixtures are part of the repository: a missing one is a broken checkout.
pub(crate) fn fixture(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// Tests skipped so far in this run, across all test threads.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Skips the calling test for `reason`, or fails it under `CI=true` (CI
/// installs everything the tests need; see `.ci/run`). The SKIP line goes
/// straight to the process's stderr: `eprintln!` is captured by the test
/// harness and shown only for failing tests, so a skip would go unseen.
/// The caller returns right after.
pub(crate) fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(n) if n != "main" => n,
        _ => "(test)",
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true, so this test may not be skipped: {test}: {reason}");
    }
    let n = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "SKIP ({n} so far): {test}: {reason}");
}

/// Prints a line past the test harness's capture, so figures show in a
/// normal run.
pub(crate) fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The systemd unit `text` as installed, its `ExecStart` pointing at the
/// binary under test, in a temporary folder (kept alive by the guard).
pub(crate) fn unit_as_installed(text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let copy = d.path().join("switchyard.service");
    let bin = assert_cmd::cargo::cargo_bin("switchyard");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/switchyard", bin.to_str().unwrap()),
    )
    .unwrap();
    (d, copy)
}

/// The Debian tool `name`, found on `PATH` or in the sbin directories
/// (nginx lives in /usr/sbin, which is not on every user's `PATH`). When
/// missing: `None` after a SKIP line (see [`skip`]), or a panic under
/// `CI=true`.
pub(crate) fn require_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    if found.is_none() {
        let package = match name {
            "systemd-analyze" => "systemd",
            "script" => "bsdutils",
            "chromedriver" => "chromium-driver",
            other => other,
        };
        skip(&format!(
            "{name} not installed (apt-get install {package}; .ci/run installs it)"
        ));
    }
    found
}

/// Helpers for sources other than the release folder (the GitHub tests).
impl World {
    /// Rewrites the config with `source` as the body of `[apps.web.source]`;
    /// the trust table pins this world's key.
    pub(crate) fn write_config_source(&self, source: &str) {
        let text = format!(
            "[apps.web]\nroot = \"{}\"\nkeep_releases = 3\n\n[apps.web.source]\n{source}\n\n[apps.web.shared]\ndirs = [\"storage\"]\n\n[apps.web.trust]\nkeys = [\"{}\"]\n",
            self.root.display(),
            self.public_b64
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs the binary with extra environment variables; returns (exit code, stdout, stderr).
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut c = self.cmd();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
