//! The control socket: a unix socket (mode 0660, a configurable group) over
//! which the CLI hands the running agent the requests it takes (promote,
//! revert, deploy, status), so operations are serialised through the agent.
//! One JSON [`Request`] line in, one JSON [`Reply`] line out: the operations
//! API's own types, never rendered text. While the operation runs the agent
//! sends an empty line every [`HEARTBEAT`], so the CLI can tell a long
//! deploy from a hung agent and give up on the latter ([`SILENCE`]). The
//! caller's uid (SO_PEERCRED) is the actor in the audit log. Nothing is
//! controllable over TCP.
//!
//! The socket is served on a thread and runtime of its own: no load on the
//! HTTP listener can keep an operator out.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::fs::FsError;
use crate::ops::api::{RemoteError, Reply, Request};
use crate::ops::exit;
use crate::store::history::Actor;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// How often the agent tells a waiting client it is still at work.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long either side waits for the other to say anything (the request
/// line; the reply or a heartbeat; the connection itself).
const SILENCE: Duration = Duration::from_secs(10);

/// Errors of the control socket, on either side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// Another agent answers on the socket.
    #[error(
        "another agent is listening on {}; stop it first (systemctl stop switchyard)",
        .0.display()
    )]
    InUse(PathBuf),
    /// The socket could not be bound.
    #[error("cannot bind the control socket {}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `control_group` names no group.
    #[error("control_group {0:?} does not exist")]
    NoGroup(String),
    /// The group could not be looked up or given the socket.
    #[error("cannot give the control socket {} to group {group:?}", path.display())]
    Group {
        /// The socket.
        path: PathBuf,
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A request line that is not a request the agent takes.
    #[error("bad control request")]
    BadRequest(#[source] serde_json::Error),
    /// The agent stops and takes no more work.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The request names an app the agent does not run.
    #[error("the agent has no app named {0:?}")]
    NoSuchApp(String),
    /// The operation panicked on its thread.
    #[error("the operation panicked")]
    Panicked(#[source] tokio::task::JoinError),
    /// The socket's permissions keep the caller out.
    #[error(
        "the agent's control socket {} refuses you: you must be in its group (the [agent] control_group; a group joined since you logged in counts only after logging in again) and able to search its directory (0755, as the shipped unit and tmpfiles make /run/switchyard), or run as root",
        path.display()
    )]
    Refused {
        /// The socket.
        path: PathBuf,
        /// The refusal.
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but could not be reached.
    #[error("cannot reach the agent at {}", path.display())]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request or reading the answer failed.
    #[error("talking to the agent")]
    Talk(#[source] std::io::Error),
    /// The agent said nothing for too long.
    #[error(
        "the agent at {} did not answer within {}s: it is hung or starved (check `systemctl status switchyard` and its log); an operation it had started goes on or is repaired by its next start. SWITCHYARD_NO_AGENT=1 runs the command without the agent (the app's lock still keeps operations apart)",
        path.display(),
        secs
    )]
    Silent {
        /// The socket.
        path: PathBuf,
        /// How long it was silent.
        secs: u64,
    },
    /// The agent closed the connection without answering (it stopped).
    #[error(
        "the agent at {} closed the connection before answering: it is stopping or restarting, so the operation may have been cut off; its next start (or the next command) finishes or undoes it: check with `switchyard status`",
        path.display()
    )]
    Closed {
        /// The socket.
        path: PathBuf,
    },
    /// The answer is not a reply.
    #[error("the agent's answer is not understood: {answer}")]
    NotUnderstood {
        /// What came back.
        answer: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

impl ControlError {
    /// The exit code the CLI ends with when the agent answers with it.
    fn exit_code(&self) -> i32 {
        match self {
            ControlError::BadRequest(_) => exit::USAGE,
            ControlError::NoSuchApp(_) => exit::NOT_FOUND,
            _ => exit::FAILURE,
        }
    }

    /// The error as the CLI gets it back.
    pub(crate) fn to_remote(&self) -> RemoteError {
        RemoteError::new(self.exit_code(), self)
    }
}

/// Binds the control socket: a stale socket file (no agent behind it) is
/// replaced; a live one means another agent runs, which is refused.
pub(crate) fn bind(
    path: &Path,
    group: Option<&str>,
) -> Result<std::os::unix::net::UnixListener, ControlError> {
    if crate::fs::symlink_metadata(path)?.is_some() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        crate::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        crate::fs::create_dir_all(parent)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    crate::fs::set_mode(path, 0o660)?;
    if let Some(g) = group {
        let group_err = |source| ControlError::Group {
            path: path.to_path_buf(),
            group: g.to_string(),
            source,
        };
        let gid = nix::unistd::Group::from_name(g)
            .map_err(group_err)?
            .ok_or_else(|| ControlError::NoGroup(g.to_string()))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(group_err)?;
    }
    Ok(l)
}

/// A request with its actor and where the reply goes.
pub(crate) type Job = (Request, Actor, oneshot::Sender<Reply>);

/// Serves the socket on a thread of its own until shutdown.
pub(crate) fn spawn(
    l: std::os::unix::net::UnixListener,
    tx: mpsc::UnboundedSender<Job>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    l.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("switchyard-control".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::UnixListener::from_std(l) {
                    Ok(l) => serve(l, tx, shutdown).await,
                    Err(e) => warn!(error = %e, "the control socket cannot be served"),
                }
            })
        })
}

/// Accepts connections until shutdown; each carries one request.
async fn serve(
    l: tokio::net::UnixListener,
    tx: mpsc::UnboundedSender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = crate::daemon::stopped(&mut shutdown) => break,
            acc = l.accept() => {
                let stream = match acc {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors, or the like: wait, do not spin.
                        warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
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

async fn handle(
    stream: tokio::net::UnixStream,
    tx: mpsc::UnboundedSender<Job>,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let uid = cred.uid();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"));
    let mut actor = Actor {
        user,
        uid: Some(uid),
        reason: None,
    };
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
    tokio::time::timeout(SILENCE, r.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let reply: Reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Err(ControlError::BadRequest(e).to_remote()),
        Ok(req) => {
            actor.reason = req.reason().map(str::to_string);
            info!(user = %actor.user, uid, op = %serde_json::to_string(&req).unwrap_or_default(), "control request");
            let (rtx, mut rrx) = oneshot::channel();
            let gone = || Err(ControlError::ShuttingDown.to_remote());
            if tx.send((req, actor, rtx)).is_err() {
                gone()
            } else {
                let mut beat =
                    tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
                loop {
                    tokio::select! {
                        reply = &mut rrx => break reply.unwrap_or_else(|_| gone()),
                        _ = beat.tick() => w.write_all(b"\n").await?,
                    }
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

/// Hands a request to a running agent. `Ok(None)` when no agent listens
/// there (no socket, or nobody behind it): the CLI then acts directly.
pub(crate) fn request(socket: &Path, req: &Request) -> Result<Option<Reply>, ControlError> {
    let silent = || ControlError::Silent {
        path: socket.to_path_buf(),
        secs: SILENCE.as_secs(),
    };
    // A connect waits while the agent's queue of connections is full (a
    // hung agent): bounded on a helper thread, as std has no timeout here.
    let (done, connected) = std::sync::mpsc::channel();
    let to = socket.to_path_buf();
    std::thread::spawn(move || {
        let _ = done.send(std::os::unix::net::UnixStream::connect(to));
    });
    let mut s = match connected.recv_timeout(SILENCE).map_err(|_| silent())? {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ControlError::Refused {
                path: socket.to_path_buf(),
                source,
            });
        }
        Err(source) => {
            return Err(ControlError::Unreachable {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    s.set_read_timeout(Some(SILENCE))
        .and_then(|()| s.set_write_timeout(Some(SILENCE)))
        .map_err(ControlError::Talk)?;
    // Every request the agent takes serializes.
    let mut line = serde_json::to_vec(req).map_err(ControlError::BadRequest)?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| {
        if timed_out(&e) {
            silent()
        } else {
            ControlError::Talk(e)
        }
    })?;
    // Empty lines are heartbeats: the operation is still running.
    let mut r = BufReader::new(&s);
    let answer = loop {
        let mut answer = String::new();
        match r.read_line(&mut answer) {
            Ok(0) => {
                return Err(ControlError::Closed {
                    path: socket.to_path_buf(),
                });
            }
            Ok(_) if answer.trim().is_empty() => continue,
            Ok(_) => break answer,
            Err(e) if timed_out(&e) => return Err(silent()),
            Err(e) => return Err(ControlError::Talk(e)),
        }
    };
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|source| ControlError::NotUnderstood { answer, source })
}
