//! Nothing outside the app root, ever: symlinks (and files) planted where
//! shared paths or their parents should be are refused by deploy, backup
//! create and backup restore, with nothing outside created, read or deleted;
//! roots that are system directories or shared between apps are refused at
//! load; the cleanup removes only what Switchyard created; and a root
//! belongs to the app that set it up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::World;

/// A world whose app keeps `var/log` under `shared/`, with backups of it.
fn world() -> World {
    let w = World::new();
    write_config(&w, &w.config, "web", &w.root, "backup_shared = true\n");
    w
}

/// Writes a config for one app with `dirs = ["var/log"]`.
fn write_config(w: &World, config: &Path, app: &str, root: &Path, extra: &str) {
    let text = format!(
        "[apps.{app}]\nroot = \"{}\"\nkeep_releases = 3\n{extra}\n[apps.{app}.source]\ndir = \"{}\"\n\n[apps.{app}.shared]\ndirs = [\"var/log\"]\n\n[apps.{app}.trust]\nkeys = [\"{}\"]\n",
        root.display(),
        w.drop_dir.display(),
        w.public_b64
    );
    std::fs::write(config, text).unwrap();
}

/// Everything below `dir`: path → what it is (file content, link target, dir).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn go(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if m.is_dir() {
                out.insert(rel, "dir".into());
                go(base, &p, out);
            } else {
                out.insert(
                    rel,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    go(dir, dir, &mut out);
    out
}

/// A directory outside the root holding data that must stay as it is.
fn elsewhere(w: &World) -> PathBuf {
    let d = w.tmp.path().canonicalize().unwrap().join("elsewhere");
    std::fs::create_dir_all(d.join("log")).unwrap();
    std::fs::write(d.join("log/secret.txt"), "not the app's\n").unwrap();
    std::fs::write(d.join("victim.txt"), "keep me\n").unwrap();
    d
}

fn deployed_with_backup(w: &World) -> String {
    w.simple_release("1.0.0");
    w.simple_release("1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    std::fs::write(w.root.join("shared/var/log/app.log"), "line\n").unwrap();
    let m = w.json(&["backup", "create", "web"]);
    m["id"].as_str().unwrap().to_string()
}

fn assert_refused(w: &World, args: &[&str], needles: &[&str]) {
    let (code, out, err) = w.run(args);
    assert_ne!(code, 0, "{args:?} must be refused:\n{out}\n{err}");
    for n in needles {
        assert!(
            err.contains(n),
            "{args:?}: the message should name {n:?}:\n{err}"
        );
    }
}

#[test]
fn a_symlink_planted_in_shared_is_refused_by_deploy() {
    let w = world();
    w.simple_release("1.0.0");
    std::fs::create_dir_all(w.root.join("shared")).unwrap();
    std::os::unix::fs::symlink(&w.outside, w.root.join("shared/var")).unwrap();
    let planted = w.root.join("shared/var").display().to_string();
    assert_refused(&w, &["deploy", "web", "1.0.0"], &[&planted, "symlink"]);
    w.assert_outside_untouched();
    assert!(w.link("current").is_none());
}

#[test]
fn a_symlink_planted_in_shared_is_refused_by_backup_create() {
    let w = world();
    deployed_with_backup(&w);
    let other = elsewhere(&w);
    let before = snapshot(&other);
    std::fs::remove_dir_all(w.root.join("shared/var")).unwrap();
    std::os::unix::fs::symlink(&other, w.root.join("shared/var")).unwrap();
    let n = w.json(&["backup", "list", "web"]).as_array().unwrap().len();
    let planted = w.root.join("shared/var").display().to_string();
    assert_refused(&w, &["backup", "create", "web"], &[&planted, "symlink"]);
    let list = w.json(&["backup", "list", "web"]);
    assert_eq!(list.as_array().unwrap().len(), n, "no backup was taken");
    assert_eq!(snapshot(&other), before);
}

#[test]
fn a_symlink_planted_in_shared_is_refused_by_backup_restore() {
    let w = world();
    let id = deployed_with_backup(&w);
    // The real data moves out, and a link to it takes its place.
    let other = w.tmp.path().canonicalize().unwrap().join("elsewhere");
    std::fs::rename(w.root.join("shared/var"), &other).unwrap();
    std::fs::write(other.join("log/victim.txt"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(&other, w.root.join("shared/var")).unwrap();
    let before = snapshot(&other);
    let planted = w.root.join("shared/var").display().to_string();
    assert_refused(
        &w,
        &["backup", "restore", "web", &id, "--yes"],
        &[&planted, "symlink"],
    );
    assert_eq!(
        snapshot(&other),
        before,
        "nothing outside replaced or deleted"
    );
}

/// Every kind of plant, at a shared path or one of its parents, refused by
/// every command that reads or writes shared paths.
#[test]
fn every_plant_is_refused_and_nothing_outside_changes() {
    let w = world();
    let id = deployed_with_backup(&w);
    let other = elsewhere(&w);
    let missing = w.tmp.path().canonicalize().unwrap().join("missing");
    let real = w.tmp.path().canonicalize().unwrap().join("real-var");
    let slash_log = Path::new("/log").exists();
    std::fs::rename(w.root.join("shared/var"), &real).unwrap();
    type Plant = (&'static str, &'static str, &'static str, &'static str);
    let plants: [Plant; 6] = [
        (
            "a parent directory symlink",
            "shared/var",
            "symlink",
            "other",
        ),
        (
            "a file where a directory should be",
            "shared/var",
            "not a directory",
            "file",
        ),
        ("a dangling link", "shared/var", "symlink", "missing"),
        ("a link to /", "shared/var", "symlink", "/"),
        (
            "the shared path itself a link",
            "shared/var/log",
            "symlink",
            "other",
        ),
        ("shared/ itself a link", "shared", "symlink", "other"),
    ];
    for (what, at, why, to) in plants {
        let at_path = w.root.join(at);
        if at == "shared/var/log" {
            std::fs::create_dir_all(w.root.join("shared/var")).unwrap();
        }
        if at == "shared" {
            std::fs::rename(w.root.join("shared"), w.tmp.path().join("shared-aside")).unwrap();
        }
        match to {
            "file" => std::fs::write(&at_path, "a file\n").unwrap(),
            "other" => std::os::unix::fs::symlink(&other, &at_path).unwrap(),
            "missing" => std::os::unix::fs::symlink(&missing, &at_path).unwrap(),
            t => std::os::unix::fs::symlink(t, &at_path).unwrap(),
        }
        let before = snapshot(&other);
        let planted = at_path.display().to_string();
        for args in [
            &["deploy", "web", "1.1.0"][..],
            &["backup", "create", "web"],
            &["backup", "restore", "web", &id, "--yes"],
        ] {
            let (code, out, err) = w.run(args);
            assert_ne!(code, 0, "{what}: {args:?} must be refused:\n{out}\n{err}");
            assert!(
                err.contains(&planted) && err.contains(why),
                "{what}: {args:?} should name {planted} and say {why:?}:\n{err}"
            );
            assert_eq!(
                snapshot(&other),
                before,
                "{what}: {args:?} changed {}",
                other.display()
            );
            assert!(
                !missing.exists(),
                "{what}: {args:?} created {}",
                missing.display()
            );
            w.assert_outside_untouched();
        }
        assert_eq!(
            w.link("current").as_deref(),
            Some("releases/1.0.0"),
            "{what}"
        );
        // Put things back for the next plant.
        std::fs::remove_file(&at_path).unwrap();
        if at == "shared" {
            std::fs::rename(w.tmp.path().join("shared-aside"), w.root.join("shared")).unwrap();
        }
        if at == "shared/var/log" {
            std::fs::remove_dir(w.root.join("shared/var")).unwrap();
        }
    }
    assert_eq!(Path::new("/log").exists(), slash_log, "/log was created");
    std::fs::rename(&real, w.root.join("shared/var")).unwrap();
    w.ok(&["deploy", "web", "1.1.0"]);
    w.ok(&["backup", "restore", "web", &id, "--yes"]);
}

/// A backup of a shared path that is a symlink would hold the bare link and
/// could never be restored: refused when taken.
#[test]
fn backup_refuses_a_shared_path_that_is_a_symlink() {
    let w = world();
    deployed_with_backup(&w);
    let other = elsewhere(&w);
    std::fs::remove_dir_all(w.root.join("shared/var/log")).unwrap();
    std::os::unix::fs::symlink(other.join("log"), w.root.join("shared/var/log")).unwrap();
    let planted = w.root.join("shared/var/log").display().to_string();
    assert_refused(&w, &["backup", "create", "web"], &[&planted, "symlink"]);
}

fn config_problems(w: &World, text: &str) -> String {
    std::fs::write(&w.config, text).unwrap();
    let (code, out, err) = w.run(&["config", "check"]);
    assert_eq!(code, 2, "config check should refuse:\n{text}\n{out}\n{err}");
    out + &err
}

fn two_apps(w: &World, a: &Path, b: &Path) -> String {
    let app = |name: &str, root: &Path| {
        format!(
            "[apps.{name}]\nroot = \"{}\"\n[apps.{name}.source]\ndir = \"{}\"\n[apps.{name}.trust]\nrequire_signature = false\n",
            root.display(),
            w.drop_dir.display()
        )
    };
    format!("{}\n{}", app("a", a), app("b", b))
}

#[test]
fn config_check_refuses_system_roots() {
    let w = World::new();
    for root in [
        "/",
        "/etc",
        "/usr",
        "/var",
        "/tmp",
        "/home",
        "/lib",
        "/tmp/../etc",
        "/usr/",
    ] {
        let text = format!(
            "[apps.web]\nroot = \"{root}\"\n[apps.web.source]\ndir = \"/d\"\n[apps.web.trust]\nrequire_signature = false\n"
        );
        let out = config_problems(&w, &text);
        assert!(
            out.contains(".toml:2:8: ") && out.contains("system directory"),
            "root = {root:?}: {out}"
        );
    }
    // Below /tmp is fine.
    w.write_config("");
    w.ok(&["config", "check"]);
}

#[test]
fn config_check_refuses_roots_that_collide() {
    let w = World::new();
    let base = w.tmp.path().canonicalize().unwrap();
    let r = base.join("r");
    std::fs::create_dir_all(base.join("cfg")).unwrap();
    std::fs::create_dir_all(&r).unwrap();
    std::os::unix::fs::symlink(&r, base.join("link")).unwrap();
    let spelled = [
        (base.join("cfg/../r"), "share the root"),
        (base.join("nowhere/../r"), "share the root"),
        (base.join("link"), "share the root"),
        (base.join("./r/"), "share the root"),
        (base.join("r/sub"), "inside"),
        (base.join("link/sub"), "inside"),
    ];
    for (b, why) in spelled {
        let out = config_problems(&w, &two_apps(&w, &r, &b));
        assert!(
            out.contains(why) && out.contains(&r.display().to_string()),
            "{}: {out}",
            b.display()
        );
    }
    // Apart, they are fine.
    std::fs::write(&w.config, two_apps(&w, &r, &base.join("r2"))).unwrap();
    w.ok(&["config", "check"]);
}

#[test]
fn cleanup_leaves_foreign_temporary_names_alone() {
    let w = World::new();
    w.simple_release("1.0.0");
    std::fs::create_dir_all(w.root.join("shared")).unwrap();
    let foreign = [
        ".important.tmp-data",
        ".important.tmp-123-0badf00d",
        ".current.tmp-1-deadbeef",
        "shared/.important.tmp-data",
    ];
    for f in foreign {
        std::fs::write(w.root.join(f), "mine\n").unwrap();
    }
    w.ok(&["deploy", "web", "1.0.0"]);
    w.ok(&["prune", "web"]);
    for f in foreign {
        assert_eq!(
            std::fs::read_to_string(w.root.join(f)).ok().as_deref(),
            Some("mine\n"),
            "{f} was removed"
        );
    }
}

#[test]
fn a_root_belongs_to_the_app_that_set_it_up() {
    let w = World::new();
    w.simple_release("1.0.0");
    w.simple_release("1.1.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    // Another config names the same root for another app.
    let other = w.tmp.path().join("other.toml");
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("apps.web", "apps.blog");
    std::fs::write(&other, text).unwrap();
    let root = w.root.display().to_string();
    for args in [
        &["deploy", "blog", "1.1.0"][..],
        &["backup", "create", "blog"],
        &["maintenance", "on", "blog"],
        &["prune", "blog"],
    ] {
        let out = assert_cmd::Command::cargo_bin("switchyard")
            .unwrap()
            .arg("--config")
            .arg(&other)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            err.contains(&root) && err.contains("web") && err.contains("blog"),
            "{args:?}: the refusal should name the root and both apps:\n{err}"
        );
    }
    assert_eq!(w.link("current").as_deref(), Some("releases/1.0.0"));
    assert!(!w.root.join("shared/maintenance.json").exists());
    w.ok(&["deploy", "web", "1.1.0"]);
}
