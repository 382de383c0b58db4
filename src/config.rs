//! The TOML configuration: several apps, each with its root, release source,
//! shared paths and unpack limits. Unknown keys are errors; every problem is
//! reported with its line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::version::check_component;

/// Where the configuration is read from when neither `--config` nor
/// `SWITCHYARD_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/switchyard/switchyard.toml";

/// One problem in a configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration: {0}; pass --config PATH or set SWITCHYARD_CONFIG")]
    Read(#[from] crate::fs::FsError),
    /// The file was read but is invalid.
    #[error("invalid configuration {}:\n{}", path.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// An app name that is not in the file.
    #[error("no app named {name:?} in {}; configured apps: {}", path.display(), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownApp {
        /// The name asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names it does configure.
        known: Vec<String>,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Apps by name.
    pub apps: BTreeMap<String, AppConfig>,
}

/// One app's validated configuration.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's name (the `[apps.<name>]` key).
    pub name: String,
    /// Absolute path holding `releases/`, `current`, `shared/`, `.switchyard/`.
    pub root: PathBuf,
    /// How many releases `prune` keeps.
    pub keep_releases: usize,
    /// Where releases come from.
    pub source: SourceConfig,
    /// Persistent paths linked into every release.
    pub shared: SharedConfig,
    /// Limits applied while unpacking.
    pub unpack: UnpackLimits,
    /// Signature policy.
    pub trust: TrustConfig,
}

/// Which keys may sign an app's releases (`[apps.<name>.trust]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    /// Trusted minisign public keys (the base64 `RW...` line).
    pub keys: Vec<String>,
    /// Files holding trusted minisign public keys.
    pub key_files: Vec<PathBuf>,
    /// Key ids (16 hex digits) refused even when listed as trusted.
    pub revoked_keys: Vec<String>,
    /// Refuse releases without a valid signature (default true).
    pub require_signature: bool,
    /// Accept legacy (non-prehashed `Ed`) signatures (default false).
    pub allow_legacy_signatures: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            keys: Vec::new(),
            key_files: Vec::new(),
            revoked_keys: Vec::new(),
            require_signature: true,
            allow_legacy_signatures: false,
        }
    }
}

/// Where an app's releases come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A local release folder (also the offline drop folder).
    Dir(PathBuf),
}

/// Persistent paths under `root/shared/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// Directories, relative to the release root.
    pub dirs: Vec<PathBuf>,
    /// Files, relative to the release root.
    pub files: Vec<PathBuf>,
}

/// Limits enforced while an archive streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes the archive may unpack to.
    pub max_bytes: u64,
    /// Most entries the archive may hold.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    apps: BTreeMap<String, Spanned<RawApp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    root: Spanned<PathBuf>,
    #[serde(default = "default_keep")]
    keep_releases: Spanned<i64>,
    source: Spanned<RawSource>,
    #[serde(default)]
    shared: RawShared,
    #[serde(default)]
    unpack: RawUnpack,
    trust: Option<Spanned<RawTrust>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    #[serde(default)]
    key_files: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    revoked_keys: Vec<Spanned<String>>,
    require_signature: Option<bool>,
    allow_legacy_signatures: Option<bool>,
}

fn default_keep() -> Spanned<i64> {
    Spanned::new(0..0, 5)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    dir: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShared {
    #[serde(default)]
    dirs: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    files: Vec<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUnpack {
    max_bytes: Option<Spanned<i64>>,
    max_entries: Option<Spanned<i64>>,
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = if span.start == 0 && span.end == 0 {
            (None, None)
        } else {
            let (l, c) = line_col(self.text, span.start);
            (Some(l), Some(c))
        };
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Checks a relative path configured under `shared`.
fn check_shared_path(p: &Path) -> Result<(), String> {
    if p.as_os_str().is_empty() {
        return Err("a shared path must not be empty".into());
    }
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                if n.to_str().is_none() {
                    return Err(format!("shared path {} is not UTF-8", p.display()));
                }
            }
            _ => {
                return Err(format!(
                    "shared path {:?} must be relative to the release, without '.', '..' or a leading '/'",
                    p.display().to_string()
                ));
            }
        }
    }
    Ok(())
}

fn check_trust(ck: &mut Checker<'_>, name: &str, raw: Option<Spanned<RawTrust>>) -> TrustConfig {
    let mut t = TrustConfig::default();
    let Some(raw) = raw else {
        ck.at(
            0..0,
            format!(
                "apps.{name} has no [apps.{name}.trust] table: releases must be signed by default; add keys = [\"RW...\"] (the public key from `switchyard keygen` or `minisign -G`), or set require_signature = false to accept unsigned releases"
            ),
        );
        return t;
    };
    let span = raw.span();
    let raw = raw.into_inner();
    for k in raw.keys {
        let key = k.get_ref().trim();
        // A minisign public key is 42 bytes, 56 base64 characters, "RW" first.
        let ok = key.len() == 56
            && key.starts_with("RW")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !ok {
            ck.at(
                k.span(),
                format!("apps.{name}.trust.keys: {key:?} is not a minisign public key (the 56-character line starting with RW in the .pub file)"),
            );
        } else {
            t.keys.push(key.to_string());
        }
    }
    for f in raw.key_files {
        if !f.get_ref().is_absolute() {
            ck.at(
                f.span(),
                format!(
                    "apps.{name}.trust.key_files: {} must be an absolute path",
                    f.get_ref().display()
                ),
            );
        } else {
            t.key_files.push(f.into_inner());
        }
    }
    for r in raw.revoked_keys {
        let id = r.get_ref().trim();
        // `minisign` prints key ids without leading zeros: accept and pad.
        if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            ck.at(r.span(), format!("apps.{name}.trust.revoked_keys: {id:?} is not a key id (up to 16 hex digits, as `minisign` prints it)"));
        } else {
            t.revoked_keys
                .push(format!("{:0>16}", id.to_ascii_uppercase()));
        }
    }
    t.require_signature = raw.require_signature.unwrap_or(true);
    t.allow_legacy_signatures = raw.allow_legacy_signatures.unwrap_or(false);
    if t.require_signature && t.keys.is_empty() && t.key_files.is_empty() {
        ck.at(
            span,
            format!("apps.{name}.trust: require_signature is true but no keys are configured: add keys = [\"RW...\"] or key_files = [\"/etc/switchyard/keys/{name}.pub\"]"),
        );
    }
    t
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::fs::read_to_string(path)?;
        Config::parse(&text, path)
    }

    /// Validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let (line, column) = match e.span() {
                    Some(s) => {
                        let (l, c) = line_col(text, s.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                return Err(invalid(vec![Problem {
                    line,
                    column,
                    message: e.message().trim().to_string(),
                }]));
            }
        };
        let mut ck = Checker {
            text,
            problems: Vec::new(),
        };
        let mut apps = BTreeMap::new();
        if raw.apps.is_empty() {
            ck.at(
                0..0,
                "no apps configured: add an [apps.<name>] table with root and source",
            );
        }
        for (name, app) in raw.apps {
            let app_span = app.span();
            let app = app.into_inner();
            if let Err(e) = check_component("app name", &name) {
                ck.at(app_span.clone(), e.to_string());
            }
            let root = app.root.get_ref().clone();
            if !root.is_absolute() {
                ck.at(
                    app.root.span(),
                    format!(
                        "apps.{name}.root must be an absolute path, got {:?}",
                        root.display().to_string()
                    ),
                );
            }
            let keep = *app.keep_releases.get_ref();
            if keep < 1 {
                ck.at(
                    app.keep_releases.span(),
                    format!("apps.{name}.keep_releases must be at least 1, got {keep}"),
                );
            }
            let source_span = app.source.span();
            let src = app.source.into_inner();
            let source = match src.dir {
                Some(d) => {
                    if !d.get_ref().is_absolute() {
                        ck.at(
                            d.span(),
                            format!(
                                "apps.{name}.source.dir must be an absolute path, got {:?}",
                                d.get_ref().display().to_string()
                            ),
                        );
                    }
                    Some(SourceConfig::Dir(d.into_inner()))
                }
                None => {
                    ck.at(
                        source_span,
                        format!("apps.{name}.source needs exactly one source: dir = \"/path\""),
                    );
                    None
                }
            };
            let mut shared = SharedConfig::default();
            let mut seen: Vec<PathBuf> = Vec::new();
            for (list, out) in [
                (app.shared.dirs, &mut shared.dirs),
                (app.shared.files, &mut shared.files),
            ] {
                for p in list {
                    let span = p.span();
                    let p = p.into_inner();
                    if let Err(m) = check_shared_path(&p) {
                        ck.at(span, format!("apps.{name}.shared: {m}"));
                        continue;
                    }
                    if let Some(o) = seen.iter().find(|o| o.starts_with(&p) || p.starts_with(o)) {
                        ck.at(
                            span,
                            format!(
                                "apps.{name}.shared: {} overlaps {}; list each persistent path once",
                                p.display(),
                                o.display()
                            ),
                        );
                        continue;
                    }
                    if p == Path::new(".switchyard") {
                        ck.at(span, "shared paths may not be named .switchyard");
                    }
                    seen.push(p.clone());
                    out.push(p);
                }
            }
            let mut unpack = UnpackLimits::default();
            if let Some(mb) = app.unpack.max_bytes {
                if *mb.get_ref() < 1 {
                    ck.at(mb.span(), "unpack.max_bytes must be positive");
                } else {
                    unpack.max_bytes = *mb.get_ref() as u64;
                }
            }
            if let Some(me) = app.unpack.max_entries {
                if *me.get_ref() < 1 {
                    ck.at(me.span(), "unpack.max_entries must be positive");
                } else {
                    unpack.max_entries = *me.get_ref() as u64;
                }
            }
            let trust = check_trust(&mut ck, &name, app.trust);
            if let Some(source) = source {
                apps.insert(
                    name.clone(),
                    AppConfig {
                        name,
                        root,
                        keep_releases: keep.max(1) as usize,
                        source,
                        shared,
                        unpack,
                        trust,
                    },
                );
            }
        }
        // Two apps in one root would fight over `current` and the lock.
        let mut roots: BTreeMap<&Path, &str> = BTreeMap::new();
        for (n, a) in &apps {
            if let Some(other) = roots.insert(&a.root, n) {
                ck.at(
                    0..0,
                    format!(
                        "apps {other} and {n} share the root {}; each app needs its own root",
                        a.root.display()
                    ),
                );
            }
        }
        if !ck.problems.is_empty() {
            return Err(invalid(ck.problems));
        }
        Ok(Config {
            path: path.to_path_buf(),
            apps,
        })
    }

    /// The named app, or an error listing the configured names.
    pub fn app(&self, name: &str) -> Result<&AppConfig, ConfigError> {
        self.apps.get(name).ok_or_else(|| ConfigError::UnknownApp {
            name: name.to_string(),
            path: self.path.clone(),
            known: self.apps.keys().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    fn problems(t: &str) -> Vec<Problem> {
        match parse(t) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_app_gets_defaults() {
        let c = parse("[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/srv/drop\"\ntrust.require_signature = false\n").unwrap();
        let a = c.app("web").unwrap();
        assert_eq!(a.keep_releases, 5);
        assert_eq!(a.unpack, UnpackLimits::default());
        assert_eq!(a.source, SourceConfig::Dir("/srv/drop".into()));
    }

    #[test]
    fn unknown_key_is_located() {
        let p = problems("[apps.web]\nroot = \"/srv/web\"\nrooot = 1\nsource.dir = \"/d\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("rooot"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let p = problems(
            "[apps.web]\nroot = \"srv/web\"\nkeep_releases = 0\nsource.dir = \"/d\"\ntrust.require_signature = false\n[apps.web.shared]\ndirs = [\"../etc\", \"/abs\"]\n",
        );
        let lines: Vec<_> = p.iter().map(|p| p.line.unwrap()).collect();
        assert_eq!(lines, vec![2, 3, 7, 7], "{p:?}");
    }

    #[test]
    fn trust_is_required_by_default() {
        let p = problems("[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\n");
        assert!(p[0].message.contains("require_signature = false"), "{p:?}");
        let p = problems(
            "[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\n[apps.web.trust]\nkeys = [\"nope\"]\nrevoked_keys = [\"xyz\"]\n",
        );
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(5), Some(6), Some(4)], "{p:?}");
    }

    #[test]
    fn unknown_app_lists_known_ones() {
        let c = parse("[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\ntrust.require_signature = false\n").unwrap();
        let e = c.app("api").unwrap_err().to_string();
        assert!(e.contains("web"), "{e}");
    }
}
