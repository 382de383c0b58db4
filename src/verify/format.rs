//! The minisign file formats, shared by checking ([`super::trust`]) and
//! making ([`super::signing`]) signatures: sizes, algorithm tags, comment
//! prefixes, and key ids.

use std::fmt;
use std::str::FromStr;

/// Algorithm tag of a prehashed signature (BLAKE2b-512 of the file, then Ed25519).
pub(crate) const ALG_PREHASHED: [u8; 2] = *b"ED";
/// Algorithm tag of a legacy signature (Ed25519 over the whole file), also
/// the tag every minisign public key carries.
pub(crate) const ALG_LEGACY: [u8; 2] = *b"Ed";
pub(crate) const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
pub(crate) const TRUSTED_PREFIX: &str = "trusted comment: ";
/// Decoded sizes: algorithm (2) + key id (8) + Ed25519 signature (64).
pub(crate) const SIG_LINE_BYTES: usize = 74;
pub(crate) const GLOBAL_SIG_BYTES: usize = 64;
/// Decoded public key: algorithm (2) + key id (8) + Ed25519 key (32).
pub(crate) const PUBLIC_KEY_BYTES: usize = 42;
/// Decoded secret key: algorithms (6) + salt (32) + scrypt limits (16) +
/// key id (8) + Ed25519 key pair (64) + checksum (32).
pub(crate) const SECRET_KEY_BYTES: usize = 158;

/// A minisign key id: 8 bytes shared by a key pair and every signature it makes.
///
/// Displayed as 16 uppercase hex digits exactly as `minisign` prints it (the
/// bytes read as a little-endian integer), so ids can be copied between the
/// CLI's output, `.pub` comments and our config.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a key id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad key id {value:?}: {reason}; expected 16 hex digits as minisign prints them (e.g. \
     9D5E2C43E4061904)"
)]
pub struct KeyIdError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for KeyId {
    type Err = KeyIdError;

    /// Parses 16 hex digits (either case), as printed by `minisign`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = |reason: &'static str| KeyIdError {
            value: s.to_owned(),
            reason,
        };
        // `minisign` prints key ids without leading zeros.
        if t.is_empty() || t.len() > 16 {
            return Err(bad("not 1 to 16 hex digits"));
        }
        // from_str_radix alone would also take a leading '+'.
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not hexadecimal"));
        }
        let n = u64::from_str_radix(t, 16).map_err(|_| bad("not hexadecimal"))?;
        Ok(KeyId(n.to_le_bytes()))
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
