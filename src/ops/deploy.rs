//! The operations: install, promote, revert, prune, and the repair every
//! mutating command runs first. Each runs under the app lock as a
//! transaction: a journal records its intent before anything changes, and
//! the same journal-driven undo runs when the transaction is dropped
//! uncommitted and when the next start finds the journal of a killed process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::AppConfig;
use crate::fs::{self, FsError};
use crate::source::{ReleaseSource, SUMS_NAME, SourceError};
use crate::store::history::{self, Actor, Event, HistoryError};
use crate::store::layout::{AppPaths, LinkError, STAGING_PREFIX, link_shared};
pub use crate::store::manifest::{ReleaseMeta, SignatureInfo};
use crate::store::state::{
    AppLock, AppState, Journal, StateError, checkpoint, new_id, now_rfc3339, remove_debris,
};
use crate::verify::trust::{self, SigCheck, TrustError, TrustPolicy, Verified};
use crate::verify::unpack::{UnpackError, unpack_tar_gz};
use crate::verify::{HashingReader, Sha256Sums, StreamCheck, VerifyError, check_digest};
use crate::version::{Version, VersionRequest};

/// Errors of an operation. Each maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The source failed or lacks the release.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Checksum or signature verification failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The archive was refused or is corrupt.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Lock, journal or state failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// Audit log failure.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Shared paths could not be linked.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The release is missing a file the policy requires.
    #[error("release {version} has no {file}; {hint}")]
    MissingSidecar {
        /// The release.
        version: String,
        /// The missing file.
        file: String,
        /// What to do.
        hint: String,
    },
    /// A release that is not installed.
    #[error(
        "release {version} of {app} is not installed (installed: {installed}); run `switchyard install {app} {version}` first"
    )]
    NotInstalled {
        /// The app.
        app: String,
        /// The release asked for.
        version: String,
        /// What is installed.
        installed: String,
    },
    /// A signature was refused.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// No signature while the policy requires one.
    #[error(
        "release {version} is not signed: neither {asset}.minisig nor SHA256SUMS.minisig was published, and [apps.{app}.trust] require_signature = true; sign it with `switchyard sign` or `minisign -S` (or `switchyard pack --key`)"
    )]
    Unsigned {
        /// The app.
        app: String,
        /// The release.
        version: String,
        /// The asset's name.
        asset: String,
    },
    /// A valid signature whose trusted comment names another release or file.
    #[error(
        "{file}: the signature is valid, but its trusted comment {comment:?} names {field} {found:?} where {expected:?} was expected: a signed file from another release was replayed; nothing was installed"
    )]
    Replayed {
        /// The signature file.
        file: String,
        /// The trusted comment.
        comment: String,
        /// `tag` or `file`.
        field: String,
        /// What the comment says.
        found: String,
        /// What it should say.
        expected: String,
    },
    /// An older version than the highest ever verified.
    #[error(
        "refusing to install {app} {version}: it is older than {highest}, the highest version already verified here (downgrade protection); pass --allow-downgrade if you mean it, or use `switchyard revert`/`promote` to return to an installed release"
    )]
    Downgrade {
        /// The app.
        app: String,
        /// The release asked for.
        version: String,
        /// The floor.
        highest: String,
    },
    /// A pre-check refused the deploy; nothing changed.
    #[error("pre-check failed: {0}")]
    Precheck(String),
    /// Deploys are blocked until an operator runs `switchyard resolve`.
    #[error(
        "deploys of {app} are blocked ({kind}): {reason}\nWhen the app is back in order, run `switchyard resolve {app}`"
    )]
    Blocked {
        /// The app.
        app: String,
        /// `needs_attention` or `rollback_failed`.
        kind: String,
        /// What happened.
        reason: String,
    },
    /// The deploy failed (and was undone where anything had changed).
    #[error("deploy failed ({state}): {reason}")]
    Failed {
        /// The state it ended in.
        state: String,
        /// What failed and what was done about it.
        reason: String,
        /// The live release was swapped back.
        rolled_back: bool,
    },
    /// Switchyard stopped rather than guess; an operator must look.
    #[error("the app needs an operator: {reason}")]
    NeedsAttention {
        /// What happened and what to do.
        reason: String,
    },
    /// `revert` with no rollback target.
    #[error(
        "{app} has no release to revert to: last-good is not set; name one with `switchyard revert {app} --to <version>`"
    )]
    NothingToRevert {
        /// The app.
        app: String,
    },
}

/// Exit codes, documented in the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A runtime failure not covered below.
    pub const FAILURE: i32 = 1;
    /// Usage or configuration error.
    pub const USAGE: i32 = 2;
    /// Checksum or signature verification failed, or the archive was refused.
    pub const VERIFY: i32 = 3;
    /// Another operation holds the app's lock.
    pub const BUSY: i32 = 4;
    /// The app, release or version was not found.
    pub const NOT_FOUND: i32 = 5;
    /// A pre-check refused the deploy, or deploys are blocked; nothing changed.
    pub const PRECHECK: i32 = 6;
    /// The deploy failed; the live release was kept or reverted to.
    pub const DEPLOY_FAILED: i32 = 7;
    /// Switchyard stopped rather than guess (unknown migrate outcome, failed
    /// revert): the maintenance flag is on, `switchyard resolve` unblocks.
    pub const NEEDS_ATTENTION: i32 = 8;
}

impl DeployError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            DeployError::Verify(_)
            | DeployError::Unpack(_)
            | DeployError::MissingSidecar { .. }
            | DeployError::Trust(_)
            | DeployError::Unsigned { .. }
            | DeployError::Replayed { .. }
            | DeployError::Downgrade { .. } => exit::VERIFY,
            DeployError::State(StateError::Busy { .. }) => exit::BUSY,
            DeployError::Source(SourceError::NotFound { .. })
            | DeployError::NotInstalled { .. }
            | DeployError::NothingToRevert { .. } => exit::NOT_FOUND,
            DeployError::Source(SourceError::Version(_)) => exit::USAGE,
            DeployError::Source(SourceError::Refused { .. }) => exit::VERIFY,
            DeployError::Precheck(_) | DeployError::Blocked { .. } => exit::PRECHECK,
            DeployError::Failed { .. } => exit::DEPLOY_FAILED,
            DeployError::NeedsAttention { .. } => exit::NEEDS_ATTENTION,
            _ => exit::FAILURE,
        }
    }
}

/// Options of an install.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
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

/// `.switchyard/cache/<version>/<asset>`: verified downloads.
pub fn cache_path(paths: &AppPaths, v: &Version, asset: &str) -> PathBuf {
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

/// An app with its lock held and its on-disk state repaired: the only way to
/// change anything under an app root.
pub struct Session<'a> {
    /// The app's configuration.
    pub cfg: &'a AppConfig,
    /// Its paths.
    pub paths: AppPaths,
    /// Who is acting.
    pub actor: Actor,
    /// The clock hooks and health checks are timed on.
    pub(crate) clock: Arc<dyn Clock>,
    _lock: AppLock,
}

/// The outcome of an install.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// The release.
    pub version: Version,
    /// False when it was already installed and nothing was done.
    pub installed: bool,
    /// SHA-256 of the asset, when it was installed now.
    pub sha256: Option<String>,
    /// Where it is.
    pub path: PathBuf,
}

/// The outcome of a switch (promote or revert).
#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    /// Live before.
    pub from: Option<Version>,
    /// Live now.
    pub to: Version,
    /// `last-good` now.
    pub last_good: Option<Version>,
    /// False when `to` was already live.
    pub changed: bool,
}

/// A transaction: journal written before any change; dropped uncommitted, it
/// undoes itself through the same code the crash repair uses.
struct Txn<'p> {
    paths: &'p AppPaths,
    journal: Journal,
    committed: bool,
}

impl<'p> Txn<'p> {
    fn begin(paths: &'p AppPaths, journal: Journal) -> Result<Self, DeployError> {
        journal.write(paths)?;
        Ok(Txn {
            paths,
            journal,
            committed: false,
        })
    }

    fn commit(mut self) -> Result<(), DeployError> {
        Journal::clear(self.paths)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = undo(self.paths, &self.journal)
        {
            warn!(error = %e, op = %self.journal.op, "rollback failed; the next command will retry it");
        }
    }
}

/// Undoes what a journalled operation may have done, then clears the journal.
fn undo(paths: &AppPaths, j: &Journal) -> Result<(), DeployError> {
    match j.op.as_str() {
        "install" => {
            if let Some(v) = &j.target
                && j.creates_release
            {
                remove_release(paths, v)?;
            }
        }
        "promote" | "revert" => {
            set_link(&paths.current(), j.prev_current.as_ref())?;
            set_link(&paths.last_good(), j.prev_last_good.as_ref())?;
        }
        other => warn!(op = other, "unknown journal operation; clearing it"),
    }
    remove_debris(paths)?;
    Journal::clear(paths)?;
    Ok(())
}

/// Points `link` at `releases/<v>`, or removes it for `None`.
pub(crate) fn set_link(link: &Path, v: Option<&Version>) -> Result<(), FsError> {
    match v {
        Some(v) => fs::replace_symlink(&AppPaths::link_target(v), link),
        None => {
            if fs::symlink_metadata(link)?.is_some() {
                fs::remove_file(link)?;
                fs::fsync_dir(fs::parent_of(link))?;
            }
            Ok(())
        }
    }
}

/// Removes an installed release so that no partial `releases/<v>` is ever
/// visible: rename it aside first, then delete.
pub(crate) fn remove_release(paths: &AppPaths, v: &Version) -> Result<(), FsError> {
    let dir = paths.release(v);
    if fs::symlink_metadata(&dir)?.is_some() {
        let aside = paths.releases().join(format!(
            "{STAGING_PREFIX}removing-{}-{:08x}",
            v.dir_name(),
            fastrand::u32(..)
        ));
        fs::rename(&dir, &aside)?;
        fs::fsync_dir(&paths.releases())?;
        fs::remove_file(&paths.manifest(v))?;
        fs::remove_dir_all(&aside)?;
    } else {
        fs::remove_file(&paths.manifest(v))?;
    }
    Ok(())
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

impl<'a> Session<'a> {
    /// Takes the app's lock (failing fast unless `wait`), creates the root's
    /// folders, and repairs whatever a killed operation left behind.
    pub fn open(
        cfg: &'a AppConfig,
        actor: Actor,
        operation: &str,
        wait: bool,
    ) -> Result<Session<'a>, DeployError> {
        Self::open_with_clock(cfg, actor, operation, wait, Arc::new(SystemClock))
    }

    /// [`Session::open`] on the agent's clock (which tests may fake).
    pub(crate) fn open_with_clock(
        cfg: &'a AppConfig,
        actor: Actor,
        operation: &str,
        wait: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<Session<'a>, DeployError> {
        let paths = AppPaths::new(&cfg.root);
        paths.ensure()?;
        let lock = AppLock::acquire(&paths, &cfg.name, operation, wait)?;
        let s = Session {
            cfg,
            paths,
            actor,
            clock,
            _lock: lock,
        };
        s.repair()?;
        Ok(s)
    }

    /// Undoes an interrupted operation and removes temporary debris.
    fn repair(&self) -> Result<(), DeployError> {
        if let Some(j) = Journal::read(&self.paths)? {
            warn!(app = %self.cfg.name, op = %j.op, id = %j.id, pid = j.pid,
                "found the journal of an interrupted operation; undoing it");
            let started = Instant::now();
            undo(&self.paths, &j)?;
            self.record(
                &format!("release.{}.rolled_back", j.op),
                &j.id,
                j.prev_current.as_ref().map(|v| v.to_string()),
                j.target.as_ref().map(|v| v.to_string()),
                "rolled_back",
                started,
                Some(format!(
                    "interrupted (process {} did not finish); undone on the next start",
                    j.pid
                )),
                Default::default(),
            )?;
        }
        self.resume_interrupted_deploy()?;
        let removed = remove_debris(&self.paths)?;
        for p in removed {
            info!(app = %self.cfg.name, path = %p.display(), "removed debris of an interrupted operation");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        event: &str,
        id: &str,
        from: Option<String>,
        to: Option<String>,
        outcome: &str,
        started: Instant,
        error: Option<String>,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), DeployError> {
        history::append(
            &self.paths,
            &Event {
                time: now_rfc3339(),
                app: self.cfg.name.clone(),
                event: event.to_string(),
                id: id.to_string(),
                from,
                to,
                actor: self.actor.clone(),
                outcome: outcome.to_string(),
                duration_ms: started.elapsed().as_millis() as u64,
                error,
                details,
            },
        )?;
        Ok(())
    }

    fn installed_list(&self) -> String {
        let v = self.paths.installed().unwrap_or_default();
        if v.is_empty() {
            "none".into()
        } else {
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Installs a release from `source` into `releases/<version>` without
    /// touching `current`.
    pub fn install(
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
        let floor = AppState::load(&self.paths)?.highest_verified;
        if let Some(h) = floor.as_ref().filter(|h| *h > &v)
            && !opts.allow_downgrade
        {
            let e = DeployError::Downgrade {
                app: self.cfg.name.clone(),
                version: v.to_string(),
                highest: h.to_string(),
            };
            self.record(
                "release.install.failed",
                &new_id(),
                None,
                Some(v.to_string()),
                "failed",
                started,
                Some(e.to_string()),
                Default::default(),
            )?;
            return Err(e);
        }
        if self.paths.is_installed(&v)? {
            info!(step = "install", "already installed; nothing to do");
            return Ok(InstallReport {
                path: self.paths.release(&v),
                version: v,
                installed: false,
                sha256: None,
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
                self.record(
                    "release.install.failed",
                    &id,
                    None,
                    Some(v.to_string()),
                    "failed",
                    started,
                    Some(e.to_string()),
                    details,
                )?;
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
            &t.keys,
            &t.key_files,
            &t.revoked_keys,
            t.require_signature,
            t.allow_legacy_signatures,
        )?;
        info!(step = "fetch", source = %source.describe(), "fetching");
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
        // byte of the asset is read.
        let sums_sig_name = format!("{SUMS_NAME}.minisig");
        let sums = match fetched.sidecars.get(SUMS_NAME) {
            Some(text) => {
                if let Some(sig) = fetched.sidecars.get(&sums_sig_name) {
                    let ver = trust::verify_bytes(&policy, sig, text, SUMS_NAME)?;
                    check_comment(&sums_sig_name, SUMS_NAME, info, &ver)?;
                    info!(step = "verify", file = SUMS_NAME, key_id = %ver.key_id, trusted_comment = %ver.trusted_comment, "signature verified");
                    signatures.push(SignatureInfo::new(SUMS_NAME, ver));
                }
                Some(Sha256Sums::parse(
                    &String::from_utf8_lossy(text),
                    SUMS_NAME,
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
            Some(s) => Some(s.expect(&asset, SUMS_NAME)?),
            None if asset_sig.is_some() => None,
            None => {
                return Err(DeployError::MissingSidecar {
                    version: v.to_string(),
                    file: SUMS_NAME.into(),
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
            },
        )?;
        checkpoint("install.journaled");
        let staging = Staging::new(&self.paths, v)?;
        let tree = staging.dir.join("tree");
        fs::create_dir(&tree, 0o755)?;
        info!(step = "unpack", asset = %asset, "streaming: hashing, verifying and unpacking in one pass");
        let shared_sig = asset_sig.map(|c| std::sync::Arc::new(std::sync::Mutex::new(c)));
        // A verified copy from an earlier download is used instead of the
        // network; it is verified again as it streams, like any input.
        let cache_entry = cache_path(&self.paths, v, &asset);
        let cached =
            source.is_remote() && fs::symlink_metadata(&cache_entry)?.is_some_and(|m| m.is_file());
        let mut cache_tmp = None;
        let input: Box<dyn std::io::Read + Send> = if cached {
            info!(step = "fetch", path = %cache_entry.display(), "using the verified copy in the download cache");
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
        // One pass, two threads: this one hashes and checks the signature
        // as the bytes arrive; the caller's thread gunzips and untars them.
        let (pipe, hashing) = crate::verify::hash_on_thread(reader);
        let unpacked = unpack_tar_gz(pipe, &tree, &self.cfg.unpack);
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
                    info!(step = "verify", file = %asset, key_id = %ver.key_id, trusted_comment = %ver.trusted_comment, "signature verified");
                    signatures.push(SignatureInfo::new(&asset, ver));
                }
            }
            if let (Some(exp), Ok(_)) = (&expected, &drained) {
                check_digest(&asset, SUMS_NAME, exp, &digest)?;
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
        let unpacked = unpacked?;
        drained.map_err(|e| FsError::new("read asset", &asset, e))?;
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

        link_shared(&self.paths, &self.cfg.shared, &unpacked.content_root)?;
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
            st.save(&self.paths)?;
        }
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
        self.record(
            "release.install.completed",
            id,
            None,
            Some(v.to_string()),
            "ok",
            started,
            None,
            details,
        )?;
        checkpoint("install.recorded");
        txn.commit()?;
        drop(staging);
        info!(step = "install", sha256 = %meta.sha256, bytes = meta.content_bytes, "installed");
        Ok(InstallReport {
            version: v.clone(),
            installed: true,
            sha256: Some(meta.sha256),
            path: dest,
        })
    }

    /// Makes an installed release live: `current` swapped atomically, the
    /// previous live release becomes `last-good`.
    pub fn promote(&self, v: &Version) -> Result<SwitchReport, DeployError> {
        self.switch("promote", v)
    }

    /// Swaps `current` back to `last-good`, or to `to`.
    pub fn revert(&self, to: Option<&Version>) -> Result<SwitchReport, DeployError> {
        let target = match to {
            Some(v) => v.clone(),
            None => {
                self.paths
                    .last_good_version()?
                    .ok_or_else(|| DeployError::NothingToRevert {
                        app: self.cfg.name.clone(),
                    })?
            }
        };
        self.switch("revert", &target)
    }

    fn switch(&self, op: &str, v: &Version) -> Result<SwitchReport, DeployError> {
        let started = Instant::now();
        let span = tracing::info_span!("switch", app = %self.cfg.name, version = %v, step = op);
        let _g = span.enter();
        if !self.paths.is_installed(v)? {
            return Err(DeployError::NotInstalled {
                app: self.cfg.name.clone(),
                version: v.to_string(),
                installed: self.installed_list(),
            });
        }
        let cur = self.paths.current_version()?;
        let lg = self.paths.last_good_version()?;
        if cur.as_ref() == Some(v) {
            info!("already live; nothing to do");
            return Ok(SwitchReport {
                from: cur,
                to: v.clone(),
                last_good: lg,
                changed: false,
            });
        }
        let id = new_id();
        let txn = Txn::begin(
            &self.paths,
            Journal {
                id: id.clone(),
                op: op.to_string(),
                pid: std::process::id(),
                started: now_rfc3339(),
                target: Some(v.clone()),
                prev_current: cur.clone(),
                prev_last_good: lg.clone(),
                creates_release: false,
            },
        )?;
        checkpoint(&format!("{op}.journaled"));
        // last-good first: should we die between the two swaps, `current`
        // still names a complete release and the journal restores both.
        let new_lg = cur.clone().or(lg.clone());
        if let Some(c) = &cur {
            set_link(&self.paths.last_good(), Some(c))?;
        }
        checkpoint(&format!("{op}.last_good_swapped"));
        set_link(&self.paths.current(), Some(v))?;
        checkpoint(&format!("{op}.current_swapped"));
        self.record(
            &format!("release.{op}.completed"),
            &id,
            cur.as_ref().map(|v| v.to_string()),
            Some(v.to_string()),
            "ok",
            started,
            None,
            Default::default(),
        )?;
        checkpoint(&format!("{op}.recorded"));
        txn.commit()?;
        info!(from = ?cur.as_ref().map(|v| v.to_string()), "now live");
        Ok(SwitchReport {
            from: cur,
            to: v.clone(),
            last_good: new_lg,
            changed: true,
        })
    }

    /// Removes old releases, keeping the newest `keep_releases` plus
    /// `current` and `last-good` whatever their age. Returns what was removed.
    pub fn prune(&self) -> Result<Vec<Version>, DeployError> {
        let started = Instant::now();
        let keep_n = self.cfg.keep_releases;
        let installed = self.paths.installed()?;
        let cur = self.paths.current_version()?;
        let lg = self.paths.last_good_version()?;
        let cut = installed.len().saturating_sub(keep_n);
        let mut removed = Vec::new();
        for v in &installed[..cut] {
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
        let cache = self.paths.state_dir().join("cache");
        for n in fs::list_dir(&cache)? {
            if let Some(n) = n.to_str()
                && !still.iter().any(|s| s == n)
            {
                fs::remove_any(&cache.join(n))?;
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
            self.record(
                "release.prune.completed",
                &new_id(),
                None,
                None,
                "ok",
                started,
                None,
                details,
            )?;
        }
        Ok(removed)
    }
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
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
    /// The downgrade floor.
    pub highest_verified: Option<Version>,
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
    /// Problems noticed (a dangling link, ...).
    pub problems: Vec<String>,
}

/// Reads the app's status without taking the lock or changing anything.
pub fn status(cfg: &AppConfig) -> Result<Status, DeployError> {
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
    Ok(Status {
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
        highest_verified: st.highest_verified,
        running,
        interrupted,
        last_event,
        problems,
    })
}

/// One row of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListedRelease {
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
}

/// Installed releases, newest first.
pub fn list(cfg: &AppConfig) -> Result<Vec<ListedRelease>, DeployError> {
    let paths = AppPaths::new(&cfg.root);
    let cur = paths.current_version()?;
    let lg = paths.last_good_version()?;
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
            version: v,
        });
    }
    Ok(out)
}

/// How a release on disk differs from its manifest.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// Entries whose content, type, mode or link target changed.
    pub changed: Vec<String>,
    /// Entries on disk that the manifest does not list.
    pub added: Vec<String>,
    /// Entries the manifest lists that are gone.
    pub missing: Vec<String>,
}

impl Drift {
    /// True when nothing differs.
    pub fn is_clean(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.missing.is_empty()
    }
}

/// The result of `switchyard verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
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
pub fn verify_release(cfg: &AppConfig, v: &Version) -> Result<VerifyReport, DeployError> {
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
