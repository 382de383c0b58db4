//! The `[apps.<name>.source] type = "github"` settings that need more than
//! a type check: asset name patterns (with `{version}`, `{tag}`, `{target}`
//! and wildcards) and the API base URL.

use reqwest::Url;

use crate::version::check_component;

/// Checks an `asset` setting: a file name with `{version}`, `{tag}` and
/// `{target}` placeholders, optionally with `*`/`?` wildcards. Any
/// extension: the install tells the format by content.
pub(crate) fn check_asset_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(
            "the asset name must not be empty (default \"*\": the release's one archive)".into(),
        );
    }
    let mut rest = pattern;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{pattern:?} has a '}}' without its '{{'"));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("{pattern:?} has a '{{' without its '}}'"));
        };
        let key = &rest[open + 1..open + close];
        if !matches!(key, "version" | "tag" | "target") {
            return Err(format!(
                "{pattern:?}: unknown placeholder {{{key}}}; use {{version}}, {{tag}} or {{target}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    let sample = render_asset(pattern, "v1.0.0", "1.0.0").replace(['*', '?'], "x");
    check_component("asset name", &sample).map_err(|e| {
        format!("{pattern:?} is not a file name: {e}; name one asset, like \"myapp-{{version}}-{{target}}.tar.gz\"")
    })?;
    Ok(())
}

/// Checks and normalises an `api_url` (no trailing slash).
pub(crate) fn check_api_url(url: &str) -> Result<String, String> {
    let u = Url::parse(url).map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "{url:?} must start with https:// (or http:// for a local test server)"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(format!(
            "{url:?} must be a plain base URL, without user, query or fragment (tokens go in token_env or token_file)"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `{target}` in asset names: `<arch>-<os>` as Rust names them, e.g.
/// `x86_64-linux` or `aarch64-linux`.
pub(crate) fn target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Replaces `{version}`, `{tag}` and `{target}` in an asset pattern.
pub(crate) fn render_asset(pattern: &str, tag: &str, version: &str) -> String {
    pattern
        .replace("{version}", version)
        .replace("{tag}", tag)
        .replace("{target}", &target())
}

/// Whether an asset pattern has `*` or `?` wildcards.
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// `*` matches any run of characters, `?` exactly one; nothing else is special.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}
