//! The command line: parsing, output (human or `--json`), exit codes.
//! The only place `anyhow` is used.

pub mod demo;
pub mod pack;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{Config, ConfigError, DEFAULT_PATH};
use crate::ops::deploy::{self, DeployError, Session, exit};
use crate::store::history::{self, Actor};
use crate::store::layout::AppPaths;
use crate::version::{Version, VersionRequest};

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 failure, 2 usage or configuration error,
3 verification failed (checksum, signature, unsafe archive), 4 the app is busy
(another operation holds its lock), 5 not found (app, release or version).

Start with `switchyard demo`: it deploys, promotes and reverts a tiny app in a
temporary folder, with no network, and prints every step.";

/// Switchyard: blue/green deployments of verified releases, with atomic
/// promote and instant revert.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of commands that install.
#[derive(Debug, Clone, Args)]
pub struct InstallFlags {
    /// Accept a version older than the highest already verified (recorded in history).
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// Options shared by commands that change an app.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// If another operation holds the app's lock, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

/// Output options for read-only commands.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands.
#[allow(missing_docs)] // flattened option groups; clap shows the variants' docs
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download, verify and unpack a release into releases/<version> (does not touch `current`).
    Install {
        /// App name, as in [apps.<name>].
        app: String,
        /// A version (1.2.3 or v1.2.3) or `latest` (the highest stable version).
        #[arg(default_value = "latest")]
        version: String,
        #[command(flatten)]
        flags: InstallFlags,
        #[command(flatten)]
        common: Common,
    },
    /// Make an installed release live: swap `current` atomically (the old one becomes
    /// `last-good`), run the activate hook and the live health check; reverts at once if they fail.
    Promote {
        /// App name.
        app: String,
        /// An installed version.
        version: String,
        /// Promote a quarantined release anyway.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// The full lifecycle: pre-checks, install, warm, staging health, backup, migrate,
    /// swap, activate, live health; reverts at once (restoring the backup where
    /// migrations ran) if anything after the swap fails.
    Deploy {
        /// App name.
        app: String,
        /// A version or `latest`.
        #[arg(default_value = "latest")]
        version: String,
        #[command(flatten)]
        flags: InstallFlags,
        /// Accept a major (breaking) upgrade; the release notes are shown otherwise.
        #[arg(long)]
        allow_major: bool,
        /// Deploy a quarantined release anyway.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Swap `current` back to `last-good` (or to --to VERSION), then activate and check it.
    Revert {
        /// App name.
        app: String,
        /// Revert to this installed release instead of `last-good`.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Show the live release, the rollback target and what is running.
    Status {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// List installed releases, marking current and last-good.
    List {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// The audit log: every deploy, install, promote, revert, backup and rollback, with time,
    /// versions, actor and result.
    History {
        /// App name.
        app: String,
        /// Show only the last N events.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        out: Output,
    },
    /// Remove old releases, keeping the newest keep_releases plus current and last-good.
    Prune {
        /// App name.
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// Compare the live release with the newest one the source offers on the app's channel.
    Check {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// Clear the block left by a failed revert or an unknown migrate outcome, and
    /// turn the maintenance flag off (after you have put the app in order).
    Resolve {
        /// App name.
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// Turn the maintenance flag (root/shared/maintenance.json) on or off.
    Maintenance {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// App name.
        app: String,
        /// Message for users (with `on`).
        #[arg(long, default_value = "Maintenance in progress")]
        message: String,
    },
    /// Backups: create, list, verify, restore.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
    /// Check the configuration file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Check a release on disk against the manifest written at install: every file's
    /// content, mode and type; reports drift (changed, added, missing). Exit 3 on drift.
    Verify {
        /// App name.
        app: String,
        /// Version (default: the live release).
        version: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Check the audit log's hash chain.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Pack a build directory as a release folder: <out>/<version>/{<name>-<version>.tar.gz,SHA256SUMS}.
    Pack {
        /// The directory to pack (its contents become the release root).
        dir: PathBuf,
        /// Release version (1.2.3 or v1.2.3); also the folder name under --out.
        #[arg(long)]
        version: String,
        /// The release folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// Asset file name; {version} and {tag} are replaced. Default: <dir name>-<version>.tar.gz.
        #[arg(long)]
        asset: Option<String>,
        /// Sign the asset and SHA256SUMS with this minisign secret key (password from
        /// SWITCHYARD_KEY_PASSWORD or the terminal if the key is encrypted).
        #[arg(long)]
        key: Option<PathBuf>,
        /// owner/repo named in the signatures' trusted comment (with tag and file), so a
        /// signed file cannot be replayed under another release.
        #[arg(long)]
        repo: Option<String>,
        #[command(flatten)]
        out_fmt: Output,
    },
    /// Generate a minisign-compatible signing key pair: <out>/switchyard.pub and switchyard.key.
    Keygen {
        /// Directory to write the keys into.
        #[arg(long)]
        out: PathBuf,
        /// Encrypt the secret key with a password (SWITCHYARD_KEY_PASSWORD or a prompt).
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        out_fmt: Output,
    },
    /// Sign files: writes FILE.minisig, which `minisign -V` accepts.
    Sign {
        /// Files to sign.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The secret key (password from SWITCHYARD_KEY_PASSWORD or the terminal if encrypted).
        #[arg(long)]
        key: PathBuf,
        /// The trusted comment (signed). Default: "file=<name>".
        #[arg(long)]
        trusted_comment: Option<String>,
    },
    /// Run the agent: watch every app (polling, GitHub webhooks), deploy per policy,
    /// serve /metrics and /healthz, and take CLI commands on the control socket.
    /// This is what systemd runs (systemd/switchyard.service).
    Agent,
    /// Run a local demo: deploy, promote and revert a tiny app, with no network.
    Demo {
        /// Work in this directory (kept afterwards) instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `backup` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Take a backup now (backup hook and, with backup_shared, the shared paths).
    Create {
        /// App name.
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// List backups, oldest first.
    List {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// Re-check a backup's SHA-256.
    Verify {
        /// App name.
        app: String,
        /// Backup id (default: the newest).
        id: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Restore a backup: verify it, run the restore hook, put shared paths back.
    Restore {
        /// App name.
        app: String,
        /// Backup id (default: the newest).
        id: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// `config` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the file and print every problem with its line and column.
    Check {
        #[command(flatten)]
        out: Output,
    },
}

/// `audit` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the audit log's hash chain: detects edited, inserted or deleted lines.
    Verify {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
}

/// A failure with its exit code, for the CLI edge.
struct Failure {
    code: i32,
    err: anyhow::Error,
    /// The JSON answer was already printed (it carries the details).
    json_printed: bool,
}

impl From<DeployError> for Failure {
    fn from(e: DeployError) -> Self {
        Failure {
            code: e.exit_code(),
            err: e.into(),
            json_printed: false,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        let code = match e {
            ConfigError::UnknownApp { .. } => exit::NOT_FOUND,
            _ => exit::USAGE,
        };
        Failure {
            code,
            err: e.into(),
            json_printed: false,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure {
            code: exit::FAILURE,
            err,
            json_printed: false,
        }
    }
}

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: exit::USAGE,
        err: e.into(),
        json_printed: false,
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "switchyard=info,warn",
        _ => "switchyard=debug,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Under systemd, journald adds its own timestamps and strips colour.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if journald {
        b.without_time().init();
    } else {
        b.init();
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    init_logging(cli.verbose);
    let json = wants_json(&cli.command);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json && !f.json_printed {
                let v = serde_json::json!({"error": format!("{:#}", f.err), "exit_code": f.code});
                println!("{v}");
            }
            eprintln!("error: {:#}", f.err);
            ExitCode::from(f.code as u8)
        }
    }
}

fn wants_json(c: &Command) -> bool {
    match c {
        Command::Install { common, .. }
        | Command::Promote { common, .. }
        | Command::Deploy { common, .. }
        | Command::Revert { common, .. }
        | Command::Prune { common, .. } => common.json,
        Command::Status { out, .. }
        | Command::Verify { out, .. }
        | Command::List { out, .. }
        | Command::History { out, .. }
        | Command::Check { out, .. } => out.json,
        Command::Config {
            cmd: ConfigCmd::Check { out },
        }
        | Command::Audit {
            cmd: AuditCmd::Verify { out, .. },
        } => out.json,
        Command::Pack { out_fmt, .. } | Command::Keygen { out_fmt, .. } => out_fmt.json,
        Command::Sign { .. } => false,
        Command::Demo { .. } | Command::Maintenance { .. } | Command::Agent => false,
        Command::Resolve { common, .. } => common.json,
        Command::Backup { cmd } => match cmd {
            BackupCmd::Create { common, .. } | BackupCmd::Restore { common, .. } => common.json,
            BackupCmd::List { out, .. } | BackupCmd::Verify { out, .. } => out.json,
        },
    }
}

fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serializes")
    );
}

fn parse_request(s: &str) -> Result<VersionRequest, Failure> {
    s.parse::<VersionRequest>().map_err(usage)
}

fn parse_version(s: &str) -> Result<Version, Failure> {
    Version::parse(s).map_err(usage)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let load = || Config::load(&cli.config);
    match &cli.command {
        Command::Agent => {
            crate::daemon::agent::run(&cli.config).map_err(|e| {
                match e.downcast::<ConfigError>() {
                    Ok(ce) => Failure::from(ce),
                    Err(e) => Failure::from(e),
                }
            })?;
        }
        Command::Demo { dir } => {
            crate::cli::demo::run(dir.as_deref()).map_err(Failure::from)?;
        }
        Command::Pack {
            dir,
            version,
            out,
            asset,
            key,
            repo,
            out_fmt,
        } => {
            let signing = key.as_ref().map(|k| crate::cli::pack::Signing {
                key: k.clone(),
                password: crate::verify::trust::key_password_from_env_or_tty(
                    "Password for the signing key: ",
                ),
                repo: repo.clone(),
            });
            let p = crate::cli::pack::pack_signed(
                dir,
                version,
                out,
                asset.as_deref(),
                signing.as_ref(),
            )
            .map_err(|e| match e {
                crate::cli::pack::PackError::Version(_)
                | crate::cli::pack::PackError::Exists(_) => usage(e),
                e => anyhow::Error::from(e).into(),
            })?;
            if out_fmt.json {
                print_json(&p);
            } else {
                println!("packed {} ({})", p.asset.display(), p.sha256);
                println!("wrote  {}", p.sums.display());
                for s in &p.signatures {
                    println!("signed {}", s.display());
                }
            }
        }
        Command::Keygen {
            out,
            password,
            out_fmt,
        } => {
            let pw = if *password {
                let p = crate::verify::trust::key_password_from_env_or_tty(
                    "Password for the new key: ",
                );
                if p.is_none() {
                    return Err(usage(anyhow::anyhow!(
                        "--password needs SWITCHYARD_KEY_PASSWORD or a terminal to read it from"
                    )));
                }
                p
            } else {
                None
            };
            let (pk, sk, id) =
                crate::verify::trust::keygen(out, pw).map_err(anyhow::Error::from)?;
            let public = crate::fs::read_to_string(&pk)
                .ok()
                .and_then(|t| t.lines().nth(1).map(String::from))
                .unwrap_or_default();
            if out_fmt.json {
                print_json(&serde_json::json!({
                    "public_key_file": pk, "secret_key_file": sk, "key_id": id.to_string(), "public_key": public
                }));
            } else {
                println!("public key: {}  (key id {id})", pk.display());
                println!("secret key: {}  (keep it secret; mode 0600)", sk.display());
                println!("\nPin it on every host:\n  [apps.<name>.trust]\n  keys = [\"{public}\"]");
            }
        }
        Command::Sign {
            files,
            key,
            trusted_comment,
        } => {
            let pw = crate::verify::trust::key_password_from_env_or_tty(
                "Password for the signing key: ",
            );
            for f in files {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let comment = trusted_comment
                    .clone()
                    .unwrap_or_else(|| format!("file={name}"));
                let sig = crate::verify::trust::sign_file(key, pw.clone(), f, Some(&comment))
                    .map_err(anyhow::Error::from)?;
                println!("signed {}", sig.display());
            }
        }
        Command::Config {
            cmd: ConfigCmd::Check { out },
        } => match load() {
            Ok(c) => {
                if out.json {
                    print_json(&serde_json::json!({
                        "ok": true, "path": c.path, "apps": c.apps.keys().collect::<Vec<_>>()
                    }));
                } else {
                    println!(
                        "{}: ok ({} app{}: {})",
                        c.path.display(),
                        c.apps.len(),
                        if c.apps.len() == 1 { "" } else { "s" },
                        c.apps.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Err(ConfigError::Invalid { path, problems }) => {
                if out.json {
                    print_json(
                        &serde_json::json!({"ok": false, "path": path, "problems": problems}),
                    );
                    return Err(Failure {
                        code: exit::USAGE,
                        err: anyhow::anyhow!("{} problem(s) in {}", problems.len(), path.display()),
                        json_printed: true,
                    });
                }
                for p in &problems {
                    println!("{}:{}", path.display(), p);
                }
                return Err(Failure {
                    code: exit::USAGE,
                    err: anyhow::anyhow!("{} problem(s) in {}", problems.len(), path.display()),
                    json_printed: false,
                });
            }
            Err(e) => return Err(e.into()),
        },
        Command::Install {
            app,
            version,
            flags,
            common,
        } => {
            let req = parse_request(version)?;
            let cfg = load()?;
            let a = cfg.app(app)?;
            let s = Session::open(
                a,
                Actor::current_user(),
                &format!("install {version}"),
                common.wait,
            )?;
            let src = crate::source::for_app(a);
            let r = s.install(src.as_ref(), &req, install_opts(flags))?;
            // With no warm hook to change the tree later, share identical
            // files with the live release now.
            if r.installed
                && a.hooks.warm.is_none()
                && let Some(cur) = s.paths.current_version().map_err(DeployError::from)?
            {
                crate::store::dedup::dedup_release(
                    &s.paths,
                    &a.shared,
                    &r.version,
                    &cur,
                    a.policy.dedup,
                )
                .map_err(DeployError::from)?;
            }
            if common.json {
                print_json(&r);
            } else if r.installed {
                println!("installed {app} {} at {}", r.version, r.path.display());
            } else {
                println!(
                    "{app} {} is already installed at {}",
                    r.version,
                    r.path.display()
                );
            }
        }
        Command::Promote {
            app,
            version,
            force,
            common,
        } => {
            let v = parse_version(version)?;
            let cfg = load()?;
            let a = cfg.app(app)?;
            let req = crate::daemon::control::ControlRequest::Promote {
                app: app.clone(),
                version: v.to_string(),
                force: *force,
            };
            if via_agent(&cfg, req, common.json)? {
                return Ok(());
            }
            let s = Session::open(
                a,
                Actor::current_user(),
                &format!("promote {v}"),
                common.wait,
            )?;
            let r = s.promote_checked(&v, *force)?;
            print_switch(app, &r, common.json);
        }
        Command::Deploy {
            app,
            version,
            flags,
            allow_major,
            force,
            common,
        } => {
            let req = parse_request(version)?;
            let cfg = load()?;
            let a = cfg.app(app)?;
            let creq = crate::daemon::control::ControlRequest::Deploy {
                app: app.clone(),
                version: version.clone(),
                allow_downgrade: flags.allow_downgrade,
                allow_major: *allow_major,
                force: *force,
            };
            if via_agent(&cfg, creq, common.json)? {
                return Ok(());
            }
            let s = Session::open(
                a,
                Actor::current_user(),
                &format!("deploy {version}"),
                common.wait,
            )?;
            let src = crate::source::for_app(a);
            let out = s.deploy(
                src.as_ref(),
                &req,
                crate::ops::lifecycle::DeployOptions {
                    allow_downgrade: flags.allow_downgrade,
                    allow_major: *allow_major,
                    force: *force,
                },
            )?;
            if common.json {
                print_json(&out);
            } else {
                println!(
                    "{app}: deployed {} (was {}); deploy id {}",
                    out.to,
                    out.from
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none".into()),
                    out.id
                );
                if let Some(b) = &out.backup_id {
                    println!("backup {b} taken before migrating");
                }
                for h in &out.health {
                    println!(
                        "{} health: passed after {} round(s) in {} ms",
                        h.phase,
                        h.report.attempts,
                        h.report.elapsed.as_millis()
                    );
                }
            }
        }
        Command::Revert { app, to, common } => {
            let to = to.as_deref().map(parse_version).transpose()?;
            let cfg = load()?;
            let a = cfg.app(app)?;
            let req = crate::daemon::control::ControlRequest::Revert {
                app: app.clone(),
                to: to.as_ref().map(|v| v.to_string()),
            };
            if via_agent(&cfg, req, common.json)? {
                return Ok(());
            }
            let s = Session::open(a, Actor::current_user(), "revert", common.wait)?;
            let r = s.revert_checked(to.as_ref())?;
            print_switch(app, &r, common.json);
        }
        Command::Resolve { app, common } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let s = Session::open(a, Actor::current_user(), "resolve", common.wait)?;
            let cleared = s.resolve()?;
            if common.json {
                print_json(&serde_json::json!({"cleared": cleared}));
            } else {
                match cleared {
                    Some(a) => println!(
                        "{app}: cleared {} ({}); deploys are allowed again",
                        a.kind, a.reason
                    ),
                    None => println!("{app}: nothing was blocked; the maintenance flag is off"),
                }
            }
        }
        Command::Maintenance {
            state,
            app,
            message,
        } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let paths = AppPaths::new(&a.root);
            if state == "on" {
                crate::store::layout::maintenance::on(&paths, message, "operator")
                    .map_err(|e| Failure::from(DeployError::from(e)))?;
                println!(
                    "{app}: maintenance on ({})",
                    crate::store::layout::maintenance::path(&paths).display()
                );
            } else {
                crate::store::layout::maintenance::off(&paths)
                    .map_err(|e| Failure::from(DeployError::from(e)))?;
                println!("{app}: maintenance off");
            }
        }
        Command::Backup { cmd } => run_backup(load, cmd)?,
        Command::Verify { app, version, out } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let v = match version {
                Some(v) => parse_version(v)?,
                None => AppPaths::new(&a.root)
                    .current_version()
                    .map_err(DeployError::from)?
                    .ok_or_else(|| Failure {
                        code: exit::NOT_FOUND,
                        err: anyhow::anyhow!(
                            "{app} has no live release; name one: switchyard verify {app} <version>"
                        ),
                        json_printed: false,
                    })?,
            };
            let r = deploy::verify_release(a, &v)?;
            if out.json {
                print_json(&r);
            } else if r.drift.is_clean() {
                println!(
                    "{app} {}: {} entries match the manifest",
                    r.version, r.entries
                );
            } else {
                for p in &r.drift.changed {
                    println!("changed  {p}");
                }
                for p in &r.drift.added {
                    println!("added    {p}");
                }
                for p in &r.drift.missing {
                    println!("missing  {p}");
                }
            }
            if !r.drift.is_clean() {
                return Err(Failure {
                    code: exit::VERIFY,
                    err: anyhow::anyhow!(
                        "{app} {} differs from its manifest: {} changed, {} added, {} missing; reinstall it (prune it, then install) or investigate who changed it",
                        r.version,
                        r.drift.changed.len(),
                        r.drift.added.len(),
                        r.drift.missing.len()
                    ),
                    json_printed: out.json,
                });
            }
        }
        Command::Prune { app, common } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let s = Session::open(a, Actor::current_user(), "prune", common.wait)?;
            let removed = s.prune()?;
            if common.json {
                print_json(&serde_json::json!({"removed": removed}));
            } else if removed.is_empty() {
                println!("nothing to prune (keep_releases = {})", a.keep_releases);
            } else {
                for v in removed {
                    println!("pruned {app} {v}");
                }
            }
        }
        Command::Check { app, out } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let current = AppPaths::new(&a.root)
                .current_version()
                .map_err(DeployError::from)?;
            let src = crate::source::for_app(a);
            let r = crate::source::check_updates(a, src.as_ref(), current)
                .map_err(DeployError::from)?;
            if out.json {
                print_json(&r);
            } else {
                print!("{}", render_check(&r));
            }
        }
        Command::Status { app, out } => {
            let cfg = load()?;
            cfg.app(app)?;
            let req = crate::daemon::control::ControlRequest::Status { app: app.clone() };
            if via_agent(&cfg, req, out.json)? {
                return Ok(());
            }
            let st = deploy::status(cfg.app(app)?)?;
            if out.json {
                print_json(&st);
            } else {
                print!("{}", render_status(&st));
            }
        }
        Command::List { app, out } => {
            let cfg = load()?;
            let rows = deploy::list(cfg.app(app)?)?;
            if out.json {
                print_json(&rows);
            } else if rows.is_empty() {
                println!("no releases of {app} installed");
            } else {
                for r in rows {
                    let mark = match (r.current, r.last_good) {
                        (true, _) => "* current  ",
                        (_, true) => "  last-good",
                        _ => "           ",
                    };
                    let disk = match r.disk {
                        Some(d) if d.shared_bytes > 0 => format!(
                            "{} (+{} shared)",
                            human_bytes(d.unique_bytes),
                            human_bytes(d.shared_bytes)
                        ),
                        Some(d) => human_bytes(d.unique_bytes),
                        None => String::new(),
                    };
                    println!(
                        "{mark} {:<16} {:>24}  {}",
                        r.version.to_string(),
                        disk,
                        r.installed_at.unwrap_or_default()
                    );
                }
            }
        }
        Command::History { app, limit, out } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let mut events = history::read(&AppPaths::new(&a.root))
                .map_err(DeployError::from)?
                .into_iter()
                .map(|s| s.event)
                .collect::<Vec<_>>();
            if let Some(n) = limit {
                let skip = events.len().saturating_sub(*n);
                events.drain(..skip);
            }
            if out.json {
                print_json(&events);
            } else if events.is_empty() {
                println!("no history for {app} yet");
            } else {
                for e in events {
                    let versions = match (&e.from, &e.to) {
                        (Some(f), Some(t)) => format!("{f} -> {t}"),
                        (None, Some(t)) => t.clone(),
                        (Some(f), None) => f.clone(),
                        (None, None) => String::new(),
                    };
                    println!(
                        "{}  {:<30} {:<18} {:<12} by {}{}",
                        e.time,
                        e.event,
                        versions,
                        e.outcome,
                        e.actor.user,
                        e.error.map(|m| format!("\n    {m}")).unwrap_or_default()
                    );
                    if let Some(sigs) = e.details.get("signatures").and_then(|v| v.as_array()) {
                        for sig in sigs {
                            println!(
                                "    signed {} by key {}: {}",
                                sig["file"].as_str().unwrap_or(""),
                                sig["key_id"].as_str().unwrap_or(""),
                                sig["trusted_comment"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
            }
        }
        Command::Audit {
            cmd: AuditCmd::Verify { app, out },
        } => {
            let cfg = load()?;
            let a = cfg.app(app)?;
            let n = history::check_chain(&AppPaths::new(&a.root)).map_err(|e| Failure {
                code: exit::VERIFY,
                err: e.into(),
                json_printed: false,
            })?;
            if out.json {
                print_json(&serde_json::json!({"ok": true, "lines": n}));
            } else {
                println!("audit log of {app}: {n} lines, chain intact");
            }
        }
    }
    Ok(())
}

fn run_backup(
    load: impl Fn() -> Result<Config, ConfigError>,
    cmd: &BackupCmd,
) -> Result<(), Failure> {
    let bfail = |e: crate::ops::backup::BackupError| {
        let code = match e {
            crate::ops::backup::BackupError::NotFound { .. } => exit::NOT_FOUND,
            crate::ops::backup::BackupError::Damaged { .. } => exit::VERIFY,
            _ => exit::FAILURE,
        };
        Failure {
            code,
            err: e.into(),
            json_printed: false,
        }
    };
    let newest = |paths: &AppPaths, id: &Option<String>| -> Result<String, Failure> {
        match id {
            Some(i) => Ok(i.clone()),
            None => crate::ops::backup::list(paths)
                .map_err(bfail)?
                .pop()
                .map(|m| m.id)
                .ok_or_else(|| {
                    bfail(crate::ops::backup::BackupError::NotFound {
                        id: "(newest)".into(),
                    })
                }),
        }
    };
    let cfg = load()?;
    match cmd {
        BackupCmd::Create { app, common } => {
            let a = cfg.app(app)?;
            let s = Session::open(a, Actor::current_user(), "backup create", common.wait)?;
            let m = s.backup_now()?;
            if common.json {
                print_json(&m);
            } else {
                println!(
                    "backup {} ({}, sha256 {})",
                    m.id,
                    human_bytes(m.size),
                    m.sha256
                );
            }
        }
        BackupCmd::List { app, out } => {
            let a = cfg.app(app)?;
            let all = crate::ops::backup::list(&AppPaths::new(&a.root)).map_err(bfail)?;
            if out.json {
                print_json(&all);
            } else if all.is_empty() {
                println!("no backups of {app}");
            } else {
                for m in all {
                    println!(
                        "{}  {:>10}  version {:<10} deploy {:<16} {}",
                        m.id,
                        human_bytes(m.size),
                        m.app_version.unwrap_or_else(|| "-".into()),
                        if m.deploy_id.is_empty() {
                            "-".to_string()
                        } else {
                            m.deploy_id
                        },
                        m.time
                    );
                }
            }
        }
        BackupCmd::Verify { app, id, out } => {
            let a = cfg.app(app)?;
            let paths = AppPaths::new(&a.root);
            let id = newest(&paths, id)?;
            let m = crate::ops::backup::verify(&paths, &id).map_err(bfail)?;
            if out.json {
                print_json(&serde_json::json!({"ok": true, "backup": m}));
            } else {
                println!("backup {}: checksum ok ({})", m.id, m.sha256);
            }
        }
        BackupCmd::Restore { app, id, common } => {
            let a = cfg.app(app)?;
            let s = Session::open(a, Actor::current_user(), "backup restore", common.wait)?;
            let id = newest(&s.paths, id)?;
            let v = s
                .paths
                .current_version()
                .map_err(DeployError::from)?
                .unwrap_or_else(|| Version::parse("0.0.0").expect("valid"));
            s.restore_backup(&id, &v, &crate::store::state::new_id())?;
            if common.json {
                print_json(&serde_json::json!({"restored": id}));
            } else {
                println!("{app}: restored backup {id}");
            }
        }
    }
    Ok(())
}

/// Sends the command to the running agent, if one listens on the control
/// socket (so operations are serialised through it); `Ok(false)` when there
/// is none and the CLI should act directly. `SWITCHYARD_NO_AGENT=1` skips it.
fn via_agent(
    cfg: &Config,
    req: crate::daemon::control::ControlRequest,
    json: bool,
) -> Result<bool, Failure> {
    if std::env::var_os("SWITCHYARD_NO_AGENT").is_some_and(|v| v == "1") {
        return Ok(false);
    }
    let resp = crate::daemon::control::request(&cfg.agent.control_socket, &req)
        .map_err(|e| Failure::from(anyhow::anyhow!(e)))?;
    let Some(resp) = resp else { return Ok(false) };
    if resp.exit_code == exit::OK {
        if json {
            print_json(&resp.result.unwrap_or_default());
        } else if let Some(t) = resp.text {
            println!("{}", t.trim_end());
        } else if let Some(st) = resp
            .result
            .and_then(|r| serde_json::from_value::<deploy::Status>(r).ok())
        {
            print!("{}", render_status(&st));
        }
        return Ok(true);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"error": resp.error, "exit_code": resp.exit_code})
        );
    }
    Err(Failure {
        code: resp.exit_code,
        err: anyhow::anyhow!("{} (via the agent)", resp.error.unwrap_or_default()),
        json_printed: json,
    })
}

fn install_opts(f: &InstallFlags) -> deploy::InstallOptions {
    deploy::InstallOptions {
        allow_downgrade: f.allow_downgrade,
    }
}

fn print_switch(app: &str, r: &deploy::SwitchReport, json: bool) {
    if json {
        print_json(r);
    } else if !r.changed {
        println!("{app} {} is already live", r.to);
    } else {
        println!(
            "{app}: current -> {} (was {}); last-good -> {}",
            r.to,
            r.from
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
            r.last_good
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
}

/// Renders an update check for people.
pub fn render_check(r: &crate::source::UpdateCheck) -> String {
    let current = r
        .current
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "none".into());
    let mut s = format!(
        "app:        {}\nsource:     {}\nchannel:    {}\ncurrent:    {current}\n",
        r.app, r.source, r.channel
    );
    match (&r.latest, &r.latest_tag) {
        (Some(v), Some(tag)) => {
            s.push_str(&format!("latest:     {v} (tag {tag})\n"));
            if let Some(p) = &r.published_at {
                s.push_str(&format!("published:  {p}\n"));
            }
        }
        _ => s.push_str(&format!("latest:     none on the {} channel\n", r.channel)),
    }
    if r.update_available {
        let newer = r
            .newer
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "status:     {} version{} behind ({newer}){}\n",
            r.behind,
            if r.behind == 1 { "" } else { "s" },
            if r.major_upgrade {
                "; a MAJOR (breaking) upgrade: read the notes first"
            } else {
                ""
            }
        ));
        if let Some(v) = &r.latest {
            s.push_str(&format!("upgrade:    switchyard deploy {} {v}\n", r.app));
        }
    } else {
        s.push_str("status:     up to date\n");
    }
    if let Some(n) = &r.notes {
        s.push_str("\nrelease notes:\n");
        for line in n.lines() {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s
}

/// Renders a status for people.
pub fn render_status(st: &deploy::Status) -> String {
    let opt = |v: &Option<Version>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    };
    let mut s = format!(
        "app:        {}\nroot:       {}\ncurrent:    {}\nlast-good:  {}\ninstalled:  {}\n",
        st.app,
        st.root.display(),
        opt(&st.current),
        opt(&st.last_good),
        if st.installed.is_empty() {
            "none".to_string()
        } else {
            st.installed
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for sig in &st.current_signatures {
        s.push_str(&format!(
            "signed:     {} by key {}: {}{}\n",
            sig.file,
            sig.key_id,
            sig.trusted_comment,
            if sig.legacy {
                " (legacy signature)"
            } else {
                ""
            }
        ));
    }
    if let Some(d) = &st.deploy {
        s.push_str(&format!(
            "deploy:     {} {} -> {}: {} ({}), updated {}\n",
            d.id,
            d.from
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
            d.to.as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            d.state.as_str(),
            d.step,
            d.updated
        ));
        if let Some(e) = &d.last_error {
            s.push_str(&format!("last error: {e}\n"));
        }
    }
    if let Some(a) = &st.attention {
        s.push_str(&format!(
            "BLOCKED:    {} since {}: {}\n",
            a.kind, a.since, a.reason
        ));
    }
    if let Some(m) = &st.maintenance {
        s.push_str(&format!(
            "maintenance: on since {} ({}): {}\n",
            m.since, m.reason, m.message
        ));
    }
    for (v, q) in &st.quarantined {
        s.push_str(&format!(
            "quarantined: {v} since {}: {}\n",
            q.time, q.reason
        ));
    }
    if let Some(h) = &st.highest_verified {
        s.push_str(&format!("highest verified: {h}\n"));
    }
    if let Some(r) = &st.running {
        s.push_str(&format!(
            "running:    pid {} '{}' since {}\n",
            r.pid, r.operation, r.since
        ));
    }
    if let Some(i) = &st.interrupted {
        s.push_str(&format!("interrupted: {i}\n"));
    }
    if let Some(e) = &st.last_event {
        s.push_str(&format!(
            "last event: {} {} {} ({}) by {}\n",
            e.time,
            e.event,
            e.to.clone().unwrap_or_default(),
            e.outcome,
            e.actor.user
        ));
    }
    for p in &st.problems {
        s.push_str(&format!("PROBLEM:    {p}\n"));
    }
    s
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
