//! Release-side tooling: `pack` turns a build directory into a reproducible
//! `.tar.gz` or `.tar.zst` plus `SHA256SUMS`, laid out as a release folder
//! that `install` reads and a GitHub release carries as assets.
//!
//! Reproducible means the same input gives the same bytes: entries sorted,
//! mtimes fixed, owners zeroed, modes normalised, no gzip timestamp or name,
//! zstd on one thread at a fixed level.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fs::{self, FsError};
use crate::source::SUMS_NAME;
use crate::verify::unpack::StripHints;
use crate::verify::{HashingWriter, Sha256Sums};
use crate::version::{Version, VersionError, check_component};

/// Errors while packing.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Bad version or name.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The input holds something a release cannot carry.
    #[error("cannot pack {}: {reason}", path.display())]
    Unsupported {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output already exists.
    #[error("{} already exists; remove it or choose another --out", .0.display())]
    Exists(PathBuf),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Signing failed.
    #[error(transparent)]
    Trust(#[from] crate::verify::trust::SigningError),
    /// `--rollout` names a file without a valid plan.
    #[error("--rollout {}: {reason}", path.display())]
    Rollout {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to write.
        reason: String,
    },
}

/// The fixed mtime of every entry (2000-01-01T00:00:00Z): not 0, because
/// some tools treat a zero mtime as "unknown".
pub(crate) const FIXED_MTIME: u64 = 946_684_800;

/// The mtime of every entry: `SOURCE_DATE_EPOCH` when set (the
/// reproducible-builds convention; CI sets it to the commit time, so each
/// release has its own, still reproducible, timestamps and web servers'
/// Last-Modified/ETag change between releases), else [`FIXED_MTIME`].
pub(crate) fn entry_mtime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(FIXED_MTIME)
}

/// The compression `pack` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum PackFormat {
    /// gzip: read by every tool.
    #[default]
    #[value(name = "tar.gz")]
    #[serde(rename = "tar.gz")]
    TarGz,
    /// zstd: smaller, and several times faster to decompress.
    #[value(name = "tar.zst")]
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// The zstd level of `pack --format tar.zst`. Decompression runs at about
/// the same speed at every level, so the level only trades pack time for
/// size: 6 is most of the size gain over the default 3 at a fraction of the
/// pack time of 19, and keeps a 2 MiB window (19 wants 8 MiB), so the
/// decoder's memory stays small.
pub(crate) const ZSTD_LEVEL: i32 = 6;

impl PackFormat {
    fn extension(self) -> &'static str {
        match self {
            PackFormat::TarGz => "tar.gz",
            PackFormat::TarZst => "tar.zst",
        }
    }
}

/// What `pack` produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Packed {
    /// The input's only top-level entry, when it is a directory: install
    /// strips it, or keeps it, as `stripped_on_install` says.
    pub single_top_dir: Option<String>,
    /// Whether install strips `single_top_dir` by default (its name carries
    /// the version or a commit); `unpack.strip_top_dir` overrides it.
    pub stripped_on_install: bool,
    /// The release folder (`OUT/<version>/`).
    pub dir: PathBuf,
    /// The archive.
    pub asset: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// The checksum manifest.
    pub sums: PathBuf,
    /// Signatures written (`<asset>.minisig`, `SHA256SUMS.minisig`,
    /// `release.toml.minisig`).
    pub signatures: Vec<PathBuf>,
    /// `release.toml`, when `--rollout` gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_toml: Option<PathBuf>,
}

/// How `pack` signs what it writes.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The minisign secret key.
    pub key: PathBuf,
    /// Its password, when encrypted.
    pub password: Option<String>,
    /// `owner/repo`, named in the trusted comment.
    pub repo: Option<String>,
}

/// Packs `input` as a `.tar.gz`, then signs the asset and `SHA256SUMS`
/// with a trusted comment naming the repository (if given), the tag and
/// the file.
pub fn pack_signed(
    input: &Path,
    version: &str,
    out: &Path,
    asset_name: Option<&str>,
    signing: Option<&Signing>,
) -> Result<Packed, PackError> {
    pack_as(input, version, out, asset_name, signing, PackFormat::TarGz)
}

/// [`pack_signed`] in the given format.
pub fn pack_as(
    input: &Path,
    version: &str,
    out: &Path,
    asset_name: Option<&str>,
    signing: Option<&Signing>,
    format: PackFormat,
) -> Result<Packed, PackError> {
    let v = Version::parse(version)?;
    let name = match asset_name {
        Some(n) => n
            .replace("{version}", &v.to_string())
            .replace("{tag}", version),
        None => {
            let base = input
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "release".into());
            format!("{base}-{v}.{}", format.extension())
        }
    };
    check_component("asset name", &name)?;
    let dir = out.join(version);
    if fs::symlink_metadata(&dir)?.is_some() {
        return Err(PackError::Exists(dir));
    }
    fs::create_dir_all(&dir)?;
    let asset = dir.join(&name);
    let sha = write_archive_as(input, &asset, format)?;
    let single_top_dir = single_top_dir(input)?;
    let hints = StripHints {
        version: Some(v.to_string()),
        names: Vec::new(),
    };
    let stripped_on_install = single_top_dir
        .as_deref()
        .is_some_and(|t| hints.is_packaging_dir(t));
    let mut sums = Sha256Sums::default();
    sums.insert(name, sha);
    let sums_path = dir.join(SUMS_NAME);
    fs::write_atomic(&sums_path, sums.render().as_bytes())?;
    let mut signatures = Vec::new();
    if let Some(s) = signing {
        for f in [&asset, &sums_path] {
            let fname = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut comment = String::new();
            if let Some(r) = &s.repo {
                comment.push_str(&format!("repo={r} "));
            }
            comment.push_str(&format!("tag={version} file={fname}"));
            signatures.push(crate::verify::trust::sign_file(
                &s.key,
                s.password.clone(),
                f,
                Some(&comment),
            )?);
        }
    }
    Ok(Packed {
        single_top_dir,
        stripped_on_install,
        dir,
        asset,
        sha256: hex::encode(sha),
        sums: sums_path,
        signatures,
        release_toml: None,
    })
}

/// Reads a `--rollout` file and checks its `[rollout]` plan as every agent
/// will: refused before anything is written when it has none or a bad one.
/// It needs `--key`: agents refuse an unsigned plan.
pub fn read_rollout(path: &Path, signing: Option<&Signing>) -> Result<Vec<u8>, PackError> {
    let bad = |reason: String| PackError::Rollout {
        path: path.to_path_buf(),
        reason,
    };
    if signing.is_none() {
        return Err(bad(
            "a rollout plan needs --key: agents refuse a plan no trusted key signed".into(),
        ));
    }
    let bytes = fs::read(path)?;
    match crate::verify::rollout::plan_from_toml(&bytes) {
        Ok(Some(_)) => Ok(bytes),
        Ok(None) => Err(bad(
            "it has no [rollout] table; write [rollout] with waves = [...] (see README, Fleet rollouts)".into(),
        )),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes `release.toml` (the `--rollout` file as is, other keys kept) into
/// the packed release folder and signs it like the other files, with a
/// trusted comment naming the release.
pub fn write_release_toml(
    packed: &mut Packed,
    version: &str,
    body: &[u8],
    signing: &Signing,
) -> Result<(), PackError> {
    let path = packed.dir.join("release.toml");
    fs::write_atomic(&path, body)?;
    let mut comment = String::new();
    if let Some(r) = &signing.repo {
        comment.push_str(&format!("repo={r} "));
    }
    comment.push_str(&format!("tag={version} file=release.toml"));
    packed.signatures.push(crate::verify::trust::sign_file(
        &signing.key,
        signing.password.clone(),
        &path,
        Some(&comment),
    )?);
    packed.release_toml = Some(path);
    Ok(())
}

/// The only top-level entry of `input`, when it is a directory.
fn single_top_dir(input: &Path) -> Result<Option<String>, PackError> {
    let names = fs::list_dir(input)?;
    let [one] = names.as_slice() else {
        return Ok(None);
    };
    let is_dir = fs::symlink_metadata(&input.join(one))?.is_some_and(|m| m.is_dir());
    Ok(is_dir.then(|| one.to_string_lossy().into_owned()))
}

/// The compressor of [`write_archive_as`].
enum Compressor<W: io::Write> {
    Gz(flate2::write::GzEncoder<W>),
    Zst(zstd::stream::write::Encoder<'static, W>),
}

impl<W: io::Write> io::Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gz(e) => e.write(buf),
            Compressor::Zst(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gz(e) => e.flush(),
            Compressor::Zst(e) => e.flush(),
        }
    }
}

impl<W: io::Write> Compressor<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gz(e) => e.finish(),
            Compressor::Zst(e) => e.finish(),
        }
    }
}

/// Writes a reproducible tar of `input`, compressed as `format` says, to
/// `dest`; returns its SHA-256.
pub(crate) fn write_archive_as(
    input: &Path,
    dest: &Path,
    format: PackFormat,
) -> Result<[u8; 32], PackError> {
    let mut entries = Vec::new();
    collect(input, Path::new(""), &mut entries)?;
    let mtime = entry_mtime();
    entries.sort();
    let tmp = fs::temp_sibling(dest);
    let file = fs::create_new(&tmp, 0o644)?;
    let res = (|| -> Result<[u8; 32], PackError> {
        let hw = HashingWriter::new(io::BufWriter::new(file));
        let wctx = |e: io::Error| FsError::new("write", &tmp, e);
        let compressor = match format {
            PackFormat::TarGz => Compressor::Gz(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(hw, flate2::Compression::default()),
            ),
            PackFormat::TarZst => {
                let mut e = zstd::stream::write::Encoder::new(hw, ZSTD_LEVEL).map_err(wctx)?;
                e.include_checksum(true).map_err(wctx)?;
                Compressor::Zst(e)
            }
        };
        let mut tar = tar::Builder::new(compressor);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        for rel in &entries {
            let full = input.join(rel);
            let meta = fs::symlink_metadata(&full)?.ok_or_else(|| {
                FsError::new("stat", &full, io::Error::from(io::ErrorKind::NotFound))
            })?;
            let mut h = tar::Header::new_gnu();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            let ft = meta.file_type();
            if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, rel, io::empty()).map_err(wctx)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&full)?.unwrap_or_default();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, rel, &target).map_err(wctx)?;
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if exec { 0o755 } else { 0o644 });
                h.set_size(meta.len());
                let f = fs::open(&full)?;
                tar.append_data(&mut h, rel, f).map_err(wctx)?;
            }
        }
        let gz = tar.into_inner().map_err(wctx)?;
        let hw = gz.finish().map_err(wctx)?;
        let (inner, sha, _) = hw.finish();
        let file = inner.into_inner().map_err(|e| wctx(e.into_error()))?;
        fs::fsync_file(&file, &tmp)?;
        Ok(sha)
    })();
    match res {
        Ok(sha) => {
            fs::rename(&tmp, dest)?;
            fs::fsync_dir(fs::parent_of(dest))?;
            Ok(sha)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), PackError> {
    let dir = root.join(rel);
    for name in fs::list_dir(&dir)? {
        let r = rel.join(&name);
        let full = root.join(&r);
        if name.to_str().is_none() {
            return Err(PackError::Unsupported {
                path: full,
                reason: "file names must be UTF-8".into(),
            });
        }
        let meta = fs::symlink_metadata(&full)?
            .ok_or_else(|| FsError::new("stat", &full, io::Error::from(io::ErrorKind::NotFound)))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(r.clone());
            collect(root, &r, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(r);
        } else {
            return Err(PackError::Unsupported {
                path: full,
                reason: "only files, directories and symlinks can be packed".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_input_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("app");
        fs::create_dir_all(&src.join("public")).unwrap();
        fs::write_atomic(&src.join("public/index.html"), b"hi").unwrap();
        fs::write_atomic(&src.join("VERSION"), b"1.0.0").unwrap();
        let a = pack_signed(&src, "v1.0.0", &d.path().join("out1"), None, None).unwrap();
        // Touch the input: mtimes must not leak into the archive.
        fs::write_atomic(&src.join("VERSION"), b"1.0.0").unwrap();
        let b = pack_signed(&src, "v1.0.0", &d.path().join("out2"), None, None).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.asset.file_name().unwrap(), "app-1.0.0.tar.gz");
        let sums = fs::read_to_string(&a.sums).unwrap();
        assert_eq!(sums, format!("{}  app-1.0.0.tar.gz\n", a.sha256));
    }
}
