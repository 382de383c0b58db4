//! The control socket: a unix socket (mode 0660, a configurable group) over
//! which the CLI asks the running agent to promote, revert, deploy or report
//! status, so operations are serialised through the agent. One JSON request
//! line, one JSON response line. The caller's uid (SO_PEERCRED) is the actor
//! in the audit log. Nothing is controllable over TCP.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::daemon::OpOutcome;
use crate::ops::deploy::{DeployError, Session, exit};
use crate::ops::lifecycle::DeployOptions;
use crate::source::ReleaseSource;
use crate::store::history::Actor;
use crate::store::layout::AppPaths;
use crate::version::{Version, VersionRequest};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// What the CLI asks the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// `switchyard promote`.
    Promote {
        /// App.
        app: String,
        /// Version.
        version: String,
        /// Promote a quarantined release.
        #[serde(default)]
        force: bool,
    },
    /// `switchyard revert`.
    Revert {
        /// App.
        app: String,
        /// Target, default last-good.
        #[serde(default)]
        to: Option<String>,
    },
    /// `switchyard deploy`.
    Deploy {
        /// App.
        app: String,
        /// Version or `latest`.
        version: String,
        /// --allow-downgrade.
        #[serde(default)]
        allow_downgrade: bool,
        /// --allow-major.
        #[serde(default)]
        allow_major: bool,
        /// --force.
        #[serde(default)]
        force: bool,
    },
    /// `switchyard status`.
    Status {
        /// App.
        app: String,
    },
}

impl ControlRequest {
    /// The app it concerns.
    pub fn app(&self) -> &str {
        match self {
            ControlRequest::Promote { app, .. }
            | ControlRequest::Revert { app, .. }
            | ControlRequest::Deploy { app, .. }
            | ControlRequest::Status { app } => app,
        }
    }
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlResponse {
    /// The exit code the CLI should end with.
    pub exit_code: i32,
    /// The result, as `--json` prints it.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The result for people.
    #[serde(default)]
    pub text: Option<String>,
    /// The error, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl ControlResponse {
    /// A failure.
    pub fn error(code: i32, msg: impl Into<String>) -> ControlResponse {
        ControlResponse {
            exit_code: code,
            result: None,
            text: None,
            error: Some(msg.into()),
        }
    }

    fn ok(result: serde_json::Value, text: String) -> ControlResponse {
        ControlResponse {
            exit_code: exit::OK,
            result: Some(result),
            text: Some(text),
            error: None,
        }
    }
}

/// Binds the control socket: a stale socket file (no agent behind it) is
/// replaced; a live one means another agent runs, which is refused.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    if crate::fs::symlink_metadata(path)?.is_some() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another agent is listening on {}; stop it first (systemctl stop switchyard)",
                path.display()
            );
        }
        crate::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        crate::fs::create_dir_all(parent)?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind the control socket {}: {e}", path.display()))?;
    crate::fs::set_mode(path, 0o660)?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)?
            .ok_or_else(|| anyhow::anyhow!("control_group {g:?} does not exist"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid))?;
    }
    Ok(l)
}

type ControlTx = mpsc::UnboundedSender<(ControlRequest, Actor, oneshot::Sender<ControlResponse>)>;

/// Accepts connections until shutdown; each carries one request.
pub async fn serve(
    l: tokio::net::UnixListener,
    tx: ControlTx,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = crate::daemon::stopped(&mut shutdown) => break,
            acc = l.accept() => {
                let Ok((stream, _)) = acc else { continue };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, tx).await {
                        warn!(error = %e, "control connection failed");
                    }
                });
            }
        }
    }
}

async fn handle(stream: tokio::net::UnixStream, tx: ControlTx) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let uid = cred.uid();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"));
    let actor = Actor {
        user,
        uid: Some(uid),
    };
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
    r.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<ControlRequest>(&line) {
        Err(e) => ControlResponse::error(exit::USAGE, format!("bad control request: {e}")),
        Ok(req) => {
            info!(user = %actor.user, uid, op = ?req, "control request");
            let (rtx, rrx) = oneshot::channel();
            if tx.send((req, actor, rtx)).is_err() {
                ControlResponse::error(exit::FAILURE, "the agent is shutting down")
            } else {
                rrx.await.unwrap_or_else(|_| {
                    ControlResponse::error(exit::FAILURE, "the agent is shutting down")
                })
            }
        }
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

use tokio::io::AsyncReadExt as _;

fn fail(e: DeployError) -> ControlResponse {
    ControlResponse::error(e.exit_code(), format!("{e:#}"))
}

fn switch_text(app: &str, r: &crate::ops::deploy::SwitchReport) -> String {
    if !r.changed {
        return format!("{app} {} is already live", r.to);
    }
    let opt = |v: &Option<Version>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    };
    format!(
        "{app}: current -> {} (was {}); last-good -> {}",
        r.to,
        opt(&r.from),
        opt(&r.last_good)
    )
}

/// Runs a request (blocking; on the app's task, so it queues behind the
/// agent's own work for that app).
pub(crate) fn execute(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    req: ControlRequest,
    actor: Actor,
    clock: Arc<dyn Clock>,
) -> (ControlResponse, OpOutcome) {
    let mut out = OpOutcome::default();
    let paths = AppPaths::new(&cfg.root);
    let parse =
        |s: &str| Version::parse(s).map_err(|e| ControlResponse::error(exit::USAGE, e.to_string()));
    // Sessions run on the agent's clock, as its own deploys do.
    let open = |actor, op: &str| Session::open_with_clock(cfg, actor, op, true, clock.clone());
    let resp = (|| -> Result<ControlResponse, ControlResponse> {
        match &req {
            ControlRequest::Status { .. } => {
                // The CLI renders the status from the result.
                let st = crate::ops::deploy::status(cfg).map_err(fail)?;
                Ok(ControlResponse {
                    exit_code: exit::OK,
                    result: Some(serde_json::to_value(&st).unwrap_or_default()),
                    text: None,
                    error: None,
                })
            }
            ControlRequest::Promote { version, force, .. } => {
                let v = parse(version)?;
                let s = open(actor, &format!("promote {v}")).map_err(fail)?;
                let r = s.promote_checked(&v, *force).map_err(fail)?;
                Ok(ControlResponse::ok(
                    serde_json::to_value(&r).unwrap_or_default(),
                    switch_text(&cfg.name, &r),
                ))
            }
            ControlRequest::Revert { to, .. } => {
                let to = to.as_deref().map(parse).transpose()?;
                let s = open(actor, "revert").map_err(fail)?;
                let r = s.revert_checked(to.as_ref()).map_err(fail)?;
                out.reverted = r.changed;
                Ok(ControlResponse::ok(
                    serde_json::to_value(&r).unwrap_or_default(),
                    switch_text(&cfg.name, &r),
                ))
            }
            ControlRequest::Deploy {
                version,
                allow_downgrade,
                allow_major,
                force,
                ..
            } => {
                let req: VersionRequest =
                    version.parse().map_err(|e: crate::version::VersionError| {
                        ControlResponse::error(exit::USAGE, e.to_string())
                    })?;
                let s = open(actor, &format!("deploy {version}")).map_err(fail)?;
                let res = s.deploy(
                    source,
                    &req,
                    DeployOptions {
                        allow_downgrade: *allow_downgrade,
                        allow_major: *allow_major,
                        force: *force,
                    },
                );
                match res {
                    Ok(o) => {
                        let text = format!(
                            "{}: deployed {} (was {}); deploy id {}",
                            cfg.name,
                            o.to,
                            o.from
                                .as_ref()
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "none".into()),
                            o.id
                        );
                        let v = serde_json::to_value(&o).unwrap_or_default();
                        out.deploy = Some(Ok(o));
                        Ok(ControlResponse::ok(v, text))
                    }
                    Err(e) => {
                        out.deploy_failed(&paths, &e, version);
                        Err(fail(e))
                    }
                }
            }
        }
    })()
    .unwrap_or_else(|e| e);
    out.current = paths
        .current_version()
        .ok()
        .flatten()
        .map(|v| v.to_string());
    (resp, out)
}

/// Sends a request to a running agent. `Ok(None)` when no agent listens
/// there (no socket, or nobody behind it): the CLI then acts directly.
pub fn request(socket: &Path, req: &ControlRequest) -> Result<Option<ControlResponse>, String> {
    let mut s = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "the agent's control socket {} refuses you ({e}); join its control_group, or run as the agent's user",
                socket.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot reach the agent at {}: {e}",
                socket.display()
            ));
        }
    };
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("talking to the agent: {e}"))?;
    let mut resp = String::new();
    BufReader::new(&s)
        .read_line(&mut resp)
        .map_err(|e| format!("reading the agent's answer: {e}"))?;
    serde_json::from_str(&resp)
        .map(Some)
        .map_err(|e| format!("the agent's answer is not understood ({e}): {resp}"))
}
