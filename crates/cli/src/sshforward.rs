//! What `tether ssh -A` and `-R` do on this side: `-R [bind:]port:host:hostport` specs,
//! and the channels the agent's SSH server opens back to us, joined to a local TCP
//! connection (`forwarded-tcpip`) or to the local ssh-agent's socket (`auth-agent`).
//! Channels nobody asked for are refused.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelOpenFailure;
use russh::client::ChannelOpenHandle;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a local connect for a forwarded channel may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// One `-R`: the agent listens on `bind:port` in the workspace, each connection is
/// forwarded to `host:host_port` as seen from this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteForward {
    /// The address the agent binds (it listens on loopback whatever this says).
    pub bind: String,
    /// The port in the workspace; 0 lets the agent choose.
    pub port: u16,
    /// Where connections go, from this side.
    pub host: String,
    /// Its port.
    pub host_port: u16,
}

/// Splits on `:` outside `[…]`, dropping the brackets.
fn fields(spec: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut bracket = false;
    for c in spec.chars() {
        match c {
            '[' if !bracket && cur.is_empty() => bracket = true,
            ']' if bracket => bracket = false,
            ':' if !bracket => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if bracket {
        return None;
    }
    out.push(cur);
    Some(out)
}

impl RemoteForward {
    /// `[bind:]port:host:hostport` as OpenSSH's `-R` takes it (IPv6 in brackets).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = || format!("-R {spec:?} is not [bind_address:]port:host:hostport");
        let f = fields(spec).ok_or_else(bad)?;
        let (bind, port, host, host_port) = match f.as_slice() {
            [p, h, hp] => ("localhost", p, h, hp),
            [b, p, h, hp] => (b.as_str(), p, h, hp),
            _ => return Err(bad()),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("-R {spec:?}: {port:?} is not a port (0-65535)"))?;
        let host_port = match host_port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "-R {spec:?}: {host_port:?} is not a port (1-65535)"
                ));
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            bind: if bind.is_empty() { "localhost" } else { bind }.to_string(),
            port,
            host: host.clone(),
            host_port,
        })
    }
}

/// What the agent may open channels back for: the forwards it granted (by the port it
/// listens on) and the local agent socket, if `-A` was given.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Granted `-R` forwards, by listening port.
    pub remote: Arc<Mutex<Vec<(u32, RemoteForward)>>>,
    /// `SSH_AUTH_SOCK`, for `-A`.
    pub agent: Option<PathBuf>,
}

impl Allowed {
    /// A `forwarded-tcpip` channel for `port`: connect to its target, then join them.
    pub fn forwarded_tcpip<C>(&self, channel: C, port: u32, reply: ChannelOpenHandle)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let target = self
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, f)| (f.host.clone(), f.host_port));
        let Some((host, host_port)) = target else {
            tracing::debug!(port, "refusing a forwarded-tcpip channel nobody asked for");
            tokio::spawn(reply.reject(ChannelOpenFailure::AdministrativelyProhibited));
            return;
        };
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect((host.as_str(), host_port));
            match tokio::time::timeout(CONNECT_WAIT, connect).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    reply.accept().await;
                    join(channel, tcp).await;
                }
                Ok(Err(e)) => {
                    eprintln!("tether ssh: -R forward to {host}:{host_port} failed: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
                Err(_) => {
                    eprintln!("tether ssh: -R forward to {host}:{host_port} timed out");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
    }

    /// An `auth-agent` channel: join it to the local agent's socket, if `-A` was given.
    pub fn agent<C>(&self, channel: C, reply: ChannelOpenHandle)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(path) = self.agent.clone() else {
            tracing::debug!("refusing an agent channel without -A");
            tokio::spawn(reply.reject(ChannelOpenFailure::AdministrativelyProhibited));
            return;
        };
        tokio::spawn(async move {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(sock) => {
                    reply.accept().await;
                    join(channel, sock).await;
                }
                Err(e) => {
                    eprintln!(
                        "tether ssh: could not reach the local SSH agent at {}: {e}",
                        path.display()
                    );
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
    }
}

/// Copies both ways until both sides are done.
async fn join<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(error = %e, "forwarded channel ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_forward_specs() {
        let f = |bind: &str, port, host: &str, host_port| RemoteForward {
            bind: bind.into(),
            port,
            host: host.into(),
            host_port,
        };
        assert_eq!(
            RemoteForward::parse("8080:localhost:80"),
            Ok(f("localhost", 8080, "localhost", 80))
        );
        assert_eq!(
            RemoteForward::parse("0.0.0.0:8080:10.0.0.1:80"),
            Ok(f("0.0.0.0", 8080, "10.0.0.1", 80))
        );
        assert_eq!(
            RemoteForward::parse("[::1]:0:[::1]:22"),
            Ok(f("::1", 0, "::1", 22))
        );
        assert_eq!(
            RemoteForward::parse(":9000:db:5432"),
            Ok(f("localhost", 9000, "db", 5432))
        );
        for bad in [
            "8080",
            "8080:80",
            "a:b:c:d:e",
            "70000:h:1",
            "1:h:0",
            "1::80",
            "[::1:1:h:2",
        ] {
            assert!(RemoteForward::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
