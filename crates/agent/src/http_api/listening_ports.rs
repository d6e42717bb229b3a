//! The workspace's listening TCP ports, from `/proc`: [`parse_proc_net_tcp`] reads the
//! kernel's socket table text (sans-IO), [`scan`] reads `/proc/net/tcp` and
//! `/proc/net/tcp6` and names each socket's process from `/proc/<pid>/fd` and
//! `/proc/<pid>/comm` where readable.
//!
//! Listed: sockets in LISTEN state on ports ≥ [`MIN_PORT`], minus [`IGNORED_PORTS`]
//! (system services a workspace user does not forward), one entry per port (a server
//! listening on IPv4 and IPv6 is one port), sorted by port.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

/// Ports below this are never listed (Coder's bound; they are reserved for the agent's
/// own tailnet services).
pub const MIN_PORT: u16 = 9;

/// System services that are never listed: SSH (22), a local mail transfer agent (25),
/// a local DNS resolver (53, e.g. systemd-resolved or dnsmasq), rpcbind (111), CUPS (631)
/// and LLMNR (5355).
pub const IGNORED_PORTS: [u16; 6] = [22, 25, 53, 111, 631, 5355];

/// `st` of a socket in LISTEN state in `/proc/net/tcp{,6}`.
const TCP_LISTEN: &str = "0A";

/// One port in the answer of `GET /api/v0/listening-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListeningPort {
    /// The process that listens, as `/proc/<pid>/comm` names it; empty when unknown
    /// (another user's process).
    pub process_name: String,
    /// Always `"tcp"`.
    pub network: &'static str,
    /// The port.
    pub port: u16,
}

/// The answer of `GET /api/v0/listening-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListeningPorts {
    /// Sorted by port.
    pub ports: Vec<ListeningPort>,
}

/// A listening socket in the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Local port.
    pub port: u16,
    /// The socket's inode, which `/proc/<pid>/fd/*` links name as `socket:[<inode>]`.
    pub inode: u64,
}

/// The LISTEN sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`. The header and
/// lines that do not parse are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Listener> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != TCP_LISTEN {
        return None;
    }
    let (_, port) = local.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let inode = fields.nth(5)?.parse().ok()?;
    Some(Listener { port, inode })
}

/// What the answer lists for `listeners`, given the process name owning each inode.
pub fn listening_ports(listeners: &[Listener], names: &HashMap<u64, String>) -> ListeningPorts {
    let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
    for l in listeners {
        if l.port < MIN_PORT || IGNORED_PORTS.contains(&l.port) {
            continue;
        }
        let name = names.get(&l.inode).cloned().unwrap_or_default();
        let entry = by_port.entry(l.port).or_default();
        if entry.is_empty() {
            *entry = name;
        }
    }
    ListeningPorts {
        ports: by_port
            .into_iter()
            .map(|(port, process_name)| ListeningPort {
                process_name,
                network: "tcp",
                port,
            })
            .collect(),
    }
}

/// Read the listening ports from `proc` (`/proc` outside tests). Blocking file I/O.
pub fn scan(proc: &Path) -> ListeningPorts {
    let mut listeners = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        // A host without IPv6 has no tcp6 table: that is no error.
        if let Ok(text) = std::fs::read_to_string(proc.join(table)) {
            listeners.extend(parse_proc_net_tcp(&text));
        }
    }
    let wanted: Vec<u64> = listeners
        .iter()
        .filter(|l| l.port >= MIN_PORT)
        .map(|l| l.inode)
        .collect();
    let names = process_names(proc, &wanted);
    listening_ports(&listeners, &names)
}

/// Inode → the name of a process holding that socket, for the `inodes` found in readable
/// `/proc/<pid>/fd` directories.
fn process_names(proc: &Path, inodes: &[u64]) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc) else {
        return names;
    };
    for entry in dir.filter_map(Result::ok) {
        if names.len() == inodes.len() {
            break;
        }
        let pid = entry.file_name();
        if !pid
            .to_str()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&link.to_string_lossy()) else {
                continue;
            };
            if !inodes.contains(&inode) || names.contains_key(&inode) {
                continue;
            }
            let name = comm.get_or_insert_with(|| {
                std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default()
            });
            names.insert(inode, name.clone());
        }
    }
    names
}

/// The inode of an fd link `socket:[<inode>]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a Linux 6.1 host (trimmed), with a header, LISTEN sockets on
    /// 127.0.0.53:53, 0.0.0.0:22, 127.0.0.1:8000 and 0.0.0.0:5 and an ESTABLISHED one.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 3500007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   102        0 18621 1 0000000000000000 100 0 0 10 5
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21345 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99871 1 0000000000000000 100 0 0 10 0
   3: 00000000:0005 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99872 1 0000000000000000 100 0 0 10 0
   4: 0100007F:1F40 0100007F:C2A4 01 00000000:00000000 00:00000000 00000000  1000        0 99900 1 0000000000000000 20 4 30 10 -1
";

    /// Captured likewise: [::]:8000 (the same server's IPv6 socket), [::1]:5432 LISTEN,
    /// one TIME_WAIT, and a truncated line.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99873 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 30011 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:1538 00000000000000000000000001000000:D3C2 06 00000000:00000000 03:00000B4C 00000000     0        0 0 3 0000000000000000
   3: 00000000000000000000000000000000:2328 0000
";

    #[test]
    fn parses_listen_sockets_only() {
        assert_eq!(
            parse_proc_net_tcp(TCP),
            [
                Listener {
                    port: 53,
                    inode: 18621
                },
                Listener {
                    port: 22,
                    inode: 21345
                },
                Listener {
                    port: 8000,
                    inode: 99871
                },
                Listener {
                    port: 5,
                    inode: 99872
                },
            ]
        );
        assert_eq!(
            parse_proc_net_tcp(TCP6),
            [
                Listener {
                    port: 8000,
                    inode: 99873
                },
                Listener {
                    port: 5432,
                    inode: 30011
                },
            ]
        );
        assert!(parse_proc_net_tcp("").is_empty());
        assert!(parse_proc_net_tcp("garbage\n0: x y 0A\n0: a:zz b 0A c d e f g 1").is_empty());
    }

    #[test]
    fn filters_dedups_and_sorts() {
        let mut all = parse_proc_net_tcp(TCP6);
        all.extend(parse_proc_net_tcp(TCP));
        // Only the IPv4 socket of port 8000 has a known owner.
        let names = HashMap::from([(99871, "python3".to_string())]);
        let got = listening_ports(&all, &names);
        assert_eq!(
            got.ports,
            [
                ListeningPort {
                    process_name: String::new(),
                    network: "tcp",
                    port: 5432
                },
                ListeningPort {
                    process_name: "python3".into(),
                    network: "tcp",
                    port: 8000
                },
            ]
        );
        assert_eq!(
            serde_json::to_string(&got).unwrap_or_default(),
            r#"{"ports":[{"process_name":"","network":"tcp","port":5432},{"process_name":"python3","network":"tcp","port":8000}]}"#
        );
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
