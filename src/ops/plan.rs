//! `deploy --dry-run`: the plan of a deploy, and whether its pre-checks
//! would pass, from the source's listing and what is on disk. It takes no
//! lock and writes nothing (no state, no audit line, no download).

use serde::Serialize;

use crate::config::AppConfig;
use crate::config::health::{CheckConfig, HealthConfig};
use crate::fs;
use crate::ops::error::DeployError;
use crate::ops::lifecycle::DeployOptions;
use crate::source::ReleaseSource;
use crate::store::layout::AppPaths;
use crate::store::state::AppState;
use crate::version::{Version, VersionRequest};

/// One pre-check and whether it would pass.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PlanCheck {
    /// `blocked`, `quarantine`, `downgrade`, `major`, `hold`.
    pub check: &'static str,
    /// It would pass.
    pub pass: bool,
    /// What it found.
    pub detail: String,
}

/// A configured hook the deploy would run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PlanHook {
    /// `warm`, `backup`, `migrate`, `activate`, `on_failure`.
    pub hook: &'static str,
    /// Its command line.
    pub command: String,
    /// When it runs.
    pub when: &'static str,
}

/// What `deploy --dry-run` reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeployPlan {
    /// The app.
    pub app: String,
    /// Live now.
    pub from: Option<Version>,
    /// The version the source resolves the request to.
    pub to: Version,
    /// The source asked.
    pub source: String,
    /// `to` is live already: the deploy would do nothing.
    pub already_live: bool,
    /// `to` is installed already (no download).
    pub installed: bool,
    /// The pre-checks.
    pub checks: Vec<PlanCheck>,
    /// Every pre-check would pass.
    pub would_pass: bool,
    /// The hooks, in the order they would run.
    pub hooks: Vec<PlanHook>,
    /// A backup would be taken (backup hook, or backup_shared).
    pub backup: bool,
    /// The migrate hook would run.
    pub migrate: bool,
    /// The health checks per phase (`staging`, `live`).
    pub health: Vec<(String, Vec<String>)>,
    /// What the prune after a successful deploy would remove.
    pub prune: Vec<Version>,
}

fn describe(h: &HealthConfig) -> Vec<String> {
    h.checks
        .iter()
        .map(|c| match c {
            CheckConfig::Http(h) => format!("http GET {}", h.url),
            CheckConfig::Tcp(t) => format!("tcp {}", t.address),
            CheckConfig::Command(c) => format!("command {}", c.command),
        })
        .collect()
}

/// The plan of `deploy <req>` with `opts`, changing nothing.
pub(super) fn plan(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    req: &VersionRequest,
    opts: DeployOptions,
) -> Result<DeployPlan, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let from = paths.current_version()?;
    let info = source.resolve(req, crate::source::include_prereleases(cfg))?;
    let v = info.version.clone();
    let st = if fs::metadata(&paths.state_dir())?.is_some() {
        AppState::load(&paths)?
    } else {
        AppState::default()
    };
    let mut checks = Vec::new();
    let mut check = |check, pass, detail: String| {
        checks.push(PlanCheck {
            check,
            pass,
            detail,
        })
    };
    match &st.attention {
        Some(a) => check(
            "blocked",
            false,
            format!(
                "deploys are blocked ({}): {}; run `switchyard resolve {}` first",
                a.kind, a.reason, cfg.name
            ),
        ),
        None => check("blocked", true, "deploys are not blocked".into()),
    }
    match st.quarantined.get(&v.to_string()) {
        Some(q) if !opts.force => check(
            "quarantine",
            false,
            format!(
                "{v} is quarantined since {} ({}); --force would deploy it",
                q.time, q.reason
            ),
        ),
        Some(_) => check(
            "quarantine",
            true,
            format!("{v} is quarantined; --force given"),
        ),
        None => check("quarantine", true, format!("{v} is not quarantined")),
    }
    let floor = st.downgrade_floor(&paths.installed()?);
    match floor.as_ref().filter(|h| *h > &v) {
        Some(h) if !opts.allow_downgrade => check(
            "downgrade",
            false,
            format!(
                "{v} is older than {h}, the downgrade floor (the highest verified release not quarantined); --allow-downgrade would accept it"
            ),
        ),
        Some(h) => check(
            "downgrade",
            true,
            format!("{v} is older than {h}; --allow-downgrade given"),
        ),
        None => check("downgrade", true, "not a downgrade".into()),
    }
    match &from {
        Some(f) if v.is_major_upgrade_from(f) => {
            let allowed = opts.allow_major || cfg.policy.allow_major;
            check(
                "major",
                allowed,
                if allowed {
                    format!("{v} is a major upgrade from {f}; allowed")
                } else {
                    format!(
                        "{v} is a major upgrade from {f}; --allow-major (or allow_major = true) needed"
                    )
                },
            )
        }
        _ => check("major", true, "not a major upgrade".into()),
    }
    if let Some(h) = &st.hold {
        // A hold stops the agent, not an operator.
        check(
            "hold",
            true,
            format!(
                "held by {} since {} ({}); a manual deploy goes ahead",
                h.by, h.since, h.reason
            ),
        );
    }
    let already_live = from.as_ref() == Some(&v);
    let installed_now = paths.installed()?;
    let would_pass = checks.iter().all(|c| c.pass);
    let h = &cfg.hooks;
    let mut hooks = Vec::new();
    for (hook, spec, when) in [
        ("warm", &h.warm, "before the swap, in the new release"),
        ("backup", &h.backup, "before migrate"),
        ("migrate", &h.migrate, "before the swap"),
        ("activate", &h.activate, "after the swap"),
        ("on_failure", &h.on_failure, "only if the deploy fails"),
    ] {
        if let Some(s) = spec {
            hooks.push(PlanHook {
                hook,
                command: s.command.to_string(),
                when,
            });
        }
    }
    let mut health = Vec::new();
    for (phase, c) in [("staging", &cfg.health.staging), ("live", &cfg.health.live)] {
        if let Some(c) = c {
            health.push((phase.to_string(), describe(c)));
        }
    }
    // The prune a successful deploy ends with: `to` live, the old live
    // release last-good, the newest keep_releases kept.
    let mut after = installed_now.clone();
    if !after.contains(&v) {
        after.push(v.clone());
        after.sort();
    }
    let last_good = if already_live {
        paths.last_good_version()?
    } else {
        from.clone()
    };
    let cut = after.len().saturating_sub(cfg.keep_releases);
    let prune = after[..cut]
        .iter()
        .filter(|x| **x != v && Some(*x) != last_good.as_ref())
        .cloned()
        .collect();
    Ok(DeployPlan {
        app: cfg.name.clone(),
        source: source.describe(),
        installed: installed_now.contains(&v),
        already_live,
        from,
        to: v,
        would_pass,
        checks,
        backup: h.backup.is_some() || cfg.policy.backup_shared,
        migrate: h.migrate.is_some(),
        hooks,
        health,
        prune: if already_live { Vec::new() } else { prune },
    })
}
