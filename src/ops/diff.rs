//! `switchyard diff`: what changed between two installed releases, read
//! from their install manifests (nothing on disk is hashed again).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::AppConfig;
use crate::ops::error::DeployError;
use crate::store::layout::AppPaths;
use crate::store::manifest::ReleaseMeta;
use crate::verify::unpack::{EntryKind, ManifestEntry};
use crate::version::Version;

/// One entry present in both releases that differs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Changed {
    /// Path relative to the release root.
    pub path: String,
    /// What differs: `content`, `mode`, `type`, `target`.
    pub what: Vec<&'static str>,
    /// The entry in the first release.
    pub from: ManifestEntry,
    /// The entry in the second release.
    pub to: ManifestEntry,
}

/// What `diff` reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReleaseDiff {
    /// The first release.
    pub from: Version,
    /// The second release.
    pub to: Version,
    /// In the second only.
    pub added: Vec<ManifestEntry>,
    /// In the first only.
    pub removed: Vec<ManifestEntry>,
    /// In both, different.
    pub changed: Vec<Changed>,
    /// In both, the same.
    pub unchanged: usize,
}

fn kind(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

/// An entry's kind as people read it.
pub(crate) fn kind_name(e: &ManifestEntry) -> &'static str {
    kind(e.kind)
}

fn load(cfg: &AppConfig, paths: &AppPaths, v: &Version) -> Result<ReleaseMeta, DeployError> {
    ReleaseMeta::load(paths, v)?.ok_or_else(|| DeployError::NotInstalled {
        app: cfg.name.clone(),
        version: v.to_string(),
        installed: paths
            .installed()
            .map(|l| {
                l.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
    })
}

/// Compares the install manifests of `a` and `b`.
pub(super) fn diff(cfg: &AppConfig, a: &Version, b: &Version) -> Result<ReleaseDiff, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let (ma, mb) = (load(cfg, &paths, a)?, load(cfg, &paths, b)?);
    let mut left: BTreeMap<String, ManifestEntry> = ma
        .entries
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let mut out = ReleaseDiff {
        from: a.clone(),
        to: b.clone(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
    };
    for e in mb.entries {
        let Some(old) = left.remove(&e.path) else {
            out.added.push(e);
            continue;
        };
        let mut what = Vec::new();
        if old.kind != e.kind {
            what.push("type");
        } else {
            if old.sha256 != e.sha256 || old.size != e.size {
                what.push("content");
            }
            if old.target != e.target {
                what.push("target");
            }
        }
        // A symlink's mode means nothing.
        if old.mode != e.mode && e.kind != EntryKind::Symlink {
            what.push("mode");
        }
        if what.is_empty() {
            out.unchanged += 1;
        } else {
            out.changed.push(Changed {
                path: e.path.clone(),
                what,
                from: old,
                to: e,
            });
        }
    }
    out.removed = left.into_values().collect();
    out.added.sort_by(|x, y| x.path.cmp(&y.path));
    out.changed.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}
