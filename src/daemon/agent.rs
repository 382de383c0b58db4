//! The agent's runtime: one task per app, the HTTP listener (webhooks,
//! metrics), the control socket, systemd notifications, and signals
//! (SIGTERM stops taking work and lets the running step finish; SIGHUP
//! reloads the configuration, keeping the old one if the new one is invalid).
//!
//! Operations run on blocking threads (`spawn_blocking`): the pipeline and
//! the GitHub source are synchronous, and an app's task awaits its operation
//! before taking the next, so operations on one app are serialised while apps
//! proceed independently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::{AppConfig, Config, SourceConfig};
use crate::daemon::control::{self, ControlRequest, ControlResponse};
use crate::daemon::http::{HttpState, Metrics, WatchingApp, WebhookConfig};
use crate::daemon::policy::{self, Clock, Decision};
use crate::daemon::{OpOutcome, Trigger, stopped};
use crate::ops::deploy::Session;
use crate::ops::lifecycle::DeployOptions;
use crate::source::ReleaseSource;
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::store::state::AppState;
use crate::version::VersionRequest;

/// A message to an app's task.
pub(crate) enum AppMsg {
    /// Look at the releases now.
    Trigger(Trigger),
    /// An operator's command from the control socket.
    Control(ControlRequest, Actor, oneshot::Sender<ControlResponse>),
}

struct AppHandle {
    tx: mpsc::UnboundedSender<AppMsg>,
    cfg: watch::Sender<Arc<AppConfig>>,
    task: tokio::task::JoinHandle<()>,
}

/// What every app task shares.
pub(crate) struct Shared {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub shutdown: watch::Receiver<bool>,
}

fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    let _ = sd_notify::notify(state);
}

fn status(msg: &str) {
    notify_systemd(&[sd_notify::NotifyState::Status(msg)]);
}

fn webhook_config(cfg: &Config) -> Result<WebhookConfig, String> {
    let secret = match &cfg.agent.webhook_secret_file {
        Some(p) => {
            let s = crate::fs::read_to_string(p).map_err(|e| {
                format!("{e}; write the GitHub webhook secret there, or remove webhook_secret_file")
            })?;
            let s = s.trim().as_bytes().to_vec();
            if s.is_empty() {
                return Err(format!("{} is empty", p.display()));
            }
            Some(s)
        }
        None => None,
    };
    let mut repos: HashMap<String, Vec<WatchingApp>> = HashMap::new();
    for a in cfg.apps.values() {
        if let SourceConfig::Github(g) = &a.source {
            repos
                .entry(g.slug().to_ascii_lowercase())
                .or_default()
                .push(WatchingApp {
                    app: a.name.clone(),
                    prerelease: crate::source::include_prereleases(a),
                });
        }
    }
    Ok(WebhookConfig { secret, repos })
}

/// Runs the agent until SIGTERM. Blocks; builds its own runtime.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    crate::source::github::install_crypto_provider();
    let cfg = Config::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard-agent")
        // octocrab's models deserialize deep (over 256 KiB of stack per call
        // in debug builds); the default 2 MiB leaves little room.
        .thread_stack_size(8 << 20)
        .build()?;
    rt.block_on(run_async(config_path.to_path_buf(), cfg))
}

async fn run_async(config_path: PathBuf, cfg: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let clock = policy::clock_from_env();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        clock,
        shutdown: shutdown_rx.clone(),
    });

    // Triggers from the webhook handler, routed to app tasks.
    let (trig_tx, mut trig_rx) = mpsc::unbounded_channel::<Trigger>();
    let wh = webhook_config(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    let http_state: Arc<HttpState> = HttpState::new(wh, trig_tx, metrics.clone());
    let http_for_reload = http_state.clone();
    let listener = tokio::net::TcpListener::bind(cfg.agent.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; change [agent] listen",
                cfg.agent.listen
            )
        })?;
    let local = listener.local_addr()?;
    let mut sd = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        let app = crate::daemon::http::router(http_state.clone());
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = sd.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = res {
            error!(error = %e, "HTTP listener failed");
        }
        http_state
    });

    let mut apps: HashMap<String, AppHandle> = HashMap::new();
    for a in cfg.apps.values() {
        apps.insert(a.name.clone(), spawn_app(a.clone(), shared.clone()));
        metrics.set_current_version(
            &a.name,
            AppPaths::new(&a.root)
                .current_version()
                .ok()
                .flatten()
                .map(|v| v.to_string())
                .as_deref(),
        );
    }
    let apps = Arc::new(tokio::sync::Mutex::new(apps));

    // The control socket: the CLI's way in, serialised through app tasks.
    let (ctl_tx, mut ctl_rx) =
        mpsc::unbounded_channel::<(ControlRequest, Actor, oneshot::Sender<ControlResponse>)>();
    let ctl_listener = control::bind(
        &cfg.agent.control_socket,
        cfg.agent.control_group.as_deref(),
    )?;
    let ctl_path = cfg.agent.control_socket.clone();
    let ctl = tokio::spawn(control::serve(ctl_listener, ctl_tx, shutdown_rx.clone()));

    info!(listen = %local, control = %ctl_path.display(), apps = cfg.apps.len(), "agent ready");
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "watching {} app(s); listening on {local}",
            cfg.apps.len()
        )),
    ]);
    let watchdog = if let Some(period) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) {
        let every = period / 2;
        Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            }
        }))
    } else {
        None
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut cfg = cfg;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading]);
                match Config::load(&config_path).map_err(|e| e.to_string()).and_then(|c| webhook_config(&c).map(|w| (c, w))) {
                    Ok((new, wh)) => {
                        let mut map = apps.lock().await;
                        for a in new.apps.values() {
                            match map.get(&a.name) {
                                Some(h) => { let _ = h.cfg.send(Arc::new(a.clone())); }
                                None => { map.insert(a.name.clone(), spawn_app(a.clone(), shared.clone())); }
                            }
                        }
                        let gone: Vec<String> = map.keys().filter(|k| !new.apps.contains_key(*k)).cloned().collect();
                        for g in gone {
                            if let Some(h) = map.remove(&g) {
                                drop(h.tx);
                                let _ = h.task.await;
                            }
                        }
                        drop(map);
                        http_for_reload.reload(wh);
                        if new.agent != cfg.agent {
                            warn!("[agent] settings changed; they take effect on restart");
                        }
                        cfg = new;
                        info!(apps = cfg.apps.len(), "configuration reloaded");
                        status(&format!("configuration reloaded; watching {} app(s)", cfg.apps.len()));
                    }
                    Err(e) => {
                        error!(error = %e, "the new configuration is invalid; keeping the running one");
                        status("configuration reload refused (invalid); running the previous one");
                    }
                }
                notify_systemd(&[sd_notify::NotifyState::Ready]);
            }
            Some(t) = trig_rx.recv() => {
                let app = match &t { Trigger::Webhook { app, .. } | Trigger::Poll { app } => app.clone() };
                if let Some(h) = apps.lock().await.get(&app) {
                    let _ = h.tx.send(AppMsg::Trigger(t));
                }
            }
            Some((req, actor, reply)) = ctl_rx.recv() => {
                match apps.lock().await.get(req.app()) {
                    Some(h) => { let _ = h.tx.send(AppMsg::Control(req, actor, reply)); }
                    None => {
                        let _ = reply.send(ControlResponse::error(
                            crate::ops::deploy::exit::NOT_FOUND,
                            format!("the agent has no app named {:?}", req.app()),
                        ));
                    }
                }
            }
        }
    }

    info!("SIGTERM: no new work; letting running operations finish");
    notify_systemd(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing running operations"),
    ]);
    let _ = shutdown_tx.send(true);
    let handles: Vec<AppHandle> = apps.lock().await.drain().map(|(_, h)| h).collect();
    let wait_all = async {
        for h in handles {
            drop(h.tx);
            let _ = h.task.await;
        }
    };
    if tokio::time::timeout(cfg.agent.shutdown_timeout, wait_all)
        .await
        .is_err()
    {
        warn!(timeout = ?cfg.agent.shutdown_timeout, "operations still running at the shutdown timeout; exiting (the next start repairs)");
    }
    let _ = http.await;
    ctl.abort();
    let _ = crate::fs::remove_file(&ctl_path);
    if let Some(w) = watchdog {
        w.abort();
    }
    info!("agent stopped");
    Ok(())
}

fn spawn_app(cfg: AppConfig, shared: Arc<Shared>) -> AppHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let task = tokio::spawn(app_task(cfg_rx, rx, shared));
    AppHandle {
        tx,
        cfg: cfg_tx,
        task,
    }
}

fn make_source(cfg: &AppConfig) -> Arc<dyn ReleaseSource> {
    Arc::from(crate::source::for_app(cfg))
}

async fn app_task(
    mut cfg_rx: watch::Receiver<Arc<AppConfig>>,
    mut rx: mpsc::UnboundedReceiver<AppMsg>,
    shared: Arc<Shared>,
) {
    let mut cfg = cfg_rx.borrow().clone();
    // Kept between polls: the GitHub source remembers ETags.
    let mut source = make_source(&cfg);
    let mut shutdown = shared.shutdown.clone();
    // The first look soon after start, then every poll_interval with jitter.
    let mut next = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            changed = cfg_rx.changed() => {
                if changed.is_err() { break; }
                cfg = cfg_rx.borrow().clone();
                source = make_source(&cfg);
                next = tokio::time::Instant::now() + Duration::from_millis(100);
            }
            msg = rx.recv() => match msg {
                None => break,
                Some(AppMsg::Trigger(t)) => {
                    let actor = match &t {
                        Trigger::Webhook { delivery, .. } => Actor { user: format!("webhook:{delivery}"), uid: None },
                        Trigger::Poll { .. } => Actor { user: "agent:poll".into(), uid: None },
                    };
                    if let Some(wait) = check(&cfg, &source, &shared, actor).await {
                        next = next.min(wait);
                    }
                }
                Some(AppMsg::Control(req, actor, reply)) => {
                    let resp = control_op(&cfg, &source, &shared, req, actor).await;
                    let _ = reply.send(resp);
                }
            },
            _ = tokio::time::sleep_until(next) => {
                let actor = Actor { user: "agent:poll".into(), uid: None };
                let wait = check(&cfg, &source, &shared, actor).await;
                next = tokio::time::Instant::now() + policy::jittered(cfg.agent.poll_interval, 0.1);
                if let Some(w) = wait { next = next.min(w); }
            }
        }
    }
}

/// Looks for a newer release and deploys it if the policy allows it now.
/// Returns when to look again if a window holds the deploy.
async fn check(
    cfg: &Arc<AppConfig>,
    source: &Arc<dyn ReleaseSource>,
    shared: &Arc<Shared>,
    actor: Actor,
) -> Option<tokio::time::Instant> {
    let cfg2 = cfg.clone();
    let src = source.clone();
    let clock = shared.clock.clone();
    let res = tokio::task::spawn_blocking(move || {
        check_blocking(&cfg2, src.as_ref(), clock.as_ref(), actor)
    })
    .await;
    let out = match res {
        Ok(o) => o,
        Err(e) => {
            error!(app = %cfg.name, error = %e, "the check panicked");
            return None;
        }
    };
    after_operation(cfg, shared, &out).await;
    match out.wait_until {
        Some(t) => {
            let now = shared.clock.now();
            let d = t.duration_since(now).unsigned_abs();
            // Never sleep past the next poll on a fake clock's say-so.
            let d = d
                .min(cfg.agent.poll_interval)
                .max(Duration::from_millis(200));
            Some(tokio::time::Instant::now() + d)
        }
        None => None,
    }
}

fn check_blocking(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    clock: &dyn Clock,
    actor: Actor,
) -> OpOutcome {
    let mut out = OpOutcome::default();
    let paths = AppPaths::new(&cfg.root);
    let current = paths.current_version().ok().flatten();
    out.current = current.as_ref().map(|v| v.to_string());
    let include_pre = crate::source::include_prereleases(cfg);
    let releases = match source.releases() {
        Ok(r) => r,
        Err(e) => {
            warn!(app = %cfg.name, error = %e, "could not list releases");
            return out;
        }
    };
    let mut candidates: Vec<_> = releases
        .into_iter()
        .filter(|r| include_pre || !r.prerelease)
        .filter(|r| current.as_ref().is_none_or(|c| &r.version > c))
        .collect();
    candidates.sort_by(|a, b| b.version.cmp(&a.version));
    out.behind = Some(candidates.len() as u64);
    let st = AppState::load(&paths).unwrap_or_default();
    if let Some(a) = &st.attention {
        if !candidates.is_empty() {
            warn!(app = %cfg.name, kind = %a.kind, "a newer release exists, but deploys are blocked until `switchyard resolve`");
        }
        return out;
    }
    // The newest release the policy lets the agent take on its own.
    let Some(info) = candidates.into_iter().find(|r| {
        policy::auto_allows(cfg.agent.auto, current.as_ref(), &r.version)
            && !st.quarantined.contains_key(&r.version.to_string())
    }) else {
        return out;
    };
    let v = info.version.clone();
    // Critical releases may skip the window once their deadline passes.
    // Only a window can hold a deploy, so only then does a critical
    // marking matter (and is worth fetching the release's sidecars for).
    let critical = match &cfg.agent.window {
        Some(_) => critical_of(cfg, source, &info),
        None => None,
    };
    match policy::decide(cfg.agent.window.as_ref(), critical.as_ref(), clock.now()) {
        Decision::WaitUntil(t) => {
            info!(app = %cfg.name, version = %v, until = %t, "a deploy waits for the window");
            out.wait_until = Some(t);
            return out;
        }
        Decision::Now => {}
    }
    info!(app = %cfg.name, version = %v, actor = %actor.user, step = "deploy", "deploying on my own");
    let session = match Session::open(cfg, actor, &format!("agent deploy {v}"), true) {
        Ok(s) => s,
        Err(e) => {
            out.deploy = Some(Err((
                "failed".into(),
                "prechecks".into(),
                e.to_string(),
                Some(v.to_string()),
            )));
            return out;
        }
    };
    let res = session.deploy(
        source,
        &VersionRequest::Exact(v.clone()),
        DeployOptions {
            allow_downgrade: false,
            // The auto level already allowed it.
            allow_major: true,
            force: false,
        },
    );
    match res {
        Ok(o) => out.deploy = Some(Ok(o)),
        Err(e) => out.deploy_failed(&paths, &e, &v.to_string()),
    }
    out.current = paths
        .current_version()
        .ok()
        .flatten()
        .map(|v| v.to_string());
    out
}

fn critical_of(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    info: &crate::source::ReleaseInfo,
) -> Option<policy::Critical> {
    // release.toml counts only when signed by a trusted key.
    let toml = source.fetch(info).ok().and_then(|f| {
        let body = f.sidecars.get("release.toml")?.clone();
        let sig = f.sidecars.get("release.toml.minisig")?;
        let t = &cfg.trust;
        let policy = crate::verify::trust::TrustPolicy::new(
            &t.keys,
            &t.key_files,
            &t.revoked_keys,
            true,
            t.allow_legacy_signatures,
        )
        .ok()?;
        match crate::verify::trust::verify_bytes(&policy, sig, &body, "release.toml") {
            Ok(_) => Some(body),
            Err(e) => {
                warn!(app = %cfg.name, error = %e, "release.toml is not validly signed; ignored");
                None
            }
        }
    });
    match policy::critical_from(info.notes.as_deref(), toml.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            warn!(app = %cfg.name, error = %e, "could not read the critical marking");
            None
        }
    }
}

/// Metrics and failure reports after an operation.
async fn after_operation(cfg: &AppConfig, shared: &Shared, out: &OpOutcome) {
    let m = &shared.metrics;
    m.set_current_version(&cfg.name, out.current.as_deref());
    if let Some(b) = out.behind {
        m.set_versions_behind(&cfg.name, b);
    }
    match &out.deploy {
        None => {}
        Some(Ok(o)) => {
            m.deploy_outcome(&cfg.name, "completed");
            m.set_last_deploy(
                &cfg.name,
                jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
            );
            for h in &o.health {
                m.observe_health(&cfg.name, &h.phase, h.report.elapsed.as_secs_f64());
            }
            status(&format!("{}: deployed {}", cfg.name, o.to));
        }
        Some(Err((state, step, error, to))) => {
            m.deploy_outcome(&cfg.name, if out.reverted { "rolled_back" } else { state });
            if out.reverted {
                m.revert(&cfg.name);
            }
            status(&format!(
                "{}: deploy of {} failed ({state})",
                cfg.name,
                to.clone().unwrap_or_default()
            ));
            report_failure(cfg, state, step, error, to.as_deref()).await;
        }
    }
}

async fn report_failure(cfg: &AppConfig, state: &str, step: &str, error: &str, to: Option<&str>) {
    use crate::daemon::report;
    let github = match (&cfg.source, cfg.agent.report_issues) {
        (SourceConfig::Github(g), true) => {
            let (owner, repo) = g
                .slug()
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            Some(report::GithubTarget {
                api_url: g.api_url.clone(),
                owner,
                repo,
                token: crate::source::github::read_token(g).ok().flatten(),
            })
        }
        _ => None,
    };
    if github.is_none() && cfg.agent.notify_url.is_none() {
        return;
    }
    let paths = AppPaths::new(&cfg.root);
    let rec = AppState::load(&paths).ok().and_then(|s| s.deploy);
    let deploy_id = rec.as_ref().map(|r| r.id.clone()).unwrap_or_default();
    let from = rec.and_then(|r| r.from.map(|v| v.to_string()));
    let r = report::build(
        &cfg.root,
        &cfg.name,
        from.as_deref(),
        to.unwrap_or("?"),
        &deploy_id,
        state,
        step,
        error,
        40,
    );
    let target = report::ReportTarget {
        github,
        notify_url: cfg.agent.notify_url.clone(),
    };
    for res in report::send(&target, &r).await {
        match res {
            Ok(what) => info!(app = %cfg.name, "failure reported: {what}"),
            Err(e) => warn!(app = %cfg.name, error = %e, "could not report the failure"),
        }
    }
}

/// An operator's command, run in the app's task (so it queues behind
/// whatever the agent is doing for that app).
async fn control_op(
    cfg: &Arc<AppConfig>,
    source: &Arc<dyn ReleaseSource>,
    shared: &Arc<Shared>,
    req: ControlRequest,
    actor: Actor,
) -> ControlResponse {
    let cfg2 = cfg.clone();
    let src = source.clone();
    let res =
        tokio::task::spawn_blocking(move || control::execute(&cfg2, src.as_ref(), req, actor))
            .await;
    let (resp, outcome) = match res {
        Ok(r) => r,
        Err(e) => (
            ControlResponse::error(
                crate::ops::deploy::exit::FAILURE,
                format!("the operation panicked: {e}"),
            ),
            OpOutcome::default(),
        ),
    };
    after_operation(cfg, shared, &outcome).await;
    resp
}
