//! `[apps.<name>.trust]`: which keys may sign the app's releases.

use toml::Spanned;

use super::Checker;
use crate::config::TrustConfig;
use crate::config::raw::RawTrust;

/// Checks the keys, key files and revoked ids; unsigned releases only when
/// `require_signature = false` says so.
pub(super) fn check_trust(
    ck: &mut Checker<'_>,
    name: &str,
    raw: Option<Spanned<RawTrust>>,
) -> TrustConfig {
    let mut t = TrustConfig::default();
    let Some(raw) = raw else {
        ck.at(
            0..0,
            format!(
                "apps.{name} has no [apps.{name}.trust] table: releases must be signed by default; add keys = [\"RW...\"] (the public key from `switchyard keygen` or `minisign -G`), or set require_signature = false to accept unsigned releases"
            ),
        );
        return t;
    };
    let span = raw.span();
    let raw = raw.into_inner();
    for k in raw.keys {
        let key = k.get_ref().trim();
        // A minisign public key is 42 bytes, 56 base64 characters, "RW" first.
        let ok = key.len() == 56
            && key.starts_with("RW")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !ok {
            ck.at(
                k.span(),
                format!("apps.{name}.trust.keys: {key:?} is not a minisign public key (the 56-character line starting with RW in the .pub file)"),
            );
        } else {
            t.keys.push(key.to_string());
        }
    }
    for f in raw.key_files {
        if !f.get_ref().is_absolute() {
            ck.at(
                f.span(),
                format!(
                    "apps.{name}.trust.key_files: {} must be an absolute path",
                    f.get_ref().display()
                ),
            );
        } else {
            ck.file_mode(
                f.span(),
                &format!("apps.{name}.trust.key_files"),
                f.get_ref(),
                false,
            );
            t.key_files.push(f.into_inner());
        }
    }
    for r in raw.revoked_keys {
        let id = r.get_ref().trim();
        // `minisign` prints key ids without leading zeros: accept and pad.
        if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            ck.at(r.span(), format!("apps.{name}.trust.revoked_keys: {id:?} is not a key id (up to 16 hex digits, as `minisign` prints it)"));
        } else {
            t.revoked_keys
                .push(format!("{:0>16}", id.to_ascii_uppercase()));
        }
    }
    t.require_signature = raw.require_signature.unwrap_or(true);
    t.allow_legacy_signatures = raw.allow_legacy_signatures.unwrap_or(false);
    if t.require_signature && t.keys.is_empty() && t.key_files.is_empty() {
        ck.at(
            span,
            format!("apps.{name}.trust: require_signature is true but no keys are configured: add keys = [\"RW...\"] or key_files = [\"/etc/switchyard/keys/{name}.pub\"]"),
        );
    }
    t
}
