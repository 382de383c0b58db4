//! Minisign signatures for release artifacts: who may sign a release, and
//! checking that they did.
//!
//! The format is the one the `minisign` CLI reads and writes, so releases can
//! be signed with either `minisign -S` or [`sign_file`], and our signatures
//! checked with `minisign -V`.
//!
//! # Policy
//!
//! - **Key id first.** [`begin`] parses the `.minisig` and checks its key id
//!   before any content is read: a release signed by a key we would refuse is
//!   refused without downloading or hashing a byte of it.
//! - **Revocation wins.** A revoked key id is refused even if the same key is
//!   also listed as trusted, so revoking is one line in the config and needs
//!   no matching removal elsewhere.
//! - **Legacy signatures are refused by default.** Legacy `Ed` signatures
//!   (`minisign -S -l`) are refused unless `allow_legacy_signatures = true`.
//!   When allowed they are verified while the file streams too: legacy
//!   Ed25519 signs the whole message, and `ed25519-compact`'s incremental
//!   verification hashes it chunk by chunk, so no copy is kept.
//! - **The trusted comment is checked up front too.** The global signature
//!   (over the signature and its trusted comment) is verified in [`begin`],
//!   so an edited trusted comment is reported as such, and not confused with
//!   corrupt content.
//!
//! Verification uses `minisign-verify` (streaming, prehashed `ED`); the
//! trusted-comment check on its own uses `ed25519-compact`, because
//! `minisign-verify` reports both failures with a single error and the
//! operator's remedy differs. Key generation and signing use `minisign`;
//! they live in `signing.rs` and are re-exported here.

use std::fmt;
use std::path::PathBuf;

use ct_codecs::{Base64, Decoder as _};

use crate::fs::{self as sfs, FsError};
use crate::verify::format::{
    ALG_LEGACY, ALG_PREHASHED, GLOBAL_SIG_BYTES, PUBLIC_KEY_BYTES, SIG_LINE_BYTES, TRUSTED_PREFIX,
    UNTRUSTED_PREFIX,
};

pub(crate) use crate::verify::format::{KeyId, KeyIdError};
pub(crate) use crate::verify::signing::{
    SigningError, key_password_from_env_or_tty, keygen, sign_file,
};

/// Where operators configure the app's trust, `[apps.web.trust]`: named in
/// error messages so they say what to edit.
fn trust_table(app: &str) -> String {
    format!("[apps.{app}.trust]")
}

/// Everything that can go wrong while loading keys, checking or making signatures.
///
/// Each message names the file concerned, the key ids involved and what the
/// operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The `.minisig` is truncated, garbage or not in the minisign format.
    #[error(
        "{file}: not a valid minisign signature ({reason}); expected the 4-line file written by \
         `minisign -S` or `switchyard sign`: re-download it, or re-sign the release"
    )]
    Malformed {
        /// The signature file's name.
        file: String,
        /// What is wrong with it.
        reason: String,
        /// The verifier's own error, when it is the one that refused.
        #[source]
        source: Option<minisign_verify::Error>,
    },

    /// The signature was made by a key that is not configured as trusted.
    #[error(
        "{file}: signed by key {found}, which is not trusted (trusted keys: {}): if you trust \
         that key, add its public key to {table}.keys; otherwise re-sign the release with \
         a trusted key",
        list(.trusted)
    )]
    UntrustedKey {
        /// The app's trust table, `[apps.web.trust]`.
        table: String,
        /// The signature file's name.
        file: String,
        /// Key id of the signature, 16 hex digits.
        found: String,
        /// Key ids that would have been accepted.
        trusted: Vec<String>,
    },

    /// The signature was made by a revoked key.
    #[error(
        "{file}: signed by key {found}, which is revoked in {table}.revoked_keys (trusted keys: \
         {}): the release was signed by a revoked key: re-sign it with a current key",
        list(.trusted)
    )]
    RevokedKey {
        /// The app's trust table, `[apps.web.trust]`.
        table: String,
        /// The signature file's name.
        file: String,
        /// Key id of the signature, 16 hex digits.
        found: String,
        /// Key ids that would have been accepted.
        trusted: Vec<String>,
    },

    /// A legacy (`Ed`, `minisign -S -l`) signature while legacy signatures are not allowed.
    #[error(
        "{file}: legacy minisign signature (algorithm Ed, as made by `minisign -S -l`) by key \
         {found}, refused: re-sign the release without -l, or set allow_legacy_signatures = true \
         in {table}"
    )]
    LegacyRefused {
        /// The app's trust table, `[apps.web.trust]`.
        table: String,
        /// The signature file's name.
        file: String,
        /// Key id of the signature, 16 hex digits.
        found: String,
    },

    /// The signed content does not match the signature.
    #[error(
        "{file}: the content does not match the signature by trusted key {found}: the file is \
         corrupt or was tampered with: re-download it, and do not deploy it if this persists"
    )]
    BadSignature {
        /// The signature file's name.
        file: String,
        /// Key id of the signature, 16 hex digits.
        found: String,
    },

    /// The global signature does not cover the trusted comment as written.
    #[error(
        "{file}: the trusted comment does not verify with trusted key {found} (global signature \
         mismatch): the signature file was edited after signing: re-download it, or re-sign the \
         release"
    )]
    BadGlobalSignature {
        /// The signature file's name.
        file: String,
        /// Key id of the signature, 16 hex digits.
        found: String,
    },

    /// A signature is required (or one is being checked) but no key is trusted.
    #[error(
        "{context}: a signature is required but no trusted (unrevoked) keys are configured: add \
         a minisign public key to {table}.keys or .key_files, or set require_signature = \
         false"
    )]
    NoKeys {
        /// The app's trust table, `[apps.web.trust]`.
        table: String,
        /// The signature file's name, or "trust policy" when the policy is built.
        context: String,
    },

    /// A configured public key string or file is not a minisign public key.
    #[error(
        "bad public key {origin}: {reason}; expected a minisign public key (56 base64 characters \
         starting with \"RW\", as printed by `minisign -G` or `switchyard keygen`): fix or \
         remove it"
    )]
    BadPublicKey {
        /// Which config entry or file it came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
        /// The verifier's own error, when it is the one that refused.
        #[source]
        source: Option<minisign_verify::Error>,
    },

    /// A key id (e.g. in the revoked list) is not 16 hex digits.
    #[error(
        "bad key id {value:?} in {context}: {reason}; expected 16 hex digits as minisign prints \
         them (e.g. 9D5E2C43E4061904)"
    )]
    BadKeyId {
        /// The text given.
        value: String,
        /// Where it came from.
        context: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A file-system error; it names the path and the operation.
    #[error(transparent)]
    Io(#[from] FsError),
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// One trusted public key, decoded once for both verifiers.
#[derive(Clone, Debug)]
struct TrustedKey {
    id: KeyId,
    raw: [u8; 32],
    verifier: minisign_verify::PublicKey,
}

/// Which keys may sign releases, which are revoked, and whether unsigned or
/// legacy-signed releases are acceptable.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    /// The app's trust table, named in errors.
    table: String,
    keys: Vec<TrustedKey>,
    revoked: Vec<KeyId>,
    require_signature: bool,
    allow_legacy: bool,
}

impl TrustPolicy {
    /// Builds a policy from configuration.
    ///
    /// `keys` are minisign public key strings (the `RW...` base64 line; a
    /// whole pasted `.pub` file is accepted too); `key_files` are paths of
    /// minisign `.pub` files; `revoked` are key ids as 16 hex digits.
    /// Fails with [`TrustError::NoKeys`] when a signature is required but no
    /// unrevoked key is configured, so a bad config is caught at load time.
    pub fn new(
        app: &str,
        keys: &[String],
        key_files: &[PathBuf],
        revoked: &[String],
        require_signature: bool,
        allow_legacy: bool,
    ) -> Result<Self, TrustError> {
        let table = trust_table(app);
        let mut policy = TrustPolicy {
            table: table.clone(),
            keys: Vec::new(),
            revoked: Vec::new(),
            require_signature,
            allow_legacy,
        };
        for (i, k) in keys.iter().enumerate() {
            let origin = || format!("{table}.keys entry {} ({:?})", i + 1, shorten(k));
            policy.add_key(parse_public_key(k, &origin)?, &origin)?;
        }
        for path in key_files {
            let origin = || format!("file {} (from {table}.key_files)", path.display());
            let bytes = sfs::read(path)?;
            let text = std::str::from_utf8(&bytes).map_err(|_| TrustError::BadPublicKey {
                origin: origin(),
                reason: "not UTF-8 text".to_owned(),
                source: None,
            })?;
            policy.add_key(parse_public_key(text, &origin)?, &origin)?;
        }
        for r in revoked {
            let id: KeyId = r.parse().map_err(|e: KeyIdError| TrustError::BadKeyId {
                value: e.value,
                context: format!("{table}.revoked_keys"),
                reason: e.reason,
            })?;
            if !policy.revoked.contains(&id) {
                policy.revoked.push(id);
            }
        }
        if require_signature && policy.trusted_ids().is_empty() {
            return Err(TrustError::NoKeys {
                table,
                context: "trust policy".to_owned(),
            });
        }
        Ok(policy)
    }

    fn add_key(&mut self, key: TrustedKey, origin: &dyn Fn() -> String) -> Result<(), TrustError> {
        match self.keys.iter().find(|k| k.id == key.id) {
            // The same key listed twice (say, inline and as a file) is harmless.
            Some(k) if k.raw == key.raw => Ok(()),
            // Two keys with one id would make "which key signed this" ambiguous.
            Some(_) => Err(TrustError::BadPublicKey {
                source: None,
                origin: origin(),
                reason: format!(
                    "key id {} is already configured with a different key",
                    key.id
                ),
            }),
            None => {
                self.keys.push(key);
                Ok(())
            }
        }
    }

    /// Whether releases without a signature must be refused.
    pub fn require_signature(&self) -> bool {
        self.require_signature
    }

    /// Whether legacy (`Ed`, `minisign -S -l`) signatures are accepted.
    pub fn allow_legacy(&self) -> bool {
        self.allow_legacy
    }

    /// Ids of the keys that can sign releases: the configured keys minus the revoked ones.
    pub fn trusted_ids(&self) -> Vec<KeyId> {
        self.keys
            .iter()
            .map(|k| k.id)
            .filter(|id| !self.revoked.contains(id))
            .collect()
    }

    fn trusted_strings(&self) -> Vec<String> {
        self.trusted_ids().iter().map(KeyId::to_string).collect()
    }
}

/// At most 60 characters of config text for an error message, so a pasted
/// blob cannot flood the log.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Picks the base64 line out of a key string or `.pub` file: the line after
/// an `untrusted comment:` line, or the only non-empty line.
fn key_line(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next()?;
    if first.starts_with("untrusted comment:") {
        lines.next()
    } else if lines.next().is_none() {
        Some(first)
    } else {
        None
    }
}

fn parse_public_key(text: &str, origin: &dyn Fn() -> String) -> Result<TrustedKey, TrustError> {
    let bad = |reason: String| TrustError::BadPublicKey {
        origin: origin(),
        reason,
        source: None,
    };
    let line = key_line(text).ok_or_else(|| {
        bad("expected one base64 line, or an \"untrusted comment:\" line followed by one".into())
    })?;
    let bytes = Base64::decode_to_vec(line, None).map_err(|_| bad("not valid base64".into()))?;
    if bytes.len() != PUBLIC_KEY_BYTES {
        return Err(bad(format!(
            "decodes to {} bytes, a minisign public key has {PUBLIC_KEY_BYTES}",
            bytes.len()
        )));
    }
    if bytes.get(..2) != Some(&ALG_LEGACY[..]) {
        return Err(bad(
            "not an Ed25519 minisign key (it does not start with \"RW\")".into(),
        ));
    }
    let id = bytes
        .get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(KeyId)
        .ok_or_else(|| bad("too short".into()))?;
    let raw = bytes
        .get(10..42)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| bad("too short".into()))?;
    let verifier =
        minisign_verify::PublicKey::from_base64(line).map_err(|e| TrustError::BadPublicKey {
            origin: origin(),
            reason: "the minisign verifier refuses it".to_owned(),
            source: Some(e),
        })?;
    Ok(TrustedKey { id, raw, verifier })
}

/// The fields of a `.minisig`, parsed without trusting any of them.
struct Envelope {
    legacy: bool,
    key_id: KeyId,
    signature: [u8; 64],
    trusted_comment: String,
    global: [u8; GLOBAL_SIG_BYTES],
}

impl Envelope {
    /// Never panics: every length is checked before use.
    fn parse(text: &[u8]) -> Result<Envelope, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_owned())?;
        // `lines()` as minisign-verify splits, so both see the same four lines.
        let mut lines = text.lines();
        let untrusted = lines.next().ok_or("empty file")?;
        if !untrusted.starts_with(UNTRUSTED_PREFIX) {
            return Err(format!("line 1 does not start with {UNTRUSTED_PREFIX:?}"));
        }
        let sig_line = lines.next().ok_or("truncated after line 1")?;
        let sig = Base64::decode_to_vec(sig_line, None)
            .map_err(|_| "line 2 is not valid base64".to_owned())?;
        if sig.len() != SIG_LINE_BYTES {
            return Err(format!(
                "line 2 decodes to {} bytes, expected {SIG_LINE_BYTES}",
                sig.len()
            ));
        }
        let legacy = match sig.get(..2) {
            Some(a) if a == ALG_PREHASHED => false,
            Some(a) if a == ALG_LEGACY => true,
            other => {
                return Err(format!(
                    "unknown signature algorithm {:?}",
                    String::from_utf8_lossy(other.unwrap_or_default())
                ));
            }
        };
        let key_id = sig
            .get(2..10)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(KeyId)
            .ok_or("line 2 too short")?;
        let signature = sig
            .get(10..SIG_LINE_BYTES)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or("line 2 too short")?;
        let tc_line = lines.next().ok_or("truncated after line 2")?;
        let trusted_comment = tc_line
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| format!("line 3 does not start with {TRUSTED_PREFIX:?}"))?
            .to_owned();
        let global_line = lines.next().ok_or("truncated after line 3")?;
        let global = Base64::decode_to_vec(global_line, None)
            .map_err(|_| "line 4 is not valid base64".to_owned())?;
        let global = <[u8; GLOBAL_SIG_BYTES]>::try_from(global.as_slice()).map_err(|_| {
            format!(
                "line 4 decodes to {} bytes, expected {GLOBAL_SIG_BYTES}",
                global.len()
            )
        })?;
        Ok(Envelope {
            legacy,
            key_id,
            signature,
            trusted_comment,
            global,
        })
    }

    /// Whether the global signature covers this signature and trusted comment.
    fn global_ok(&self, key: &TrustedKey) -> bool {
        let (Ok(pk), Ok(sig)) = (
            ed25519_compact::PublicKey::from_slice(&key.raw),
            ed25519_compact::Signature::from_slice(&self.global),
        ) else {
            return false;
        };
        let mut msg = Vec::with_capacity(self.signature.len() + self.trusted_comment.len());
        msg.extend_from_slice(&self.signature);
        msg.extend_from_slice(self.trusted_comment.as_bytes());
        pk.verify(&msg, &sig).is_ok()
    }
}

/// A verified signature's facts, recorded in history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Verified {
    /// Key id that made the signature, 16 uppercase hex digits.
    pub key_id: String,
    /// The trusted comment (signed, so it can be relied upon).
    pub trusted_comment: String,
    /// Whether it was a legacy (`Ed`) signature.
    pub legacy: bool,
}

/// The key and signature a streaming check borrows from.
struct KeyAndSig {
    key: minisign_verify::PublicKey,
    sig: minisign_verify::Signature,
}

type StreamVerifier<'a> = minisign_verify::StreamVerifier<'a>;

// minisign-verify's streaming verifier borrows the key and signature; owning
// them together lets a check outlive `begin` and move between threads.
self_cell::self_cell!(
    struct Streaming {
        owner: KeyAndSig,
        #[covariant]
        dependent: StreamVerifier,
    }
);

/// A legacy check: Ed25519 over the whole file, absorbed chunk by chunk.
struct LegacyState {
    state: ed25519_compact::VerifyingState,
    owner: KeyAndSig,
}

enum Pending {
    Prehashed(Streaming),
    Legacy(Box<LegacyState>),
}

/// A signature check in progress: the key id, algorithm and trusted comment
/// are already accepted; the content is still to be checked.
pub struct SigCheck {
    file: String,
    key_id: KeyId,
    pending: Pending,
}

impl fmt::Debug for SigCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigCheck")
            .field("file", &self.file)
            .field("key_id", &self.key_id)
            .field("legacy", &self.is_legacy())
            .finish_non_exhaustive()
    }
}

/// Begins checking one signature file (`file_name` is its name, as shown to
/// operators, e.g. `myapp-1.2.0.tar.gz.minisig`).
///
/// Parses the `.minisig` and checks, in this order and before any content is
/// read: the key id is not revoked, the key id is trusted, the algorithm is
/// allowed (legacy only with `allow_legacy_signatures`), and the trusted
/// comment is covered by the global signature.
pub fn begin(
    policy: &TrustPolicy,
    sig_text: &[u8],
    file_name: &str,
) -> Result<SigCheck, TrustError> {
    let file = file_name.to_owned();
    let env = Envelope::parse(sig_text).map_err(|reason| TrustError::Malformed {
        file: file.clone(),
        reason,
        source: None,
    })?;
    let found = env.key_id.to_string();
    if policy.revoked.contains(&env.key_id) {
        return Err(TrustError::RevokedKey {
            table: policy.table.clone(),
            file,
            found,
            trusted: policy.trusted_strings(),
        });
    }
    let Some(key) = policy.keys.iter().find(|k| k.id == env.key_id) else {
        let trusted = policy.trusted_strings();
        if trusted.is_empty() {
            return Err(TrustError::NoKeys {
                table: policy.table.clone(),
                context: file,
            });
        }
        return Err(TrustError::UntrustedKey {
            table: policy.table.clone(),
            file,
            found,
            trusted,
        });
    };
    if env.legacy && !policy.allow_legacy {
        return Err(TrustError::LegacyRefused {
            table: policy.table.clone(),
            file,
            found,
        });
    }
    if !env.global_ok(key) {
        return Err(TrustError::BadGlobalSignature { file, found });
    }
    // Envelope::parse accepted the text, so this only fails if the two
    // parsers disagree; minisign-verify's view is the one that gets verified.
    let text = std::str::from_utf8(sig_text).unwrap_or_default();
    let sig = minisign_verify::Signature::decode(text).map_err(|e| TrustError::Malformed {
        file: file.clone(),
        reason: "the minisign verifier cannot decode it".to_owned(),
        source: Some(e),
    })?;
    let owner = KeyAndSig {
        key: key.verifier.clone(),
        sig,
    };
    let pending = if env.legacy {
        // ed25519-compact's errors are not `std::error::Error` without its
        // "std" feature, so their text is the reason.
        let malformed = |e: ed25519_compact::Error| TrustError::Malformed {
            file: file.clone(),
            reason: e.to_string(),
            source: None,
        };
        let pk = ed25519_compact::PublicKey::from_slice(&key.raw).map_err(malformed)?;
        let sig = ed25519_compact::Signature::from_slice(&env.signature).map_err(malformed)?;
        let state = pk.verify_incremental(&sig).map_err(malformed)?;
        Pending::Legacy(Box::new(LegacyState { state, owner }))
    } else {
        let cell = Streaming::try_new(owner, |o| o.key.verify_stream(&o.sig)).map_err(|e| {
            TrustError::Malformed {
                file: file.clone(),
                reason: "the minisign verifier refuses it".to_owned(),
                source: Some(e),
            }
        })?;
        Pending::Prehashed(cell)
    };
    Ok(SigCheck {
        file,
        key_id: env.key_id,
        pending,
    })
}

impl SigCheck {
    /// Whether this is a legacy (`Ed`) signature.
    pub fn is_legacy(&self) -> bool {
        matches!(self.pending, Pending::Legacy(_))
    }

    /// The key id that made the signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Feeds the signed file's bytes as they stream.
    pub fn update(&mut self, chunk: &[u8]) {
        match &mut self.pending {
            Pending::Prehashed(cell) => cell.with_dependent_mut(|_, v| v.update(chunk)),
            Pending::Legacy(l) => l.state.absorb(chunk),
        }
    }

    /// Finishes the check on the bytes fed to [`SigCheck::update`] (the
    /// trusted comment was already checked by [`begin`]).
    pub fn finish(self) -> Result<Verified, TrustError> {
        match self.pending {
            Pending::Prehashed(mut cell) => {
                let res = cell.with_dependent_mut(|_, v| v.finalize());
                let owner = cell.into_owner();
                conclude(&self.file, self.key_id, &owner, false, res)
            }
            Pending::Legacy(l) => {
                let res = l
                    .state
                    .verify()
                    .map_err(|_| minisign_verify::Error::InvalidSignature);
                conclude(&self.file, self.key_id, &l.owner, true, res)
            }
        }
    }

    fn finish_with_bytes(mut self, data: &[u8]) -> Result<Verified, TrustError> {
        self.update(data);
        self.finish()
    }
}

fn conclude(
    file: &str,
    key_id: KeyId,
    owner: &KeyAndSig,
    legacy: bool,
    res: Result<(), minisign_verify::Error>,
) -> Result<Verified, TrustError> {
    match res {
        Ok(()) => Ok(Verified {
            key_id: key_id.to_string(),
            trusted_comment: owner.sig.trusted_comment().to_owned(),
            legacy,
        }),
        // The global signature passed in `begin`, so a failure here is the content.
        Err(minisign_verify::Error::InvalidSignature) => Err(TrustError::BadSignature {
            file: file.to_owned(),
            found: key_id.to_string(),
        }),
        Err(e) => Err(TrustError::Malformed {
            file: file.to_owned(),
            reason: "the minisign verifier refuses it".to_owned(),
            source: Some(e),
        }),
    }
}

/// Checks a signature over a small in-memory file such as `SHA256SUMS`
/// (prehashed or, when allowed, legacy).
pub fn verify_bytes(
    policy: &TrustPolicy,
    sig_text: &[u8],
    data: &[u8],
    file_name: &str,
) -> Result<Verified, TrustError> {
    begin(policy, sig_text, file_name)?.finish_with_bytes(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::signing::{PASSWORD_ENV, PUBLIC_KEY_FILE};
    use std::path::Path;
    use std::process::{Command, Output, Stdio};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Whether the `minisign` CLI is here; a missing one fails under CI.
    fn have_cli() -> bool {
        match Command::new("minisign")
            .arg("-v")
            .stdin(Stdio::null())
            .output()
        {
            Ok(_) => true,
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("minisign CLI not found under CI ({e}): apt-get install minisign");
                }
                eprintln!(
                    "SKIP: minisign CLI not found ({e}); install the Debian package minisign"
                );
                false
            }
        }
    }

    fn cli(args: &[&str], dir: &Path) -> Output {
        Command::new("minisign")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("run minisign")
    }

    fn ok(out: &Output) {
        assert!(
            out.status.success(),
            "minisign failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Distinct, non-repeating-looking content, bigger than one read chunk.
    fn payload() -> Vec<u8> {
        (0..200_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn pub_line(pub_path: &Path) -> String {
        let text = sfs::read_to_string(pub_path).unwrap();
        text.lines().nth(1).unwrap().to_owned()
    }

    fn stream(policy: &TrustPolicy, sig: &[u8], data: &[u8]) -> Result<Verified, TrustError> {
        let mut check = begin(policy, sig, "app.tar.gz.minisig")?;
        for chunk in data.chunks(4097) {
            check.update(chunk);
        }
        check.finish()
    }

    fn keys_policy(pub_paths: &[&PathBuf], revoked: &[&str], legacy: bool) -> TrustPolicy {
        let paths: Vec<PathBuf> = pub_paths.iter().map(|p| p.to_path_buf()).collect();
        TrustPolicy::new("web", &[], &paths, &s(revoked), true, legacy).unwrap()
    }

    #[test]
    fn key_id_matches_minisign_notation() {
        // Public key and id printed together in minisign's own documentation.
        let k = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".to_owned();
        let p = TrustPolicy::new("web", &[k], &[], &[], true, false).unwrap();
        let id = p.trusted_ids()[0];
        assert_eq!(id.to_string(), "E7620F1842B4E81F");
        assert_eq!("e7620f1842b4e81f".parse::<KeyId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"E7620F1842B4E81F\"");
        let back: KeyId = serde_json::from_str("\"E7620F1842B4E81F\"").unwrap();
        assert_eq!(back, id);
        // Without leading zeros, as the minisign CLI prints ids.
        assert_eq!(
            "D99DC8C0AA0AE69".parse::<KeyId>().unwrap().to_string(),
            "0D99DC8C0AA0AE69"
        );
        for bad in [
            "",
            "+7620F1842B4E81F",
            "G7620F1842B4E81F",
            "E7620F1842B4E81F0",
        ] {
            assert!(
                matches!(bad.parse::<KeyId>(), Err(KeyIdError { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn round_trip_keygen_sign_verify() {
        let d = tempfile::tempdir().unwrap();
        let (pubp, keyp, id) = keygen(d.path(), None).unwrap();
        assert_eq!(pubp, d.path().join(PUBLIC_KEY_FILE));
        let mode = sfs::metadata(&keyp).unwrap().unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert!(matches!(
            keygen(d.path(), None),
            Err(SigningError::Exists { .. })
        ));

        let data = payload();
        let f = d.path().join("app.tar.gz");
        sfs::write_atomic(&f, &data).unwrap();
        let tc = "repo=o/r tag=v1.2.0 file=app.tar.gz";
        let sig_path = sign_file(&keyp, None, &f, Some(tc)).unwrap();
        assert_eq!(sig_path, d.path().join("app.tar.gz.minisig"));
        let sig = sfs::read(&sig_path).unwrap();

        for policy in [
            keys_policy(&[&pubp], &[], false),
            TrustPolicy::new("web", &[pub_line(&pubp)], &[], &[], true, false).unwrap(),
        ] {
            assert_eq!(policy.trusted_ids(), vec![id]);
            let want = Verified {
                key_id: id.to_string(),
                trusted_comment: tc.to_owned(),
                legacy: false,
            };
            assert_eq!(stream(&policy, &sig, &data).unwrap(), want);
            assert_eq!(
                verify_bytes(&policy, &sig, &data, "x.minisig").unwrap(),
                want
            );
            let check = begin(&policy, &sig, "x.minisig").unwrap();
            assert!(!check.is_legacy());
            let _ = &f;
        }
    }

    #[test]
    fn sig_check_is_send() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<SigCheck>();
        send_sync::<TrustPolicy>();
    }

    #[test]
    fn cli_signatures_verify_here() {
        if !have_cli() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        ok(&cli(&["-G", "-W", "-p", "cli.pub", "-s", "cli.key"], dir));
        let data = payload();
        sfs::write_atomic(&dir.join("app.tar.gz"), &data).unwrap();
        ok(&cli(&["-S", "-s", "cli.key", "-m", "app.tar.gz"], dir));
        ok(&cli(
            &[
                "-S",
                "-l",
                "-s",
                "cli.key",
                "-m",
                "app.tar.gz",
                "-x",
                "legacy.minisig",
            ],
            dir,
        ));
        let pubp = dir.join("cli.pub");
        let cli_id = sfs::read_to_string(&pubp)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();

        let strict = keys_policy(&[&pubp], &[], false);
        // minisign prints the id without leading zeros.
        let cli_id = format!("{cli_id:0>16}");
        assert_eq!(strict.trusted_ids()[0].to_string(), cli_id);
        assert_eq!(cli_id.parse::<KeyId>().unwrap().to_string(), cli_id);
        let sig = sfs::read(&dir.join("app.tar.gz.minisig")).unwrap();
        let v = stream(&strict, &sig, &data).unwrap();
        assert_eq!(v.key_id, cli_id);
        assert!(v.trusted_comment.starts_with("timestamp:"), "{v:?}");
        assert!(!v.legacy);

        let legacy_sig = sfs::read(&dir.join("legacy.minisig")).unwrap();
        let e = begin(&strict, &legacy_sig, "legacy.minisig").unwrap_err();
        assert!(matches!(e, TrustError::LegacyRefused { .. }), "{e}");
        assert!(e.to_string().contains("allow_legacy_signatures"), "{e}");
        let e = verify_bytes(&strict, &legacy_sig, &data, "legacy.minisig").unwrap_err();
        assert!(matches!(e, TrustError::LegacyRefused { .. }), "{e}");

        let lenient = TrustPolicy::new("web", &[pub_line(&pubp)], &[], &[], true, true).unwrap();
        // Streamed in uneven chunks, as a download arrives.
        let mut check = begin(&lenient, &legacy_sig, "legacy.minisig").unwrap();
        assert!(check.is_legacy());
        for chunk in data.chunks(777) {
            check.update(chunk);
        }
        let v = check.finish().unwrap();
        assert!(v.legacy);
        assert_eq!(v.key_id, cli_id);
        assert!(
            verify_bytes(&lenient, &legacy_sig, &data, "legacy.minisig")
                .unwrap()
                .legacy
        );
        let mut flipped = data.clone();
        flipped[1234] ^= 0x01;
        let e = verify_bytes(&lenient, &legacy_sig, &flipped, "legacy.minisig").unwrap_err();
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
        // Prehashed signatures work the same under a lenient policy.
        assert!(!stream(&lenient, &sig, &data).unwrap().legacy);
    }

    #[test]
    fn our_signatures_verify_with_cli() {
        if !have_cli() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let (pubp, keyp, _) = keygen(dir, None).unwrap();
        sfs::write_atomic(&dir.join("app.tar.gz"), &payload()).unwrap();
        let sig_path = sign_file(&keyp, None, &dir.join("app.tar.gz"), None).unwrap();
        let sig = sfs::read_to_string(&sig_path).unwrap();
        let tc = sig.lines().nth(2).unwrap();
        assert!(tc.starts_with("trusted comment: timestamp:"), "{tc}");
        assert!(tc.ends_with("\tfile:app.tar.gz\thashed"), "{tc}");

        let p = pubp.to_str().unwrap();
        ok(&cli(&["-Vm", "app.tar.gz", "-p", p], dir));
        ok(&cli(
            &["-V", "-H", "-m", "app.tar.gz", "-P", &pub_line(&pubp)],
            dir,
        ));

        // Our unencrypted secret key works with the CLI too.
        sfs::write_atomic(&dir.join("other.txt"), b"other").unwrap();
        let out = cli(
            &["-S", "-W", "-s", keyp.to_str().unwrap(), "-m", "other.txt"],
            dir,
        );
        ok(&out);
        let policy = keys_policy(&[&pubp], &[], false);
        let sig = sfs::read(&dir.join("other.txt.minisig")).unwrap();
        verify_bytes(&policy, &sig, b"other", "other.txt.minisig").unwrap();

        // Flipped content is refused by the CLI as well.
        sfs::write_atomic(&dir.join("app.tar.gz"), b"tampered").unwrap();
        let out = cli(&["-Vm", "app.tar.gz", "-p", p], dir);
        assert!(!out.status.success());
    }

    #[test]
    fn encrypted_secret_key() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let (pubp, keyp, id) = keygen(dir, Some("correct horse".to_owned())).unwrap();
        let f = dir.join("SHA256SUMS");
        sfs::write_atomic(&f, b"abc  app.tar.gz\n").unwrap();

        let e = sign_file(&keyp, None, &f, None).unwrap_err();
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
        let e = sign_file(&keyp, Some("wrong".into()), &f, None).unwrap_err();
        assert!(matches!(e, SigningError::SecretKey { .. }), "{e}");
        assert!(e.to_string().contains("switchyard.key"), "{e}");
        let e = sign_file(&pubp, None, &f, None).unwrap_err();
        assert!(e.to_string().contains("this is a public key"), "{e}");

        let sig_path = sign_file(&keyp, Some("correct horse".into()), &f, Some("tag=v1")).unwrap();
        let policy = keys_policy(&[&pubp], &[], false);
        let sig = sfs::read(&sig_path).unwrap();
        let v = verify_bytes(&policy, &sig, b"abc  app.tar.gz\n", "SHA256SUMS.minisig").unwrap();
        assert_eq!(v.key_id, id.to_string());
        assert_eq!(v.trusted_comment, "tag=v1");

        if have_cli() {
            ok(&cli(
                &["-Vm", "SHA256SUMS", "-p", pubp.to_str().unwrap()],
                dir,
            ));
        }
    }

    /// A signed file plus keys A (signer) and B (another key).
    struct Fixture {
        _d: tempfile::TempDir,
        a_pub: PathBuf,
        a_id: KeyId,
        b_pub: PathBuf,
        b_id: KeyId,
        data: Vec<u8>,
        sig: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        sfs::create_dir(&a, 0o700).unwrap();
        sfs::create_dir(&b, 0o700).unwrap();
        let (a_pub, a_key, a_id) = keygen(&a, None).unwrap();
        let (b_pub, _, b_id) = keygen(&b, None).unwrap();
        let data = payload();
        let f = d.path().join("app.tar.gz");
        sfs::write_atomic(&f, &data).unwrap();
        let sig = sfs::read(&sign_file(&a_key, None, &f, Some("tag=v1.2.0")).unwrap()).unwrap();
        Fixture {
            _d: d,
            a_pub,
            a_id,
            b_pub,
            b_id,
            data,
            sig,
        }
    }

    #[test]
    fn refusals() {
        let fx = fixture();
        let a_hex = fx.a_id.to_string();
        let b_hex = fx.b_id.to_string();

        // One flipped byte of content.
        let policy = keys_policy(&[&fx.a_pub], &[], false);
        let mut bad = fx.data.clone();
        bad[100_000] ^= 0x80;
        let e = stream(&policy, &fx.sig, &bad).unwrap_err();
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("app.tar.gz.minisig") && msg.contains(&a_hex),
            "{msg}"
        );
        let e = verify_bytes(&policy, &fx.sig, &bad, "app.tar.gz.minisig").unwrap_err();
        assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");

        // Signed by a key that is not trusted: both ids are named.
        let other = keys_policy(&[&fx.b_pub], &[], false);
        let e = begin(&other, &fx.sig, "app.tar.gz.minisig").unwrap_err();
        assert!(matches!(e, TrustError::UntrustedKey { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&a_hex) && msg.contains(&b_hex), "{msg}");
        assert!(
            msg.contains("app.tar.gz.minisig") && msg.contains(".keys"),
            "{msg}"
        );

        // Revoked, even though also listed as trusted (lowercase id on purpose).
        let revoked = keys_policy(&[&fx.a_pub, &fx.b_pub], &[&a_hex.to_lowercase()], false);
        assert_eq!(revoked.trusted_ids(), vec![fx.b_id]);
        let e = begin(&revoked, &fx.sig, "app.tar.gz.minisig").unwrap_err();
        assert!(matches!(e, TrustError::RevokedKey { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("revoked") && msg.contains("re-sign") && msg.contains(&a_hex),
            "{msg}"
        );

        // Edited trusted comment: refused before any content is read.
        let text = String::from_utf8(fx.sig.clone()).unwrap();
        let edited = text.replace("trusted comment: tag=v1.2.0", "trusted comment: tag=v9.9.9");
        assert_ne!(edited, text);
        let e = begin(&policy, edited.as_bytes(), "app.tar.gz.minisig").unwrap_err();
        assert!(matches!(e, TrustError::BadGlobalSignature { .. }), "{e}");
        assert!(e.to_string().contains(&a_hex), "{e}");

        // No keys configured while required; and a policy without keys checks nothing.
        let e = TrustPolicy::new("web", &[], &[], &[], true, false).unwrap_err();
        assert!(matches!(e, TrustError::NoKeys { .. }), "{e}");
        let e = TrustPolicy::new(
            "web",
            &[],
            std::slice::from_ref(&fx.a_pub),
            std::slice::from_ref(&a_hex),
            true,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, TrustError::NoKeys { .. }), "{e}");
        let empty = TrustPolicy::new("web", &[], &[], &[], false, false).unwrap();
        assert!(!empty.require_signature());
        let e = begin(&empty, &fx.sig, "app.tar.gz.minisig").unwrap_err();
        assert!(matches!(e, TrustError::NoKeys { .. }), "{e}");
        assert!(e.to_string().contains("app.tar.gz.minisig"), "{e}");
    }

    #[test]
    fn truncated_and_garbage_signatures_are_malformed() {
        let fx = fixture();
        let policy = keys_policy(&[&fx.a_pub], &[], false);
        let full = String::from_utf8(fx.sig.clone()).unwrap();
        for n in 0..fx.sig.len() {
            let cut = &fx.sig[..n];
            if full[..n].trim_end() == full.trim_end() {
                continue;
            }
            match begin(&policy, cut, "app.tar.gz.minisig") {
                Err(TrustError::Malformed { file, .. }) => assert_eq!(file, "app.tar.gz.minisig"),
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
        }
        for garbage in [
            &b""[..],
            b"garbage",
            b"\xff\xfe\x00",
            b"untrusted comment: x\n!!!!\ntrusted comment: y\n====\n",
            b"untrusted comment: x\nRWQ=\ntrusted comment: y\nAAAA\n",
        ] {
            let e = begin(&policy, garbage, "g.minisig").unwrap_err();
            assert!(matches!(e, TrustError::Malformed { .. }), "{e}");
            assert!(e.to_string().contains("g.minisig"), "{e}");
        }
        // Random bytes and random mutations of a real signature: never a panic.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let len = rng.usize(..300);
            let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert!(begin(&policy, &junk, "r.minisig").is_err());
            let mut m = fx.sig.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..m.len());
                m[i] = rng.u8(..);
            }
            let _ = verify_bytes(&policy, &m, &fx.data, "m.minisig");
        }
    }

    #[test]
    fn bad_keys_name_their_origin() {
        let d = tempfile::tempdir().unwrap();
        let e = TrustPolicy::new("web", &s(&["RWQnotakey"]), &[], &[], true, false).unwrap_err();
        assert!(matches!(e, TrustError::BadPublicKey { .. }), "{e}");
        assert!(e.to_string().contains(".keys entry 1"), "{e}");

        let missing = d.path().join("missing.pub");
        let e = TrustPolicy::new("web", &[], std::slice::from_ref(&missing), &[], true, false)
            .unwrap_err();
        assert!(matches!(e, TrustError::Io(_)), "{e}");
        assert!(e.to_string().contains("missing.pub"), "{e}");

        let junk = d.path().join("junk.pub");
        sfs::write_atomic(&junk, b"untrusted comment: x\nhello\n").unwrap();
        let e = TrustPolicy::new("web", &[], &[junk], &[], true, false).unwrap_err();
        assert!(matches!(e, TrustError::BadPublicKey { .. }), "{e}");
        assert!(e.to_string().contains("junk.pub"), "{e}");

        let k = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".to_owned();
        let e = TrustPolicy::new("web", &[k], &[], &s(&["xyz"]), true, false).unwrap_err();
        assert!(matches!(e, TrustError::BadKeyId { .. }), "{e}");
        assert!(e.to_string().contains(".revoked"), "{e}");
    }
}
