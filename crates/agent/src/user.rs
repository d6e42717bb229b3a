//! The account the agent runs as, and how a program is started for it: the login shell or
//! `$SHELL -c <command>`, with the account's environment and its home as working directory.
//! Every program a client starts (an SSH session, the web terminal next) starts here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The agent's own account (programs run as it: the agent does not switch users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

/// What to run for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// An interactive login shell.
    Shell,
    /// `$SHELL -c <command>`.
    Exec(OsString),
}

impl User {
    /// The agent's own user: `$SHELL`, else the login shell from `/etc/passwd`, else `/bin/sh`.
    pub fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entry = passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f.get(2)?.parse::<u32>().ok()? == uid)
                .then(|| (f[0].to_string(), f[5].to_string(), f[6].to_string()))
        });
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = entry
            .as_ref()
            .map(|e| e.0.clone())
            .or_else(|| env("USER"))
            .unwrap_or_else(|| uid.to_string());
        let home = entry
            .as_ref()
            .map(|e| e.1.clone())
            .filter(|h| !h.is_empty() && Path::new(h).is_dir())
            .or_else(|| env("HOME"))
            .unwrap_or_else(|| "/".to_string());
        let shell = env("SHELL")
            .or_else(|| {
                entry
                    .as_ref()
                    .map(|e| e.2.clone())
                    .filter(|s| !s.is_empty())
            })
            .filter(|s| Path::new(s).exists())
            .unwrap_or_else(|| "/bin/sh".to_string());
        Self {
            name,
            home: PathBuf::from(home),
            shell: PathBuf::from(shell),
        }
    }

    /// The command that runs `program` as this user: the shell (a login shell is started
    /// as `-<shell name>`, as `login` does), `USER`, `LOGNAME`, `HOME` and `SHELL` set, in
    /// the home directory when it exists, killed when its child handle is dropped. Add
    /// the client's variables (`TERM`, …) before spawning it.
    pub fn command(&self, program: &Program) -> Command {
        let mut cmd = Command::new(&self.shell);
        match program {
            Program::Shell => {
                let base = self
                    .shell
                    .file_name()
                    .map_or_else(|| "sh".into(), |b| b.to_string_lossy().into_owned());
                cmd.arg0(format!("-{base}"));
            }
            Program::Exec(command) => {
                cmd.arg("-c").arg(command);
            }
        }
        cmd.env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("HOME", &self.home)
            .env("SHELL", &self.shell);
        if self.home.is_dir() {
            cmd.current_dir(&self.home);
        }
        cmd.kill_on_drop(true);
        cmd
    }
}
