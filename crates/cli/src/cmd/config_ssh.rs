//! `tether config-ssh`: one wildcard `Host tether.*` block between markers in the SSH
//! config, whose ProxyCommand is `tether ssh --stdio`. Re-running replaces the block in
//! place; every byte outside it stays as it was.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::Globals;

/// First line of the managed block.
pub const START: &str = "# ------------START-TETHER-----------";
/// Last line of the managed block.
pub const END: &str = "# ------------END-TETHER------------";

/// `tether config-ssh` flags.
#[derive(Debug, clap::Args)]
pub struct ConfigSshArgs {
    /// The SSH config file to update.
    #[arg(long, env = "TETHER_SSH_CONFIG_FILE", default_value = "~/.ssh/config")]
    pub ssh_config_file: String,
    /// Host name prefix of workspaces (`tether.dev` for workspace dev).
    #[arg(long, env = "TETHER_SSH_HOST_PREFIX", default_value = "tether.")]
    pub ssh_host_prefix: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Show the change without writing it.
    #[arg(long, env = "TETHER_SSH_DRY_RUN")]
    pub dry_run: bool,
    /// An SSH option for the Host block, `"Key Value"` or `Key=Value` (repeatable); it
    /// replaces the block's own line for the same key.
    #[arg(short = 'o', long = "ssh-option", value_parser = SshOption::parse)]
    pub ssh_options: Vec<SshOption>,
}

/// One `-o/--ssh-option`: a keyword and its value, as ssh_config(5) writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOption {
    /// The keyword (`ForwardAgent`).
    pub key: String,
    /// Its value (`yes`).
    pub value: String,
}

impl SshOption {
    /// `Key Value`, `Key=Value` or `Key = Value`; one line, a keyword of letters and digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.contains(['\n', '\r']) {
            return Err(format!("{s:?} spans more than one line"));
        }
        let s = s.trim();
        let end = s
            .find(|c: char| c.is_whitespace() || c == '=')
            .ok_or_else(|| format!("{s:?} is not \"Key Value\" (a keyword, then its value)"))?;
        let (key, rest) = s.split_at(end);
        let value = rest.trim_start();
        let value = value.strip_prefix('=').unwrap_or(value).trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{key:?} is not an SSH option keyword (like ForwardAgent)"
            ));
        }
        if value.is_empty() {
            return Err(format!("SSH option {key} has no value"));
        }
        Ok(Self {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

fn expand_home(p: &str) -> Result<PathBuf> {
    match p.strip_prefix("~/") {
        Some(rest) => Ok(dirs::home_dir()
            .context("no home directory to expand ~ in --ssh-config-file")?
            .join(rest)),
        None => Ok(PathBuf::from(p)),
    }
}

/// Quotes a ProxyCommand word when it needs it.
fn quote(word: &str) -> String {
    if word
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word.to_string()
    }
}

/// `value` as one word of the ProxyCommand, which OpenSSH expands `%` tokens in and then
/// runs with `sh -c`: single-quoted unless plain, `%` doubled.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c));
    let word = if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    };
    word.replace('%', "%%")
}

/// The managed block, markers included, ending with a newline. `options` come first,
/// each replacing the block's own line for its keyword (keywords ignore case, as ssh does).
/// `headers` are global flags (`--header K=V`, `--header-command CMD`) the ProxyCommand
/// passes on, so `ssh` reaches the server through the same access proxy.
pub fn block(
    binary: &Path,
    config_dir: &Path,
    prefix: &str,
    options: &[SshOption],
    headers: &[(&str, &str)],
) -> String {
    let flags: String = headers
        .iter()
        .map(|(flag, value)| format!(" {flag} {}", shell_word(value)))
        .collect();
    let proxy = format!(
        "{} --global-config {}{flags} ssh --stdio --ssh-host-prefix {} %h",
        quote(&binary.display().to_string()),
        quote(&config_dir.display().to_string()),
        quote(prefix)
    );
    let own = [
        ("ConnectTimeout", "=", "0".to_string()),
        ("StrictHostKeyChecking", "=", "no".to_string()),
        ("UserKnownHostsFile", "=", "/dev/null".to_string()),
        ("LogLevel", " ", "ERROR".to_string()),
        ("ProxyCommand", " ", proxy),
    ];
    let mut lines = String::new();
    for o in options {
        lines.push_str(&format!("\t{} {}\n", o.key, o.value));
    }
    for (key, sep, value) in own {
        if !options.iter().any(|o| o.key.eq_ignore_ascii_case(key)) {
            lines.push_str(&format!("\t{key}{sep}{value}\n"));
        }
    }
    format!(
        "{START}\n\
         # This section is written by `tether config-ssh`; edits inside it are lost\n\
         # the next time it runs. Delete the whole section to remove it.\n\
         Host {prefix}*\n\
         {lines}\
         {END}\n"
    )
}

/// Why an existing config cannot be updated safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A start marker without its end, or the other way round.
    #[error(
        "the SSH config has a `{0}` line without its partner; fix or remove the tether section by hand"
    )]
    Unbalanced(&'static str),
    /// More than one managed block.
    #[error("the SSH config has more than one tether section; remove all but one by hand")]
    Duplicate,
}

/// `existing` with the managed block replaced by (or appended as) `new_block`.
pub fn update(existing: &str, new_block: &str) -> Result<String, ConfigError> {
    let starts: Vec<usize> = line_offsets(existing, START);
    let ends: Vec<usize> = line_offsets(existing, END);
    match (starts.as_slice(), ends.as_slice()) {
        ([], []) => {
            let mut out = existing.to_string();
            if !out.is_empty() {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                if !out.ends_with("\n\n") {
                    out.push('\n');
                }
            }
            out.push_str(new_block);
            Ok(out)
        }
        ([s], [e]) if s < e => {
            // The block runs to the end of the END line (its newline included, if any).
            let after_end = e + END.len();
            let after = match existing[after_end..].strip_prefix('\n') {
                Some(rest) => rest,
                None => &existing[after_end..],
            };
            Ok(format!("{}{}{}", &existing[..*s], new_block, after))
        }
        ([_], []) => Err(ConfigError::Unbalanced("START-TETHER")),
        ([], [_]) | ([_], [_]) => Err(ConfigError::Unbalanced("END-TETHER")),
        _ => Err(ConfigError::Duplicate),
    }
}

/// Byte offsets of lines equal to `marker` (trailing whitespace ignored).
fn line_offsets(text: &str, marker: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == marker {
            out.push(off);
        }
        off += line.len();
    }
    out
}

/// The `--header` and `--header-command` flags this run was given, for the ProxyCommand.
fn header_flags(g: &Globals) -> Vec<(&'static str, &str)> {
    let mut out: Vec<(&'static str, &str)> = g
        .header_flags
        .iter()
        .map(|h| ("--header", h.as_str()))
        .collect();
    if let Some(cmd) = &g.header_command {
        out.push(("--header-command", cmd.as_str()));
    }
    out
}

/// Runs `tether config-ssh`.
pub async fn run(g: &Globals, args: ConfigSshArgs) -> Result<()> {
    let path = expand_home(&args.ssh_config_file)?;
    let binary = std::env::current_exe().context("could not find the tether binary's path")?;
    let config_dir = std::path::absolute(&g.config.path).unwrap_or_else(|_| g.config.path.clone());
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let new = update(
        &existing,
        &block(
            &binary,
            &config_dir,
            &args.ssh_host_prefix,
            &args.ssh_options,
            &header_flags(g),
        ),
    )?;
    // Name a workspace in the closing hint, when we can list them.
    let example = match g.client() {
        Ok(api) => api
            .get::<Vec<tether_proto::api::Workspace>>(tether_proto::api::route::WORKSPACES)
            .await
            .ok()
            .and_then(|l| l.first().map(|w| w.name.clone())),
        Err(_) => None,
    };
    if new == existing {
        println!("No changes to make: {} is up to date.", path.display());
    } else if args.dry_run {
        println!("Dry run: {} would become:\n", path.display());
        print!("{new}");
        return Ok(());
    } else {
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "updating {} needs confirmation: pass --yes (or --dry-run to see the change)",
                    path.display()
                );
            }
            let answer = super::prompt(&format!("Update {}? [y/N]", path.display()), "--yes")?;
            if !matches!(answer.as_str(), "y" | "Y" | "yes") {
                bail!("not changed");
            }
        }
        write_config(&path, &new)?;
        println!("Updated {}.", path.display());
    }
    let ws = example.unwrap_or_else(|| "<workspace>".into());
    println!(
        "\nYou should now be able to ssh into your workspace.\nFor example, try running:\n\n\t$ ssh {}{ws}\n",
        args.ssh_host_prefix
    );
    Ok(())
}

fn write_config(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    // Write beside and rename, keeping the old file's permissions, so a full disk never
    // leaves a half-written SSH config.
    let tmp = path.with_extension("tether-tmp");
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    std::fs::write(&tmp, contents).with_context(|| format!("could not write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = perms.unwrap_or_else(|| std::fs::Permissions::from_mode(0o600));
        std::fs::set_permissions(&tmp, p)?;
    }
    #[cfg(not(unix))]
    let _ = perms;
    std::fs::rename(&tmp, path).with_context(|| format!("could not replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(tag: &str) -> String {
        block(
            Path::new("/usr/bin/tether"),
            Path::new(&format!("/home/u/.config/{tag}")),
            "tether.",
            &[],
            &[],
        )
    }

    #[test]
    fn block_shape() {
        let blk = b("tether");
        assert!(blk.starts_with(START) && blk.ends_with(&format!("{END}\n")));
        assert!(blk.contains("Host tether.*\n"));
        assert!(blk.contains("\tProxyCommand /usr/bin/tether --global-config /home/u/.config/tether ssh --stdio --ssh-host-prefix tether. %h\n"));
        let spaced = block(
            Path::new("/opt/my apps/tether"),
            Path::new("/c"),
            "t.",
            &[],
            &[],
        );
        assert!(spaced.contains("ProxyCommand \"/opt/my apps/tether\" --global-config"));
    }

    #[test]
    fn appends_then_replaces_in_place_leaving_the_rest() {
        for original in [
            "",
            "Host a\n\tUser x\n",
            "Host a\n\tUser x",
            "Host a\n\n",
            "# only\n\n\nHost b\n",
        ] {
            let once = update(original, &b("one")).expect("first");
            assert!(once.starts_with(original), "{once:?}");
            assert_eq!(
                update(&once, &b("one")).expect("again"),
                once,
                "not idempotent for {original:?}"
            );
            let changed = update(&once, &b("two")).expect("replace");
            assert_eq!(changed.replace(&b("two"), &b("one")), once);
        }
    }

    #[test]
    fn block_in_the_middle_keeps_both_sides_byte_for_byte() {
        let before = "Host a\r\n\tUser x\n\n";
        let after = "\nHost z\n\tPort 2222   \n";
        let file = format!("{before}{}{after}", b("old"));
        let out = update(&file, &b("new")).expect("update");
        assert_eq!(out, format!("{before}{}{after}", b("new")));
    }

    #[test]
    fn broken_markers_are_refused() {
        assert_eq!(
            update(&format!("{START}\nHost x\n"), &b("x")),
            Err(ConfigError::Unbalanced("START-TETHER"))
        );
        assert_eq!(
            update(&format!("{END}\n"), &b("x")),
            Err(ConfigError::Unbalanced("END-TETHER"))
        );
        assert_eq!(
            update(&format!("{END}\n{START}\n"), &b("x")),
            Err(ConfigError::Unbalanced("END-TETHER"))
        );
        let two = format!("{}{}", b("a"), b("b"));
        assert_eq!(update(&two, &b("x")), Err(ConfigError::Duplicate));
    }

    #[test]
    fn ssh_options_go_first_and_replace_the_blocks_own() {
        let opt = |s: &str| SshOption::parse(s).expect(s);
        assert_eq!(
            opt("ForwardAgent yes"),
            SshOption {
                key: "ForwardAgent".into(),
                value: "yes".into()
            }
        );
        assert_eq!(opt("Port=2222").value, "2222");
        assert_eq!(opt(" User = bob ").key, "User");
        assert_eq!(opt("RemoteCommand tmux new -A").value, "tmux new -A");
        for bad in [
            "ForwardAgent",
            "",
            "Forward-Agent yes",
            "User x\nHost *",
            "=yes",
        ] {
            assert!(SshOption::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let blk = block(
            Path::new("/usr/bin/tether"),
            Path::new("/c"),
            "tether.",
            &[opt("ForwardAgent yes"), opt("loglevel DEBUG")],
            &[],
        );
        let host = blk.find("Host tether.*\n").expect("host line");
        let body: Vec<&str> = blk[host..].lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "\tForwardAgent yes",
                "\tloglevel DEBUG",
                "\tConnectTimeout=0",
                "\tStrictHostKeyChecking=no",
                "\tUserKnownHostsFile=/dev/null",
                "\tProxyCommand /usr/bin/tether --global-config /c ssh --stdio --ssh-host-prefix tether. %h",
                END,
            ]
        );
    }

    #[test]
    fn header_flags_reach_the_proxy_command_quoted_for_sh_and_ssh() {
        let blk = block(
            Path::new("/usr/bin/tether"),
            Path::new("/c"),
            "tether.",
            &[],
            &[
                ("--header", "X-Auth=abc"),
                ("--header", "Cookie=a b; it's 100%"),
                ("--header-command", "cat $HOME/token"),
            ],
        );
        assert!(
            blk.contains("\tProxyCommand /usr/bin/tether --global-config /c --header X-Auth=abc --header 'Cookie=a b; it'\\''s 100%%' --header-command 'cat $HOME/token' ssh --stdio --ssh-host-prefix tether. %h\n"),
            "{blk}"
        );
    }
}
