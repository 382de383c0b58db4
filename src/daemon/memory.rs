//! Failure memory: which automatic deploys failed, whether they are worth
//! retrying, and when. Kept in `.switchyard/agent.json` (see
//! [`crate::store::agent`]) so a restarting agent does not retry (nor
//! re-report) what it already knows fails.
//!
//! The rule: a *deterministic* failure (the release itself is refused:
//! checksum, signature, unsafe archive, downgrade, a failed lifecycle that
//! quarantined it, deploys blocked) is not retried until the release changes
//! (another tag or publication time: it was re-published) or an operator
//! acts (any audit event after the failure whose actor is not the agent —
//! a manual deploy, revert, hold, unquarantine, resolve ...). A *transient*
//! failure (network, GitHub, rate limit, lock busy, host I/O, a pre-check
//! on the host) is retried after a back-off that doubles from the poll
//! interval up to [`MAX_BACKOFF`], with ±10% jitter.

use std::time::Duration;

use jiff::Timestamp;

use crate::ops::DeployError;
use crate::ops::error::exit;
use crate::source::ReleaseInfo;
use crate::store::agent::{AgentMemory, FailureClass, RememberedFailure};
use crate::store::history::{self, HistoryError};
use crate::store::layout::AppPaths;
use crate::store::state::AppState;

/// The longest wait between two attempts at a transient failure.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Whether a failed deploy may succeed if simply tried again, from the
/// error's class (its exit code), never from its text.
pub(crate) fn classify(e: &DeployError) -> FailureClass {
    match e {
        // The host's state (disk space, a backup hook) can change on its own.
        DeployError::Precheck(_) | DeployError::BackupFailed(_) => FailureClass::Transient,
        // A download that breaks off is reported as such (exit 1), but a
        // stream that ended early without an error (a proxy that closes
        // cleanly) reaches the unpacker as a truncated archive before its
        // digest is known: a "corrupt" archive may be the network's doing,
        // so it is retried with back-off. Refused entries and limits are not.
        DeployError::Unpack(crate::verify::unpack::UnpackError::Corrupt { .. }) => {
            FailureClass::Transient
        }
        _ => match e.exit_code() {
            exit::VERIFY
            | exit::DEPLOY_FAILED
            | exit::NEEDS_ATTENTION
            | exit::PRECHECK
            | exit::USAGE => FailureClass::Deterministic,
            // BUSY, STORAGE, NOT_FOUND (an asset still uploading), and
            // FAILURE (the network, GitHub's 5xx and rate limits).
            _ => FailureClass::Transient,
        },
    }
}

/// The wait before attempt `attempts + 1`: the poll interval after the first
/// failure, doubling after each further one, capped at [`MAX_BACKOFF`]
/// (jitter is added by the caller).
pub(crate) fn backoff(poll: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(24);
    poll.max(Duration::from_secs(1))
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// The release as published, for noticing a re-published one.
pub(crate) fn fingerprint(info: &ReleaseInfo) -> String {
    format!(
        "{}@{}",
        info.tag,
        info.published_at.as_deref().unwrap_or("-")
    )
}

/// Whether an operator has done anything to the app after `audit_count`
/// audit events: any later event whose actor is not the agent itself.
pub(crate) fn operator_acted(paths: &AppPaths, audit_count: u64) -> Result<bool, HistoryError> {
    let now = AppState::load(paths)
        .ok()
        .and_then(|s| s.audit_head)
        .map_or(0, |h| h.count);
    if now == audit_count {
        return Ok(false);
    }
    let events = history::read(paths)?;
    // Fewer lines than then: the log rotated since (the live file starts
    // again at one line), so every event in it came after the failure.
    let from = if now < audit_count {
        0
    } else {
        usize::try_from(audit_count).unwrap_or(usize::MAX)
    };
    Ok(events
        .iter()
        .skip(from)
        .any(|s| !is_agent(&s.event.actor.user)))
}

/// The agent's own actors: its polls and the webhooks it acts on.
pub(crate) fn is_agent(user: &str) -> bool {
    user == "agent" || user.starts_with("agent:") || user.starts_with("webhook:")
}

/// What the memory says about trying `info` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing remembered (or forgotten now): try it.
    Try,
    /// Remembered as refused; not until the release changes or an operator acts.
    Refused(String),
    /// A transient failure; not before this instant.
    Later(Timestamp),
}

/// Looks `info` up in the memory, forgetting a failure that no longer
/// applies (the release changed, an operator acted, a back-off elapsed is
/// kept until the attempt's outcome replaces it). Returns whether the
/// memory changed.
pub(crate) fn verdict(
    mem: &mut AgentMemory,
    paths: &AppPaths,
    info: &ReleaseInfo,
    now: Timestamp,
) -> (Verdict, bool) {
    let key = info.version.to_string();
    let Some(f) = mem.failures.get(&key) else {
        return (Verdict::Try, false);
    };
    // A damaged audit log counts as an operator's business: try again.
    let acted = operator_acted(paths, f.audit_count).unwrap_or(true);
    if f.release != fingerprint(info) || acted {
        mem.failures.remove(&key);
        // The next failure is a new one: report it again, on every channel.
        mem.notified.remove(&format!("deploy_failed:{key}"));
        mem.notified.remove(&format!("email:deploy_failed:{key}"));
        return (Verdict::Try, true);
    }
    match f.class {
        FailureClass::Deterministic => (Verdict::Refused(f.reason.clone()), false),
        FailureClass::Transient => match f.retry_at.as_deref().and_then(|t| t.parse().ok()) {
            Some(at) if at > now => (Verdict::Later(at), false),
            _ => (Verdict::Try, false),
        },
    }
}

/// Records a failed attempt at `info`; returns the entry.
pub(crate) fn remember(
    mem: &mut AgentMemory,
    paths: &AppPaths,
    info: &ReleaseInfo,
    e: &DeployError,
    now: Timestamp,
    poll: Duration,
) -> RememberedFailure {
    let key = info.version.to_string();
    let class = classify(e);
    let attempts = mem
        .failures
        .get(&key)
        .filter(|f| f.class == class)
        .map_or(0, |f| f.attempts)
        + 1;
    let retry_at = match class {
        FailureClass::Deterministic => None,
        FailureClass::Transient => {
            let wait =
                crate::daemon::policy::jittered(backoff(poll, attempts), 0.1).min(MAX_BACKOFF);
            let wait = jiff::SignedDuration::try_from(wait).unwrap_or_default();
            Some(now.saturating_add(wait).unwrap_or(now).to_string())
        }
    };
    let audit_count = AppState::load(paths)
        .ok()
        .and_then(|s| s.audit_head)
        .map_or(0, |h| h.count);
    let first_line = crate::ops::error::chain(e)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let f = RememberedFailure {
        class,
        reason: first_line,
        release: fingerprint(info),
        attempts,
        last: now.to_string(),
        retry_at,
        audit_count,
    };
    mem.failures.insert(key, f.clone());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;
    use crate::store::state::{DeployState, StateError};
    use crate::verify::VerifyError;

    fn event(user: &str) -> crate::store::history::Event {
        crate::store::history::Event {
            time: "2026-11-20T15:00:00Z".into(),
            app: "web".into(),
            event: "system.update.failed".into(),
            id: "0000000000000001".into(),
            from: None,
            to: Some("1.0.1".into()),
            actor: crate::store::history::Actor {
                user: user.into(),
                uid: None,
                reason: None,
            },
            outcome: "failed".into(),
            duration_ms: 0,
            error: None,
            details: Default::default(),
        }
    }

    #[test]
    fn a_refusal_is_forgotten_when_the_release_changes_or_an_operator_acts() {
        let t = tempfile::tempdir().unwrap();
        let paths = AppPaths::new(t.path());
        crate::fs::create_dir_all(&paths.state_dir()).unwrap();
        history::append(&paths, &event("agent:poll")).unwrap();
        let now: Timestamp = "2026-11-20T15:00:00Z".parse().unwrap();
        let info = ReleaseInfo {
            version: "1.0.1".parse().unwrap(),
            tag: "v1.0.1".into(),
            prerelease: false,
            published_at: Some("2026-11-20T14:00:00Z".into()),
            notes: None,
        };
        let refused = DeployError::Unsigned {
            app: "web".into(),
            version: "1.0.1".into(),
            asset: "x".into(),
        };
        let mut mem = AgentMemory::default();
        let f = remember(
            &mut mem,
            &paths,
            &info,
            &refused,
            now,
            Duration::from_secs(60),
        );
        assert_eq!(
            (f.class, f.retry_at.as_deref(), f.audit_count),
            (FailureClass::Deterministic, None, 1)
        );
        mem.notified
            .insert("deploy_failed:1.0.1".into(), "t".into());
        mem.notified
            .insert("email:deploy_failed:1.0.1".into(), "t".into());
        let later = now + jiff::SignedDuration::from_hours(100);
        assert!(matches!(
            verdict(&mut mem, &paths, &info, later).0,
            Verdict::Refused(_)
        ));
        // The agent's own later events change nothing.
        history::append(&paths, &event("webhook:d-1")).unwrap();
        assert!(matches!(
            verdict(&mut mem, &paths, &info, later).0,
            Verdict::Refused(_)
        ));
        // Re-published: tried again, and its next failure reported again.
        let mut republished = info.clone();
        republished.published_at = Some("2026-11-21T09:00:00Z".into());
        assert_eq!(
            verdict(&mut mem, &paths, &republished, later),
            (Verdict::Try, true)
        );
        assert!(mem.notified.is_empty() && mem.failures.is_empty());
        // An operator's audit event after the failure: tried again.
        remember(
            &mut mem,
            &paths,
            &info,
            &refused,
            now,
            Duration::from_secs(60),
        );
        history::append(&paths, &event("alice")).unwrap();
        assert_eq!(verdict(&mut mem, &paths, &info, later).0, Verdict::Try);

        // A transient failure waits for its back-off, then is tried.
        let busy = DeployError::State(StateError::Busy {
            app: "web".into(),
            holder: "x".into(),
        });
        let f = remember(&mut mem, &paths, &info, &busy, now, Duration::from_secs(60));
        let at: Timestamp = f.retry_at.unwrap().parse().unwrap();
        let wait = at.duration_since(now).as_secs_f64();
        assert!((54.0..=66.0).contains(&wait), "{wait}");
        assert_eq!(verdict(&mut mem, &paths, &info, now).0, Verdict::Later(at));
        assert_eq!(verdict(&mut mem, &paths, &info, at).0, Verdict::Try);
        let f = remember(&mut mem, &paths, &info, &busy, now, Duration::from_secs(60));
        assert_eq!(f.attempts, 2);
    }

    #[test]
    fn only_the_agents_own_actors_are_the_agent() {
        for a in ["agent", "agent:poll", "webhook:d-1"] {
            assert!(is_agent(a), "{a}");
        }
        for o in ["root", "alice", "agent-smith", "uid 1000"] {
            assert!(!is_agent(o), "{o}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_poll_interval_to_the_cap() {
        let p = Duration::from_secs(60);
        assert_eq!(backoff(p, 1), p, "the first retry after about a poll");
        assert_eq!(backoff(p, 2), 2 * p);
        assert_eq!(backoff(p, 3), 4 * p);
        assert_eq!(backoff(p, 6), 32 * p);
        assert_eq!(backoff(p, 7), MAX_BACKOFF, "capped at an hour");
        assert_eq!(backoff(p, u32::MAX), MAX_BACKOFF, "no overflow");
        assert_eq!(backoff(Duration::ZERO, 1), Duration::from_secs(1));
    }

    #[test]
    fn refusals_are_deterministic_and_outages_transient() {
        let det = [
            DeployError::Downgrade {
                app: "a".into(),
                version: "1".into(),
                highest: "2".into(),
            },
            DeployError::Failed {
                state: DeployState::Failed,
                reason: "warm failed".into(),
                rolled_back: true,
            },
            DeployError::Blocked {
                app: "a".into(),
                kind: "needs_attention".into(),
                reason: "x".into(),
            },
            DeployError::NeedsAttention { reason: "x".into() },
            DeployError::Unpack(crate::verify::unpack::UnpackError::Limit("too big".into())),
            DeployError::Unsigned {
                app: "a".into(),
                version: "1".into(),
                asset: "x".into(),
            },
        ];
        for e in &det {
            assert_eq!(classify(e), FailureClass::Deterministic, "{e}");
        }
        let checksum = DeployError::from(VerifyError::Mismatch {
            name: "web.tar.gz".into(),
            file: "SHA256SUMS".into(),
            expected: "a".into(),
            actual: "b".into(),
        });
        assert_eq!(classify(&checksum), FailureClass::Deterministic);
        let trans = [
            DeployError::Unpack(crate::verify::unpack::UnpackError::Corrupt {
                format: "tar.gz",
                entry: None,
                source: std::io::Error::other("the download broke off"),
            }),
            DeployError::Precheck("not enough free space".into()),
            DeployError::State(StateError::Busy {
                app: "a".into(),
                holder: "x".into(),
            }),
            DeployError::Source(SourceError::NotFound {
                what: "x".into(),
                source_desc: "github".into(),
            }),
            DeployError::Fs(crate::fs::FsError::new(
                "read",
                "/x",
                std::io::Error::from_raw_os_error(5),
            )),
        ];
        for e in &trans {
            assert_eq!(classify(e), FailureClass::Transient, "{e}");
        }
    }
}
