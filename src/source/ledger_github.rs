//! The fleet ledger on GitHub's Deployments API, through the one GitHub
//! client (`source::github_api`: its token, retries with back-off, rate-limit
//! handling and error messages).
//!
//! One snapshot costs a bounded number of requests, whatever the fleet's
//! size: the deployment listing of the tag in the environment
//! (`GET /repos/{o}/{r}/deployments?environment=E&ref=TAG&per_page=100`,
//! every page, each asked for with `If-None-Match`, so an unchanged page is
//! a `304` that costs no rate limit), then the latest status
//! (`GET .../deployments/{id}/statuses?per_page=1`) of at most
//! [`MAX_STATUS_READS`] deployments: those whose state is not known to be
//! final (failure, error and inactive never change), control actions first,
//! then those never read, then those still running, the least recently read
//! first. A state left unread this poll is read at a later one; until then
//! its last known state counts. An agent does not re-read a `success` (it
//! can only turn `inactive`, which does not change the halt); a one-shot
//! reader ([`GithubLedger::complete`]) does.
//!
//! Every status is posted with `auto_inactive: false`: GitHub's default
//! would mark the other hosts' successful deployments of the environment
//! inactive each time one host succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use octocrab::etag::EntityTag;
use octocrab::models::repos::{Deployment, DeploymentStatus, DeploymentStatusState};
use octocrab::{FromResponse, Page};
use reqwest::header::{HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use tracing::{debug, warn};

use crate::config::GithubSourceConfig;
use crate::source::bridge;
use crate::source::github_api::{
    GithubApi, GithubError, GithubOptions, MAX_PAGES, Purpose, Repo, load_token,
};
use crate::source::http::display_url;
use crate::source::ledger::{
    Attempt, AttemptPayload, AttemptState, Control, ControlPayload, Ledger, LedgerError, Scope,
    Snapshot, TASK_CONTROL, TASK_DEPLOY, clip_description, in_force,
};

/// The ledger of an app whose source can carry one (GitHub); `None` for a
/// drop folder, which has no shared ledger (`config check` refuses fleet
/// settings there).
pub(crate) fn for_app(app: &crate::config::AppConfig) -> Option<Box<dyn Ledger>> {
    match &app.source {
        crate::config::SourceConfig::Github(g) => {
            let operators = app
                .fleet
                .as_ref()
                .map(|f| f.operators.clone())
                .unwrap_or_default();
            Some(Box::new(
                GithubLedger::new(&app.name, g.clone()).with_operators(operators),
            ))
        }
        crate::config::SourceConfig::Dir(_) => None,
    }
}

/// Most deployment statuses read in one snapshot: with the listing, this
/// bounds the requests a host makes per poll.
pub const MAX_STATUS_READS: usize = 8;

/// A listing page as last seen, for conditional requests.
#[derive(Clone)]
struct CachedPage {
    etag: EntityTag,
    items: Vec<Deployment>,
    next: Option<Url>,
}

/// A deployment's latest state as last read.
#[derive(Debug, Clone)]
struct KnownState {
    state: AttemptState,
    description: Option<String>,
    at: Option<Timestamp>,
    /// The snapshot that read it (for least-recently-read first).
    round: u64,
}

#[derive(Default)]
struct Cache {
    pages: HashMap<String, CachedPage>,
    states: HashMap<u64, KnownState>,
    round: u64,
    /// Ignored control deployments already logged (once each).
    warned: std::collections::HashSet<u64>,
}

/// GitHub Deployments as the fleet's [`Ledger`]. Keep one alive between
/// polls: it remembers `ETag`s and final states.
pub struct GithubLedger {
    app: String,
    cfg: GithubSourceConfig,
    opts: GithubOptions,
    api: Mutex<Option<Arc<GithubApi>>>,
    cache: Mutex<Cache>,
    status_budget: usize,
    reread_success: bool,
    /// `[apps.NAME.fleet] operators`: whose resume and revert count.
    operators: Vec<String>,
}

impl std::fmt::Debug for GithubLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubLedger")
            .field("app", &self.app)
            .field("repo", &self.cfg.slug())
            .finish_non_exhaustive()
    }
}

fn state_of(s: DeploymentStatusState) -> AttemptState {
    match s {
        DeploymentStatusState::Error => AttemptState::Error,
        DeploymentStatusState::Failure => AttemptState::Failure,
        DeploymentStatusState::Inactive => AttemptState::Inactive,
        DeploymentStatusState::InProgress => AttemptState::InProgress,
        DeploymentStatusState::Queued | DeploymentStatusState::Pending => AttemptState::Pending,
        DeploymentStatusState::Success => AttemptState::Success,
    }
}

fn github_state(s: AttemptState) -> DeploymentStatusState {
    match s {
        AttemptState::Pending => DeploymentStatusState::Pending,
        AttemptState::InProgress => DeploymentStatusState::InProgress,
        AttemptState::Success => DeploymentStatusState::Success,
        AttemptState::Failure => DeploymentStatusState::Failure,
        AttemptState::Error => DeploymentStatusState::Error,
        AttemptState::Inactive => DeploymentStatusState::Inactive,
    }
}

/// A Unix time in seconds as a timestamp (octocrab's models carry chrono's).
fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl GithubLedger {
    /// The ledger of the repository `cfg` names, with its token. Nothing is
    /// connected until first use.
    pub fn new(app: &str, cfg: GithubSourceConfig) -> GithubLedger {
        let opts = GithubOptions {
            max_rate_limit_wait: cfg.rate_limit_max_wait,
            ..GithubOptions::default()
        };
        GithubLedger {
            app: app.to_string(),
            cfg,
            opts,
            api: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            status_budget: MAX_STATUS_READS,
            reread_success: false,
            operators: Vec::new(),
        }
    }

    /// For a one-shot reader (an operator's `fleet status`): read the state
    /// of every deployment not known to be final, successes included, up to
    /// `budget` per snapshot, instead of the agent's bounded poll.
    pub fn complete(mut self, budget: usize) -> GithubLedger {
        self.status_budget = budget;
        self.reread_success = true;
        self
    }

    /// The GitHub logins whose `resume` and `revert` controls count
    /// (`[apps.NAME.fleet] operators`); without it, none do.
    pub fn with_operators(mut self, operators: Vec<String>) -> GithubLedger {
        self.operators = operators;
        self
    }

    /// Replaces the network tuning (before first use).
    pub fn with_options(mut self, opts: GithubOptions) -> GithubLedger {
        self.opts = opts;
        self
    }

    fn api(&self) -> Result<Arc<GithubApi>, LedgerError> {
        let mut slot = self.api.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let token = load_token(&self.cfg)?;
        let handle = bridge::handle().map_err(GithubError::from)?;
        let _guard = handle.enter();
        let repo = Repo {
            api_url: self.cfg.api_url.clone(),
            owner: self.cfg.repo.0.clone(),
            name: self.cfg.repo.1.clone(),
        };
        let api = Arc::new(GithubApi::connect(
            &self.app,
            repo,
            token,
            Purpose::Deployments,
            &self.opts,
        )?);
        *slot = Some(api.clone());
        Ok(api)
    }

    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&GithubApi) -> Result<T, GithubError>,
    ) -> Result<T, LedgerError> {
        let api = self.api()?;
        let r = bridge::block_on(f(&api)).map_err(GithubError::from)?;
        Ok(r?)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_page(&self, url: &Url) -> Option<CachedPage> {
        self.cache().pages.get(url.as_str()).cloned()
    }

    fn list_url(
        &self,
        api: &GithubApi,
        scope: &Scope,
        task: Option<&str>,
    ) -> Result<Url, GithubError> {
        let mut u = api
            .api
            .join(&format!(
                "repos/{}/{}/deployments",
                api.repo.owner, api.repo.name
            ))
            .map_err(|e| GithubError::BadApiUrl {
                url: api.repo.api_url.clone(),
                reason: e.to_string(),
            })?;
        u.query_pairs_mut()
            .append_pair("environment", &scope.environment)
            .append_pair("ref", &scope.tag);
        if let Some(t) = task {
            u.query_pairs_mut().append_pair("task", t);
        }
        u.query_pairs_mut()
            .append_pair("per_page", &api.opts.per_page.to_string());
        Ok(u)
    }

    /// One page of the listing, conditional when seen before.
    async fn page(
        &self,
        api: &GithubApi,
        what: &str,
        url: &Url,
    ) -> Result<CachedPage, GithubError> {
        let shown = display_url(url);
        let cached = self.cached_page(url);
        let mut h = HeaderMap::new();
        if let Some(c) = &cached
            && let Ok(v) = HeaderValue::from_str(&c.etag.to_string())
        {
            h.insert(IF_NONE_MATCH, v);
        }
        let resp = api
            .call(
                what,
                &shown,
                api.octo._get_with_headers(url.as_str(), Some(h)),
            )
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED
            && let Some(c) = cached
        {
            debug!(app = %self.app, url = %shown, "deployments unchanged (304)");
            return Ok(c);
        }
        let etag = EntityTag::extract_from_response(&resp);
        let page = api
            .call(what, &shown, async {
                let resp = octocrab::map_github_error(resp).await?;
                Page::<Deployment>::from_response(resp).await
            })
            .await?;
        let next = api.next_page(what, &shown, page.next)?;
        let fresh = CachedPage {
            etag: etag.unwrap_or_else(|| EntityTag::weak(String::new())),
            items: page.items,
            next,
        };
        if !fresh.etag.tag().is_empty() {
            self.cache().pages.insert(url.to_string(), fresh.clone());
        }
        Ok(fresh)
    }

    /// Every deployment of the scope, and the requests it cost.
    async fn deployments(
        &self,
        api: &GithubApi,
        scope: &Scope,
        task: Option<&str>,
    ) -> Result<(Vec<Deployment>, u32), GithubError> {
        let what = format!(
            "read the {} deployments of {} in {}",
            scope.tag,
            api.repo.slug(),
            scope.environment
        );
        let mut url = self.list_url(api, scope, task)?;
        let mut out = Vec::new();
        let mut requests = 0;
        for _ in 0..MAX_PAGES {
            requests += 1;
            let page = api
                .retrying("ledger", || self.page(api, &what, &url))
                .await?;
            out.extend(page.items);
            match page.next {
                Some(n) if n != url => url = n,
                _ => return Ok((out, requests)),
            }
        }
        Err(GithubError::BadAnswer {
            what,
            url: display_url(&url),
            reason: format!("more than {MAX_PAGES} pages of deployments"),
        })
    }

    /// The latest status of deployment `id`, if it has any.
    async fn latest_status(
        &self,
        api: &GithubApi,
        id: u64,
    ) -> Result<Option<DeploymentStatus>, GithubError> {
        let what = format!("read the state of deployment {id} of {}", api.repo.slug());
        let shown = display_url(&api.api);
        let page = api
            .retrying("ledger", || async {
                let repos = api.octo.repos(&api.repo.owner, &api.repo.name);
                api.call(
                    &what,
                    &shown,
                    repos.deployments().statuses(id).list().per_page(1u8).send(),
                )
                .await
            })
            .await?;
        Ok(page.items.into_iter().next())
    }

    /// Which deployments to read the status of this round.
    fn to_read(&self, controls: &[&Deployment], attempts: &[&Deployment]) -> Vec<u64> {
        let cache = self.cache();
        // A success only ever turns inactive, which matters to people, not
        // to the halt: re-read only when `reread_success` (one-shot reads).
        let open = |d: &&&Deployment| {
            cache.states.get(&d.id.into_inner()).is_none_or(|k| {
                !k.state.is_final() && (self.reread_success || k.state != AttemptState::Success)
            })
        };
        // The newest control deployments whose state is unknown: a control
        // with `success` is in force, so read until one is known. Those the
        // operators do not authorize are never read: they cannot be in
        // force, and a host posting many must not crowd out the halt under
        // them from this poll's reads.
        let mut ids: Vec<u64> = Vec::new();
        for c in controls {
            if !self
                .parse_control(c)
                .is_some_and(|c| c.authorized(&self.operators))
            {
                continue;
            }
            let id = c.id.into_inner();
            match cache.states.get(&id) {
                Some(k) if k.state == AttemptState::Success => break,
                Some(k) if k.state.is_final() => continue,
                _ => ids.push(id),
            }
            if ids.len() >= 2 {
                break;
            }
        }
        let mut rest: Vec<((u8, u64), u64)> = attempts
            .iter()
            .filter(open)
            .map(|d| {
                let id = d.id.into_inner();
                let key = match cache.states.get(&id) {
                    None => (0, 0),
                    // Still running: its outcome counts for the halt.
                    Some(k) if k.state != AttemptState::Success => (1, k.round),
                    // Settled, but may turn inactive: read last.
                    Some(k) => (2, k.round),
                };
                (key, id)
            })
            .collect();
        // Never read first, then those still running, then successes; the
        // least recently read first, newest first within a round (higher
        // ids are newer).
        rest.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        ids.extend(rest.into_iter().map(|(_, id)| id));
        ids.truncate(self.status_budget);
        ids
    }

    fn remember(&self, id: u64, st: Option<&DeploymentStatus>, round: u64) {
        let known = match st {
            Some(s) => KnownState {
                state: state_of(s.state),
                description: s.description.clone().filter(|d| !d.is_empty()),
                at: Some(timestamp(s.created_at.timestamp())),
                round,
            },
            None => KnownState {
                state: AttemptState::Pending,
                description: None,
                at: None,
                round,
            },
        };
        self.cache().states.insert(id, known);
    }

    /// A control deployment as a [`Control`]; `None` when its payload is
    /// not one (logged).
    fn parse_control(&self, d: &Deployment) -> Option<Control> {
        let id = d.id.into_inner();
        match serde_json::from_value::<ControlPayload>(d.payload.clone()) {
            Ok(payload) => Some(Control {
                id,
                payload,
                creator: d
                    .creator
                    .as_ref()
                    .map(|a| a.login.clone())
                    .unwrap_or_default(),
                at: timestamp(d.created_at.timestamp()),
            }),
            Err(e) => {
                debug!(app = %self.app, deployment = id, error = %e, "ignoring a control deployment with an unusable payload");
                None
            }
        }
    }

    /// The control in force (the newest authorized one with a `success`
    /// state as last read) and the unauthorized ones newer than it, whatever
    /// their state: each is logged once at warn (someone without an
    /// operator's login tried to lift a halt or revert the fleet).
    fn control_in(&self, controls: &[&Deployment]) -> (Option<Control>, Vec<Control>) {
        let candidates = controls
            .iter()
            .filter_map(|d| self.parse_control(d))
            .filter(|c| {
                !c.authorized(&self.operators)
                    || self
                        .known(c.id)
                        .is_some_and(|k| k.state == AttemptState::Success)
            });
        let (control, ignored) = in_force(candidates, &self.operators);
        for c in &ignored {
            if self.cache().warned.insert(c.id) {
                warn!(app = %self.app, control = c.id, action = %c.payload.action, creator = %c.creator, by = %c.payload.by, "fleet: ignoring a control action from a GitHub login not in [apps.{}.fleet] operators; add the login there if it is an operator's", self.app);
            }
        }
        (control, ignored)
    }

    fn known(&self, id: u64) -> Option<KnownState> {
        self.cache().states.get(&id).cloned()
    }
}

impl Ledger for GithubLedger {
    fn describe(&self) -> String {
        format!("the GitHub deployments of {}", self.cfg.slug())
    }

    fn snapshot(&self, scope: &Scope) -> Result<Snapshot, LedgerError> {
        let round = {
            let mut c = self.cache();
            c.round += 1;
            c.round
        };
        let (deployments, mut requests) =
            self.run(async |api| self.deployments(api, scope, None).await)?;
        // Newest first, whatever order the pages came in.
        let mut deployments = deployments;
        deployments.sort_by_key(|d| std::cmp::Reverse(d.id.into_inner()));
        let controls: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| d.task == TASK_CONTROL)
            .collect();
        let attempts: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| d.task == TASK_DEPLOY)
            .collect();
        for id in self.to_read(&controls, &attempts) {
            let st = self.run(async |api| self.latest_status(api, id).await)?;
            requests += 1;
            self.remember(id, st.as_ref(), round);
        }
        let mut snap = Snapshot {
            requests,
            ..Snapshot::default()
        };
        (snap.control, snap.ignored) = self.control_in(&controls);
        for d in &attempts {
            let id = d.id.into_inner();
            let Ok(payload) = serde_json::from_value::<AttemptPayload>(d.payload.clone()) else {
                // Someone else's deployment of the same tag: not ours to count.
                debug!(app = %self.app, deployment = id, "ignoring a deployment whose payload is not a switchyard attempt");
                continue;
            };
            let known = self.known(id);
            snap.attempts.push(Attempt {
                id,
                payload,
                created_at: timestamp(d.created_at.timestamp()),
                state: known.as_ref().map_or(AttemptState::Pending, |k| k.state),
                description: known.as_ref().and_then(|k| k.description.clone()),
                state_at: known.and_then(|k| k.at),
            });
        }
        Ok(snap)
    }

    /// The listing of control deployments only (its own `ETag`), and the
    /// state of the newest ones not known yet.
    fn control(&self, scope: &Scope) -> Result<Option<Control>, LedgerError> {
        let round = {
            let mut c = self.cache();
            c.round += 1;
            c.round
        };
        let (mut deployments, _) =
            self.run(async |api| self.deployments(api, scope, Some(TASK_CONTROL)).await)?;
        deployments.sort_by_key(|d| std::cmp::Reverse(d.id.into_inner()));
        let controls: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| d.task == TASK_CONTROL)
            .collect();
        for id in self.to_read(&controls, &[]) {
            let st = self.run(async |api| self.latest_status(api, id).await)?;
            self.remember(id, st.as_ref(), round);
        }
        Ok(self.control_in(&controls).0)
    }

    fn create_attempt(&self, scope: &Scope, attempt: &AttemptPayload) -> Result<u64, LedgerError> {
        let payload = serde_json::to_value(attempt).map_err(|e| LedgerError::Bad {
            what: "attempt".into(),
            reason: e.to_string(),
        })?;
        let description = clip_description(&format!(
            "switchyard on {}: {} {} (wave {})",
            attempt.hostname, attempt.app, attempt.version, attempt.wave
        ));
        let id = self.create(scope, TASK_DEPLOY, payload, &description)?;
        self.post_state(id, AttemptState::InProgress, "deploying")?;
        Ok(id)
    }

    fn post_state(
        &self,
        attempt: u64,
        state: AttemptState,
        description: &str,
    ) -> Result<(), LedgerError> {
        let description = clip_description(description);
        let st = self.run(async |api| {
            let what = format!(
                "post the state {state} of deployment {attempt} of {}",
                api.repo.slug()
            );
            let shown = display_url(&api.api);
            // Retried: posting the same state twice is harmless.
            api.retrying("ledger", || async {
                let repos = api.octo.repos(&api.repo.owner, &api.repo.name);
                api.call(
                    &what,
                    &shown,
                    repos
                        .deployments()
                        .statuses(attempt)
                        .create(github_state(state))
                        .description(description.clone())
                        .auto_inactive(false)
                        .send(),
                )
                .await
            })
            .await
        })?;
        let round = self.cache().round;
        self.remember(attempt, Some(&st), round);
        Ok(())
    }

    fn post_control(&self, scope: &Scope, control: &ControlPayload) -> Result<u64, LedgerError> {
        let payload = serde_json::to_value(control).map_err(|e| LedgerError::Bad {
            what: "control action".into(),
            reason: e.to_string(),
        })?;
        let description = clip_description(&format!(
            "{} by {} on {}: {}",
            control.action, control.by, control.host, control.reason
        ));
        let id = self.create(scope, TASK_CONTROL, payload, &description)?;
        self.post_state(id, AttemptState::Success, &description)?;
        Ok(id)
    }
}

impl GithubLedger {
    /// Creates a deployment. Not retried: a retried `POST` whose first try
    /// did reach GitHub would record the attempt twice.
    fn create(
        &self,
        scope: &Scope,
        task: &str,
        payload: serde_json::Value,
        description: &str,
    ) -> Result<u64, LedgerError> {
        let d = self.run(async |api| {
            let what = format!(
                "create a deployment of {} in {} of {}",
                scope.tag,
                scope.environment,
                api.repo.slug()
            );
            let repos = api.octo.repos(&api.repo.owner, &api.repo.name);
            let req = repos
                .deployments()
                .create(scope.tag.clone())
                .task(task)
                .auto_merge(false)
                .required_contexts(Vec::<String>::new())
                .payload(payload)
                .environment(scope.environment.clone())
                .description(description)
                .transient_environment(false)
                .production_environment(scope.environment == "production");
            api.call(&what, &display_url(&api.api), req.send()).await
        })?;
        Ok(d.id.into_inner())
    }
}
