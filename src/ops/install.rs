//! Installing a release: fetch, verify while streaming, unpack into
//! `releases/<version>` (never touching `current`); and pruning old ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{Ownership, SharedConfig};
use crate::fs::{self, FsError};
use crate::ops::error::{DeployError, chain};
use crate::ops::session::{Session, Txn, remove_release};
use crate::source::{ReleaseSource, sums_candidates};
use crate::store::journal::Journal;
use crate::store::layout::{AppPaths, STAGING_PREFIX, link_shared};
use crate::store::manifest::{ReleaseMeta, SignatureInfo};
use crate::store::state::{AppState, checkpoint, new_id, now_rfc3339};
use crate::verify::trust::{self, SigCheck, TrustPolicy, Verified};
use crate::verify::unpack::{
    ArchiveFormat, Sniffed, StripHints, UnpackError, Unpacked, unpack_tar, unpack_zip,
};
use crate::verify::{HashingReader, Sha256Sums, StreamCheck, check_digest};
use crate::version::{Version, VersionRequest};

/// Options of an install.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InstallOptions {
    /// Accept a version older than the highest already verified.
    pub allow_downgrade: bool,
}

/// Feeds the streamed asset to a signature check the caller gets back.
struct SharedSig(std::sync::Arc<std::sync::Mutex<SigCheck>>);

impl StreamCheck for SharedSig {
    fn update(&mut self, chunk: &[u8]) {
        if let Ok(mut c) = self.0.lock() {
            c.update(chunk);
        }
    }
}

/// Copies what it reads into a file (the download, kept for the cache once
/// verified).
struct Tee<R> {
    inner: R,
    out: std::io::BufWriter<std::fs::File>,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.out, &buf[..n])?;
        if n == 0 {
            std::io::Write::flush(&mut self.out)?;
        }
        Ok(n)
    }
}

/// Writes the rest of `r` to the new private file `path`.
fn spool(mut r: impl std::io::Read, path: &Path) -> Result<(), UnpackError> {
    let f = fs::create_new(path, 0o600)?;
    let mut w = std::io::BufWriter::new(f);
    std::io::copy(&mut r, &mut w)
        .and_then(|_| std::io::Write::flush(&mut w))
        .map_err(|e| UnpackError::Fs(FsError::new("write", path, e)))?;
    Ok(())
}

/// `.switchyard/cache/<version>/<asset>`: verified downloads.
fn cache_path(paths: &AppPaths, v: &Version, asset: &str) -> PathBuf {
    paths
        .state_dir()
        .join("cache")
        .join(v.dir_name())
        .join(asset)
}

/// Checks the `tag=` and `file=` fields of a trusted comment, when present,
/// against the release being installed: a valid signature of another
/// release's file is a replay.
fn check_comment(
    sig_file: &str,
    signed_file: &str,
    info: &crate::source::ReleaseInfo,
    v: &Verified,
) -> Result<(), DeployError> {
    for field in v.trusted_comment.split_whitespace() {
        let Some((k, val)) = field.split_once('=') else {
            continue;
        };
        let replay = |expected: &str| DeployError::Replayed {
            file: sig_file.to_string(),
            comment: v.trusted_comment.clone(),
            field: k.to_string(),
            found: val.to_string(),
            expected: expected.to_string(),
        };
        match k {
            "tag" | "version" => {
                let same =
                    val == info.tag || val.trim_start_matches('v') == info.version.to_string();
                if !same {
                    return Err(replay(&info.tag));
                }
            }
            "file" if val != signed_file => return Err(replay(signed_file)),
            _ => {}
        }
    }
    Ok(())
}

/// Gives the release tree, still in staging, and each configured shared
/// path the app's `owner`, `group` and `mode`, so that hooks running as the
/// app's user can build in the release and write to `shared/`, and a web
/// server in the group can read. Symlinks are never followed: entries are
/// `lchown`ed, and shared paths are opened component by component.
/// `shared/` itself and what is inside a shared directory stay as they are.
fn apply_ownership(
    paths: &AppPaths,
    shared: &SharedConfig,
    tree: &Path,
    own: &Ownership,
) -> Result<(), FsError> {
    if own.is_unset() {
        return Ok(());
    }
    if own.uid.is_some() || own.gid.is_some() {
        // The staging folder is root's, mode 0700: nothing can change the
        // tree under this walk.
        fs::lchown(tree, own.uid, own.gid)?;
        for (rel, _) in fs::walk(tree)? {
            fs::lchown(&tree.join(rel), own.uid, own.gid)?;
        }
    }
    if let Some(m) = own.dir_mode {
        fs::set_mode(tree, m)?;
    }
    for p in shared.dirs.iter().chain(shared.files.iter()) {
        fs::own_beneath(&paths.shared(), p, own.uid, own.gid, own.dir_mode)?;
    }
    Ok(())
}

/// The outcome of an install.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstallReport {
    /// The release.
    pub version: Version,
    /// False when it was already installed and nothing was done.
    pub installed: bool,
    /// SHA-256 of the asset, when it was installed now.
    pub sha256: Option<String>,
    /// Where it is.
    pub path: PathBuf,
    /// The archive's single top directory, when it was stripped (its
    /// contents became the release root).
    #[serde(default)]
    pub stripped_top_dir: Option<String>,
    /// The archive's format, as its first bytes said, when installed now.
    #[serde(default)]
    pub format: Option<ArchiveFormat>,
}

/// A staging directory under `releases/`, removed on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(paths: &AppPaths, v: &Version) -> Result<Staging, FsError> {
        let dir = paths.releases().join(format!(
            "{STAGING_PREFIX}{}-{}-{:08x}",
            v.dir_name(),
            std::process::id(),
            fastrand::u32(..)
        ));
        fs::create_dir(&dir, 0o700)?;
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            warn!(error = %e, "could not remove staging directory; the next command will");
        }
    }
}

impl Session<'_> {
    /// `switchyard install`: an install on its own, then (with no warm
    /// hook to change the tree later) identical files shared with the live
    /// release.
    pub(super) fn install_alone(
        &self,
        source: &dyn ReleaseSource,
        req: &VersionRequest,
        opts: InstallOptions,
    ) -> Result<InstallReport, DeployError> {
        let r = self.install(source, req, opts)?;
        if r.installed
            && self.cfg.hooks.warm.is_none()
            && let Some(cur) = self.paths.current_version()?
        {
            crate::store::dedup::dedup_release(
                &self.paths,
                &self.cfg.shared,
                &r.version,
                &cur,
                self.cfg.policy.dedup,
            )?;
        }
        Ok(r)
    }

    /// Installs a release from `source` into `releases/<version>` without
    /// touching `current`.
    pub(super) fn install(
        &self,
        source: &dyn ReleaseSource,
        req: &VersionRequest,
        opts: InstallOptions,
    ) -> Result<InstallReport, DeployError> {
        let started = Instant::now();
        let info = source.resolve(req, false)?;
        let v = info.version.clone();
        let span = tracing::info_span!("install", app = %self.cfg.name, version = %v);
        let _g = span.enter();
        let floor = AppState::load(&self.paths)?.downgrade_floor(&self.paths.installed()?);
        if let Some(h) = floor.as_ref().filter(|h| *h > &v)
            && !opts.allow_downgrade
        {
            let e = DeployError::Downgrade {
                app: self.cfg.name.clone(),
                version: v.to_string(),
                highest: h.to_string(),
            };
            self.record(self.make_event(
                "release.install.failed",
                &new_id(),
                None,
                Some(v.to_string()),
                "failed",
                started,
                Some(chain(&e)),
                Default::default(),
            ))?;
            return Err(e);
        }
        if self.paths.is_installed(&v)? {
            info!(step = %"install", "already installed; nothing to do");
            return Ok(InstallReport {
                path: self.paths.release(&v),
                version: v,
                installed: false,
                sha256: None,
                stripped_top_dir: None,
                format: None,
            });
        }
        let id = new_id();
        let downgrade = floor.is_some_and(|h| h > v);
        let res = self.install_inner(source, &info, &id, downgrade);
        match res {
            Ok(rep) => Ok(rep),
            Err(e) => {
                let mut details = serde_json::Map::new();
                details.insert("source".into(), source.describe().into());
                self.record(self.make_event(
                    "release.install.failed",
                    &id,
                    None,
                    Some(v.to_string()),
                    "failed",
                    started,
                    Some(chain(&e)),
                    details,
                ))?;
                Err(e)
            }
        }
    }

    fn install_inner(
        &self,
        source: &dyn ReleaseSource,
        info: &crate::source::ReleaseInfo,
        id: &str,
        downgrade: bool,
    ) -> Result<InstallReport, DeployError> {
        let started = Instant::now();
        let v = &info.version;
        let t = &self.cfg.trust;
        let policy = TrustPolicy::new(
            &self.cfg.name,
            &t.keys,
            &t.key_files,
            &t.revoked_keys,
            t.require_signature,
            t.allow_legacy_signatures,
        )?;
        info!(step = %"fetch", source = %source.describe(), "fetching");
        let fetched = source.fetch(info)?;
        if let Some(size) = fetched.asset_size {
            let need = self
                .cfg
                .policy
                .min_free_bytes
                .unwrap_or(size.saturating_mul(2).saturating_add(512 << 20));
            let free = fs::free_bytes(&self.paths.root)?;
            if free < need {
                return Err(DeployError::Precheck(format!(
                    "only {free} bytes free under {}, {need} needed (min_free_bytes, by default twice the asset plus 512 MiB); free some space or run `switchyard prune {}`",
                    self.paths.root.display(),
                    self.cfg.name
                )));
            }
        }
        let asset = fetched.asset_name.clone();
        let mut signatures = Vec::new();

        // The checksum manifest, and its signature, are checked before a
        // byte of the asset is read. The first of the usual names wins
        // (`SHA256SUMS`, `sha256sums.txt`, `<asset>.sha256`, ...).
        let sums_file = sums_candidates(&asset)
            .into_iter()
            .find(|n| fetched.sidecars.contains_key(n))
            .unwrap_or_else(|| crate::source::SUMS_NAME.to_string());
        let sums_name = sums_file.as_str();
        let sums_sig_name = format!("{sums_name}.minisig");
        let sums = match fetched.sidecars.get(sums_name) {
            Some(text) => {
                if let Some(sig) = fetched.sidecars.get(&sums_sig_name) {
                    let ver = trust::verify_bytes(&policy, sig, text, sums_name)?;
                    check_comment(&sums_sig_name, sums_name, info, &ver)?;
                    info!(step = %"verify", file = %sums_name, key_id = %ver.key_id, trusted_comment = %ver.trusted_comment, "signature verified");
                    signatures.push(SignatureInfo::new(sums_name, ver));
                }
                Some(Sha256Sums::parse_for(
                    &String::from_utf8_lossy(text),
                    sums_name,
                    &asset,
                )?)
            }
            None => None,
        };
        let sums_signed = !signatures.is_empty();
        let asset_sig_name = format!("{asset}.minisig");
        // The key id is checked here, before the asset streams.
        let asset_sig = match fetched.sidecars.get(&asset_sig_name) {
            Some(sig) => Some(trust::begin(&policy, sig, &asset_sig_name)?),
            None => None,
        };
        if policy.require_signature() && asset_sig.is_none() && !sums_signed {
            return Err(DeployError::Unsigned {
                app: self.cfg.name.clone(),
                version: v.to_string(),
                asset,
            });
        }
        let expected = match &sums {
            Some(s) => Some(s.expect(&asset, sums_name)?),
            None if asset_sig.is_some() => None,
            None => {
                return Err(DeployError::MissingSidecar {
                    version: v.to_string(),
                    file: sums_name.into(),
                    hint:
                        "publish one with `sha256sum <asset> > SHA256SUMS` (or `switchyard pack`)"
                            .into(),
                });
            }
        };

        let txn = Txn::begin(
            &self.paths,
            Journal {
                id: id.to_string(),
                op: "install".into(),
                pid: std::process::id(),
                started: now_rfc3339(),
                target: Some(v.clone()),
                prev_current: None,
                prev_last_good: None,
                creates_release: true,
                commit: None,
                exchanges: Vec::new(),
            },
        )?;
        checkpoint("install.journaled");
        let staging = Staging::new(&self.paths, v)?;
        let tree = staging.dir.join("tree");
        fs::create_dir(&tree, 0o755)?;
        let hints = self.strip_hints(v);
        let shared_sig = asset_sig.map(|c| std::sync::Arc::new(std::sync::Mutex::new(c)));
        // A verified copy from an earlier download is used instead of the
        // network; it is verified again as it streams, like any input.
        let cache_entry = cache_path(&self.paths, v, &asset);
        let cached =
            source.is_remote() && fs::symlink_metadata(&cache_entry)?.is_some_and(|m| m.is_file());
        let mut cache_tmp = None;
        let input: Box<dyn std::io::Read + Send> = if cached {
            info!(step = %"fetch", path = %cache_entry.display(), "using the verified copy in the download cache");
            drop(fetched.asset);
            Box::new(fs::open(&cache_entry)?)
        } else if source.is_remote() {
            let tmp = staging.dir.join("download");
            let f = fs::create_new(&tmp, 0o600)?;
            cache_tmp = Some(tmp);
            Box::new(Tee {
                inner: fetched.asset,
                out: std::io::BufWriter::new(f),
            })
        } else {
            fetched.asset
        };
        let mut reader = HashingReader::new(input);
        if let Some(c) = &shared_sig {
            reader = reader.with_check(Box::new(SharedSig(c.clone())));
        }
        // One pass, two threads: the hashing thread hashes and checks the
        // signature as the bytes arrive; this one decompresses and untars
        // them. The format is told by the first bytes, never by the name.
        let (pipe, hashing) = crate::verify::hash_on_thread(reader);
        // Over a limit: say whose limits, and which keys raise them.
        let app_limits = |e: UnpackError| match e {
            UnpackError::Limit(detail) => UnpackError::OverLimit {
                app: self.cfg.name.clone(),
                detail,
            },
            e => e,
        };
        let (unpacked, zip_file) = match Sniffed::new(pipe) {
            Err(e) => (
                Err(UnpackError::Fs(FsError::new("read asset", &asset, e))),
                None,
            ),
            Ok(sniffed) => match sniffed.format() {
                Err(e) => (Err(e), None),
                Ok(ArchiveFormat::Zip) => {
                    // A ZIP's directory is at its end: it is kept in a
                    // private file while it is hashed and checked, and
                    // unpacked from there once verified (two passes).
                    info!(step = "unpack", asset = %asset, format = "zip", "ZIP package: verifying while writing it to the staging folder, then unpacking it");
                    let path = staging.dir.join("asset.zip");
                    (spool(sniffed, &path).map(|_| None), Some(path))
                }
                Ok(format) => {
                    info!(step = "unpack", asset = %asset, format = format.extension(), "streaming: hashing, verifying and unpacking in one pass");
                    (
                        unpack_tar(format, sniffed, &tree, &self.cfg.unpack, &hints).map(Some),
                        None,
                    )
                }
            },
        };
        let unpacked = unpacked.map_err(app_limits);
        // Whatever unpacking said, a bad signature or checksum is the
        // more useful message: the hashing thread reads to the end anyway.
        let (drained, digest, checks, asset_bytes) = hashing.finish();
        drop(checks);
        let checked = (|| {
            if let Some(c) = shared_sig {
                let check = std::sync::Arc::try_unwrap(c)
                    .ok()
                    .and_then(|m| m.into_inner().ok())
                    .expect("the reader released the signature check");
                if drained.is_ok() {
                    let ver = check.finish()?;
                    check_comment(&asset_sig_name, &asset, info, &ver)?;
                    info!(step = %"verify", file = %asset, key_id = %ver.key_id, trusted_comment = %ver.trusted_comment, "signature verified");
                    signatures.push(SignatureInfo::new(&asset, ver));
                }
            }
            if let (Some(exp), Ok(_)) = (&expected, &drained) {
                check_digest(&asset, sums_name, exp, &digest)?;
            }
            if let (Some(api), Ok(_)) = (&fetched.asset_digest, &drained) {
                check_digest(&asset, "the digest the release API gives", api, &digest)?;
            }
            Ok::<(), DeployError>(())
        })();
        if cached && (checked.is_err() || drained.is_err() || unpacked.is_err()) {
            // A damaged cache entry must not fail every later install.
            warn!(path = %cache_entry.display(), "the cached download failed verification; removed");
            let _ = fs::remove_file(&cache_entry);
        }
        checked?;
        // A stream that broke off (a download cut, a read error) is the
        // cause of whatever the unpacker then said about the archive (it
        // saw the stream end early): said first, as what it is, so it is
        // not taken for a bad release and never retried.
        let op = if source.is_remote() {
            "download"
        } else {
            "read asset"
        };
        drained.map_err(|e| FsError::new(op, &asset, e))?;
        let unpacked = unpacked?;
        let unpacked: Unpacked = match (unpacked, zip_file) {
            (Some(u), _) => u,
            (None, Some(path)) => {
                let u = unpack_zip(&path, &tree, &self.cfg.unpack, &hints);
                let _ = fs::remove_file(&path);
                u.map_err(app_limits)?
            }
            (None, None) => unreachable!("a tar stream is unpacked, a ZIP is spooled"),
        };
        if let Some(top) = &unpacked.stripped_top_dir {
            info!(step = %"unpack", stripped_top_dir = %top, "every entry was under {top}/: its contents are the release root (strip_top_dir = false keeps it)");
        }
        if let Some(tmp) = cache_tmp {
            // Verified: keep it, so a reinstall never downloads it again.
            let dir = fs::parent_of(&cache_entry).to_path_buf();
            fs::create_dir_all(&dir)?;
            let f = fs::open(&tmp)?;
            fs::fsync_file(&f, &tmp)?;
            fs::rename(&tmp, &cache_entry)?;
            fs::fsync_dir(&dir)?;
        }
        checkpoint("install.unpacked");

        link_shared(
            &self.cfg.name,
            &self.paths,
            &self.cfg.shared,
            &unpacked.content_root,
        )?;
        apply_ownership(
            &self.paths,
            &self.cfg.shared,
            &unpacked.content_root,
            &self.cfg.ownership,
        )?;
        // One syncfs makes every unpacked file durable before the rename
        // publishes the tree (an fsync per file costs far more on big trees).
        fs::syncfs(&staging.dir)?;
        let meta = ReleaseMeta {
            version: v.clone(),
            tag: info.tag.clone(),
            asset: fetched.asset_name.clone(),
            sha256: hex::encode(digest),
            asset_bytes,
            content_bytes: unpacked.content_bytes,
            installed_at: now_rfc3339(),
            install_id: id.to_string(),
            signatures,
            downgrade,
            format: Some(unpacked.format),
            stripped_top_dir: unpacked.stripped_top_dir.clone(),
            entries: unpacked.manifest,
        };
        fs::write_atomic(
            &self.paths.manifest(v),
            &serde_json::to_vec(&meta).expect("metadata serializes"),
        )?;
        checkpoint("install.before_rename");
        let dest = self.paths.release(v);
        fs::rename(&unpacked.content_root, &dest)?;
        fs::fsync_dir(&self.paths.releases())?;
        checkpoint("install.renamed");

        let mut st = AppState::load(&self.paths)?;
        if st.highest_verified.as_ref().is_none_or(|h| h < v) {
            st.highest_verified = Some(v.clone());
        }
        st.verified.insert(v.clone());
        st.save(&self.paths)?;
        let mut details = serde_json::Map::new();
        details.insert("asset".into(), meta.asset.clone().into());
        details.insert("sha256".into(), meta.sha256.clone().into());
        details.insert("source".into(), source.describe().into());
        details.insert(
            "signatures".into(),
            serde_json::to_value(&meta.signatures).unwrap_or_default(),
        );
        if downgrade {
            details.insert("allow_downgrade".into(), true.into());
        }
        checkpoint("install.recorded");
        txn.commit(self.make_event(
            "release.install.completed",
            id,
            None,
            Some(v.to_string()),
            "ok",
            started,
            None,
            details,
        ))?;
        drop(staging);
        info!(step = %"install", sha256 = %meta.sha256, bytes = meta.content_bytes, "installed");
        Ok(InstallReport {
            version: v.clone(),
            installed: true,
            sha256: Some(meta.sha256),
            path: dest,
            stripped_top_dir: meta.stripped_top_dir,
            format: meta.format,
        })
    }

    /// What the release's top directory may be called when it is packaging
    /// (see [`StripHints`]): the version, the app's name, the repository's.
    fn strip_hints(&self, v: &Version) -> StripHints {
        let mut names = vec![self.cfg.name.clone()];
        if let crate::config::SourceConfig::Github(g) = &self.cfg.source {
            names.push(g.repo.1.clone());
        }
        StripHints {
            version: Some(v.to_string()),
            names,
        }
    }

    /// Removes old releases, keeping the newest `keep_releases` plus
    /// `current` and `last-good` whatever their age. Returns what was removed.
    pub(super) fn prune(&self) -> Result<Vec<Version>, DeployError> {
        let started = Instant::now();
        let keep_n = self.cfg.keep_releases;
        let installed = self.paths.installed()?;
        let cur = self.paths.current_version()?;
        let lg = self.paths.last_good_version()?;
        let cut = installed.len().saturating_sub(keep_n);
        // Quarantined releases go first, so a broken release never keeps
        // its place while a good one is removed; then the oldest.
        let st = AppState::load(&self.paths)?;
        let (bad, good): (Vec<&Version>, Vec<&Version>) =
            installed.iter().partition(|v| st.is_quarantined(v));
        let mut removed = Vec::new();
        for v in bad.into_iter().chain(good).take(cut) {
            if Some(v) == cur.as_ref() || Some(v) == lg.as_ref() {
                continue;
            }
            remove_release(&self.paths, v)?;
            info!(app = %self.cfg.name, version = %v, "pruned");
            removed.push(v.clone());
        }
        // The download cache follows the releases: only installed ones keep theirs.
        let still: Vec<String> = self
            .paths
            .installed()?
            .iter()
            .map(|v| v.dir_name())
            .collect();
        let root = self.paths.open_root()?;
        if let Some(cache) = root.dir_optional(Path::new(".switchyard/cache"))? {
            for n in cache.list()? {
                if let Some(n) = n.to_str()
                    && !still.iter().any(|s| s == n)
                {
                    cache.remove_any(Path::new(n))?;
                }
            }
        }
        if !removed.is_empty() {
            let mut details = serde_json::Map::new();
            details.insert(
                "removed".into(),
                removed
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
            self.record(self.make_event(
                "release.prune.completed",
                &new_id(),
                None,
                None,
                "ok",
                started,
                None,
                details,
            ))?;
        }
        Ok(removed)
    }
}
