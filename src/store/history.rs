//! The audit log (`.switchyard/audit.jsonl`), which is also the history:
//! append-only JSON lines, each chained to the previous one by SHA-256, so an
//! edited, inserted or deleted line is detected by `audit verify`.
//!
//! A damaged log stops every change to the app (nothing could be recorded
//! after it) until an operator seals it: [`seal`] sets the damaged file
//! aside and starts a new chain whose first event records the old file's
//! name, hash and line count.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    /// Why, in the person's words, when they gave a reason (the console
    /// asks for one on every action); recorded on each event of the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
            reason: None,
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
    let (line, hash) = chained_line(event, &prev);
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
    read_lines(&paths.audit())
}

/// The complete lines of one audit file (none when it is missing).
fn read_lines(path: &Path) -> Result<Vec<String>, HistoryError> {
    let Some(data) = fs::read_optional(path)? else {
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

/// Every event of the live file (`audit.jsonl`), oldest first (lines that
/// do not parse are skipped; [`check_chain`] reports them). Enough to find
/// the last event; [`read_all`] reads the rotated files too.
pub(crate) fn read(paths: &AppPaths) -> Result<Vec<Stored>, HistoryError> {
    Ok(read_raw(paths)?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Every event of every kept file (rotated ones first), oldest first.
pub(crate) fn read_all(paths: &AppPaths) -> Result<Vec<Stored>, HistoryError> {
    let mut out = Vec::new();
    for f in chain_files(paths)? {
        out.extend(
            read_lines(&f)?
                .iter()
                .filter_map(|l| serde_json::from_str::<Stored>(l).ok()),
        );
    }
    Ok(out)
}

/// `event` as a stored line (without its newline) that continues the chain
/// after `prev`, and the line's hash.
fn chained_line(event: &Event, prev: &str) -> (String, String) {
    let body = serde_json::to_string(event).expect("events serialize");
    let hash = chain_hash(prev, &body);
    let line = format!(
        "{},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}",
        &body[..body.len() - 1]
    );
    (line, hash)
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

/// Checks the whole chain, across the rotated files (oldest first) and the
/// links between them, and the head recorded in the state file. Returns
/// the number of lines verified; an error names the file and its line.
pub(crate) fn check_chain(paths: &AppPaths) -> Result<u64, HistoryError> {
    let files = chain_files(paths)?;
    let mut before: Option<(String, String)> = None;
    let mut total = 0;
    let mut last_lines = Vec::new();
    let mut last_prev = GENESIS.to_string();
    for path in &files {
        let lines = read_lines(path)?;
        let Some(first) = lines.first() else { continue };
        let kind = first_event(first);
        let mut prev = match (&before, kind.as_deref()) {
            // A seal starts a new chain.
            (_, Some(SEALED)) => GENESIS.to_string(),
            (Some((hash, _)), _) => hash.clone(),
            // The oldest kept file continues one that retention deleted.
            (None, Some(ROTATED)) => line_prev(first).unwrap_or_default(),
            (None, _) => GENESIS.to_string(),
        };
        if let Some((hash, name)) = &before
            && line_prev(first).as_deref() != Some(prev.as_str())
            && prev == *hash
        {
            return Err(HistoryError::Broken {
                path: path.clone(),
                line: 1,
                reason: format!(
                    "it does not continue {name} (a file was removed, replaced or reordered)"
                ),
            });
        }
        last_prev = prev.clone();
        for (i, line) in lines.iter().enumerate() {
            let n = i as u64 + 1;
            prev = match check_line(line, &prev) {
                Ok(h) => h,
                Err(LineFault::NotJson(source)) => {
                    return Err(HistoryError::NotJson {
                        path: path.clone(),
                        line: n,
                        source,
                    });
                }
                Err(LineFault::Broken(reason)) => {
                    return Err(HistoryError::Broken {
                        path: path.clone(),
                        line: n,
                        reason,
                    });
                }
            };
        }
        total += lines.len() as u64;
        before = Some((prev, file_name(path)));
        last_lines = lines;
    }
    let path = files.last().cloned().unwrap_or_else(|| paths.audit());
    let prev = before
        .map(|(h, _)| h)
        .unwrap_or_else(|| GENESIS.to_string());
    let st = AppState::load(paths)?;
    if let Some(head) = st.audit_head {
        let n = last_lines.len() as u64;
        // A rotation stopped before the head moved to the new file: the head
        // still names the line the new file's first line continues.
        let rotated_past = last_lines
            .first()
            .is_some_and(|l| first_event(l).as_deref() == Some(ROTATED))
            && last_prev == head.hash;
        if !rotated_past && head.count > n {
            return Err(HistoryError::Broken {
                path,
                line: n,
                reason: format!(
                    "the log has {n} lines but {} were written: lines were removed from the end",
                    head.count
                ),
            });
        }
        if !rotated_past && head.count == n && head.hash != prev {
            return Err(HistoryError::Broken {
                path,
                line: n,
                reason: "the last line differs from the one recorded in state.json".into(),
            });
        }
    }
    Ok(total)
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
    let rotated_past = lines.first().is_some_and(|l| {
        first_event(l).as_deref() == Some(ROTATED) && line_prev(l).as_ref() == Some(&head.hash)
    });
    let from = if rotated_past { 0 } else { head.count as usize };
    if !rotated_past && (from == 0 || from > lines.len()) {
        return Ok(from == 0 && lines.is_empty());
    }
    let mut prev = if rotated_past {
        head.hash
    } else {
        match check_line_hash(&lines[from - 1]) {
            Some(h) if h == head.hash => h,
            _ => return Ok(false),
        }
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

/// The `prev` a line claims.
fn line_prev(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("prev")?.as_str().map(String::from)
}

/// The `event` name of a line.
fn first_event(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("event")?.as_str().map(String::from)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Event name of the first line of a file started by rotation; its `prev`
/// is the last hash of the file before it, so the chain goes on.
pub(crate) const ROTATED: &str = "audit.rotated";

/// `audit.jsonl.<n>`: the n-th newest rotated file.
fn rotated_path(paths: &AppPaths, n: u32) -> PathBuf {
    paths.state_dir().join(format!("audit.jsonl.{n}"))
}

/// The rotated files that exist, by number (1 is the newest). Gaps (a
/// rotation killed while shifting) are harmless: only the order counts.
fn rotated_files(paths: &AppPaths) -> Result<Vec<(u32, PathBuf)>, HistoryError> {
    let mut v: Vec<(u32, PathBuf)> = fs::list_dir(&paths.state_dir())?
        .into_iter()
        .filter_map(|n| {
            let n = n
                .to_str()?
                .strip_prefix("audit.jsonl.")?
                .parse::<u32>()
                .ok()?;
            (n > 0).then(|| (n, rotated_path(paths, n)))
        })
        .collect();
    v.sort_by_key(|(n, _)| *n);
    Ok(v)
}

/// Whether two paths name the same file (a hard link).
fn same_file(a: &Path, b: &Path) -> Result<bool, HistoryError> {
    Ok(match (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?) {
        (Some(x), Some(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    })
}

/// Every file of the log, oldest first: the rotated ones, then
/// `audit.jsonl`, unless that is still the same file as `audit.jsonl.1` (a
/// rotation stopped after linking it; the next session finishes it).
fn chain_files(paths: &AppPaths) -> Result<Vec<PathBuf>, HistoryError> {
    let rotated = rotated_files(paths)?;
    let linked = match rotated.first() {
        Some((1, p)) => same_file(&paths.audit(), p)?,
        _ => false,
    };
    let mut files: Vec<PathBuf> = rotated.into_iter().rev().map(|(_, p)| p).collect();
    if !linked {
        files.push(paths.audit());
    }
    Ok(files)
}

/// Rotates `audit.jsonl` when it is larger than `max_bytes` (or finishes a
/// rotation a kill interrupted), keeping `keep` rotated files. Call under
/// the app lock. Returns whether it rotated.
///
/// Each step leaves a log that verifies: the rotated files shift up one
/// number (the oldest beyond `keep` is deleted); `audit.jsonl` is
/// hard-linked as `audit.jsonl.1` (while both names are the same file it
/// counts once); the new file, whose one line is the `audit.rotated` event
/// chained to the old file's last hash, is written under a temporary name,
/// fsynced and renamed over `audit.jsonl`; last the state's head moves to
/// it (until then the head names the line the new file continues).
pub(crate) fn rotate_if_needed(
    paths: &AppPaths,
    app: &str,
    max_bytes: u64,
    keep: usize,
    actor: &Actor,
) -> Result<bool, HistoryError> {
    let path = paths.audit();
    let first = rotated_path(paths, 1);
    if !same_file(&path, &first)? {
        let Some(meta) = fs::symlink_metadata(&path)? else {
            return Ok(false);
        };
        if meta.len() <= max_bytes || read_raw(paths)?.is_empty() {
            return Ok(false);
        }
        if !fs::read(&path)?.ends_with(b"\n") {
            truncate_partial_tail(&path)?;
        }
        for (n, p) in rotated_files(paths)?.into_iter().rev() {
            if n as usize >= keep {
                fs::remove_file(&p)?;
            } else {
                fs::rename(&p, &rotated_path(paths, n + 1))?;
            }
        }
        fs::hard_link(&path, &first)?;
        fs::fsync_dir(&paths.state_dir())?;
        crate::store::state::checkpoint("audit.rotate.linked");
    }
    let lines = read_lines(&first)?;
    let prev = match lines.last() {
        Some(l) => check_line_hash(l).unwrap_or_else(|| GENESIS.to_string()),
        None => GENESIS.to_string(),
    };
    let mut details = serde_json::Map::new();
    details.insert("previous_file".into(), serde_json::json!(file_name(&first)));
    details.insert("previous_lines".into(), serde_json::json!(lines.len()));
    details.insert("previous_hash".into(), serde_json::json!(prev));
    let event = Event {
        time: crate::store::state::now_rfc3339(),
        app: app.to_string(),
        event: ROTATED.into(),
        id: crate::store::state::new_id(),
        from: None,
        to: None,
        actor: actor.clone(),
        outcome: "ok".into(),
        duration_ms: 0,
        error: None,
        details,
    };
    let (line, hash) = chained_line(&event, &prev);
    let line = format!("{line}\n");
    fs::write_atomic_private(&path, line.as_bytes())?;
    crate::store::state::checkpoint("audit.rotate.renamed");
    let mut st = AppState::load(paths)?;
    st.audit_head = Some(AuditHead { count: 1, hash });
    st.save(paths)?;
    Ok(true)
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
    let (line, hash) = chained_line(&event, GENESIS);
    let line = format!("{line}\n");
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
                reason: None,
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
            reason: None,
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
    fn rotation_continues_the_chain_and_each_step_verifies() {
        let (_d, p) = setup();
        let actor = Actor {
            user: "ops".into(),
            uid: Some(0),
            reason: None,
        };
        assert!(!rotate_if_needed(&p, "web", 1 << 20, 2, &actor).unwrap());
        for i in 0..4 {
            assert!(rotate_if_needed(&p, "web", 1, 2, &actor).unwrap());
            append(&p, &ev(10 + i)).unwrap();
            ensure_intact(&p, "web").unwrap();
        }
        assert_eq!(rotated_files(&p).unwrap().len(), 2);
        let lines = check_chain(&p).unwrap();
        assert_eq!(read_all(&p).unwrap().len() as u64, lines);

        // Killed after the link: audit.jsonl and .1 are one file, counted once.
        fs::remove_file(&rotated_path(&p, 2)).unwrap();
        fs::rename(&rotated_path(&p, 1), &rotated_path(&p, 2)).unwrap();
        fs::hard_link(&p.audit(), &rotated_path(&p, 1)).unwrap();
        let n = check_chain(&p).unwrap();
        ensure_intact(&p, "web").unwrap();
        append(&p, &ev(20)).unwrap();
        assert_eq!(check_chain(&p).unwrap(), n + 1);
        // The next rotation finishes it whatever the size.
        assert!(rotate_if_needed(&p, "web", 1 << 20, 2, &actor).unwrap());
        assert_eq!(check_chain(&p).unwrap(), n + 2);

        // Killed after the rename, before the head moved.
        let head = AppState::load(&p).unwrap().audit_head;
        assert!(rotate_if_needed(&p, "web", 1, 2, &actor).unwrap());
        let mut st = AppState::load(&p).unwrap();
        st.audit_head = head;
        st.save(&p).unwrap();
        ensure_intact(&p, "web").unwrap();
        check_chain(&p).unwrap();
        append(&p, &ev(21)).unwrap();
        check_chain(&p).unwrap();

        // An edit in a rotated file is found there.
        let one = rotated_path(&p, 1);
        let t = fs::read_to_string(&one).unwrap();
        fs::write_atomic(&one, t.replacen("\"ok\"", "\"OK\"", 1).as_bytes()).unwrap();
        match check_chain(&p) {
            Err(HistoryError::Broken { path, .. }) => assert_eq!(path, one),
            other => panic!("{other:?}"),
        }
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
