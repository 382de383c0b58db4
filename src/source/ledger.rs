//! The fleet's shared ledger of rollout attempts (issue #15).
//!
//! Every host of a fleet records each attempt at a release there, and reads
//! there what the others did: how many failed (the automatic halt) and what
//! the operators said (halt, resume, revert). There is no coordinator of our
//! own: the ledger is GitHub's Deployments API (`source::ledger_github`), which
//! operators already see in their repository; [`Ledger`] is the seam for
//! another backend (etcd) without touching the agent.
//!
//! On GitHub: an attempt is a deployment with `task = "deploy"` on the
//! release's tag in the app's environment, its payload naming the host
//! (`{host_id, hostname, app, version, wave}`); its statuses go
//! `in_progress`, then `success` or `failure`, and `inactive` once a later
//! version replaced it on that host. A control action is a deployment with
//! `task = "switchyard:control"` on the same tag and environment, payload
//! `{action, reason, by, host, now}`, plus a `success` status; the newest
//! one the app's `operators` authorize wins ([`in_force`]: a resume or
//! revert counts only when its creator's login is an operator's).
//!
//! Like [`ReleaseSource`](crate::source::ReleaseSource), the trait is
//! synchronous (the agent calls it from its blocking check); the GitHub
//! implementation reaches its async client through `source::bridge`.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The `task` of an attempt's deployment.
pub(crate) const TASK_DEPLOY: &str = "deploy";
/// The `task` of a control action's deployment.
pub(crate) const TASK_CONTROL: &str = "switchyard:control";

/// The state of an attempt, as GitHub names deployment statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Created, no status yet (or `queued`/`pending`).
    Pending,
    /// The host is deploying it.
    InProgress,
    /// Deployed and live on the host.
    Success,
    /// The deploy failed (counts toward `max_failures`).
    Failure,
    /// The deploy could not run (counts toward `max_failures` too).
    Error,
    /// Replaced by a later version on that host.
    Inactive,
}

impl AttemptState {
    /// GitHub's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Pending => "pending",
            AttemptState::InProgress => "in_progress",
            AttemptState::Success => "success",
            AttemptState::Failure => "failure",
            AttemptState::Error => "error",
            AttemptState::Inactive => "inactive",
        }
    }

    /// A state no later status changes: it need not be read again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AttemptState::Failure | AttemptState::Error | AttemptState::Inactive
        )
    }

    /// A failed attempt, as the automatic halt counts them.
    pub fn is_failure(self) -> bool {
        matches!(self, AttemptState::Failure | AttemptState::Error)
    }
}

impl fmt::Display for AttemptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an attempt's deployment carries in its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptPayload {
    /// The host's id (`[agent] host_id`, or derived from `/etc/machine-id`).
    pub host_id: String,
    /// The host's name, for people.
    pub hostname: String,
    /// The app.
    pub app: String,
    /// The version attempted.
    pub version: String,
    /// The host's wave in the release's plan, from 1.
    pub wave: usize,
}

/// One host's attempt at a release, as the ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The deployment's id.
    pub id: u64,
    /// Who attempted what.
    #[serde(flatten)]
    pub payload: AttemptPayload,
    /// When the attempt was created.
    pub created_at: Timestamp,
    /// Its latest state as last read (`Pending` before any status).
    pub state: AttemptState,
    /// The latest status's description (the failure's reason).
    pub description: Option<String>,
    /// When the latest status was posted.
    pub state_at: Option<Timestamp>,
}

/// An operator's action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// No host starts the version any more.
    Halt,
    /// The rollout continues (ends a halt or a revert).
    Resume,
    /// Halted, and every host live on the version goes back.
    Revert,
}

impl ControlAction {
    /// Its name in payloads and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Halt => "halt",
            ControlAction::Resume => "resume",
            ControlAction::Revert => "revert",
        }
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control action's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPayload {
    /// What to do.
    pub action: ControlAction,
    /// Why, as the operator said it.
    pub reason: String,
    /// Who (the operator's user name).
    pub by: String,
    /// The host the command ran on.
    pub host: String,
    /// A revert that does not wait for each host's window.
    #[serde(default)]
    pub now: bool,
}

/// A control action as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    /// Its deployment's id.
    pub id: u64,
    /// What was said.
    #[serde(flatten)]
    pub payload: ControlPayload,
    /// The GitHub login that created it: GitHub sets it from the token, so
    /// unlike the payload's `by` no host can forge it.
    pub creator: String,
    /// When.
    pub at: Timestamp,
}

impl Control {
    /// No host may start the version.
    pub fn halts(&self) -> bool {
        matches!(
            self.payload.action,
            ControlAction::Halt | ControlAction::Revert
        )
    }

    /// Agents obey it: a halt from anyone (stopping is always safe), a
    /// resume or revert only from one of `operators` (a host's token can
    /// write deployments too, and must not lift a halt or revert a fleet).
    pub fn authorized(&self, operators: &[String]) -> bool {
        self.payload.action == ControlAction::Halt || operators.contains(&self.creator)
    }
}

/// The control in force among `controls` (newest first): the newest one
/// `operators` authorize. The unauthorized ones newer than it are returned
/// too, newest first, to be shown as ignored; they change nothing, so an
/// operator's halt stays in force under a host's `resume`.
pub(crate) fn in_force(
    controls: impl IntoIterator<Item = Control>,
    operators: &[String],
) -> (Option<Control>, Vec<Control>) {
    let mut ignored = Vec::new();
    for c in controls {
        if c.authorized(operators) {
            return (Some(c), ignored);
        }
        ignored.push(c);
    }
    (None, ignored)
}

/// What the ledger says about one release in one environment, read once
/// per poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Every attempt, newest first.
    pub attempts: Vec<Attempt>,
    /// The control action in force: the newest with a `success` status
    /// that the app's `operators` authorize ([`in_force`]), if any.
    pub control: Option<Control>,
    /// Newer control actions that were ignored (a resume or revert from a
    /// login not in `operators`), newest first.
    pub ignored: Vec<Control>,
    /// The requests this read cost (pages, status reads).
    pub requests: u32,
}

impl Snapshot {
    /// The first success of a first-wave host: what starts the later
    /// waves of a `canary_success` plan.
    pub fn first_canary_success(&self) -> Option<Timestamp> {
        self.attempts
            .iter()
            .filter(|a| a.payload.wave == 1 && a.state == AttemptState::Success)
            .filter_map(|a| a.state_at)
            .min()
    }

    /// Failed attempts (one per host: a host that failed twice counts once).
    pub fn failures(&self) -> usize {
        let mut hosts: Vec<&str> = self
            .attempts
            .iter()
            .filter(|a| a.state.is_failure())
            .map(|a| a.payload.host_id.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.len()
    }

    /// Operators halted the rollout (halt or revert in force).
    pub fn halted(&self) -> bool {
        self.control.as_ref().is_some_and(Control::halts)
    }

    /// This host's attempts, newest first.
    pub fn of_host<'a>(&'a self, host_id: &'a str) -> impl Iterator<Item = &'a Attempt> {
        self.attempts
            .iter()
            .filter(move |a| a.payload.host_id == host_id)
    }
}

/// Where the ledger is, per release: the environment and the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `[apps.NAME.fleet] environment`.
    pub environment: String,
    /// The release's tag as published.
    pub tag: String,
}

/// The ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The GitHub API failed (network, server, rate limit, token).
    #[error(transparent)]
    Github(Box<crate::source::github_api::GithubError>),
    /// The answer was not what the ledger writes.
    #[error("the ledger's {what} is unusable: {reason}")]
    Bad {
        /// What was read.
        what: String,
        /// Why.
        reason: String,
    },
}

impl From<crate::source::github_api::GithubError> for LedgerError {
    fn from(e: crate::source::github_api::GithubError) -> Self {
        LedgerError::Github(Box::new(e))
    }
}

/// The fleet's shared record of rollout attempts and control actions.
pub trait Ledger: Send + Sync {
    /// For messages ("GitHub deployments of acme/web").
    fn describe(&self) -> String;

    /// Every attempt at `scope`'s release and the control state, in one
    /// logical read (bounded in requests: see the implementation).
    fn snapshot(&self, scope: &Scope) -> Result<Snapshot, LedgerError>;

    /// Only the control action in force for `scope` (what a host with the
    /// version live needs each poll), cheaper than a snapshot; unauthorized
    /// ones are skipped as in [`Snapshot::control`].
    fn control(&self, scope: &Scope) -> Result<Option<Control>, LedgerError> {
        Ok(self.snapshot(scope)?.control)
    }

    /// Records the start of an attempt (`in_progress`) and returns its id.
    fn create_attempt(&self, scope: &Scope, attempt: &AttemptPayload) -> Result<u64, LedgerError>;

    /// Posts a later state of an attempt (`success`, `failure`, `inactive`)
    /// with a short description (the reason, a redacted log excerpt).
    fn post_state(
        &self,
        attempt: u64,
        state: AttemptState,
        description: &str,
    ) -> Result<(), LedgerError>;

    /// Records an operator's action on `scope`'s rollout; returns its id.
    fn post_control(&self, scope: &Scope, control: &ControlPayload) -> Result<u64, LedgerError>;
}

/// The longest status description GitHub accepts.
pub(crate) const MAX_DESCRIPTION: usize = 140;

/// `text` on one line, cut to GitHub's limit, with `…` when cut.
pub(crate) fn clip_description(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(&one_line, MAX_DESCRIPTION)
}

/// `text` cut to `n` characters on a character boundary, with `…` when cut.
pub(crate) fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let mut out: String = text.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: u64, host: &str, state: AttemptState) -> Attempt {
        Attempt {
            id,
            payload: AttemptPayload {
                host_id: host.into(),
                hostname: host.into(),
                app: "web".into(),
                version: "1.0.0".into(),
                wave: 1,
            },
            created_at: Timestamp::UNIX_EPOCH,
            state,
            description: None,
            state_at: None,
        }
    }

    #[test]
    fn failures_count_hosts_not_attempts() {
        let s = Snapshot {
            attempts: vec![
                attempt(1, "a", AttemptState::Failure),
                attempt(2, "a", AttemptState::Error),
                attempt(3, "b", AttemptState::Failure),
                attempt(4, "c", AttemptState::Success),
                attempt(5, "d", AttemptState::InProgress),
            ],
            ..Snapshot::default()
        };
        assert_eq!(s.failures(), 2);
        assert!(!s.halted());
    }

    fn control(id: u64, action: ControlAction, creator: &str) -> Control {
        Control {
            id,
            payload: ControlPayload {
                action,
                reason: String::new(),
                by: "alice".into(),
                host: "h".into(),
                now: false,
            },
            creator: creator.into(),
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_operators_lift_a_halt_or_revert() {
        let ops = vec!["alice".to_string()];
        // Newest first: a host's resume over an operator's halt.
        let (c, ignored) = in_force(
            vec![
                control(3, ControlAction::Resume, "host-token"),
                control(2, ControlAction::Halt, "alice"),
                control(1, ControlAction::Resume, "alice"),
            ],
            &ops,
        );
        assert_eq!(c.map(|c| c.id), Some(2));
        assert_eq!(ignored.iter().map(|c| c.id).collect::<Vec<_>>(), [3]);
        // A halt from anyone counts; no operators: resume/revert from nobody.
        let (c, _) = in_force(vec![control(5, ControlAction::Halt, "host-token")], &[]);
        assert_eq!(c.map(|c| c.id), Some(5));
        let (c, ignored) = in_force(
            vec![
                control(7, ControlAction::Revert, "alice"),
                control(6, ControlAction::Resume, "alice"),
            ],
            &[],
        );
        assert!(c.is_none());
        assert_eq!(ignored.len(), 2);
        let (c, _) = in_force(vec![control(8, ControlAction::Revert, "alice")], &ops);
        assert_eq!(c.map(|c| c.id), Some(8));
    }

    #[test]
    fn descriptions_fit_githubs_limit() {
        let long = "é".repeat(300);
        let d = clip_description(&long);
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        assert!(d.ends_with('…'));
        assert_eq!(clip_description("a\nb"), "a b");
    }
}
