//! The lines `tether server` prints on stdout once it is listening: where it listens,
//! what it serves, and the `tether login` command to run next.

use crate::Server;

/// Prints a banner line; a closed stdout (the operator piped us into `head`) must not
/// take the server down, so write errors are ignored.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Prints the banner of a built server.
pub fn print(server: &Server) {
    let config = server.config();
    let base = server.access_url().as_str().trim_end_matches('/');
    say!(
        "tether server listening on http://{}",
        server.http_address()
    );
    if let Some(addr) = server.tls_address() {
        say!("tether server listening on https://{addr}");
    }
    say!("  access URL:  {base}");
    say!(
        "  database:    {} (SQLite)",
        server.database_path().display()
    );
    if config.derp_server_enable {
        say!(
            "  DERP relay:  built in, region {} {:?} at {base}/derp",
            config.derp_server_region_id,
            config.derp_server_region_name
        );
    }
    match server.stun_address() {
        Some(addr) => say!("  STUN:        built in, udp {addr}"),
        None => say!("  STUN:        built-in server off"),
    }
    say!(
        "  DERP map:    {} region(s)",
        server.derp_map().regions.len()
    );
    if let Some(addr) = server.prometheus_address() {
        say!("  metrics:     http://{addr}/metrics (Prometheus)");
    }
    if config.browser_only {
        say!("  browser-only: users' tailnet connections are refused; use the web terminal");
    }
    if !server.has_users() {
        say!("\nNext, create the first user (in another terminal):\n\n  tether login {base}\n");
    } else {
        say!("\nLog in from a client with:\n\n  tether login {base}\n");
    }
}
