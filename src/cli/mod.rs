//! The command line: the edge where arguments come in, output goes out, and
//! a failure becomes one printed error chain and an exit code. The only
//! place `anyhow` is used.
//!
//! `args` is the grammar, `commands` what each command does, `render`
//! everything printed on stdout.

mod args;
mod commands;
pub(crate) mod demo;
mod generate;
mod local;
pub(crate) mod pack;
mod render;
mod render_fleet;
mod render_plan;
mod watch;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::config::ConfigError;
use crate::ops::api::RemoteError;
use crate::ops::{DeployError, exit};

/// A failure with its exit code, for the CLI edge.
pub(crate) struct Failure {
    code: i32,
    err: anyhow::Error,
    /// The agent ran the operation and sent the error back.
    via_agent: bool,
    /// The outcome was already printed on stdout (with `--json`, it carries
    /// the details): no JSON error line follows.
    shown: bool,
}

impl Failure {
    /// A failure ending with `code`.
    pub(crate) fn new(code: i32, err: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            err: err.into(),
            via_agent: false,
            shown: false,
        }
    }

    /// An error the agent sent back: its chain rebuilt, its code kept.
    pub(crate) fn from_agent(e: RemoteError) -> Failure {
        let mut messages = e.chain.into_iter().rev();
        let innermost = messages.next().unwrap_or_default();
        let err = messages.fold(anyhow::Error::msg(innermost), |err, outer| {
            err.context(outer)
        });
        Failure {
            via_agent: true,
            ..Failure::new(e.exit_code, err)
        }
    }

    /// Marks the outcome as printed already when `json` (its JSON carries
    /// what went wrong).
    pub(crate) fn shown(mut self, json: bool) -> Failure {
        self.shown = json;
        self
    }
}

impl From<DeployError> for Failure {
    fn from(e: DeployError) -> Self {
        Failure::new(e.exit_code(), e)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        let code = match e {
            ConfigError::UnknownApp { .. } => exit::NOT_FOUND,
            _ => exit::USAGE,
        };
        Failure::new(code, e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::new(exit::FAILURE, err)
    }
}

/// Writes command output to stdout. A closed pipe (`switchyard list | head`)
/// ends the process quietly with exit 0, as other command-line tools do;
/// any other failure (a full disk behind `>file`) is an error that says
/// whether the command had already changed something.
pub(crate) fn out(text: &str, changed: bool) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let what = if changed {
                "the command's change was made and stands, but writing its output failed"
            } else {
                "writing the output failed"
            };
            Err(Failure::new(
                exit::FAILURE,
                anyhow::Error::new(e).context(what),
            ))
        }
    }
}

/// Writes a line to stderr; if stderr itself fails there is nobody left to
/// tell, so the error is dropped (never a panic).
pub(crate) fn err_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Sets up `tracing` on stderr. The CLI is quiet by default (warnings);
/// the agent, a service whose log is all an operator sees, logs at info.
fn init_logging(verbose: u8, quiet: bool, format: args::LogFormat, agent: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose, agent) {
        (true, _, _) => "error",
        (_, 0, false) => "warn",
        (_, 0, true) | (_, 1, _) => "switchyard=info,warn",
        _ => "switchyard=debug,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if format == args::LogFormat::Json {
        b.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
        return;
    }
    // Under systemd, journald adds its own timestamps, strips colour, and
    // takes each line's priority from its `<N>` prefix.
    if under_journald() {
        b.with_ansi(false)
            .without_time()
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false),
            ))
            .init();
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Whether stderr goes to journald: `JOURNAL_STREAM` (`<dev>:<inode>`, set
/// by systemd) names stderr's own stream, or cannot be checked.
fn under_journald() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return true;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => dev == st.st_dev.to_string() && ino == st.st_ino.to_string(),
        Err(_) => true,
    }
}

/// A text line prefixed with its syslog priority (`<3>` error, `<4>`
/// warning, `<6>` info, `<7>` debug), which journald reads off stderr.
struct Journald<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        let p = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{p}>")?;
        self.0.format_event(ctx, w, event)
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let parsed = args::command()
        .try_get_matches()
        .and_then(|m| args::Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    init_logging(
        cli.verbose,
        cli.quiet,
        cli.log_format,
        matches!(cli.command, args::Command::Agent),
    );
    let json = commands::wants_json(&cli.command);
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The chain is printed here, once.
            let chain = format!("{:#}", f.err);
            if json && !f.shown {
                let _ = out(&render::error_json(&chain, f.code), false);
            }
            let via = if f.via_agent { " (via the agent)" } else { "" };
            err_line(&format!("error: {chain}{via}"));
            if f.code == exit::STORAGE
                && let Some((path, free)) = crate::fs::storage_failure(f.err.as_ref())
            {
                let free = free
                    .map(|b| format!(" has {} MiB free", b >> 20))
                    .unwrap_or_default();
                err_line(&format!(
                    "hint: the file system of {}{free}; the step needs room for what it was writing (a release needs about its unpacked size, plus its archive while it downloads). Free space (`switchyard prune`, old backups under .switchyard/backups), then run the command again: it finishes or undoes what was interrupted first.",
                    path.display()
                ));
            }
            ExitCode::from(f.code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_error_prints_its_chain_once() {
        let f = Failure::from_agent(RemoteError {
            exit_code: exit::NOT_FOUND,
            chain: vec!["outer".into(), "middle".into(), "inner".into()],
        });
        assert_eq!(f.code, exit::NOT_FOUND);
        assert!(f.via_agent);
        assert_eq!(format!("{:#}", f.err), "outer: middle: inner");
    }

    #[test]
    fn help_lists_every_exit_code() {
        let help = args::after_help();
        for code in 0..=8 {
            assert!(
                help.contains(&format!("\n  {code}  ")),
                "{code} missing:\n{help}"
            );
        }
    }
}
