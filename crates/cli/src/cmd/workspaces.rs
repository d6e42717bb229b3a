//! `tether create`, `tether list`, `tether delete`.

use std::io::IsTerminal;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use tether_proto::api::{
    AgentStatus, CreateWorkspaceRequest, CreateWorkspaceResponse, Workspace, route,
};

use crate::Globals;

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// `tether create` flags.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Workspace name (lowercase letters, digits, hyphens).
    pub name: String,
}

/// `tether list` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `tether delete` flags.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Workspace name.
    pub name: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
}

/// Creates a workspace and prints the agent command once.
pub async fn create(g: &Globals, args: CreateArgs) -> Result<()> {
    let api = g.client()?;
    let resp: CreateWorkspaceResponse = api
        .post(
            route::WORKSPACES,
            &CreateWorkspaceRequest { name: args.name },
        )
        .await?;
    let url = api.base.as_str().trim_end_matches('/');
    println!("Workspace {} created.", resp.workspace.name);
    println!(
        "Start its agent inside the workspace with this command (the token is shown only once):\n"
    );
    println!("  tether agent --url {url} --token {}\n", resp.agent_token);
    Ok(())
}

/// "now", "45s ago", "3m ago", "2h ago", "4d ago", or "never".
pub fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(t) = t else { return "never".into() };
    let secs = (now - t).num_seconds().max(0);
    match secs {
        0..=4 => "now".into(),
        5..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Renders the workspace table.
pub fn table(list: &[Workspace], now: DateTime<Utc>) -> String {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|w| {
            let status = match w.status {
                AgentStatus::Connected => "connected",
                AgentStatus::Disconnected => "disconnected",
            };
            let seen = if w.status == AgentStatus::Connected {
                "now".into()
            } else {
                ago(w.last_seen_at, now)
            };
            let relay = w
                .relay
                .as_ref()
                .map_or_else(|| "-".to_string(), |r| r.region_code.clone());
            [w.name.clone(), status.into(), seen, relay]
        })
        .collect();
    let header = ["NAME", "STATUS", "LAST SEEN", "RELAY"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Lists the caller's workspaces.
pub async fn list(g: &Globals, args: ListArgs) -> Result<()> {
    let list: Vec<Workspace> = g.client()?.get(route::WORKSPACES).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Table if list.is_empty() => {
            println!("You have no workspaces; create one with `tether create NAME`.")
        }
        Output::Table => print!("{}", table(&list, Utc::now())),
    }
    Ok(())
}

/// Deletes a workspace.
pub async fn delete(g: &Globals, args: DeleteArgs) -> Result<()> {
    let api = g.client()?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("deleting {} needs confirmation: pass --yes", args.name);
        }
        let answer = super::prompt(
            &format!("Delete workspace {}? Type its name to confirm", args.name),
            "--yes",
        )?;
        if answer != args.name {
            bail!("not deleted: the confirmation did not match");
        }
    }
    api.delete(&route::workspace(&args.name)?).await?;
    println!("Workspace {} deleted.", args.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::api::Relay;

    #[test]
    fn table_and_ago() {
        let now = Utc::now();
        assert_eq!(ago(None, now), "never");
        assert_eq!(
            ago(Some(now - chrono::Duration::seconds(200)), now),
            "3m ago"
        );
        let ws = |name: &str, status, seen, relay| Workspace {
            id: uuid::Uuid::nil(),
            name: name.into(),
            owner: "alice".into(),
            agent_id: uuid::Uuid::nil(),
            status,
            last_seen_at: seen,
            relay,
            created_at: now,
            agent_version: None,
            server_path: None,
        };
        let t = table(
            &[
                ws(
                    "dev",
                    AgentStatus::Connected,
                    Some(now),
                    Some(Relay {
                        region_id: 999,
                        region_code: "tether".into(),
                        region_name: "x".into(),
                    }),
                ),
                ws("old-box", AgentStatus::Disconnected, None, None),
            ],
            now,
        );
        assert_eq!(
            t,
            "NAME     STATUS        LAST SEEN  RELAY\ndev      connected     now        tether\nold-box  disconnected  never      -\n"
        );
    }
}
