//! GitHub Releases as a release source (`github = "owner/repo"`).
//!
//! The API (listing releases, with pagination and `ETag`s) goes through
//! `octocrab`; asset downloads go through `reqwest` because their redirect
//! needs handling by hand: the API asset endpoint answers `302` to a storage
//! host, and the token must never travel there.
//!
//! Which release: drafts are skipped, tags are parsed as semver (a leading
//! `v` allowed; other tags are ignored with a log line), and `latest` is the
//! highest version by semver on the app's channel, never the newest by date
//! or by string. On the stable channel a release is a prerelease when GitHub
//! flags it so or when its version has a semver pre-release part.
//!
//! What is refused: a release whose tag or name is not a safe single path
//! component, an asset whose name is not one, an asset whose `state` is not
//! `uploaded`, and a sidecar whose bytes do not match the `digest` the API
//! gives for it. The asset's own `digest` is passed on in
//! [`FetchedRelease::asset_digest`] for the install to check against the
//! digest it computes while streaming (this module does not check it: an
//! error raised from inside the stream would hide the checksum and signature
//! verdicts, which are the more useful message).
//!
//! The asset name is a template: `{version}` (semver without the `v`),
//! `{tag}` (as published) and `{target}` (`<arch>-<os>` as Rust names them,
//! e.g. `x86_64-linux`, `aarch64-linux`), optionally with `*` and `?`
//! wildcards, in which case exactly one matching asset must exist. Checksum
//! and signature files never match a wildcard; a pattern that ends in a
//! wildcard (the default `*`, `myapp-{version}-*`) matches only the usual
//! archive names (`.tar.gz`, `.tgz`, `.crate`, `.tar.zst`, `.tar.xz`,
//! `.tar.bz2`, `.tar`, `.zip`, ...), while one that spells its extension
//! (`*.crate`) or a name without wildcards takes any: the install tells the
//! format by content.
//!
//! Network behaviour (retries, rate limits, conditional listings, the
//! redirect that must not carry the token) is the shared client's, in
//! `source::github_api`; the asset streams lazily (`source::download`).
//! A download is retried until its first byte; one that breaks off later
//! fails the read (the install is then undone and can simply be run again).
//!
//! Keep a source alive between polls: its client remembers each listing
//! page's `ETag`, so an unchanged listing costs no rate limit.
//!
//! # Threads and runtimes
//!
//! [`ReleaseSource`] is synchronous, because the verify-and-unpack pipeline
//! is; the network code is async and is reached through `source::bridge`:
//! the current runtime inside a runtime context (the agent's
//! `spawn_blocking` threads), the process-wide one elsewhere. **Never call
//! its methods, nor read the asset stream, from inside an async task**:
//! tokio panics there. From async code, use `tokio::task::spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use octocrab::models::repos::{Asset, Release};
use reqwest::Url;
use tracing::{debug, info, warn};

pub(crate) use crate::config::github::{glob_match, has_wildcard, render_asset};
use crate::config::{Channel, GithubSourceConfig};
use crate::source::download::AssetReader;
use crate::source::github_api::{AssetRef, GithubApi, Purpose, Repo, load_token};
pub(crate) use crate::source::github_api::{GithubError, GithubOptions, read_token};
pub(crate) use crate::source::http::install_crypto_provider;
use crate::source::{
    FetchedRelease, MAX_SIDECAR_BYTES, ReleaseInfo, ReleaseSource, ReleaseToml, SourceError,
};
use crate::source::{bridge, has_archive_extension, is_sidecar_name, sums_candidates};
use crate::version::{Version, VersionRequest, check_component};

/// What a release offers that the configuration does not match.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReleaseError {
    /// The release has no asset matching the configured name.
    #[error(
        "release {tag} has no asset matching {pattern:?} (assets: {}); fix `asset` in [apps.{app}.source] or publish the asset",
        if assets.is_empty() { "none".to_string() } else { assets.join(", ") }
    )]
    AssetNotFound {
        /// The app whose source names the asset.
        app: String,
        /// The release.
        tag: String,
        /// The configured asset name or pattern, rendered.
        pattern: String,
        /// Every asset the release has.
        assets: Vec<String>,
    },
    /// Several assets match the wildcard pattern.
    #[error(
        "release {tag} has {} assets matching {pattern:?} ({}); exactly one must match: make `asset` more precise, e.g. \"myapp-{{version}}-{{target}}.tar.gz\"",
        matches.len(), matches.join(", ")
    )]
    AmbiguousAsset {
        /// The release.
        tag: String,
        /// The pattern, rendered.
        pattern: String,
        /// The matching assets.
        matches: Vec<String>,
    },
    /// The release was not in the listing.
    #[error(
        "release {tag} is not (or no longer) among the releases of {repo}; run `switchyard check` to see what is available"
    )]
    UnknownRelease {
        /// The tag asked for.
        tag: String,
        /// owner/repo.
        repo: String,
    },
}

/// Parses an API `digest` (`sha256:<64 hex>`). Other algorithms are
/// ignored (`Ok(None)`); a malformed SHA-256 is an error.
pub(crate) fn parse_digest(d: &str) -> Result<Option<[u8; 32]>, String> {
    let Some((algo, hex_digest)) = d.split_once(':') else {
        return Err(format!("digest {d:?} is not <algorithm>:<hex>"));
    };
    if !algo.eq_ignore_ascii_case("sha256") {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out)
        .map_err(|e| format!("digest {d:?} is not a SHA-256 ({e})"))?;
    Ok(Some(out))
}

/// A GitHub repository's releases as a [`ReleaseSource`].
///
/// Keep one alive between polls: it remembers each listing page's `ETag`,
/// so an unchanged listing is answered `304` and costs no rate limit.
pub struct GithubSource {
    app: String,
    cfg: GithubSourceConfig,
    opts: GithubOptions,
    api: Mutex<Option<Arc<GithubApi>>>,
    /// The last listing, by tag, for `fetch`.
    known: Mutex<BTreeMap<String, Release>>,
    /// Tags already reported as unusable.
    ignored: Mutex<HashSet<String>>,
}

impl fmt::Debug for GithubSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds where the token is read from, never the token.
        f.debug_struct("GithubSource")
            .field("app", &self.app)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl GithubSource {
    /// A source for `app` reading `cfg`. Nothing is read or connected until
    /// first use: a missing token or an unreachable API is reported then.
    pub fn new(app: impl Into<String>, cfg: GithubSourceConfig) -> Self {
        let opts = GithubOptions {
            max_rate_limit_wait: cfg.rate_limit_max_wait,
            ..GithubOptions::default()
        };
        GithubSource {
            app: app.into(),
            cfg,
            opts,
            api: Mutex::new(None),
            known: Mutex::new(BTreeMap::new()),
            ignored: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the network tuning (before first use). Its
    /// `max_rate_limit_wait` replaces the config's `rate_limit_max_wait_secs`.
    pub fn with_options(mut self, opts: GithubOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The configuration it reads.
    pub fn config(&self) -> &GithubSourceConfig {
        &self.cfg
    }

    /// The client, set up on first use. A failed set-up (say, the token
    /// variable is missing) is not remembered: the next call tries again.
    fn api(&self) -> Result<Arc<GithubApi>, SourceError> {
        let mut slot = self.api.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let token = load_token(&self.cfg).map_err(|e| self.err(e, ""))?;
        let handle = bridge::handle().map_err(|e| self.err(e.into(), ""))?;
        // octocrab spawns its worker on the runtime it is built in.
        let _guard = handle.enter();
        let repo = Repo {
            api_url: self.cfg.api_url.clone(),
            owner: self.cfg.repo.0.clone(),
            name: self.cfg.repo.1.clone(),
        };
        let api = GithubApi::connect(&self.app, repo, token, Purpose::Releases, &self.opts)
            .map_err(|e| self.err(e, ""))?;
        let api = Arc::new(api);
        *slot = Some(api.clone());
        Ok(api)
    }

    /// Runs a request of the client from this blocking caller.
    fn run<T>(
        &self,
        version: &str,
        f: impl AsyncFnOnce(&GithubApi) -> Result<T, GithubError>,
    ) -> Result<T, SourceError> {
        let api = self.api()?;
        bridge::block_on(f(&api))
            .map_err(GithubError::from)
            .and_then(|r| r)
            .map_err(|e| self.err(e, version))
    }

    fn err(&self, e: GithubError, version: &str) -> SourceError {
        let source_desc = self.describe();
        match e {
            GithubError::NotFound { .. } => SourceError::NotFound {
                what: e.to_string(),
                source_desc,
            },
            GithubError::TooLarge { .. } => SourceError::Refused {
                version: version.to_string(),
                source_desc,
                reason: e.to_string(),
            },
            other => SourceError::Github(Box::new(other)),
        }
    }

    fn release_err(&self, e: ReleaseError, version: &str) -> SourceError {
        let source_desc = self.describe();
        match e {
            ReleaseError::AssetNotFound { .. } | ReleaseError::UnknownRelease { .. } => {
                SourceError::NotFound {
                    what: e.to_string(),
                    source_desc,
                }
            }
            ReleaseError::AmbiguousAsset { .. } => SourceError::Malformed {
                version: version.to_string(),
                source_desc,
                reason: e.to_string(),
            },
        }
    }

    fn refused(&self, tag: &str, reason: String) -> SourceError {
        SourceError::Refused {
            version: tag.to_string(),
            source_desc: self.describe(),
            reason,
        }
    }

    /// Downloads a small asset (a checksum list, a signature,
    /// `release.toml`) whole, checked against the digest GitHub lists.
    fn small_asset(
        &self,
        api: &GithubApi,
        rel: &Release,
        a: &Asset,
        version: &Version,
    ) -> Result<Vec<u8>, SourceError> {
        let tag = &rel.tag_name;
        let name = &a.name;
        let r = self.asset_ref(api, rel, a, version)?;
        if r.size.is_some_and(|s| s > MAX_SIDECAR_BYTES) {
            return Err(self.refused(
                tag,
                format!("{name} is larger than 1 MiB, which no checksum or signature file is; remove it from the release"),
            ));
        }
        debug!(app = %self.app, version = %version, step = %"fetch", file = %name, "downloading sidecar");
        let bytes = self.run(tag, async |api| {
            api.download_small(&r, MAX_SIDECAR_BYTES).await
        })?;
        if let Some(d) = a.digest.as_deref() {
            let expected = parse_digest(d).map_err(|e| {
                self.refused(tag, format!("asset {name}: {e}; the API answer is damaged"))
            })?;
            if let Some(exp) = expected {
                let got: [u8; 32] = {
                    use sha2::Digest;
                    sha2::Sha256::digest(&bytes).into()
                };
                if got != exp {
                    return Err(self.refused(
                        tag,
                        format!(
                            "{name} does not match the digest GitHub lists for it (expected sha256:{}, got sha256:{}): it was altered on the way; nothing was installed",
                            hex::encode(exp),
                            hex::encode(got)
                        ),
                    ));
                }
            }
        }
        Ok(bytes)
    }

    fn known_release(&self, tag: &str) -> Option<Release> {
        self.known.lock().ok().and_then(|k| k.get(tag).cloned())
    }

    fn asset_ref(
        &self,
        api: &GithubApi,
        rel: &Release,
        a: &Asset,
        version: &Version,
    ) -> Result<AssetRef, SourceError> {
        let tag = &rel.tag_name;
        check_component("asset name", &a.name).map_err(|e| {
            self.refused(
                tag,
                format!("{e}; it cannot be written safely: rename the asset on GitHub"),
            )
        })?;
        if a.state != "uploaded" {
            return Err(self.refused(
                tag,
                format!(
                    "asset {} is in state {:?}, not \"uploaded\": its upload did not finish; re-upload it or wait for the upload to complete",
                    a.name, a.state
                ),
            ));
        }
        // Use the endpoint the listing names when it is on the API host;
        // otherwise the documented one (the token never goes elsewhere).
        let listed = Url::parse(a.url.as_str())
            .ok()
            .filter(|u| api.same_origin(u));
        let url = match listed {
            Some(u) => u,
            None => api.asset_endpoint(*a.id).map_err(|e| self.err(e, tag))?,
        };
        Ok(AssetRef {
            name: a.name.clone(),
            url,
            size: u64::try_from(a.size).ok(),
            tag: tag.clone(),
            version: version.to_string(),
        })
    }
}

/// Whether a wildcard pattern names its own extension (`*.crate`): a dot
/// after its last wildcard.
fn spells_extension(pattern: &str) -> bool {
    pattern
        .rsplit(['*', '?'])
        .next()
        .is_some_and(|tail| tail.contains('.'))
}

/// Picks the asset the configured pattern names.
fn select_asset<'r>(
    app: &str,
    pattern: &str,
    rel: &'r Release,
    version: &Version,
) -> Result<&'r Asset, ReleaseError> {
    let rendered = render_asset(pattern, &rel.tag_name, &version.to_string());
    let names = || {
        rel.assets
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    };
    if has_wildcard(&rendered) {
        let matches: Vec<&Asset> = rel
            .assets
            .iter()
            .filter(|a| {
                glob_match(&rendered, &a.name)
                    && !is_sidecar_name(&a.name)
                    && (spells_extension(&rendered) || has_archive_extension(&a.name))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(ReleaseError::AssetNotFound {
                app: app.to_string(),
                tag: rel.tag_name.clone(),
                pattern: rendered,
                assets: names(),
            }),
            many => Err(ReleaseError::AmbiguousAsset {
                tag: rel.tag_name.clone(),
                pattern: rendered,
                matches: many.iter().map(|a| a.name.clone()).collect(),
            }),
        }
    } else {
        rel.assets
            .iter()
            .find(|a| a.name == rendered)
            .ok_or_else(|| ReleaseError::AssetNotFound {
                app: app.to_string(),
                tag: rel.tag_name.clone(),
                pattern: rendered,
                assets: names(),
            })
    }
}

/// A publication time as RFC 3339, whole seconds.
fn published(r: &Release) -> Option<String> {
    r.published_at
        .and_then(|t| jiff::Timestamp::from_second(t.timestamp()).ok())
        .map(|t| t.to_string())
}

impl ReleaseSource for GithubSource {
    fn is_remote(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "GitHub repository {} at {}",
            self.cfg.slug(),
            self.cfg.api_url
        )
    }

    fn releases(&self) -> Result<Vec<ReleaseInfo>, SourceError> {
        let list = self.run("", async |api| api.list_releases().await)?;
        let mut out = Vec::new();
        let mut known = BTreeMap::new();
        for r in list {
            if r.draft {
                debug!(app = %self.app, step = %"list", tag = %r.tag_name, "skipping a draft release");
                continue;
            }
            let version = match Version::parse(&r.tag_name) {
                Ok(v) => v,
                Err(e) => {
                    // Once per tag and source: an agent polls the same listing.
                    let first = self
                        .ignored
                        .lock()
                        .map(|mut s| s.insert(r.tag_name.clone()))
                        .unwrap_or(true);
                    if first {
                        warn!(app = %self.app, step = %"list", tag = %r.tag_name, "ignoring release {:?}: {e}", r.tag_name);
                    }
                    continue;
                }
            };
            out.push(ReleaseInfo {
                prerelease: r.prerelease || version.is_prerelease(),
                version,
                tag: r.tag_name.clone(),
                published_at: published(&r),
                notes: r.body.clone().filter(|n| !n.trim().is_empty()),
            });
            known.insert(r.tag_name.clone(), r);
        }
        if let Ok(mut k) = self.known.lock() {
            *k = known;
        }
        Ok(out)
    }

    /// `latest` is the highest version by semver among the releases the
    /// app's channel allows (prereleases too when `include_prereleases` or
    /// `channel = "prerelease"`). An exact version may name a prerelease on
    /// any channel: the operator asked for it.
    fn resolve(
        &self,
        req: &VersionRequest,
        include_prereleases: bool,
    ) -> Result<ReleaseInfo, SourceError> {
        let include = include_prereleases || self.cfg.channel == Channel::Prerelease;
        let all = self.releases()?;
        let chosen = match req {
            VersionRequest::Exact(v) => all.iter().filter(|r| &r.version == v).collect::<Vec<_>>(),
            VersionRequest::Latest => {
                let max = all
                    .iter()
                    .filter(|r| include || !r.prerelease)
                    .map(|r| &r.version)
                    .max();
                all.iter().filter(|r| Some(&r.version) == max).collect()
            }
        };
        match chosen.as_slice() {
            [one] => {
                info!(app = %self.app, step = %"resolve", version = %one.version, tag = %one.tag, "chose release");
                Ok((*one).clone())
            }
            [] => Err(SourceError::NotFound {
                what: match req {
                    VersionRequest::Exact(v) => format!("release {v}"),
                    VersionRequest::Latest if include => "a release".to_string(),
                    VersionRequest::Latest => "a stable release".to_string(),
                },
                source_desc: self.describe(),
            }),
            many => Err(SourceError::Malformed {
                version: many[0].version.to_string(),
                source_desc: self.describe(),
                reason: format!(
                    "the tags {} all name this version; delete all but one of those releases",
                    many.iter()
                        .map(|r| r.tag.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    fn fetch(&self, info: &ReleaseInfo) -> Result<FetchedRelease, SourceError> {
        let api = self.api()?;
        let rel = match self.known_release(&info.tag) {
            Some(r) => r,
            None => {
                self.releases()?;
                self.known_release(&info.tag).ok_or_else(|| {
                    self.release_err(
                        ReleaseError::UnknownRelease {
                            tag: info.tag.clone(),
                            repo: self.cfg.slug(),
                        },
                        &info.tag,
                    )
                })?
            }
        };
        let tag = rel.tag_name.clone();
        check_component("release tag", &tag)
            .map_err(|e| self.refused(&tag, format!("{e}; retag the release")))?;
        if let Some(name) = rel.name.as_deref().filter(|n| !n.is_empty()) {
            check_component("release name", name)
                .map_err(|e| self.refused(&tag, format!("{e}; rename the release on GitHub")))?;
        }
        if rel.draft {
            return Err(self.refused(&tag, "it is a draft; publish it first".into()));
        }
        let asset = select_asset(&self.app, &self.cfg.asset, &rel, &info.version)
            .map_err(|e| self.release_err(e, &tag))?;
        let main = self.asset_ref(&api, &rel, asset, &info.version)?;
        let asset_digest = match asset.digest.as_deref() {
            None => None,
            Some(d) => parse_digest(d).map_err(|e| {
                self.refused(
                    &tag,
                    format!("asset {}: {e}; the API answer is damaged", main.name),
                )
            })?,
        };

        // Sidecars are small and read whole, before the asset, so the install
        // can check the checksum list and signatures first.
        let mut sidecars = BTreeMap::new();
        let mut wanted = vec![format!("{}.minisig", main.name), "release.toml".to_string()];
        for s in sums_candidates(&main.name) {
            wanted.push(format!("{s}.minisig"));
            wanted.push(s);
        }
        for name in wanted {
            let Some(a) = rel.assets.iter().find(|a| a.name == name) else {
                continue;
            };
            let bytes = self.small_asset(&api, &rel, a, &info.version)?;
            sidecars.insert(name, bytes);
        }
        info!(app = %self.app, version = %info.version, step = %"fetch", asset = %main.name, sidecars = sidecars.len(), "release opened; the asset streams on first read");
        let handle = bridge::handle().map_err(|e| self.err(e.into(), &tag))?;
        Ok(FetchedRelease {
            info: info.clone(),
            asset_name: main.name.clone(),
            asset_size: main.size,
            asset: Box::new(AssetReader::new(
                api,
                handle,
                &self.app,
                self.opts.progress,
                main,
            )),
            sidecars,
            asset_digest,
        })
    }

    fn release_toml(&self, info: &ReleaseInfo) -> Result<Option<ReleaseToml>, SourceError> {
        if self.known_release(&info.tag).is_none() {
            self.releases()?;
        }
        let Some(rel) = self.known_release(&info.tag) else {
            return Ok(None);
        };
        // Most releases have none: then nothing is downloaded.
        let Some(toml) = rel.assets.iter().find(|a| a.name == "release.toml") else {
            return Ok(None);
        };
        let api = self.api()?;
        let body = self.small_asset(&api, &rel, toml, &info.version)?;
        let signature = match rel.assets.iter().find(|a| a.name == "release.toml.minisig") {
            Some(a) => Some(self.small_asset(&api, &rel, a, &info.version)?),
            None => None,
        };
        Ok(Some(ReleaseToml { body, signature }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::github::{check_api_url, check_asset_pattern, target};

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("*.tar.gz", "web-1.0.0.tar.gz"));
        assert!(glob_match(
            "web-?.?.?-*.tar.gz",
            "web-1.0.0-x86_64-linux.tar.gz"
        ));
        assert!(!glob_match("*.tar.gz", "web-1.0.0.tar.gz.minisig"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b", "aXbY"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn asset_patterns_are_checked() {
        assert!(check_asset_pattern("myapp-{version}-{target}.tar.gz").is_ok());
        assert!(check_asset_pattern("*.tar.gz").is_ok());
        assert!(check_asset_pattern("myapp-{tag}-*").is_ok());
        assert!(
            check_asset_pattern("myapp-{ver}.tar.gz")
                .unwrap_err()
                .contains("{ver}")
        );
        assert!(check_asset_pattern("../x.tar.gz").is_err());
        assert!(check_asset_pattern("dist/x.tar.gz").is_err());
        // Any extension: the install tells the format by content.
        assert!(check_asset_pattern("x.zip").is_ok());
        assert!(check_asset_pattern("*.crate").is_ok());
        assert!(spells_extension("*.crate"));
        assert!(!spells_extension("*"));
        assert!(!spells_extension("myapp-1.0.0-*"));
        assert!(check_asset_pattern("x-{version.tar.gz").is_err());
        assert_eq!(
            render_asset("a-{version}-{tag}-{target}.tar.gz", "v1.2.3", "1.2.3"),
            format!("a-1.2.3-v1.2.3-{}.tar.gz", target())
        );
    }

    #[test]
    fn digests_and_links_parse() {
        let d = "sha256:2151b604e3429bff440b9fbc03eb3617bc2603cda96c95b9bb05277f9ddba255";
        assert_eq!(parse_digest(d).unwrap().unwrap()[0], 0x21);
        assert_eq!(parse_digest("sha512:abcd").unwrap(), None);
        assert!(parse_digest("sha256:zz").is_err());
        // The `Link` header's next page: see `github_api`'s tests.
    }

    #[test]
    fn api_urls_are_checked() {
        assert_eq!(
            check_api_url("https://ghe.example/api/v3/").unwrap(),
            "https://ghe.example/api/v3"
        );
        assert!(check_api_url("ftp://x").is_err());
        assert!(check_api_url("https://user:pw@x").is_err());
        assert!(check_api_url("not a url").is_err());
    }
}
