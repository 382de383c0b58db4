//! The web console's local users (`[console] users_file`): one user a line,
//! `NAME:ROLE:PHC`, where PHC is an argon2id hash with its own random salt
//! (`$argon2id$v=19$m=...`). `switchyard console add-user` writes the file
//! (atomically, mode 0600); the agent's console reads it at each login, so
//! a user added or removed counts at once, without a restart.

use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::fs::FsError;

/// Shortest password `add-user` accepts.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;

/// Longest user name.
const MAX_NAME: usize = 64;

/// Errors reading or writing the users file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UsersError {
    /// File-system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A line that is not `NAME:ROLE:HASH`.
    #[error(
        "{}:{line}: not a console user line (NAME:ROLE:ARGON2ID-HASH); fix or remove it, or write the user again with `switchyard console add-user`",
        path.display()
    )]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
    },
    /// A name the file cannot hold.
    #[error(
        "console user name {0:?} is not allowed: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
    )]
    BadName(String),
    /// Too short a password.
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    ShortPassword,
    /// The hash could not be computed.
    #[error("cannot hash the password with argon2id: {0}")]
    Hash(String),
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Reads every page; acts on nothing.
    Viewer,
    /// Also deploys, promotes, reverts, holds, quarantines, ...
    Operator,
}

impl Role {
    /// As written in the file and on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user of the file.
#[derive(Debug, Clone)]
struct User {
    name: String,
    role: Role,
    hash: String,
}

/// The users file, read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Users {
    users: Vec<User>,
}

/// Whether `name` may be a console user's name (it must not hold the
/// file's separator, and is shown in pages and the audit log).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// Reads the users file; a missing file has no users.
pub(crate) fn load(path: &Path) -> Result<Users, UsersError> {
    let Some(bytes) = crate::fs::read_optional(path)? else {
        return Ok(Users::default());
    };
    parse(&String::from_utf8_lossy(&bytes), path)
}

fn parse(text: &str, path: &Path) -> Result<Users, UsersError> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || UsersError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
        };
        let mut parts = line.splitn(3, ':');
        let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let role = Role::parse(role).ok_or_else(bad)?;
        if !valid_name(name) || PasswordHash::new(hash).is_err() {
            return Err(bad());
        }
        users.push(User {
            name: name.to_string(),
            role,
            hash: hash.to_string(),
        });
    }
    Ok(Users { users })
}

/// A hash of a password nobody has: an unknown user's login is checked
/// against it, so it takes as long as a known user's wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3dpdGNoeWFyZGRlY295$Jr0wKXM3L0kD0lS6F6yWl9b8hGf2Kk4nQv3yqkq0w1M";

impl Users {
    /// The user's role when `password` is theirs. An unknown user and a
    /// wrong password take the same time and give the same `None`.
    pub(crate) fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or(DECOY, |u| u.hash.as_str());
        let ok = PasswordHash::new(hash).ok().is_some_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        match user {
            Some(u) if ok => Some(u.role),
            _ => None,
        }
    }

    /// How many users there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# switchyard console users: NAME:ROLE:ARGON2ID-HASH (written by `switchyard console add-user`)\n",
        );
        for u in &self.users {
            out.push_str(&format!("{}:{}:{}\n", u.name, u.role, u.hash));
        }
        out
    }
}

/// What `add-user` did.
#[derive(Debug, Clone)]
pub(crate) struct AddedUser {
    /// The user.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// They were in the file already (password and role replaced).
    pub replaced: bool,
    /// The file.
    pub file: PathBuf,
}

/// Adds `name` (or replaces their password and role) in the users file:
/// an argon2id hash with a fresh random salt, written atomically, mode 0600.
pub(crate) fn add_user(
    path: &Path,
    name: &str,
    role: Role,
    password: &str,
) -> Result<AddedUser, UsersError> {
    if !valid_name(name) {
        return Err(UsersError::BadName(name.to_string()));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsersError::ShortPassword);
    }
    let mut users = load(path)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| UsersError::Hash(e.to_string()))?
        .to_string();
    let replaced = match users.users.iter_mut().find(|u| u.name == name) {
        Some(u) => {
            u.role = role;
            u.hash = hash;
            true
        }
        None => {
            users.users.push(User {
                name: name.to_string(),
                role,
                hash,
            });
            false
        }
    };
    if let Some(dir) = path.parent() {
        crate::fs::create_dir_all(dir)?;
    }
    crate::fs::write_atomic_secret(path, users.render().as_bytes())?;
    Ok(AddedUser {
        name: name.to_string(),
        role,
        replaced,
        file: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_replace() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        let a = add_user(&f, "alice", Role::Viewer, "correct horse battery").unwrap();
        assert!(!a.replaced);
        add_user(&f, "bob", Role::Operator, "another long secret").unwrap();
        let u = load(&f).unwrap();
        assert_eq!(
            u.verify("alice", "correct horse battery"),
            Some(Role::Viewer)
        );
        assert_eq!(u.verify("alice", "correct horse batterY"), None);
        assert_eq!(u.verify("carol", "correct horse battery"), None);
        assert_eq!(u.verify("bob", "another long secret"), Some(Role::Operator));
        let a = add_user(&f, "alice", Role::Operator, "a new long password").unwrap();
        assert!(a.replaced);
        let u = load(&f).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.verify("alice", "a new long password"),
            Some(Role::Operator)
        );
        assert_eq!(u.verify("alice", "correct horse battery"), None);
        let text = crate::fs::read_to_string(&f).unwrap();
        assert!(text.contains("alice:operator:$argon2id$v=19$"), "{text}");
        assert!(!text.contains("long password"), "{text}");
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        assert!(matches!(
            add_user(&f, "a:b", Role::Viewer, "long enough password"),
            Err(UsersError::BadName(_))
        ));
        assert!(matches!(
            add_user(&f, "alice", Role::Viewer, "short"),
            Err(UsersError::ShortPassword)
        ));
        let e = parse("alice:admin:$argon2id$x\n", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":1: not a console user line"), "{e}");
        // The decoy is a well-formed hash, so unknown users cost a full check.
        assert!(PasswordHash::new(DECOY).is_ok());
    }
}
