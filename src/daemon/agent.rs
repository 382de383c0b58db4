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

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::clock::{Clock, Tick};
use crate::config::{AppConfig, Config, ConfigError, SourceConfig};
use crate::daemon::aftermath::after_operation;
use crate::daemon::control::{self, ControlError, Job};
use crate::daemon::fleet::{FleetApp, Gate};
use crate::daemon::http::{HttpState, Metrics, WatchingApp, WebhookConfig};
use crate::daemon::memory::{self, Verdict};
use crate::daemon::policy::{self, Decision};
use crate::daemon::{OpOutcome, Trigger, Update, run_op, stopped};
use crate::fs::FsError;
use crate::ops::api::{Caller, RemoteError, Reply, Request};
use crate::source::ReleaseSource;
use crate::source::ledger::Ledger;
use crate::store::agent::AgentMemory;
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::store::state::AppState;
use crate::version::VersionRequest;

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The webhook secret file could not be read.
    #[error(
        "cannot read the webhook secret {}; write the GitHub webhook secret there, or remove webhook_secret_file",
        path.display()
    )]
    WebhookSecret {
        /// `webhook_secret_file`.
        path: PathBuf,
        /// Why.
        #[source]
        source: FsError,
    },
    /// Nothing to watch.
    #[error(
        "{} configures no app: add an [apps.<name>] table with root and source (see the commented example in the file), then start the agent",
        .0.display()
    )]
    NoApps(PathBuf),
    /// The webhook secret file is empty.
    #[error("{} is empty", .0.display())]
    EmptySecret(PathBuf),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}; change [agent] listen")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The console's listener could not bind.
    #[error("cannot listen on {addr} for the console; change [console] listen")]
    ConsoleListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The runtime, a signal handler or the listener's address failed.
    #[error("the agent's runtime failed")]
    Runtime(#[source] std::io::Error),
}

/// A message to an app's task.
pub(crate) enum AppMsg {
    /// Look at the releases now.
    Trigger(Trigger),
    /// An operator's command from the control socket.
    Control(Job),
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
    crate::daemon::systemd_status(msg);
}

fn webhook_config(cfg: &Config) -> Result<WebhookConfig, AgentError> {
    let secret = match &cfg.agent.webhook_secret_file {
        Some(p) => {
            let s = crate::fs::read_to_string(p).map_err(|source| AgentError::WebhookSecret {
                path: p.clone(),
                source,
            })?;
            let s = s.trim().as_bytes().to_vec();
            if s.is_empty() {
                return Err(AgentError::EmptySecret(p.clone()));
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

/// Raises the open-file soft limit to the hard limit: every connection,
/// hook pipe and state file takes a descriptor, and the usual soft limit
/// (1024) is far below what the kernel allows the service.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => warn!(error = %e, soft, hard, "could not raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not read the open-file limit"),
    }
}

/// What the configuration allows but should not (a secret others can read).
fn log_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        warn!("{w}");
    }
}

/// Runs the agent until SIGTERM. Blocks; builds its own runtime.
pub(crate) fn run(config_path: &Path) -> Result<(), AgentError> {
    crate::source::github::install_crypto_provider();
    // As `config check`: a key file or source folder that is missing here
    // stops the start with the same located messages.
    let cfg = Config::load_complete(config_path)?;
    if cfg.apps.is_empty() {
        return Err(AgentError::NoApps(config_path.to_path_buf()));
    }
    log_warnings(&cfg);
    raise_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard-agent")
        // octocrab's models deserialize deep (over 256 KiB of stack per call
        // in debug builds); the default 2 MiB leaves little room.
        .thread_stack_size(8 << 20)
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(run_async(config_path.to_path_buf(), cfg))
}

async fn run_async(config_path: PathBuf, cfg: Config) -> Result<(), AgentError> {
    let metrics = Arc::new(Metrics::new());
    let clock = crate::clock::from_env();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        clock,
        shutdown: shutdown_rx.clone(),
    });

    // Triggers from the webhook handler, routed to app tasks.
    let (trig_tx, mut trig_rx) = mpsc::unbounded_channel::<Trigger>();
    let wh = webhook_config(&cfg)?;
    let http_state: Arc<HttpState> = HttpState::new(wh, trig_tx, metrics.clone());
    let http_for_reload = http_state.clone();
    let listener = tokio::net::TcpListener::bind(cfg.agent.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.agent.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(AgentError::Runtime)?;
    let http = tokio::spawn(crate::daemon::http::listener::serve(
        listener,
        crate::daemon::http::router(http_state),
        crate::daemon::http::listener::Limits::default(),
        shutdown_rx.clone(),
    ));

    let mut apps: HashMap<String, AppHandle> = HashMap::new();
    for a in cfg.apps.values() {
        apps.insert(a.name.clone(), spawn_app(a.clone(), shared.clone()));
        metrics.init_app(&a.name);
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
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Job>();
    let ctl_listener = control::bind(
        &cfg.agent.control_socket,
        cfg.agent.control_group.as_deref(),
    )?;
    let ctl_path = cfg.agent.control_socket.clone();
    // The console (when configured): a listener of its own, its actions
    // queued to the app tasks as the control socket's are.
    let console = match &cfg.console {
        Some(c) => {
            let l = tokio::net::TcpListener::bind(c.listen)
                .await
                .map_err(|source| AgentError::ConsoleListen {
                    addr: c.listen,
                    source,
                })?;
            let addr = l.local_addr().map_err(AgentError::Runtime)?;
            let state = crate::daemon::console::ConsoleState::new(
                c.clone(),
                &cfg.apps,
                ctl_tx.clone(),
                shared.clock.clone(),
                shutdown_rx.clone(),
            );
            let task = tokio::spawn(crate::daemon::http::listener::serve(
                l,
                crate::daemon::console::router(state.clone()),
                crate::daemon::http::listener::Limits::default(),
                shutdown_rx.clone(),
            ));
            info!(listen = %addr, auth = %c.auth.name(), "console ready");
            Some((state, task))
        }
        None => None,
    };
    // On a thread of its own, so no load on the HTTP listener delays it.
    let ctl =
        control::spawn(ctl_listener, ctl_tx, shutdown_rx.clone()).map_err(AgentError::Runtime)?;

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

    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    let mut cfg = cfg;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                notify_systemd(&[sd_notify::NotifyState::Reloading]);
                match Config::load_complete(&config_path).map_err(AgentError::from).and_then(|c| webhook_config(&c).map(|w| (c, w))) {
                    Ok((new, wh)) => {
                        log_warnings(&new);
                        let mut map = apps.lock().await;
                        for a in new.apps.values() {
                            match map.get(&a.name) {
                                Some(h) => { let _ = h.cfg.send(Arc::new(a.clone())); }
                                None => {
                                    map.insert(a.name.clone(), spawn_app(a.clone(), shared.clone()));
                                    shared.metrics.init_app(&a.name);
                                }
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
                        if let Some((c, _)) = &console {
                            c.reload(&new.apps);
                        }
                        if new.agent != cfg.agent {
                            warn!("[agent] settings changed; they take effect on restart");
                        }
                        if new.console != cfg.console {
                            warn!("[console] settings changed; they take effect on restart");
                        }
                        cfg = new;
                        info!(apps = cfg.apps.len(), "configuration reloaded");
                        status(&format!("configuration reloaded; watching {} app(s)", cfg.apps.len()));
                    }
                    Err(e) => {
                        error!(error = %crate::ops::error::chain(&e), "the new configuration is invalid; keeping the running one");
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
            Some(job) = ctl_rx.recv() => {
                match apps.lock().await.get(job.0.app()) {
                    Some(h) => { let _ = h.tx.send(AppMsg::Control(job)); }
                    None => {
                        let (req, _, reply) = job;
                        let _ = reply.send(Err(ControlError::NoSuchApp(req.app().to_string()).to_remote()));
                    }
                }
            }
        }
    }

    info!("SIGTERM: no new work, no new step; running hooks get until the shutdown timeout");
    crate::process::request_stop();
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
        let killed = crate::process::kill_running();
        warn!(timeout = %humantime::format_duration(cfg.agent.shutdown_timeout), killed_hooks = killed, "operations still running at the shutdown timeout; exiting now (the next start finishes or undoes them)");
        let _ = crate::fs::remove_file(&ctl_path);
        // Leave now: dropping the runtime would wait for the operations'
        // threads, and nothing may happen after "exiting".
        std::process::exit(0);
    }
    let _ = http.await;
    if let Some((_, task)) = console {
        let _ = task.await;
    }
    let _ = tokio::task::spawn_blocking(move || ctl.join()).await;
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

/// The fleet ledger of an app in fleet mode (kept between polls: it
/// remembers ETags and final states).
fn make_ledger(cfg: &AppConfig) -> Option<Arc<dyn Ledger>> {
    cfg.fleet.as_ref()?;
    crate::source::ledger_github::for_app(cfg).map(Arc::from)
}

async fn app_task(
    mut cfg_rx: watch::Receiver<Arc<AppConfig>>,
    mut rx: mpsc::UnboundedReceiver<AppMsg>,
    shared: Arc<Shared>,
) {
    let mut cfg = cfg_rx.borrow().clone();
    // Kept between polls: the GitHub source remembers ETags.
    let mut source = make_source(&cfg);
    let mut ledger = make_ledger(&cfg);
    let mut shutdown = shared.shutdown.clone();
    // The first look soon after start, then every poll_interval with jitter.
    // All timed on the agent's clock.
    let clock = shared.clock.clone();
    let mut next = clock.tick() + Duration::from_millis(500);
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            changed = cfg_rx.changed() => {
                if changed.is_err() { break; }
                cfg = cfg_rx.borrow().clone();
                source = make_source(&cfg);
                ledger = make_ledger(&cfg);
                next = clock.tick() + Duration::from_millis(100);
            }
            msg = rx.recv() => match msg {
                None => break,
                Some(AppMsg::Trigger(t)) => {
                    let actor = match &t {
                        Trigger::Webhook { delivery, .. } => Actor { user: format!("webhook:{delivery}"), uid: None, reason: None },
                        Trigger::Poll { .. } => Actor { user: "agent:poll".into(), uid: None, reason: None },
                    };
                    if let Some(wait) = check(&cfg, &source, &ledger, &shared, actor).await {
                        next = next.min(wait);
                    }
                }
                Some(AppMsg::Control((req, actor, reply))) => {
                    let resp = control_op(&cfg, &source, &shared, req, actor).await;
                    let _ = reply.send(resp);
                }
            },
            _ = crate::clock::sleep_until(clock.as_ref(), next) => {
                let actor = Actor { user: "agent:poll".into(), uid: None, reason: None };
                let wait = check(&cfg, &source, &ledger, &shared, actor).await;
                next = clock.tick() + policy::jittered(cfg.agent.poll_interval, 0.1);
                if let Some(w) = wait { next = next.min(w); }
                debug!(app = %cfg.name, "poll finished");
            }
        }
    }
}

/// Looks for a newer release and deploys it if the policy allows it now.
/// Returns when to look again if a window holds the deploy.
async fn check(
    cfg: &Arc<AppConfig>,
    source: &Arc<dyn ReleaseSource>,
    ledger: &Option<Arc<dyn Ledger>>,
    shared: &Arc<Shared>,
    actor: Actor,
) -> Option<Tick> {
    let cfg2 = cfg.clone();
    let src = source.clone();
    let ledger = ledger.clone();
    let clock = shared.clock.clone();
    let res = tokio::task::spawn_blocking(move || {
        check_blocking(&cfg2, src.as_ref(), ledger.as_ref(), &clock, actor)
    })
    .await;
    let out = match res {
        Ok(o) => o,
        Err(e) => {
            error!(app = %cfg.name, error = %e, "the check panicked");
            return None;
        }
    };
    after_operation(cfg, &shared.metrics, shared.clock.as_ref(), &out).await;
    match out.wait_until {
        Some(t) => {
            let now = shared.clock.now();
            let d = t.duration_since(now).unsigned_abs();
            // Never sleep past the next poll on a fake clock's say-so.
            let d = d
                .min(cfg.agent.poll_interval)
                .max(Duration::from_millis(200));
            Some(shared.clock.tick() + d)
        }
        None => None,
    }
}

fn check_blocking(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    ledger: Option<&Arc<dyn Ledger>>,
    clock: &Arc<dyn Clock>,
    actor: Actor,
) -> OpOutcome {
    let mut out = OpOutcome::default();
    let paths = AppPaths::new(&cfg.root);
    let current = paths.current_version().ok().flatten();
    out.current = current.as_ref().map(|v| v.to_string());
    // An operator's scheduled deploy comes before the agent's own policy.
    if crate::daemon::scheduled::run_due(cfg, source, clock, &mut out) {
        return out;
    }
    let include_pre = crate::source::include_prereleases(cfg);
    let releases = match source.releases() {
        Ok(r) => r,
        Err(e) => {
            warn!(app = %cfg.name, error = %e, "could not list releases");
            return out;
        }
    };
    out.polled = true;
    let fleet = FleetApp::of(cfg, ledger);
    if let Some(f) = &fleet {
        f.flush_pending();
    }
    let mut candidates: Vec<_> = releases
        .iter()
        .filter(|r| include_pre || !r.prerelease)
        .filter(|r| current.as_ref().is_none_or(|c| &r.version > c))
        .cloned()
        .collect();
    candidates.sort_by(|a, b| b.version.cmp(&a.version));
    let st = AppState::load(&paths).unwrap_or_default();
    let mut mem = AgentMemory::load(&paths).unwrap_or_else(|e| {
        warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot read the agent's memory; starting afresh");
        AgentMemory::default()
    });
    let now = clock.now();
    let mut mem_changed = false;
    // Deployable: not quarantined, not below the downgrade floor, not
    // remembered as refused. Only these count as "behind".
    let floor = st.downgrade_floor(&paths.installed().unwrap_or_default());
    let mut deployable = Vec::new();
    for r in candidates {
        if st.is_quarantined(&r.version) || floor.as_ref().is_some_and(|f| &r.version < f) {
            continue;
        }
        let (verdict, changed) = memory::verdict(&mut mem, &paths, &r, now);
        mem_changed |= changed;
        if let Verdict::Refused(reason) = &verdict {
            debug!(app = %cfg.name, version = %r.version, reason = %reason, "not retrying a refused release until it changes or an operator acts");
            continue;
        }
        deployable.push((r, verdict));
    }
    out.behind = Some(deployable.len() as u64);
    if let Some((newest, _)) = deployable.first() {
        let v = newest.version.to_string();
        if !mem.first_seen.contains_key(&v) {
            mem.first_seen.insert(v.clone(), now.to_string());
            mem_changed = true;
        }
        out.update = Some(Update {
            version: v,
            behind: deployable.len() as u64,
            published_at: newest.published_at.clone(),
        });
    }
    if mem_changed {
        save_memory(cfg, &paths, &mem);
    }
    if let Some(a) = &st.attention {
        if !deployable.is_empty() {
            warn!(app = %cfg.name, kind = %a.kind, "a newer release exists, but deploys are blocked until `switchyard resolve`");
        }
        return out;
    }
    if let Some(h) = &st.hold {
        // A hold a fleet revert set ends with the halt it served.
        let lifted = h.by.starts_with("fleet:")
            && match (&fleet, deployable.first()) {
                (Some(f), Some((newest, _))) => {
                    f.release_fleet_hold(source, newest, clock, &mut out)
                }
                _ => false,
            };
        if !lifted {
            if let Some((newest, _)) = deployable.first() {
                info!(app = %cfg.name, version = %newest.version, by = %h.by, since = %h.since, reason = %h.reason,
                    "a newer release exists, but the app is held; `switchyard unhold` resumes automatic deploys");
            }
            return out;
        }
    }
    // Critical releases too: never a quarantined or refused one.
    let open: Vec<_> = deployable.iter().map(|(r, _)| r).collect();
    if crate::daemon::scheduled::deploy_critical(
        cfg,
        source,
        clock,
        &open,
        current.as_ref(),
        &mut out,
    ) {
        return out;
    }
    // The newest release the policy lets the agent take on its own.
    let Some((info, verdict)) = deployable
        .into_iter()
        .find(|(r, _)| policy::auto_allows(cfg.agent.auto, current.as_ref(), &r.version))
    else {
        // Nothing to roll out: the live version may be reverted fleet-wide.
        if let Some(f) = &fleet {
            f.watch_live(source, &releases, current.as_ref(), clock, &mut out);
        }
        return out;
    };
    let v = info.version.clone();
    if let Verdict::Later(at) = verdict {
        debug!(app = %cfg.name, version = %v, retry_at = %at, "backing off after a failed attempt");
        out.wait_until = Some(at);
        return out;
    }
    // A fleet rollout: only in this host's wave, never while halted, never
    // without the ledger.
    let attempting = match fleet
        .as_ref()
        .map(|f| f.gate(source, &info, clock.now(), &mut out))
    {
        None | Some(Gate::Free) => None,
        Some(Gate::Go(a)) => Some(a),
        Some(Gate::NotNow { until }) => {
            out.wait_until = until;
            return out;
        }
    };
    // Critical releases may skip the window once their deadline passes.
    // Only a window can hold a deploy, so only then does a critical
    // marking matter (and is worth fetching the release's sidecars for).
    let critical = match &cfg.agent.window {
        Some(_) => crate::verify::critical::critical_of(cfg, source, &info),
        None => None,
    };
    match policy::decide(cfg.agent.window.as_ref(), critical.as_ref(), clock.now()) {
        Decision::WaitUntil(t) => {
            info!(app = %cfg.name, version = %v, until = %t, "a deploy waits for the window");
            if let Some(c) = &critical {
                out.critical = Some((v.to_string(), c.deadline));
            }
            out.wait_until = Some(t);
            return out;
        }
        Decision::Now => {}
    }
    info!(app = %cfg.name, version = %v, actor = %actor.user, step = %"deploy", "deploying on my own");
    let req = Request::Deploy {
        app: cfg.name.clone(),
        version: VersionRequest::Exact(v.clone()),
        allow_downgrade: false,
        // The auto level already allowed it.
        allow_major: true,
        force: false,
        seen: None,
        reason: None,
    };
    let caller = Caller {
        clock: clock.clone(),
        actor,
        wait: true,
        automatic: true,
    };
    let attempt = match (&fleet, &attempting) {
        (Some(f), Some(a)) => match f.begin(a) {
            Some(id) => Some((f, a, id)),
            None => return out,
        },
        _ => None,
    };
    let res = run_op(cfg, source, &req, &caller, &mut out);
    if let Some((f, a, id)) = attempt {
        f.finish(
            a,
            id,
            res.as_ref()
                .map(|_| ())
                .map_err(|e| crate::ops::error::chain(e)),
        );
    }
    // Reloaded: the memory may have been written since (first_seen).
    let mut mem = AgentMemory::load(&paths).unwrap_or(mem);
    match res {
        Ok(_) => {
            if mem.failures.remove(&v.to_string()).is_some() {
                save_memory(cfg, &paths, &mem);
            }
        }
        Err(e) => {
            let f = memory::remember(
                &mut mem,
                &paths,
                &info,
                &e,
                clock.now(),
                cfg.agent.poll_interval,
            );
            save_memory(cfg, &paths, &mem);
            match &f.retry_at {
                Some(at) => {
                    warn!(app = %cfg.name, version = %v, attempt = f.attempts, retry_at = %at, error = %f.reason, "the automatic deploy failed (transient); trying again at {at}");
                    out.wait_until = at.parse().ok();
                }
                None => {
                    warn!(app = %cfg.name, version = %v, error = %f.reason, "the automatic deploy failed; the agent will not retry {v} until the release changes or an operator acts (deploy it by hand, or publish a new release)")
                }
            }
        }
    }
    out
}

fn save_memory(cfg: &AppConfig, paths: &AppPaths, mem: &AgentMemory) {
    if let Err(e) = mem.save(paths) {
        warn!(app = %cfg.name, error = %crate::chain::chain(&e), "cannot save the agent's memory; a restart may retry or notify again");
    }
}

/// An operator's command, run in the app's task (so it queues behind
/// whatever the agent is doing for that app).
async fn control_op(
    cfg: &Arc<AppConfig>,
    source: &Arc<dyn ReleaseSource>,
    shared: &Arc<Shared>,
    req: Request,
    actor: Actor,
) -> Reply {
    let cfg2 = cfg.clone();
    let src = source.clone();
    let clock = shared.clock.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut outcome = OpOutcome::default();
        // Operators' commands run on the agent's clock, as its own deploys do.
        let caller = Caller {
            clock,
            ..Caller::operator(actor, true)
        };
        let res = run_op(&cfg2, src.as_ref(), &req, &caller, &mut outcome);
        (res.map_err(|e| RemoteError::from(&e)), outcome)
    })
    .await;
    let (reply, outcome) = match res {
        Ok(r) => r,
        Err(e) => (
            Err(ControlError::Panicked(e).to_remote()),
            OpOutcome::default(),
        ),
    };
    after_operation(cfg, &shared.metrics, shared.clock.as_ref(), &outcome).await;
    reply
}
