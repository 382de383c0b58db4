//! The local tools, which run here and never through an agent: the agent
//! itself, config check and test-email, pack, keygen, sign and
//! console add-user.

use std::path::{Path, PathBuf};

use crate::cli::Failure;
use crate::cli::args::ConsoleRole;
use crate::cli::render;
use crate::config::{Config, ConfigError};
use crate::daemon::agent::AgentError;
use crate::ops::exit;

pub(super) fn agent(config: &Path) -> Result<(), Failure> {
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

pub(super) fn config_check(config: &Path, json: bool) -> Result<(), Failure> {
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
pub(super) fn test_email(config: &Path, app: &str) -> Result<(), Failure> {
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
pub(super) fn pack(
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

pub(super) fn keygen(out: &Path, password: bool, json: bool) -> Result<(), Failure> {
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
pub(super) fn console_add_user(
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

pub(super) fn sign(
    files: &[PathBuf],
    key: &Path,
    trusted_comment: Option<&str>,
) -> Result<(), Failure> {
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
