//! `tether users …`.

use anyhow::Result;
use tether_proto::api::{CreateUserRequest, User, UserList, route};

use super::workspaces::Output;
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
    /// List users (admin only).
    #[command(alias = "ls")]
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Suspend a user (admin only): they cannot log in, their sessions stop working, and
    /// their running connections (ssh, port-forward) end within a second.
    Suspend {
        /// Username or id.
        user: String,
    },
    /// Activate a suspended user again (admin only): they may log in, and their sessions
    /// that have not expired work again.
    Activate {
        /// Username or id.
        user: String,
    },
    /// Delete a user and their sessions (admin only), ending their running connections;
    /// refused while they own workspaces (delete those first).
    #[command(alias = "rm")]
    Delete {
        /// Username or id.
        user: String,
    },
}

/// The users as a table: username, email, status, admin, created.
pub fn table_of(users: &[User]) -> String {
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                u.username.clone(),
                u.email.clone(),
                u.status.as_str().to_owned(),
                if u.is_admin { "admin" } else { "member" }.to_owned(),
                u.created_at.format("%Y-%m-%d").to_string(),
            ]
        })
        .collect();
    let head = ["USERNAME", "EMAIL", "STATUS", "ROLE", "CREATED"];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_owned()
    };
    let mut out = line(head);
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

async fn change(g: &Globals, path: String, done: &str) -> Result<()> {
    let user: User = g.client()?.put(&path).await?;
    println!(
        "User {} {done} (status: {}).",
        user.username,
        user.status.as_str()
    );
    Ok(())
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
        UsersCommand::List { output } => {
            let list: UserList = g.client()?.get(route::USERS).await?;
            match output {
                Output::Table => println!("{}", table_of(&list.users)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&list.users)?),
            }
            Ok(())
        }
        UsersCommand::Suspend { user } => {
            let path = route::USER_SUSPEND.replace("{user}", &route::segment(&user)?);
            change(g, path, "suspended").await
        }
        UsersCommand::Activate { user } => {
            let path = route::USER_ACTIVATE.replace("{user}", &route::segment(&user)?);
            change(g, path, "activated").await
        }
        UsersCommand::Delete { user } => {
            g.client()?.delete(&route::user(&user)?).await?;
            println!("User {user} deleted.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_user_with_status_and_role() {
        let user = |name: &str, admin: bool, status| User {
            id: uuid::Uuid::nil(),
            username: name.into(),
            email: format!("{name}@example.com"),
            is_admin: admin,
            created_at: chrono::DateTime::UNIX_EPOCH,
            status,
        };
        let t = table_of(&[
            user("alice", true, tether_proto::api::UserStatus::Active),
            user("bob", false, tether_proto::api::UserStatus::Suspended),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("USERNAME"), "{t}");
        assert!(
            lines[1].starts_with("alice")
                && lines[1].contains("active")
                && lines[1].contains("admin"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("bob")
                && lines[2].contains("suspended")
                && lines[2].contains("member"),
            "{t}"
        );
    }
}
