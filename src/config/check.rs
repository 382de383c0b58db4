//! Checks the raw configuration and builds the validated types, collecting
//! every problem with its location instead of stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::config::raw::{
    RawAgent, RawApp, RawConfig, RawHealth, RawHooks, RawShared, RawSource, RawTrust, RawUnpack,
};
use crate::config::{
    AgentConfig, AppAgentConfig, AppConfig, Channel, Config, ConfigError, DirSourceConfig,
    GithubSourceConfig, HealthChecks, HooksConfig, Ownership, Policy, Problem, RestorePolicy,
    SharedConfig, SourceConfig, TrustConfig, UnpackLimits, github, health, hooks, line_col,
    lookup_group, lookup_user, policy, roots,
};
use crate::version::check_component;

/// The problems (and warnings) found so far, located in `text`.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    /// Each app's root as written, and where.
    roots: BTreeMap<String, (PathBuf, Range<usize>)>,
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn locate(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        let (line, column) = if span.start == 0 && span.end == 0 {
            (None, None)
        } else {
            let (l, c) = line_col(self.text, span.start);
            (Some(l), Some(c))
        };
        Problem {
            line,
            column,
            message: message.into(),
        }
    }

    /// Records a problem at `span`; an empty span at 0 means "no location".
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let p = self.locate(span, message);
        self.problems.push(p);
    }

    /// Records a warning at `span`.
    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let p = self.locate(span, message);
        self.warnings.push(p);
    }

    /// A file whose content decides who is trusted (`secret`: and which
    /// must stay unread): one other users can write is refused, for they
    /// could put their own secret or key in it; a secret they can read is
    /// warned about. A file that cannot be looked at (missing, or a user
    /// without access running the CLI) is left to the code that reads it.
    fn file_mode(&mut self, span: Range<usize>, key: &str, path: &Path, secret: bool) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(Some(m)) = crate::fs::metadata(path) else {
            return;
        };
        let mode = m.permissions().mode() & 0o7777;
        let fix = if secret { "chmod 0600" } else { "chmod o-w" };
        if mode & 0o002 != 0 {
            self.at(
                span,
                format!(
                    "{key}: {} is writable by other users (mode {mode:04o}), so anyone on this host could replace it; {fix} {} (owned by root)",
                    path.display(),
                    path.display()
                ),
            );
        } else if secret && mode & 0o004 != 0 {
            self.warn(
                span,
                format!(
                    "{key}: {} is readable by other users (mode {mode:04o}), so anyone on this host can read the secret; {fix} {}",
                    path.display(),
                    path.display()
                ),
            );
        }
    }
}

/// Validates configuration text; `path` is only used in messages.
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
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
        roots: BTreeMap::new(),
        warnings: Vec::new(),
    };
    if raw.apps.is_empty() {
        ck.at(
            0..0,
            "no apps configured: add an [apps.<name>] table with root and source",
        );
    }
    let mut apps = BTreeMap::new();
    for (name, app) in raw.apps {
        if let Some(a) = check_app(&mut ck, &name, app) {
            apps.insert(name, a);
        }
    }
    check_roots(&mut ck, &apps);
    let agent = check_agent(&mut ck, raw.agent);
    if !ck.problems.is_empty() {
        return Err(invalid(ck.problems));
    }
    Ok(Config {
        path: path.to_path_buf(),
        apps,
        agent,
        warnings: ck.warnings,
    })
}

/// Validates one `[apps.<name>]`; `None` when it has no usable source (its
/// problems are recorded either way).
fn check_app(ck: &mut Checker<'_>, name: &str, app: Spanned<RawApp>) -> Option<AppConfig> {
    let app_span = app.span();
    let app = app.into_inner();
    if let Err(e) = check_component("app name", name) {
        ck.at(app_span, e.to_string());
    }
    let root = check_root(ck, name, &app.root);
    let keep = *app.keep_releases.get_ref();
    if keep < 1 {
        ck.at(
            app.keep_releases.span(),
            format!("apps.{name}.keep_releases must be at least 1, got {keep}"),
        );
    }
    let source = check_source(ck, name, app.source);
    let shared = check_shared(ck, name, app.shared);
    let ownership = check_ownership(ck, name, app.owner, app.group, app.mode);
    let unpack = check_unpack(ck, app.unpack);
    let trust = check_trust(ck, name, app.trust);
    let hooks = check_hooks(ck, name, app.hooks);
    let health = check_health(ck, name, app.health);
    let policy = check_policy(
        ck,
        name,
        &PolicyKeys {
            allow_major: app.allow_major,
            keep_failed: app.keep_failed,
            backup_shared: app.backup_shared,
            min_free_bytes: app.min_free_bytes,
            dedup: app.dedup,
            keep_backups: app.keep_backups,
            restore_on_revert: app.restore_on_revert,
        },
    );
    let agent = check_app_agent(
        ck,
        name,
        AgentKeys {
            report_issues: app.report_issues,
            poll_interval: app.poll_interval,
            auto: app.auto,
            window: app.window,
            timezone: app.timezone,
            notify_url: app.notify_url,
        },
    );
    if agent.report_issues && !matches!(source, Some(SourceConfig::Github(_))) {
        ck.at(0..0, format!("apps.{name}.report_issues needs a github source (the issue is opened in its repository)"));
    }
    if hooks.migrate.is_some() && hooks.backup.is_none() && !policy.backup_shared {
        ck.at(
            0..0,
            format!("apps.{name}: a migrate hook without a backup (hooks.backup or backup_shared = true) could not be undone; add one"),
        );
    }
    Some(AppConfig {
        name: name.to_string(),
        root,
        keep_releases: keep.max(1) as usize,
        source: source?,
        shared,
        ownership,
        unpack,
        trust,
        hooks,
        health,
        policy,
        agent,
    })
}

/// `[apps.<name>.shared]`: relative, UTF-8, non-overlapping paths.
fn check_shared(ck: &mut Checker<'_>, name: &str, raw: RawShared) -> SharedConfig {
    let mut shared = SharedConfig::default();
    let mut seen: Vec<PathBuf> = Vec::new();
    for (list, out) in [(raw.dirs, &mut shared.dirs), (raw.files, &mut shared.files)] {
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
    shared
}

/// `owner`, `group` and `mode` of `[apps.<name>]`: names this host knows
/// (resolved now, so a typo fails `config check`, not a deploy) and
/// permission bits written in octal.
fn check_ownership(
    ck: &mut Checker<'_>,
    name: &str,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
) -> Ownership {
    let mut own = Ownership::default();
    if let Some(o) = &owner {
        match lookup_user(o.get_ref()) {
            Ok(u) => {
                own.uid = Some(u.uid.as_raw());
                own.gid = Some(u.gid.as_raw());
            }
            Err(m) => ck.at(o.span(), format!("apps.{name}.owner: {m}")),
        }
    }
    if let Some(g) = &group {
        match lookup_group(g.get_ref()) {
            Ok(gid) => own.gid = Some(gid),
            Err(m) => ck.at(g.span(), format!("apps.{name}.group: {m}")),
        }
    }
    if let Some(m) = &mode {
        let digits = m.get_ref().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => own.dir_mode = Some(bits),
            _ => ck.at(
                m.span(),
                format!(
                    "apps.{name}.mode must be permission bits in octal, 0000 to 0777, e.g. \"0750\" (owner all, group read and enter, others nothing); got {:?}",
                    m.get_ref()
                ),
            ),
        }
    }
    own
}

/// `[apps.<name>.unpack]`: positive limits.
fn check_unpack(ck: &mut Checker<'_>, raw: RawUnpack) -> UnpackLimits {
    let mut unpack = UnpackLimits::default();
    if let Some(mb) = raw.max_bytes {
        if *mb.get_ref() < 1 {
            ck.at(mb.span(), "unpack.max_bytes must be positive");
        } else {
            unpack.max_bytes = *mb.get_ref() as u64;
        }
    }
    unpack.strip_top_dir = raw.strip_top_dir;
    if let Some(r) = raw.max_compression_ratio {
        if *r.get_ref() < 2 {
            ck.at(
                r.span(),
                "unpack.max_compression_ratio must be at least 2 (default 200: a release may unpack to 200 times its compressed size)",
            );
        } else {
            unpack.max_compression_ratio = *r.get_ref() as u64;
        }
    }
    if let Some(me) = raw.max_entries {
        if *me.get_ref() < 1 {
            ck.at(me.span(), "unpack.max_entries must be positive");
        } else {
            unpack.max_entries = *me.get_ref() as u64;
        }
    }
    unpack
}

/// `[apps.<name>.hooks]`: each hook that is set must be runnable.
fn check_hooks(ck: &mut Checker<'_>, name: &str, raw: RawHooks) -> HooksConfig {
    let mut hook = |h: Option<Spanned<hooks::HookConfig>>, which: &str| {
        let h = h?;
        match h.get_ref().to_spec() {
            Ok(spec) => Some(spec),
            Err((at, m)) => {
                ck.at(
                    at.unwrap_or(h.span()),
                    format!("apps.{name}.hooks.{which}: {m}"),
                );
                None
            }
        }
    };
    HooksConfig {
        warm: hook(raw.warm, "warm"),
        backup: hook(raw.backup, "backup"),
        migrate: hook(raw.migrate, "migrate"),
        activate: hook(raw.activate, "activate"),
        restore: hook(raw.restore, "restore"),
        on_failure: hook(raw.on_failure, "on_failure"),
    }
}

/// `[apps.<name>.health.staging]` and `[apps.<name>.health.live]`.
fn check_health(ck: &mut Checker<'_>, name: &str, raw: RawHealth) -> HealthChecks {
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
    HealthChecks {
        staging: health_of(raw.staging, "staging"),
        live: health_of(raw.live, "live"),
    }
}

/// The deploy-policy keys of `[apps.<name>]`.
struct PolicyKeys {
    allow_major: Option<bool>,
    keep_failed: Option<bool>,
    backup_shared: Option<bool>,
    min_free_bytes: Option<Spanned<i64>>,
    dedup: Option<Spanned<String>>,
    keep_backups: Option<Spanned<i64>>,
    restore_on_revert: Option<Spanned<String>>,
}

/// The deploy policy; bad values are reported and left at their defaults.
fn check_policy(ck: &mut Checker<'_>, name: &str, raw: &PolicyKeys) -> Policy {
    let mut policy = Policy {
        allow_major: raw.allow_major.unwrap_or(false),
        keep_failed: raw.keep_failed.unwrap_or(false),
        backup_shared: raw.backup_shared.unwrap_or(false),
        ..Policy::default()
    };
    if let Some(m) = &raw.min_free_bytes {
        if *m.get_ref() < 0 {
            ck.at(
                m.span(),
                format!("apps.{name}.min_free_bytes must not be negative"),
            );
        } else {
            policy.min_free_bytes = Some(*m.get_ref() as u64);
        }
    }
    if let Some(d) = &raw.dedup {
        match d.get_ref().parse() {
            Ok(m) => policy.dedup = m,
            Err(m) => ck.at(d.span(), format!("apps.{name}.dedup {m}")),
        }
    }
    if let Some(k) = &raw.keep_backups {
        if *k.get_ref() < 1 {
            ck.at(
                k.span(),
                format!("apps.{name}.keep_backups must be at least 1 (a deploy needs its backup)"),
            );
        } else {
            policy.keep_backups = *k.get_ref() as usize;
        }
    }
    if let Some(r) = &raw.restore_on_revert {
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
    policy
}

/// The agent keys of `[apps.<name>]`.
struct AgentKeys {
    report_issues: Option<bool>,
    poll_interval: Option<Spanned<String>>,
    auto: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    notify_url: Option<Spanned<String>>,
}

/// What the agent does for the app on its own.
fn check_app_agent(ck: &mut Checker<'_>, name: &str, raw: AgentKeys) -> AppAgentConfig {
    let mut agent = AppAgentConfig {
        report_issues: raw.report_issues.unwrap_or(false),
        ..AppAgentConfig::default()
    };
    if let Some(p) = &raw.poll_interval {
        match hooks::parse_duration(p.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) => agent.poll_interval = d,
            Ok(_) => ck.at(
                p.span(),
                format!("apps.{name}.poll_interval must be at least 1s"),
            ),
            Err(m) => ck.at(p.span(), format!("apps.{name}.poll_interval: {m}")),
        }
    }
    if let Some(a) = &raw.auto {
        match a.get_ref().parse::<policy::AutoLevel>() {
            Ok(l) => agent.auto = l,
            Err(m) => ck.at(a.span(), format!("apps.{name}.auto: {m}")),
        }
    }
    let tz = raw
        .timezone
        .as_ref()
        .map(|t| t.get_ref().as_str())
        .unwrap_or("UTC");
    if let Some(w) = &raw.window {
        match policy::Window::parse(w.get_ref(), tz) {
            Ok(win) => agent.window = Some(win),
            Err(e) => {
                // A bad zone is the timezone key's fault, when there is one.
                let span = match (&e, &raw.timezone) {
                    (policy::WindowError::TimeZone { .. }, Some(t)) => t.span(),
                    _ => w.span(),
                };
                ck.at(span, format!("apps.{name}.window: {e}"));
            }
        }
    } else if let Some(t) = &raw.timezone {
        ck.at(
            t.span(),
            format!("apps.{name}.timezone is only used with window = \"...\""),
        );
    }
    if let Some(u) = raw.notify_url {
        if u.get_ref().starts_with("https://") || u.get_ref().starts_with("http://") {
            agent.notify_url = Some(u.into_inner());
        } else {
            ck.at(
                u.span(),
                format!("apps.{name}.notify_url must be an http(s) URL"),
            );
        }
    }
    agent
}

/// The root made absolute and canonical; `/` and the system's top-level
/// directories are refused (Switchyard writes and removes below its root).
fn check_root(ck: &mut Checker<'_>, name: &str, raw: &Spanned<PathBuf>) -> PathBuf {
    let written = raw.get_ref().clone();
    ck.roots
        .insert(name.to_string(), (written.clone(), raw.span()));
    if !written.is_absolute() {
        ck.at(
            raw.span(),
            format!(
                "apps.{name}.root must be an absolute path, got {:?}",
                written.display().to_string()
            ),
        );
        return written;
    }
    let root = match roots::canonical(&written) {
        Ok(r) => r,
        Err(m) => {
            ck.at(raw.span(), format!("apps.{name}.root: {m}"));
            return written;
        }
    };
    if roots::is_system(&roots::lexical(&written)) || roots::is_system(&root) {
        ck.at(
            raw.span(),
            format!(
                "apps.{name}.root {} is a system directory (or the file system's root); Switchyard creates and removes files below an app root, so give the app a directory of its own, such as /srv/{name}",
                spelled(&written, &root)
            ),
        );
    }
    root
}

/// A root as resolved, with how it was written when that differs.
fn spelled(written: &Path, root: &Path) -> String {
    if written == root {
        root.display().to_string()
    } else {
        format!("{} (written {})", root.display(), written.display())
    }
}

/// Two apps in one root (however it is spelled), or one inside the other,
/// would fight over `current`, the lock and each other's files.
fn check_roots(ck: &mut Checker<'_>, apps: &BTreeMap<String, AppConfig>) {
    let list: Vec<(&String, &AppConfig)> = apps.iter().collect();
    for (i, (a, ca)) in list.iter().enumerate() {
        for (b, cb) in &list[i + 1..] {
            let at =
                |ck: &Checker<'_>, n: &str| ck.roots.get(n).map(|r| r.1.clone()).unwrap_or(0..0);
            let written = |ck: &Checker<'_>, n: &str, root: &Path| {
                ck.roots
                    .get(n)
                    .map(|r| spelled(&r.0, root))
                    .unwrap_or_else(|| root.display().to_string())
            };
            let (wa, wb) = (written(ck, a, &ca.root), written(ck, b, &cb.root));
            if ca.root == cb.root {
                let span = at(ck, b);
                ck.at(
                    span,
                    format!(
                        "apps {a} and {b} share the root {}: apps.{a}.root is {wa}, apps.{b}.root is {wb}; each app needs its own root",
                        ca.root.display()
                    ),
                );
            } else if cb.root.starts_with(&ca.root) || ca.root.starts_with(&cb.root) {
                let (inner, iw, outer, ow) = if cb.root.starts_with(&ca.root) {
                    (b, wb, a, wa)
                } else {
                    (a, wa, b, wb)
                };
                let span = at(ck, inner);
                ck.at(
                    span,
                    format!(
                        "apps.{inner}.root {iw} is inside apps.{outer}.root {ow}; app roots may not nest, give each its own directory"
                    ),
                );
            }
        }
    }
}

/// `[agent]`: the service's own settings.
fn check_agent(ck: &mut Checker<'_>, raw: Option<Spanned<RawAgent>>) -> AgentConfig {
    let mut agent = AgentConfig::default();
    let Some(a) = raw else {
        return agent;
    };
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
            ck.file_mode(f.span(), "agent.webhook_secret_file", f.get_ref(), true);
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
    agent
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
            ck.file_mode(
                f.span(),
                &format!("apps.{name}.trust.key_files"),
                f.get_ref(),
                false,
            );
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
                    ck.file_mode(
                        f.span(),
                        &format!("apps.{name}.source.token_file"),
                        f.get_ref(),
                        true,
                    );
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
