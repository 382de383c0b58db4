//! Fleet rollouts (issue #15): `[apps.<name>.fleet]` turns them on for an
//! app, `[agent] host_id` and `labels` say who this host is in the fleet.

use std::path::Path;

use serde::Deserialize;
use sha2::Digest;

use crate::fs::{self, FsError};

/// Where the host id comes from when `[agent] host_id` is not set.
pub(crate) const MACHINE_ID: &str = "/etc/machine-id";

/// The default `environment`.
pub(crate) const DEFAULT_ENVIRONMENT: &str = "production";

/// `[apps.<name>.fleet]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    /// The GitHub environment the app's deployments are recorded in.
    pub(super) environment: Option<String>,
    /// The GitHub logins whose `resume` and `revert` the agents obey.
    pub(super) operators: Option<Vec<String>>,
}

/// An app's fleet settings: present, the app rolls out in waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The GitHub environment of its deployments (default `production`).
    pub environment: String,
    /// `[agent] host_id`, when set.
    pub host_id: Option<String>,
    /// `[agent] labels`.
    pub labels: Vec<String>,
    /// The GitHub logins (a control deployment's `creator.login`, set by
    /// GitHub from the token) whose `resume` and `revert` agents obey; a
    /// `halt` counts from anyone. Empty: resume and revert from nobody.
    pub operators: Vec<String>,
}

/// A host id or label: what fits in a deployment payload and a log line.
pub(super) fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Validates `[apps.<name>.fleet]`.
pub(super) fn check(name: &str, raw: RawFleet, github: bool) -> Result<FleetConfig, String> {
    if !github {
        return Err(format!(
            "apps.{name}.fleet needs a github source: the fleet's shared ledger is the repository's deployments, which a release folder does not have"
        ));
    }
    let environment = raw
        .environment
        .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string());
    if environment.trim().is_empty() || environment.len() > 255 {
        return Err(format!(
            "apps.{name}.fleet.environment must be a GitHub environment name (1 to 255 characters), e.g. \"production\""
        ));
    }
    let operators = raw.operators.unwrap_or_default();
    for o in &operators {
        // GitHub's rule for logins: letters, digits and single hyphens,
        // at most 39 characters, not starting or ending with a hyphen.
        let ok = !o.is_empty()
            && o.len() <= 39
            && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !o.starts_with('-')
            && !o.ends_with('-');
        if !ok {
            return Err(format!(
                "apps.{name}.fleet.operators: {o:?} is not a GitHub login (letters, digits and '-', at most 39), e.g. \"octocat\""
            ));
        }
    }
    Ok(FleetConfig {
        environment,
        host_id: None,
        labels: Vec::new(),
        operators,
    })
}

/// The warning of a fleet nobody can resume or revert.
pub(super) fn operators_warning(name: &str, f: &FleetConfig) -> Option<String> {
    f.operators.is_empty().then(|| {
        format!(
            "apps.{name}.fleet.operators is empty: agents obey `fleet resume` and `fleet revert` from nobody (a halt stays until an operator listed there resumes); add the GitHub logins of the operators' tokens, e.g. operators = [\"alice\"]"
        )
    })
}

/// `[agent] host_id` and `labels`, checked, with the problems found (span,
/// message).
#[allow(clippy::type_complexity)]
pub(super) fn agent_keys(
    host_id: Option<toml::Spanned<String>>,
    labels: Option<Vec<toml::Spanned<String>>>,
) -> (
    Option<String>,
    Vec<String>,
    Vec<(std::ops::Range<usize>, String)>,
) {
    let mut problems = Vec::new();
    let mut id = None;
    if let Some(h) = host_id {
        match check_name("agent.host_id", h.get_ref()) {
            Ok(()) => id = Some(h.into_inner()),
            Err(m) => problems.push((h.span(), m)),
        }
    }
    let mut out = Vec::new();
    for l in labels.unwrap_or_default() {
        match check_name("agent.labels: label", l.get_ref()) {
            Ok(()) => out.push(l.into_inner()),
            Err(m) => problems.push((l.span(), m)),
        }
    }
    (id, out, problems)
}

/// Every fleet app learns who this host is (`[agent] host_id`, `labels`).
pub(super) fn share_identity(
    apps: &mut std::collections::BTreeMap<String, crate::config::AppConfig>,
    agent: &crate::config::AgentConfig,
) {
    for a in apps.values_mut() {
        if let Some(f) = &mut a.fleet {
            f.host_id = agent.host_id.clone();
            f.labels = agent.labels.clone();
        }
    }
}

/// Why the host id could not be derived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostIdError {
    /// `/etc/machine-id` is missing or unreadable.
    #[error(
        "cannot derive this host's fleet id from {MACHINE_ID}; set [agent] host_id in the configuration"
    )]
    MachineId(#[source] FsError),
    /// It is empty.
    #[error("{MACHINE_ID} is empty; run systemd-machine-id-setup, or set [agent] host_id")]
    Empty,
}

impl FleetConfig {
    /// This host's id for `app`: `[agent] host_id`, or the first 16 hex
    /// digits of sha256(machine-id ‖ NUL ‖ app), so the machine id itself
    /// never leaves the host.
    pub(crate) fn host_id(&self, app: &str) -> Result<String, HostIdError> {
        if let Some(h) = &self.host_id {
            return Ok(h.clone());
        }
        derive_host_id(Path::new(MACHINE_ID), app)
    }
}

/// The host id derived from the machine id in `path`.
pub(crate) fn derive_host_id(path: &Path, app: &str) -> Result<String, HostIdError> {
    let id = fs::read_to_string(path).map_err(HostIdError::MachineId)?;
    let id = id.trim();
    if id.is_empty() {
        return Err(HostIdError::Empty);
    }
    let mut h = sha2::Sha256::new();
    h.update(id.as_bytes());
    h.update([0u8]);
    h.update(app.as_bytes());
    Ok(hex::encode(&h.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_per_app_and_hide_the_machine_id() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("machine-id");
        crate::fs::write_atomic(&p, b"0123456789abcdef0123456789abcdef\n").unwrap();
        let a = derive_host_id(&p, "web").unwrap();
        let b = derive_host_id(&p, "api").unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(!a.contains("0123456789"));
        crate::fs::write_atomic(&p, b"\n").unwrap();
        assert!(matches!(derive_host_id(&p, "web"), Err(HostIdError::Empty)));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("label", "canary").is_ok());
        assert!(check_name("label", "").is_err());
        assert!(check_name("label", "a b").is_err());
        assert!(check("web", RawFleet::default(), false).is_err());
        assert_eq!(
            check("web", RawFleet::default(), true).unwrap().environment,
            "production"
        );
        let with = |o: &str| RawFleet {
            operators: Some(vec![o.to_string()]),
            ..RawFleet::default()
        };
        assert!(check("web", with("alice-ops"), true).is_ok());
        assert!(check("web", with("-alice"), true).is_err());
        assert!(check("web", with("a b"), true).is_err());
    }
}
