//! The configuration file's shape as serde reads it: every key, with its
//! span, before any check. `check` turns it into the validated types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::config::hooks;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) apps: BTreeMap<String, Spanned<RawApp>>,
    pub(super) agent: Option<Spanned<RawAgent>>,
    pub(super) notify: Option<Spanned<RawNotify>>,
    pub(super) console: Option<Spanned<RawConsole>>,
}

/// `[notify]`: notification channels shared by every app.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) email: Option<Spanned<RawEmail>>,
}

/// `[notify.email]`: the SMTP server, the sender and the default routing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    pub(super) server: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) security: Option<Spanned<String>>,
    pub(super) credentials_file: Option<Spanned<PathBuf>>,
    pub(super) from: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) to: Vec<Spanned<String>>,
    pub(super) events: Option<Vec<Spanned<String>>>,
    pub(super) ca_file: Option<Spanned<PathBuf>>,
}

/// `[apps.<name>.email]`: the app's own recipients and events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAppEmail {
    pub(super) to: Option<Vec<Spanned<String>>>,
    pub(super) events: Option<Vec<Spanned<String>>>,
}

/// `[console]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) users_file: Option<Spanned<PathBuf>>,
    pub(super) proxy_header: Option<Spanned<String>>,
    pub(super) proxy_addresses: Option<Vec<Spanned<String>>>,
    pub(super) operators: Option<Spanned<Vec<String>>>,
    pub(super) session_ttl: Option<Spanned<String>>,
}

/// `[agent]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) webhook_secret_file: Option<Spanned<PathBuf>>,
    pub(super) control_socket: Option<Spanned<PathBuf>>,
    pub(super) control_group: Option<String>,
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) host_id: Option<Spanned<String>>,
    pub(super) labels: Option<Vec<Spanned<String>>>,
}

/// `[apps.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    // Optional here so that a missing root or source is one located
    // problem among the others, not the end of reading the file.
    pub(super) root: Option<Spanned<PathBuf>>,
    #[serde(default = "default_keep")]
    pub(super) keep_releases: Spanned<i64>,
    pub(super) source: Option<Spanned<RawSource>>,
    #[serde(default)]
    pub(super) shared: RawShared,
    #[serde(default)]
    pub(super) unpack: RawUnpack,
    pub(super) trust: Option<Spanned<RawTrust>>,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    #[serde(default)]
    pub(super) health: RawHealth,
    pub(super) allow_major: Option<bool>,
    pub(super) min_free_bytes: Option<Spanned<i64>>,
    pub(super) keep_failed: Option<bool>,
    pub(super) restore_on_revert: Option<Spanned<String>>,
    pub(super) keep_backups: Option<Spanned<i64>>,
    pub(super) backup_shared: Option<bool>,
    pub(super) poll_interval: Option<Spanned<String>>,
    pub(super) dedup: Option<Spanned<String>>,
    pub(super) auto: Option<Spanned<String>>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) report_issues: Option<bool>,
    pub(super) notify_url: Option<Spanned<String>>,
    pub(super) notify_format: Option<Spanned<String>>,
    pub(super) notify_escalate: Option<Vec<Spanned<String>>>,
    pub(super) email: Option<Spanned<RawAppEmail>>,
    pub(super) owner: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) keep_hook_logs: Option<Spanned<i64>>,
    pub(super) audit_max_bytes: Option<Spanned<i64>>,
    pub(super) audit_keep_files: Option<Spanned<i64>>,
    pub(super) fleet: Option<Spanned<crate::config::fleet::RawFleet>>,
}

/// `[apps.<name>.hooks]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) warm: Option<Spanned<hooks::HookConfig>>,
    pub(super) backup: Option<Spanned<hooks::HookConfig>>,
    pub(super) migrate: Option<Spanned<hooks::HookConfig>>,
    pub(super) activate: Option<Spanned<hooks::HookConfig>>,
    pub(super) restore: Option<Spanned<hooks::HookConfig>>,
    pub(super) on_failure: Option<Spanned<hooks::HookConfig>>,
}

/// `[apps.<name>.health]`: each phase is checked by `health::HealthConfig::from_toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) staging: Option<Spanned<toml::Value>>,
    pub(super) live: Option<Spanned<toml::Value>>,
}

/// `[apps.<name>.trust]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    #[serde(default)]
    pub(super) keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) key_files: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) revoked_keys: Vec<Spanned<String>>,
    pub(super) require_signature: Option<bool>,
    pub(super) allow_legacy_signatures: Option<bool>,
}

/// `keep_releases` when not set, at no location.
fn default_keep() -> Spanned<i64> {
    Spanned::new(0..0, 5)
}

/// `[apps.<name>.source]`: the keys of every kind of source.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) dir: Option<Spanned<PathBuf>>,
    pub(super) github: Option<Spanned<String>>,
    pub(super) asset: Option<Spanned<String>>,
    pub(super) channel: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
    pub(super) api_url: Option<Spanned<String>>,
    pub(super) rate_limit_max_wait_secs: Option<Spanned<i64>>,
    // Known only so that a token written into the file is refused with a
    // located message that says where tokens go instead.
    pub(super) token: Option<Spanned<toml::Value>>,
}

/// `[apps.<name>.shared]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    #[serde(default)]
    pub(super) dirs: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) files: Vec<Spanned<PathBuf>>,
}

/// `[apps.<name>.unpack]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnpack {
    pub(super) max_bytes: Option<Spanned<i64>>,
    pub(super) max_entries: Option<Spanned<i64>>,
    pub(super) max_compression_ratio: Option<Spanned<i64>>,
    pub(super) strip_top_dir: Option<bool>,
}
