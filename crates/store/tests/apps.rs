//! The store's web apps: create, list, look up, delete, uniqueness, cascade.

use tether_store::secret::{hash_token, new_token};
use tether_store::{NewApp, NewUser, NewWorkspace, Store, StoreError};
use uuid::Uuid;

fn app(workspace_id: Uuid, slug: &str) -> NewApp {
    NewApp {
        workspace_id,
        slug: slug.into(),
        display_name: format!("App {slug}"),
        url: "http://127.0.0.1:8080".into(),
        subdomain: false,
        share: "owner".into(),
    }
}

#[tokio::test]
async fn apps_are_per_workspace_unique_and_go_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_sqlite(&dir.path().join("t.db"))
        .await
        .expect("open");
    let user = store
        .create_user(NewUser {
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$fake".into(),
            is_admin: false,
        })
        .await
        .expect("user");
    let ws = store
        .create_workspace(NewWorkspace {
            owner_id: user.id,
            name: "dev".into(),
            agent_id: Uuid::new_v4(),
            agent_token_hash: hash_token(&new_token()),
        })
        .await
        .expect("workspace");

    let code = store.create_app(app(ws.id, "code")).await.expect("code");
    let mut jup = app(ws.id, "jupyter");
    jup.subdomain = true;
    jup.share = "public".into();
    let jup = store.create_app(jup).await.expect("jupyter");
    assert_eq!(
        store.apps_for_workspace(ws.id).await.expect("list"),
        vec![code.clone(), jup.clone()]
    );
    assert_eq!(
        store.app_by_slug(ws.id, "jupyter").await.expect("get"),
        Some(jup)
    );
    match store.create_app(app(ws.id, "code")).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("code"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.create_app(app(Uuid::new_v4(), "code")).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected not found, got {other:?}"),
    }

    assert!(store.delete_app(ws.id, "code").await.expect("delete"));
    assert!(!store.delete_app(ws.id, "code").await.expect("delete again"));
    assert_eq!(store.app_by_slug(ws.id, "code").await.expect("get"), None);

    assert!(store.delete_workspace(ws.id).await.expect("delete ws"));
    assert!(
        store
            .apps_for_workspace(ws.id)
            .await
            .expect("list")
            .is_empty()
    );
}
