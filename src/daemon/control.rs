//! The control socket: a unix socket (mode 0660, a configurable group) over
//! which the CLI hands the running agent the requests it takes (promote,
//! revert, deploy, status), so operations are serialised through the agent.
//! One JSON [`Request`] line in, one JSON [`Reply`] line out: the operations
//! API's own types, never rendered text. The caller's uid (SO_PEERCRED) is
//! the actor in the audit log. Nothing is controllable over TCP.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::fs::FsError;
use crate::ops::api::{RemoteError, Reply, Request};
use crate::ops::exit;
use crate::store::history::Actor;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

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
) -> Result<tokio::net::UnixListener, ControlError> {
    if crate::fs::symlink_metadata(path)?.is_some() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        crate::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        crate::fs::create_dir_all(parent)?;
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|source| ControlError::Bind {
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

/// Accepts connections until shutdown; each carries one request.
pub(crate) async fn serve(
    l: tokio::net::UnixListener,
    tx: mpsc::UnboundedSender<Job>,
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
    let actor = Actor {
        user,
        uid: Some(uid),
    };
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
    r.read_line(&mut line).await?;
    let reply: Reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Err(ControlError::BadRequest(e).to_remote()),
        Ok(req) => {
            info!(user = %actor.user, uid, op = ?req, "control request");
            let (rtx, rrx) = oneshot::channel();
            let gone = || Err(ControlError::ShuttingDown.to_remote());
            if tx.send((req, actor, rtx)).is_err() {
                gone()
            } else {
                rrx.await.unwrap_or_else(|_| gone())
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
    // Every request the agent takes serializes.
    let mut line = serde_json::to_vec(req).map_err(ControlError::BadRequest)?;
    line.push(b'\n');
    s.write_all(&line).map_err(ControlError::Talk)?;
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(ControlError::Talk)?;
    if answer.is_empty() {
        return Err(ControlError::Closed {
            path: socket.to_path_buf(),
        });
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|source| ControlError::NotUnderstood { answer, source })
}
