//! Where releases come from. [`ReleaseSource`] is the seam: the local release
//! folder (also the offline drop folder) implements it here; other sources
//! plug in beside it. A source lists releases and opens one as a stream plus
//! its small sidecar files (checksums, signatures); it never unpacks.

pub(crate) mod bridge;
mod download;
pub(crate) mod github;
pub(crate) mod github_api;
pub(crate) mod github_error;
pub(crate) mod http;
pub(crate) mod ledger;
pub(crate) mod ledger_github;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{AppConfig, Channel, SourceConfig};
use crate::fs::{self, FsError};
use crate::version::{Version, VersionError, VersionRequest, check_component};

/// Largest sidecar file (checksum list, signature) read into memory.
pub(crate) const MAX_SIDECAR_BYTES: u64 = 1 << 20;

/// Name of the checksum manifest in a release.
pub(crate) const SUMS_NAME: &str = "SHA256SUMS";

/// The checksum files a release may carry for `asset`, in the order they
/// are looked for: the names GitHub projects publish them under.
pub(crate) fn sums_candidates(asset: &str) -> Vec<String> {
    vec![
        SUMS_NAME.to_string(),
        "SHA256SUMS.txt".to_string(),
        "sha256sums.txt".to_string(),
        format!("{asset}.sha256"),
    ]
}

/// The usual names of every archive format the install reads (it tells
/// them apart by content): what the default asset pattern takes.
pub(crate) const ARCHIVE_EXTENSIONS: &[&str] = &[
    ".tar.gz", ".tgz", ".crate", ".tar.zst", ".tzst", ".tar.xz", ".txz", ".tar.bz2", ".tbz2",
    ".tbz", ".tar", ".zip",
];

/// Whether `name` ends in one of [`ARCHIVE_EXTENSIONS`].
pub(crate) fn has_archive_extension(name: &str) -> bool {
    ARCHIVE_EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// Whether `name` is a file that travels beside an asset rather than an
/// asset: a checksum list, a signature, release metadata.
pub(crate) fn is_sidecar_name(name: &str) -> bool {
    let low = name.to_lowercase();
    low.starts_with("sha256sums")
        || low.ends_with(".sha256")
        || low.ends_with(".minisig")
        || low.ends_with(".sig")
        || low.ends_with(".asc")
        || low == "release.toml"
}

/// Errors from a release source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No release matches.
    #[error("{what} not found in {source_desc}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// Which source.
        source_desc: String,
    },
    /// The release exists but is malformed.
    #[error("release {version} in {source_desc} is unusable: {reason}")]
    Malformed {
        /// The release.
        version: String,
        /// Which source.
        source_desc: String,
        /// Why.
        reason: String,
    },
    /// The source offered something unsafe or inconsistent: a name that is
    /// not a safe path component, an asset whose upload did not finish, a
    /// file that does not match the digest the source lists for it.
    #[error("release {version} in {source_desc} refused: {reason}")]
    Refused {
        /// The release.
        version: String,
        /// Which source.
        source_desc: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The GitHub API failed (network, server, rate limit, token).
    #[error(transparent)]
    Github(Box<crate::source::github_api::GithubError>),
    /// A name was unsafe or not semver.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What a source says about one release, before fetching it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseInfo {
    /// Parsed version.
    pub version: Version,
    /// The tag or folder name as published (may carry a leading `v`).
    pub tag: String,
    /// Marked as a prerelease by the source (or by its semver).
    pub prerelease: bool,
    /// Publication time, RFC 3339, when the source knows it.
    pub published_at: Option<String>,
    /// Release notes, when the source has them.
    pub notes: Option<String>,
}

/// An opened release: the asset as a stream and its small sidecar files.
pub struct FetchedRelease {
    /// What was fetched.
    pub info: ReleaseInfo,
    /// The asset's file name.
    pub asset_name: String,
    /// The asset's size when known.
    pub asset_size: Option<u64>,
    /// The asset's bytes, read once.
    pub asset: Box<dyn Read + Send>,
    /// Sidecar files by name (`SHA256SUMS`, `*.minisig`, ...), each at most
    /// [`MAX_SIDECAR_BYTES`].
    pub sidecars: BTreeMap<String, Vec<u8>>,
    /// The asset's SHA-256 as the source lists it (GitHub's `digest`), to be
    /// compared with the digest computed while streaming; `None` when the
    /// source does not say (the local folder).
    pub asset_digest: Option<[u8; 32]>,
}

/// A release's `release.toml`, as published.
#[derive(Debug, Clone)]
pub struct ReleaseToml {
    /// Its bytes.
    pub body: Vec<u8>,
    /// `release.toml.minisig`, when published.
    pub signature: Option<Vec<u8>>,
}

/// A place releases come from.
pub trait ReleaseSource: Send + Sync {
    /// Human-readable description for messages ("local folder /srv/drop").
    fn describe(&self) -> String;

    /// True when fetching costs a download: verified assets are then kept in
    /// the app's download cache, so the same asset is never fetched twice.
    fn is_remote(&self) -> bool {
        false
    }

    /// Every usable release, any order. Unparseable names are skipped with a log line.
    fn releases(&self) -> Result<Vec<ReleaseInfo>, SourceError>;

    /// Opens one release for streaming.
    fn fetch(&self, info: &ReleaseInfo) -> Result<FetchedRelease, SourceError>;

    /// The release's `release.toml` and its signature, when it has one:
    /// what its critical marking is read from. A remote source downloads
    /// only these two files, and nothing when the release has none.
    fn release_toml(&self, info: &ReleaseInfo) -> Result<Option<ReleaseToml>, SourceError> {
        let mut f = self.fetch(info)?;
        Ok(f.sidecars.remove("release.toml").map(|body| ReleaseToml {
            body,
            signature: f.sidecars.remove("release.toml.minisig"),
        }))
    }

    /// Resolves a request to one release: `latest` is the highest stable
    /// version by semver (prereleases only when `include_prereleases`).
    fn resolve(
        &self,
        req: &VersionRequest,
        include_prereleases: bool,
    ) -> Result<ReleaseInfo, SourceError> {
        let all = self.releases()?;
        let found = match req {
            VersionRequest::Exact(v) => all.into_iter().find(|r| &r.version == v),
            VersionRequest::Latest => all
                .into_iter()
                .filter(|r| include_prereleases || !r.prerelease)
                .max_by(|a, b| a.version.cmp(&b.version)),
        };
        found.ok_or_else(|| SourceError::NotFound {
            what: match req {
                VersionRequest::Exact(v) => format!("release {v}"),
                VersionRequest::Latest => "a stable release".to_string(),
            },
            source_desc: self.describe(),
        })
    }
}

/// A local folder of `<version>/` directories, each with one release
/// archive (any of the formats `verify::unpack` reads, told apart by
/// content) and a `SHA256SUMS` (plus optional signatures).
#[derive(Debug, Clone)]
pub(crate) struct LocalDirSource {
    dir: PathBuf,
}

impl LocalDirSource {
    /// A source reading `dir`.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDirSource { dir: dir.into() }
    }

    /// Opens a file of release `tag`: a regular file only. Anyone who can
    /// write to the folder could leave a FIFO (an open that never returns,
    /// with the app's lock held), a device such as `/dev/zero` (a stream
    /// without end) or a symlink to either: refused at once, by type.
    fn open_file(&self, tag: &str, path: &Path) -> Result<std::fs::File, SourceError> {
        fs::open_regular(path)?.map_err(|kind| SourceError::Refused {
            version: tag.to_string(),
            source_desc: self.describe(),
            reason: format!(
                "{} is {}, not a regular file; a release folder holds only regular files",
                path.display(),
                kind.0
            ),
        })
    }

    /// Every release folder by version, and the versions two folders name
    /// (`v1.3.0/` and `1.3.0/`), with those folders.
    #[allow(clippy::type_complexity)]
    fn scan(
        &self,
    ) -> Result<
        (
            BTreeMap<Version, ReleaseInfo>,
            BTreeMap<Version, Vec<String>>,
        ),
        SourceError,
    > {
        if fs::metadata(&self.dir)?.is_none() {
            return Err(SourceError::NotFound {
                what: "the release folder".into(),
                source_desc: self.describe(),
            });
        }
        let mut by_version: BTreeMap<Version, ReleaseInfo> = BTreeMap::new();
        let mut ambiguous: BTreeMap<Version, Vec<String>> = BTreeMap::new();
        let mut names: Vec<String> = fs::list_dir(&self.dir)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if name.starts_with('.') {
                continue;
            }
            let version = match Version::parse(&name) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(dir = %self.dir.display(), entry = %name, "skipping: {e}");
                    continue;
                }
            };
            if !fs::metadata(&self.dir.join(&name))?.is_some_and(|m| m.is_dir()) {
                continue;
            }
            if let Some(names) = ambiguous.get_mut(&version) {
                names.push(name);
                continue;
            }
            let info = ReleaseInfo {
                prerelease: version.is_prerelease(),
                version: version.clone(),
                tag: name.clone(),
                published_at: None,
                notes: None,
            };
            if let Some(prev) = by_version.insert(version.clone(), info) {
                by_version.remove(&version);
                ambiguous.insert(version, vec![prev.tag, name]);
            }
        }
        Ok((by_version, ambiguous))
    }

    fn ambiguous_error(&self, v: &Version, names: &[String]) -> SourceError {
        SourceError::Malformed {
            version: v.to_string(),
            source_desc: self.describe(),
            reason: format!(
                "the folders {} {} name it, so which is meant is unclear; remove all but one (other versions are not affected)",
                names.join(" and "),
                if names.len() == 2 { "both" } else { "all" }
            ),
        }
    }

    fn read_sidecar(&self, tag: &str, path: &Path) -> Result<Vec<u8>, SourceError> {
        let f = self.open_file(tag, path)?;
        let mut buf = Vec::new();
        f.take(MAX_SIDECAR_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FsError::new("read", path, e))?;
        if buf.len() as u64 > MAX_SIDECAR_BYTES {
            return Err(SourceError::Malformed {
                version: tag.to_string(),
                source_desc: self.describe(),
                reason: format!("{} is larger than 1 MiB", path.display()),
            });
        }
        Ok(buf)
    }
}

impl ReleaseSource for LocalDirSource {
    fn describe(&self) -> String {
        format!("local folder {}", self.dir.display())
    }

    /// The unambiguous releases; a version two folders name is left out
    /// (with a warning), and refused when asked for by [`Self::resolve`].
    fn releases(&self) -> Result<Vec<ReleaseInfo>, SourceError> {
        let (found, ambiguous) = self.scan()?;
        for (v, names) in &ambiguous {
            tracing::warn!(dir = %self.dir.display(), version = %v, "{}", self.ambiguous_error(v, names));
        }
        Ok(found.into_values().collect())
    }

    /// As the trait's, except that a version two folders name is refused:
    /// asked for exactly, or as `latest` when it is the newest (rather
    /// than quietly taking an older release).
    fn resolve(
        &self,
        req: &VersionRequest,
        include_prereleases: bool,
    ) -> Result<ReleaseInfo, SourceError> {
        let (found, ambiguous) = self.scan()?;
        let wanted = match req {
            VersionRequest::Exact(v) => Some(v.clone()),
            VersionRequest::Latest => found
                .keys()
                .chain(ambiguous.keys())
                .filter(|v| include_prereleases || !v.is_prerelease())
                .max()
                .cloned(),
        };
        if let Some(v) = &wanted
            && let Some(names) = ambiguous.get(v)
        {
            return Err(self.ambiguous_error(v, names));
        }
        wanted
            .and_then(|v| found.get(&v).cloned())
            .ok_or_else(|| SourceError::NotFound {
                what: match req {
                    VersionRequest::Exact(v) => format!("release {v}"),
                    VersionRequest::Latest => "a stable release".to_string(),
                },
                source_desc: self.describe(),
            })
    }

    fn fetch(&self, info: &ReleaseInfo) -> Result<FetchedRelease, SourceError> {
        check_component("release folder", &info.tag)?;
        let rdir = self.dir.join(&info.tag);
        let malformed = |reason: String| SourceError::Malformed {
            version: info.tag.clone(),
            source_desc: self.describe(),
            reason,
        };
        let mut names: Vec<String> = fs::list_dir(&rdir)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        names.sort();
        // The archive: the one file with an archive's name, or else the
        // one file that is not a sidecar (its content says what it is).
        let mut assets: Vec<&String> = names
            .iter()
            .filter(|n| has_archive_extension(n) && !is_sidecar_name(n))
            .collect();
        if assets.is_empty() {
            assets = names
                .iter()
                .filter(|n| !n.starts_with('.') && !is_sidecar_name(n))
                .collect();
        }
        let asset_name = match assets.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(malformed(format!(
                    "{} holds no release archive ({})",
                    rdir.display(),
                    ARCHIVE_EXTENSIONS.join(" ")
                )));
            }
            many => {
                return Err(malformed(format!(
                    "{} holds {} release archives ({}); a release folder holds exactly one",
                    rdir.display(),
                    many.len(),
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        check_component("asset name", &asset_name)?;
        let mut sidecars = BTreeMap::new();
        for n in &names {
            let sums = sums_candidates(&asset_name);
            let wanted =
                sums.iter().any(|s| s == n) || n.ends_with(".minisig") || n == "release.toml";
            if wanted {
                check_component("sidecar name", n)?;
                sidecars.insert(n.clone(), self.read_sidecar(&info.tag, &rdir.join(n))?);
            }
        }
        let asset_path = rdir.join(&asset_name);
        let f = self.open_file(&info.tag, &asset_path)?;
        let size = f.metadata().ok().map(|m| m.len());
        Ok(FetchedRelease {
            info: info.clone(),
            asset_name,
            asset_size: size,
            asset: Box::new(f),
            sidecars,
            asset_digest: None,
        })
    }
}

/// Builds the source an app's configuration names. Nothing is read or
/// connected until it is used.
pub(crate) fn for_app(app: &AppConfig) -> Box<dyn ReleaseSource> {
    match &app.source {
        SourceConfig::Dir(d) => Box::new(LocalDirSource::new(&d.dir)),
        SourceConfig::Github(g) => Box::new(crate::source::github::GithubSource::new(
            &app.name,
            g.clone(),
        )),
    }
}

/// Whether `latest` may pick a prerelease for this app (`channel = "prerelease"`).
pub(crate) fn include_prereleases(app: &AppConfig) -> bool {
    app.source.channel() == Channel::Prerelease
}

/// What `switchyard check` reports: the live release against the newest one
/// the source offers on the app's channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct UpdateCheck {
    /// The app.
    pub app: String,
    /// The source asked.
    pub source: String,
    /// The channel compared against.
    pub channel: Channel,
    /// The live release (`current`), if any.
    pub current: Option<Version>,
    /// The newest release on the channel, if any.
    pub latest: Option<Version>,
    /// Its tag as published.
    pub latest_tag: Option<String>,
    /// `latest` is newer than `current` (or nothing is live).
    pub update_available: bool,
    /// How many releases on the channel are newer than `current` (all of
    /// them when nothing is live).
    pub behind: usize,
    /// The newer releases, newest first.
    pub newer: Vec<Version>,
    /// Going to `latest` is a breaking upgrade by semver: a higher major
    /// version, or for `0.y.z` a higher minor (for `0.0.z`, any change).
    pub major_upgrade: bool,
    /// When `latest` was published (RFC 3339), when the source knows it.
    pub published_at: Option<String>,
    /// `latest`'s release notes, when the source has them.
    pub notes: Option<String>,
    /// Newer releases quarantined here (never suggested).
    #[serde(default)]
    pub quarantined: Vec<Version>,
    /// The command that would take the app to the newest release it can
    /// go to, with the flags it needs (filled in by `ops`, which knows the
    /// app's state).
    #[serde(default)]
    pub suggest: Option<String>,
    /// The newer releases marked critical, newest first (filled in by
    /// `ops`, which can check a signed `release.toml`).
    pub critical: Vec<CriticalRelease>,
}

/// A newer release marked critical, and the deadline by which the agent
/// deploys it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CriticalRelease {
    /// The release.
    pub version: Version,
    /// Deployed by then, even outside the window or with `auto = "none"`;
    /// `None`: at once.
    pub deadline: Option<jiff::Timestamp>,
}

/// Compares `current` with `releases`, what the source listed, on the
/// app's channel (the caller lists once, for the critical releases too).
pub(crate) fn check_updates(
    app: &AppConfig,
    source: &dyn ReleaseSource,
    releases: Vec<ReleaseInfo>,
    current: Option<Version>,
) -> UpdateCheck {
    let include = include_prereleases(app);
    let mut on_channel: Vec<ReleaseInfo> = releases
        .into_iter()
        .filter(|r| include || !r.prerelease)
        .collect();
    on_channel.sort_by(|a, b| b.version.cmp(&a.version));
    on_channel.dedup_by(|a, b| a.version == b.version);
    let newest = on_channel.first().cloned();
    let newer: Vec<Version> = on_channel
        .iter()
        .map(|r| r.version.clone())
        .filter(|v| current.as_ref().is_none_or(|c| v > c))
        .collect();
    UpdateCheck {
        app: app.name.clone(),
        source: source.describe(),
        channel: app.source.channel(),
        major_upgrade: match (&current, &newest) {
            (Some(c), Some(n)) => n.version.is_major_upgrade_from(c),
            _ => false,
        },
        update_available: !newer.is_empty(),
        behind: newer.len(),
        newer,
        latest: newest.as_ref().map(|n| n.version.clone()),
        latest_tag: newest.as_ref().map(|n| n.tag.clone()),
        published_at: newest.as_ref().and_then(|n| n.published_at.clone()),
        notes: newest.and_then(|n| n.notes),
        critical: Vec::new(),
        current,
        quarantined: Vec::new(),
        suggest: None,
    }
}
