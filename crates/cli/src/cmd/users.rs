//! `tether users …`.

use anyhow::Result;
use tether_proto::api::{CreateUserRequest, User, route};

use super::{prompt, prompt_password};
use crate::Globals;

/// `tether users` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user (admin only).
    Create {
        /// Login name.
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Email address.
        #[arg(long, short = 'e')]
        email: Option<String>,
        /// Password (prompted when omitted).
        #[arg(
            long,
            short = 'p',
            env = "TETHER_NEW_USER_PASSWORD",
            hide_env_values = true
        )]
        password: Option<String>,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
}

/// Runs a users subcommand.
pub async fn run(g: &Globals, cmd: UsersCommand) -> Result<()> {
    match cmd {
        UsersCommand::Create {
            username,
            email,
            password,
            admin,
        } => {
            let api = g.client()?;
            let username = match username {
                Some(u) => u,
                None => prompt("Username", "--username")?,
            };
            let email = match email {
                Some(e) => e,
                None => prompt("Email", "--email")?,
            };
            let password = match password {
                Some(p) => p,
                None => prompt_password("Password", "--password")?,
            };
            let user: User = api
                .post(
                    route::USERS,
                    &CreateUserRequest {
                        username,
                        email,
                        password,
                        is_admin: admin,
                    },
                )
                .await?;
            println!(
                "User {} created{}.",
                user.username,
                if user.is_admin { " (admin)" } else { "" }
            );
            Ok(())
        }
    }
}
