//! The TOML configuration: several apps, each with its root, release source,
//! shared paths and unpack limits. Unknown keys are errors; every problem is
//! reported with its line and column.

pub mod github;
pub mod health;
pub mod hooks;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

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
    #[error("cannot read the configuration (pass --config PATH or set SWITCHYARD_CONFIG)")]
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
    /// `[agent]`: the service's own settings.
    pub agent: AgentConfig,
}

/// Default control socket of the agent.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/switchyard/control.sock";

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Address of the HTTP listener (webhooks, metrics, healthz).
    pub listen: std::net::SocketAddr,
    /// File holding the GitHub webhook secret; webhooks are off without it.
    pub webhook_secret_file: Option<PathBuf>,
    /// The unix socket the CLI talks to.
    pub control_socket: PathBuf,
    /// Group allowed on the control socket (mode 0660).
    pub control_group: Option<String>,
    /// How long SIGTERM waits for running operations.
    pub shutdown_timeout: std::time::Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: ([127, 0, 0, 1], 9000).into(),
            webhook_secret_file: None,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_group: None,
            shutdown_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What the agent does for one app on its own.
#[derive(Debug, Clone)]
pub struct AppAgentConfig {
    /// How often to poll the source.
    pub poll_interval: std::time::Duration,
    /// Which upgrades it deploys without an operator.
    pub auto: policy::AutoLevel,
    /// When it may deploy.
    pub window: Option<policy::Window>,
    /// Open a GitHub issue on a failed deploy or revert.
    pub report_issues: bool,
    /// POST failure reports to this URL.
    pub notify_url: Option<String>,
}

impl Default for AppAgentConfig {
    fn default() -> Self {
        AppAgentConfig {
            poll_interval: std::time::Duration::from_secs(300),
            auto: Default::default(),
            window: None,
            report_issues: false,
            notify_url: None,
        }
    }
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
    /// Deploy hooks.
    pub hooks: HooksConfig,
    /// Health checks before and after the swap.
    pub health: HealthChecks,
    /// Deploy policy knobs.
    pub policy: Policy,
    /// What the agent does on its own.
    pub agent: AppAgentConfig,
}

/// `[apps.<name>.hooks]`, each optional.
#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    /// In the staging release before the swap.
    pub warm: Option<hooks::HookSpec>,
    /// Writes a backup to `$SWITCHYARD_BACKUP_FILE` before `migrate`.
    pub backup: Option<hooks::HookSpec>,
    /// After the backup, before the swap.
    pub migrate: Option<hooks::HookSpec>,
    /// After the swap, and again after a revert.
    pub activate: Option<hooks::HookSpec>,
    /// Restores `$SWITCHYARD_BACKUP_FILE` when a revert must restore data.
    pub restore: Option<hooks::HookSpec>,
    /// After any failed deploy.
    pub on_failure: Option<hooks::HookSpec>,
}

/// `[apps.<name>.health.staging]` and `[apps.<name>.health.live]`.
#[derive(Debug, Clone, Default)]
pub struct HealthChecks {
    /// Before the swap, on the staging tree.
    pub staging: Option<health::HealthConfig>,
    /// After `activate`, on the live app.
    pub live: Option<health::HealthConfig>,
}

/// What to do with this deploy's backup when a revert follows migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePolicy {
    /// Restore it.
    Auto,
    /// Leave it; an operator decides (the app is marked needs_attention).
    Ask,
    /// Never restore.
    Never,
}

/// Per-app deploy policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accept major upgrades without --allow-major.
    pub allow_major: bool,
    /// Free disk required before a download (default 2 × asset + 512 MiB).
    pub min_free_bytes: Option<u64>,
    /// Keep a release that failed before the swap, for inspection.
    pub keep_failed: bool,
    /// Restore the backup on a revert after migrations.
    pub restore_on_revert: RestorePolicy,
    /// Backups kept (at least 1).
    pub keep_backups: usize,
    /// Include the shared paths in every backup.
    pub backup_shared: bool,
    /// How a release shares identical files with the previous one.
    pub dedup: DedupMode,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_major: false,
            min_free_bytes: None,
            keep_failed: false,
            restore_on_revert: RestorePolicy::Auto,
            keep_backups: 3,
            backup_shared: false,
            dedup: DedupMode::default(),
        }
    }
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

/// Where an app's releases come from (`[apps.<name>.source]`): exactly one
/// of `dir` or `github`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A local release folder (also the offline drop folder).
    Dir(DirSourceConfig),
    /// The releases of a GitHub (or GitHub Enterprise) repository.
    Github(GithubSourceConfig),
}

impl SourceConfig {
    /// The channel `latest` picks from.
    pub fn channel(&self) -> Channel {
        match self {
            SourceConfig::Dir(d) => d.channel,
            SourceConfig::Github(g) => g.channel,
        }
    }
}

/// Which releases `latest` may pick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Only releases that are not prereleases (neither by semver, `-rc.1`,
    /// nor flagged as such on GitHub).
    #[default]
    Stable,
    /// Every release, prereleases included.
    Prerelease,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Stable => "stable",
            Channel::Prerelease => "prerelease",
        })
    }
}

/// A local release folder source (`dir = "/srv/drop/web"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSourceConfig {
    /// The folder holding `<version>/` directories.
    pub dir: PathBuf,
    /// Which releases `latest` may pick.
    pub channel: Channel,
}

/// The API base used when `api_url` is not set.
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// How long a GitHub rate limit may be waited out before failing, when
/// `rate_limit_max_wait_secs` is not set.
pub const DEFAULT_RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(60);

/// A GitHub Releases source (`github = "owner/repo"`).
///
/// The token itself is never part of the configuration: only where to read
/// it from (`token_env` or `token_file`), so this type can be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSourceConfig {
    /// Owner and repository name.
    pub repo: (String, String),
    /// The asset to install: a template with `{version}`, `{tag}` and
    /// `{target}`, optionally with `*`/`?` wildcards (see `crate::source::github`).
    /// Default `*.tar.gz`: the release's only `.tar.gz` asset.
    pub asset: String,
    /// Which releases `latest` may pick.
    pub channel: Channel,
    /// Environment variable holding the API token.
    pub token_env: Option<String>,
    /// Absolute path of a file holding the API token (trimmed).
    pub token_file: Option<PathBuf>,
    /// API base URL without a trailing slash: `https://api.github.com`, or
    /// `https://ghe.example/api/v3` for GitHub Enterprise.
    pub api_url: String,
    /// The longest rate-limit reset worth waiting for before failing.
    pub rate_limit_max_wait: Duration,
}

impl GithubSourceConfig {
    /// A config for `owner/repo` on github.com with every default (the
    /// `*.tar.gz` asset, the stable channel, no token).
    pub fn new(owner: &str, repo: &str) -> Self {
        GithubSourceConfig {
            repo: (owner.to_string(), repo.to_string()),
            asset: "*.tar.gz".to_string(),
            channel: Channel::Stable,
            token_env: None,
            token_file: None,
            api_url: GITHUB_API_URL.to_string(),
            rate_limit_max_wait: DEFAULT_RATE_LIMIT_MAX_WAIT,
        }
    }

    /// `owner/repo`.
    pub fn slug(&self) -> String {
        format!("{}/{}", self.repo.0, self.repo.1)
    }
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
    /// Strip a single top-level directory shared by every entry
    /// (`myapp-1.2.3/...`). Turn off for releases whose only top-level
    /// directory is content, such as a bare `public/`.
    pub strip_top_dir: bool,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
            strip_top_dir: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    apps: BTreeMap<String, Spanned<RawApp>>,
    agent: Option<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: Option<Spanned<String>>,
    webhook_secret_file: Option<Spanned<PathBuf>>,
    control_socket: Option<Spanned<PathBuf>>,
    control_group: Option<String>,
    shutdown_timeout: Option<Spanned<String>>,
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
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    health: RawHealth,
    allow_major: Option<bool>,
    min_free_bytes: Option<Spanned<i64>>,
    keep_failed: Option<bool>,
    restore_on_revert: Option<Spanned<String>>,
    keep_backups: Option<Spanned<i64>>,
    backup_shared: Option<bool>,
    poll_interval: Option<Spanned<String>>,
    dedup: Option<Spanned<String>>,
    auto: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    report_issues: Option<bool>,
    notify_url: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    warm: Option<Spanned<hooks::HookConfig>>,
    backup: Option<Spanned<hooks::HookConfig>>,
    migrate: Option<Spanned<hooks::HookConfig>>,
    activate: Option<Spanned<hooks::HookConfig>>,
    restore: Option<Spanned<hooks::HookConfig>>,
    on_failure: Option<Spanned<hooks::HookConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    staging: Option<Spanned<toml::Value>>,
    live: Option<Spanned<toml::Value>>,
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
    github: Option<Spanned<String>>,
    asset: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    api_url: Option<Spanned<String>>,
    rate_limit_max_wait_secs: Option<Spanned<i64>>,
    // Known only so that a token written into the file is refused with a
    // located message that says where tokens go instead.
    token: Option<Spanned<toml::Value>>,
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
    strip_top_dir: Option<bool>,
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

/// Validates `[apps.<name>.source]`: exactly one of `dir` or `github`, and
/// only the keys that source understands.
fn check_source(ck: &mut Checker<'_>, name: &str, raw: Spanned<RawSource>) -> Option<SourceConfig> {
    let span = raw.span();
    let src = raw.into_inner();
    if let Some(t) = &src.token {
        ck.at(
            t.span(),
            format!(
                "apps.{name}.source.token: a token must never be written into the configuration; put it in an environment variable and set token_env = \"NAME\", or in a root-only file and set token_file = \"/etc/switchyard/{name}.token\""
            ),
        );
    }
    let channel = match &src.channel {
        None => Channel::Stable,
        Some(c) => match c.get_ref().as_str() {
            "stable" => Channel::Stable,
            "prerelease" => Channel::Prerelease,
            other => {
                ck.at(
                    c.span(),
                    format!("apps.{name}.source.channel must be \"stable\" or \"prerelease\", got {other:?}"),
                );
                Channel::Stable
            }
        },
    };
    match (src.dir, src.github) {
        (Some(d), Some(g)) => {
            let first = d.span().start.min(g.span().start);
            ck.at(
                first..first + 1,
                format!("apps.{name}.source sets both dir and github; an app has exactly one source: keep one of them"),
            );
            None
        }
        (None, None) => {
            ck.at(
                span,
                format!("apps.{name}.source needs exactly one source: dir = \"/path\" or github = \"owner/repo\""),
            );
            None
        }
        (Some(d), None) => {
            if !d.get_ref().is_absolute() {
                ck.at(
                    d.span(),
                    format!(
                        "apps.{name}.source.dir must be an absolute path, got {:?}",
                        d.get_ref().display().to_string()
                    ),
                );
            }
            let github_only = [
                ("asset", src.asset.as_ref().map(|s| s.span())),
                ("token_env", src.token_env.as_ref().map(|s| s.span())),
                ("token_file", src.token_file.as_ref().map(|s| s.span())),
                ("api_url", src.api_url.as_ref().map(|s| s.span())),
                (
                    "rate_limit_max_wait_secs",
                    src.rate_limit_max_wait_secs.as_ref().map(|s| s.span()),
                ),
            ];
            for (key, at) in github_only {
                if let Some(at) = at {
                    ck.at(
                        at,
                        format!("apps.{name}.source.{key} applies only to a github source; a dir source reads <dir>/<version>/ (remove {key})"),
                    );
                }
            }
            Some(SourceConfig::Dir(DirSourceConfig {
                dir: d.into_inner(),
                channel,
            }))
        }
        (None, Some(g)) => {
            let mut cfg = GithubSourceConfig::new("", "");
            cfg.channel = channel;
            match parse_repo(g.get_ref()) {
                Ok(repo) => cfg.repo = repo,
                Err(m) => ck.at(g.span(), format!("apps.{name}.source.github: {m}")),
            }
            if let Some(a) = src.asset {
                match github::check_asset_pattern(a.get_ref()) {
                    Ok(()) => cfg.asset = a.into_inner(),
                    Err(m) => ck.at(a.span(), format!("apps.{name}.source.asset: {m}")),
                }
            }
            if let (Some(e), Some(_)) = (&src.token_env, &src.token_file) {
                ck.at(
                    e.span(),
                    format!(
                        "apps.{name}.source sets both token_env and token_file; keep one of them"
                    ),
                );
            }
            if let Some(e) = src.token_env {
                let v = e.get_ref();
                let ok = !v.is_empty()
                    && !v.starts_with(|c: char| c.is_ascii_digit())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if ok {
                    cfg.token_env = Some(e.into_inner());
                } else {
                    ck.at(
                        e.span(),
                        format!("apps.{name}.source.token_env must name an environment variable (letters, digits and '_', e.g. \"GITHUB_TOKEN\"), not hold the token itself"),
                    );
                }
            }
            if let Some(f) = src.token_file {
                if f.get_ref().is_absolute() {
                    cfg.token_file = Some(f.into_inner());
                } else {
                    ck.at(
                        f.span(),
                        format!(
                            "apps.{name}.source.token_file must be an absolute path, got {:?}",
                            f.get_ref().display().to_string()
                        ),
                    );
                }
            }
            if let Some(u) = src.api_url {
                match github::check_api_url(u.get_ref()) {
                    Ok(url) => cfg.api_url = url,
                    Err(m) => ck.at(u.span(), format!("apps.{name}.source.api_url: {m}")),
                }
            }
            if let Some(w) = src.rate_limit_max_wait_secs {
                if *w.get_ref() < 0 {
                    ck.at(
                        w.span(),
                        format!("apps.{name}.source.rate_limit_max_wait_secs must be 0 (never wait) or more"),
                    );
                } else {
                    cfg.rate_limit_max_wait = Duration::from_secs(*w.get_ref() as u64);
                }
            }
            Some(SourceConfig::Github(cfg))
        }
    }
}

/// Splits `owner/repo`, refusing anything GitHub would not accept as a name.
fn parse_repo(s: &str) -> Result<(String, String), String> {
    let valid = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.len() <= 100
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match s.split_once('/') {
        Some((o, r)) if valid(o) && valid(r) => Ok((o.to_string(), r.to_string())),
        _ => Err(format!(
            "{s:?} is not \"owner/repo\" (letters, digits, '-', '_' and '.'), e.g. github = \"acme/web\""
        )),
    }
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
            let source = check_source(&mut ck, &name, app.source);
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
            if let Some(st) = app.unpack.strip_top_dir {
                unpack.strip_top_dir = st;
            }
            if let Some(me) = app.unpack.max_entries {
                if *me.get_ref() < 1 {
                    ck.at(me.span(), "unpack.max_entries must be positive");
                } else {
                    unpack.max_entries = *me.get_ref() as u64;
                }
            }
            let trust = check_trust(&mut ck, &name, app.trust);
            let mut hook = |h: Option<Spanned<hooks::HookConfig>>, which: &str| {
                let h = h?;
                match h.get_ref().to_spec() {
                    Ok(spec) => Some(spec),
                    Err(m) => {
                        ck.at(h.span(), format!("apps.{name}.hooks.{which}: {m}"));
                        None
                    }
                }
            };
            let hooks = HooksConfig {
                warm: hook(app.hooks.warm, "warm"),
                backup: hook(app.hooks.backup, "backup"),
                migrate: hook(app.hooks.migrate, "migrate"),
                activate: hook(app.hooks.activate, "activate"),
                restore: hook(app.hooks.restore, "restore"),
                on_failure: hook(app.hooks.on_failure, "on_failure"),
            };
            let mut health_of = |h: Option<Spanned<toml::Value>>, which: &str| {
                let h = h?;
                let span = h.span();
                match health::HealthConfig::from_toml(h.into_inner()) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        ck.at(span, format!("apps.{name}.health.{which}: {m}"));
                        None
                    }
                }
            };
            let health = HealthChecks {
                staging: health_of(app.health.staging, "staging"),
                live: health_of(app.health.live, "live"),
            };
            let mut policy = Policy {
                allow_major: app.allow_major.unwrap_or(false),
                keep_failed: app.keep_failed.unwrap_or(false),
                backup_shared: app.backup_shared.unwrap_or(false),
                ..Policy::default()
            };
            if let Some(m) = app.min_free_bytes {
                if *m.get_ref() < 0 {
                    ck.at(
                        m.span(),
                        format!("apps.{name}.min_free_bytes must not be negative"),
                    );
                } else {
                    policy.min_free_bytes = Some(*m.get_ref() as u64);
                }
            }
            if let Some(d) = &app.dedup {
                match d.get_ref().parse() {
                    Ok(m) => policy.dedup = m,
                    Err(m) => ck.at(d.span(), format!("apps.{name}.dedup {m}")),
                }
            }
            if let Some(k) = app.keep_backups {
                if *k.get_ref() < 1 {
                    ck.at(k.span(), format!("apps.{name}.keep_backups must be at least 1 (a deploy needs its backup)"));
                } else {
                    policy.keep_backups = *k.get_ref() as usize;
                }
            }
            if let Some(r) = app.restore_on_revert {
                policy.restore_on_revert = match r.get_ref().as_str() {
                    "auto" => RestorePolicy::Auto,
                    "ask" => RestorePolicy::Ask,
                    "never" => RestorePolicy::Never,
                    other => {
                        ck.at(r.span(), format!("apps.{name}.restore_on_revert must be \"auto\", \"ask\" or \"never\", got {other:?}"));
                        RestorePolicy::Auto
                    }
                };
            }
            let mut agent = AppAgentConfig {
                report_issues: app.report_issues.unwrap_or(false),
                ..AppAgentConfig::default()
            };
            if let Some(p) = &app.poll_interval {
                match hooks::parse_duration(p.get_ref()) {
                    Ok(d) if d >= std::time::Duration::from_secs(1) => agent.poll_interval = d,
                    Ok(_) => ck.at(
                        p.span(),
                        format!("apps.{name}.poll_interval must be at least 1s"),
                    ),
                    Err(m) => ck.at(p.span(), format!("apps.{name}.poll_interval: {m}")),
                }
            }
            if let Some(a) = &app.auto {
                match a.get_ref().parse::<policy::AutoLevel>() {
                    Ok(l) => agent.auto = l,
                    Err(m) => ck.at(a.span(), format!("apps.{name}.auto: {m}")),
                }
            }
            let tz = app
                .timezone
                .as_ref()
                .map(|t| t.get_ref().as_str())
                .unwrap_or("UTC");
            if let Some(w) = &app.window {
                match policy::Window::parse(w.get_ref(), tz) {
                    Ok(win) => agent.window = Some(win),
                    Err(m) => ck.at(
                        app.timezone
                            .as_ref()
                            .filter(|_| m.contains("zone"))
                            .map(|t| t.span())
                            .unwrap_or(w.span()),
                        format!("apps.{name}.window: {m}"),
                    ),
                }
            } else if let Some(t) = &app.timezone {
                ck.at(
                    t.span(),
                    format!("apps.{name}.timezone is only used with window = \"...\""),
                );
            }
            if let Some(u) = app.notify_url {
                if u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://") {
                    agent.notify_url = Some(u.into_inner());
                } else {
                    ck.at(
                        u.span(),
                        format!("apps.{name}.notify_url must be an http(s) URL"),
                    );
                }
            }
            if agent.report_issues && !matches!(source, Some(SourceConfig::Github(_))) {
                ck.at(0..0, format!("apps.{name}.report_issues needs a github source (the issue is opened in its repository)"));
            }
            if hooks.migrate.is_some() && hooks.backup.is_none() && !policy.backup_shared {
                ck.at(
                    0..0,
                    format!("apps.{name}: a migrate hook without a backup (hooks.backup or backup_shared = true) could not be undone; add one"),
                );
            }
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
                        hooks,
                        health,
                        policy,
                        agent,
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
        let mut agent = AgentConfig::default();
        if let Some(a) = raw.agent {
            let a = a.into_inner();
            if let Some(l) = a.listen {
                match l.get_ref().parse() {
                    Ok(addr) => agent.listen = addr,
                    Err(_) => ck.at(
                        l.span(),
                        format!(
                            "agent.listen: {:?} is not an address like 127.0.0.1:9000",
                            l.get_ref()
                        ),
                    ),
                }
            }
            if let Some(f) = a.webhook_secret_file {
                if f.get_ref().is_absolute() {
                    agent.webhook_secret_file = Some(f.into_inner());
                } else {
                    ck.at(
                        f.span(),
                        "agent.webhook_secret_file must be an absolute path",
                    );
                }
            }
            if let Some(c) = a.control_socket {
                if c.get_ref().is_absolute() {
                    agent.control_socket = c.into_inner();
                } else {
                    ck.at(c.span(), "agent.control_socket must be an absolute path");
                }
            }
            agent.control_group = a.control_group;
            if let Some(t) = a.shutdown_timeout {
                match hooks::parse_duration(t.get_ref()) {
                    Ok(d) => agent.shutdown_timeout = d,
                    Err(m) => ck.at(t.span(), format!("agent.shutdown_timeout: {m}")),
                }
            }
        }
        if !ck.problems.is_empty() {
            return Err(invalid(ck.problems));
        }
        Ok(Config {
            path: path.to_path_buf(),
            apps,
            agent,
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

/// How releases share identical files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupMode {
    /// Never.
    Off,
    /// Reflinks where the file system supports them; otherwise nothing.
    #[default]
    Reflink,
    /// Reflinks where supported, hardlinks (made read-only) otherwise.
    Hardlink,
}

impl std::str::FromStr for DedupMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(DedupMode::Off),
            "reflink" => Ok(DedupMode::Reflink),
            "hardlink" => Ok(DedupMode::Hardlink),
            o => Err(format!(
                "must be \"off\", \"reflink\" or \"hardlink\", got {o:?}"
            )),
        }
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
        assert_eq!(
            a.source,
            SourceConfig::Dir(DirSourceConfig {
                dir: "/srv/drop".into(),
                channel: Channel::Stable
            })
        );
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
    // --- github source tests ---
    #[test]
    fn github_source_gets_defaults() {
        let c = parse(
            "[apps.web]\nroot = \"/srv/web\"\ntrust.require_signature = false\n[apps.web.source]\ngithub = \"acme/web\"\napi_url = \"https://ghe.example/api/v3/\"\ntoken_env = \"GH_TOKEN\"\n",
        )
        .unwrap();
        let SourceConfig::Github(g) = &c.app("web").unwrap().source else {
            panic!("not a github source");
        };
        assert_eq!(g.repo, ("acme".to_string(), "web".to_string()));
        assert_eq!(g.asset, "*.tar.gz");
        assert_eq!(g.channel, Channel::Stable);
        assert_eq!(g.api_url, "https://ghe.example/api/v3");
        assert_eq!(g.token_env.as_deref(), Some("GH_TOKEN"));
        assert_eq!(g.rate_limit_max_wait, DEFAULT_RATE_LIMIT_MAX_WAIT);
    }

    #[test]
    fn github_source_problems_are_located() {
        let p = problems(
            "[apps.web]\nroot = \"/srv/web\"\ntrust.require_signature = false\n[apps.web.source]\ngithub = \"acme/web/x\"\ntoken_env = \"ghp_123 456\"\ntoken_file = \"/t\"\n",
        );
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(5), Some(6), Some(6)], "{p:?}");
        assert!(p[2].message.contains("not hold the token"), "{p:?}");
        assert!(!p.iter().any(|p| p.message.contains("ghp_123")), "{p:?}");
    }
    // --- end github source tests ---
}
