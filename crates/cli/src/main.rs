//! `tether`: one binary for the server, the agent and the user commands, like `coder`.
//! This crate only wires the library crates together and formats output.

mod client;
mod cmd;
mod headers;
mod redact;
mod session;
mod sshclient;
mod sshforward;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use url::Url;

/// Reach your remote development workspaces.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
struct Cli {
    /// Server URL (overrides the stored login).
    #[arg(long, global = true, env = "TETHER_URL")]
    url: Option<Url>,

    /// Session token (overrides the stored login).
    #[arg(
        long,
        global = true,
        env = "TETHER_SESSION_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Directory for login state.
    #[arg(long, global = true, env = "TETHER_CONFIG_DIR")]
    global_config: Option<PathBuf>,

    /// Debug logging.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// Never use direct (peer-to-peer) paths; relay everything through DERP.
    #[arg(long, global = true, env = "TETHER_DISABLE_DIRECT_CONNECTIONS")]
    disable_direct_connections: bool,

    /// An HTTP header for every request to the server, `KEY=VALUE` (repeatable), for an
    /// access proxy in front of it. Without it, TETHER_HEADER (comma-separated) is used.
    #[arg(long = "header", global = true, value_name = "KEY=VALUE")]
    header: Vec<String>,

    /// A command (run once by `sh -c`, with TETHER_URL set) whose output lines are
    /// `KEY=VALUE` headers for every request to the server.
    #[arg(long, global = true, value_name = "CMD", env = "TETHER_HEADER_COMMAND")]
    header_command: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control server (HTTP API, coordinator, DERP relay, STUN).
    Server(Box<tether_server::Config>),
    /// Log in to a server (creating the first user on a new server).
    Login(cmd::login::LoginArgs),
    /// Forget the stored session token and revoke it on the server.
    Logout,
    /// Manage users.
    #[command(subcommand)]
    Users(cmd::users::UsersCommand),
    /// Create a workspace and print the command that starts its agent.
    Create(cmd::workspaces::CreateArgs),
    /// List your workspaces.
    #[command(visible_alias = "ls")]
    List(cmd::workspaces::ListArgs),
    /// Show a workspace: its agent, the path to it from here and from the server, and
    /// the ports listening in it.
    Show(cmd::show::ShowArgs),
    /// Declare, list and remove a workspace's web apps.
    #[command(subcommand)]
    Apps(cmd::apps::AppsCommand),
    /// Delete a workspace (its agent token stops working).
    Delete(cmd::workspaces::DeleteArgs),
    /// Run the workspace agent (inside the workspace).
    Agent(cmd::agent::AgentArgs),
    /// Open a shell or run a command in a workspace over SSH.
    Ssh(cmd::ssh::SshArgs),
    /// Forward local TCP/UDP ports to ports inside a workspace.
    PortForward(cmd::port_forward::PortForwardArgs),
    /// Add a `Host tether.*` block to your SSH config so `ssh tether.<workspace>` works.
    ConfigSsh(cmd::config_ssh::ConfigSshArgs),
    /// Report UDP reachability, NAT mapping and DERP region latency (`--format json` for
    /// scripts).
    Netcheck(cmd::netcheck::NetcheckArgs),
    /// Ping a workspace's agent over the tailnet and explain the path (p2p or DERP).
    Ping(cmd::ping::PingArgs),
    /// Measure throughput to a workspace's agent over the tailnet.
    Speedtest(cmd::speedtest::SpeedtestArgs),
}

/// Global options every command may need.
pub struct Globals {
    /// `--url`.
    pub url: Option<Url>,
    /// `--token`.
    pub token: Option<String>,
    /// Login state.
    pub config: session::ConfigDir,
    /// `--disable-direct-connections`.
    pub disable_direct: bool,
    /// `--header`, `TETHER_HEADER` and `--header-command`, for every request to the server.
    pub headers: reqwest::header::HeaderMap,
    /// `--header` as given (for `config-ssh`'s ProxyCommand).
    pub header_flags: Vec<String>,
    /// `--header-command` as given.
    pub header_command: Option<String>,
}

impl Globals {
    /// An authenticated API client, from flags/env first, then the stored login.
    pub fn client(&self) -> anyhow::Result<client::ApiClient> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => match self.config.url()? {
                Some(u) => u,
                None => return session::not_logged_in(),
            },
        };
        let token = match &self.token {
            Some(t) => t.clone(),
            None => match self.config.session()? {
                Some(t) => t,
                None => return session::not_logged_in(),
            },
        };
        redact::secret(&token);
        self.api(url, Some(token))
    }

    /// An API client for `url` with the global headers.
    pub fn api(&self, url: Url, token: Option<String>) -> anyhow::Result<client::ApiClient> {
        client::ApiClient::new(url, token, self.headers.clone())
    }
}

fn init_logging(verbose: bool, server: bool) {
    let default = if verbose {
        "debug"
    } else if server {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::Stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.verbose,
        matches!(cli.command, Command::Server(_) | Command::Agent(_)),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = session::ConfigDir::new(cli.global_config);
    let result = runtime.block_on(async move {
        // `apps add --url` is the app's URL; clap copies it into the global `--url`, so
        // the server comes from TETHER_URL or the stored login there.
        let url = match &cli.command {
            Command::Apps(cmd::apps::AppsCommand::Add(_)) => std::env::var("TETHER_URL")
                .ok()
                .and_then(|u| Url::parse(&u).ok()),
            _ => cli.url.clone(),
        };
        // The header command learns which server it is for, when that is known here.
        let server = match &cli.command {
            Command::Agent(a) => Some(a.url.clone()),
            Command::Login(a) => a.server_url.clone().or_else(|| cli.url.clone()),
            _ => url.clone().or_else(|| config.url().ok().flatten()),
        };
        let headers = match &cli.command {
            Command::Server(_) => Default::default(),
            _ => {
                headers::collect(&cli.header, cli.header_command.as_deref(), server.as_ref())
                    .await?
            }
        };
        let globals = Globals {
            url,
            token: cli.token,
            config,
            disable_direct: cli.disable_direct_connections,
            headers,
            header_flags: cli.header,
            header_command: cli.header_command,
        };
        match cli.command {
            Command::Ssh(a) => return cmd::ssh::run(&globals, a).await,
            Command::Ping(a) => return cmd::ping::run(&globals, a).await,
            Command::Agent(a) => cmd::agent::run(a, globals.headers).await,
            Command::Server(cfg) => tether_server::run(*cfg).await.map_err(anyhow::Error::from),
            Command::Login(args) => cmd::login::run(&globals, args).await,
            Command::Logout => cmd::login::logout(&globals).await,
            Command::Users(c) => cmd::users::run(&globals, c).await,
            Command::Create(a) => cmd::workspaces::create(&globals, a).await,
            Command::List(a) => cmd::workspaces::list(&globals, a).await,
            Command::Delete(a) => cmd::workspaces::delete(&globals, a).await,
            Command::Show(a) => cmd::show::run(&globals, a).await,
            Command::Apps(c) => cmd::apps::run(&globals, c).await,
            Command::ConfigSsh(a) => cmd::config_ssh::run(&globals, a).await,
            Command::PortForward(a) => cmd::port_forward::run(&globals, a).await,
            Command::Netcheck(a) => cmd::netcheck::run(&globals, a).await,
            Command::Speedtest(a) => cmd::speedtest::run(&globals, a).await,
        }
        .map(|()| 0)
    });
    // Background tasks (tailnet drivers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("error: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error chain as one line: outer context, then causes that add something.
fn sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
