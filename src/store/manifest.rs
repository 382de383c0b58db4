//! Install manifests: what was installed for each release
//! (`.switchyard/manifests/<version>.json`), with its signatures and every
//! entry as unpacked.

use serde::{Deserialize, Serialize};

use crate::fs;
use crate::store::layout::AppPaths;
use crate::store::state::StateError;
use crate::verify::trust::Verified;
use crate::verify::unpack::ManifestEntry;
use crate::version::Version;

/// Metadata kept for every installed release in `.switchyard/manifests/<v>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReleaseMeta {
    /// The version.
    pub version: Version,
    /// The tag or folder name it came from.
    pub tag: String,
    /// The asset's file name.
    pub asset: String,
    /// SHA-256 of the asset.
    pub sha256: String,
    /// Size of the asset in bytes.
    pub asset_bytes: u64,
    /// Unpacked content size in bytes.
    pub content_bytes: u64,
    /// When it was installed.
    pub installed_at: String,
    /// The operation that installed it.
    pub install_id: String,
    /// The signatures that verified it.
    #[serde(default)]
    pub signatures: Vec<SignatureInfo>,
    /// Installed with --allow-downgrade below the highest verified version.
    #[serde(default)]
    pub downgrade: bool,
    /// The archive's format, as its first bytes said (absent in manifests
    /// written before formats were told apart: those were `tar-gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::verify::unpack::ArchiveFormat>,
    /// The single top directory stripped from every entry (`myapp-1.2.3`),
    /// or null when the archive's root is the release root.
    #[serde(default)]
    pub stripped_top_dir: Option<String>,
    /// Every entry of the release as unpacked.
    pub entries: Vec<ManifestEntry>,
}

/// One verified signature of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SignatureInfo {
    /// The signed file (`<asset>` or `SHA256SUMS`).
    pub file: String,
    /// The key id that signed it (16 hex digits).
    pub key_id: String,
    /// The signed trusted comment.
    pub trusted_comment: String,
    /// A legacy (non-prehashed) signature.
    pub legacy: bool,
}

impl SignatureInfo {
    pub(crate) fn new(file: &str, v: Verified) -> Self {
        SignatureInfo {
            file: file.to_string(),
            key_id: v.key_id,
            trusted_comment: v.trusted_comment,
            legacy: v.legacy,
        }
    }
}

impl ReleaseMeta {
    /// Loads a release's metadata, if present.
    pub(crate) fn load(paths: &AppPaths, v: &Version) -> Result<Option<ReleaseMeta>, StateError> {
        let path = paths.manifest(v);
        match fs::read_optional(&path)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
        }
    }
}
