//! `[apps.<name>.shared]`: the persistent paths linked into every release.

use std::path::{Component, Path, PathBuf};

use super::Checker;
use crate::config::SharedConfig;
use crate::config::raw::RawShared;

/// `[apps.<name>.shared]`: relative, UTF-8, non-overlapping paths.
pub(super) fn check_shared(ck: &mut Checker<'_>, name: &str, raw: RawShared) -> SharedConfig {
    let mut shared = SharedConfig::default();
    let mut seen: Vec<PathBuf> = Vec::new();
    for (list, out) in [(raw.dirs, &mut shared.dirs), (raw.files, &mut shared.files)] {
        for p in list {
            let span = p.span();
            let p = p.into_inner();
            if let Err(m) = check_shared_path(&p) {
                ck.at(span, format!("apps.{name}.shared: {m}"));
                continue;
            }
            if let Some(o) = seen.iter().find(|o| o.starts_with(&p) || p.starts_with(o)) {
                ck.at(
                    span,
                    format!(
                        "apps.{name}.shared: {} overlaps {}; list each persistent path once",
                        p.display(),
                        o.display()
                    ),
                );
                continue;
            }
            if p == Path::new(".switchyard") {
                ck.at(span, "shared paths may not be named .switchyard");
            }
            seen.push(p.clone());
            out.push(p);
        }
    }
    shared
}

/// Checks a relative path configured under `shared`.
fn check_shared_path(p: &Path) -> Result<(), String> {
    if p.as_os_str().is_empty() {
        return Err("a shared path must not be empty".into());
    }
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                if n.to_str().is_none() {
                    return Err(format!("shared path {} is not UTF-8", p.display()));
                }
            }
            _ => {
                return Err(format!(
                    "shared path {:?} must be relative to the release, without '.', '..' or a leading '/'",
                    p.display().to_string()
                ));
            }
        }
    }
    Ok(())
}
