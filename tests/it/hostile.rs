//! Hostile archives: every one is refused (exit 3) or, where harmless,
//! installed, and in no case is anything written outside the release.
#![allow(clippy::disallowed_methods)]

use crate::common::{Kind, RawTar, World, gzip, testdata};

/// Files the corpus payloads aim at; none may appear or change.
const PAYLOADS: &[&str] = &["/tmp/PWNED.txt", "/tmp/VICTIM.txt", "/tmp/evil.txt"];

fn payload_state() -> Vec<Option<Vec<u8>>> {
    PAYLOADS.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Installs `targz` as 1.0.0 and asserts it is refused cleanly, the message
/// containing `why`.
fn assert_refused(w: &World, targz: &[u8], why: &str) {
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

/// Every slip archive from the public corpora: refused or harmless, and the
/// payload targets never touched.
#[test]
fn upstream_slip_corpus() {
    let Some(td) = testdata() else { return };
    let before = payload_state();
    let mut refused = 0;
    let mut total = 0;
    for dir in ["tar/upstream/megamansec-slip", "tar/upstream/snyk-zip-slip"] {
        let mut files: Vec<_> = std::fs::read_dir(td.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&f).unwrap();
            let targz = if name.ends_with(".tar.gz") {
                bytes
            } else if name.ends_with(".tar") {
                gzip(&bytes)
            } else {
                continue;
            };
            total += 1;
            let w = World::new();
            w.raw_release("1.0.0", &targz);
            let (code, out, err) = w.run(&["install", "web", "1.0.0"]);
            match code {
                3 => {
                    refused += 1;
                    assert!(err.contains("refused archive entry"), "{name}: {err}");
                    assert!(!w.root.join("releases/1.0.0").exists(), "{name}");
                }
                0 => {
                    // Only the benign read-only sample may install.
                    assert!(
                        name.starts_with("readonly-slip"),
                        "{name} installed:\n{out}"
                    );
                }
                c => panic!("{name}: unexpected exit {c}\n{err}"),
            }
            w.assert_no_debris();
            w.assert_outside_untouched();
            assert_eq!(payload_state(), before, "{name} touched a payload target");
        }
    }
    eprintln!("slip corpus: {refused} of {total} refused, the rest harmless");
    assert!(total >= 20 && refused >= total - 2);
}

/// Real third-party archives (tar-rs's format corpus: GNU, PAX, long names,
/// sparse files, links) install byte-for-byte as GNU tar extracts them.
#[test]
fn third_party_archives_match_gnu_tar() {
    let Some(td) = testdata() else { return };
    let mut files: Vec<_> = std::fs::read_dir(td.join("tar/upstream/tar-rs"))
        .unwrap()
        .map(|e| e.unwrap().path())
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
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&f)
            .arg("-C")
            .arg(&gnu)
            .status()
            .unwrap();
        if !st.success() {
            // GNU tar itself rejects some of the malformed samples.
            continue;
        }
        let ours = w.root.join("releases/1.0.0");
        let mut theirs = gnu.clone();
        let top: Vec<_> = std::fs::read_dir(&gnu)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if top.len() == 1 && top[0].is_dir() && !top[0].is_symlink() {
            theirs = top[0].clone();
        }
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
