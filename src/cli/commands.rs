//! What each command does: app commands become an operations-API request,
//! run by a running agent when it takes them or here otherwise, and the
//! outcome is rendered; the local tools (pack, keygen, sign, config check,
//! demo, agent) run here.

use std::path::{Path, PathBuf};

use crate::cli::Failure;
use crate::cli::args::{
    AuditCmd, BackupCmd, Cli, Command, ConfigCmd, ConsoleCmd, ConsoleRole, FleetCmd, InstallFlags,
    ScheduleCmd,
};
use crate::cli::render;
use crate::config::{Config, ConfigError};
use crate::daemon::agent::AgentError;
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
            common,
        } => (
            Request::Promote {
                app: app(a),
                version: parse_version(version)?,
                force: *force,
                allow_major: *allow_major,
                skip_lifecycle: *skip_lifecycle,
                seen: None,
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
            common,
        } => (
            Request::Deploy {
                app: app(a),
                version: parse_request(version)?,
                allow_downgrade: *allow_downgrade,
                allow_major: *allow_major,
                force: *force,
                seen: None,
            },
            common.json,
            common.wait,
        ),
        Command::Revert { app: a, to, common } => (
            Request::Revert {
                app: app(a),
                to: to.as_deref().map(parse_version).transpose()?,
                seen: None,
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
            let mut caller = Caller::operator(Actor::current_user(), wait);
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

fn agent(config: &Path) -> Result<(), Failure> {
    // The journal then says which build runs (the same line as `--version`).
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = crate::version::BUILD_COMMIT,
        features = crate::version::BUILD_FEATURES,
        "switchyard agent starting"
    );
    crate::daemon::agent::run(config).map_err(|e| match e {
        AgentError::Config(ce) => Failure::from(ce),
        e => Failure::new(exit::FAILURE, e),
    })
}

fn config_check(config: &Path, json: bool) -> Result<(), Failure> {
    match Config::load_complete(config) {
        Ok(c) => crate::cli::out(
            &render::config_ok(
                &c.path,
                &c.apps.keys().collect::<Vec<_>>(),
                &c.warnings,
                json,
            ),
            false,
        ),
        Err(ConfigError::Invalid { path, problems }) => {
            crate::cli::out(&render::config_problems(&problems, json), false)?;
            let errors = problems
                .iter()
                .filter(|p| p.severity == crate::config::Severity::Error)
                .count();
            Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!("{errors} problem(s) in {}", path.display()),
            )
            .shown(json))
        }
        Err(e) => Err(e.into()),
    }
}

/// `config test-email APP`: one message through the app's e-mail route.
fn test_email(config: &Path, app: &str) -> Result<(), Failure> {
    let cfg = Config::load(config)?;
    let a = cfg.app(app)?;
    let Some(route) = &a.agent.email else {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "apps.{app} gets no e-mail: add a [notify.email] table with server, from and to (or to in [apps.{app}.email]) to {}",
                cfg.path.display()
            ),
        ));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    rt.block_on(crate::daemon::notice::test_email(a))
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    crate::cli::out(
        &format!(
            "sent a test e-mail about {app} to {} through {}\n",
            route.to.join(", "),
            route.server.address()
        ),
        false,
    )
}

// One argument per `pack` option, as clap hands them over.
#[allow(clippy::too_many_arguments)]
fn pack(
    dir: &Path,
    version: &str,
    out: &Path,
    asset: Option<&str>,
    format: crate::cli::pack::PackFormat,
    key: Option<&Path>,
    repo: &Option<String>,
    rollout: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    use crate::cli::pack::{PackError, Signing, pack_as, read_rollout, write_release_toml};
    let signing = key.map(|k| Signing {
        key: k.to_path_buf(),
        password: crate::verify::trust::key_password_from_env_or_tty(
            "Password for the signing key: ",
        ),
        repo: repo.clone(),
    });
    let fail = |e: PackError| match e {
        PackError::Version(_) | PackError::Exists(_) | PackError::Rollout { .. } => {
            Failure::new(exit::USAGE, e)
        }
        e => Failure::new(exit::FAILURE, e),
    };
    // The plan is checked before anything is written.
    let plan = match rollout {
        Some(r) => Some(read_rollout(r, signing.as_ref()).map_err(fail)?),
        None => None,
    };
    let mut p = pack_as(dir, version, out, asset, signing.as_ref(), format).map_err(fail)?;
    if let (Some(body), Some(s)) = (plan, &signing) {
        write_release_toml(&mut p, version, &body, s).map_err(fail)?;
    }
    crate::cli::out(&render::packed(&p, json), true)
}

fn keygen(out: &Path, password: bool, json: bool) -> Result<(), Failure> {
    let pw = if password {
        let p = crate::verify::trust::key_password_from_env_or_tty("Password for the new key: ");
        if p.is_none() {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!(
                    "--password needs SWITCHYARD_KEY_PASSWORD or a terminal to read it from"
                ),
            ));
        }
        p
    } else {
        None
    };
    let (pk, sk, id) =
        crate::verify::trust::keygen(out, pw).map_err(|e| Failure::new(exit::FAILURE, e))?;
    let public = crate::fs::read_to_string(&pk)
        .ok()
        .and_then(|t| t.lines().nth(1).map(String::from))
        .unwrap_or_default();
    crate::cli::out(
        &render::keygen(&pk, &sk, &id.to_string(), &public, json),
        true,
    )
}

/// `console add-user`: reads the password (terminal without echo, or one
/// line of stdin) and hands it to the users-file writer.
fn console_add_user(
    config: &Path,
    name: &str,
    role: ConsoleRole,
    password_stdin: bool,
    users_file: Option<&Path>,
) -> Result<(), Failure> {
    use crate::ops::console_users::{self, Role};
    let usage = |m: String| Failure::new(exit::USAGE, anyhow::anyhow!(m));
    let file = match users_file {
        Some(f) => f.to_path_buf(),
        None => match crate::fs::metadata(config).ok().flatten() {
            // The file the agent's console will read.
            Some(_) => Config::load(config)?
                .console
                .map(|c| c.users_file)
                .unwrap_or_else(|| PathBuf::from(crate::config::console::DEFAULT_USERS_FILE)),
            None => PathBuf::from(crate::config::console::DEFAULT_USERS_FILE),
        },
    };
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| {
            Failure::new(
                exit::FAILURE,
                anyhow::Error::new(e).context("reading the password from standard input"),
            )
        })?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let ask = |p: &str| rpassword::prompt_password(p).ok();
        let first = ask(&format!("Password for console user {name}: ")).ok_or_else(|| {
            usage("no terminal to read the password from: use --password-stdin".into())
        })?;
        let again = ask("The same password again: ").unwrap_or_default();
        if first != again {
            return Err(usage(
                "the two passwords differ; nothing was written".into(),
            ));
        }
        first
    };
    let role = match role {
        ConsoleRole::Viewer => Role::Viewer,
        ConsoleRole::Operator => Role::Operator,
    };
    let added = console_users::add_user(&file, name, role, &password).map_err(|e| match e {
        console_users::UsersError::BadName(_) | console_users::UsersError::ShortPassword => {
            Failure::new(exit::USAGE, e)
        }
        e => Failure::new(exit::FAILURE, e),
    })?;
    crate::cli::out(&render::console_user(&added), true)
}

fn sign(files: &[PathBuf], key: &Path, trusted_comment: Option<&str>) -> Result<(), Failure> {
    let pw = crate::verify::trust::key_password_from_env_or_tty("Password for the signing key: ");
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let comment = trusted_comment
            .map(String::from)
            .unwrap_or_else(|| format!("file={name}"));
        let sig = crate::verify::trust::sign_file(key, pw.clone(), f, Some(&comment))
            .map_err(|e| Failure::new(exit::FAILURE, e))?;
        crate::cli::out(&format!("signed {}\n", sig.display()), true)?;
    }
    Ok(())
}
