//! The command line's grammar: every command and option, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_PATH;
use crate::ops::exit;

/// The text after `--help`: every exit code, then where to start.
pub(crate) fn after_help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (code, meaning) in exit::ALL {
        s.push_str(&format!("  {code}  {meaning}\n"));
    }
    s.push_str(
        "\nStart with `switchyard demo`: it deploys, promotes and reverts a tiny app in a
temporary folder, with no network, and prints every step.",
    );
    s
}

/// The whole grammar as clap sees it, with the after-help text: what parses
/// the command line, and what completions and man pages are made from.
pub(super) fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().after_help(after_help())
}

/// Switchyard: blue/green deployments of verified releases, with atomic
/// promote and instant revert.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version = crate::version::LONG_VERSION, about, long_about = None)]
pub(super) struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// More log output on stderr (-v info, -vv debug; the agent logs info by default).
    /// RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr: no warnings, and no progress (deploy, promote and revert
    /// otherwise show each step and the running hook's output on stderr as they run).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log lines as `text` (for people; with syslog priority prefixes under
    /// journald) or `json` (one object per line, for log shippers).
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum LogFormat {
    /// For people.
    Text,
    /// JSON lines.
    Json,
}

/// Options of commands that install.
#[derive(Debug, Clone, Args)]
pub(super) struct InstallFlags {
    /// Accept a version older than the highest already verified (recorded in history).
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// Options shared by commands that change an app.
#[derive(Debug, Clone, Args)]
pub(super) struct Common {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// If another operation holds the app's lock, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

/// Output options for read-only commands.
#[derive(Debug, Clone, Args)]
pub(super) struct Output {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands.
#[allow(missing_docs)] // flattened option groups; clap shows the variants' docs
#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    /// Holds the app (the agent deploys nothing on its own until `unhold`). A release that
    /// was only installed, never deployed, is refused while the app has deploy steps
    /// (warm, staging check, backup, migrate) it would skip: deploy it instead, or pass
    /// --skip-lifecycle.
    Promote {
        /// App name.
        app: String,
        /// An installed version.
        version: String,
        /// Promote a quarantined release anyway (and lift its quarantine once it is live and healthy).
        #[arg(long)]
        force: bool,
        /// Accept a major (breaking) upgrade.
        #[arg(long)]
        allow_major: bool,
        /// Make live a release that was only installed, without the deploy steps it missed.
        #[arg(long)]
        skip_lifecycle: bool,
        /// Why (kept in the audit log with each event of it; `history` shows it).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// The full lifecycle: pre-checks, install, warm, staging health, backup, migrate,
    /// swap, activate, live health; reverts at once (restoring the backup where
    /// migrations ran) if anything after the swap fails. Then prunes old
    /// releases (keep_releases) and names them.
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
        /// Deploy a quarantined release anyway (its quarantine is lifted once it is live and healthy).
        #[arg(long)]
        force: bool,
        /// Print the plan and change nothing: the version the source resolves, each
        /// pre-check and whether it would pass, the hooks, backup, migrate and health
        /// checks that would run, and what prune would remove afterwards.
        #[arg(long)]
        dry_run: bool,
        /// Why (kept in the audit log with each event of it; `history` shows it).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Schedule a deploy for later (the agent runs it, once), list or cancel
    /// scheduled deploys.
    Schedule {
        #[command(subcommand)]
        cmd: ScheduleCmd,
    },
    /// Fleet rollouts: see where a release stands across every host, and halt,
    /// resume or revert it fleet-wide. Needs [apps.<name>.fleet] (a github source); the
    /// fleet's state is the repository's Deployments, which every agent reads each poll.
    #[command(after_help = FLEET_TOKEN)]
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
    /// Compare two installed releases from their install manifests: files added,
    /// removed and changed (content, mode, type, link target).
    Diff {
        /// App name.
        app: String,
        /// The first (older) release.
        from: String,
        /// The second (newer) release.
        to: String,
        #[command(flatten)]
        out: Output,
    },
    /// Go back to the release live before the live one (or to --to VERSION), then activate
    /// and check it. Repeated, it walks further back through the live history (as
    /// Capistrano's rollback does), skipping pruned and quarantined releases; `last-good`
    /// always names where the next revert goes. Holds the app (see `unhold`).
    Revert {
        /// App name.
        app: String,
        /// Revert to this installed release instead.
        #[arg(long)]
        to: Option<String>,
        /// Why (kept in the audit log with each event of it; `history` shows it).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Show the live release, the rollback target, what is running, and the
    /// failed releases the agent will not retry (or retries later).
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
    /// Print the hooks' output: the latest deploy's hooks in the order they ran, each after a
    /// `==> hook (path) <==` header line. The app's keep_hook_logs deploys are kept.
    Logs {
        /// App name.
        app: String,
        /// This deploy's logs (its id, as in `history` and `status`).
        #[arg(long)]
        deploy: Option<String>,
        /// Only this hook's log (warm, backup, migrate, activate, restore, on_failure).
        #[arg(long)]
        hook: Option<String>,
        /// Follow the running deploy's logs as they grow, until it ends.
        #[arg(short, long, conflicts_with = "json")]
        follow: bool,
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
    /// Stop the agent's automatic deploys to an app (polls, webhooks, schedules, critical
    /// releases) until `unhold`; manual commands still work. A manual promote or revert
    /// holds the app by itself.
    Hold {
        /// App name.
        app: String,
        /// Why (shown by `status` and kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Resume the agent's automatic deploys to an app.
    Unhold {
        /// App name.
        app: String,
        #[command(flatten)]
        common: Common,
    },
    /// Quarantine a release: deploy and promote refuse it without --force, the agent never
    /// takes it, and it does not raise the downgrade floor.
    Quarantine {
        /// App name.
        app: String,
        /// The release.
        version: String,
        /// Why (shown by `status` and `list`, kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Lift a release's quarantine (after fixing what made its deploy fail).
    Unquarantine {
        /// App name.
        app: String,
        /// The release.
        version: String,
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
    /// The agent's web console ([console] in the configuration): its users.
    Console {
        #[command(subcommand)]
        cmd: ConsoleCmd,
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
    /// Check the audit log's hash chain, or seal a damaged one.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Pack a build directory as a release folder: <out>/<version>/{<name>-<version>.tar.gz,SHA256SUMS}.
    ///
    /// The directory's contents become the release root. When it holds a single directory,
    /// install strips it only if its name carries the version (web-1.2.0/) or the app's name;
    /// a lone public/ stays releases/<v>/public/. pack says which.
    Pack {
        /// The directory to pack (its contents become the release root).
        dir: PathBuf,
        /// Release version (1.2.3 or v1.2.3); also the folder name under --out.
        #[arg(long)]
        version: String,
        /// The release folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// Asset file name; {version} and {tag} are replaced. Default: <dir name>-<version>.<format>.
        #[arg(long)]
        asset: Option<String>,
        /// Compression: tar.gz (read everywhere) or tar.zst (zstd level 6: smaller, and
        /// several times faster to unpack).
        #[arg(long, value_enum, default_value = "tar.gz")]
        format: crate::cli::pack::PackFormat,
        /// Sign the asset and SHA256SUMS with this minisign secret key (password from
        /// SWITCHYARD_KEY_PASSWORD or the terminal if the key is encrypted).
        #[arg(long)]
        key: Option<PathBuf>,
        /// owner/repo named in the signatures' trusted comment (with tag and file), so a
        /// signed file cannot be replayed under another release.
        #[arg(long)]
        repo: Option<String>,
        /// A TOML file with a [rollout] plan (waves, max_failures, start): checked, then
        /// written as the release's release.toml (other keys kept) and signed with --key,
        /// which it requires. Fleet agents roll the release out in those waves.
        #[arg(long, value_name = "FILE")]
        rollout: Option<PathBuf>,
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
    /// A failed automatic deploy is remembered (.switchyard/agent.json): a refused
    /// release waits for a new release or an operator, an outage backs off up to 1 h.
    /// Events go once each to notify_url and by e-mail ([notify.email]). This
    /// is what systemd runs (systemd/switchyard.service).
    Agent,
    /// Run a local demo: deploy, promote and revert a tiny app, with no network.
    Demo {
        /// Work in this directory (kept afterwards) instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (switchyard.1 and one per subcommand) into a
    /// directory; the Debian package build uses it.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `backup` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum BackupCmd {
    /// Take a backup now (backup hook and, with backup_shared, the shared
    /// paths); an error when neither is configured.
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
    /// Restore a backup: verify it, run the restore hook, put shared paths
    /// back. It replaces live data: on a terminal it shows what and asks;
    /// anywhere else it needs --yes.
    Restore {
        /// App name.
        app: String,
        /// Backup id (default: the newest).
        id: Option<String>,
        /// Replace the data without asking (needed when standard input is
        /// not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
}

/// `config` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum ConfigCmd {
    /// Validate the file and print every problem at once, one
    /// FILE:LINE:COL: message line each; also checks that the files and
    /// folders it names (key_files, source dir, token_file,
    /// webhook_secret_file, [notify.email]'s credentials_file and ca_file,
    /// the console's users_file) exist and are readable, and warns about
    /// secret files other users can read (exit 0 with only warnings; a
    /// console users file others can read is an error).
    Check {
        #[command(flatten)]
        out: Output,
    },
    /// Send a test e-mail about an app now, through [notify.email] to the
    /// app's recipients, from this process (run it as root, as the agent
    /// runs, to read credentials_file). Exit 1 when it is not sent, naming
    /// the server and the SMTP step that failed.
    TestEmail {
        /// App name.
        app: String,
    },
}

/// `console` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum ConsoleCmd {
    /// Add a console user, or replace an existing user's password and role:
    /// an argon2id hash with a random salt goes into the users file
    /// ([console] users_file, default /etc/switchyard/console-users;
    /// written atomically, mode 0600). The password is read from the
    /// terminal without echo (twice), or with --password-stdin as one line
    /// from standard input; at least 12 characters. The running agent reads
    /// the file at each login: no restart needed.
    AddUser {
        /// The user's name (letters, digits, '.', '_', '@', '-'); shown in
        /// the audit log as console:NAME.
        name: String,
        /// viewer: reads every page. operator: also deploys, promotes,
        /// reverts, holds, quarantines, switches maintenance, takes backups.
        #[arg(long, value_enum)]
        role: ConsoleRole,
        /// Read the password as one line from standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// The users file (default: [console] users_file of the configuration).
        #[arg(long)]
        users_file: Option<PathBuf>,
    },
}

/// A console user's role.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum ConsoleRole {
    Viewer,
    Operator,
}

/// `audit` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum AuditCmd {
    /// Verify the audit log's hash chain: detects edited, inserted or deleted lines.
    Verify {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// After damage (a line that is not JSON, a broken chain): set the damaged
    /// log aside as audit.jsonl.damaged-<time> and start a new chain whose first
    /// event records its hash and line count, so deploys can go on.
    Seal {
        /// App name.
        app: String,
        /// What happened, for the record (kept in the seal event).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
}

/// `schedule` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum ScheduleCmd {
    /// Schedule a deploy: at --at (or after, once the agent sees it) the agent deploys
    /// the release, even with auto = "none" and outside the window, unless the app is
    /// held. The major gate still applies unless --allow-major. It runs once: a
    /// failed scheduled deploy is marked failed and never retried.
    Add {
        /// App name.
        app: String,
        /// The version to deploy (the source must offer it).
        version: String,
        /// When: "2026-12-01 03:00" (in --timezone), or an RFC 3339 instant
        /// such as 2026-12-01T03:00:00Z. Must be in the future.
        #[arg(long)]
        at: String,
        /// The IANA zone --at is read in (default: the system's local zone).
        #[arg(long)]
        timezone: Option<String>,
        /// Accept a major (breaking) upgrade.
        #[arg(long)]
        allow_major: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List scheduled deploys: pending, done, failed (with why) and cancelled.
    List {
        /// App name.
        app: String,
        #[command(flatten)]
        out: Output,
    },
    /// Cancel a pending scheduled deploy.
    Cancel {
        /// App name.
        app: String,
        /// The entry's id, or its version.
        id_or_version: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Where the fleet commands' token comes from, said after their help.
const FLEET_TOKEN: &str = "The token is the app's source token ([apps.<name>.source] token_env or token_file); a fine-grained token needs Deployments: read for `status`, read and write for `halt`, `resume` and `revert`. Exit codes: 2 without [apps.<name>.fleet], 5 for a release the source does not offer, 1 when GitHub cannot be read or written (nothing was posted).";

/// `fleet` subcommands.
#[allow(missing_docs)]
#[derive(Debug, Subcommand)]
pub(super) enum FleetCmd {
    /// Where a release's rollout stands: hosts per wave with each one's last state
    /// (pending, in_progress, success, failure, error, inactive) and its age, the
    /// failures, whether the rollout is halted (by whom, why), which wave is open and
    /// when the next opens (from the release's signed plan). Reads the ledger only;
    /// changes nothing. The token needs Deployments: read.
    Status {
        /// App name.
        app: String,
        /// The release (default: the newest the source offers).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Halt a release's rollout on every host: at its next poll, no agent starts the
    /// version any more (hosts already on it stay on it). Posts a control action to
    /// the repository's Deployments and records `fleet.halt` in this host's audit log.
    /// The token needs Deployments: read and write.
    Halt {
        /// App name.
        app: String,
        /// The release to halt.
        version: String,
        /// Why (shown by `fleet status` and on GitHub).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
    /// Resume a halted (or reverted) rollout: the waves proceed per the plan at each
    /// agent's next poll. Does not lift the automatic halt of a rollout whose failed
    /// hosts reached max_failures: publish a fixed release. Records `fleet.resume`.
    /// The token needs Deployments: read and write, and its GitHub login must be in
    /// [apps.NAME.fleet] operators: agents ignore a resume from any other login (a
    /// host's token cannot lift a halt).
    Resume {
        /// App name.
        app: String,
        /// The release to resume.
        version: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Revert a release fleet-wide: halted, and every host live on it goes back to its
    /// previous release at its next poll, inside its deploy window unless --now. No
    /// host deploys it again until `fleet resume`. Records `fleet.revert`. The token
    /// needs Deployments: read and write, and its GitHub login must be in
    /// [apps.NAME.fleet] operators: agents ignore a revert from any other login.
    Revert {
        /// App name.
        app: String,
        /// The release to take back.
        version: String,
        /// Why (shown by `fleet status` and on GitHub).
        #[arg(long)]
        reason: String,
        /// Revert at once on every host, outside their deploy windows.
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        common: Common,
    },
}
