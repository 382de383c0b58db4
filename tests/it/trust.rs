//! Signatures end to end through the binary: interop with the real `minisign`
//! CLI in both directions, and every refusal leaves nothing in `releases/`.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

use crate::common::World;

/// The minisign CLI is installed; otherwise the caller skips (see
/// [`crate::common::require_tool`]).
fn have_minisign() -> bool {
    crate::common::require_tool("minisign").is_some()
}

fn minisign(dir: &Path, args: &[&str]) {
    let out = Command::new("minisign")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minisign {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unsign(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "minisig") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// Asserts an install of 1.0.0 is refused with exit 3, naming `why`, and
/// leaves nothing behind.
fn refused(w: &World, version: &str, why: &str) -> String {
    let (code, out, err) = w.run(&["install", "web", version]);
    assert_eq!(
        code, 3,
        "expected a verification failure ({why}):\n{out}{err}"
    );
    assert!(err.contains(why), "message should mention {why:?}:\n{err}");
    assert!(!w.root.join("releases").join(version).exists());
    w.assert_no_debris();
    let h = w.json(&["history", "web"]);
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "release.install.failed");
    assert!(last["error"].as_str().unwrap().contains(why));
    err
}

#[test]
fn releases_signed_by_the_minisign_cli_install() {
    if !have_minisign() {
        return;
    }
    let w = World::new();
    let keys = w.tmp.path().join("cli-keys");
    std::fs::create_dir_all(&keys).unwrap();
    minisign(&keys, &["-G", "-W", "-p", "cli.pub", "-s", "cli.key"]);
    let cli_pub = std::fs::read_to_string(keys.join("cli.pub")).unwrap();
    let cli_b64 = cli_pub.lines().nth(1).unwrap().to_string();
    let sk = keys.join("cli.key");

    // Prehashed (the default) over the asset only, no SHA256SUMS at all.
    let dir = w.simple_release("v1.0.0");
    unsign(&dir);
    std::fs::remove_file(dir.join("SHA256SUMS")).unwrap();
    minisign(
        &dir,
        &["-S", "-s", sk.to_str().unwrap(), "-m", "web-1.0.0.tar.gz"],
    );
    // Legacy over the checksum manifest only.
    let dir2 = w.simple_release("v1.1.0");
    unsign(&dir2);
    minisign(
        &dir2,
        &["-S", "-l", "-s", sk.to_str().unwrap(), "-m", "SHA256SUMS"],
    );

    // The CLI's key, pinned through key_files.
    let pubfile = keys.join("cli.pub");
    w.write_config_with_trust("", &format!("key_files = [\"{}\"]\n", pubfile.display()));
    w.ok(&["install", "web", "1.0.0"]);
    let st = w.json(&["deploy", "web", "1.0.0"]);
    assert_eq!(st["to"], "1.0.0");
    let status = w.json(&["status", "web"]);
    let sig = &status["current_signatures"][0];
    assert_eq!(sig["legacy"], false);
    assert!(
        sig["trusted_comment"]
            .as_str()
            .unwrap()
            .starts_with("timestamp:")
    );

    // Legacy is refused by default...
    refused(&w, "1.1.0", "legacy minisign signature");
    // ...and accepted when allowed, with the key inline this time.
    w.write_config_with_trust(
        "",
        &format!("keys = [\"{cli_b64}\"]\nallow_legacy_signatures = true\n"),
    );
    w.ok(&["install", "web", "1.1.0"]);
    let h = w.json(&["history", "web"]);
    let last = h.as_array().unwrap().last().unwrap();
    assert_eq!(last["details"]["signatures"][0]["legacy"], true);
    assert_eq!(last["details"]["signatures"][0]["file"], "SHA256SUMS");
}

#[test]
fn switchyard_signatures_verify_with_the_minisign_cli() {
    if !have_minisign() {
        return;
    }
    let w = World::new();
    let out = w.tmp.path().join("k");
    let j = w.json(&["keygen", "--out", out.to_str().unwrap()]);
    let public = j["public_key"].as_str().unwrap().to_string();
    let file = w.tmp.path().join("artifact.bin");
    std::fs::write(&file, vec![42u8; 100_000]).unwrap();
    w.ok(&[
        "sign",
        file.to_str().unwrap(),
        "--key",
        out.join("switchyard.key").to_str().unwrap(),
    ]);
    let dir = w.tmp.path();
    // With the public key file and with the key string.
    minisign(
        dir,
        &[
            "-V",
            "-p",
            out.join("switchyard.pub").to_str().unwrap(),
            "-m",
            "artifact.bin",
        ],
    );
    minisign(dir, &["-V", "-P", &public, "-m", "artifact.bin"]);
    // Our secret key signs with the CLI, and we accept that.
    minisign(
        dir,
        &[
            "-S",
            "-s",
            out.join("switchyard.key").to_str().unwrap(),
            "-m",
            "artifact.bin",
            "-x",
            "cli.minisig",
        ],
    );
    minisign(
        dir,
        &[
            "-V",
            "-P",
            &public,
            "-m",
            "artifact.bin",
            "-x",
            "cli.minisig",
        ],
    );
    // A keygen that would overwrite a key refuses.
    let (code, _, err) = w.run(&["keygen", "--out", out.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("refusing to overwrite"), "{err}");
    // The signatures `pack --key` writes verify with the CLI too.
    let site = w.tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "hi").unwrap();
    let rel = w.tmp.path().join("rel");
    w.ok(&[
        "pack",
        site.to_str().unwrap(),
        "--version",
        "v2.0.0",
        "--out",
        rel.to_str().unwrap(),
        "--key",
        out.join("switchyard.key").to_str().unwrap(),
        "--repo",
        "acme/site",
    ]);
    let rdir = rel.join("v2.0.0");
    minisign(&rdir, &["-V", "-P", &public, "-m", "site-2.0.0.tar.gz"]);
    minisign(&rdir, &["-V", "-P", &public, "-m", "SHA256SUMS"]);
    let sig = std::fs::read_to_string(rdir.join("SHA256SUMS.minisig")).unwrap();
    assert!(
        sig.contains("trusted comment: repo=acme/site tag=v2.0.0 file=SHA256SUMS"),
        "{sig}"
    );
}

#[test]
fn encrypted_key_with_password_from_environment() {
    if !have_minisign() {
        return;
    }
    let w = World::new();
    let out = w.tmp.path().join("k");
    let keygen = w
        .cmd()
        .env("SWITCHYARD_KEY_PASSWORD", "correct horse")
        .args(["keygen", "--password", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let file = w.tmp.path().join("a.txt");
    std::fs::write(&file, "x").unwrap();
    let sk = out.join("switchyard.key");
    let wrong = w
        .cmd()
        .env("SWITCHYARD_KEY_PASSWORD", "wrong")
        .args([
            "sign",
            file.to_str().unwrap(),
            "--key",
            sk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a wrong password must not sign");
    let right = w
        .cmd()
        .env("SWITCHYARD_KEY_PASSWORD", "correct horse")
        .args([
            "sign",
            file.to_str().unwrap(),
            "--key",
            sk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    minisign(
        w.tmp.path(),
        &[
            "-V",
            "-p",
            out.join("switchyard.pub").to_str().unwrap(),
            "-m",
            "a.txt",
        ],
    );
}

#[test]
fn unsigned_release_is_refused_when_required() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    unsign(&dir);
    refused(&w, "1.0.0", "is not signed");
}

#[test]
fn flipped_byte_is_refused() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let asset = dir.join("web-1.0.0.tar.gz");
    let mut b = std::fs::read(&asset).unwrap();
    let n = b.len() / 3;
    b[n] ^= 0x10;
    std::fs::write(&asset, b).unwrap();
    refused(&w, "1.0.0", "web-1.0.0.tar.gz");
}

#[test]
fn untrusted_and_revoked_keys_are_refused() {
    let w = World::new();
    w.simple_release("v1.0.0");
    // Trust another key only.
    let other = w.tmp.path().join("other");
    let (opub, _, oid) = switchyard::testing::keygen(&other, None).unwrap();
    let other_b64 = std::fs::read_to_string(&opub)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    w.write_config_with_trust("", &format!("keys = [\"{other_b64}\"]\n"));
    let err = refused(&w, "1.0.0", "not trusted");
    assert!(
        err.contains(&oid.to_string()),
        "names the trusted key id: {err}"
    );

    // Trusted but revoked: revocation wins. Both keys listed, so rotation works.
    let mine = switchyard::testing::TrustPolicy::new(
        "web",
        std::slice::from_ref(&w.public_b64),
        &[],
        &[],
        true,
        false,
    )
    .unwrap()
    .trusted_ids()[0];
    w.write_config_with_trust(
        "",
        &format!(
            "keys = [\"{}\", \"{other_b64}\"]\nrevoked_keys = [\"{mine}\"]\n",
            w.public_b64
        ),
    );
    let err = refused(&w, "1.0.0", "revoked");
    assert!(err.contains(&mine.to_string()), "{err}");
    // Un-revoked, with two keys trusted at once: accepted.
    w.write_config_with_trust(
        "",
        &format!("keys = [\"{}\", \"{other_b64}\"]\n", w.public_b64),
    );
    w.ok(&["install", "web", "1.0.0"]);
}

#[test]
fn edited_trusted_comment_is_refused() {
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let sig = dir.join("web-1.0.0.tar.gz.minisig");
    let text = std::fs::read_to_string(&sig)
        .unwrap()
        .replace("tag=v1.0.0", "tag=v9.9.9");
    std::fs::write(&sig, text).unwrap();
    refused(&w, "1.0.0", "trusted comment");
}

#[test]
fn damaged_signatures_are_refused() {
    for damage in ["truncate", "garbage", "empty"] {
        let w = World::new();
        let dir = w.simple_release("v1.0.0");
        let sig = dir.join("web-1.0.0.tar.gz.minisig");
        let text = std::fs::read_to_string(&sig).unwrap();
        let new = match damage {
            "truncate" => text[..text.len() / 2].to_string(),
            "garbage" => "\u{0}\u{1}not a signature at all\n".repeat(10),
            _ => String::new(),
        };
        std::fs::write(&sig, new).unwrap();
        refused(&w, "1.0.0", "web-1.0.0.tar.gz.minisig");
    }
}

#[test]
fn manifest_problems_are_refused() {
    // A signed SHA256SUMS whose line does not match the asset.
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let sums = dir.join("SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, format!("{}{}", "1".repeat(64), &text[64..])).unwrap();
    std::fs::remove_file(dir.join("web-1.0.0.tar.gz.minisig")).unwrap();
    switchyard::testing::sign_file(
        &w.secret_key,
        None,
        &sums,
        Some("tag=v1.0.0 file=SHA256SUMS"),
    )
    .unwrap();
    refused(&w, "1.0.0", "checksum mismatch");

    // A signed manifest that does not list the asset.
    let w = World::new();
    let dir = w.simple_release("v1.0.0");
    let sums = dir.join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!("{}  something-else.tar.gz\n", "2".repeat(64)),
    )
    .unwrap();
    std::fs::remove_file(dir.join("web-1.0.0.tar.gz.minisig")).unwrap();
    std::fs::remove_file(dir.join("SHA256SUMS.minisig")).unwrap();
    switchyard::testing::sign_file(
        &w.secret_key,
        None,
        &sums,
        Some("tag=v1.0.0 file=SHA256SUMS"),
    )
    .unwrap();
    refused(&w, "1.0.0", "has no line for web-1.0.0.tar.gz");
}

#[test]
fn replayed_signature_is_refused() {
    // 1.0.0's genuine files published again as 1.1.0.
    let w = World::new();
    let old = w.simple_release("v1.0.0");
    let new = w.drop_dir.join("v1.1.0");
    std::fs::create_dir_all(&new).unwrap();
    for f in ["SHA256SUMS", "SHA256SUMS.minisig"] {
        std::fs::copy(old.join(f), new.join(f)).unwrap();
    }
    std::fs::copy(old.join("web-1.0.0.tar.gz"), new.join("web-1.0.0.tar.gz")).unwrap();
    std::fs::copy(
        old.join("web-1.0.0.tar.gz.minisig"),
        new.join("web-1.0.0.tar.gz.minisig"),
    )
    .unwrap();
    refused(&w, "1.1.0", "replayed");
}

#[test]
fn older_version_needs_allow_downgrade() {
    let w = World::new();
    w.simple_release("v1.0.0");
    w.simple_release("v2.0.0");
    w.ok(&["deploy", "web", "2.0.0", "--allow-major"]);
    refused(&w, "1.0.0", "downgrade protection");
    let (code, _, err) = w.run(&["deploy", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    // revert and promote of installed releases stay allowed.
    w.ok(&["install", "web", "1.0.0", "--allow-downgrade"]);
    w.ok(&["promote", "web", "1.0.0"]);
    w.ok(&["revert", "web"]);
    assert_eq!(w.current_content(), "2.0.0\n");
}

#[test]
fn config_problems_in_trust_are_located() {
    let w = World::new();
    w.write_config_with_trust("", "keys = [\"RWQnope\"]\nrevoked_keys = [\"zz\"]\n");
    let (code, out, _) = w.run(&["config", "check"]);
    assert_eq!(code, 2);
    assert!(out.contains("not a minisign public key"), "{out}");
    assert!(out.contains("not a key id"), "{out}");
    // Unreadable key files are reported with their path.
    w.simple_release("v1.0.0");
    w.write_config_with_trust("", "key_files = [\"/nonexistent/k.pub\"]\n");
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/k.pub"), "{err}");
}
