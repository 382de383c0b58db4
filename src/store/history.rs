//! The audit log (`.switchyard/audit.jsonl`), which is also the history:
//! append-only JSON lines, each chained to the previous one by SHA-256, so an
//! edited, inserted or deleted line is detected by `audit verify`.

use std::io::{Read, Seek, SeekFrom};

use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError};
use crate::store::layout::AppPaths;
use crate::store::state::{AppState, AuditHead, StateError};
use crate::verify::sha256_hex;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `,"prev":"<64>","hash":"<64>"}` appended to every record's JSON.
const CHAIN_SUFFIX_LEN: usize = 9 + 64 + 10 + 64 + 2;

/// Who did something.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Actor {
    /// User name (or `agent`, `webhook:<delivery>`, ...).
    pub user: String,
    /// Unix uid, when a local user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Actor {
    /// The user running this process.
    pub(crate) fn current_user() -> Actor {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {uid}"));
        Actor {
            user,
            uid: Some(uid.as_raw()),
        }
    }
}

/// One history event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Event {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The app.
    pub app: String,
    /// Event name, such as `release.install.completed`.
    pub event: String,
    /// Operation id (one deploy shares it across its events).
    pub id: String,
    /// Release live before.
    #[serde(default)]
    pub from: Option<String>,
    /// Release concerned or live after.
    #[serde(default)]
    pub to: Option<String>,
    /// Who.
    pub actor: Actor,
    /// `ok`, `failed`, `rolled_back`.
    pub outcome: String,
    /// Duration in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Anything else worth keeping (asset, digest, flags).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A stored line: the event plus its chain fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Hash of the previous line.
    pub prev: String,
    /// Hash of this line.
    pub hash: String,
}

/// Errors reading or checking the audit log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The chain is broken.
    #[error(
        "audit log {} fails verification at line {line}: {reason}",
        path.display()
    )]
    Broken {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A line is not JSON.
    #[error(
        "audit log {} fails verification at line {line}: not JSON",
        path.display()
    )]
    NotJson {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: u64,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// State failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn chain_hash(prev: &str, body: &str) -> String {
    let mut s = String::with_capacity(prev.len() + body.len() + 1);
    s.push_str(prev);
    s.push('\n');
    s.push_str(body);
    sha256_hex(s.as_bytes())
}

/// Appends an event durably and advances the audit head in the state file.
/// Call under the app lock.
pub(crate) fn append(paths: &AppPaths, event: &Event) -> Result<(), HistoryError> {
    let path = paths.audit();
    let mut f = fs::open_append(&path)?;
    // A crash mid-append leaves a line without its newline: drop it.
    let len = f
        .metadata()
        .map_err(|e| FsError::new("stat", &path, e))?
        .len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))
            .and_then(|_| f.read_exact(&mut last))
            .map_err(|e| FsError::new("read", &path, e))?;
        if last[0] != b'\n' {
            drop(f);
            truncate_partial_tail(&path)?;
        }
    }
    let (count, prev) = last_link(paths)?;
    let body = serde_json::to_string(event).expect("events serialize");
    let hash = chain_hash(&prev, &body);
    let line = format!(
        "{},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}",
        &body[..body.len() - 1]
    );
    fs::append_line_durable(&path, &line)?;
    let mut st = AppState::load(paths)?;
    st.audit_head = Some(AuditHead {
        count: count + 1,
        hash,
    });
    st.save(paths)?;
    Ok(())
}

fn truncate_partial_tail(path: &std::path::Path) -> Result<(), HistoryError> {
    let data = fs::read(path)?;
    let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = fs::open_rw(path)?;
    f.set_len(keep as u64)
        .map_err(|e| FsError::new("truncate", path, e))?;
    fs::fsync_file(&f, path)?;
    Ok(())
}

/// Line count and hash of the last complete line.
fn last_link(paths: &AppPaths) -> Result<(u64, String), HistoryError> {
    let lines = read_raw(paths)?;
    let Some(last) = lines.last() else {
        return Ok((0, GENESIS.to_string()));
    };
    let stored: Stored = serde_json::from_str(last).map_err(|source| HistoryError::NotJson {
        path: paths.audit(),
        line: lines.len() as u64,
        source,
    })?;
    Ok((lines.len() as u64, stored.hash))
}

fn read_raw(paths: &AppPaths) -> Result<Vec<String>, HistoryError> {
    let Some(data) = fs::read_optional(&paths.audit())? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&data);
    // Only newline-terminated lines are complete.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Ok(Vec::new()),
    };
    Ok(complete.split('\n').map(String::from).collect())
}

/// Every event, oldest first (lines that do not parse are skipped;
/// [`check_chain`] reports them).
pub(crate) fn read(paths: &AppPaths) -> Result<Vec<Stored>, HistoryError> {
    Ok(read_raw(paths)?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Checks the whole chain and the head recorded in the state file. Returns
/// the number of lines verified.
pub(crate) fn check_chain(paths: &AppPaths) -> Result<u64, HistoryError> {
    let path = paths.audit();
    let lines = read_raw(paths)?;
    let mut prev = GENESIS.to_string();
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        let broken = |reason: String| HistoryError::Broken {
            path: path.clone(),
            line: n,
            reason,
        };
        let stored: serde_json::Value =
            serde_json::from_str(line).map_err(|source| HistoryError::NotJson {
                path: path.clone(),
                line: n,
                source,
            })?;
        let (Some(p), Some(h)) = (
            stored.get("prev").and_then(|v| v.as_str()),
            stored.get("hash").and_then(|v| v.as_str()),
        ) else {
            return Err(broken("missing prev/hash fields".into()));
        };
        if p != prev {
            return Err(broken(
                "it does not follow the previous line (a line was deleted, inserted or reordered)"
                    .into(),
            ));
        }
        if line.len() < CHAIN_SUFFIX_LEN + 2 {
            return Err(broken("line too short".into()));
        }
        let body = format!("{}}}", &line[..line.len() - CHAIN_SUFFIX_LEN]);
        if chain_hash(&prev, &body) != h {
            return Err(broken("its content was edited (hash mismatch)".into()));
        }
        prev = h.to_string();
    }
    let st = AppState::load(paths)?;
    if let Some(head) = st.audit_head {
        let n = lines.len() as u64;
        if head.count > n {
            return Err(HistoryError::Broken {
                path,
                line: n,
                reason: format!(
                    "the log has {n} lines but {} were written: lines were removed from the end",
                    head.count
                ),
            });
        }
        if head.count == n && head.hash != prev {
            return Err(HistoryError::Broken {
                path,
                line: n,
                reason: "the last line differs from the one recorded in state.json".into(),
            });
        }
    }
    Ok(lines.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Event {
        Event {
            time: "2026-01-01T00:00:00Z".into(),
            app: "web".into(),
            event: "release.install.completed".into(),
            id: format!("id{n}"),
            from: None,
            to: Some(format!("1.0.{n}")),
            actor: Actor {
                user: "ops".into(),
                uid: Some(1000),
            },
            outcome: "ok".into(),
            duration_ms: 5,
            error: None,
            details: Default::default(),
        }
    }

    fn setup() -> (tempfile::TempDir, AppPaths) {
        let d = tempfile::tempdir().unwrap();
        let p = AppPaths::new(d.path());
        p.ensure().unwrap();
        for i in 0..3 {
            append(&p, &ev(i)).unwrap();
        }
        (d, p)
    }

    #[test]
    fn chain_checks_and_reads_back() {
        let (_d, p) = setup();
        assert_eq!(check_chain(&p).unwrap(), 3);
        let r = read(&p).unwrap();
        assert_eq!(r[2].event.to.as_deref(), Some("1.0.2"));
    }

    #[test]
    fn edit_delete_and_truncate_are_detected() {
        let (_d, p) = setup();
        let orig = fs::read_to_string(&p.audit()).unwrap();
        let edited = orig.replacen("1.0.1", "6.6.6", 1);
        fs::write_atomic(&p.audit(), edited.as_bytes()).unwrap();
        assert!(check_chain(&p).unwrap_err().to_string().contains("edited"));

        let lines: Vec<&str> = orig.lines().collect();
        let deleted = format!("{}\n{}\n", lines[0], lines[2]);
        fs::write_atomic(&p.audit(), deleted.as_bytes()).unwrap();
        assert!(check_chain(&p).is_err());

        let truncated = format!("{}\n{}\n", lines[0], lines[1]);
        fs::write_atomic(&p.audit(), truncated.as_bytes()).unwrap();
        assert!(check_chain(&p).unwrap_err().to_string().contains("removed"));
    }

    #[test]
    fn partial_tail_is_dropped_before_append() {
        let (_d, p) = setup();
        let mut t = fs::read_to_string(&p.audit()).unwrap();
        t.push_str("{\"half");
        fs::write_atomic(&p.audit(), t.as_bytes()).unwrap();
        append(&p, &ev(9)).unwrap();
        assert_eq!(check_chain(&p).unwrap(), 4);
    }
}
