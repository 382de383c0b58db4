//! A release's critical marking (release notes, or a signed
//! `release.toml`): read by `check` and `status` to show it, and by the
//! agent, which deploys a critical release by its deadline.

use jiff::Timestamp;
use tracing::warn;

use crate::config::AppConfig;
use crate::source::{CriticalRelease, ReleaseInfo, ReleaseSource};
use crate::version::Version;

/// A release's critical marking: it may skip the maintenance window once its
/// deadline has passed (at once when it has no deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Critical {
    /// From this instant on the release skips the window; `None`: at once.
    pub deadline: Option<Timestamp>,
}

/// Reads a release's critical marking from its notes and its `release.toml`.
///
/// `release.toml` (bytes already signature-verified by the caller):
/// `critical = true` marks the release, `deadline = "<RFC 3339>"` (or a TOML
/// offset date-time) sets the deadline; other keys are allowed. When a
/// `release.toml` exists it alone decides, even when it does not mention
/// `critical`: it is signed, while notes can be edited afterwards by anyone
/// who can edit the release page.
///
/// Release notes: a line `critical: true` (any case, surrounding whitespace,
/// a Markdown list marker `-`, `*` or `+`, and `**bold**` or `` `code` `` around
/// the key or value are all fine) marks the release. A `deadline: <RFC 3339>`
/// line in the same block (the run of non-blank lines holding the critical
/// line) sets the deadline; the first one counts. Lines inside fenced code
/// blocks are ignored, since they are examples, not markings.
///
/// Errors: a `release.toml` that is not UTF-8 or TOML, a `critical` that is
/// not a boolean, a deadline that is not an RFC 3339 instant (in the notes
/// only when it sits next to `critical: true`).
pub(crate) fn critical_from(
    notes: Option<&str>,
    release_toml: Option<&[u8]>,
) -> Result<Option<Critical>, String> {
    match (release_toml, notes) {
        (Some(bytes), _) => critical_from_toml(bytes),
        (None, Some(notes)) => critical_from_notes(notes),
        (None, None) => Ok(None),
    }
}

const DEADLINE_EXAMPLE: &str = "2026-05-01T02:00:00Z";

fn parse_deadline(value: &str, origin: &str) -> Result<Timestamp, String> {
    value.parse::<Timestamp>().map_err(|e| {
        format!(
            "{origin}: deadline {value:?} is not an RFC 3339 instant with an offset ({e}); write e.g. {DEADLINE_EXAMPLE} or 2026-05-01T04:00:00+02:00"
        )
    })
}

fn critical_from_toml(bytes: &[u8]) -> Result<Option<Critical>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("release.toml is not UTF-8 text ({e}); save it as UTF-8"))?;
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        format!(
            "release.toml is not valid TOML: {}",
            e.to_string().trim_end()
        )
    })?;
    let critical = match table.get("critical") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => {
            return Err(format!(
                "release.toml: critical must be a boolean, got a TOML {}: write critical = true (no quotes)",
                other.type_str()
            ));
        }
    };
    let deadline = match table.get("deadline") {
        None => None,
        Some(toml::Value::String(s)) => Some(parse_deadline(s, "release.toml")?),
        Some(toml::Value::Datetime(d)) => Some(parse_deadline(&d.to_string(), "release.toml")?),
        Some(other) => {
            return Err(format!(
                "release.toml: deadline must be an RFC 3339 instant, got a TOML {}: write deadline = \"{DEADLINE_EXAMPLE}\"",
                other.type_str()
            ));
        }
    };
    Ok(critical.then_some(Critical { deadline }))
}

/// A `key: value` line of release notes, with Markdown decoration removed.
fn note_entry(line: &str) -> Option<(&str, &str)> {
    let mut line = line.trim();
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            line = rest.trim_start();
            break;
        }
    }
    let (key, value) = line.split_once(':')?;
    let decoration = |c: char| c.is_whitespace() || matches!(c, '*' | '_' | '`' | '"' | '\'');
    Some((key.trim_matches(decoration), value.trim_matches(decoration)))
}

fn critical_from_notes(notes: &str) -> Result<Option<Critical>, String> {
    // Blocks of consecutive non-blank lines outside fenced code, each line
    // kept with its 1-based number for error messages.
    let mut blocks: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    let mut fence: Option<char> = None;
    for (i, line) in notes.lines().enumerate() {
        let trimmed = line.trim();
        let fence_char = ['`', '~']
            .into_iter()
            .find(|&c| trimmed.starts_with(&String::from(c).repeat(3)));
        match (fence, fence_char) {
            (None, Some(c)) => {
                fence = Some(c);
                blocks.push(Vec::new());
                continue;
            }
            (Some(open), Some(c)) if open == c => {
                fence = None;
                continue;
            }
            (Some(_), _) => continue,
            (None, None) => {}
        }
        if trimmed.is_empty() {
            blocks.push(Vec::new());
        } else if let Some(block) = blocks.last_mut() {
            block.push((i + 1, line));
        }
    }
    for block in &blocks {
        let marked = block.iter().any(|(_, line)| {
            note_entry(line).is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("critical") && v.eq_ignore_ascii_case("true")
            })
        });
        if !marked {
            continue;
        }
        let deadline = block.iter().find_map(|&(n, line)| {
            note_entry(line)
                .filter(|(k, _)| k.eq_ignore_ascii_case("deadline"))
                .map(|(_, v)| parse_deadline(v, &format!("release notes line {n}")))
        });
        return Ok(Some(Critical {
            deadline: deadline.transpose()?,
        }));
    }
    Ok(None)
}

/// The critical marking of a release the source offers: its notes, or its
/// `release.toml` when that is signed by a trusted key (an unsigned or
/// unreadable one is logged and ignored).
pub(crate) fn critical_of(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    info: &ReleaseInfo,
) -> Option<Critical> {
    // release.toml counts only when signed by a trusted key.
    let toml = match source.release_toml(info) {
        Ok(t) => t,
        Err(e) => {
            warn!(app = %cfg.name, version = %info.version, error = %crate::chain::chain(&e), "could not read release.toml");
            None
        }
    };
    let toml = toml.and_then(|t| {
        let Some(sig) = &t.signature else {
            warn!(app = %cfg.name, version = %info.version, "release.toml is not signed (no release.toml.minisig); ignored");
            return None;
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
        .ok()?;
        match crate::verify::trust::verify_bytes(&policy, sig, &t.body, "release.toml") {
            Ok(_) => Some(t.body),
            Err(e) => {
                warn!(app = %cfg.name, error = %e, "release.toml is not validly signed; ignored");
                None
            }
        }
    });
    match critical_from(info.notes.as_deref(), toml.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            warn!(app = %cfg.name, error = %e, "could not read the critical marking");
            None
        }
    }
}

/// How many newer releases [`critical_releases`] reads the marking of.
const MAX_LOOKED_AT: usize = 5;

/// The releases of `releases` newer than `current` on the app's channel that are marked
/// critical, newest first. Only the newest few are looked at: each may
/// cost the source a request for its `release.toml`.
pub(crate) fn critical_releases(
    cfg: &AppConfig,
    source: &dyn ReleaseSource,
    releases: &[ReleaseInfo],
    current: Option<&Version>,
) -> Vec<CriticalRelease> {
    let include = crate::source::include_prereleases(cfg);
    let mut newer: Vec<&ReleaseInfo> = releases
        .iter()
        .filter(|r| include || !r.prerelease)
        .filter(|r| current.is_none_or(|c| &r.version > c))
        .collect();
    newer.sort_by(|a, b| b.version.cmp(&a.version));
    newer.dedup_by(|a, b| a.version == b.version);
    newer
        .iter()
        .take(MAX_LOOKED_AT)
        .filter_map(|r| {
            critical_of(cfg, source, r).map(|c| CriticalRelease {
                version: r.version.clone(),
                deadline: c.deadline,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn critical_from_notes_variants() {
        let crit = |notes: &str| critical_from(Some(notes), None).unwrap();
        let none = Some(Critical { deadline: None });
        assert_eq!(critical_from(None, None).unwrap(), None);
        assert_eq!(crit("critical: true"), none);
        assert_eq!(crit("Fixes a hole.\n\n  Critical:   TRUE  \n"), none);
        assert_eq!(crit("## Notes\n- fixes\n- critical: true\n"), none);
        assert_eq!(crit("* **Critical:** `true`\r\n"), none);
        assert_eq!(crit("critical: false"), None);
        assert_eq!(crit("critical: truely"), None);
        assert_eq!(crit("This is critical: true story"), None);
        assert_eq!(crit("nothing to see"), None);
        assert_eq!(crit(""), None);
        assert_eq!(
            crit("Example config:\n```yaml\ncritical: true\n```\n"),
            None,
            "inside a code fence"
        );
        assert_eq!(
            crit("- critical: true\n- deadline: 2026-04-01T00:00:00Z\n"),
            Some(Critical {
                deadline: Some(ts("2026-04-01T00:00:00Z"))
            })
        );
        assert_eq!(
            crit("deadline: 2026-04-01T02:00:00+02:00\ncritical: true"),
            Some(Critical {
                deadline: Some(ts("2026-04-01T00:00:00Z"))
            }),
            "before it, with an offset"
        );
        assert_eq!(
            crit("critical: true\n\nFeedback deadline: 2026-04-01T00:00:00Z"),
            none,
            "another paragraph does not count"
        );
        let e = critical_from(
            Some("intro\n\ncritical: true\ndeadline: 2026-04-01\n"),
            None,
        )
        .unwrap_err();
        assert!(e.contains("line 4") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn critical_from_release_toml() {
        let toml = |t: &str| critical_from(None, Some(t.as_bytes()));
        assert_eq!(
            toml("critical = true\n").unwrap(),
            Some(Critical { deadline: None })
        );
        assert_eq!(
            toml("critical = true\ndeadline = \"2026-04-01T00:00:00Z\"\nseverity = \"high\"\n[extra]\nx = 1\n")
                .unwrap(),
            Some(Critical {
                deadline: Some(ts("2026-04-01T00:00:00Z"))
            })
        );
        assert_eq!(
            toml("critical = true\ndeadline = 2026-04-01T02:00:00+02:00\n").unwrap(),
            Some(Critical {
                deadline: Some(ts("2026-04-01T00:00:00Z"))
            }),
            "a TOML date-time works too"
        );
        assert_eq!(toml("critical = false").unwrap(), None);
        assert_eq!(toml("").unwrap(), None);
        assert_eq!(toml("notes = \"hi\"").unwrap(), None);

        for (bad, want) in [
            ("critical = ", "not valid TOML"),
            ("critical = \"true\"", "must be a boolean"),
            ("critical = true\ndeadline = \"soon\"", "not an RFC 3339"),
            (
                "critical = true\ndeadline = 2026-04-01T02:00:00",
                "not an RFC 3339",
            ),
            ("critical = true\ndeadline = 5", "got a TOML integer"),
        ] {
            let e = toml(bad).unwrap_err();
            assert!(
                e.contains("release.toml") && e.contains(want),
                "{bad:?}: {e}"
            );
        }
        let e = critical_from(None, Some(b"critical = \xff")).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn release_toml_wins_over_notes() {
        let notes = Some("critical: true\ndeadline: 2030-01-01T00:00:00Z");
        assert_eq!(
            critical_from(notes, Some(b"critical = false")).unwrap(),
            None
        );
        assert_eq!(
            critical_from(notes, Some(b"version = \"1.0.0\"")).unwrap(),
            None,
            "a signed release.toml decides even when silent"
        );
        assert_eq!(
            critical_from(Some("all good"), Some(b"critical = true")).unwrap(),
            Some(Critical { deadline: None })
        );
        assert_eq!(
            critical_from(notes, Some(b"critical = true")).unwrap(),
            Some(Critical { deadline: None })
        );
        assert!(critical_from(notes, Some(b"critical = [")).is_err());
    }
}
