//! The one GitHub client, used by the release source (`source::github`) and
//! by failure reports (`daemon::report`).
//!
//! The API goes through `octocrab` and its models
//! ([`Release`], [`Issue`], [`Comment`]): its typed builders for issues, and a
//! plain GET for release listings, which must carry `If-None-Match`, parsed
//! into octocrab's [`Page`] the way octocrab's own conditional endpoints do.
//! Asset downloads go through `reqwest`, because their redirect is followed
//! by hand: the API asset endpoint answers `302` to a storage host, and the
//! token must never travel there.
//!
//! Here, once, for both users: token loading, retries (`backon`: network
//! failures and `5xx`, with exponential backoff and jitter; other `4xx` are
//! answers, not failures), rate limits (`403`/`429` with `Retry-After`, or
//! `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`, waited out once when
//! short, otherwise reported with the reset time), pagination (`Link:
//! rel="next"`, only on the API host), conditional requests (each listing
//! page's `ETag` and items are kept in memory for as long as the client
//! lives, so an unchanged listing costs no rate limit) and error messages,
//! which say what the operator can do.
//!
//! Every method is async; blocking callers reach them through
//! [`bridge`](crate::source::bridge).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use octocrab::etag::EntityTag;
use octocrab::models::issues::{Comment, Issue};
use octocrab::models::repos::Release;
use octocrab::{FromResponse, Octocrab, Page};
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH, LOCATION};
use reqwest::{StatusCode, Url, redirect};
use tracing::{debug, warn};

use crate::chain::chain;
use crate::config::GithubSourceConfig;
use crate::config::github::check_api_url;
pub(crate) use crate::source::github_error::GithubError;
pub(crate) use crate::source::github_error::Purpose;
use crate::source::github_error::{ErrorContext, api_message, human_wait};
use crate::source::http::{client_builder, display_url};

/// The GitHub REST API version this client speaks.
const API_VERSION: &str = "2022-11-28";

/// Most redirects followed for one download.
const MAX_REDIRECTS: usize = 5;

/// Most pages of a listing read: a loop guard, not a real limit.
pub(super) const MAX_PAGES: usize = 100;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
pub(crate) struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token given as is (failure reports receive it already loaded).
    pub(crate) fn new(t: String) -> Token {
        Token(t)
    }
}

/// The token `cfg` names (`token_env` or `token_file`), trimmed and checked;
/// `None` when it names none.
pub(crate) fn load_token(cfg: &GithubSourceConfig) -> Result<Option<Token>, GithubError> {
    let (raw, from) = if let Some(var) = &cfg.token_env {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => (v, format!("environment variable {var}")),
            _ => return Err(GithubError::TokenEnvMissing { var: var.clone() }),
        }
    } else if let Some(path) = &cfg.token_file {
        let v =
            crate::fs::read_to_string(path).map_err(|source| GithubError::TokenFile { source })?;
        (v, format!("file {}", path.display()))
    } else {
        return Ok(None);
    };
    let t = raw.trim();
    if t.is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
        return Err(GithubError::TokenInvalid { from });
    }
    Ok(Some(Token(t.to_string())))
}

/// The configured token (from `token_env` or `token_file`), for other
/// GitHub calls of the same app (failure reports). Never log it.
pub(crate) fn read_token(cfg: &GithubSourceConfig) -> Result<Option<String>, GithubError> {
    Ok(load_token(cfg)?.map(|t| t.0))
}

/// How progress of an asset download is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines only.
    Lines,
}

/// Tuning of the network behaviour. The defaults suit the release source;
/// tests may shorten the delays.
#[derive(Debug, Clone)]
pub struct GithubOptions {
    /// Retries after a network error or a 5xx answer (not counting the first try).
    pub retries: usize,
    /// First retry delay; it doubles each time, with jitter.
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// The longest rate-limit wait accepted before failing with a message
    /// that says when to retry; zero never waits.
    pub max_rate_limit_wait: Duration,
    /// Items per page asked for (GitHub allows up to 100).
    pub per_page: u8,
    /// Progress display for asset downloads.
    pub progress: ProgressMode,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer.
    pub read_timeout: Duration,
    /// Longest wait for one API request, connection included (`None`: only
    /// the connect and read timeouts apply).
    pub request_timeout: Option<Duration>,
}

impl Default for GithubOptions {
    fn default() -> Self {
        GithubOptions {
            retries: 4,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            max_rate_limit_wait: crate::config::DEFAULT_RATE_LIMIT_MAX_WAIT,
            per_page: 100,
            progress: ProgressMode::Auto,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            request_timeout: None,
        }
    }
}

/// A repository on a GitHub API.
#[derive(Debug, Clone)]
pub(crate) struct Repo {
    /// `api_url` as configured.
    pub(crate) api_url: String,
    /// The owner.
    pub(crate) owner: String,
    /// The repository's name.
    pub(crate) name: String,
}

impl Repo {
    /// `owner/name`.
    pub(crate) fn slug(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// A name GitHub allows for an owner or a repository.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One asset download: the API asset endpoint and what to say about it.
#[derive(Debug, Clone)]
pub(crate) struct AssetRef {
    /// The asset's file name.
    pub(crate) name: String,
    /// The API asset endpoint (on the API host).
    pub(crate) url: Url,
    /// Its size, when listed.
    pub(crate) size: Option<u64>,
    /// The release's tag.
    pub(crate) tag: String,
    /// The release's version, for log lines.
    pub(crate) version: String,
}

/// One page of the release listing.
#[derive(Clone)]
struct ReleasePage {
    items: Vec<Release>,
    next: Option<Url>,
}

/// A listing page as last seen, for conditional requests.
#[derive(Clone)]
struct CachedPage {
    etag: EntityTag,
    page: ReleasePage,
}

/// The GitHub client of one repository.
pub(crate) struct GithubApi {
    pub(super) app: String,
    pub(super) repo: Repo,
    pub(super) api: Url,
    token: Option<Token>,
    errors: ErrorContext,
    pub(super) opts: GithubOptions,
    pub(super) octo: Octocrab,
    /// Downloads only (built on first use): redirects are followed by hand.
    http: OnceLock<reqwest::Client>,
    pages: Mutex<HashMap<String, CachedPage>>,
}

impl fmt::Debug for GithubApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubApi")
            .field("repo", &self.repo)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl GithubApi {
    /// A client for `repo`, sending `token` to the API host only. Call it
    /// inside a runtime context: octocrab spawns its worker on the current
    /// runtime. `app` names the app in log lines.
    pub(crate) fn connect(
        app: &str,
        repo: Repo,
        token: Option<Token>,
        purpose: Purpose,
        opts: &GithubOptions,
    ) -> Result<GithubApi, GithubError> {
        if !valid_name(&repo.owner) || !valid_name(&repo.name) {
            return Err(GithubError::BadRepo { repo: repo.slug() });
        }
        let bad_url = |reason: String| GithubError::BadApiUrl {
            url: repo.api_url.clone(),
            reason,
        };
        let api_str = check_api_url(&repo.api_url).map_err(bad_url)?;
        let api = Url::parse(&format!("{api_str}/")).map_err(|e| bad_url(e.to_string()))?;
        let mut b = Octocrab::builder()
            .base_uri(api_str.as_str())
            .map_err(|e| bad_url(e.to_string()))?
            .add_header(ACCEPT, "application/vnd.github+json".to_string())
            .add_header(
                HeaderName::from_static("x-github-api-version"),
                API_VERSION.to_string(),
            )
            .set_connect_timeout(Some(opts.connect_timeout))
            .set_read_timeout(Some(opts.read_timeout));
        if let Some(t) = &token {
            b = b.personal_token(t.0.clone());
        }
        let octo = b.build().map_err(|e| GithubError::Setup {
            reason: e.to_string(),
        })?;
        let errors = ErrorContext {
            purpose,
            slug: repo.slug(),
            has_token: token.is_some(),
        };
        Ok(GithubApi {
            app: app.to_string(),
            repo,
            api,
            errors,
            token,
            opts: opts.clone(),
            octo,
            http: OnceLock::new(),
            pages: Mutex::new(HashMap::new()),
        })
    }

    /// Same scheme, host and port as `api_url`: the only place the token goes.
    pub(crate) fn same_origin(&self, u: &Url) -> bool {
        u.origin() == self.api.origin()
    }

    /// The documented API endpoint of an asset.
    pub(crate) fn asset_endpoint(&self, id: u64) -> Result<Url, GithubError> {
        self.api
            .join(&format!(
                "repos/{}/{}/releases/assets/{id}",
                self.repo.owner, self.repo.name
            ))
            .map_err(|e| GithubError::BadApiUrl {
                url: self.repo.api_url.clone(),
                reason: e.to_string(),
            })
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_min_delay)
            .with_max_delay(self.opts.retry_max_delay)
            .with_max_times(self.opts.retries)
            .with_jitter()
    }

    /// Runs `f` with backoff on transient failures, and waits out one short
    /// rate limit.
    pub(super) async fn retrying<T, F, Fut>(&self, step: &str, mut f: F) -> Result<T, GithubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GithubError>>,
    {
        let mut waited = false;
        loop {
            let mut retries = 0;
            let res = (&mut f)
                .retry(self.backoff())
                .when(GithubError::is_transient)
                .notify(|e: &GithubError, d: Duration| {
                    retries += 1;
                    warn!(app = %self.app, step, "{}; retry {retries} of {} in {} ms", e.cause(), self.opts.retries, d.as_millis());
                })
                .await;
            match res {
                Err(GithubError::RateLimited {
                    wait: Some(w),
                    resets_at,
                    ..
                }) if !waited
                    && !self.opts.max_rate_limit_wait.is_zero()
                    && w <= self.opts.max_rate_limit_wait =>
                {
                    warn!(
                        app = %self.app,
                        step,
                        resets_at = %resets_at.map(|t| t.to_string()).unwrap_or_default(),
                        "GitHub rate limit reached; waiting {} for the reset, then retrying once",
                        human_wait(w)
                    );
                    tokio::time::sleep(w).await;
                    waited = true;
                }
                Err(e) => return Err(e.with_attempts(retries)),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// One octocrab call, bounded by `request_timeout`, its error classified.
    pub(super) async fn call<T>(
        &self,
        what: &str,
        url: &str,
        fut: impl Future<Output = octocrab::Result<T>>,
    ) -> Result<T, GithubError> {
        let res = match self.opts.request_timeout {
            None => fut.await,
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(GithubError::Transport {
                        what: what.to_string(),
                        url: url.to_string(),
                        reason: format!("no answer within {} s", t.as_secs()),
                        attempts: 0,
                    });
                }
            },
        };
        res.map_err(|e| self.octocrab_error(what, url, e))
    }

    /// An octocrab error as one of ours: GitHub's answers by their status and
    /// headers, everything else by what it is.
    fn octocrab_error(&self, what: &str, url: &str, e: octocrab::Error) -> GithubError {
        let transport = |reason: String| GithubError::Transport {
            what: what.to_string(),
            url: url.to_string(),
            reason,
            attempts: 0,
        };
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let g = *source;
                let headers = g.headers.unwrap_or_default();
                self.errors
                    .classify(what, url, g.status_code, &headers, g.message, true)
            }
            // Their messages already end with their source's: show that chain.
            octocrab::Error::Hyper { source, .. } => transport(chain(&source)),
            octocrab::Error::Service { source, .. } => transport(chain(source.as_ref())),
            octocrab::Error::Json { source, .. } => GithubError::BadAnswer {
                what: what.to_string(),
                url: url.to_string(),
                reason: format!("{} at {}", source.inner(), source.path()),
            },
            octocrab::Error::Serde { source, .. } => GithubError::BadAnswer {
                what: what.to_string(),
                url: url.to_string(),
                reason: source.to_string(),
            },
            other => GithubError::BadAnswer {
                what: what.to_string(),
                url: url.to_string(),
                reason: other.to_string(),
            },
        }
    }

    /// The next page's URL, only when it stays on the API host (where the
    /// token and the base path apply).
    pub(super) fn next_page(
        &self,
        what: &str,
        url: &str,
        next: Option<impl fmt::Display>,
    ) -> Result<Option<Url>, GithubError> {
        let Some(n) = next else { return Ok(None) };
        let bad = |reason: String| GithubError::BadAnswer {
            what: what.to_string(),
            url: url.to_string(),
            reason,
        };
        let n =
            Url::parse(&n.to_string()).map_err(|e| bad(format!("a bad pagination link: {e}")))?;
        if !self.same_origin(&n) {
            return Err(bad(format!(
                "a pagination link leads away from {}",
                self.api.origin().ascii_serialization()
            )));
        }
        Ok(Some(n))
    }

    /// Every release, following `Link: rel="next"`; pages seen before are
    /// asked for with `If-None-Match`, and a `304` costs no rate limit.
    pub(crate) async fn list_releases(&self) -> Result<Vec<Release>, GithubError> {
        let what = format!("list the releases of {}", self.repo.slug());
        let mut url = self
            .api
            .join(&format!(
                "repos/{}/{}/releases?per_page={}",
                self.repo.owner, self.repo.name, self.opts.per_page
            ))
            .map_err(|e| GithubError::BadApiUrl {
                url: self.repo.api_url.clone(),
                reason: e.to_string(),
            })?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            seen.insert(url.to_string());
            let page = self
                .retrying("list", || self.release_page(&what, &url))
                .await?;
            out.extend(page.items);
            match page.next {
                Some(n) if !seen.contains(n.as_str()) => url = n,
                _ => return Ok(out),
            }
        }
        Err(GithubError::BadAnswer {
            what,
            url: display_url(&url),
            reason: format!("more than {MAX_PAGES} pages of releases"),
        })
    }

    /// One GET of a listing page, conditional when it was seen before.
    async fn release_page(&self, what: &str, url: &Url) -> Result<ReleasePage, GithubError> {
        let shown = display_url(url);
        let cached = self
            .pages
            .lock()
            .ok()
            .and_then(|p| p.get(url.as_str()).cloned());
        let mut h = HeaderMap::new();
        if let Some(c) = &cached
            && let Ok(v) = HeaderValue::from_str(&c.etag.to_string())
        {
            h.insert(IF_NONE_MATCH, v);
        }
        let resp = self
            .call(
                what,
                &shown,
                self.octo._get_with_headers(url.as_str(), Some(h)),
            )
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            debug!(app = %self.app, step = %"list", url = %shown, "unchanged (304); no rate limit spent");
            return Ok(c.page);
        }
        let etag = EntityTag::extract_from_response(&resp);
        let page = self
            .call(what, &shown, async {
                let resp = octocrab::map_github_error(resp).await?;
                Page::<Release>::from_response(resp).await
            })
            .await?;
        let fresh = ReleasePage {
            next: self.next_page(what, &shown, page.next)?,
            items: page.items,
        };
        if let (Some(etag), Ok(mut pages)) = (etag, self.pages.lock()) {
            let page = fresh.clone();
            pages.insert(url.to_string(), CachedPage { etag, page });
        }
        Ok(fresh)
    }

    /// The open issue with `label` whose title starts with `prefix` (the
    /// lowest number when several do), reading every page. Not retried.
    pub(crate) async fn find_open_issue(
        &self,
        label: &str,
        prefix: &str,
    ) -> Result<Option<Issue>, GithubError> {
        let what = format!("list the open {label} issues of {}", self.repo.slug());
        let shown = display_url(&self.api);
        let labels = [label.to_string()];
        let issues = self.octo.issues(&self.repo.owner, &self.repo.name);
        let mut page = self
            .call(
                &what,
                &shown,
                issues
                    .list()
                    .state(octocrab::params::State::Open)
                    .labels(&labels)
                    .per_page(self.opts.per_page)
                    .send(),
            )
            .await?;
        for _ in 0..MAX_PAGES {
            // Lowest number first when several match: the original issue.
            let found = std::mem::take(&mut page.items)
                .into_iter()
                .filter(|i| i.pull_request.is_none() && i.title.starts_with(prefix))
                .min_by_key(|i| i.number);
            if found.is_some() {
                return Ok(found);
            }
            let Some(next) = self.next_page(&what, &shown, page.next.take())? else {
                return Ok(None);
            };
            let shown = display_url(&next);
            let uri = next.to_string();
            page = self
                .call(
                    &what,
                    &shown,
                    self.octo.get::<Page<Issue>, _, ()>(uri, None),
                )
                .await?;
        }
        warn!(repo = %self.repo.slug(), "stopped listing open issues after {MAX_PAGES} pages; a new issue will be opened");
        Ok(None)
    }

    /// Opens an issue. Not retried: a retried `POST` whose first attempt did
    /// reach GitHub opens a duplicate.
    pub(crate) async fn create_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[&str],
    ) -> Result<Issue, GithubError> {
        let what = format!("open an issue in {}", self.repo.slug());
        let issues = self.octo.issues(&self.repo.owner, &self.repo.name);
        let req = issues
            .create(title)
            .body(body)
            .labels(labels.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        self.call(&what, &display_url(&self.api), req.send()).await
    }

    /// Comments on an issue. Not retried, like [`Self::create_issue`].
    pub(crate) async fn comment(&self, number: u64, body: &str) -> Result<Comment, GithubError> {
        let what = format!("comment on issue #{number} of {}", self.repo.slug());
        let issues = self.octo.issues(&self.repo.owner, &self.repo.name);
        self.call(
            &what,
            &display_url(&self.api),
            issues.create_comment(number, body),
        )
        .await
    }

    /// The download client, built on first use: failure reports never need it.
    fn http(&self) -> Result<&reqwest::Client, GithubError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = client_builder(None)
            .redirect(redirect::Policy::none())
            .connect_timeout(self.opts.connect_timeout)
            .read_timeout(self.opts.read_timeout)
            .build()
            .map_err(|e| GithubError::Setup {
                reason: chain(&e.without_url()),
            })?;
        Ok(self.http.get_or_init(|| c))
    }

    /// GETs the asset endpoint with `Accept: application/octet-stream` and
    /// follows redirects by hand: the token goes only to the API's origin.
    async fn open_once(&self, asset: &AssetRef) -> Result<reqwest::Response, GithubError> {
        let what = format!("download {} of release {}", asset.name, asset.tag);
        let http = self.http()?;
        let mut url = asset.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = http
                .get(url.clone())
                .header(ACCEPT, "application/octet-stream")
                .header("x-github-api-version", API_VERSION);
            let with_token = self.same_origin(&url);
            if let (true, Some(t)) = (with_token, &self.token) {
                req = req.bearer_auth(&t.0);
            }
            // reqwest's errors name the URL, and a storage URL's query string
            // is a short-lived credential.
            let resp = req.send().await.map_err(|e| GithubError::Transport {
                what: what.clone(),
                url: display_url(&url),
                reason: chain(&e.without_url()),
                attempts: 0,
            })?;
            let status = resp.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| GithubError::BadAnswer {
                        what: what.clone(),
                        url: display_url(&url),
                        reason: format!("a {status} redirect without a usable Location"),
                    })?;
                if url.scheme() == "https" && next.scheme() != "https" {
                    return Err(GithubError::BadAnswer {
                        what: what.clone(),
                        url: display_url(&url),
                        reason: format!("a redirect from https down to {}", display_url(&next)),
                    });
                }
                debug!(
                    app = %self.app, version = %asset.version, step = %"download",
                    to = %next.origin().ascii_serialization(),
                    token = self.same_origin(&next) && self.token.is_some(),
                    "following a redirect"
                );
                url = next;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            return Err(self.errors.classify(
                &what,
                &display_url(&url),
                status,
                &headers,
                api_message(&body),
                with_token,
            ));
        }
        Err(GithubError::BadAnswer {
            what,
            url: display_url(&asset.url),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Opens the asset stream, retrying until the first byte is on its way.
    pub(crate) async fn open(&self, asset: &AssetRef) -> Result<reqwest::Response, GithubError> {
        self.retrying("download", || self.open_once(asset)).await
    }

    /// Downloads a small file whole, at most `limit` bytes; a download that
    /// breaks off is retried whole.
    pub(crate) async fn download_small(
        &self,
        asset: &AssetRef,
        limit: u64,
    ) -> Result<Vec<u8>, GithubError> {
        let what = format!("download {} of release {}", asset.name, asset.tag);
        self.retrying("fetch", || async {
            let mut resp = self.open_once(asset).await?;
            let mut buf = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        buf.extend_from_slice(&c);
                        if buf.len() as u64 > limit {
                            return Err(GithubError::TooLarge {
                                name: asset.name.clone(),
                                limit,
                            });
                        }
                    }
                    Ok(None) => return Ok(buf),
                    Err(e) => {
                        return Err(GithubError::Transport {
                            what: what.clone(),
                            url: display_url(&asset.url),
                            reason: chain(&e.without_url()),
                            attempts: 0,
                        });
                    }
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let t = Token("ghp_secret".into());
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn octocrab_reads_the_next_link() {
        // The `Link` header as GitHub sends it, pointing at /repositories/<id>.
        let resp = axum::http::Response::builder()
            .header(
                "link",
                "<https://api.github.com/repositories/1000/releases?per_page=3&page=1>; rel=\"prev\", <https://api.github.com/repositories/1000/releases?per_page=3&page=3>; rel=\"next\", <https://api.github.com/repositories/1000/releases?per_page=3&page=5>; rel=\"last\"",
            )
            .body(octocrab::OctoBody::from("[]"))
            .unwrap();
        let page = crate::source::bridge::block_on(Page::<Release>::from_response(resp))
            .unwrap()
            .unwrap();
        assert_eq!(
            page.next.unwrap().to_string(),
            "https://api.github.com/repositories/1000/releases?per_page=3&page=3"
        );
    }

    #[test]
    fn repository_names_are_checked() {
        assert!(valid_name("web-app_1.x"));
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
