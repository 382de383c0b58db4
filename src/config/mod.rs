//! The TOML configuration: several apps, each with its root, release source,
//! shared paths and unpack limits. Unknown keys are errors; every problem is
//! reported with its line and column.

mod check;
pub(crate) mod console;
pub(crate) mod email;
pub(crate) mod fleet;
pub(crate) mod github;
pub(crate) mod health;
pub(crate) mod hooks;
mod lenient;
pub(crate) mod policy;
mod raw;
mod retention;
mod roots;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use retention::Retention;

/// Where the configuration is read from when neither `--config` nor
/// `SWITCHYARD_CONFIG` says otherwise.
pub(crate) const DEFAULT_PATH: &str = "/etc/switchyard/switchyard.toml";

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration is refused.
    Error,
    /// Allowed, but unwise (a secret other users can read).
    Warning,
}

/// One problem in a configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// An error, or only a warning.
    pub severity: Severity,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// `FILE:LINE:COL: message` (the form editors and compilers use), with
/// `warning: ` before the message of a warning.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        let level = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(f, ": {level}{}", self.message)
    }
}

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration (pass --config PATH or set SWITCHYARD_CONFIG)")]
    Read(#[from] crate::fs::FsError),
    /// The file was read but is invalid.
    #[error("invalid configuration {}:\n{}", path.display(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
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
    /// `[console]`: the web console, when configured.
    pub console: Option<console::ConsoleConfig>,
    /// What is allowed but unwise (a secret file other users can read):
    /// shown by `config check` and logged by the agent.
    pub warnings: Vec<Problem>,
    /// Referenced files and folders that are missing or unreadable here
    /// (key files, a source folder, secret files). `config check` and the
    /// agent refuse them; a single command does not, for it may run as a
    /// user who cannot read root's secrets, or for an app that does not
    /// use them.
    pub unavailable: Vec<Problem>,
}

/// Default control socket of the agent.
pub(crate) const DEFAULT_CONTROL_SOCKET: &str = "/run/switchyard/control.sock";

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
    /// This host's id in fleet rollouts (default: derived from /etc/machine-id).
    pub host_id: Option<String>,
    /// This host's labels in fleet rollouts (a wave's `hosts`).
    pub labels: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: ([127, 0, 0, 1], 9000).into(),
            webhook_secret_file: None,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_group: None,
            shutdown_timeout: std::time::Duration::from_secs(60),
            host_id: None,
            labels: Vec::new(),
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
    /// POST failure reports and notices to this URL.
    pub notify_url: Option<String>,
    /// The body `notify_url` receives.
    pub notify_format: NotifyFormat,
    /// How long the app may stay behind an available update before the
    /// notice is repeated (each once), shortest first.
    pub notify_escalate: Vec<std::time::Duration>,
    /// Who gets e-mail about the app, and which events (`[notify.email]`,
    /// `[apps.<name>.email]`); `None`: no e-mail.
    pub email: Option<email::AppEmail>,
}

/// The body of a notification (`notify_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotifyFormat {
    /// Every field as JSON, plus a one-line `text`.
    #[default]
    Json,
    /// A Slack incoming-webhook body: `{"text": ...}` only.
    Slack,
}

impl Default for AppAgentConfig {
    fn default() -> Self {
        AppAgentConfig {
            poll_interval: std::time::Duration::from_secs(300),
            auto: Default::default(),
            window: None,
            report_issues: false,
            notify_url: None,
            notify_format: NotifyFormat::Json,
            notify_escalate: Vec::new(),
            email: None,
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
    /// Who owns the releases and shared paths (`owner`, `group`, `mode`).
    pub ownership: Ownership,
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
    /// How much hook output and audit history is kept.
    pub retention: Retention,
    /// `[apps.<name>.fleet]`: rolls out in waves with the other hosts.
    pub fleet: Option<fleet::FleetConfig>,
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
pub(crate) const GITHUB_API_URL: &str = "https://api.github.com";

/// How long a GitHub rate limit may be waited out before failing, when
/// `rate_limit_max_wait_secs` is not set.
pub(crate) const DEFAULT_RATE_LIMIT_MAX_WAIT: Duration = Duration::from_secs(60);

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
    /// Default `*`: the release's one asset with an archive's name.
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
            asset: "*".to_string(),
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

/// Owner, group and directory mode given to each release tree and to each
/// configured shared path before the swap; `None` leaves what the agent
/// (root) creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    /// uid of `owner`.
    pub uid: Option<u32>,
    /// gid of `group`, or of the owner's primary group.
    pub gid: Option<u32>,
    /// `mode`: permission bits of the release directory and the shared directories.
    pub dir_mode: Option<u32>,
}

impl Ownership {
    /// True when nothing is configured.
    pub fn is_unset(&self) -> bool {
        *self == Ownership::default()
    }
}

/// The passwd entry of `name`, or a message saying it does not exist here.
pub(crate) fn lookup_user(name: &str) -> Result<nix::unistd::User, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!(
            "no user {name:?} on this host (getent passwd {name}); create it (useradd --system {name}) or name an existing one"
        )),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

/// The gid of group `name`, or a message saying it does not exist here.
pub(crate) fn lookup_group(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "no group {name:?} on this host (getent group {name}); create it (groupadd --system {name}) or name an existing one"
        )),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// Limits enforced while an archive streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes the archive may unpack to.
    pub max_bytes: u64,
    /// Most entries the archive may hold.
    pub max_entries: u64,
    /// Most times the unpacked bytes may exceed the compressed bytes read
    /// (judged past the first few MiB): a decompression bomb stops there.
    pub max_compression_ratio: u64,
    /// Whether a single top-level directory shared by every entry is
    /// stripped: `Some` forces it either way; `None` (the default) strips
    /// it only when its name carries the version, the app's name or a
    /// commit (`myapp-1.2.3/`, `repo-<sha>/`), never a bare `public/`.
    pub strip_top_dir: Option<bool>,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
            max_compression_ratio: 200,
            strip_top_dir: None,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::fs::read_to_string(path)?;
        Config::parse(&text, path)
    }

    /// Validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        check::parse(text, path)
    }

    /// [`Config::load`], also refusing referenced files and folders that
    /// are missing or unreadable: what `config check` and the agent use.
    pub fn load_complete(path: &Path) -> Result<Config, ConfigError> {
        let c = Config::load(path)?;
        if c.unavailable.is_empty() {
            return Ok(c);
        }
        Err(ConfigError::Invalid {
            path: c.path.clone(),
            problems: c.unavailable,
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

    /// `t` parsed as a configuration file (also for the submodules' tests).
    pub(super) fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    /// The problems of `t`, without the missing files and folders the
    /// examples name (`/d`, `/t`): those are tested on their own.
    pub(super) fn problems(t: &str) -> Vec<Problem> {
        match parse(t) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .filter(|p| !p.message.contains("does not exist; create the"))
                .collect(),
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
        let p = problems(
            "[apps.web]\nroot = \"/srv/web\"\nrooot = 1\nsource.dir = \"/d\"\ntrust.require_signature = false\n",
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("apps.web.rooot"), "{p:?}");
    }

    #[test]
    fn missing_keys_and_nested_mistakes_are_all_reported() {
        let p = problems(
            "[apps.web]\ntrust.require_signature = false\nhooks.warm = { timeout = \"1m\" }\n[apps.api]\nroot = \"/srv/api\"\nsource.dir = \"/d\"\ntrust.require_signature = false\nshared.dirs = [\"a\", 2]\nunpack.max_bytes = \"lots\"\n",
        );
        let msgs: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        for want in [
            "apps.web.hooks.warm: missing field `command`",
            "apps.api.shared.dirs[1]: invalid type",
            "apps.api.unpack.max_bytes: invalid type",
            "apps.web has no root",
            "apps.web has no source",
        ] {
            assert!(
                msgs.iter().any(|m| m.starts_with(want)),
                "{want}: {msgs:#?}"
            );
        }
        assert_eq!(p.len(), 5, "{msgs:#?}");
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
        assert_eq!(lines, vec![Some(4), Some(5), Some(6)], "{p:?}");
    }

    #[test]
    fn owner_group_mode_and_hook_users_are_resolved() {
        let c = parse("[apps.web]\nroot = \"/srv/web\"\nowner = \"root\"\nmode = \"0o750\"\nsource.dir = \"/d\"\ntrust.require_signature = false\nhooks.warm = { command = \"true\", user = \"root\", group = \"root\" }\nhooks.activate = \"true\"\n").unwrap();
        let a = c.app("web").unwrap();
        assert_eq!(
            a.ownership,
            Ownership {
                uid: Some(0),
                gid: Some(0),
                dir_mode: Some(0o750)
            }
        );
        let who = a.hooks.warm.as_ref().unwrap().run_as.as_ref().unwrap();
        assert_eq!((who.user.as_str(), who.uid, who.gid), ("root", 0, 0));
        assert!(a.hooks.activate.as_ref().unwrap().run_as.is_none());
        for bad in ["\"750x\"", "\"01777\"", "\"\""] {
            let p = problems(&format!(
                "[apps.web]\nroot = \"/srv/web\"\nmode = {bad}\nsource.dir = \"/d\"\ntrust.require_signature = false\n"
            ));
            assert_eq!((p.len(), p[0].line), (1, Some(3)), "{bad}: {p:?}");
        }
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
        assert_eq!(g.asset, "*");
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

    #[test]
    fn notify_format_and_escalation() {
        let base = "[apps.web]\nroot = \"/srv/web\"\nsource.dir = \"/d\"\ntrust.require_signature = false\n";
        let c = parse(&format!(
            "{base}notify_url = \"https://chat/x\"\nnotify_format = \"slack\"\nnotify_escalate = [\"7d\", \"1d\"]\n"
        ))
        .unwrap();
        let a = &c.app("web").unwrap().agent;
        assert_eq!(a.notify_format, NotifyFormat::Slack);
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(a.notify_escalate, vec![day, 7 * day], "sorted");
        let p = problems(&format!(
            "{base}notify_url = \"https://chat/x\"\nnotify_format = \"teams\"\nnotify_escalate = [\"1s\", \"soon\"]\n"
        ));
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(6), Some(7), Some(7)], "{p:?}");
        let p = problems(&format!("{base}notify_format = \"slack\"\n"));
        assert!(p[0].message.contains("need notify_url"), "{p:?}");
    }
}
