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
    /// Columns of the table, comma-separated (repeatable): name, owner, status,
    /// last-seen, relay, created-at.
    #[arg(
        short = 'c',
        long = "column",
        value_delimiter = ',',
        value_parser = Column::parse,
        default_value = "name,status,last-seen,relay"
    )]
    pub columns: Vec<Column>,
}

/// A column of `tether list`'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The workspace's name.
    Name,
    /// Its owner's username.
    Owner,
    /// Whether its agent is connected.
    Status,
    /// When its agent was last seen.
    LastSeen,
    /// The agent's home DERP region.
    Relay,
    /// When it was created.
    CreatedAt,
}

impl Column {
    /// Every column, in the order `--help` and errors list them.
    pub const ALL: [Column; 6] = [
        Self::Name,
        Self::Owner,
        Self::Status,
        Self::LastSeen,
        Self::Relay,
        Self::CreatedAt,
    ];

    /// The name `-c` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Owner => "owner",
            Self::Status => "status",
            Self::LastSeen => "last-seen",
            Self::Relay => "relay",
            Self::CreatedAt => "created-at",
        }
    }

    /// The table's header cell.
    fn header(self) -> &'static str {
        match self {
            Self::Name => "NAME",
            Self::Owner => "OWNER",
            Self::Status => "STATUS",
            Self::LastSeen => "LAST SEEN",
            Self::Relay => "RELAY",
            Self::CreatedAt => "CREATED AT",
        }
    }

    /// A `-c` name, in any case, with `-`, `_` or a space between words (the header's
    /// spelling `last seen` works too).
    pub fn parse(s: &str) -> Result<Self, String> {
        let want = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Self::ALL
            .into_iter()
            .find(|c| c.name() == want)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!(
                    "there is no column {s:?}; the valid columns are {}",
                    valid.join(", ")
                )
            })
    }

    fn cell(self, w: &Workspace, now: DateTime<Utc>) -> String {
        match self {
            Self::Name => w.name.clone(),
            Self::Owner => w.owner.clone(),
            Self::Status => match w.status {
                AgentStatus::Connected => "connected".into(),
                AgentStatus::Disconnected => "disconnected".into(),
            },
            Self::LastSeen if w.status == AgentStatus::Connected => "now".into(),
            Self::LastSeen => ago(w.last_seen_at, now),
            Self::Relay => w
                .relay
                .as_ref()
                .map_or_else(|| "-".to_string(), |r| r.region_code.clone()),
            Self::CreatedAt => w.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }
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
    // The token goes in the environment, never on the agent's command line, where `ps`
    // would show it to every user of the workspace.
    println!(
        "  TETHER_AGENT_TOKEN={} tether agent --url {url}\n",
        resp.agent_token
    );
    println!("(or put the token in a file only you can read and pass `--token-file FILE`)");
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

/// Renders the workspace table with `columns`, in that order.
pub fn table_of(list: &[Workspace], now: DateTime<Utc>, columns: &[Column]) -> String {
    let header: Vec<String> = columns.iter().map(|c| c.header().to_string()).collect();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| columns.iter().map(|c| c.cell(w, now)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
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
        Output::Table => print!("{}", table_of(&list, Utc::now(), &args.columns)),
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
        let t = table_of(
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
            &[
                Column::Name,
                Column::Status,
                Column::LastSeen,
                Column::Relay,
            ],
        );
        assert_eq!(
            t,
            "NAME     STATUS        LAST SEEN  RELAY\ndev      connected     now        tether\nold-box  disconnected  never      -\n"
        );
    }

    #[test]
    fn columns_parse_and_choose_the_table() {
        assert_eq!(Column::parse("last-seen"), Ok(Column::LastSeen));
        assert_eq!(Column::parse("LAST SEEN"), Ok(Column::LastSeen));
        assert_eq!(Column::parse(" created_at "), Ok(Column::CreatedAt));
        assert_eq!(
            Column::parse("template"),
            Err("there is no column \"template\"; the valid columns are name, owner, status, last-seen, relay, created-at".into())
        );
        let now = Utc::now();
        let w = Workspace {
            id: uuid::Uuid::nil(),
            name: "dev".into(),
            owner: "alice".into(),
            agent_id: uuid::Uuid::nil(),
            status: AgentStatus::Disconnected,
            last_seen_at: Some(now - chrono::Duration::seconds(50)),
            relay: None,
            created_at: chrono::DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .expect("time")
                .with_timezone(&Utc),
            agent_version: None,
            server_path: None,
        };
        assert_eq!(
            table_of(
                &[w],
                now,
                &[
                    Column::Relay,
                    Column::Owner,
                    Column::LastSeen,
                    Column::CreatedAt
                ]
            ),
            "RELAY  OWNER  LAST SEEN  CREATED AT\n-      alice  50s ago    2025-01-02 03:04:05 UTC\n"
        );
    }
}
