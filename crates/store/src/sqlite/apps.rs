//! Queries on `workspace_apps`: the web apps declared on workspaces.

use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use super::{SqliteBackend, is_kind, now_micros};
use crate::{App, NewApp, StoreError};

const APP_COLUMNS: &str = "id, workspace_id, slug, display_name, url, subdomain, share, created_at";

impl SqliteBackend {
    pub(crate) async fn create_app(&self, new: NewApp) -> Result<App, StoreError> {
        let app = App {
            id: Uuid::new_v4(),
            workspace_id: new.workspace_id,
            slug: new.slug,
            display_name: new.display_name,
            url: new.url,
            subdomain: new.subdomain,
            share: new.share,
            created_at: now_micros(),
        };
        let inserted = sqlx::query(
            "INSERT INTO workspace_apps \
             (id, workspace_id, slug, display_name, url, subdomain, share, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(app.id)
        .bind(app.workspace_id)
        .bind(&app.slug)
        .bind(&app.display_name)
        .bind(&app.url)
        .bind(app.subdomain)
        .bind(&app.share)
        .bind(app.created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(app),
            Err(e) if is_kind(&e, ErrorKind::UniqueViolation) => Err(StoreError::Conflict(
                format!("the workspace already has an app named {}", app.slug),
            )),
            Err(e) if is_kind(&e, ErrorKind::ForeignKeyViolation) => Err(StoreError::NotFound(
                format!("no workspace with id {}", app.workspace_id),
            )),
            Err(e) => Err(self.err(e)),
        }
    }

    pub(crate) async fn apps_for_workspace(&self, workspace: Uuid) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM workspace_apps WHERE workspace_id = $1 ORDER BY slug"
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(app_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn app_by_slug(
        &self,
        workspace: Uuid,
        slug: &str,
    ) -> Result<Option<App>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM workspace_apps WHERE workspace_id = $1 AND slug = $2"
        ))
        .bind(workspace)
        .bind(slug)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(app_from_row)
            .transpose()
            .map_err(|e| self.err(e))
    }

    pub(crate) async fn delete_app(&self, workspace: Uuid, slug: &str) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM workspace_apps WHERE workspace_id = $1 AND slug = $2")
                .bind(workspace)
                .bind(slug)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
        Ok(deleted > 0)
    }
}

fn app_from_row(row: &SqliteRow) -> Result<App, sqlx::Error> {
    Ok(App {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        slug: row.try_get("slug")?,
        display_name: row.try_get("display_name")?,
        url: row.try_get("url")?,
        subdomain: row.try_get("subdomain")?,
        share: row.try_get("share")?,
        created_at: row.try_get("created_at")?,
    })
}
