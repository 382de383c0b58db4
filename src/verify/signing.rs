//! Making minisign key pairs and signatures, in the formats the `minisign`
//! CLI reads (`minisign -V`) and writes (`minisign -G`, `minisign -S`).

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use ct_codecs::{Base64, Decoder as _};

use crate::fs::{self as sfs, FsError};
use crate::verify::format::{KeyId, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, UNTRUSTED_PREFIX};

/// File name of the public key written by [`keygen`].
pub(crate) const PUBLIC_KEY_FILE: &str = "switchyard.pub";
/// File name of the secret key written by [`keygen`].
pub(crate) const SECRET_KEY_FILE: &str = "switchyard.key";
/// Environment variable read by [`key_password_from_env_or_tty`].
pub(crate) const PASSWORD_ENV: &str = "SWITCHYARD_KEY_PASSWORD";
/// The `minisign` CLI reads comment lines into fixed buffers; staying well
/// under its limits keeps our signatures readable by every version of it.
const MAX_TRUSTED_COMMENT: usize = 1024;

/// Everything that can go wrong while making keys or signatures.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A secret key could not be loaded or decrypted.
    #[error("secret key {}: {reason}", path.display())]
    SecretKey {
        /// The secret key file.
        path: PathBuf,
        /// What went wrong, and what to do.
        reason: String,
        /// The minisign library's own error, when it said no.
        #[source]
        source: Option<minisign::PError>,
    },

    /// Signing failed.
    #[error("signing {}: {reason}", path.display())]
    Sign {
        /// The file being signed.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// The minisign library's own error, when it said no.
        #[source]
        source: Option<minisign::PError>,
    },

    /// Key generation failed.
    #[error("generating a key pair in {}: {reason}", dir.display())]
    Keygen {
        /// The output directory.
        dir: PathBuf,
        /// What went wrong.
        reason: &'static str,
        /// The minisign library's own error, when it said no.
        #[source]
        source: Option<minisign::PError>,
    },

    /// [`keygen`] would overwrite an existing key file.
    #[error(
        "refusing to overwrite {}: move the existing key away first, or write the new pair to \
         another directory",
        path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },

    /// A file-system error; it names the path and the operation.
    #[error(transparent)]
    Io(#[from] FsError),
}

/// Generates a key pair: `<out>/switchyard.pub` (for `minisign -V -p FILE`;
/// its second line works with `minisign -V -P`) and `<out>/switchyard.key`
/// (for `minisign -S -s FILE`, mode 0600), the secret key encrypted with
/// `password` or unencrypted when it is `None`. Refuses to overwrite either file.
pub fn keygen(
    out: &Path,
    password: Option<String>,
) -> Result<(PathBuf, PathBuf, KeyId), SigningError> {
    let pub_path = out.join(PUBLIC_KEY_FILE);
    let key_path = out.join(SECRET_KEY_FILE);
    sfs::create_dir_all(out)?;
    // Checked before the slow key derivation, and again by create_new (race-free).
    for p in [&pub_path, &key_path] {
        if sfs::symlink_metadata(p)?.is_some() {
            return Err(SigningError::Exists { path: p.clone() });
        }
    }
    let kg = |e: minisign::PError| SigningError::Keygen {
        dir: out.to_owned(),
        reason: "the minisign library failed",
        source: Some(e),
    };
    let encrypted = password.is_some();
    let pair = match password {
        // With Some, the crate never prompts.
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(kg)?;
    let id = <[u8; 8]>::try_from(pair.pk.keynum())
        .map(KeyId)
        .map_err(|_| SigningError::Keygen {
            dir: out.to_owned(),
            reason: "generated key id is not 8 bytes",
            source: None,
        })?;
    // The CLI's own layout, so `minisign` shows the same comment as it would.
    let pub_text = format!(
        "{UNTRUSTED_PREFIX}minisign public key {id}\n{}\n",
        pair.pk.to_base64()
    );
    let comment = if encrypted {
        "switchyard encrypted secret key"
    } else {
        "switchyard unencrypted secret key"
    };
    let key_text = pair.sk.to_box(Some(comment)).map_err(kg)?.to_bytes();
    write_new(&key_path, 0o600, &key_text)?;
    if let Err(e) = write_new(&pub_path, 0o644, pub_text.as_bytes()) {
        let _ = sfs::remove_file(&key_path);
        return Err(e);
    }
    sfs::fsync_dir(out)?;
    Ok((pub_path, key_path, id))
}

fn write_new(path: &Path, mode: u32, data: &[u8]) -> Result<(), SigningError> {
    let mut f = sfs::create_new(path, mode).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            SigningError::Exists {
                path: path.to_owned(),
            }
        } else {
            e.into()
        }
    })?;
    let res = f
        .write_all(data)
        .map_err(|e| FsError::new("write", path, e))
        .and_then(|()| sfs::fsync_file(&f, path));
    if let Err(e) = res {
        drop(f);
        let _ = sfs::remove_file(path);
        return Err(e.into());
    }
    Ok(())
}

/// Reads the password for a secret key: `SWITCHYARD_KEY_PASSWORD` if set,
/// else a prompt on the terminal if stdin is one, else `None` (for an
/// unencrypted key, or to fail with a clear message on an encrypted one).
pub(crate) fn key_password_from_env_or_tty(prompt: &str) -> Option<String> {
    if let Some(pw) = std::env::var_os(PASSWORD_ENV) {
        return Some(pw.to_string_lossy().into_owned());
    }
    if io::stdin().is_terminal() {
        return rpassword::prompt_password(prompt).ok();
    }
    None
}

/// Signs `file` with the minisign secret key at `secret_key`, writing
/// `<file>.minisig` (prehashed, as `minisign -S` does by default), and
/// returns that path.
///
/// `password` decrypts an encrypted key (ignored for an unencrypted one).
/// The trusted comment defaults to minisign's own
/// (`timestamp:<unix>\tfile:<name>\thashed`); it must be one line of at most
/// 1024 bytes.
pub fn sign_file(
    secret_key: &Path,
    password: Option<String>,
    file: &Path,
    trusted_comment: Option<&str>,
) -> Result<PathBuf, SigningError> {
    let sk = load_secret_key(secret_key, password)?;
    let sign_err = |reason: String| SigningError::Sign {
        path: file.to_owned(),
        reason,
        source: None,
    };
    let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| SigningError::SecretKey {
        path: secret_key.to_owned(),
        reason: "its public key cannot be derived".to_owned(),
        source: Some(e),
    })?;
    let id = <[u8; 8]>::try_from(sk.keynum())
        .map(KeyId)
        .map_err(|_| SigningError::SecretKey {
            path: secret_key.to_owned(),
            reason: "key id is not 8 bytes".to_owned(),
            source: None,
        })?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comment = match trusted_comment {
        Some(c) => c.to_owned(),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("timestamp:{now}\tfile:{name}\thashed")
        }
    };
    // A line break would end the comment early and leave a corrupt .minisig.
    if comment.contains(['\n', '\r']) {
        return Err(sign_err("the trusted comment must be a single line".into()));
    }
    if comment.len() > MAX_TRUSTED_COMMENT {
        return Err(sign_err(format!(
            "the trusted comment is {} bytes, at most {MAX_TRUSTED_COMMENT} are allowed",
            comment.len()
        )));
    }
    let reader = io::BufReader::new(sfs::open(file)?);
    let untrusted = format!("signature from switchyard key {id}");
    // Passing the public key makes the crate check the new global signature.
    let sig =
        minisign::sign(Some(&pk), &sk, reader, Some(&comment), Some(&untrusted)).map_err(|e| {
            SigningError::Sign {
                path: file.to_owned(),
                reason: "the minisign library failed".to_owned(),
                source: Some(e),
            }
        })?;
    let mut sig_path = file.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_path = PathBuf::from(sig_path);
    sfs::write_atomic(&sig_path, &sig.to_bytes())?;
    Ok(sig_path)
}

fn load_secret_key(
    path: &Path,
    password: Option<String>,
) -> Result<minisign::SecretKey, SigningError> {
    let bad = |reason: String| SigningError::SecretKey {
        path: path.to_owned(),
        reason,
        source: None,
    };
    let bad_by = |reason: String, e: minisign::PError| SigningError::SecretKey {
        path: path.to_owned(),
        reason,
        source: Some(e),
    };
    let text = sfs::read_to_string(path)?;
    const NOT_A_KEY: &str = "not a minisign secret key file (expected an \"untrusted comment:\" \
                             line, then one base64 line)";
    let line = text.lines().nth(1).ok_or_else(|| bad(NOT_A_KEY.into()))?;
    let bytes = Base64::decode_to_vec(line.trim(), None).map_err(|_| bad(NOT_A_KEY.into()))?;
    if bytes.len() == PUBLIC_KEY_BYTES {
        return Err(bad(
            "this is a public key: pass the secret key file (switchyard.key)".into(),
        ));
    }
    if bytes.len() != SECRET_KEY_BYTES {
        return Err(bad(NOT_A_KEY.into()));
    }
    // Bytes 2..4 name the KDF: zeros for an unencrypted key, "Sc" for scrypt.
    let encrypted = match bytes.get(2..4) {
        Some([0, 0]) => false,
        Some(b"Sc") => true,
        _ => return Err(bad("unsupported key encryption (not scrypt)".into())),
    };
    let key_box =
        minisign::SecretKeyBox::from_string(&text).map_err(|e| bad_by(NOT_A_KEY.into(), e))?;
    if !encrypted {
        return minisign::SecretKey::from_unencrypted_box(key_box)
            .map_err(|e| bad_by("the key file is damaged".into(), e));
    }
    let Some(password) = password else {
        return Err(bad(format!(
            "the key is encrypted and no password was given: set {PASSWORD_ENV}, or run from a \
             terminal to be prompted"
        )));
    };
    // Some(password) keeps the crate from prompting on its own.
    minisign::SecretKey::from_box(key_box, Some(password)).map_err(|e| {
        bad_by(
            format!("cannot decrypt it: check the password ({PASSWORD_ENV})"),
            e,
        )
    })
}
