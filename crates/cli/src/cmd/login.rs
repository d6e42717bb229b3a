//! `tether login` and `tether logout`.

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use tether_proto::api::{CreateUserRequest, LoginRequest, LoginResponse, route};
use url::Url;

use super::{prompt, prompt_password};
use crate::Globals;

/// `tether login` flags.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:3000 (default: --url, or the stored one).
    pub server_url: Option<Url>,
    /// First user's username (only on a new server).
    #[arg(long, env = "TETHER_FIRST_USER_USERNAME")]
    pub first_user_username: Option<String>,
    /// First user's email (only on a new server).
    #[arg(long, env = "TETHER_FIRST_USER_EMAIL")]
    pub first_user_email: Option<String>,
    /// First user's password (only on a new server).
    #[arg(long, env = "TETHER_FIRST_USER_PASSWORD", hide_env_values = true)]
    pub first_user_password: Option<String>,
    /// Username or email to log in as.
    #[arg(long, env = "TETHER_USERNAME")]
    pub username: Option<String>,
    /// Password to log in with.
    #[arg(long, env = "TETHER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Logs in, creating the first user when the server has none.
pub async fn run(g: &Globals, args: LoginArgs) -> Result<()> {
    let url = match args.server_url.clone().or_else(|| g.url.clone()) {
        Some(u) => u,
        None => match g.config.url()? {
            Some(u) => u,
            None => bail!(
                "which server? run `tether login <url>`, e.g. `tether login http://127.0.0.1:3000`"
            ),
        },
    };
    let api = g.api(url.clone(), None)?;
    let first = api.get_status(route::USERS_FIRST).await?;
    let resp: LoginResponse = if first == StatusCode::NOT_FOUND {
        eprintln!("This server has no users yet; creating the first (admin) user.");
        let username = match args.first_user_username.or(args.username) {
            Some(u) => u,
            None => prompt("Username", "--first-user-username")?,
        };
        let email = match args.first_user_email {
            Some(e) => e,
            None => prompt("Email", "--first-user-email")?,
        };
        let password = match args.first_user_password.or(args.password) {
            Some(p) => p,
            None => {
                let p = prompt_password("Password", "--first-user-password")?;
                if prompt_password("Confirm password", "--first-user-password")? != p {
                    bail!("the passwords do not match");
                }
                p
            }
        };
        crate::redact::secret(&password);
        api.post(
            route::USERS_FIRST,
            &CreateUserRequest {
                username,
                email,
                password,
                is_admin: true,
            },
        )
        .await?
    } else if first.is_success() {
        let username = match args.username {
            Some(u) => u,
            None => prompt("Username or email", "--username")?,
        };
        let password = match args.password {
            Some(p) => p,
            None => prompt_password("Password", "--password")?,
        };
        crate::redact::secret(&password);
        api.post(route::USERS_LOGIN, &LoginRequest { username, password })
            .await?
    } else {
        bail!(
            "{url} does not look like a tether server (GET {} answered {first}){}",
            route::USERS_FIRST,
            if first == StatusCode::FORBIDDEN || first == StatusCode::UNAUTHORIZED {
                "; if a proxy in front of it needs headers, pass them with --header or --header-command"
            } else {
                ""
            }
        );
    };
    crate::redact::secret(&resp.session_token);
    g.config
        .save(&url, &resp.session_token)
        .context("logged in, but could not store the session token")?;
    println!(
        "Welcome to tether, {}! You are logged in to {}.",
        resp.user.username,
        url.as_str().trim_end_matches('/')
    );
    println!("Next, create a workspace:\n\n  tether create dev\n");
    Ok(())
}

/// Revokes the token on the server (best effort) and removes it locally.
pub async fn logout(g: &Globals) -> Result<()> {
    let Some(token) = g.config.session()? else {
        println!("You are not logged in.");
        return Ok(());
    };
    if let Some(url) = g.url.clone().or(g.config.url()?)
        && let Err(e) = g
            .api(url, Some(token))?
            .post_empty(route::USERS_LOGOUT)
            .await
    {
        eprintln!("warning: the server did not revoke the token ({e}); removing it locally anyway");
    }
    g.config.clear_session()?;
    println!("You are logged out.");
    Ok(())
}
