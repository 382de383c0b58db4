//! Deduplicated releases: a file identical to the same path in the previous
//! release shares its data with it, by reflink where the file system can
//! (btrfs, XFS: copy-on-write, so each release can still change its copy), or
//! by hardlink when `dedup = "hardlink"` (ext4 and others). Hardlinked files
//! are one inode for both releases, so they are made read-only: an app that
//! writes into its own release tree would change the other release too, and
//! gets "permission denied" instead.
//!
//! Dedup runs after the warm hook (which may still change files) and compares
//! contents byte for byte, not only the manifests.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

pub(crate) use crate::config::DedupMode;
use crate::config::SharedConfig;
use crate::fs::{self, FsError};
use crate::store::layout::AppPaths;
use crate::store::manifest::ReleaseMeta;
use crate::store::state::StateError;
use crate::verify::unpack::{EntryKind, ManifestEntry};
use crate::version::Version;

/// What dedup did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct DedupReport {
    /// Files now sharing data with the previous release.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Shared by reflink.
    pub reflinked: u64,
    /// Shared by hardlink.
    pub hardlinked: u64,
}

fn under_shared(shared: &SharedConfig, path: &str) -> bool {
    shared.dirs.iter().chain(shared.files.iter()).any(|s| {
        let s = s.to_string_lossy();
        path == s || path.starts_with(&format!("{s}/"))
    })
}

fn same_content(a: &Path, b: &Path) -> Result<bool, FsError> {
    let mut fa = fs::open(a)?;
    let mut fb = fs::open(b)?;
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| FsError::new("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| FsError::new("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Shares the data of files of `new` identical to the same path in `prev`.
/// Manifests are updated where modes change (hardlinked files become
/// read-only in both releases).
pub(crate) fn dedup_release(
    paths: &AppPaths,
    shared: &SharedConfig,
    new: &Version,
    prev: &Version,
    mode: DedupMode,
) -> Result<DedupReport, StateError> {
    let mut report = DedupReport::default();
    if mode == DedupMode::Off || new == prev {
        return Ok(report);
    }
    let (Some(mut nm), Some(mut pm)) = (
        ReleaseMeta::load(paths, new)?,
        ReleaseMeta::load(paths, prev)?,
    ) else {
        return Ok(report);
    };
    let prev_by_path: std::collections::HashMap<String, usize> = pm
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let (nroot, proot) = (paths.release(new), paths.release(prev));
    let mut hardlink_ok = mode == DedupMode::Hardlink;
    let mut reflink_ok = true;
    let mut prev_changed = false;
    for e in nm.entries.iter_mut() {
        if e.kind != EntryKind::File || e.size == 0 || under_shared(shared, &e.path) {
            continue;
        }
        let Some(&pi) = prev_by_path.get(&e.path) else {
            continue;
        };
        let pe: &mut ManifestEntry = &mut pm.entries[pi];
        if pe.kind != EntryKind::File || pe.sha256 != e.sha256 || pe.size != e.size {
            continue;
        }
        let (nf, pf) = (nroot.join(&e.path), proot.join(&e.path));
        let (Some(nmeta), Some(pmeta)) = (fs::symlink_metadata(&nf)?, fs::symlink_metadata(&pf)?)
        else {
            continue;
        };
        if !nmeta.is_file() || !pmeta.is_file() || nmeta.ino() == pmeta.ino() {
            continue;
        }
        // The warm hook or a person may have changed either: compare bytes.
        if nmeta.len() != pmeta.len() || !same_content(&nf, &pf)? {
            continue;
        }
        let tmp = fs::temp_sibling(&nf);
        if reflink_ok {
            match reflink_copy::reflink(&pf, &tmp) {
                Ok(()) => {
                    // The copy is the agent's; the file it replaces may be the app user's.
                    fs::lchown(&tmp, Some(nmeta.uid()), Some(nmeta.gid()))?;
                    fs::set_mode(&tmp, nmeta.permissions().mode() & 0o7777)?;
                    fs::rename(&tmp, &nf)?;
                    report.files += 1;
                    report.reflinked += 1;
                    report.bytes += e.size;
                    continue;
                }
                Err(_) => {
                    // Not supported here (ext4, or another file system):
                    // stop trying for this release.
                    let _ = fs::remove_file(&tmp);
                    reflink_ok = false;
                }
            }
        }
        if hardlink_ok {
            // One inode for both: read-only, so neither release can change the other.
            let ro = pe.mode & !0o222;
            if (pmeta.permissions().mode() & 0o777) != ro {
                fs::set_mode(&pf, ro)?;
            }
            if let Err(err) = fs::hard_link(&pf, &tmp) {
                tracing::warn!(error = %err, "hardlinks not possible; dedup stops for this release");
                hardlink_ok = false;
                continue;
            }
            fs::rename(&tmp, &nf)?;
            pe.mode = ro;
            e.mode = ro;
            prev_changed = true;
            report.files += 1;
            report.hardlinked += 1;
            report.bytes += e.size;
        }
        if !reflink_ok && !hardlink_ok {
            break;
        }
    }
    if report.files > 0 {
        fs::syncfs(&nroot)?;
        fs::write_atomic(
            &paths.manifest(new),
            &serde_json::to_vec(&nm).expect("serializes"),
        )?;
        if prev_changed {
            fs::write_atomic(
                &paths.manifest(prev),
                &serde_json::to_vec(&pm).expect("serializes"),
            )?;
        }
    }
    tracing::info!(version = %new, files = report.files, bytes = report.bytes, reflinked = report.reflinked, hardlinked = report.hardlinked, "dedup");
    Ok(report)
}

/// Disk used by a release: bytes only it holds, and bytes it shares with
/// another release by hardlink. (Reflinked data is shared by the file system
/// below the file level and counts in each release, as `du` shows it.)
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    /// Allocated bytes of files only this release holds.
    pub unique_bytes: u64,
    /// Allocated bytes of files shared by hardlink.
    pub shared_bytes: u64,
}

/// Walks a release and adds up allocated blocks.
pub(crate) fn disk_usage(paths: &AppPaths, v: &Version) -> Result<DiskUsage, FsError> {
    let mut u = DiskUsage::default();
    for (_, m) in fs::walk(&paths.release(v))? {
        let bytes = m.blocks() * 512;
        if m.is_file() && m.nlink() > 1 {
            u.shared_bytes += bytes;
        } else {
            u.unique_bytes += bytes;
        }
    }
    Ok(u)
}

/// Rebuilds a release's manifest from what is on disk (after a warm hook
/// changed the tree), so `verify` checks the release as it went live.
pub(crate) fn rescan_manifest(
    paths: &AppPaths,
    shared: &SharedConfig,
    v: &Version,
) -> Result<(), StateError> {
    let Some(mut meta) = ReleaseMeta::load(paths, v)? else {
        return Ok(());
    };
    let root = paths.release(v);
    let mut entries = Vec::new();
    for (r, m) in fs::walk(&root)? {
        if under_shared(shared, &r) {
            continue;
        }
        let p = root.join(&r);
        let mode = m.permissions().mode() & 0o777;
        entries.push(if m.file_type().is_symlink() {
            let target = fs::read_link(&p)?.map(|t| t.to_string_lossy().into_owned());
            ManifestEntry {
                path: r,
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: None,
                target,
            }
        } else if m.is_dir() {
            ManifestEntry {
                path: r,
                kind: EntryKind::Dir,
                mode,
                size: 0,
                sha256: None,
                target: None,
            }
        } else {
            ManifestEntry {
                path: r,
                kind: EntryKind::File,
                mode,
                size: m.len(),
                sha256: Some(hex::encode(crate::verify::sha256_file(&p)?)),
                target: None,
            }
        });
    }
    // Parent directories made only to hold a shared link are not content.
    entries.retain(|e| {
        !(e.kind == EntryKind::Dir
            && shared
                .dirs
                .iter()
                .chain(shared.files.iter())
                .any(|s| s.to_string_lossy().starts_with(&format!("{}/", e.path)))
            && !meta.entries.iter().any(|m| m.path == e.path))
    });
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    meta.entries = entries;
    fs::write_atomic(
        &paths.manifest(v),
        &serde_json::to_vec(&meta).expect("serializes"),
    )?;
    Ok(())
}
