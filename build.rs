//! Build metadata for `--version` and the metrics' build_info: the git commit
//! (`SWITCHYARD_GIT_COMMIT`) and the enabled cargo features
//! (`SWITCHYARD_FEATURES`), both as compile-time environment variables.
//!
//! A build from a source tarball has no `.git`: the commit is then taken from
//! `SWITCHYARD_GIT_COMMIT` in the build's environment (a packager who knows
//! it sets it), else "unknown". The build never fails for want of git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_GIT_COMMIT");
    let commit = match std::env::var("SWITCHYARD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit(&root).unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=SWITCHYARD_GIT_COMMIT={commit}");

    // Cargo sets CARGO_FEATURE_<NAME> for each enabled feature (upper case,
    // '-' as '_'); Cargo.toml's feature names use '-', so map back.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_string))
        .map(|f| f.to_ascii_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SWITCHYARD_FEATURES={features}");
}

/// `git rev-parse --short HEAD` of this source tree, watching the files a new
/// commit or checkout changes. Only asked when the tree itself has `.git`
/// (a directory, or the file a worktree has): a tarball unpacked inside some
/// other repository must not report that repository's commit.
fn git_commit(root: &Path) -> Option<String> {
    let dot_git = root.join(".git");
    if !dot_git.exists() {
        return None;
    }
    // .git/HEAD moves on a checkout (in a worktree it lives elsewhere: git
    // says where), and a commit moves the branch's ref rather than HEAD:
    // watch all three.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(root, &["rev-parse", "--git-path", path]) {
            watch(root, &p);
        }
    }
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(root, &["rev-parse", "--git-path", &branch])
    {
        watch(root, &p);
    }
    git(root, &["rev-parse", "--short", "HEAD"])
}

/// Reruns this script when `path` (relative to `root` or absolute) changes,
/// if it exists (a missing path would rerun it on every build).
fn watch(root: &Path, path: &str) {
    let p = root.join(path);
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

/// One line of git's output, or None if git is missing or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}
