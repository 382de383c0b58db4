//! What is generated from the grammar in `args` rather than written by
//! hand: shell completion scripts and man pages. Both come from the same
//! `clap::Command` that parses the command line, so they cannot drift from it.

use std::path::Path;

use crate::cli::{Failure, args};
use crate::ops::exit;

/// `switchyard completions SHELL`: the script on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut cmd = args::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "switchyard", &mut script);
    crate::cli::out(&String::from_utf8_lossy(&script), false)
}

/// `switchyard man --out DIR`: switchyard.1, and one page per visible
/// subcommand (switchyard-install.1, switchyard-backup-create.1, ...), as
/// `man switchyard-install` expects. Prints the files written.
pub(super) fn man_pages(dir: &Path) -> Result<(), Failure> {
    let failed = |e: crate::fs::FsError| Failure::new(exit::FAILURE, e);
    crate::fs::create_dir_all(dir).map_err(failed)?;
    // No `help` subcommand page: `switchyard help X` is `man switchyard-X`.
    let mut root = args::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    render(&root, &mut pages)?;
    let mut listing = String::new();
    for (name, text) in pages {
        let path = dir.join(name);
        crate::fs::write_atomic(&path, &text).map_err(failed)?;
        listing.push_str(&format!("{}\n", path.display()));
    }
    crate::cli::out(&listing, false)
}

/// Renders `cmd`'s page and its visible subcommands' pages into `pages`.
fn render(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<(), Failure> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub, pages)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("Switchyard");
    let mut text = Vec::new();
    man.render(&mut text)
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    pages.push((man.get_filename(), text));
    Ok(())
}
