//! The `[apps.<name>.hooks]` schema: what each hook runs, with its
//! timeout and environment, and the duration syntax the whole file uses.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::process::Identity;

/// How long a hook may run when its configuration names no timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What a hook runs: a shell string or an argv array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run with `/bin/sh -c`.
    Shell(String),
    /// Run directly, without a shell; the first element is looked up in `PATH`.
    Argv(Vec<String>),
}

impl CommandLine {
    /// Checks the command can be started at all.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CommandLine::Shell(s) => {
                if s.trim().is_empty() {
                    return Err("the command is empty: write a shell command such as \"npm ci\" or an array such as [\"systemctl\", \"reload\", \"myapp\"]".into());
                }
                if s.contains('\0') {
                    return Err("the command contains a NUL character".into());
                }
            }
            CommandLine::Argv(argv) => {
                match argv.first() {
                    None => return Err("the command array is empty: its first element must name the program to run".into()),
                    Some(p) if p.is_empty() => {
                        return Err("the command array starts with an empty string: its first element must name the program to run".into());
                    }
                    Some(_) => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err("an argument of the command contains a NUL character".into());
                }
            }
        }
        Ok(())
    }

    /// The program that will be executed (for messages).
    pub fn program(&self) -> &str {
        match self {
            CommandLine::Shell(_) => "/bin/sh",
            CommandLine::Argv(argv) => argv.first().map(String::as_str).unwrap_or(""),
        }
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLine::Shell(s) => f.write_str(s),
            CommandLine::Argv(argv) => {
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    // Quote so that the operator can tell where arguments start and end.
                    let plain = !a.is_empty()
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
                    if plain {
                        f.write_str(a)?;
                    } else {
                        write!(f, "'{}'", a.replace('\'', r"'\''"))?;
                    }
                }
                Ok(())
            }
        }
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = CommandLine;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a shell command string or an array of strings (program and arguments)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
        Ok(CommandLine::Shell(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<CommandLine, E> {
        Ok(CommandLine::Shell(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
        let mut argv = Vec::new();
        while let Some(a) = seq.next_element::<String>()? {
            argv.push(a);
        }
        Ok(CommandLine::Argv(argv))
    }
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums answer every
// mistake with "data did not match any variant", which tells the operator
// nothing; a visitor keeps serde's precise messages (unknown field, wrong type).
impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CommandLine, D::Error> {
        d.deserialize_any(CommandVisitor)
    }
}

/// A hook as written in TOML: a shell string, an argv array, or a table.
///
/// ```toml
/// warm = "npm ci && npm run build"            # run with /bin/sh -c
/// activate = ["systemctl", "reload", "myapp"]  # argv, no shell
/// migrate = { command = "php artisan migrate --force", timeout = "15m", env = { APP_ENV = "production" }, user = "app" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookConfig {
    /// A shell string, run with `/bin/sh -c`.
    Shell(String),
    /// Program and arguments, run without a shell.
    Argv(Vec<String>),
    /// The long form, with a timeout and extra environment.
    Table(HookTable),
}

/// The table form of a hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookTable {
    /// What to run.
    pub command: CommandLine,
    /// How long it may run, e.g. `"15m"` (default 10 minutes).
    pub timeout: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user it runs as (default: the agent's, root).
    pub user: Option<Spanned<String>>,
    /// The group it runs as (default: the user's primary group).
    pub group: Option<Spanned<String>>,
}

struct HookConfigVisitor;

impl<'de> Visitor<'de> for HookConfigVisitor {
    type Value = HookConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a shell command string, an array of strings (program and arguments), or a table { command = ..., timeout = \"10m\", env = { ... }, user = \"app\" }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<HookConfig, E> {
        Ok(HookConfig::Shell(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<HookConfig, E> {
        Ok(HookConfig::Shell(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<HookConfig, A::Error> {
        match CommandVisitor.visit_seq(seq)? {
            CommandLine::Argv(argv) => Ok(HookConfig::Argv(argv)),
            CommandLine::Shell(s) => Ok(HookConfig::Shell(s)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HookConfig, A::Error> {
        HookTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(HookConfig::Table)
    }
}

impl<'de> Deserialize<'de> for HookConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HookConfig, D::Error> {
        d.deserialize_any(HookConfigVisitor)
    }
}

/// A validated hook, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// What to run.
    pub command: CommandLine,
    /// How long it may run before its process group is killed.
    pub timeout: Duration,
    /// Extra environment variables, on top of the agent's and `SWITCHYARD_*`.
    pub env: BTreeMap<String, String>,
    /// The user and group it runs as; `None`: the agent's own (root).
    pub(crate) run_as: Option<Identity>,
}

impl HookConfig {
    /// Validates the hook: a non-empty command, a timeout that parses and is
    /// not zero, environment variable names a shell accepts, and a `user`
    /// and `group` that exist on this host. An error carries the span of the
    /// key at fault when it is not the whole hook's.
    pub(crate) fn to_spec(&self) -> Result<HookSpec, (Option<Range<usize>>, String)> {
        let (command, timeout, env) = match self {
            HookConfig::Shell(s) => (CommandLine::Shell(s.clone()), None, BTreeMap::new()),
            HookConfig::Argv(a) => (CommandLine::Argv(a.clone()), None, BTreeMap::new()),
            HookConfig::Table(t) => (t.command.clone(), t.timeout.as_deref(), t.env.clone()),
        };
        let run_as = match self {
            HookConfig::Table(t) => identity(t.user.as_ref(), t.group.as_ref())?,
            _ => None,
        };
        let whole = |m: String| (None, m);
        command.validate().map_err(whole)?;
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => parse_duration(t).map_err(|e| whole(format!("timeout: {e}")))?,
        };
        if timeout.is_zero() {
            return Err(whole(
                "timeout must be longer than zero, e.g. \"10m\"".into(),
            ));
        }
        for (k, v) in &env {
            check_env_name(k).map_err(whole)?;
            if v.contains('\0') {
                return Err(whole(format!(
                    "env.{k}: the value contains a NUL character"
                )));
            }
        }
        Ok(HookSpec {
            command,
            timeout,
            env,
            run_as,
        })
    }
}

/// Resolves a hook's `user` and `group` now, so that a name this host does
/// not know is a `config check` error rather than a failed deploy.
fn identity(
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
) -> Result<Option<Identity>, (Option<Range<usize>>, String)> {
    let Some(user) = user else {
        return match group {
            Some(g) => Err((
                Some(g.span()),
                "group is set without user; add user = \"<name>\" (a hook without user runs as the agent, root)".into(),
            )),
            None => Ok(None),
        };
    };
    let pw = super::lookup_user(user.get_ref())
        .map_err(|m| (Some(user.span()), format!("user: {m}")))?;
    let gid = match group {
        Some(g) => {
            super::lookup_group(g.get_ref()).map_err(|m| (Some(g.span()), format!("group: {m}")))?
        }
        None => pw.gid.as_raw(),
    };
    Ok(Some(Identity {
        user: pw.name,
        uid: pw.uid.as_raw(),
        gid,
        home: pw.dir,
    }))
}

fn check_env_name(k: &str) -> Result<(), String> {
    let mut bytes = k.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(format!(
            "env: {k:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    // These describe the deploy; letting configuration override them would
    // make a hook act on the wrong release.
    if k.starts_with("SWITCHYARD_") {
        return Err(format!(
            "env: {k} is set by switchyard itself (SWITCHYARD_* variables describe the deploy); use another name"
        ));
    }
    Ok(())
}

/// Parses a duration: `"500ms"`, `"30s"`, `"10m"`, `"1h30m"`, or a bare
/// integer meaning seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the duration is empty: write e.g. \"30s\", \"10m\" or \"1h30m\"".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {s:?} ({e}): write a number with a unit, e.g. \"500ms\", \"30s\", \"10m\" or \"1h30m\", or a bare number of seconds"
        )
    })
}

/// Formats a duration as the configuration writes it (`"1m 30s"`, `"250ms"`).
pub(crate) fn show_duration(d: Duration) -> String {
    // Sub-millisecond noise only makes messages harder to read.
    let d = Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX));
    humantime::format_duration(d).to_string()
}
