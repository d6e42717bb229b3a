//! POSIX signals the agent delivers to programs it started (an SSH `signal` request, a
//! hang-up when a session ends), named as SSH names them (RFC 4254 §6.10: `TERM`, `HUP`, …).

use std::io;
use std::time::Duration;

use tokio::process::Child;

/// A signal a client may send to a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGABRT`.
    Abort,
    /// `SIGALRM`.
    Alarm,
    /// `SIGFPE`.
    Fpe,
    /// `SIGHUP`: the terminal hung up.
    Hup,
    /// `SIGILL`.
    Ill,
    /// `SIGINT`: Ctrl-C.
    Int,
    /// `SIGKILL`.
    Kill,
    /// `SIGPIPE`.
    Pipe,
    /// `SIGQUIT`.
    Quit,
    /// `SIGSEGV`.
    Segv,
    /// `SIGTERM`.
    Term,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGCONT`.
    Cont,
    /// `SIGSTOP`.
    Stop,
    /// `SIGTSTP`: Ctrl-Z.
    Tstp,
    /// `SIGWINCH`: the window size changed.
    Winch,
}

impl Signal {
    /// The signal named `name`, with or without the `SIG` prefix (`"TERM"`, `"SIGTERM"`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.strip_prefix("SIG").unwrap_or(name) {
            "ABRT" => Self::Abort,
            "ALRM" => Self::Alarm,
            "FPE" => Self::Fpe,
            "HUP" => Self::Hup,
            "ILL" => Self::Ill,
            "INT" => Self::Int,
            "KILL" => Self::Kill,
            "PIPE" => Self::Pipe,
            "QUIT" => Self::Quit,
            "SEGV" => Self::Segv,
            "TERM" => Self::Term,
            "USR1" => Self::Usr1,
            "USR2" => Self::Usr2,
            "CONT" => Self::Cont,
            "STOP" => Self::Stop,
            "TSTP" => Self::Tstp,
            "WINCH" => Self::Winch,
            _ => return None,
        })
    }

    fn to_rustix(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Self::Abort => S::ABORT,
            Self::Alarm => S::ALARM,
            Self::Fpe => S::FPE,
            Self::Hup => S::HUP,
            Self::Ill => S::ILL,
            Self::Int => S::INT,
            Self::Kill => S::KILL,
            Self::Pipe => S::PIPE,
            Self::Quit => S::QUIT,
            Self::Segv => S::SEGV,
            Self::Term => S::TERM,
            Self::Usr1 => S::USR1,
            Self::Usr2 => S::USR2,
            Self::Cont => S::CONT,
            Self::Stop => S::STOP,
            Self::Tstp => S::TSTP,
            Self::Winch => S::WINCH,
        }
    }

    /// Deliver this signal to process `pid`.
    ///
    /// # Errors
    /// `InvalidInput` for a pid that is no process id; the OS error when `kill` fails
    /// (the process is gone, or belongs to someone else).
    pub fn send(self, pid: u32) -> io::Result<()> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
        rustix::process::kill_process(pid, self.to_rustix()).map_err(io::Error::from)
    }
}

/// Hang `child` up as a closed terminal would: `SIGHUP`, then `SIGKILL` if it has not
/// exited within `grace`. Returns once the child has been waited for (or killed).
pub async fn hang_up(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // It may have exited already; waiting below reaps it either way.
        let _ = Signal::Hup.send(pid);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_with_and_without_prefix() {
        assert_eq!(Signal::from_name("TERM"), Some(Signal::Term));
        assert_eq!(Signal::from_name("SIGUSR2"), Some(Signal::Usr2));
        assert_eq!(Signal::from_name("WINCH"), Some(Signal::Winch));
        assert_eq!(Signal::from_name("SIGFOO"), None);
        assert_eq!(Signal::from_name(""), None);
    }

    #[test]
    fn pid_zero_is_refused() {
        // Pid 0 would signal our own process group: never.
        let err = Signal::Term.send(0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
