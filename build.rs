//! Records the git commit the binary is built from (`SWITCHYARD_BUILD_COMMIT`,
//! read by `src/version.rs`): `git rev-parse --short HEAD` when git and a
//! repository are there, else `unknown` (a crate tarball, no git).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SWITCHYARD_BUILD_COMMIT={commit}");
    // A new commit moves HEAD (or the branch it names); a worktree's .git is
    // a file pointing elsewhere, so ask git where HEAD really is.
    let head = Command::new("git")
        .args(["rev-parse", "--git-path", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    match head {
        Some(h) => {
            println!("cargo:rerun-if-changed={h}");
            let refname = Command::new("git")
                .args(["symbolic-ref", "-q", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok());
            if let Some(r) = refname {
                let r = r.trim();
                if let Some(p) = Command::new("git")
                    .args(["rev-parse", "--git-path", r])
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                {
                    println!("cargo:rerun-if-changed={}", p.trim());
                }
            }
        }
        None => println!("cargo:rerun-if-changed=.git/HEAD"),
    }
    println!("cargo:rerun-if-changed=build.rs");
}
