//! What each command does: app commands become an operations-API request,
//! run by a running agent when it takes them or here otherwise, and the
//! outcome is rendered; the local tools (pack, keygen, sign, config check,
//! demo, agent) are in `local.rs`.

use std::path::{Path, PathBuf};

use crate::cli::Failure;
use crate::cli::args::{
    AuditCmd, BackupCmd, Cli, Command, ConfigCmd, ConsoleCmd, FleetCmd, InstallFlags, ScheduleCmd,
};
use crate::cli::local::{agent, config_check, console_add_user, keygen, pack, sign, test_email};
use crate::cli::render;
use crate::config::Config;
use crate::ops::api::{self, Caller, Reply, Request};
use crate::ops::exit;
use crate::store::history::Actor;
use crate::version::{Version, VersionRequest};

/// Runs a parsed command line.
pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Agent => agent(&cli.config),
        Command::Demo { dir } => crate::cli::demo::run(dir.as_deref()).map_err(Failure::from),
        Command::Completions { shell } => crate::cli::generate::completions(*shell),
        Command::Man { out } => crate::cli::generate::man_pages(out),
        Command::Pack {
            dir,
            version,
            out,
            asset,
            format,
            key,
            repo,
            rollout,
            out_fmt,
        } => pack(
            dir,
            version,
            out,
            asset.as_deref(),
            *format,
            key.as_deref(),
            repo,
            rollout.as_deref(),
            out_fmt.json,
        ),
        Command::Keygen {
            out,
            password,
            out_fmt,
        } => keygen(out, *password, out_fmt.json),
        Command::Sign {
            files,
            key,
            trusted_comment,
        } => sign(files, key, trusted_comment.as_deref()),
        Command::Config {
            cmd: ConfigCmd::Check { out },
        } => config_check(&cli.config, out.json),
        Command::Config {
            cmd: ConfigCmd::TestEmail { app },
        } => test_email(&cli.config, app),
        Command::Console {
            cmd:
                ConsoleCmd::AddUser {
                    name,
                    role,
                    password_stdin,
                    users_file,
                },
        } => console_add_user(
            &cli.config,
            name,
            *role,
            *password_stdin,
            users_file.as_deref(),
        ),
        Command::Logs {
            app,
            deploy,
            hook,
            follow,
            out,
        } => logs(
            &cli.config,
            app,
            deploy.as_deref(),
            hook.as_deref(),
            *follow,
            out.json,
        ),
        app_command => {
            let (req, json, wait) = request(app_command)?;
            if let Command::Backup {
                cmd: BackupCmd::Restore { yes: false, .. },
            } = app_command
            {
                confirm_restore(&cli.config, &req)?;
            }
            // Progress lines are text: a JSON log stream gets none.
            let progress = !cli.quiet && cli.log_format == crate::cli::args::LogFormat::Text;
            operate(&cli.config, &req, json, wait, progress)
        }
    }
}

/// Whether the command prints JSON (errors then print JSON too).
pub(crate) fn wants_json(c: &Command) -> bool {
    match c {
        Command::Install { common, .. }
        | Command::Promote { common, .. }
        | Command::Deploy { common, .. }
        | Command::Revert { common, .. }
        | Command::Hold { common, .. }
        | Command::Unhold { common, .. }
        | Command::Quarantine { common, .. }
        | Command::Unquarantine { common, .. }
        | Command::Prune { common, .. }
        | Command::Resolve { common, .. }
        | Command::Audit {
            cmd: AuditCmd::Seal { common, .. },
        } => common.json,
        Command::Schedule { cmd } => match cmd {
            ScheduleCmd::Add { common, .. } | ScheduleCmd::Cancel { common, .. } => common.json,
            ScheduleCmd::List { out, .. } => out.json,
        },
        Command::Fleet { cmd } => match cmd {
            FleetCmd::Status { out, .. } => out.json,
            FleetCmd::Halt { common, .. }
            | FleetCmd::Resume { common, .. }
            | FleetCmd::Revert { common, .. } => common.json,
        },
        Command::Status { out, .. }
        | Command::Diff { out, .. }
        | Command::Verify { out, .. }
        | Command::List { out, .. }
        | Command::History { out, .. }
        | Command::Logs { out, .. }
        | Command::Check { out, .. } => out.json,
        Command::Config {
            cmd: ConfigCmd::Check { out },
        }
        | Command::Audit {
            cmd: AuditCmd::Verify { out, .. },
        } => out.json,
        Command::Pack { out_fmt, .. } | Command::Keygen { out_fmt, .. } => out_fmt.json,
        Command::Sign { .. }
        | Command::Config {
            cmd: ConfigCmd::TestEmail { .. },
        }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Maintenance { .. }
        | Command::Console { .. }
        | Command::Agent => false,
        Command::Backup { cmd } => match cmd {
            BackupCmd::Create { common, .. } | BackupCmd::Restore { common, .. } => common.json,
            BackupCmd::List { out, .. } | BackupCmd::Verify { out, .. } => out.json,
        },
    }
}

/// An app command as a request, with `--json` and `--wait`.
fn request(c: &Command) -> Result<(Request, bool, bool), Failure> {
    let app = |a: &String| a.clone();
    Ok(match c {
        Command::Install {
            app: a,
            version,
            flags: InstallFlags { allow_downgrade },
            common,
        } => (
            Request::Install {
                app: app(a),
                version: parse_request(version)?,
                allow_downgrade: *allow_downgrade,
            },
            common.json,
            common.wait,
        ),
        Command::Promote {
            app: a,
            version,
            force,
            allow_major,
            skip_lifecycle,
            reason,
            common,
        } => (
            Request::Promote {
                app: app(a),
                version: parse_version(version)?,
                force: *force,
                allow_major: *allow_major,
                skip_lifecycle: *skip_lifecycle,
                seen: None,
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Deploy {
            app: a,
            version,
            flags: InstallFlags { allow_downgrade },
            allow_major,
            force,
            dry_run: true,
            reason: _,
            common,
        } => (
            Request::DeployPlan {
                app: app(a),
                version: parse_request(version)?,
                allow_downgrade: *allow_downgrade,
                allow_major: *allow_major,
                force: *force,
            },
            common.json,
            false,
        ),
        Command::Deploy {
            app: a,
            version,
            flags: InstallFlags { allow_downgrade },
            allow_major,
            force,
            dry_run: false,
            reason,
            common,
        } => (
            Request::Deploy {
                app: app(a),
                version: parse_request(version)?,
                allow_downgrade: *allow_downgrade,
                allow_major: *allow_major,
                force: *force,
                seen: None,
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Revert {
            app: a,
            to,
            reason,
            common,
        } => (
            Request::Revert {
                app: app(a),
                to: to.as_deref().map(parse_version).transpose()?,
                seen: None,
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Hold {
            app: a,
            reason,
            common,
        } => (
            Request::Hold {
                app: app(a),
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Unhold { app: a, common } => {
            (Request::Unhold { app: app(a) }, common.json, common.wait)
        }
        Command::Quarantine {
            app: a,
            version,
            reason,
            common,
        } => (
            Request::Quarantine {
                app: app(a),
                version: parse_version(version)?,
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Unquarantine {
            app: a,
            version,
            common,
        } => (
            Request::Unquarantine {
                app: app(a),
                version: parse_version(version)?,
            },
            common.json,
            common.wait,
        ),
        Command::Status { app: a, out } => (Request::Status { app: app(a) }, out.json, false),
        Command::List { app: a, out } => (Request::List { app: app(a) }, out.json, false),
        Command::History { app: a, limit, out } => (
            Request::History {
                app: app(a),
                limit: *limit,
            },
            out.json,
            false,
        ),
        Command::Prune { app: a, common } => {
            (Request::Prune { app: app(a) }, common.json, common.wait)
        }
        Command::Check { app: a, out } => (Request::Check { app: app(a) }, out.json, false),
        Command::Resolve { app: a, common } => {
            (Request::Resolve { app: app(a) }, common.json, common.wait)
        }
        Command::Maintenance {
            state,
            app: a,
            message,
        } => (
            Request::Maintenance {
                app: app(a),
                on: state == "on",
                message: message.clone(),
            },
            false,
            false,
        ),
        Command::Verify {
            app: a,
            version,
            out,
        } => (
            Request::Verify {
                app: app(a),
                version: version.as_deref().map(parse_version).transpose()?,
            },
            out.json,
            false,
        ),
        Command::Audit {
            cmd: AuditCmd::Verify { app: a, out },
        } => (Request::AuditVerify { app: app(a) }, out.json, false),
        Command::Audit {
            cmd:
                AuditCmd::Seal {
                    app: a,
                    reason,
                    common,
                },
        } => (
            Request::AuditSeal {
                app: app(a),
                reason: reason.clone(),
            },
            common.json,
            common.wait,
        ),
        Command::Backup { cmd } => match cmd {
            BackupCmd::Create { app: a, common } => (
                Request::BackupCreate { app: app(a) },
                common.json,
                common.wait,
            ),
            BackupCmd::List { app: a, out } => {
                (Request::BackupList { app: app(a) }, out.json, false)
            }
            BackupCmd::Verify { app: a, id, out } => (
                Request::BackupVerify {
                    app: app(a),
                    id: id.clone(),
                },
                out.json,
                false,
            ),
            BackupCmd::Restore {
                app: a, id, common, ..
            } => (
                Request::BackupRestore {
                    app: app(a),
                    id: id.clone(),
                },
                common.json,
                common.wait,
            ),
        },
        Command::Diff {
            app: a,
            from,
            to,
            out,
        } => (
            Request::Diff {
                app: app(a),
                from: parse_version(from)?,
                to: parse_version(to)?,
            },
            out.json,
            false,
        ),
        Command::Schedule { cmd } => match cmd {
            ScheduleCmd::Add {
                app: a,
                version,
                at,
                timezone,
                allow_major,
                common,
            } => (
                Request::ScheduleAdd {
                    app: app(a),
                    version: parse_version(version)?,
                    at: at.clone(),
                    timezone: timezone.clone(),
                    allow_major: *allow_major,
                },
                common.json,
                common.wait,
            ),
            ScheduleCmd::List { app: a, out } => {
                (Request::ScheduleList { app: app(a) }, out.json, false)
            }
            ScheduleCmd::Cancel {
                app: a,
                id_or_version,
                common,
            } => (
                Request::ScheduleCancel {
                    app: app(a),
                    key: id_or_version.clone(),
                },
                common.json,
                common.wait,
            ),
        },
        Command::Fleet { cmd } => fleet_request(cmd)?,
        Command::Agent
        | Command::Demo { .. }
        | Command::Pack { .. }
        | Command::Keygen { .. }
        | Command::Sign { .. }
        | Command::Logs { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Console { .. }
        | Command::Config { .. } => unreachable!("not an app command"),
    })
}

/// A `fleet` subcommand as a request.
fn fleet_request(c: &FleetCmd) -> Result<(Request, bool, bool), Failure> {
    use crate::source::ledger::ControlAction;
    let control = |app: &String, version: &str, action, reason: Option<&String>, now| {
        Ok::<_, Failure>(Request::FleetControl {
            app: app.clone(),
            version: parse_version(version)?,
            action,
            reason: reason.cloned(),
            now,
        })
    };
    Ok(match c {
        FleetCmd::Status { app, version, out } => (
            Request::FleetStatus {
                app: app.clone(),
                version: version.as_deref().map(parse_version).transpose()?,
            },
            out.json,
            false,
        ),
        FleetCmd::Halt {
            app,
            version,
            reason,
            common,
        } => (
            control(app, version, ControlAction::Halt, Some(reason), false)?,
            common.json,
            common.wait,
        ),
        FleetCmd::Resume {
            app,
            version,
            reason,
            common,
        } => (
            control(app, version, ControlAction::Resume, reason.as_ref(), false)?,
            common.json,
            common.wait,
        ),
        FleetCmd::Revert {
            app,
            version,
            reason,
            now,
            common,
        } => (
            control(app, version, ControlAction::Revert, Some(reason), *now)?,
            common.json,
            common.wait,
        ),
    })
}

fn parse_request(s: &str) -> Result<VersionRequest, Failure> {
    s.parse::<VersionRequest>()
        .map_err(|e| Failure::new(exit::USAGE, e))
}

fn parse_version(s: &str) -> Result<Version, Failure> {
    Version::parse(s).map_err(|e| Failure::new(exit::USAGE, e))
}

/// Runs an app request (through the agent when it takes it) and prints
/// the outcome; with `progress`, a deploy, promote or revert shows its
/// steps on stderr as they run.
fn operate(
    config: &Path,
    req: &Request,
    json: bool,
    wait: bool,
    progress: bool,
) -> Result<(), Failure> {
    let cfg = Config::load(config)?;
    let app = cfg.app(req.app())?;
    // What the operator sees live now: if the command waits for the lock
    // (here or queued in the agent) and someone switches meanwhile, it refuses.
    let req = &api::observed(app, req.clone());
    let watcher = (progress
        && matches!(
            req,
            Request::Deploy { .. } | Request::Promote { .. } | Request::Revert { .. }
        ))
    .then(|| crate::cli::watch::Watcher::start(app));
    let result = run_request(&cfg, app, req, wait);
    if let Some(w) = watcher {
        w.finish();
    }
    let outcome = result?;
    crate::cli::out(
        &render::outcome(req.app(), &outcome, json),
        outcome.changed(),
    )?;
    match outcome.failure(req.app()) {
        Some(e) => Err(Failure::from(e).shown(json)),
        None => Ok(()),
    }
}

/// `backup restore` without `--yes`: replacing live data needs an operator's
/// word. On a terminal, shows the backup and what it replaces, and asks;
/// elsewhere (a script, a pipe) refuses, changing nothing.
fn confirm_restore(config: &Path, req: &Request) -> Result<(), Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    let Request::BackupRestore { app: name, id } = req else {
        return Ok(());
    };
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "backup restore replaces the data of {name}; standard input is not a terminal to ask on, so pass --yes to confirm: switchyard backup restore {name}{} --yes",
                id.as_deref().map(|i| format!(" {i}")).unwrap_or_default()
            ),
        ));
    }
    let cfg = Config::load(config)?;
    let app = cfg.app(name)?;
    let check = Request::BackupVerify {
        app: name.clone(),
        id: id.clone(),
    };
    let source = crate::source::for_app(app);
    let caller = Caller::operator(Actor::current_user(), false);
    let meta = match api::execute(app, source.as_ref(), &check, &caller)? {
        api::Outcome::BackupVerified(m) => m,
        _ => unreachable!("a backup verify answers with the backup"),
    };
    let mut err = std::io::stderr();
    let _ = write!(err, "{}", render::restore_prompt(app, &meta));
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    if matches!(answer.trim(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("not restored: not confirmed; nothing changed"),
        ))
    }
}

/// The request's outcome, from the agent when it takes it, else run here.
fn run_request(
    cfg: &Config,
    app: &crate::config::AppConfig,
    req: &Request,
    wait: bool,
) -> Result<api::Outcome, Failure> {
    Ok(match through_agent(cfg, req)? {
        Some(reply) => reply.map_err(Failure::from_agent)?,
        None => {
            let source = crate::source::for_app(app);
            let mut actor = Actor::current_user();
            actor.reason = req.reason().map(str::to_string);
            let mut caller = Caller::operator(actor, wait);
            if matches!(req, Request::FleetStatus { .. }) {
                // The fleet's wave times are compared with the agents' clock,
                // which a test build may fake.
                caller.clock = crate::clock::from_env();
            }
            api::execute(app, source.as_ref(), req, &caller)?
        }
    })
}

/// `switchyard logs`: prints the hook logs, or follows them with `-f`.
fn logs(
    config: &Path,
    app: &str,
    deploy: Option<&str>,
    hook: Option<&str>,
    follow: bool,
    json: bool,
) -> Result<(), Failure> {
    use crate::ops::watch;
    let cfg = Config::load(config)?;
    let app = cfg.app(app)?;
    let not_found = |e: watch::WatchError| match e {
        e @ (watch::WatchError::NoDeploy { .. }
        | watch::WatchError::Empty { .. }
        | watch::WatchError::NoHook { .. }) => Failure::new(exit::NOT_FOUND, e),
        e => Failure::new(exit::FAILURE, e),
    };
    let running = watch::deploy_view(app).filter(|v| !v.terminal);
    // -f without --deploy follows the running deploy, even before its
    // first hook wrote anything.
    let id = match (deploy, &running, follow) {
        (Some(id), _, _) => id.to_string(),
        (None, Some(v), true) => v.id.clone(),
        (None, _, _) => watch::hook_logs(app, None).map_err(not_found)?.0,
    };
    if !follow {
        let (id, mut list) = watch::hook_logs(app, Some(&id)).map_err(not_found)?;
        if let Some(h) = hook {
            list = watch::only_hook(&id, list, h).map_err(not_found)?;
        }
        let mut texts = Vec::new();
        for l in list {
            let text = crate::fs::read(&l.path).map_err(|e| Failure::new(exit::FAILURE, e))?;
            texts.push((l.hook, l.path, String::from_utf8_lossy(&text).into_owned()));
        }
        return crate::cli::out(
            &render::hook_logs(app.name.as_str(), &id, &texts, json),
            false,
        );
    }
    let mut offsets: std::collections::HashMap<PathBuf, u64> = Default::default();
    let mut last_hook: Option<String> = None;
    loop {
        // The state first: output written before it ended is then read below.
        let ended = watch::deploy_view(app).is_none_or(|v| v.id != id || v.terminal);
        let list = watch::logs_in(&watch::deploy_log_dir(app, &id))
            .map_err(|e| Failure::new(exit::FAILURE, e))?;
        for l in list
            .into_iter()
            .filter(|l| hook.is_none_or(|h| h == l.hook))
        {
            let off = offsets.get(&l.path).copied().unwrap_or(0);
            let (bytes, next) =
                watch::read_from(&l.path, off).map_err(|e| Failure::new(exit::FAILURE, e))?;
            offsets.insert(l.path.clone(), next);
            if bytes.is_empty() {
                continue;
            }
            let mut text = String::new();
            if last_hook.as_deref() != Some(l.hook.as_str()) {
                text.push_str(&render::hook_log_header(&l.hook, &l.path));
                last_hook = Some(l.hook.clone());
            }
            text.push_str(&String::from_utf8_lossy(&bytes));
            crate::cli::out(&text, false)?;
        }
        if ended {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
}

/// Hands the request to the running agent, if it takes such requests and
/// one listens on the control socket (so operations are serialised through
/// it); `Ok(None)` when the CLI should act itself. `SWITCHYARD_NO_AGENT=1`
/// skips the agent.
fn through_agent(cfg: &Config, req: &Request) -> Result<Option<Reply>, Failure> {
    if !req.through_agent() || std::env::var_os("SWITCHYARD_NO_AGENT").is_some_and(|v| v == "1") {
        return Ok(None);
    }
    crate::daemon::control::request(&cfg.agent.control_socket, req)
        .map_err(|e| Failure::new(exit::FAILURE, e))
}
