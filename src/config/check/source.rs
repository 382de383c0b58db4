//! `[apps.<name>.source]`: a release folder or a GitHub repository, and
//! only the keys that source understands.

use std::time::Duration;

use toml::Spanned;

use super::Checker;
use crate::config::raw::RawSource;
use crate::config::{Channel, DirSourceConfig, GithubSourceConfig, SourceConfig, github};

/// Validates `[apps.<name>.source]`: exactly one of `dir` or `github`, and
/// only the keys that source understands.
pub(super) fn check_source(
    ck: &mut Checker<'_>,
    name: &str,
    raw: Spanned<RawSource>,
) -> Option<SourceConfig> {
    let span = raw.span();
    let src = raw.into_inner();
    if let Some(t) = &src.token {
        ck.at(
            t.span(),
            format!(
                "apps.{name}.source.token: a token must never be written into the configuration; put it in an environment variable and set token_env = \"NAME\", or in a root-only file and set token_file = \"/etc/switchyard/{name}.token\""
            ),
        );
    }
    let channel = match &src.channel {
        None => Channel::Stable,
        Some(c) => match c.get_ref().as_str() {
            "stable" => Channel::Stable,
            "prerelease" => Channel::Prerelease,
            other => {
                ck.at(
                    c.span(),
                    format!("apps.{name}.source.channel must be \"stable\" or \"prerelease\", got {other:?}"),
                );
                Channel::Stable
            }
        },
    };
    match (src.dir, src.github) {
        (Some(d), Some(g)) => {
            let first = d.span().start.min(g.span().start);
            ck.at(
                first..first + 1,
                format!("apps.{name}.source sets both dir and github; an app has exactly one source: keep one of them"),
            );
            None
        }
        (None, None) => {
            ck.at(
                span,
                format!("apps.{name}.source needs exactly one source: dir = \"/path\" or github = \"owner/repo\""),
            );
            None
        }
        (Some(d), None) => {
            if !d.get_ref().is_absolute() {
                ck.at(
                    d.span(),
                    format!(
                        "apps.{name}.source.dir must be an absolute path, got {:?}",
                        d.get_ref().display().to_string()
                    ),
                );
            } else {
                ck.reference(
                    d.span(),
                    &format!("apps.{name}.source.dir"),
                    d.get_ref(),
                    true,
                );
            }
            let github_only = [
                ("asset", src.asset.as_ref().map(|s| s.span())),
                ("token_env", src.token_env.as_ref().map(|s| s.span())),
                ("token_file", src.token_file.as_ref().map(|s| s.span())),
                ("api_url", src.api_url.as_ref().map(|s| s.span())),
                (
                    "rate_limit_max_wait_secs",
                    src.rate_limit_max_wait_secs.as_ref().map(|s| s.span()),
                ),
            ];
            for (key, at) in github_only {
                if let Some(at) = at {
                    ck.at(
                        at,
                        format!("apps.{name}.source.{key} applies only to a github source; a dir source reads <dir>/<version>/ (remove {key})"),
                    );
                }
            }
            Some(SourceConfig::Dir(DirSourceConfig {
                dir: d.into_inner(),
                channel,
            }))
        }
        (None, Some(g)) => {
            let mut cfg = GithubSourceConfig::new("", "");
            cfg.channel = channel;
            match parse_repo(g.get_ref()) {
                Ok(repo) => cfg.repo = repo,
                Err(m) => ck.at(g.span(), format!("apps.{name}.source.github: {m}")),
            }
            if let Some(a) = src.asset {
                match github::check_asset_pattern(a.get_ref()) {
                    Ok(()) => cfg.asset = a.into_inner(),
                    Err(m) => ck.at(a.span(), format!("apps.{name}.source.asset: {m}")),
                }
            }
            if let (Some(e), Some(_)) = (&src.token_env, &src.token_file) {
                ck.at(
                    e.span(),
                    format!(
                        "apps.{name}.source sets both token_env and token_file; keep one of them"
                    ),
                );
            }
            if let Some(e) = src.token_env {
                let v = e.get_ref();
                let ok = !v.is_empty()
                    && !v.starts_with(|c: char| c.is_ascii_digit())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if ok {
                    cfg.token_env = Some(e.into_inner());
                } else {
                    ck.at(
                        e.span(),
                        format!("apps.{name}.source.token_env must name an environment variable (letters, digits and '_', e.g. \"GITHUB_TOKEN\"), not hold the token itself"),
                    );
                }
            }
            if let Some(f) = src.token_file {
                if f.get_ref().is_absolute() {
                    ck.file_mode(
                        f.span(),
                        &format!("apps.{name}.source.token_file"),
                        f.get_ref(),
                        true,
                    );
                    cfg.token_file = Some(f.into_inner());
                } else {
                    ck.at(
                        f.span(),
                        format!(
                            "apps.{name}.source.token_file must be an absolute path, got {:?}",
                            f.get_ref().display().to_string()
                        ),
                    );
                }
            }
            if let Some(u) = src.api_url {
                match github::check_api_url(u.get_ref()) {
                    Ok(url) => cfg.api_url = url,
                    Err(m) => ck.at(u.span(), format!("apps.{name}.source.api_url: {m}")),
                }
            }
            if let Some(w) = src.rate_limit_max_wait_secs {
                if *w.get_ref() < 0 {
                    ck.at(
                        w.span(),
                        format!("apps.{name}.source.rate_limit_max_wait_secs must be 0 (never wait) or more"),
                    );
                } else {
                    cfg.rate_limit_max_wait = Duration::from_secs(*w.get_ref() as u64);
                }
            }
            Some(SourceConfig::Github(cfg))
        }
    }
}

/// Splits `owner/repo`, refusing anything GitHub would not accept as a name.
fn parse_repo(s: &str) -> Result<(String, String), String> {
    let valid = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.len() <= 100
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match s.split_once('/') {
        Some((o, r)) if valid(o) && valid(r) => Ok((o.to_string(), r.to_string())),
        _ => Err(format!(
            "{s:?} is not \"owner/repo\" (letters, digits, '-', '_' and '.'), e.g. github = \"acme/web\""
        )),
    }
}
