//! Checks the raw configuration and builds the validated types, collecting
//! every problem with its location instead of stopping at the first.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::config::fleet;
use crate::config::raw::{RawAgent, RawApp, RawConfig, RawHealth, RawHooks, RawUnpack};
use crate::config::{
    AgentConfig, AppAgentConfig, AppConfig, Config, ConfigError, HealthChecks, HooksConfig,
    Ownership, Policy, Problem, RestorePolicy, Retention, Severity, SourceConfig, UnpackLimits,
    health, hooks, lenient, line_col, lookup_group, lookup_user, policy, roots,
};
use crate::version::check_component;
use shared::check_shared;
use source::check_source;
use trust::check_trust;

mod console;
mod email;
mod shared;
mod source;
mod trust;

/// The problems (and warnings) found so far, located in `text`.
struct Checker<'a> {
    text: &'a str,
    /// The file, named in every problem.
    path: &'a Path,
    problems: Vec<Problem>,
    /// Each app's root as written, and where.
    roots: BTreeMap<String, (PathBuf, Range<usize>)>,
    warnings: Vec<Problem>,
    /// Referenced files and folders missing or unreadable on this host.
    unavailable: Vec<Problem>,
    /// `[notify.email]`, read before the apps that use it.
    email: email::EmailState,
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
            file: self.path.to_path_buf(),
            line,
            column,
            severity: Severity::Error,
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
        let mut p = self.locate(span, message);
        p.severity = Severity::Warning;
        self.warnings.push(p);
    }

    /// Records a referenced file or folder that is missing or unreadable.
    fn unavailable(&mut self, span: Range<usize>, message: impl Into<String>) {
        let p = self.locate(span, message);
        self.unavailable.push(p);
    }

    /// A file or folder the configuration names must exist here and be
    /// readable by whoever checks (the agent runs as root; an operator
    /// running `config check` as someone else is told who could not read
    /// it). Returns its metadata when it can be looked at.
    fn reference(
        &mut self,
        span: Range<usize>,
        key: &str,
        path: &Path,
        dir: bool,
    ) -> Option<std::fs::Metadata> {
        use nix::unistd::{AccessFlags, Uid, access};
        let what = if dir { "folder" } else { "file" };
        let m = match crate::fs::metadata(path) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.unavailable(
                    span,
                    format!(
                        "{key}: {} does not exist; create the {what} or correct the path",
                        path.display()
                    ),
                );
                return None;
            }
            Err(e) => {
                self.unavailable(span, format!("{key}: {}", crate::chain::chain(&e)));
                return None;
            }
        };
        if m.is_dir() != dir {
            let is = if m.is_dir() {
                "a folder"
            } else {
                "not a folder"
            };
            self.unavailable(
                span,
                format!("{key}: {} is {is}; it must name a {what}", path.display()),
            );
            return None;
        }
        let need = if dir {
            AccessFlags::R_OK | AccessFlags::X_OK
        } else {
            AccessFlags::R_OK
        };
        if let Err(e) = access(path, need) {
            self.unavailable(
                span,
                format!(
                    "{key}: {} is not readable by uid {} ({e}); the agent reads it as root: check its mode and owner, or run the check as the agent's user",
                    path.display(),
                    Uid::current()
                ),
            );
            return None;
        }
        Some(m)
    }

    /// A file whose content decides who is trusted (`secret`: and which
    /// must stay unread): it must exist and be readable; one other users
    /// can write is refused, for they could put their own secret or key in
    /// it; a secret they can read is warned about.
    fn file_mode(&mut self, span: Range<usize>, key: &str, path: &Path, secret: bool) {
        use std::os::unix::fs::PermissionsExt;
        let Some(m) = self.reference(span.clone(), key, path, false) else {
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
    let mut ck = Checker {
        text,
        path,
        problems: Vec::new(),
        roots: BTreeMap::new(),
        warnings: Vec::new(),
        unavailable: Vec::new(),
        email: Default::default(),
    };
    let (raw, structural) = match lenient::read::<RawConfig>(text) {
        Ok(r) => r,
        Err(syntax) => {
            ck.at(syntax.span.unwrap_or(0..0), syntax.message);
            return Err(invalid(ck.problems));
        }
    };
    for f in structural {
        ck.at(f.span.unwrap_or(0..0), f.message);
    }
    let Some(raw) = raw else {
        return Err(invalid(ck.problems));
    };
    if raw.apps.is_empty() {
        // A warning: the packaged sample ships with its app commented out,
        // and is a valid file; the agent refuses to start without an app.
        ck.warn(
            0..0,
            "no apps configured: add an [apps.<name>] table with root and source",
        );
    }
    email::check_notify(&mut ck, raw.notify);
    let mut apps = BTreeMap::new();
    for (name, app) in raw.apps {
        if let Some(a) = check_app(&mut ck, &name, app) {
            apps.insert(name, a);
        }
    }
    check_roots(&mut ck, &apps);
    email::check_recipients(&mut ck);
    let agent = check_agent(&mut ck, raw.agent);
    let console = console::check_console(&mut ck, raw.console, &agent);
    fleet::share_identity(&mut apps, &agent);
    if !ck.problems.is_empty() {
        // Everything at once: a missing key file is worth knowing while
        // the file is being fixed anyway.
        let mut all = ck.problems;
        all.append(&mut ck.unavailable);
        all.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        return Err(invalid(all));
    }
    Ok(Config {
        path: path.to_path_buf(),
        apps,
        agent,
        console,
        warnings: ck.warnings,
        unavailable: ck.unavailable,
    })
}

/// Validates one `[apps.<name>]`; `None` when it has no usable source (its
/// problems are recorded either way).
fn check_app(ck: &mut Checker<'_>, name: &str, app: Spanned<RawApp>) -> Option<AppConfig> {
    let app_span = app.span();
    let app = app.into_inner();
    if let Err(e) = check_component("app name", name) {
        ck.at(app_span.clone(), e.to_string());
    }
    let root = match &app.root {
        Some(r) => check_root(ck, name, r),
        None => {
            ck.at(
                app_span.clone(),
                format!(
                    "apps.{name} has no root: add root = \"/srv/{name}\" (the app's own directory)"
                ),
            );
            PathBuf::new()
        }
    };
    let keep = *app.keep_releases.get_ref();
    if keep < 1 {
        ck.at(
            app.keep_releases.span(),
            format!("apps.{name}.keep_releases must be at least 1, got {keep}"),
        );
    }
    let source = match app.source {
        Some(s) => check_source(ck, name, s),
        None => {
            ck.at(
                app_span.clone(),
                format!("apps.{name} has no source: add [apps.{name}.source] with dir = \"/path\" or github = \"owner/repo\""),
            );
            None
        }
    };
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
            notify_format: app.notify_format,
            notify_escalate: app.notify_escalate,
        },
    );
    let agent = AppAgentConfig {
        email: email::check_app_email(ck, name, app.email),
        ..agent
    };
    let (retention, problems) = Retention::check(
        name,
        [
            ("keep_hook_logs", app.keep_hook_logs),
            ("audit_max_bytes", app.audit_max_bytes),
            ("audit_keep_files", app.audit_keep_files),
        ],
    );
    for (span, message) in problems {
        ck.at(span, message);
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
    let github = matches!(source, Some(SourceConfig::Github(_)));
    let fleet = app.fleet.and_then(|f| {
        let span = f.span();
        let checked = fleet::check(name, f.into_inner(), github)
            .map_err(|m| ck.at(span.clone(), m))
            .ok();
        if let Some(w) = checked
            .as_ref()
            .and_then(|c| fleet::operators_warning(name, c))
        {
            ck.warn(span, w);
        }
        checked
    });
    Some(AppConfig {
        fleet,
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
        retention,
    })
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
    notify_format: Option<Spanned<String>>,
    notify_escalate: Option<Vec<Spanned<String>>>,
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
    if let Some(f) = &raw.notify_format {
        match f.get_ref().as_str() {
            "json" => agent.notify_format = crate::config::NotifyFormat::Json,
            "slack" => agent.notify_format = crate::config::NotifyFormat::Slack,
            other => ck.at(
                f.span(),
                format!("apps.{name}.notify_format must be \"json\" or \"slack\", got {other:?}"),
            ),
        }
    }
    for e in raw.notify_escalate.iter().flatten() {
        match hooks::parse_duration(e.get_ref()) {
            Ok(d) if d >= Duration::from_secs(60) => agent.notify_escalate.push(d),
            Ok(_) => ck.at(
                e.span(),
                format!("apps.{name}.notify_escalate: each interval must be at least 1m"),
            ),
            Err(m) => ck.at(e.span(), format!("apps.{name}.notify_escalate: {m}")),
        }
    }
    agent.notify_escalate.sort();
    agent.notify_escalate.dedup();
    if (raw.notify_format.is_some() || raw.notify_escalate.is_some()) && agent.notify_url.is_none()
    {
        ck.at(
            0..0,
            format!("apps.{name}.notify_format and notify_escalate need notify_url"),
        );
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
                // At the root written second: the first one was there before.
                let (sa, sb) = (at(ck, a), at(ck, b));
                let span = if sa.start > sb.start { sa } else { sb };
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
    let (host_id, labels, problems) = fleet::agent_keys(a.host_id, a.labels);
    (agent.host_id, agent.labels) = (host_id, labels);
    for (span, m) in problems {
        ck.at(span, m);
    }
    if let Some(t) = a.shutdown_timeout {
        match hooks::parse_duration(t.get_ref()) {
            Ok(d) => agent.shutdown_timeout = d,
            Err(m) => ck.at(t.span(), format!("agent.shutdown_timeout: {m}")),
        }
    }
    agent
}
