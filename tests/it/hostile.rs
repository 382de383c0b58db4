//! Hostile archives: every one is refused (exit 3) or, where harmless,
//! installed, and in no case is anything written outside the release.
#![allow(clippy::disallowed_methods)]

use crate::common::{Kind, RawTar, World, fixture, gzip, require_tool};

/// Files the corpus payloads aim at; none may appear or change.
const PAYLOADS: &[&str] = &["/tmp/PWNED.txt", "/tmp/VICTIM.txt", "/tmp/evil.txt"];

fn payload_state() -> Vec<Option<Vec<u8>>> {
    PAYLOADS.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Installs `targz` as 1.0.0 and asserts it is refused cleanly, the message
/// containing `why`; returns the message.
fn assert_refused(w: &World, targz: &[u8], why: &str) -> String {
    w.raw_release("1.0.0", targz);
    let (code, out, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(
        code, 3,
        "expected refusal ({why}), got {code}\n{out}\n{err}"
    );
    assert!(err.contains(why), "message should mention {why:?}:\n{err}");
    assert!(
        !w.root.join("releases/1.0.0").exists(),
        "refused release landed"
    );
    w.assert_no_debris();
    w.assert_outside_untouched();
    // The failure is in the history, with its reason.
    let h = w.json(&["history", "web"]);
    let last = h.as_array().unwrap().last().unwrap();
    assert_eq!(last["event"], "release.install.failed");
    assert!(last["error"].as_str().unwrap().contains(why));
    err
}

#[test]
fn dotdot_is_refused() {
    let w = World::new();
    let t = RawTar::new()
        .file("ok.txt", b"ok")
        .file("../outside/evil", b"x")
        .finish();
    assert_refused(&w, &t, "'..' path components");
}

#[test]
fn absolute_path_is_refused() {
    let w = World::new();
    let abs = format!("{}/evil", w.outside.display());
    let t = RawTar::new().file(&abs, b"x").finish();
    assert_refused(&w, &t, "absolute paths");
}

#[test]
fn symlink_escape_is_refused() {
    let w = World::new();
    let t = RawTar::new()
        .entry(b"link", Kind::Symlink("../../outside"), 0o777)
        .finish();
    assert_refused(&w, &t, "resolves outside");
}

#[test]
fn absolute_symlink_is_refused() {
    let w = World::new();
    let t = RawTar::new()
        .entry(b"etc", Kind::Symlink("/etc"), 0o777)
        .finish();
    assert_refused(&w, &t, "absolute");
}

#[test]
fn write_through_symlink_is_refused() {
    let w = World::new();
    // The link itself stays inside; writing through it is still refused.
    let t = RawTar::new()
        .entry(b"sub", Kind::Dir, 0o755)
        .entry(b"d", Kind::Symlink("sub"), 0o777)
        .file("d/file", b"x")
        .finish();
    assert_refused(&w, &t, "written through the symlink");
}

#[test]
fn symlink_chain_escape_is_refused() {
    let w = World::new();
    // e -> r/.. looks inside lexically, but r -> . makes it the parent.
    let t = RawTar::new()
        .entry(b"e", Kind::Symlink("r/.."), 0o777)
        .entry(b"r", Kind::Symlink("."), 0o777)
        .finish();
    assert_refused(&w, &t, "resolves outside");
}

#[test]
fn hardlink_outside_is_refused() {
    let w = World::new();
    let t = RawTar::new()
        .entry(b"passwd", Kind::Hardlink("/etc/passwd"), 0o644)
        .finish();
    assert_refused(&w, &t, "hardlink target");
    let w = World::new();
    let t = RawTar::new()
        .entry(b"x", Kind::Hardlink("../outside/x"), 0o644)
        .finish();
    assert_refused(&w, &t, "hardlink target");
}

#[test]
fn devices_and_fifos_are_refused() {
    for (k, why) in [
        (Kind::Char, "device files"),
        (Kind::Block, "device files"),
        (Kind::Fifo, "FIFOs"),
    ] {
        let w = World::new();
        let t = RawTar::new().entry(b"dev", k, 0o644).finish();
        assert_refused(&w, &t, why);
    }
}

#[test]
fn duplicates_are_refused() {
    let w = World::new();
    let t = RawTar::new().file("a", b"1").file("a", b"2").finish();
    assert_refused(&w, &t, "duplicate entry");
}

#[test]
fn bad_names_are_refused() {
    let w = World::new();
    let t = RawTar::new()
        .entry(b"bad\xff\xfe", Kind::File(b"x"), 0o644)
        .finish();
    assert_refused(&w, &t, "UTF-8");
    let w = World::new();
    let t = RawTar::new().file("..\\..\\evil", b"x").finish();
    assert_refused(&w, &t, "backslashes");
}

#[test]
fn entry_limit_stops_the_stream() {
    let w = World::with_extra("unpack.max_entries = 10");
    let mut t = RawTar::new();
    for i in 0..20 {
        t = t.file(&format!("f{i}"), b"x");
    }
    assert_refused(&w, &t.finish(), "max_entries = 10");
}

fn limited_world() -> World {
    World::with_extra("unpack.max_bytes = 1048576\nunpack.max_entries = 100")
}

#[test]
fn gzip_bomb_stops_at_the_limit() {
    // One entry declaring more than the limit: refused from its header.
    let w = limited_world();
    let big = vec![0u8; 2 << 20];
    let t = RawTar::new().file("bomb", &big).finish();
    assert!(t.len() < 64 << 10, "the bomb should compress well");
    assert_refused(&w, &t, "max_bytes");

    // Many entries under the limit each, over it together.
    let w = limited_world();
    let chunk = vec![0u8; 300 << 10];
    let mut t = RawTar::new();
    for i in 0..5 {
        t = t.file(&format!("part{i}"), &chunk);
    }
    assert_refused(&w, &t.finish(), "max_bytes");

    // Zeros after the end-of-archive marker: the decompressed stream itself is capped.
    let w = limited_world();
    let t = RawTar::new()
        .file("small", b"x")
        .finish_with_trailer(64 << 20);
    assert_refused(&w, &t, "max_bytes");
}

#[test]
fn setuid_bits_are_stripped_and_single_top_dir_is_stripped() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let t = RawTar::new()
        .entry(b"myapp-1.0.0/", Kind::Dir, 0o755)
        .entry(b"myapp-1.0.0/bin/tool", Kind::File(b"#!/bin/sh\n"), 0o6755)
        .entry(b"myapp-1.0.0/VERSION", Kind::File(b"1.0.0\n"), 0o644)
        .entry(
            b"myapp-1.0.0/link",
            Kind::Hardlink("myapp-1.0.0/VERSION"),
            0o644,
        )
        .entry(b"myapp-1.0.0/rel", Kind::Symlink("bin/tool"), 0o777)
        .finish();
    w.raw_release("1.0.0", &t);
    w.ok(&["install", "web", "1.0.0"]);
    let rel = w.root.join("releases/1.0.0");
    let mode = std::fs::metadata(rel.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid/setgid must be stripped");
    assert_eq!(std::fs::read(rel.join("link")).unwrap(), b"1.0.0\n");
    assert_eq!(
        std::fs::read_link(rel.join("rel")).unwrap().to_str(),
        Some("bin/tool")
    );
    assert!(
        !rel.join("myapp-1.0.0").exists(),
        "top directory should be stripped"
    );
    w.assert_outside_untouched();
}

#[test]
fn corrupt_gzip_is_refused() {
    let w = World::new();
    let mut t = RawTar::new().file("a", &[7u8; 5000]).finish();
    let n = t.len();
    t[n / 2] ^= 0xff;
    t.truncate(n - 4);
    w.raw_release("1.0.0", &t);
    let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not a valid .tar.gz"), "{err}");
    assert!(!w.root.join("releases/1.0.0").exists());
    w.assert_no_debris();
}

/// The attack classes of the public tar-slip corpora, MegaManSec's
/// zip-slip-tar-slip-generator and snyk's zip-slip samples (neither has a
/// licence, so their archives are not copied here: each class is rebuilt
/// below), aimed at the directory `target`. Each comes with the reason its
/// refusal must give. `target` is `/tmp` (the corpora's own payload paths) or
/// a directory holding a real victim file, where a vulnerable extractor's
/// write or link would succeed.
fn slip_archives(target: &str) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let rel = target.trim_start_matches('/');
    let up = "../".repeat(12);
    let back = |p: &str| p.replace('/', "\\");
    let v = vec![
        (
            "abs-slip: absolute path",
            RawTar::new()
                .file(&format!("{target}/PWNED.txt"), b"x")
                .finish(),
            "absolute paths",
        ),
        (
            "backslash-slip: ..\\ traversal",
            RawTar::new()
                .file(
                    &format!("{}{}\\PWNED.txt", "..\\".repeat(12), back(rel)),
                    b"x",
                )
                .finish(),
            "backslashes",
        ),
        (
            "dotdot-slip: ../ traversal",
            RawTar::new()
                .file(&format!("{up}{rel}/PWNED.txt"), b"x")
                .finish(),
            "'..' path components",
        ),
        (
            "./../ traversal",
            RawTar::new()
                .file(&format!("./{up}{rel}/PWNED.txt"), b"x")
                .finish(),
            "'..' path components",
        ),
        (
            "case-slip: LINK -> target, then write through link/",
            RawTar::new()
                .entry(b"LINK", Kind::Symlink(target), 0o777)
                .file("link/PWNED.txt", b"x")
                .finish(),
            "absolute",
        ),
        (
            "exfil-slip: symlink to /etc/passwd",
            RawTar::new()
                .entry(b"passwd", Kind::Symlink("/etc/passwd"), 0o777)
                .finish(),
            "absolute",
        ),
        (
            "exfil-slip: symlink to /proc/self/environ",
            RawTar::new()
                .entry(b"env", Kind::Symlink("/proc/self/environ"), 0o777)
                .finish(),
            "absolute",
        ),
        (
            "exfil-slip: symlink to /",
            RawTar::new()
                .entry(b"root", Kind::Symlink("/"), 0o777)
                .finish(),
            "absolute",
        ),
        (
            "exfil by a relative symlink",
            RawTar::new()
                .entry(b"passwd", Kind::Symlink(&format!("{up}etc/passwd")), 0o777)
                .finish(),
            "resolves outside",
        ),
        (
            "hardlink-exfil-slip: hardlink to /etc/passwd",
            RawTar::new()
                .entry(b"passwd", Kind::Hardlink("/etc/passwd"), 0o644)
                .finish(),
            "hardlink target",
        ),
        (
            "hardlink-slip: hardlink to the victim, then overwrite it",
            RawTar::new()
                .entry(
                    b"hl",
                    Kind::Hardlink(&format!("{target}/VICTIM.txt")),
                    0o644,
                )
                .file("hl", b"PWNED")
                .finish(),
            "hardlink target",
        ),
        (
            "hardlink by ../ to the victim, then overwrite it",
            RawTar::new()
                .entry(
                    b"hl",
                    Kind::Hardlink(&format!("{up}{rel}/VICTIM.txt")),
                    0o644,
                )
                .file("hl", b"PWNED")
                .finish(),
            "hardlink target",
        ),
        (
            "toctou-slip: directory replaced by a symlink, then written through",
            RawTar::new()
                .entry(b"d/sub/", Kind::Dir, 0o755)
                .entry(b"d/sub", Kind::Symlink(target), 0o777)
                .file("d/sub/PWNED.txt", b"x")
                .finish(),
            "duplicate entry",
        ),
        (
            "relative symlink out, then written through",
            RawTar::new()
                .entry(b"up", Kind::Symlink(&up), 0o777)
                .file(&format!("up/{rel}/PWNED.txt"), b"x")
                .finish(),
            "resolves outside",
        ),
        (
            "unicode-nfkc-slip: PAX name \u{fb01}le -> target, then file/",
            RawTar::new()
                .pax(&[("path", "\u{fb01}le".as_bytes())])
                .entry(b"?le", Kind::Symlink(target), 0o777)
                .file("file/PWNED.txt", b"x")
                .finish(),
            "absolute",
        ),
        (
            "unicode-slip: PAX name caf\u{e9} (NFC) -> target, then cafe\u{301} (NFD)/",
            RawTar::new()
                .pax(&[("path", "caf\u{e9}".as_bytes())])
                .entry(b"caf?", Kind::Symlink(target), 0o777)
                .pax(&[("path", "cafe\u{301}/PWNED.txt".as_bytes())])
                .file("cafe?/PWNED.txt", b"x")
                .finish(),
            "absolute",
        ),
        (
            "PAX path record with ../ over a harmless header name",
            RawTar::new()
                .pax(&[("path", format!("{up}{rel}/PWNED.txt").as_bytes())])
                .file("harmless.txt", b"x")
                .finish(),
            "'..' path components",
        ),
        (
            "zip-slip (snyk): GNU long name of 40 ../, after a good file",
            RawTar::new()
                .file("good.txt", b"this is a good one\n")
                .file(
                    &format!("{}{rel}/evil.txt", "../".repeat(40)),
                    b"this is an evil one\n",
                )
                .finish(),
            "'..' path components",
        ),
        (
            "zip-slip-win (snyk): GNU long name of 40 ..\\, after a good file",
            RawTar::new()
                .file("good.txt", b"this is a good one\n")
                .file(
                    &format!("{}{}\\evil.txt", "..\\".repeat(40), back(rel)),
                    b"this is an evil one\n",
                )
                .finish(),
            "backslashes",
        ),
    ];
    // The snyk cases must really carry their name in a GNU long-name entry.
    for (name, targz, _) in v.iter().filter(|c| c.0.contains("GNU long name")) {
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&targz[..]), &mut tar)
            .unwrap();
        // good.txt: one header and one data block, then the `L` header.
        assert_eq!(tar[1024 + 156], b'L', "{name}: no GNU long-name entry");
    }
    v
}

/// Every class of the tar-slip corpora is refused ("refused archive entry",
/// for the reason of its class), leaves no release and no debris, and never
/// touches its payload targets: the corpora's own under /tmp, and a real
/// victim file that a vulnerable extractor would overwrite or link.
#[test]
fn slip_corpus_classes_are_refused() {
    let before = payload_state();
    let victim = tempfile::tempdir().unwrap();
    let victim_dir = victim.path().canonicalize().unwrap();
    std::fs::write(victim_dir.join("VICTIM.txt"), b"original\n").unwrap();
    let victim_state = || {
        let mut names: Vec<_> = std::fs::read_dir(&victim_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        (names, std::fs::read(victim_dir.join("VICTIM.txt")).unwrap())
    };
    let victim_before = victim_state();
    for target in ["/tmp", victim_dir.to_str().unwrap()] {
        for (name, targz, why) in slip_archives(target) {
            // Shown if an assertion below fails.
            eprintln!("case: {name}, aimed at {target}");
            let w = World::new();
            let err = assert_refused(&w, &targz, why);
            assert!(err.contains("refused archive entry"), "{name}: {err}");
            assert_eq!(payload_state(), before, "{name} touched a payload target");
            assert_eq!(victim_state(), victim_before, "{name} touched the victim");
        }
    }

    // The corpus's one benign sample (a read-only file) installs.
    let w = World::new();
    let t = RawTar::new()
        .entry(
            b"readonly-unix.txt",
            Kind::File(b"can't rm me without -f\n"),
            0o444,
        )
        .finish();
    w.raw_release("1.0.0", &t);
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(
        std::fs::read(w.root.join("releases/1.0.0/readonly-unix.txt")).unwrap(),
        b"can't rm me without -f\n"
    );
    w.assert_no_debris();
    w.assert_outside_untouched();
}

/// Real third-party archives (tar-rs's format corpus, copied into
/// `tests/fixtures/tar-rs`: GNU, PAX, long names, sparse files, links)
/// install byte-for-byte as GNU tar extracts them.
#[test]
fn third_party_archives_match_gnu_tar() {
    let Some(gnu_tar) = require_tool("tar") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(fixture("tar-rs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    files.sort();
    let mut compared = 0;
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let w = World::new();
        w.raw_release("1.0.0", &gzip(&std::fs::read(&f).unwrap()));
        let (code, _, err) = w.run(&["install", "web", "1.0.0"]);
        if name == "sparse-large.tar" {
            // A sparse file far beyond the default 4 GiB limit.
            assert_eq!(code, 3, "{err}");
            assert!(err.contains("max_bytes"), "{err}");
            continue;
        }
        assert_eq!(code, 0, "{name}: {err}");
        let gnu = w.tmp.path().join("gnu");
        std::fs::create_dir_all(&gnu).unwrap();
        let st = std::process::Command::new(&gnu_tar)
            .arg("-xf")
            .arg(&f)
            .arg("-C")
            .arg(&gnu)
            .output() // its warnings stay out of the test run's output
            .unwrap();
        if !st.status.success() {
            // GNU tar itself rejects some of the malformed samples.
            continue;
        }
        let ours = w.root.join("releases/1.0.0");
        // A lone top directory is stripped only when its name says it is
        // packaging (formats.rs tests the rule); the manifest says which.
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(w.root.join(".switchyard/manifests/1.0.0.json")).unwrap(),
        )
        .unwrap();
        let theirs = match meta["stripped_top_dir"].as_str() {
            Some(top) => gnu.join(top),
            None => gnu.clone(),
        };
        compare_trees(&theirs, &ours, &name);
        compared += 1;
    }
    assert!(compared >= 12, "only {compared} archives compared");
}

fn compare_trees(a: &std::path::Path, b: &std::path::Path, ctx: &str) {
    let mut names: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let (pa, pb) = (a.join(&n), b.join(&n));
        let ma = std::fs::symlink_metadata(&pa).unwrap();
        let mb = std::fs::symlink_metadata(&pb)
            .unwrap_or_else(|_| panic!("{ctx}: {} missing from the release", pb.display()));
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{ctx}"
            );
        } else if ma.is_dir() {
            assert!(mb.is_dir(), "{ctx}: {} not a dir", pb.display());
            compare_trees(&pa, &pb, ctx);
        } else {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{ctx}: {} differs",
                pb.display()
            );
        }
    }
}
