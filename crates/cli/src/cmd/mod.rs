//! One module per group of commands.

pub mod agent;
pub mod apps;
pub mod config_ssh;
pub mod forward_spec;
pub mod login;
pub mod netcheck;
pub mod ping;
pub mod port_forward;
pub mod show;
pub mod speedtest;
pub mod ssh;
pub mod users;
pub mod workspaces;

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};

/// Reads a line from the terminal after a prompt; fails clearly when there is no terminal.
pub fn prompt(label: &str, flag: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{flag} is required (there is no terminal to ask on)");
    }
    eprint!("{label}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not read from the terminal")?;
    Ok(line.trim().to_string())
}

/// Reads a password without echo; fails clearly when there is no terminal.
pub fn prompt_password(label: &str, flag: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{flag} is required (there is no terminal to ask on)");
    }
    rpassword::prompt_password(format!("{label}: ")).context("could not read the password")
}
