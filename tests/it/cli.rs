//! The operator's commands, driven through the real binary on temporary roots.
#![allow(clippy::disallowed_methods)]

use crate::common::World;

#[test]
fn install_promote_deploy_revert_prune() {
    let w = World::new();
    for v in ["v1.0.0", "v1.1.0", "v1.2.0", "1.3.0", "v1.4.0"] {
        w.simple_release(v);
    }
    let r = w.json(&["install", "web", "1.0.0"]);
    assert_eq!(r["installed"], true);
    assert!(w.root.join("releases/1.0.0/VERSION").exists());
    assert!(
        w.link("current").is_none(),
        "install must not touch current"
    );
    // Installing again is a no-op.
    assert_eq!(w.json(&["install", "web", "v1.0.0"])["installed"], false);

    w.ok(&["promote", "web", "1.0.0"]);
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));
    assert!(w.link("last-good").is_none());

    let d = w.json(&["deploy", "web", "1.1.0"]);
    assert_eq!(d["to"], "1.1.0");
    assert_eq!(d["state"], "completed");
    assert_eq!(w.link("current").as_deref(), Some("releases/1.1.0"));
    assert_eq!(w.link("last-good").as_deref(), Some("releases/1.0.0"));
    assert_eq!(w.current_content(), "1.1.0\n");
    // Shared paths are linked into every release, relative to it.
    assert_eq!(
        std::fs::read_link(w.root.join("releases/1.1.0/storage"))
            .unwrap()
            .to_str(),
        Some("../../shared/storage")
    );

    let r = w.json(&["revert", "web"]);
    assert_eq!(r["to"], "1.0.0");
    assert_eq!(w.current_content(), "1.0.0\n");
    // Nothing was live before 1.0.0: no rollback target any more (a second
    // revert is not a toggle back to 1.1.0).
    assert!(w.link("last-good").is_none());
    w.ok(&["unhold", "web"]);

    // latest is the highest by semver (1.4.0), and deploy prunes to keep 3.
    w.ok(&["deploy", "web", "latest"]);
    // Older than the highest verified: refused unless asked for.
    let (code, _, err) = w.run(&["install", "web", "1.2.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("downgrade protection"), "{err}");
    w.ok(&["install", "web", "1.2.0", "--allow-downgrade"]);
    w.ok(&["install", "web", "1.3.0", "--allow-downgrade"]);
    assert_eq!(w.current_content(), "1.4.0\n");
    let pruned = w.json(&["prune", "web"]);
    // Five installed, keep 3 newest (1.2, 1.3, 1.4); 1.0.0 is last-good, so kept.
    assert_eq!(pruned["removed"], serde_json::json!(["1.1.0"]));
    let list = w.json(&["list", "web"]);
    let versions: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["1.4.0", "1.3.0", "1.2.0", "1.0.0"]);
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[3]["last_good"], true);
    assert!(!w.root.join(".switchyard/manifests/1.1.0.json").exists());

    let st = w.json(&["status", "web"]);
    assert_eq!(st["current"], "1.4.0");
    assert_eq!(st["last_good"], "1.0.0");
    assert_eq!(st["highest_verified"], "1.4.0");

    let h = w.json(&["history", "web"]);
    let events: Vec<_> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "release.install.completed",
            "release.promote.completed",
            // A manual promote or revert holds the app.
            "app.hold",
            "system.update.started",
            "release.install.completed",
            "release.promote.completed",
            "system.update.completed",
            "release.revert.completed",
            "app.hold",
            "app.unhold",
            "system.update.started",
            "release.install.completed",
            "release.promote.completed",
            "system.update.completed",
            "release.install.failed",
            "release.install.completed",
            "release.install.completed",
            "release.prune.completed",
        ]
    );
    assert_eq!(h[15]["details"]["allow_downgrade"], true);
    // The signature that verified each install is recorded.
    let sig = &h[0]["details"]["signatures"];
    assert_eq!(sig.as_array().unwrap().len(), 2, "{sig}");
    assert!(
        sig[0]["trusted_comment"]
            .as_str()
            .unwrap()
            .contains("tag=v1.0.0")
    );
    assert!(
        h[0]["actor"]["user"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(h[0]["actor"]["uid"].is_u64());
    w.ok(&["audit", "verify", "web"]);
    w.assert_no_debris();
    w.assert_consistent();
}

#[test]
fn revert_to_named_release_and_errors() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v2.0.0");
    let (code, _, err) = w.run(&["revert", "web"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("nothing is live"), "{err}");

    w.ok(&["deploy", "web", "1.0.0"]);
    // A major upgrade needs --allow-major.
    let (code, _, err) = w.run(&["deploy", "web", "2.0.0"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("--allow-major"), "{err}");
    w.ok(&["deploy", "web", "2.0.0", "--allow-major"]);
    w.ok(&["revert", "web", "--to", "1.0.0"]);
    assert_eq!(w.current_content(), "1.0.0\n");

    let (code, _, err) = w.run(&["promote", "web", "3.0.0"]);
    assert_eq!(code, 5);
    assert!(
        err.contains("not installed") && err.contains("switchyard install web 3.0.0"),
        "{err}"
    );
    let (code, _, err) = w.run(&["install", "web", "9.9.9"]);
    assert_eq!(code, 5, "{err}");
    let (code, _, err) = w.run(&["status", "nope"]);
    assert_eq!(code, 5);
    assert!(err.contains("configured apps: web"), "{err}");
    let (code, _, err) = w.run(&["promote", "web", "../../etc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("safe single path component"), "{err}");
}

fn unsign(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "minisig") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn checksum_mismatch_removes_everything() {
    let w = World::new();
    w.allow_unsigned();
    let dir = w.simple_release("v1.0.0");
    unsign(&dir);
    let sums = dir.join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    let bad = format!("{}{}", "0".repeat(64), &text[64..]);
    std::fs::write(&sums, bad).unwrap();
    let (code, out, err) = w.run(&["install", "web", "1.0.0", "--json"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["exit_code"], 3);
    assert!(!w.root.join("releases/1.0.0").exists());
    assert!(!w.root.join(".switchyard/manifests/1.0.0.json").exists());
    w.assert_no_debris();
    let h = w.json(&["history", "web"]);
    assert_eq!(h[0]["event"], "release.install.failed");
    assert_eq!(h[0]["outcome"], "failed");

    // A flipped byte in the asset, with the original sums, is caught too.
    let w = World::new();
    w.allow_unsigned();
    let dir = w.simple_release("v1.0.0");
    unsign(&dir);
    let asset = dir.join("web-1.0.0.tar.gz");
    let mut bytes = std::fs::read(&asset).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1; // the gzip trailer: unpacking alone might not notice
    std::fs::write(&asset, bytes).unwrap();
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(!w.root.join("releases/1.0.0").exists());
    w.assert_no_debris();
}

#[test]
fn missing_sums_and_ambiguous_folders() {
    // A per-asset signature is enough on its own.
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    std::fs::remove_file(dir.join("SHA256SUMS.minisig")).unwrap();
    w.ok(&["install", "web", "1.0.0"]);
    // Without a signature or checksums there is nothing to verify against.
    let w = World::new();
    w.allow_unsigned();
    let dir = w.simple_release("v1.0.0");
    unsign(&dir);
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 3);
    assert!(err.contains("has no SHA256SUMS"), "{err}");

    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("1.0.0");
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_ne!(code, 0);
    assert!(err.contains("both"), "{err}");
}

#[test]
fn bsd_tag_sums_are_accepted() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    std::fs::remove_file(dir.join("SHA256SUMS.minisig")).unwrap();
    let text = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let (sum, name) = text.trim().split_once("  ").unwrap();
    std::fs::write(dir.join("SHA256SUMS"), format!("SHA256 ({name}) = {sum}\n")).unwrap();
    w.ok(&["install", "web", "1.0.0"]);
}

#[test]
fn missing_shared_file_is_explained() {
    let w = World::new();
    let cfg = std::fs::read_to_string(&w.config).unwrap().replace(
        "dirs = [\"storage\"]",
        "dirs = [\"storage\"]\nfiles = [\".env\"]",
    );
    std::fs::write(&w.config, cfg).unwrap();
    w.simple_release("v1.0.0");
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_ne!(code, 0);
    assert!(err.contains("shared/.env does not exist"), "{err}");
    w.assert_no_debris();
    std::fs::create_dir_all(w.root.join("shared")).unwrap();
    std::fs::write(w.root.join("shared/.env"), "SECRET=1\n").unwrap();
    w.ok(&["deploy", "web", "1.0.0"]);
    assert_eq!(
        std::fs::read_to_string(w.root.join("current/.env")).unwrap(),
        "SECRET=1\n"
    );
}

#[test]
fn config_check_locates_every_problem() {
    let w = World::new();
    w.ok(&["config", "check"]);
    std::fs::write(
        &w.config,
        "[apps.web]\nroot = \"relative\"\nkeep_releases = 0\nsource.dir = \"/d\"\n[apps.web.shared]\ndirs = [\"../x\"]\n",
    )
    .unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    for needle in [".toml:2:8: ", ".toml:3:17: ", ".toml:6:9: "] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    std::fs::write(
        &w.config,
        "[apps.web]\nroot = \"/r\"\nsource.dir = \"/d\"\ncolour = 1\n",
    )
    .unwrap();
    let (code, out, _) = w.run(&["config", "check", "--json"]);
    assert_eq!(code, 2);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let colour = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"].as_str().unwrap().contains("colour"))
        .expect("the unknown key is reported");
    assert_eq!(colour["line"], 4);
    // Syntax errors are located too.
    std::fs::write(&w.config, "[apps.web\nroot = 1\n").unwrap();
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    assert!(out.contains(".toml:1:"), "{out}");
    // A missing file says how to point at another.
    let out = assert_cmd::Command::cargo_bin("switchyard")
        .unwrap()
        .args(["--config", "/nonexistent/s.toml", "config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("/nonexistent/s.toml") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn config_from_environment() {
    let w = World::new();
    let out = assert_cmd::Command::cargo_bin("switchyard")
        .unwrap()
        .env("SWITCHYARD_CONFIG", &w.config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_teaches() {
    let w = World::new();
    let out = w.ok(&["--help"]);
    for needle in ["demo", "promote", "revert", "Exit codes"] {
        assert!(out.contains(needle), "{needle} missing from --help");
    }
    let (code, _, _) = w.run(&["frobnicate"]);
    assert_eq!(code, 2);
}

#[test]
fn pack_is_reproducible_through_the_cli() {
    let w = World::new();
    let src = w.tmp.path().join("site");
    std::fs::create_dir_all(src.join("public")).unwrap();
    std::fs::write(src.join("public/a.txt"), "a").unwrap();
    let out1 = w.tmp.path().join("o1");
    let out2 = w.tmp.path().join("o2");
    let a = w.json(&[
        "pack",
        src.to_str().unwrap(),
        "--version",
        "v1.0.0",
        "--out",
        out1.to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(src.join("public/a.txt"), "a").unwrap();
    let b = w.json(&[
        "pack",
        src.to_str().unwrap(),
        "--version",
        "v1.0.0",
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(a["sha256"], b["sha256"]);
    // The output is a release folder install reads.
    assert!(out1.join("v1.0.0/site-1.0.0.tar.gz").exists());
    assert!(out1.join("v1.0.0/SHA256SUMS").exists());
}

#[test]
fn verify_reports_drift() {
    let w = World::new();
    w.release(
        "v1.0.0",
        &[
            ("VERSION", "1.0.0\n"),
            ("public/index.html", "<h1>1</h1>\n"),
            ("public/app.js", "x()\n"),
        ],
    );
    w.ok(&["deploy", "web", "1.0.0"]);
    let r = w.json(&["verify", "web"]);
    assert_eq!(r["drift"]["changed"], serde_json::json!([]));
    assert!(r["entries"].as_u64().unwrap() >= 4);
    let rel = w.root.join("releases/1.0.0");
    std::fs::write(rel.join("public/index.html"), "<h1>defaced</h1>\n").unwrap();
    std::fs::remove_file(rel.join("public/app.js")).unwrap();
    std::fs::write(rel.join("public/shell.php"), "<?php system($_GET['c']);").unwrap();
    let (code, out, err) = w.run(&["verify", "web", "1.0.0", "--json"]);
    assert_eq!(code, 3, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        r["drift"]["changed"],
        serde_json::json!(["public/index.html"])
    );
    assert_eq!(r["drift"]["missing"], serde_json::json!(["public/app.js"]));
    assert_eq!(r["drift"]["added"], serde_json::json!(["public/shell.php"]));
    let (code, _, _) = w.run(&["verify", "web", "9.9.9"]);
    assert_eq!(code, 5);
}

#[test]
fn hardlink_dedup_shares_identical_files_read_only() {
    use std::os::unix::fs::MetadataExt;
    let w = World::with_extra("dedup = \"hardlink\"");
    let big = "x".repeat(200_000);
    let files = |v: &str| -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = (0..20)
            .map(|i| (format!("assets/{i}.txt"), format!("{i}{big}")))
            .collect();
        f.push(("VERSION".into(), format!("{v}\n")));
        f
    };
    for v in ["1.0.0", "1.0.1"] {
        let owned = files(v);
        let refs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        w.release(&format!("v{v}"), &refs);
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["deploy", "web", "1.0.1"]);
    let a = std::fs::metadata(w.root.join("releases/1.0.0/assets/3.txt")).unwrap();
    let b = std::fs::metadata(w.root.join("releases/1.0.1/assets/3.txt")).unwrap();
    assert_eq!(a.ino(), b.ino(), "identical files share one inode");
    assert_eq!(b.mode() & 0o222, 0, "hardlinked files are read-only");
    let v0 = std::fs::metadata(w.root.join("releases/1.0.0/VERSION")).unwrap();
    let v1 = std::fs::metadata(w.root.join("releases/1.0.1/VERSION")).unwrap();
    assert_ne!(v0.ino(), v1.ino(), "a changed file is not shared");
    // list reports the disk actually used: the second release is small.
    let list = w.json(&["list", "web"]);
    let newest = &list[0];
    assert_eq!(newest["version"], "1.0.1");
    let unique = newest["disk"]["unique_bytes"].as_u64().unwrap();
    let shared = newest["disk"]["shared_bytes"].as_u64().unwrap();
    assert!(shared >= 20 * 200_000, "{newest}");
    assert!(
        unique < shared / 10,
        "extra disk {unique} vs {shared} shared"
    );
    // Both releases still verify against their manifests, and revert works.
    w.ok(&["verify", "web", "1.0.0"]);
    w.ok(&["verify", "web", "1.0.1"]);
    w.ok(&["revert", "web"]);
    assert_eq!(w.current_content(), "1.0.0\n");
}

#[test]
fn a_release_of_only_public_keeps_its_directory_unless_asked() {
    // Every entry under public/: a name that carries neither the version
    // nor the app's, so by default it is content and stays;
    // strip_top_dir = true strips it anyway.
    let w = World::with_extra("unpack.strip_top_dir = true");
    w.release(
        "v1.0.0",
        &[("public/index.html", "hi\n"), ("public/app.css", "x\n")],
    );
    w.ok(&["deploy", "web", "1.0.0"]);
    assert_eq!(
        std::fs::read_to_string(w.root.join("current/index.html")).unwrap(),
        "hi\n"
    );
    let w = World::new();
    w.release(
        "v1.0.0",
        &[("public/index.html", "hi\n"), ("public/app.css", "x\n")],
    );
    w.ok(&["deploy", "web", "1.0.0"]);
    assert!(
        w.root.join("current/public/index.html").exists(),
        "kept by default"
    );
}

/// An error names its path and prints its cause exactly once.
#[test]
fn a_missing_config_names_the_file_and_the_os_error_once() {
    let out = assert_cmd::Command::cargo_bin("switchyard")
        .unwrap()
        .args(["--config", "/nonexistent/x.toml", "status", "web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/x.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// Output that cannot be written never panics: a full disk behind stdout is
/// an error (saying when the command's change was made anyway), a closed
/// pipe ends quietly with exit 0, as `| head` users expect.
#[test]
fn stdout_full_or_closed_never_panics() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["deploy", "web", "1.1.0"]);
    let cmd = || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"));
        c.arg("--config")
            .arg(&w.config)
            .env("SWITCHYARD_NO_AGENT", "1");
        c
    };
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = cmd().args(["status", "web"]).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("writing the output failed"), "{err}");

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = cmd().args(["revert", "web"]).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("change was made and stands"), "{err}");
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));

    // `switchyard list web | true`: the reader is gone before we write.
    let (r, wr) = nix::unistd::pipe().unwrap();
    drop(r);
    let out = cmd()
        .args(["history", "web"])
        .stdout(std::process::Stdio::from(wr))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Deploying the live version says so and exits 0, instead of failing as a
/// downgrade; nothing is recorded, nothing runs.
#[test]
fn deploying_the_live_version_says_it_is_already_live() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    let before = w.json(&["history", "web"]).as_array().unwrap().len();
    let out = w.ok(&["deploy", "web", "1.0.0"]);
    assert!(out.contains("web 1.0.0 is already live"), "{out}");
    assert_eq!(
        w.json(&["history", "web"]).as_array().unwrap().len(),
        before
    );
    let j = w.json(&["deploy", "web", "v1.0.0"]);
    assert_eq!(j["already_live"], true, "{j}");
}
