//! `completions` and `man`: documents generated from the clap definition.

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::exit;
use crate::output::out;

/// `completions SHELL`.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "awsflock", &mut buf);
    out(String::from_utf8_lossy(&buf).trim_end())?;
    Ok(exit::OK)
}

/// `man`: the man page.
pub(super) fn man() -> Result<i32> {
    let page = man_page().map_err(|e| Error::store(format!("cannot render the man page: {e}")))?;
    out(page.trim_end())?;
    Ok(exit::OK)
}

/// The man page: the top level as clap_mangen renders it, then one section
/// per subcommand (synopsis, description, options, examples), which
/// clap_mangen leaves to separate pages that `awsflock man` could not print.
pub(super) fn man_page() -> std::io::Result<String> {
    let top = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(top.clone()).render(&mut buf)?;
    let page = String::from_utf8_lossy(&buf).into_owned();
    let mut subs = String::new();
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("awsflock {}", sub.get_name());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&full).display_name(&full));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        if sub.get_after_help().is_some() {
            man.render_extra_section(&mut part)?;
        }
        let part = String::from_utf8_lossy(&part)
            .replace(".SH SYNOPSIS", &format!(".SH \"{}\"", full.to_uppercase()))
            .replace(".SH DESCRIPTION\n", ".PP\n")
            .replace(".SH OPTIONS", ".SS Options");
        subs.push_str(&verbatim_examples(&part, ".SS Examples"));
    }
    // The subcommand list points at pages of their own; they are below.
    let mut page = verbatim_examples(&page, ".SH EXAMPLES");
    for sub in top.get_subcommands().map(|s| s.get_name()).chain(["help"]) {
        let name = sub.replace('-', "\\-");
        page = page.replace(
            &format!("awsflock\\-{name}(1)"),
            &format!("awsflock {name}"),
        );
    }
    Ok(match page.find(".SH VERSION") {
        Some(at) => format!("{}{subs}{}", &page[..at], &page[at..]),
        None => page + &subs,
    })
}

/// Turns clap_mangen's EXTRA section (our `after_help`) into `heading`,
/// printed as written (no refilling: it holds command lines).
fn verbatim_examples(roff: &str, heading: &str) -> String {
    let Some(at) = roff.find(".SH EXTRA\n") else {
        return roff.to_string();
    };
    let body_start = at + ".SH EXTRA\n".len();
    let body_end = roff[body_start..]
        .find("\n.SH ")
        .map(|i| body_start + i + 1)
        .unwrap_or(roff.len());
    let body: Vec<&str> = roff[body_start..body_end]
        .lines()
        .filter(|l| !matches!(*l, "Examples:" | "Example:"))
        .collect();
    format!(
        "{}{heading}\n.nf\n{}\n.fi\n{}",
        &roff[..at],
        body.join("\n"),
        &roff[body_end..]
    )
}
