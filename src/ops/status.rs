//! Read-only views of an app: status, the installed releases, and a
//! release checked against its install manifest. None takes the lock.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::AppConfig;
use crate::fs;
use crate::ops::error::DeployError;
use crate::store::history::{self, Event};
use crate::store::journal::Journal;
use crate::store::layout::AppPaths;
use crate::store::manifest::{ReleaseMeta, SignatureInfo};
use crate::store::state::{AppLock, AppState};
use crate::version::Version;

/// What `status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The app.
    pub app: String,
    /// Its root.
    pub root: PathBuf,
    /// The live release.
    pub current: Option<Version>,
    /// The rollback target.
    pub last_good: Option<Version>,
    /// Installed releases.
    pub installed: Vec<Version>,
    /// Signatures that verified the live release (key id, trusted comment).
    pub current_signatures: Vec<SignatureInfo>,
    /// The highest version ever verified here.
    pub highest_verified: Option<Version>,
    /// The downgrade floor: the highest verified release not quarantined.
    pub downgrade_floor: Option<Version>,
    /// Set while the agent may not deploy on its own (`switchyard hold`, or
    /// a manual promote or revert).
    pub hold: Option<crate::store::state::Hold>,
    /// The operation running now, if any.
    pub running: Option<crate::store::state::LockHolder>,
    /// An interrupted operation the next command will undo.
    pub interrupted: Option<String>,
    /// The last history event.
    pub last_event: Option<Event>,
    /// The last (or running) deploy: state, step, last error.
    pub deploy: Option<crate::store::state::DeployRecord>,
    /// Set when deploys are blocked until `switchyard resolve`.
    pub attention: Option<crate::store::state::Attention>,
    /// The maintenance flag, when on.
    pub maintenance: Option<crate::store::layout::maintenance::Maintenance>,
    /// Quarantined releases.
    pub quarantined: std::collections::BTreeMap<String, crate::store::state::Quarantine>,
    /// Failed automatic deploys the agent remembers (`.switchyard/agent.json`),
    /// by version.
    #[serde(default)]
    pub agent_failures: std::collections::BTreeMap<String, crate::store::agent::RememberedFailure>,
    /// Where this host stood in the candidate's fleet rollout at the
    /// agent's last poll.
    #[serde(default)]
    pub fleet: Option<crate::store::agent::FleetView>,
    /// Problems noticed (a dangling link, ...).
    pub problems: Vec<String>,
    /// The next scheduled deploy.
    #[serde(default)]
    pub next_scheduled: Option<NextScheduled>,
    /// Newer releases marked critical, with their deadlines (empty when
    /// the source could not be asked).
    #[serde(default)]
    pub critical: Vec<crate::source::CriticalRelease>,
}

/// The next scheduled deploy, and the hold that keeps it waiting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NextScheduled {
    /// The entry.
    #[serde(flatten)]
    pub entry: crate::ops::schedule::ScheduleEntry,
    /// Who holds the app, when it is held: the deploy waits for `unhold`.
    pub held_by: Option<String>,
}

/// Reads the app's status without taking the lock or changing anything.
pub(super) fn status(
    cfg: &AppConfig,
    source: &dyn crate::source::ReleaseSource,
) -> Result<Status, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let mut problems = Vec::new();
    let current = paths.current_version()?;
    let last_good = paths.last_good_version()?;
    let installed = paths.installed()?;
    for (name, v) in [("current", &current), ("last-good", &last_good)] {
        if let Some(v) = v
            && !installed.contains(v)
        {
            problems.push(format!("{name} points at {v}, which is not installed"));
        }
    }
    if current.is_none() && fs::symlink_metadata(&paths.current())?.is_some() {
        problems.push("current is not a releases/<version> symlink".into());
    }
    let st = if fs::metadata(&paths.state_dir())?.is_some() {
        AppState::load(&paths)?
    } else {
        AppState::default()
    };
    let running = if fs::metadata(&paths.lock())?.is_some() {
        AppLock::holder(&paths)?
    } else {
        None
    };
    let interrupted = if running.is_none() {
        Journal::read(&paths)?.map(|j| {
            format!(
                "{} {} (pid {}) was interrupted; the next command undoes it",
                j.op,
                j.target.map(|v| v.to_string()).unwrap_or_default(),
                j.pid
            )
        })
    } else {
        None
    };
    let last_event = history::read(&paths)?.pop().map(|s| s.event);
    let current_signatures = match &current {
        Some(v) => ReleaseMeta::load(&paths, v)?
            .map(|m| m.signatures)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let maintenance = crate::store::layout::maintenance::get(&paths)?;
    // What the agent remembers is advice: a damaged file is named, not fatal.
    let (agent_failures, fleet) = match crate::store::agent::AgentMemory::load(&paths) {
        Ok(m) => (m.failures, m.fleet.filter(|_| cfg.fleet.is_some())),
        Err(e) => {
            problems.push(crate::chain::chain(&e));
            Default::default()
        }
    };
    let downgrade_floor = st.downgrade_floor(&installed);
    let next_scheduled = if fs::metadata(&paths.state_dir())?.is_some() {
        crate::ops::schedule::load(&paths)?
            .next_pending()
            .map(|e| NextScheduled {
                entry: e.clone(),
                held_by: st.hold.as_ref().map(|h| h.by.clone()),
            })
    } else {
        None
    };
    // Best effort: status must work while the source is down.
    let critical = match source.releases() {
        Ok(all) => crate::verify::critical::critical_releases(cfg, source, &all, current.as_ref()),
        Err(e) => {
            tracing::warn!(app = %cfg.name, error = %crate::chain::chain(&e), "could not ask the source for critical releases");
            Vec::new()
        }
    };
    Ok(Status {
        agent_failures,
        fleet,
        downgrade_floor,
        next_scheduled,
        critical,
        deploy: st.deploy.clone(),
        attention: st.attention.clone(),
        maintenance,
        quarantined: st.quarantined.clone(),
        current_signatures,
        app: cfg.name.clone(),
        root: cfg.root.clone(),
        current,
        last_good,
        installed,
        hold: st.hold.clone(),
        highest_verified: st.highest_verified.clone(),
        running,
        interrupted,
        last_event,
        problems,
    })
}

/// Completes an update check with what this host knows: which newer
/// releases are quarantined, and the one command that would pass (the
/// newest release not quarantined, with the flags its gates need; or
/// `resolve` first while deploys are blocked).
pub(super) fn suggest(
    cfg: &AppConfig,
    paths: &AppPaths,
    r: &mut crate::source::UpdateCheck,
) -> Result<(), DeployError> {
    let st = if fs::metadata(&paths.state_dir())?.is_some() {
        AppState::load(paths)?
    } else {
        AppState::default()
    };
    r.quarantined = r
        .newer
        .iter()
        .filter(|v| st.is_quarantined(v))
        .cloned()
        .collect();
    let app = &cfg.name;
    if st.attention.is_some() {
        r.suggest = Some(format!("switchyard resolve {app}"));
        return Ok(());
    }
    let Some(v) = r.newer.iter().find(|v| !st.is_quarantined(v)) else {
        r.major_upgrade = false;
        return Ok(());
    };
    let mut cmd = format!("switchyard deploy {app} {v}");
    if let Some(c) = &r.current
        && v.is_major_upgrade_from(c)
        && !cfg.policy.allow_major
    {
        cmd.push_str(" --allow-major");
    }
    if st
        .downgrade_floor(&paths.installed()?)
        .is_some_and(|f| &f > v)
    {
        cmd.push_str(" --allow-downgrade");
    }
    // The major gate is judged against the release that is newest and
    // deployable, not the newest published.
    r.major_upgrade = r
        .current
        .as_ref()
        .is_some_and(|c| v.is_major_upgrade_from(c));
    r.suggest = Some(cmd);
    Ok(())
}

/// One row of `list`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListedRelease {
    /// The version.
    pub version: Version,
    /// Live.
    pub current: bool,
    /// Rollback target.
    pub last_good: bool,
    /// When it was installed.
    pub installed_at: Option<String>,
    /// Unpacked size.
    pub content_bytes: Option<u64>,
    /// SHA-256 of its asset.
    pub sha256: Option<String>,
    /// Disk it actually uses (files shared with another release by hardlink counted apart).
    pub disk: Option<crate::store::dedup::DiskUsage>,
    /// Why it is quarantined, when it is.
    pub quarantined: Option<crate::store::state::Quarantine>,
}

/// Installed releases, newest first.
pub(super) fn list(cfg: &AppConfig) -> Result<Vec<ListedRelease>, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let cur = paths.current_version()?;
    let lg = paths.last_good_version()?;
    let st = AppState::load(&paths)?;
    let mut out = Vec::new();
    for v in paths.installed()?.into_iter().rev() {
        let meta = ReleaseMeta::load(&paths, &v)?;
        out.push(ListedRelease {
            current: cur.as_ref() == Some(&v),
            last_good: lg.as_ref() == Some(&v),
            installed_at: meta.as_ref().map(|m| m.installed_at.clone()),
            content_bytes: meta.as_ref().map(|m| m.content_bytes),
            sha256: meta.map(|m| m.sha256),
            disk: crate::store::dedup::disk_usage(&paths, &v).ok(),
            quarantined: st.quarantined.get(&v.to_string()).cloned(),
            version: v,
        });
    }
    Ok(out)
}

/// How a release on disk differs from its manifest.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Drift {
    /// Entries whose content, type, mode or link target changed.
    pub changed: Vec<String>,
    /// Entries on disk that the manifest does not list.
    pub added: Vec<String>,
    /// Entries the manifest lists that are gone.
    pub missing: Vec<String>,
}

impl Drift {
    /// True when nothing differs.
    pub(crate) fn is_clean(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.missing.is_empty()
    }
}

/// The result of `switchyard verify`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VerifyReport {
    /// The release.
    pub version: Version,
    /// Entries checked.
    pub entries: usize,
    /// What differs.
    pub drift: Drift,
}

/// Checks `releases/<v>` against the manifest written when it was installed:
/// every file's type, mode, size and SHA-256, every link's target, and
/// nothing added (the shared links Switchyard made are expected).
pub(super) fn verify_release(cfg: &AppConfig, v: &Version) -> Result<VerifyReport, DeployError> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    let paths = AppPaths::new(&cfg.root);
    if !paths.is_installed(v)? {
        return Err(DeployError::NotInstalled {
            app: cfg.name.clone(),
            version: v.to_string(),
            installed: paths
                .installed()?
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let meta = ReleaseMeta::load(&paths, v)?.ok_or_else(|| {
        DeployError::Precheck(format!(
            "release {v} has no manifest ({}); it was not installed by this version of Switchyard",
            paths.manifest(v).display()
        ))
    })?;
    let root = paths.release(v);
    let shared: Vec<String> = cfg
        .shared
        .dirs
        .iter()
        .chain(cfg.shared.files.iter())
        .map(|p| p.display().to_string())
        .collect();
    let mut on_disk: BTreeMap<String, std::fs::Metadata> = fs::walk(&root)?.into_iter().collect();
    let mut drift = Drift::default();
    for e in &meta.entries {
        let p = root.join(&e.path);
        // A shared path replaced what the release shipped there: expected.
        if shared
            .iter()
            .any(|s| &e.path == s || e.path.starts_with(&format!("{s}/")))
        {
            on_disk.remove(&e.path);
            continue;
        }
        let Some(m) = on_disk.remove(&e.path) else {
            drift.missing.push(e.path.clone());
            continue;
        };
        let ok = match e.kind {
            crate::verify::unpack::EntryKind::Dir => m.is_dir(),
            crate::verify::unpack::EntryKind::Symlink => {
                m.file_type().is_symlink()
                    && fs::read_link(&p)?.map(|t| t.to_string_lossy().into_owned()) == e.target
            }
            crate::verify::unpack::EntryKind::File => {
                m.is_file()
                    && m.len() == e.size
                    && (m.permissions().mode() & 0o777) == e.mode
                    && Some(hex::encode(crate::verify::sha256_file(&p)?)) == e.sha256
            }
        };
        if !ok {
            drift.changed.push(e.path.clone());
        }
    }
    for (path, m) in on_disk {
        let is_shared_link = m.file_type().is_symlink() && shared.iter().any(|s| &path == s);
        let under_shared = shared.iter().any(|s| path.starts_with(&format!("{s}/")));
        // Parent directories created to hold a shared link are expected too.
        let shared_parent = m.is_dir() && shared.iter().any(|s| s.starts_with(&format!("{path}/")));
        if !(is_shared_link || under_shared || shared_parent) {
            drift.added.push(path);
        }
    }
    Ok(VerifyReport {
        version: v.clone(),
        entries: meta.entries.len(),
        drift,
    })
}
