//! Release formats told by content: real archives made by the Debian tools
//! (`tar`, `gzip`, `zstd`, `xz`, `bzip2`, `zip`) install byte-exact under
//! any name; hostile ones are refused in every format; decompression bombs
//! stop at the ratio guard; the single-top-directory strip is visible.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{Kind, RawTar, World, require_tool};

/// A compressor as a shell tool reading stdin; `None` for plain tar.
#[derive(Clone, Copy, Debug)]
enum Z {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    Plain,
}

impl Z {
    fn tool(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Z::Gzip => Some(("gzip", &["-c", "-n"])),
            Z::Zstd => Some(("zstd", &["-q", "-c"])),
            Z::Xz => Some(("xz", &["-c"])),
            Z::Bzip2 => Some(("bzip2", &["-c"])),
            Z::Plain => None,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Z::Gzip => "tar.gz",
            Z::Zstd => "tar.zst",
            Z::Xz => "tar.xz",
            Z::Bzip2 => "tar.bz2",
            Z::Plain => "tar",
        }
    }

    /// Whether the Debian tool is here (a visible SKIP otherwise).
    fn available(self) -> bool {
        self.tool().is_none_or(|(t, _)| require_tool(t).is_some())
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self.tool() {
            None => data.to_vec(),
            Some((tool, args)) => pipe(tool, args, data),
        }
    }
}

/// Runs `tool args` with `input` on stdin; returns stdout.
fn pipe(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    feeder.join().unwrap();
    assert!(child.wait().unwrap().success(), "{tool} failed");
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A source tree with nested directories, an executable, an empty file, a
/// binary file and a relative symlink; two top-level entries (no strip).
fn source_tree(base: &Path) -> PathBuf {
    let src = base.join("src");
    let files: &[(&str, &[u8])] = &[
        ("VERSION", b"1.0.0\n"),
        ("public/index.html", b"<h1>hello</h1>\n"),
        ("public/css/site.css", b"body{color:red}\n"),
        ("public/empty.txt", b""),
        ("bin/run", b"#!/bin/sh\necho run\n"),
    ];
    for (p, data) in files {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    let blob: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("public/blob.bin"), blob).unwrap();
    std::fs::set_permissions(src.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("public/index.html", src.join("home.html")).unwrap();
    src
}

/// Every path under `root`, relative, with what it is: file bytes and
/// executable bit, symlink target, or directory.
fn snapshot(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((rel, format!("-> {}", t.display())));
            } else if m.is_dir() {
                out.push((rel, "dir".into()));
                walk(root, &p, out);
            } else {
                let exec = m.permissions().mode() & 0o111 != 0;
                let data = std::fs::read(&p).unwrap();
                out.push((
                    rel,
                    format!(
                        "exec={exec} sha256={}",
                        switchyard::testing::sha256_hex(&data)
                    ),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// A release as installed, without the shared-path link the world's config
/// adds (`storage -> ../../shared/storage`).
fn installed(w: &World, v: &str) -> Vec<(String, String)> {
    let mut s = snapshot(&w.root.join("releases").join(v));
    s.retain(|(p, _)| p != "storage");
    s
}

/// Puts `bytes` as `drop/<tag>/<name>` with a `SHA256SUMS` line for it;
/// the world accepts unsigned releases.
fn put(w: &World, tag: &str, name: &str, bytes: &[u8]) {
    w.allow_unsigned();
    let dir = w.drop_dir.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    std::fs::write(
        dir.join("SHA256SUMS"),
        format!("{}  {name}\n", switchyard::testing::sha256_hex(bytes)),
    )
    .unwrap();
}

/// A tar of `src`'s contents (entries `./...`, as `tar -C src .` writes them).
fn tar_of(src: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(src)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn every_format_installs_byte_exact_under_any_name() {
    for t in ["tar", "gzip", "zstd", "xz", "bzip2", "zip"] {
        if require_tool(t).is_none() {
            return;
        }
    }
    let w = World::new();
    let src = source_tree(w.tmp.path());
    let tar = tar_of(&src);
    let gz = Z::Gzip.compress(&tar);
    // Two gzip members, split mid-stream, as `cat a.gz b.gz` makes them.
    let (a, b) = tar.split_at(tar.len() / 2 + 77);
    let multi = [Z::Gzip.compress(a), Z::Gzip.compress(b)].concat();
    let zip_path = w.tmp.path().join("pkg.zip");
    run(Command::new("zip")
        .current_dir(&src)
        .args(["-q", "-r", "-y", "-X"])
        .arg(&zip_path)
        .arg("."));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("web-{v}.tar.gz", gz.clone()),
        ("web-{v}.tgz", gz),
        ("web-{v}.crate", multi),
        ("web-{v}.tar.zst", Z::Zstd.compress(&tar)),
        ("web-{v}.tar.xz", Z::Xz.compress(&tar)),
        ("web-{v}.tar.bz2", Z::Bzip2.compress(&tar)),
        ("web-{v}.tar", tar.clone()),
        ("web-{v}.zip", std::fs::read(&zip_path).unwrap()),
    ];
    let want = snapshot(&src);
    assert!(want.len() >= 9, "{want:?}");
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let v = format!("1.0.{i}");
        let name = name.replace("{v}", &v);
        put(&w, &v, &name, bytes);
        let out = w.ok(&["install", "web", &v]);
        assert!(!out.contains("stripped"), "{name}: nothing to strip: {out}");
        let got = installed(&w, &v);
        assert_eq!(got, want, "{name} did not install byte-exact");
        crate::common::check_against_manifest(&w.root, &v);
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(w.root.join(format!(".switchyard/manifests/{v}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["asset"], name.as_str());
        let fmt = if name.ends_with(".zip") {
            "zip"
        } else if name.ends_with(".tar") {
            "tar"
        } else if name.ends_with(".tar.zst") {
            "tar-zst"
        } else if name.ends_with(".tar.xz") {
            "tar-xz"
        } else if name.ends_with(".tar.bz2") {
            "tar-bz2"
        } else {
            "tar-gz"
        };
        assert_eq!(meta["format"], fmt, "{name}");
        assert!(meta["stripped_top_dir"].is_null(), "{name}");
    }
    w.assert_no_debris();
    w.assert_outside_untouched();
}

#[test]
fn a_name_says_nothing_a_content_says_what_it_is() {
    if !Z::Zstd.available() {
        return;
    }
    let w = World::new();
    let src = source_tree(w.tmp.path());
    // zstd bytes under a .tar.gz name: the content wins.
    put(
        &w,
        "1.0.0",
        "web-1.0.0.tar.gz",
        &Z::Zstd.compress(&tar_of(&src)),
    );
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(installed(&w, "1.0.0"), snapshot(&src));
    // Something that is no archive at all is refused by its first bytes.
    put(
        &w,
        "1.0.1",
        "web-1.0.1.tar.gz",
        b"<html>404 Not Found</html>",
    );
    let (code, _, err) = w.run(&["install", "web", "1.0.1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not an archive Switchyard installs"), "{err}");
    assert!(!w.root.join("releases/1.0.1").exists());
    w.assert_no_debris();
}

#[test]
fn sums_files_as_github_projects_publish_them() {
    let w = World::new();
    w.allow_unsigned();
    let src = source_tree(w.tmp.path());
    let gz = Z::Gzip.compress(&tar_of(&src));
    let sum = switchyard::testing::sha256_hex(&gz);
    for (v, file, text) in [
        (
            "1.0.0",
            "sha256sums.txt".to_string(),
            format!("{sum}  web-1.0.0.tar.gz\n"),
        ),
        (
            "1.0.1",
            "web-1.0.1.tar.gz.sha256".to_string(),
            format!("{sum}\n"),
        ),
        (
            "1.0.2",
            "SHA256SUMS.txt".to_string(),
            format!("{sum} *web-1.0.2.tar.gz\n"),
        ),
    ] {
        let dir = w.drop_dir.join(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("web-{v}.tar.gz")), &gz).unwrap();
        std::fs::write(dir.join(&file), text).unwrap();
        w.ok(&["install", "web", v]);
        assert!(
            w.root.join(format!("releases/{v}/VERSION")).exists(),
            "{file}"
        );
    }
    // A wrong digest in `<asset>.sha256` is caught, not ignored.
    let dir = w.drop_dir.join("1.0.3");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web-1.0.3.tar.gz"), &gz).unwrap();
    std::fs::write(
        dir.join("web-1.0.3.tar.gz.sha256"),
        format!("{}\n", "0".repeat(64)),
    )
    .unwrap();
    let (code, _, err) = w.run(&["install", "web", "1.0.3"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!w.root.join("releases/1.0.3").exists());
}

/// Installs `bytes` as 1.0.0 under `name` and asserts it is refused with a
/// message containing `why`, nothing landing anywhere.
fn assert_refused(w: &World, name: &str, bytes: &[u8], why: &str) {
    put(w, "1.0.0", name, bytes);
    let (code, out, err) = w.run(&["install", "web", "1.0.0"]);
    assert_eq!(
        code, 3,
        "{name}: expected refusal ({why}), got {code}\n{out}\n{err}"
    );
    assert!(
        err.contains(why),
        "{name}: message should mention {why:?}:\n{err}"
    );
    assert!(
        !w.root.join("releases/1.0.0").exists(),
        "{name}: refused release landed"
    );
    w.assert_no_debris();
    w.assert_outside_untouched();
}

/// The uncompressed tar inside a [`RawTar`].
fn raw_tar(t: RawTar) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&t.finish()[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

const TAR_FORMATS: [Z; 5] = [Z::Gzip, Z::Zstd, Z::Xz, Z::Bzip2, Z::Plain];

#[test]
fn hostile_tars_are_refused_in_every_format() {
    for z in TAR_FORMATS {
        if !z.available() {
            continue;
        }
        let w = World::new();
        let name = format!("web-1.0.0.{}", z.ext());
        let t = raw_tar(
            RawTar::new()
                .file("ok.txt", b"ok")
                .file("../outside/evil", b"x"),
        );
        assert_refused(&w, &name, &z.compress(&t), "'..' path components");

        let w = World::new();
        let abs = format!("{}/evil", w.outside.display());
        let t = raw_tar(RawTar::new().file(&abs, b"x"));
        assert_refused(&w, &name, &z.compress(&t), "absolute paths");

        let w = World::new();
        let t = raw_tar(
            RawTar::new()
                .entry(b"link", Kind::Symlink("../../outside"), 0o777)
                .file("x", b"x"),
        );
        assert_refused(&w, &name, &z.compress(&t), "resolves outside");
    }
}

/// A tar holding one file of `mib` MiB of zeros.
fn zeros_tar(base: &Path, mib: u64) -> Vec<u8> {
    let dir = base.join(format!("zeros-{mib}"));
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join("zeros")).unwrap();
    f.set_len(mib << 20).unwrap();
    tar_of(&dir)
}

#[test]
fn bombs_stop_at_the_compression_ratio() {
    let base = tempfile::tempdir().unwrap();
    // Far under max_bytes (4 GiB by default): only the ratio can stop it.
    let tar = zeros_tar(base.path(), 64);
    for z in [Z::Gzip, Z::Zstd, Z::Xz, Z::Bzip2] {
        if !z.available() {
            continue;
        }
        let bomb = z.compress(&tar);
        assert!(
            (bomb.len() as u64) < (64 << 20) / 200,
            "{z:?}: the bomb should compress past the ratio ({} bytes)",
            bomb.len()
        );
        let w = World::new();
        assert_refused(
            &w,
            &format!("web-1.0.0.{}", z.ext()),
            &bomb,
            "max_compression_ratio = 200",
        );
        let (_, _, err) = w.run(&["install", "web", "1.0.0"]);
        // Stopped early: a few MiB in, not at the end of the 64 MiB.
        let unpacked: u64 = err
            .split("times its compressed size (")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{z:?}: no unpacked count in {err}"));
        assert!(
            unpacked < 32 << 20,
            "{z:?}: stopped only after {unpacked} bytes"
        );
    }
    // The same archive passes once the ratio is raised.
    if Z::Zstd.available() {
        let w = World::with_extra("unpack.max_compression_ratio = 100000");
        put(&w, "1.0.0", "web-1.0.0.tar.zst", &Z::Zstd.compress(&tar));
        w.ok(&["install", "web", "1.0.0"]);
        assert_eq!(
            std::fs::metadata(w.root.join("releases/1.0.0/zeros"))
                .unwrap()
                .len(),
            64 << 20
        );
    }
}

/// A minimal ZIP writer, so hostile names and links can be written: each
/// entry `(name, unix mode with type bits, data, deflate?)`.
fn zip_bytes(entries: &[(&str, u32, &[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, mode, data, deflate) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let stored: Vec<u8> = if *deflate {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            data.to_vec()
        };
        let method: u16 = if *deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes()); // version needed
        local.extend_from_slice(&0u16.to_le_bytes()); // flags
        local.extend_from_slice(&method.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes()); // time
        local.extend_from_slice(&0x2821u16.to_le_bytes()); // date 2000-01-01
        local.extend_from_slice(&crc.sum().to_le_bytes());
        local.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(&stored);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: Unix
        central.extend_from_slice(&local[4..30]);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&(mode << 16).to_le_bytes()); // external: unix mode
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn hostile_zips_are_refused() {
    const FILE: u32 = 0o100_644;
    const LINK: u32 = 0o120_777;
    // The writer itself is sound: a harmless ZIP from it installs.
    let w = World::new();
    let ok = zip_bytes(&[
        ("a.txt", FILE, b"a\n", false),
        ("b/c.txt", FILE, b"c\n", true),
    ]);
    put(&w, "1.0.0", "web-1.0.0.zip", &ok);
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(
        std::fs::read(w.root.join("releases/1.0.0/b/c.txt")).unwrap(),
        b"c\n"
    );

    let w = World::new();
    let z = zip_bytes(&[
        ("ok.txt", FILE, b"ok", false),
        ("../outside/evil", FILE, b"x", false),
    ]);
    assert_refused(&w, "web-1.0.0.zip", &z, "'..' path components");

    let w = World::new();
    let abs = format!("{}/evil", w.outside.display());
    let z = zip_bytes(&[(abs.as_str(), FILE, b"x", false)]);
    assert_refused(&w, "web-1.0.0.zip", &z, "absolute paths");

    let w = World::new();
    let z = zip_bytes(&[
        ("link", LINK, b"../../outside", false),
        ("x", FILE, b"x", false),
    ]);
    assert_refused(&w, "web-1.0.0.zip", &z, "resolves outside");

    // A link inside, then a file written through it.
    let w = World::new();
    let z = zip_bytes(&[
        ("sub/", 0o040_755, b"", false),
        ("d", LINK, b"sub", false),
        ("d/file", FILE, b"x", false),
    ]);
    assert_refused(&w, "web-1.0.0.zip", &z, "written through the symlink");

    let w = World::new();
    let z = zip_bytes(&[("dev", 0o020_644, b"", false)]);
    assert_refused(&w, "web-1.0.0.zip", &z, "device files");

    let w = World::new();
    let z = zip_bytes(&[("a", FILE, b"1", false), ("a", FILE, b"2", false)]);
    assert_refused(&w, "web-1.0.0.zip", &z, "duplicate entry");

    // A deflate bomb: 64 MiB of zeros in about 64 KiB.
    let w = World::new();
    let zeros = vec![0u8; 64 << 20];
    let z = zip_bytes(&[("zeros", FILE, &zeros, true)]);
    assert!(z.len() < 200 << 10, "{}", z.len());
    assert_refused(&w, "web-1.0.0.zip", &z, "max_compression_ratio = 200");
}

/// `switchyard pack` of `dir` (signed with the world's key) into the drop folder.
fn pack(w: &World, dir: &Path, version: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "pack",
        dir.to_str().unwrap(),
        "--version",
        version,
        "--out",
        w.drop_dir.to_str().unwrap(),
        "--key",
        w.secret_key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    w.ok(&args)
}

fn manifest(w: &World, v: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(w.root.join(format!(".switchyard/manifests/{v}.json"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_lone_public_dir_is_kept_and_a_versioned_dir_is_stripped_visibly() {
    let w = World::new();
    let build = w.tmp.path().join("build");
    std::fs::create_dir_all(build.join("public")).unwrap();
    std::fs::write(build.join("public/index.html"), "hi\n").unwrap();
    std::fs::write(build.join("public/app.css"), "x\n").unwrap();
    let out = pack(&w, &build, "1.0.0", &[]);
    assert!(out.contains("install keeps it"), "{out}");
    let out = w.ok(&["install", "web", "1.0.0"]);
    assert!(!out.contains("stripped"), "{out}");
    assert_eq!(
        std::fs::read_to_string(w.root.join("releases/1.0.0/public/index.html")).unwrap(),
        "hi\n"
    );
    assert!(manifest(&w, "1.0.0")["stripped_top_dir"].is_null());

    let build = w.tmp.path().join("build2");
    std::fs::create_dir_all(build.join("web-1.2.0/public")).unwrap();
    std::fs::write(build.join("web-1.2.0/public/index.html"), "v12\n").unwrap();
    std::fs::write(build.join("web-1.2.0/VERSION"), "1.2.0\n").unwrap();
    let out = pack(&w, &build, "1.2.0", &[]);
    assert!(out.contains("install strips it"), "{out}");
    let (code, out, err) = w.run(&["install", "web", "1.2.0", "-vv"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("stripped the top directory web-1.2.0/"),
        "{out}"
    );
    assert!(
        err.contains("stripped_top_dir"),
        "the log says so too:\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join("releases/1.2.0/public/index.html")).unwrap(),
        "v12\n"
    );
    assert_eq!(manifest(&w, "1.2.0")["stripped_top_dir"], "web-1.2.0");
    let j = w.json(&["install", "web", "1.2.0"]);
    assert_eq!(j["installed"], false, "{j}");
}

#[test]
fn strip_top_dir_forces_either_way() {
    let w = World::with_extra("unpack.strip_top_dir = true");
    let build = w.tmp.path().join("build");
    std::fs::create_dir_all(build.join("public")).unwrap();
    std::fs::write(build.join("public/index.html"), "hi\n").unwrap();
    pack(&w, &build, "1.0.0", &[]);
    w.ok(&["install", "web", "1.0.0"]);
    assert!(w.root.join("releases/1.0.0/index.html").exists());
    assert_eq!(manifest(&w, "1.0.0")["stripped_top_dir"], "public");

    let w = World::with_extra("unpack.strip_top_dir = false");
    let build = w.tmp.path().join("build");
    std::fs::create_dir_all(build.join("web-1.0.0")).unwrap();
    std::fs::write(build.join("web-1.0.0/index.html"), "hi\n").unwrap();
    pack(&w, &build, "1.0.0", &[]);
    w.ok(&["install", "web", "1.0.0"]);
    assert!(w.root.join("releases/1.0.0/web-1.0.0/index.html").exists());
    assert!(manifest(&w, "1.0.0")["stripped_top_dir"].is_null());
}

#[test]
fn pack_writes_reproducible_zstd_that_installs() {
    let w = World::new();
    let src = source_tree(w.tmp.path());
    let j1: serde_json::Value = {
        let out = pack(&w, &src, "1.0.0", &["--format", "tar.zst", "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let asset = PathBuf::from(j1["asset"].as_str().unwrap());
    assert!(
        asset.to_str().unwrap().ends_with("src-1.0.0.tar.zst"),
        "{j1}"
    );
    let head = std::fs::read(&asset).unwrap();
    assert_eq!(&head[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    // Same input, same bytes (another output folder).
    let out2 = w.tmp.path().join("out2");
    let j2 = w.json(&[
        "pack",
        src.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--out",
        out2.to_str().unwrap(),
        "--format",
        "tar.zst",
    ]);
    assert_eq!(j1["sha256"], j2["sha256"]);
    let (code, _, err) = w.run(&[
        "pack",
        src.to_str().unwrap(),
        "--version",
        "1.0.1",
        "--out",
        out2.to_str().unwrap(),
        "--format",
        "zip",
    ]);
    assert_eq!(code, 2, "only tar.gz and tar.zst are written: {err}");
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(installed(&w, "1.0.0"), snapshot(&src));
    assert_eq!(manifest(&w, "1.0.0")["format"], "tar-zst");
}

/// A GitHub release of `files` (name, bytes), the archive `asset` signed
/// with the world's key as `pack` signs (`repo=acme/web tag=<tag> file=<name>`).
fn github_release(
    w: &World,
    m: &crate::mock_github::MockGithub,
    tag: &str,
    asset: (&str, &[u8]),
    others: &[(&str, Vec<u8>)],
) {
    let dir = w.tmp.path().join(format!("gh-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(asset.0);
    std::fs::write(&path, asset.1).unwrap();
    let sig = switchyard::testing::sign_file(
        &w.secret_key,
        None,
        &path,
        Some(&format!("repo=acme/web tag={tag} file={}", asset.0)),
    )
    .unwrap();
    let mut assets = vec![
        m.asset(asset.0, asset.1.to_vec()),
        m.asset(&format!("{}.minisig", asset.0), std::fs::read(sig).unwrap()),
    ];
    for (n, data) in others {
        assets.push(m.asset(n, data.clone()));
    }
    m.push(m.release(tag, assets));
}

#[test]
fn github_assets_of_any_format_and_explicit_patterns_of_any_extension() {
    if !Z::Zstd.available() {
        return;
    }
    let w = World::new();
    let m = crate::mock_github::MockGithub::start();
    let src = source_tree(w.tmp.path());
    let tar = tar_of(&src);
    let gz = Z::Gzip.compress(&tar);
    let zst = Z::Zstd.compress(&tar);
    let sums = |name: &str, data: &[u8]| {
        format!("{}  {name}\n", switchyard::testing::sha256_hex(data)).into_bytes()
    };
    // An explicit pattern with its own extension: a gzip tar named .crate.
    github_release(
        &w,
        &m,
        "v1.0.0",
        ("web-1.0.0.crate", &gz),
        &[("sha256sums.txt", sums("web-1.0.0.crate", &gz))],
    );
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}\"\nasset = \"*.crate\"\n",
        m.api_url()
    ));
    w.ok(&["install", "web", "1.0.0"]);
    assert_eq!(installed(&w, "1.0.0"), snapshot(&src));

    // The default pattern: the one asset named like an archive, whatever
    // sits beside it (checksums, signatures, notes).
    github_release(
        &w,
        &m,
        "v1.1.0",
        ("web-1.1.0-x86_64-linux.tar.zst", &zst),
        &[
            (
                "web-1.1.0-x86_64-linux.tar.zst.sha256",
                switchyard::testing::sha256_hex(&zst).into_bytes(),
            ),
            ("NOTES.md", b"notes\n".to_vec()),
        ],
    );
    w.write_config_source(&format!(
        "github = \"acme/web\"\napi_url = \"{}\"\n",
        m.api_url()
    ));
    w.ok(&["install", "web", "1.1.0"]);
    assert_eq!(installed(&w, "1.1.0"), snapshot(&src));
    assert_eq!(manifest(&w, "1.1.0")["format"], "tar-zst");
}
