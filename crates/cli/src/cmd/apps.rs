//! `tether apps add|list|rm`: a workspace's declared web apps.

use anyhow::Result;
use tether_proto::api::{App, AppShare, CreateAppRequest, route};

use super::workspaces::Output;
use crate::Globals;

/// `tether apps` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AppsCommand {
    /// Declare an app listening inside a workspace.
    Add(AddArgs),
    /// List a workspace's apps.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Remove an app.
    Rm(RmArgs),
}

/// Who may open an app (`--share`).
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum Share {
    /// Only the workspace's owner.
    #[default]
    Owner,
    /// Any logged-in user.
    Authenticated,
    /// Anyone, without logging in.
    Public,
}

impl From<Share> for AppShare {
    fn from(s: Share) -> Self {
        match s {
            Share::Owner => AppShare::Owner,
            Share::Authenticated => AppShare::Authenticated,
            Share::Public => AppShare::Public,
        }
    }
}

/// `tether apps add` flags.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Workspace name (an admin may write `owner/workspace`).
    pub workspace: String,
    /// URL slug (lowercase letters, digits, hyphens).
    pub slug: String,
    /// Where the app listens inside the workspace, e.g. http://127.0.0.1:8080. (It
    /// shares its name with the global server `--url`, so here the server comes from
    /// `TETHER_URL` or the stored login.)
    #[arg(long)]
    pub url: url::Url,
    /// Serve it on its own subdomain instead of under a path.
    #[arg(long)]
    pub subdomain: bool,
    /// Who may open it.
    #[arg(long, value_enum, default_value_t)]
    pub share: Share,
    /// What the dashboard calls it (default: the slug).
    #[arg(long, default_value = "")]
    pub name: String,
}

/// `tether apps list` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Workspace name.
    pub workspace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `tether apps rm` flags.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Workspace name.
    pub workspace: String,
    /// The app's slug.
    pub slug: String,
}

/// Runs an `apps` subcommand.
pub async fn run(g: &Globals, cmd: AppsCommand) -> Result<()> {
    let api = g.client()?;
    match cmd {
        AppsCommand::Add(a) => {
            let app: App = api
                .post(
                    &route::workspace_apps(&a.workspace)?,
                    &CreateAppRequest {
                        slug: a.slug,
                        url: a.url.to_string(),
                        display_name: a.name,
                        subdomain: a.subdomain,
                        share: a.share.into(),
                    },
                )
                .await?;
            println!("App {} added to workspace {}.", app.slug, a.workspace);
            if let Some(u) = app.open_url {
                println!("Open it at {u}");
            }
        }
        AppsCommand::List(a) => {
            let apps: Vec<App> = api.get(&route::workspace_apps(&a.workspace)?).await?;
            match a.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&apps)?),
                Output::Table if apps.is_empty() => println!(
                    "Workspace {} has no apps; add one with `tether apps add {} SLUG --url http://127.0.0.1:PORT`.",
                    a.workspace, a.workspace
                ),
                Output::Table => print!("{}", table_of(&apps)),
            }
        }
        AppsCommand::Rm(a) => {
            api.delete(&route::workspace_app(&a.workspace, &a.slug)?)
                .await?;
            println!("App {} removed from workspace {}.", a.slug, a.workspace);
        }
    }
    Ok(())
}

/// The apps as aligned columns: slug, name, URL, kind, share, where to open it.
fn table_of(apps: &[App]) -> String {
    let rows: Vec<[String; 6]> =
        std::iter::once(["SLUG", "NAME", "URL", "KIND", "SHARE", "OPEN"].map(String::from))
            .chain(apps.iter().map(|a| {
                [
                    a.slug.clone(),
                    a.display_name.clone(),
                    a.url.clone(),
                    if a.subdomain { "subdomain" } else { "path" }.into(),
                    a.share.as_str().into(),
                    a.open_url.clone().unwrap_or_else(|| "-".into()),
                ]
            }))
            .collect();
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in rows {
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
