//! The audit log (`.switchyard/audit.jsonl`), which is also the history:
//! append-only JSON lines, each chained to the previous one by SHA-256, so an
//! edited, inserted or deleted line is detected by `audit verify`.
//!
//! A damaged log stops every change to the app (nothing could be recorded
//! after it) until an operator seals it: [`seal`] sets the damaged file
//! aside and starts a new chain whose first event records the old file's
//! name, hash and line count.

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
    /// The log is damaged: nothing more can be chained to it.
    #[error(
        "the audit log {} is damaged at line {line} ({problem}), so nothing more can be recorded after it; nothing was changed. Look at that line (keep the file: it is evidence), then seal the log: `switchyard audit seal {app} --reason \"<what happened>\"` sets it aside as audit.jsonl.damaged-<time> and starts a new chain that records its hash; deploys work again after that",
        path.display()
    )]
    Damaged {
        /// The app, for the command to run.
        app: String,
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line of the first damage.
        line: u64,
        /// What is wrong there.
        problem: String,
    },
    /// `audit seal` on a log that verifies.
    #[error(
        "the audit log {} verifies ({lines} lines, chain intact): there is nothing to seal",
        path.display()
    )]
    NothingToSeal {
        /// The file.
        path: std::path::PathBuf,
        /// Lines verified.
        lines: u64,
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

/// Why one line does not continue the chain after `prev`.
enum LineFault {
    NotJson(serde_json::Error),
    Broken(String),
}

/// Checks one line against the hash of the line before it; returns its hash.
fn check_line(line: &str, prev: &str) -> Result<String, LineFault> {
    let stored: serde_json::Value = serde_json::from_str(line).map_err(LineFault::NotJson)?;
    let (Some(p), Some(h)) = (
        stored.get("prev").and_then(|v| v.as_str()),
        stored.get("hash").and_then(|v| v.as_str()),
    ) else {
        return Err(LineFault::Broken("missing prev/hash fields".into()));
    };
    if p != prev {
        return Err(LineFault::Broken(
            "it does not follow the previous line (a line was deleted, inserted or reordered)"
                .into(),
        ));
    }
    if line.len() < CHAIN_SUFFIX_LEN + 2 {
        return Err(LineFault::Broken("line too short".into()));
    }
    let body = format!("{}}}", &line[..line.len() - CHAIN_SUFFIX_LEN]);
    if chain_hash(prev, &body) != h {
        return Err(LineFault::Broken(
            "its content was edited (hash mismatch)".into(),
        ));
    }
    Ok(h.to_string())
}

/// Checks the whole chain and the head recorded in the state file. Returns
/// the number of lines verified.
pub(crate) fn check_chain(paths: &AppPaths) -> Result<u64, HistoryError> {
    let path = paths.audit();
    let lines = read_raw(paths)?;
    let mut prev = GENESIS.to_string();
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        prev = match check_line(line, &prev) {
            Ok(h) => h,
            Err(LineFault::NotJson(source)) => {
                return Err(HistoryError::NotJson {
                    path,
                    line: n,
                    source,
                });
            }
            Err(LineFault::Broken(reason)) => {
                return Err(HistoryError::Broken {
                    path,
                    line: n,
                    reason,
                });
            }
        };
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

/// Refuses a damaged log before anything changes, naming the line and how
/// to go on (`audit seal`). Cheap when the log is sound: only the line the
/// state file's head names and the lines after it are hashed (a crash
/// between an append and the head's update leaves one more).
pub(crate) fn ensure_intact(paths: &AppPaths, app: &str) -> Result<(), HistoryError> {
    if tail_is_sound(paths)? {
        return Ok(());
    }
    let (line, problem) = match check_chain(paths) {
        Ok(_) => return Ok(()),
        Err(HistoryError::NotJson { line, source, .. }) => (line, format!("not JSON: {source}")),
        Err(HistoryError::Broken { line, reason, .. }) => (line, reason),
        Err(e) => return Err(e),
    };
    Err(HistoryError::Damaged {
        app: app.to_string(),
        path: paths.audit(),
        line: line.max(1),
        problem,
    })
}

/// The head recorded in the state file is where it says, and every line
/// after it continues the chain.
fn tail_is_sound(paths: &AppPaths) -> Result<bool, HistoryError> {
    // Complete lines only: a partial last line (a crash mid-append) is
    // dropped by the next append; it is not damage.
    let lines = read_raw(paths)?;
    let Some(head) = AppState::load(paths)?.audit_head else {
        return Ok(lines.is_empty());
    };
    let from = head.count as usize;
    if from == 0 || from > lines.len() {
        return Ok(from == 0 && lines.is_empty());
    }
    let mut prev = match check_line_hash(&lines[from - 1]) {
        Some(h) if h == head.hash => h,
        _ => return Ok(false),
    };
    for line in &lines[from..] {
        match check_line(line, &prev) {
            Ok(h) => prev = h,
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// The `hash` a line claims, if it is a chained event at all.
fn check_line_hash(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("hash")?.as_str().map(String::from)
}

/// Event name of a seal: the first line of a chain started after damage.
pub(crate) const SEALED: &str = "audit.sealed";

/// What a seal recorded about the damaged log it set aside, and whether
/// that file is still there as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SealInfo {
    /// When.
    pub time: String,
    /// Who sealed.
    pub actor: Actor,
    /// The operator's reason.
    pub reason: String,
    /// The damaged log's new name, beside the new log.
    pub damaged_file: String,
    /// Its SHA-256.
    pub damaged_sha256: String,
    /// Its lines (a partial last line counts).
    pub damaged_lines: u64,
    /// The first damaged line.
    pub damaged_at_line: u64,
    /// What was wrong there.
    pub problem: String,
    /// The damaged file now: `kept` (same hash), `changed` or `missing`.
    #[serde(default)]
    pub file_now: String,
}

/// Sets a damaged log aside and starts a new chain with a seal event.
/// Refused when the log verifies. Call under the app lock.
///
/// Each step leaves a state the next `seal` (or command) handles: the old
/// file is hard-linked aside first; the state's head then names the seal
/// line; then the new log (that one line) replaces the old atomically.
pub(crate) fn seal(
    paths: &AppPaths,
    app: &str,
    reason: &str,
    actor: &Actor,
) -> Result<SealInfo, HistoryError> {
    let path = paths.audit();
    let (damaged_at_line, problem) = match ensure_intact(paths, app) {
        Ok(()) => {
            return Err(HistoryError::NothingToSeal {
                lines: read_raw(paths)?.len() as u64,
                path,
            });
        }
        Err(HistoryError::Damaged { line, problem, .. }) => (line, problem),
        Err(e) => return Err(e),
    };
    let data = fs::read(&path)?;
    let now = jiff::Timestamp::now();
    let mut name = format!("audit.jsonl.damaged-{}", now.strftime("%Y%m%dT%H%M%SZ"));
    while fs::symlink_metadata(&paths.state_dir().join(&name))?.is_some() {
        name.push('+');
    }
    fs::hard_link(&path, &paths.state_dir().join(&name))?;
    fs::fsync_dir(&paths.state_dir())?;
    let info = SealInfo {
        time: now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        actor: actor.clone(),
        reason: reason.to_string(),
        damaged_file: name,
        damaged_sha256: sha256_hex(&data),
        damaged_lines: (data.iter().filter(|b| **b == b'\n').count()
            + usize::from(!data.is_empty() && !data.ends_with(b"\n")))
            as u64,
        damaged_at_line,
        problem,
        file_now: String::new(),
    };
    let mut details = serde_json::Map::new();
    for (k, v) in [
        ("reason", serde_json::json!(info.reason)),
        ("damaged_file", serde_json::json!(info.damaged_file)),
        ("damaged_sha256", serde_json::json!(info.damaged_sha256)),
        ("damaged_lines", serde_json::json!(info.damaged_lines)),
        ("damaged_at_line", serde_json::json!(info.damaged_at_line)),
        ("problem", serde_json::json!(info.problem)),
    ] {
        details.insert(k.into(), v);
    }
    let event = Event {
        time: info.time.clone(),
        app: app.to_string(),
        event: SEALED.into(),
        id: crate::store::state::new_id(),
        from: None,
        to: None,
        actor: actor.clone(),
        outcome: "ok".into(),
        duration_ms: 0,
        error: None,
        details,
    };
    let body = serde_json::to_string(&event).expect("events serialize");
    let hash = chain_hash(GENESIS, &body);
    let line = format!(
        "{},\"prev\":\"{GENESIS}\",\"hash\":\"{hash}\"}}\n",
        &body[..body.len() - 1]
    );
    let mut st = AppState::load(paths)?;
    st.audit_head = Some(AuditHead { count: 1, hash });
    st.save(paths)?;
    fs::write_atomic_private(&path, line.as_bytes())?;
    Ok(info)
}

/// The seal the chain starts with, if it starts with one, and whether the
/// damaged file it names is still there unchanged.
pub(crate) fn seal_of_chain(paths: &AppPaths) -> Result<Option<SealInfo>, HistoryError> {
    let Some(first) = read(paths)?.into_iter().next() else {
        return Ok(None);
    };
    if first.event.event != SEALED || first.prev != GENESIS {
        return Ok(None);
    }
    let d = &first.event.details;
    let text = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let num = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or_default();
    let mut info = SealInfo {
        time: first.event.time.clone(),
        actor: first.event.actor.clone(),
        reason: text("reason"),
        damaged_file: text("damaged_file"),
        damaged_sha256: text("damaged_sha256"),
        damaged_lines: num("damaged_lines"),
        damaged_at_line: num("damaged_at_line"),
        problem: text("problem"),
        file_now: String::new(),
    };
    // Only a plain file name beside the log is looked at.
    info.file_now = if info.damaged_file.contains('/') {
        "missing".into()
    } else {
        match fs::read_optional(&paths.state_dir().join(&info.damaged_file))? {
            None => "missing".into(),
            Some(b) if sha256_hex(&b) == info.damaged_sha256 => "kept".into(),
            Some(_) => "changed".into(),
        }
    };
    Ok(Some(info))
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
    fn damage_is_found_with_its_line_and_sealed() {
        let (_d, p) = setup();
        ensure_intact(&p, "web").unwrap();
        // One more line than the head: a crash between append and head.
        let mut st = AppState::load(&p).unwrap();
        let head = st.audit_head.clone().unwrap();
        st.audit_head = Some(AuditHead {
            count: 2,
            hash: check_line_hash(&read_raw(&p).unwrap()[1]).unwrap(),
        });
        st.save(&p).unwrap();
        ensure_intact(&p, "web").unwrap();
        st.audit_head = Some(head);
        st.save(&p).unwrap();
        // A partial last line is not damage.
        let orig = fs::read_to_string(&p.audit()).unwrap();
        fs::write_atomic(&p.audit(), format!("{orig}{{\"half").as_bytes()).unwrap();
        ensure_intact(&p, "web").unwrap();

        let lines: Vec<&str> = orig.lines().collect();
        let garbled = format!("{}\ngarbage\n{}\n{}\n", lines[0], lines[1], lines[2]);
        fs::write_atomic(&p.audit(), garbled.as_bytes()).unwrap();
        let e = ensure_intact(&p, "web").unwrap_err();
        assert!(matches!(e, HistoryError::Damaged { line: 2, .. }), "{e}");
        assert!(
            e.to_string().contains("switchyard audit seal web --reason"),
            "{e}"
        );

        let actor = Actor {
            user: "ops".into(),
            uid: Some(0),
        };
        let info = seal(&p, "web", "bad disk", &actor).unwrap();
        assert_eq!((info.damaged_lines, info.damaged_at_line), (4, 2));
        assert_eq!(check_chain(&p).unwrap(), 1);
        let again = seal_of_chain(&p).unwrap().unwrap();
        assert_eq!(again.file_now, "kept");
        assert_eq!(again.reason, "bad disk");
        append(&p, &ev(7)).unwrap();
        assert_eq!(check_chain(&p).unwrap(), 2);
        assert!(matches!(
            seal(&p, "web", "x", &actor),
            Err(HistoryError::NothingToSeal { lines: 2, .. })
        ));
        fs::remove_file(&p.state_dir().join(&info.damaged_file)).unwrap();
        assert_eq!(seal_of_chain(&p).unwrap().unwrap().file_now, "missing");
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
