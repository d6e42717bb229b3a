//! Port-forward specs as Coder's `port-forward` takes them: `8080`, `8080:80`,
//! `127.0.0.1:8080:80`, `[::1]:8080:80`, ranges `9990-9999` or `9990-9999:8990-8999`,
//! several comma-separated in one value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One local listener forwarded to one workspace port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// TCP or UDP.
    pub proto: Proto,
    /// Where to listen locally.
    pub local: SocketAddr,
    /// The port inside the workspace (reached at 127.0.0.1 there).
    pub remote_port: u16,
}

impl Forward {
    /// The line printed for this forward.
    pub fn describe(&self) -> String {
        format!(
            "Forwarding '{p}://{l}' locally to '{p}://127.0.0.1:{r}' in the workspace",
            p = self.proto,
            l = self.local,
            r = self.remote_port
        )
    }
}

fn port(s: &str, spec: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {s:?} in {spec:?}: ports are 1-65535")),
        Ok(p) => Ok(p),
    }
}

fn ports(s: &str, spec: &str) -> Result<Vec<u16>, String> {
    match s.split_once('-') {
        None => Ok(vec![port(s, spec)?]),
        Some((a, b)) => {
            let (a, b) = (port(a, spec)?, port(b, spec)?);
            if a > b {
                return Err(format!(
                    "invalid range {s:?} in {spec:?}: the start is above the end"
                ));
            }
            Ok((a..=b).collect())
        }
    }
}

/// Parses every comma-separated spec of one flag value.
pub fn parse(proto: Proto, value: &str) -> Result<Vec<Forward>, String> {
    let mut out = Vec::new();
    for spec in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // An optional bind address comes first: IPv6 in brackets, or IPv4 with two colons.
        let (bind, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (addr, rest) = r
                .split_once("]:")
                .ok_or_else(|| format!("invalid spec {spec:?}: expected [addr]:local:remote"))?;
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("invalid bind address {addr:?} in {spec:?}"))?;
            (ip, rest)
        } else if spec.matches(':').count() == 2 {
            let (addr, rest) = spec.split_once(':').unwrap_or_default();
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("invalid bind address {addr:?} in {spec:?}"))?;
            (ip, rest)
        } else {
            (IpAddr::V4(Ipv4Addr::LOCALHOST), spec)
        };
        let (local, remote) = match rest.split_once(':') {
            Some((l, r)) => (ports(l, spec)?, ports(r, spec)?),
            None => {
                let p = ports(rest, spec)?;
                (p.clone(), p)
            }
        };
        if local.len() != remote.len() {
            return Err(format!(
                "invalid spec {spec:?}: the local and remote ranges differ in size"
            ));
        }
        out.extend(local.into_iter().zip(remote).map(|(l, r)| Forward {
            proto,
            local: SocketAddr::new(bind, l),
            remote_port: r,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(proto: Proto, local: &str, remote: u16) -> Forward {
        Forward {
            proto,
            local: local.parse().expect("addr"),
            remote_port: remote,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse(Proto::Tcp, "8080").expect("p"),
            [f(Proto::Tcp, "127.0.0.1:8080", 8080)]
        );
        assert_eq!(
            parse(Proto::Tcp, "8080:80").expect("p"),
            [f(Proto::Tcp, "127.0.0.1:8080", 80)]
        );
        assert_eq!(
            parse(Proto::Udp, "0.0.0.0:5353:53").expect("p"),
            [f(Proto::Udp, "0.0.0.0:5353", 53)]
        );
        assert_eq!(
            parse(Proto::Tcp, "[::1]:8080:80").expect("p"),
            [f(Proto::Tcp, "[::1]:8080", 80)]
        );
        assert_eq!(
            parse(Proto::Tcp, "9990-9992:8990-8992, 22").expect("p"),
            [
                f(Proto::Tcp, "127.0.0.1:9990", 8990),
                f(Proto::Tcp, "127.0.0.1:9991", 8991),
                f(Proto::Tcp, "127.0.0.1:9992", 8992),
                f(Proto::Tcp, "127.0.0.1:22", 22)
            ]
        );
        assert_eq!(parse(Proto::Tcp, "3000-3001").expect("p").len(), 2);
        assert_eq!(
            f(Proto::Tcp, "127.0.0.1:8080", 80).describe(),
            "Forwarding 'tcp://127.0.0.1:8080' locally to 'tcp://127.0.0.1:80' in the workspace"
        );
    }

    #[test]
    fn errors_name_the_spec() {
        for bad in [
            "0",
            "70000",
            "a:b",
            "9-1",
            "1-3:1-2",
            "1.2.3:80:80",
            "[::1:80:80",
        ] {
            let e = parse(Proto::Tcp, bad).expect_err(bad);
            assert!(e.contains(bad) || e.contains("invalid"), "{bad}: {e}");
        }
    }
}
