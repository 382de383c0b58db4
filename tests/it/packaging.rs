//! What the Debian package ships and how operators and CI get Switchyard:
//! `--version`, completions, man pages, the sample configuration, and the
//! GitHub Actions example. `.ci/check-deb` builds and installs the package
//! itself; these are the parts that need no release build.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs the binary under test; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_and_the_features() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let line = out.trim_end();
    let features = if cfg!(feature = "test-seams") {
        "test-seams"
    } else {
        "none"
    };
    let prefix = format!("switchyard {} (commit ", env!("CARGO_PKG_VERSION"));
    let suffix = format!(", features: {features})");
    let commit = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(&suffix))
        .unwrap_or_else(|| panic!("--version printed {line:?}"));
    // In a git checkout the build names its commit (short hash); a source
    // tarball builds with "unknown".
    let git = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short", "HEAD"])
        .output();
    match git {
        Ok(g) if g.status.success() && repo(".git").exists() => {
            assert_eq!(commit, String::from_utf8_lossy(&g.stdout).trim(), "{line}");
        }
        _ => assert!(
            commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        ),
    }
    // -V says the same.
    assert_eq!(run(&["-V"]).1, out);
}

#[test]
fn completions_cover_the_subcommands_in_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in [
            "deploy",
            "promote",
            "revert",
            "status",
            "backup",
            "completions",
        ] {
            assert!(out.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let (_, bash, _) = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _switchyard"), "{bash}");
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("man");
    let (code, listing, err) = run(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "switchyard.1",
        "switchyard-deploy.1",
        "switchyard-backup-restore.1",
        "switchyard-completions.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        assert!(listing.contains(page), "{listing}");
    }
    let root = std::fs::read_to_string(out.join("switchyard.1")).unwrap();
    assert!(
        root.contains("Exit codes"),
        "the root page carries the after-help"
    );
    // The hidden generator gets no page, and `help` none either.
    assert!(!out.join("switchyard-man.1").exists());
    assert!(!out.join("switchyard-help.1").exists());
    let (_, help, _) = run(&["--help"]);
    assert!(
        !help.contains("\n  man "),
        "man is hidden from --help: {help}"
    );
    assert!(help.contains("completions"), "{help}");
}

#[test]
fn the_sample_config_passes_config_check_and_explains_each_key() {
    let sample = repo("packaging/switchyard.toml");
    // As shipped, the example app is commented out: accepted, with a warning.
    let (code, out, err) = run(&["--config", sample.to_str().unwrap(), "config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("warning: no apps configured"), "{out}");
    // Its settings (`#key`, sshd_config's convention) uncommented, with the
    // files they name in place, make a valid app.
    let text = std::fs::read_to_string(&sample).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let (public, _, _) = switchyard::testing::keygen(&dir.path().join("keys"), None).unwrap();
    let active: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/srv/drop/example", drop.to_str().unwrap())
        .replace("/etc/switchyard/keys/example.pub", public.to_str().unwrap());
    let uncommented = dir.path().join("switchyard.toml");
    std::fs::write(&uncommented, active).unwrap();
    let (code, out, err) = run(&["--config", uncommented.to_str().unwrap(), "config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 app: example)"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    // Every key that is set has a comment right above it (or belongs to a
    // run of keys that has one).
    let text = std::fs::read_to_string(&uncommented).unwrap();
    let mut prev = "";
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.starts_with('#') && !line.starts_with('[') {
            assert!(
                prev.starts_with('#'),
                "{line:?} in packaging/switchyard.toml has no comment above it"
            );
        }
        prev = line;
    }
    // The unit runs the agent as root; the group for the control socket is
    // the one the package creates (packaging/switchyard.sysusers).
    let sysusers = std::fs::read_to_string(repo("packaging/switchyard.sysusers")).unwrap();
    assert!(sysusers.lines().any(|l| l.trim() == "g switchyard -"));
    assert!(text.contains("\ncontrol_group = \"switchyard\"\n"));
}

/// What is wrong with a release workflow's way of getting Switchyard and of
/// handling the signing key; empty when nothing is.
fn workflow_problems(yml: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in yml.lines().enumerate() {
        let n = n + 1;
        let code = line.trim();
        // Comments too: a copied comment is a copied command.
        if let Some(at) = code.find("cargo install") {
            let args = &code[at..];
            if !(args.contains("--git ") && args.contains("--rev ") && args.contains("--locked")) {
                problems.push(format!(
                    "line {n}: cargo install without --git URL --rev COMMIT --locked installs crates.io's unrelated `switchyard`: {code}"
                ));
            }
        }
        let word = |w: &str| {
            code.split(|c: char| c.is_whitespace() || c == ';')
                .any(|t| t == w)
        };
        if code.starts_with('#') {
            continue;
        }
        if word("set")
            && (code.contains(" -x") || code.contains("xtrace") || code.contains(" -eux"))
        {
            problems.push(format!(
                "line {n}: tracing prints every command, with the key: {code}"
            ));
        }
        if code.contains("secrets.SWITCHYARD_SIGNING_KEY") && !code.starts_with("SIGNING_KEY: ${{")
        {
            problems.push(format!(
                "line {n}: the key secret may only reach a step through its env, not the script's text: {code}"
            ));
        }
        let key_var = code.contains("SIGNING_KEY") && !code.starts_with("SIGNING_KEY:");
        let key_file = code.contains("$key") || code.contains("switchyard.key\"");
        let prints = ["echo", "cat", "printf", "tee", "base64", "xxd", "od"]
            .iter()
            .any(|w| word(w));
        if prints && (key_var || key_file) {
            // Only one way is allowed: the secret written straight into the key file.
            let into_file = code == r#"printf '%s\n' "$SIGNING_KEY" > "$key""#;
            if !into_file {
                problems.push(format!("line {n}: this may print the key: {code}"));
            }
        }
    }
    for (needle, why) in [
        ("umask 077", "the key file must be created private"),
        ("chmod 0600 \"$key\"", "the key file must be 0600"),
        (
            "trap 'rm -f \"$key\"' EXIT",
            "the key file must go however the step ends",
        ),
        (
            "sha256sum --check",
            "the Switchyard download must be checked against a pinned SHA-256",
        ),
    ] {
        if !yml.contains(needle) {
            problems.push(format!("missing {needle:?}: {why}"));
        }
    }
    problems
}

#[test]
fn the_release_workflow_example_pins_switchyard_and_never_prints_the_key() {
    let yml = std::fs::read_to_string(repo("examples/github-release.yml")).unwrap();
    assert_eq!(workflow_problems(&yml), Vec::<String>::new());
    assert!(yml.contains("SWITCHYARD_DEB_SHA256"));

    // The check catches what it is for: each of these breaks the example.
    let broken = [
        ("sudo dpkg -i \"$deb\"", "cargo install --locked switchyard"),
        (
            "sudo dpkg -i \"$deb\"",
            "cargo install switchyard-deploy --git https://x/y --locked",
        ),
        ("set -eu +x", "set -eux"),
        ("umask 077", "set -x"),
        ("unset SIGNING_KEY", "echo \"$SIGNING_KEY\""),
        ("unset SIGNING_KEY", "cat \"$key\""),
        (
            "printf '%s\\n' \"$SIGNING_KEY\" > \"$key\"",
            "printf '%s\\n' \"$SIGNING_KEY\" | tee \"$key\"",
        ),
        (
            "printf '%s\\n' \"$SIGNING_KEY\" > \"$key\"",
            "printf '%s\\n' '${{ secrets.SWITCHYARD_SIGNING_KEY }}' > \"$key\"",
        ),
        ("chmod 0600 \"$key\"", ":"),
        ("trap 'rm -f \"$key\"' EXIT", ":"),
        ("| sha256sum --check --strict", ""),
    ];
    for (from, to) in broken {
        assert!(
            yml.contains(from),
            "{from:?} is not in the example any more"
        );
        let bad = yml.replacen(from, to, 1);
        assert!(
            !workflow_problems(&bad).is_empty(),
            "replacing {from:?} with {to:?} went unnoticed"
        );
    }
}

#[test]
fn the_package_metadata_ships_what_check_deb_expects() {
    let cargo = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    // The crates.io name `switchyard` is taken; the binary and library keep it.
    assert!(cargo.contains("\nname = \"switchyard-deploy\"\n"));
    for asset in [
        "\"target/release/switchyard\", \"usr/bin/\"",
        "\"packaging/switchyard.toml\", \"etc/switchyard/switchyard.toml\"",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/switchyard",
        "usr/share/zsh/vendor-completions/",
        "usr/share/fish/vendor_completions.d/",
    ] {
        assert!(
            cargo.contains(asset),
            "[package.metadata.deb] lacks {asset}"
        );
    }
    for setting in [
        "enable = false",
        "start = false",
        "separate-debug-symbols = true",
    ] {
        assert!(
            cargo.contains(setting),
            "[package.metadata.deb] lacks {setting}"
        );
    }
    // build-deb.sh rewrites this line for /usr/bin; the test fails loudly
    // here rather than in the packaging step if the unit changes it.
    let unit = std::fs::read_to_string(repo("systemd/switchyard.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/bin/switchyard agent "));
}

/// The packaged sample has its app commented out: `config check` accepts it
/// with a warning, and the agent refuses to start with nothing to watch.
#[test]
fn with_no_app_config_check_warns_and_the_agent_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, "[agent]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&["config", "check"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("warning: no apps configured"), "{text}");
    let (code, text) = run(&["agent"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("configures no app"), "{text}");
}
