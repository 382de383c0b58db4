//! How much of an app's logs is kept under `.switchyard/`: hook log
//! folders and rotated audit files (`keep_hook_logs`, `audit_max_bytes`,
//! `audit_keep_files` in `[apps.<name>]`).

use std::ops::Range;

use toml::Spanned;

/// How much of the app's logs is kept under `.switchyard/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Deploys whose hook log folders (`logs/<deploy id>/`) are kept.
    pub keep_hook_logs: usize,
    /// `audit.jsonl` is rotated once it is larger than this.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.jsonl.1` ..).
    pub audit_keep_files: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_hook_logs: 20,
            audit_max_bytes: 16 << 20,
            audit_keep_files: 10,
        }
    }
}

impl Retention {
    /// The keys as configured, each at least 1 (the running deploy's logs
    /// and the live audit file are always kept); the problems found, with
    /// where they are.
    pub(super) fn check(
        name: &str,
        keys: [(&str, Option<Spanned<i64>>); 3],
    ) -> (Retention, Vec<(Range<usize>, String)>) {
        let mut r = Retention::default();
        let mut problems = Vec::new();
        for (key, value) in keys {
            let Some(v) = value else { continue };
            let n = *v.get_ref();
            if n < 1 {
                problems.push((
                    v.span(),
                    format!("apps.{name}.{key} must be at least 1, got {n}"),
                ));
                continue;
            }
            match key {
                "keep_hook_logs" => r.keep_hook_logs = n as usize,
                "audit_max_bytes" => r.audit_max_bytes = n as u64,
                _ => r.audit_keep_files = n as usize,
            }
        }
        (r, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_zero_is_refused() {
        let (r, p) = Retention::check(
            "web",
            [
                ("keep_hook_logs", None),
                ("audit_max_bytes", Some(Spanned::new(3..4, 300))),
                ("audit_keep_files", Some(Spanned::new(5..6, 0))),
            ],
        );
        assert_eq!(
            (r.keep_hook_logs, r.audit_max_bytes, r.audit_keep_files),
            (20, 300, 10)
        );
        assert_eq!(
            p,
            [(
                5..6,
                "apps.web.audit_keep_files must be at least 1, got 0".to_string()
            )]
        );
    }
}
