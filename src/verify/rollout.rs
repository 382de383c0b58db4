//! A release's rollout plan (issue #15): the `[rollout]` table of its signed
//! `release.toml`, and where one host stands in it (its cohort).
//!
//! ```toml
//! [rollout]
//! waves = [
//!   { hosts = ["canary"] },            # hosts labelled canary, first
//!   { percent = 10, after = "30m" },   # opens 30 min after the previous wave opened
//!   { percent = 50, after = "2h" },
//!   { percent = 100, after = "4h" },
//! ]
//! max_failures = 2                     # halt after this many failed hosts
//! start = "published"                  # or "canary_success"
//! ```
//!
//! The plan is read only from a `release.toml` whose signature a trusted key
//! made (and whose signed comment names this release, when it names one):
//! write access to GitHub alone must never change how fast a release
//! spreads. A `release.toml` with a plan but without a valid signature
//! refuses the release.
//!
//! The cohort: a host's bucket is the first 8 bytes of
//! sha256(host id ‖ NUL ‖ app ‖ NUL ‖ version), big-endian, mod 10000; its
//! wave is the first whose `hosts` names one of its labels or whose
//! `percent × 100` exceeds its bucket. A new version reshuffles the buckets,
//! so no host is always first. Wave k opens at the start (the release's
//! publication, or the first success of a first-wave host) plus the sum of
//! the `after` of waves 1..=k.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use sha2::Digest;

use crate::config::AppConfig;
use crate::source::{ReleaseInfo, ReleaseSource};

/// Buckets a host can fall in.
pub(crate) const BUCKETS: u64 = 10_000;

/// When the waves start counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Start {
    /// The release's publication time.
    #[default]
    Published,
    /// The first success of a host of the first wave (the later waves stay
    /// closed until one canary is live).
    CanarySuccess,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wave {
    /// Hosts with one of these labels belong to it.
    pub hosts: Vec<String>,
    /// Hosts whose bucket is below `percent × 100` belong to it.
    pub percent: Option<u32>,
    /// It opens this long after the previous wave opened.
    pub after: Duration,
}

/// A release's rollout plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// In order.
    pub waves: Vec<Wave>,
    /// The rollout halts once this many hosts failed.
    pub max_failures: usize,
    /// When wave 1 opens.
    pub start: Start,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    hosts: Option<Vec<String>>,
    percent: Option<i64>,
    after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    waves: Vec<RawWave>,
    max_failures: Option<i64>,
    start: Option<Start>,
}

/// The default `max_failures`: one failed host halts the rollout.
pub(crate) const DEFAULT_MAX_FAILURES: usize = 1;

/// Why a plan is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RolloutError {
    /// The plan is malformed.
    #[error("release.toml [rollout]: {0}")]
    Invalid(String),
    /// A plan that no trusted key signed.
    #[error(
        "release {version} carries a rollout plan in release.toml, but {why}; a plan counts only when signed (switchyard pack --rollout FILE --key KEY), so the release is refused"
    )]
    Unsigned {
        /// The release.
        version: String,
        /// What is wrong with the signature.
        why: String,
    },
    /// `release.toml` could not be read from the source.
    #[error("cannot read release.toml of release {version}")]
    Source {
        /// The release.
        version: String,
        /// Why.
        #[source]
        source: crate::source::SourceError,
    },
}

fn invalid(m: impl Into<String>) -> RolloutError {
    RolloutError::Invalid(m.into())
}

/// The plan in `release.toml`'s text, `None` when it has no `[rollout]`.
pub(crate) fn plan_from_toml(bytes: &[u8]) -> Result<Option<Plan>, RolloutError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| invalid(format!("release.toml is not UTF-8 text ({e})")))?;
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| invalid(format!("not valid TOML: {}", e.to_string().trim_end())))?;
    let Some(rollout) = table.get("rollout") else {
        return Ok(None);
    };
    let raw: RawRollout = rollout
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| invalid(e.to_string().trim_end().to_string()))?;
    check(raw).map(Some)
}

fn check(raw: RawRollout) -> Result<Plan, RolloutError> {
    if raw.waves.is_empty() {
        return Err(invalid(
            "waves is empty; write e.g. waves = [{ hosts = [\"canary\"] }, { percent = 100, after = \"1h\" }]",
        ));
    }
    let mut waves = Vec::new();
    let mut last_percent = 0;
    for (i, w) in raw.waves.into_iter().enumerate() {
        let n = i + 1;
        let after = match &w.after {
            None => Duration::ZERO,
            Some(a) => humantime::parse_duration(a).map_err(|e| {
                invalid(format!(
                    "wave {n}: after = {a:?} is not a duration ({e}); write e.g. \"30m\" or \"4h\""
                ))
            })?,
        };
        match (w.hosts, w.percent) {
            (Some(hosts), None) => {
                if hosts.is_empty() || hosts.iter().any(|h| h.trim().is_empty()) {
                    return Err(invalid(format!(
                        "wave {n}: hosts must list one or more labels, e.g. hosts = [\"canary\"]"
                    )));
                }
                waves.push(Wave {
                    hosts,
                    percent: None,
                    after,
                });
            }
            (None, Some(p)) => {
                if !(1..=100).contains(&p) {
                    return Err(invalid(format!(
                        "wave {n}: percent = {p} must be between 1 and 100"
                    )));
                }
                let p = p as u32;
                if p <= last_percent {
                    return Err(invalid(format!(
                        "wave {n}: percent = {p} must be above the previous wave's {last_percent}: percents rise from wave to wave"
                    )));
                }
                last_percent = p;
                waves.push(Wave {
                    hosts: Vec::new(),
                    percent: Some(p),
                    after,
                });
            }
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "wave {n} has both hosts and percent; a wave is either {{ hosts = [labels] }} or {{ percent = N }}"
                )));
            }
            (None, None) => {
                return Err(invalid(format!(
                    "wave {n} has neither hosts nor percent; write {{ hosts = [\"canary\"] }} or {{ percent = 10, after = \"30m\" }}"
                )));
            }
        }
    }
    if last_percent != 100 {
        return Err(invalid(format!(
            "the last percent wave reaches {last_percent}%, so some hosts would never get the release; end with {{ percent = 100, after = \"...\" }}"
        )));
    }
    if waves.last().is_some_and(|w| w.percent.is_none()) {
        return Err(invalid(
            "a hosts wave after the 100% wave would never be reached; move it before",
        ));
    }
    let max_failures = match raw.max_failures {
        None => DEFAULT_MAX_FAILURES,
        Some(m) if m >= 1 => m as usize,
        Some(m) => {
            return Err(invalid(format!(
                "max_failures = {m} must be 1 or more (1: the first failed host halts the rollout)"
            )));
        }
    };
    Ok(Plan {
        waves,
        max_failures,
        start: raw.start.unwrap_or_default(),
    })
}

/// The host's bucket for a release: `0..10000`.
pub(crate) fn bucket(host_id: &str, app: &str, version: &str) -> u64 {
    let mut h = sha2::Sha256::new();
    h.update(host_id.as_bytes());
    h.update([0u8]);
    h.update(app.as_bytes());
    h.update([0u8]);
    h.update(version.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

impl Plan {
    /// The host's wave, from 0: the first that names one of its labels or
    /// whose percent covers its bucket (the last wave covers every bucket).
    pub(crate) fn wave_of(&self, labels: &[String], bucket: u64) -> usize {
        self.waves
            .iter()
            .position(|w| {
                w.hosts.iter().any(|h| labels.contains(h))
                    || w.percent.is_some_and(|p| u64::from(p) * 100 > bucket)
            })
            .unwrap_or(self.waves.len() - 1)
    }

    /// When wave `k` (from 0) opens, as every agent and `fleet status`
    /// compute it: from the publication; for `canary_success`, the later
    /// waves count from the first canary success instead (`None` until
    /// then, or without a publication time).
    pub(crate) fn wave_opens_at(
        &self,
        k: usize,
        published: Option<Timestamp>,
        first_success: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let published = published?;
        match self.start {
            Start::Published => Some(self.opens_at(k, published)),
            Start::CanarySuccess if k == 0 => Some(self.opens_at(0, published)),
            Start::CanarySuccess => {
                let shift = first_success?.duration_since(self.opens_at(0, published));
                self.opens_at(k, published).checked_add(shift).ok()
            }
        }
    }

    /// When wave `k` (from 0) opens, counted from `start`.
    pub(crate) fn opens_at(&self, k: usize, start: Timestamp) -> Timestamp {
        let total: Duration = self.waves.iter().take(k + 1).map(|w| w.after).sum();
        jiff::SignedDuration::try_from(total)
            .ok()
            .and_then(|d| start.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX)
    }
}

/// Checks the signed comment's `tag=`/`file=` fields, when present, against
/// the release: a valid signature of another release's plan is a replay.
fn check_comment(info: &ReleaseInfo, comment: &str) -> Result<(), String> {
    for field in comment.split_whitespace() {
        let Some((k, val)) = field.split_once('=') else {
            continue;
        };
        let ok = match k {
            "tag" | "version" => {
                val == info.tag || val.trim_start_matches('v') == info.version.to_string()
            }
            "file" => val == "release.toml",
            _ => true,
        };
        if !ok {
            return Err(format!(
                "its signature's trusted comment ({comment:?}) names {k}={val}, another release's plan"
            ));
        }
    }
    Ok(())
}

/// The rollout plan of a release the source offers: `None` when it has no
/// `release.toml` or no `[rollout]` in it; an error when the plan is
/// malformed or not signed by a key `[apps.<name>.trust]` trusts.
pub(crate) fn plan_of(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    info: &ReleaseInfo,
) -> Result<Option<Plan>, RolloutError> {
    let version = info.version.to_string();
    let Some(t) = source
        .release_toml(info)
        .map_err(|source| RolloutError::Source {
            version: version.clone(),
            source,
        })?
    else {
        return Ok(None);
    };
    let Some(plan) = plan_from_toml(&t.body)? else {
        return Ok(None);
    };
    let unsigned = |why: String| RolloutError::Unsigned {
        version: version.clone(),
        why,
    };
    let Some(sig) = &t.signature else {
        return Err(unsigned("it has no release.toml.minisig".into()));
    };
    let tr = &cfg.trust;
    let policy = crate::verify::trust::TrustPolicy::new(
        &cfg.name,
        &tr.keys,
        &tr.key_files,
        &tr.revoked_keys,
        true,
        tr.allow_legacy_signatures,
    )
    .map_err(|e| unsigned(format!("the trust settings are unusable ({e})")))?;
    let v = crate::verify::trust::verify_bytes(&policy, sig, &t.body, "release.toml")
        .map_err(|e| unsigned(format!("its signature does not verify ({e})")))?;
    check_comment(info, &v.trusted_comment).map_err(unsigned)?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
critical = false
[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 10, after = "30m" },
  { percent = 50, after = "2h" },
  { percent = 100, after = "4h" },
]
max_failures = 2
"#;

    fn plan(waves: &str) -> Result<Option<Plan>, RolloutError> {
        plan_from_toml(format!("[rollout]\nwaves = {waves}\n").as_bytes())
    }

    #[test]
    fn the_issues_example_parses() {
        let p = plan_from_toml(EXAMPLE.as_bytes()).unwrap().unwrap();
        assert_eq!(p.waves.len(), 4);
        assert_eq!(p.max_failures, 2);
        assert_eq!(p.start, Start::Published);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(p.opens_at(0, t0), t0);
        assert_eq!(p.opens_at(1, t0).to_string(), "2026-01-01T00:30:00Z");
        assert_eq!(p.opens_at(3, t0).to_string(), "2026-01-01T06:30:00Z");
        assert!(plan_from_toml(b"critical = true\n").unwrap().is_none());
    }

    #[test]
    fn bad_plans_say_what_to_write() {
        for (waves, needle) in [
            ("[]", "waves is empty"),
            ("[{ percent = 50 }, { percent = 40 }]", "percents rise"),
            ("[{ percent = 50 }]", "never get the release"),
            ("[{ percent = 0 }, { percent = 100 }]", "between 1 and 100"),
            ("[{ hosts = [] }, { percent = 100 }]", "one or more labels"),
            (
                "[{ hosts = [\"c\"], percent = 5 }, { percent = 100 }]",
                "both",
            ),
            ("[{ after = \"1h\" }, { percent = 100 }]", "neither"),
            ("[{ percent = 100, after = \"soon\" }]", "not a duration"),
            (
                "[{ percent = 100 }, { hosts = [\"c\"] }]",
                "never be reached",
            ),
            ("[{ percent = 100, every = 3 }]", "every"),
        ] {
            let e = plan(waves).unwrap_err().to_string();
            assert!(e.contains(needle), "{waves}: {e}");
        }
        let e = plan_from_toml(b"[rollout]\nwaves = [{ percent = 100 }]\nmax_failures = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 or more"), "{e}");
    }

    #[test]
    fn cohorts_follow_labels_then_buckets() {
        let p = plan_from_toml(EXAMPLE.as_bytes()).unwrap().unwrap();
        let canary = vec!["canary".to_string()];
        assert_eq!(p.wave_of(&canary, 9_999), 0);
        assert_eq!(p.wave_of(&[], 0), 1);
        assert_eq!(p.wave_of(&[], 999), 1);
        assert_eq!(p.wave_of(&[], 1_000), 2);
        assert_eq!(p.wave_of(&[], 4_999), 2);
        assert_eq!(p.wave_of(&[], 5_000), 3);
        assert_eq!(p.wave_of(&[], 9_999), 3);
    }

    #[test]
    fn buckets_are_stable_spread_and_per_version() {
        assert_eq!(bucket("h1", "web", "1.0.0"), bucket("h1", "web", "1.0.0"));
        assert_ne!(bucket("h1", "web", "1.0.0"), bucket("h1", "web", "1.0.1"));
        // 10 000 hosts: each tenth of the range holds close to a tenth.
        let mut tenths = [0u32; 10];
        for i in 0..10_000 {
            tenths[(bucket(&format!("host-{i}"), "web", "2.0.0") / 1_000) as usize] += 1;
        }
        for t in tenths {
            assert!((900..1_100).contains(&t), "{tenths:?}");
        }
    }
}
