//! GitHub Releases as a source, against an in-process mock of the GitHub API
//! built from recorded GitHub answers (see `mock_github`). The binary runs as
//! a separate process; the mock runs on a tokio runtime in this one.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::common::World;
use crate::mock_github::{Fault, Host, MockGithub, in_secs};
use switchyard::testing::GithubSource;
use switchyard::testing::GithubSourceConfig;
use switchyard::testing::ReleaseSource;

const TOKEN: &str = "ghp_mockTOKEN0123456789abcdefABCDEF0123";
const TOKEN_VAR: &str = "SWITCHYARD_TEST_GITHUB_TOKEN";

fn setup() -> (World, MockGithub) {
    (World::new(), MockGithub::start())
}

/// The `[apps.web.source]` body for the mock, plus `extra` lines.
fn source(m: &MockGithub, extra: &str) -> String {
    format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-{{version}}.tar.gz\"\n{extra}",
        m.api_url()
    )
}

/// Packs and signs a release (trusted comment `repo=acme/web tag=<tag>
/// file=<name>`) and returns it as a mock release with every file as an asset.
fn packed(w: &World, m: &MockGithub, tag: &str) -> crate::mock_github::MockRelease {
    let dir = w.simple_release(tag);
    m.release_from_dir(tag, &dir)
}

fn publish(w: &World, m: &MockGithub, tag: &str) {
    let r = packed(w, m, tag);
    m.push(r);
}

fn installed(w: &World) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.root.join("releases"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn epoch(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn latest_is_the_highest_semver_on_the_channel_across_pages() {
    let (w, m) = setup();
    // Two releases per page: four pages, followed through `Link` headers
    // that point at /repositories/1000/releases, as GitHub's do.
    m.with(|s| s.page_size = 2);
    let mut draft = packed(&w, &m, "v3.0.0");
    draft.draft = true;
    m.push(draft);
    let nightly = m.release(
        "nightly",
        vec![m.asset("web-nightly.tar.gz", b"x".to_vec())],
    );
    m.push(nightly);
    let mut rc = packed(&w, &m, "v2.0.0-rc.1");
    rc.prerelease = true;
    m.push(rc);
    // Flagged as a prerelease on GitHub only (its version looks stable).
    let mut flagged = packed(&w, &m, "v1.11.0");
    flagged.prerelease = true;
    m.push(flagged);
    // Newest by date and by string order, but not by semver.
    let mut v19 = packed(&w, &m, "v1.9.0");
    v19.published_at = "2024-06-01T12:00:00Z".into();
    m.push(v19);
    let mut v110 = packed(&w, &m, "v1.10.0");
    v110.published_at = "2024-05-01T12:00:00Z".into();
    v110.body = Some("### Added\n- the 1.10 feature".into());
    m.push(v110);
    publish(&w, &m, "v1.2.0");
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));

    w.ok(&["deploy", "web", "1.0.0"]);
    assert_eq!(w.current_content(), "1.0.0\n");
    let c = w.json(&["check", "web"]);
    assert_eq!(c["current"], "1.0.0");
    assert_eq!(c["latest"], "1.10.0", "{c}");
    assert_eq!(c["latest_tag"], "v1.10.0");
    assert_eq!(c["channel"], "stable");
    assert_eq!(c["behind"], 3, "{c}");
    assert_eq!(c["update_available"], true);
    assert_eq!(c["major_upgrade"], false);
    assert_eq!(c["published_at"], "2024-05-01T12:00:00Z");
    assert!(
        c["notes"].as_str().unwrap().contains("the 1.10 feature"),
        "{c}"
    );
    let human = w.ok(&["check", "web"]);
    assert!(human.contains("3 versions behind"), "{human}");
    assert!(human.contains("the 1.10 feature"), "{human}");

    let before = m.seen().len();
    let r = w.json(&["install", "web", "latest"]);
    assert_eq!(r["version"], "1.10.0", "{r}");
    // One listing is four pages; every page after the first came from `Link`.
    let pages: Vec<_> = m.seen()[before..]
        .iter()
        .filter(|s| s.path.ends_with("/releases"))
        .map(|s| format!("{}?{}", s.path, s.query))
        .collect();
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert_eq!(pages[0], "/repos/acme/web/releases?per_page=100");
    assert_eq!(pages[3], "/repositories/1000/releases?per_page=2&page=4");

    // The draft is invisible, even asked for by name.
    let (code, _, err) = w.run(&["install", "web", "3.0.0"]);
    assert_eq!(code, 5, "{err}");
    // A prerelease may be named explicitly on the stable channel.
    w.ok(&["install", "web", "2.0.0-rc.1"]);

    // The prerelease channel sees the prereleases, and a major upgrade.
    w.write_config_source(&source(&m, "channel = \"prerelease\""));
    let c = w.json(&["check", "web"]);
    assert_eq!(c["latest"], "2.0.0-rc.1", "{c}");
    assert_eq!(c["channel"], "prerelease");
    assert_eq!(c["behind"], 5, "{c}");
    assert_eq!(c["major_upgrade"], true, "{c}");
    assert!(w.ok(&["check", "web"]).contains("MAJOR"));
    assert_eq!(
        w.json(&["install", "web", "latest"])["version"],
        "2.0.0-rc.1"
    );
    // Live on the newest stable release: four prereleases or flagged ones
    // are still ahead on this channel, none on the stable one.
    w.ok(&["promote", "web", "1.10.0"]);
    let c = w.json(&["check", "web"]);
    assert_eq!(
        (c["behind"].as_u64(), c["major_upgrade"].as_bool()),
        (Some(2), Some(true))
    );
    w.write_config_source(&source(&m, ""));
    let c = w.json(&["check", "web"]);
    assert_eq!(c["update_available"], false, "{c}");
    assert!(w.ok(&["check", "web"]).contains("up to date"));
    w.assert_consistent();
    w.assert_no_debris();
}

#[test]
fn private_repository_token_stays_on_the_api_host() {
    let (w, m) = setup();
    m.with(|s| {
        s.token = Some(TOKEN.into());
        s.redirect = true;
    });
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, &format!("token_env = \"{TOKEN_VAR}\"")));

    // The variable is not set: the error names it, never a value.
    let out = w
        .cmd()
        .env_remove(TOKEN_VAR)
        .args(["install", "web", "latest"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains(TOKEN_VAR) && err.contains("not set"), "{err}");

    // A wrong token: the private repository answers 404, with a hint.
    let (code, _, err) = w.run_env(&["install", "web", "latest"], &[(TOKEN_VAR, "ghp_wrong")]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("token"), "{err}");
    assert!(
        !err.contains("ghp_wrong"),
        "the token leaked into a message: {err}"
    );

    let (code, out, err) = w.run_env(&["-vv", "deploy", "web", "latest"], &[(TOKEN_VAR, TOKEN)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.current_content(), "1.0.0\n");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "token logged:\n{err}"
    );

    // Every asset went through the API endpoint, with the token, then a 302
    // to the storage host, which never saw it.
    let seen = m.seen();
    let asset_hits: Vec<_> = seen
        .iter()
        .filter(|s| s.host == Host::Api && s.path.contains("/releases/assets/") && s.status == 302)
        .collect();
    assert_eq!(
        asset_hits.len(),
        4,
        "tar.gz, its .minisig, SHA256SUMS and its .minisig"
    );
    for h in &asset_hits {
        assert_eq!(
            h.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(h.header("accept"), Some("application/octet-stream"));
    }
    let storage = m.storage_hits();
    assert_eq!(storage.len(), 4, "{storage:?}");
    for s in &storage {
        assert_eq!(
            s.header("authorization"),
            None,
            "the token reached the storage host: {s:?}"
        );
        assert!(!s.headers.values().any(|v| v.contains(TOKEN)), "{s:?}");
    }

    // token_file works the same (trimmed), and check reads the private listing.
    let tf = w.tmp.path().join("gh.token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    w.write_config_source(&source(&m, &format!("token_file = \"{}\"", tf.display())));
    let c = w.json(&["check", "web"]);
    assert_eq!(c["current"], "1.0.0");
    assert_eq!(c["update_available"], false);
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let list = MockGithub::list_path();
    m.fail(&list, &[Fault::Status(500), Fault::Status(502)]);
    let asset = m.asset_id("v1.0.0", "web-1.0.0.tar.gz");
    m.fail(&MockGithub::asset_path(asset), &[Fault::Status(503)]);
    // A sidecar whose download breaks off half-way is fetched again.
    let sums = m.asset_id("v1.0.0", "SHA256SUMS");
    m.fail(
        &format!("storage:/github-production-release-asset/{sums}"),
        &[Fault::Truncate],
    );
    let t = Instant::now();
    w.ok(&["install", "web", "latest"]);
    assert!(t.elapsed() < Duration::from_secs(20));
    let codes: Vec<u16> = m.api_hits(&list).iter().map(|s| s.status).collect();
    assert_eq!(codes, [500, 502, 200]);
    let codes: Vec<u16> = m
        .api_hits(&MockGithub::asset_path(asset))
        .iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(codes, [503, 302]);
    assert_eq!(installed(&w), ["1.0.0"]);

    // A 404 is an answer, not a failure: asked once, exit 5.
    m.fail(&list, &[Fault::Status(404)]);
    let before = m.api_hits(&list).len();
    let (code, _, err) = w.run(&["check", "web"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("404") && err.contains("acme/web"), "{err}");
    assert_eq!(m.api_hits(&list).len(), before + 1, "a 404 was retried");
    // So is a 400 (exit 1).
    m.fail(&list, &[Fault::Status(400)]);
    let (code, _, err) = w.run(&["check", "web"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(m.api_hits(&list).len(), before + 2, "a 400 was retried");

    // Server errors that persist give up after a handful of tries.
    m.fail(&list, &[Fault::Status(500); 10]);
    let (code, _, err) = w.run(&["check", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("500") && err.contains("retry later"), "{err}");
    let n = m.api_hits(&list).len() - before - 2;
    assert!((3..=6).contains(&n), "{n} attempts");
}

#[test]
fn a_short_rate_limit_is_waited_out_once() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let list = MockGithub::list_path();
    let reset = in_secs(2);
    m.fail(&list, &[Fault::RateLimit { reset_at: reset }]);
    w.ok(&["install", "web", "latest"]);
    let hits = m.api_hits(&list);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].status, 403);
    assert!(
        epoch(hits[1].at) >= reset as f64,
        "retried at {} before the reset at {reset}",
        epoch(hits[1].at)
    );

    // A secondary limit with Retry-After.
    m.fail(&list, &[Fault::RetryAfter(1)]);
    w.ok(&["check", "web"]);
    let hits = m.api_hits(&list);
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[2].status, 429);
    assert!(hits[3].at.duration_since(hits[2].at).unwrap() >= Duration::from_secs(1));

    // Limited again after the wait: reported, not hammered.
    m.fail(
        &list,
        &[
            Fault::RateLimit {
                reset_at: in_secs(1),
            },
            Fault::RateLimit {
                reset_at: in_secs(3600),
            },
        ],
    );
    let (code, _, err) = w.run(&["check", "web"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rate limit"), "{err}");
    assert_eq!(m.api_hits(&list).len(), 6);
}

#[test]
fn a_long_rate_limit_is_reported_with_its_reset_time() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let list = MockGithub::list_path();
    let reset = in_secs(1800);
    m.fail(&list, &[Fault::RateLimit { reset_at: reset }]);
    let t = Instant::now();
    let (code, out, err) = w.run(&["install", "web", "latest", "--json"]);
    assert!(t.elapsed() < Duration::from_secs(10), "it waited");
    assert_eq!(code, 1, "{err}");
    let when = jiff::Timestamp::from_second(reset).unwrap().to_string();
    assert!(
        err.contains("rate limit reached") && err.contains(&when),
        "{err}"
    );
    assert!(
        err.contains("in 30 min") && err.contains("token_env"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(
        m.api_hits(&list).len(),
        1,
        "a rate-limited request was repeated"
    );
    assert!(installed(&w).is_empty());
}

#[test]
fn unchanged_listings_are_conditional_requests() {
    let (w, m) = setup();
    m.with(|s| s.page_size = 1);
    publish(&w, &m, "v1.0.0");
    publish(&w, &m, "v1.1.0");
    let cfg = GithubSourceConfig {
        api_url: m.api_url(),
        ..GithubSourceConfig::new("acme", "web")
    };
    let src = GithubSource::new("web", cfg);
    let first = src.releases().unwrap();
    assert_eq!(first.len(), 2);
    let n = m.seen().len();
    assert_eq!(n, 2, "two pages");
    let second = src.releases().unwrap();
    assert_eq!(first, second);
    let seen = m.seen();
    for (old, new) in seen[..2].iter().zip(&seen[2..]) {
        assert_eq!(new.status, 304, "{new:?}");
        let etag = new.header("if-none-match").expect("If-None-Match sent");
        assert!(etag.starts_with("W/\""), "{etag}");
        assert_eq!(old.header("if-none-match"), None);
    }
    // A new release changes the first page: fetched again, and seen.
    let r = packed(&w, &m, "v1.2.0");
    m.with(|s| s.releases.insert(0, r));
    let third = src.releases().unwrap();
    assert_eq!(third.len(), 3);
    assert_eq!(m.seen()[4].status, 200);
}

#[test]
fn the_asset_streams_lazily_and_carries_the_api_digest() {
    let (w, m) = setup();
    m.with(|s| s.redirect = false);
    publish(&w, &m, "v1.0.0");
    let mut cfg = GithubSourceConfig::new("acme", "web");
    cfg.api_url = m.api_url();
    cfg.asset = "web-{version}*.tar.gz".into();
    let src = GithubSource::new("web", cfg);
    let info = src
        .resolve(&switchyard::testing::VersionRequest::Latest, false)
        .unwrap();
    let asset = m.asset_id("v1.0.0", "web-1.0.0.tar.gz");
    let fetched = src.fetch(&info).unwrap();
    assert_eq!(fetched.asset_name, "web-1.0.0.tar.gz");
    let names: Vec<_> = fetched.sidecars.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.minisig",
            "web-1.0.0.tar.gz.minisig"
        ]
    );
    drop(fetched);
    assert!(
        m.api_hits(&MockGithub::asset_path(asset)).is_empty(),
        "the asset was requested before the first read"
    );

    let mut fetched = src.fetch(&info).unwrap();
    let mut bytes = Vec::new();
    fetched.asset.read_to_end(&mut bytes).unwrap();
    let expected = std::fs::read(w.drop_dir.join("v1.0.0/web-1.0.0.tar.gz")).unwrap();
    assert_eq!(bytes, expected);
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&expected).into();
    assert_eq!(fetched.asset_digest, Some(digest));
    assert_eq!(fetched.asset_size, Some(expected.len() as u64));
    assert_eq!(m.api_hits(&MockGithub::asset_path(asset)).len(), 1);
}

#[test]
fn missing_and_ambiguous_assets_are_explained() {
    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    r.assets.retain(|a| !a.name.ends_with(".tar.gz"));
    m.push(r);
    w.write_config_source(&source(&m, ""));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("web-1.0.0.tar.gz") && err.contains("SHA256SUMS"),
        "{err}"
    );

    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    r.assets
        .push(m.asset("web-1.0.0-debug.tar.gz", b"x".to_vec()));
    m.push(r);
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-*.tar.gz\"\n",
        m.api_url()
    ));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("web-1.0.0.tar.gz, web-1.0.0-debug.tar.gz") && err.contains("exactly one"),
        "{err}"
    );
    assert!(installed(&w).is_empty());
}

#[test]
fn a_tampered_asset_is_refused_by_the_trust_checks() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let id = m.asset_id("v1.0.0", "web-1.0.0.tar.gz");
    let mut bad = std::fs::read(w.drop_dir.join("v1.0.0/web-1.0.0.tar.gz")).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0x40;
    let digest = format!("sha256:{}", switchyard::testing::sha256_hex(&bad));
    m.with(|s| {
        s.tampered.insert(id, bad);
        // Replaced on GitHub itself: even the API's digest matches the new bytes.
        for a in s.releases.iter_mut().flat_map(|r| r.assets.iter_mut()) {
            if a.id == id {
                a.digest = Some(Some(digest.clone()));
            }
        }
    });
    let (code, _, err) = w.run(&["deploy", "web", "latest"]);
    assert_eq!(code, 3, "{err}");
    assert!(installed(&w).is_empty(), "{:?}", installed(&w));
    assert!(w.link("current").is_none());
    w.assert_no_debris();
    w.assert_outside_untouched();
}

#[test]
fn unsafe_or_incomplete_releases_are_refused() {
    // An asset whose upload did not finish.
    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    for a in &mut r.assets {
        if a.name.ends_with(".tar.gz") {
            a.state = "starter".into();
        }
    }
    m.push(r);
    w.write_config_source(&source(&m, ""));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"starter\"") && err.contains("uploaded"),
        "{err}"
    );
    assert!(
        m.storage_hits().is_empty(),
        "a refused release was downloaded"
    );
    assert!(installed(&w).is_empty());

    // A release name that is not a safe path component.
    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    r.name = Some("../../etc/cron.d/x".into());
    m.push(r);
    w.write_config_source(&source(&m, ""));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("release name") && err.contains("refused"),
        "{err}"
    );
    assert!(installed(&w).is_empty());

    // An asset name that is not one (a wildcard would match it).
    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    for a in &mut r.assets {
        if a.name == "web-1.0.0.tar.gz" {
            a.name = "../web-1.0.0.tar.gz".into();
        }
    }
    m.push(r);
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"*web-{{version}}.tar.gz\"\n",
        m.api_url()
    ));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("asset name") && err.contains("safe single path component"),
        "{err}"
    );
    assert!(installed(&w).is_empty());

    // A sidecar that does not match the digest the API lists for it.
    let (w, m) = setup();
    let mut r = packed(&w, &m, "v1.0.0");
    for a in &mut r.assets {
        if a.name == "SHA256SUMS" {
            a.digest = Some(Some(format!("sha256:{}", "0".repeat(64))));
        }
    }
    m.push(r);
    w.write_config_source(&source(&m, ""));
    let (code, _, err) = w.run(&["install", "web", "latest"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("SHA256SUMS does not match the digest"),
        "{err}"
    );
    assert!(installed(&w).is_empty());

    // A tag that is not a safe name is not a version: ignored, not chosen.
    let (w, m) = setup();
    let evil = m.release(
        "v9.9.9/../../x",
        vec![m.asset("web-9.9.9.tar.gz", b"x".to_vec())],
    );
    m.push(evil);
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    assert_eq!(w.json(&["install", "web", "latest"])["version"], "1.0.0");
    w.assert_outside_untouched();
}

#[test]
fn github_enterprise_base_path_is_kept() {
    let (w, m) = setup();
    m.with(|s| s.page_size = 1);
    publish(&w, &m, "v1.0.0");
    publish(&w, &m, "v1.1.0");
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}/api/v3/\"\nasset = \"web-{{version}}.tar.gz\"\n",
        m.api_url()
    ));
    assert_eq!(w.json(&["check", "web"])["latest"], "1.1.0");
    let paths: Vec<_> = m.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/v3/repos/acme/web/releases",
            "/api/v3/repositories/1000/releases"
        ]
    );
}

#[test]
fn unreachable_api_is_reported_after_retries() {
    let w = World::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"http://127.0.0.1:{port}\"\n"
    ));
    let (code, _, err) = w.run(&["check", "web"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach") && err.contains("retried"),
        "{err}"
    );
}

#[test]
fn check_works_for_a_release_folder() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.simple_release("v2.0.0-beta.1");
    let c = w.json(&["check", "web"]);
    assert_eq!(c["current"], serde_json::Value::Null);
    assert_eq!(c["latest"], "1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let c = w.json(&["check", "web"]);
    assert_eq!(c["current"], "1.0.0");
    assert_eq!(c["latest"], "1.1.0");
    assert_eq!(c["behind"], 1);
    assert_eq!(c["major_upgrade"], false);
    assert_eq!(c["published_at"], serde_json::Value::Null);
    assert_eq!(c["notes"], serde_json::Value::Null);
    assert!(w.ok(&["check", "web"]).contains("1 version behind"));
    // The dir source has channels too.
    let cfg = std::fs::read_to_string(&w.config).unwrap().replace(
        "[apps.web.source]\n",
        "[apps.web.source]\nchannel = \"prerelease\"\n",
    );
    std::fs::write(&w.config, cfg).unwrap();
    let c = w.json(&["check", "web"]);
    assert_eq!(c["latest"], "2.0.0-beta.1");
    assert_eq!(c["major_upgrade"], true);
}

#[test]
fn github_source_configuration_is_checked() {
    let w = World::new();
    w.write_config_source(
        "github = \"acme\"\ntoken = \"ghp_inline\"\nasset = \"web-{ver}.tar.gz\"\nchannel = \"beta\"\ntoken_file = \"relative/token\"\napi_url = \"ftp://x\"\n",
    );
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "{out}");
    for needle in [
        ".toml:6:10: apps.web.source.github",
        ".toml:7:9: apps.web.source.token: a token must never",
        ".toml:8:9: apps.web.source.asset",
        ".toml:9:11: apps.web.source.channel",
        ".toml:10:14: apps.web.source.token_file",
        ".toml:11:11: apps.web.source.api_url",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    assert!(!out.contains("ghp_inline"), "the token was echoed:\n{out}");
    w.write_config_source("github = \"acme/web\"\ndir = \"/srv/drop\"\n");
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    assert!(out.contains("exactly one source"), "{out}");
    w.write_config_source("dir = \"/srv/drop\"\ntoken_env = \"GITHUB_TOKEN\"\n");
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    assert!(out.contains("only to a github source"), "{out}");
    w.write_config_source("github = \"acme/web\"\nasset = \"web-{version}-{target}.tar.gz\"\nchannel = \"prerelease\"\ntoken_env = \"GITHUB_TOKEN\"\n");
    w.ok(&["config", "check"]);
}

/// The API's `digest` is checked against the streamed bytes too: a release
/// whose files are self-consistent but differ from what GitHub recorded is
/// refused.
#[test]
fn the_api_digest_is_checked_against_the_stream() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let id = m.asset_id("v1.0.0", "web-1.0.0.tar.gz");
    m.with(|s| {
        for a in s.releases.iter_mut().flat_map(|r| r.assets.iter_mut()) {
            if a.id == id {
                a.digest = Some(Some(format!("sha256:{}", "ab".repeat(32))));
            }
        }
    });
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("release API"), "{err}");
    assert!(installed(&w).is_empty());
    w.assert_no_debris();
}

/// A verified download is cached: reinstalling the same release (here after
/// a failed warm hook removed it) does not download the asset again, and
/// pruning drops the cache with the release.
#[test]
fn the_same_asset_is_never_downloaded_twice() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    let asset_path = MockGithub::asset_path(m.asset_id("v1.0.0", "web-1.0.0.tar.gz"));
    let fetches = || m.api_hits(&asset_path).len();
    w.write_config_source(&source(&m, ""));
    let cfg = std::fs::read_to_string(&w.config).unwrap();
    // A warm hook that fails: the release is removed and quarantined.
    std::fs::write(
        &w.config,
        cfg.replace(
            "[apps.web.trust]",
            "[apps.web.hooks]\nwarm = 'exit 1'\n\n[apps.web.trust]",
        ),
    )
    .unwrap();
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 7, "{err}");
    assert_eq!(fetches(), 1);
    assert!(
        w.root
            .join(".switchyard/cache/1.0.0/web-1.0.0.tar.gz")
            .exists()
    );
    // Fixed hook, forced past the quarantine: installed from the cache.
    std::fs::write(&w.config, &cfg).unwrap();
    w.ok(&["deploy", "web", "1.0.0", "--force"]);
    assert_eq!(fetches(), 1, "the asset was downloaded again");
    assert_eq!(w.current_content(), "1.0.0\n");
    // A damaged cache entry is caught by the same checks, dropped, and the
    // next try downloads again.
    let cached = w.root.join(".switchyard/cache/1.0.0/web-1.0.0.tar.gz");
    let mut b = std::fs::read(&cached).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    std::fs::write(&cached, b).unwrap();
    std::fs::remove_dir_all(w.root.join("releases/1.0.0")).ok();
    let _ = std::fs::remove_file(w.root.join("current"));
    let (code, _, _) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 3);
    assert!(!cached.exists(), "the damaged copy is dropped");
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(fetches(), 2);
}

/// A download that breaks off in the middle of the archive is reported as
/// what it is, a failed download (exit 1: the agent tries again), not as a
/// corrupt or unknown archive (exit 3: never retried); nothing is
/// installed, and the next try succeeds.
#[test]
fn an_asset_download_cut_mid_stream_says_so() {
    let (w, m) = setup();
    publish(&w, &m, "v1.0.0");
    w.write_config_source(&source(&m, ""));
    let asset = m.asset_id("v1.0.0", "web-1.0.0.tar.gz");
    let storage = format!("storage:/github-production-release-asset/{asset}");
    m.fail(&storage, &[Fault::CutHalfway]);
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broke off"), "{err}");
    assert!(
        !err.contains("corrupt") && !err.contains("not an archive"),
        "{err}"
    );
    assert!(installed(&w).is_empty());
    // Before the request is even answered (retries exhausted).
    m.fail(&storage, &[Fault::Truncate; 5]);
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("not an archive"), "{err}");
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(installed(&w), ["1.0.0"]);
}
