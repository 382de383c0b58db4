//! App roots: made absolute and canonical at load (so two spellings of one
//! directory are one root), and refused where an app root would be a
//! system directory or meet another app's.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::fs;

/// Top-level system directories no app root may be (`/lib*` too).
const SYSTEM: &[&str] = &[
    "etc", "usr", "bin", "sbin", "boot", "dev", "proc", "sys", "run", "var", "home", "root", "tmp",
];

/// `root` with `.` and `..` applied to the text alone.
pub(super) fn lexical(root: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in root.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `root` (absolute) through every existing symlink, as the kernel would
/// resolve it; the part that does not exist yet is taken as written.
pub(super) fn canonical(root: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::from("/");
    let mut exists = true;
    for c in root.components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                if !exists {
                    continue;
                }
                match fs::canonicalize(&out) {
                    Ok(p) => out = p,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if fs::symlink_metadata(&out).ok().flatten().is_some() {
                            return Err(format!(
                                "{} is a symlink to nothing; point it at the root's directory, or name the directory itself",
                                out.display()
                            ));
                        }
                        exists = false;
                    }
                    Err(e) => return Err(crate::chain::chain(&e)),
                }
            }
            // `out` is canonical so far: its parent is the real one.
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `p` is `/` or a top-level system directory.
pub(super) fn is_system(p: &Path) -> bool {
    let mut c = p.components();
    match (c.next(), c.next(), c.next()) {
        (Some(Component::RootDir), None, _) => true,
        (Some(Component::RootDir), Some(Component::Normal(n)), None) => {
            let n = n.to_string_lossy();
            n.starts_with("lib") || SYSTEM.contains(&n.as_ref())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_directory_meet() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        crate::fs::create_dir_all(&base.join("r")).unwrap();
        crate::fs::create_dir_all(&base.join("cfg")).unwrap();
        crate::fs::symlink(&base.join("r"), &base.join("link")).unwrap();
        for spelled in ["r", "cfg/../r", "./r/", "link", "missing/../r"] {
            assert_eq!(
                canonical(&base.join(spelled)).unwrap(),
                base.join("r"),
                "{spelled}"
            );
        }
        assert_eq!(
            canonical(&base.join("link/new")).unwrap(),
            base.join("r/new")
        );
        crate::fs::symlink(&base.join("gone"), &base.join("dangling")).unwrap();
        assert!(canonical(&base.join("dangling/x")).is_err());
    }

    #[test]
    fn system_directories() {
        for p in ["/", "/etc", "/usr", "/lib64", "/tmp", "/root"] {
            assert!(is_system(Path::new(p)), "{p}");
        }
        for p in ["/srv/web", "/tmp/x", "/etc/app", "/opt"] {
            assert!(!is_system(Path::new(p)), "{p}");
        }
        assert_eq!(lexical(Path::new("/tmp/../etc/./x/")), Path::new("/etc/x"));
    }
}
