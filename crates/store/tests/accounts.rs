//! User administration in the SQLite store: status, listing, deletion, the last-admin
//! and workspace guards, and a user's sessions.

use chrono::{TimeDelta, Utc};
use tether_store::secret::{hash_token, new_token};
use tether_store::{NewUser, NewWorkspace, Store, UserChange, UserStatus, session_id};
use uuid::Uuid;

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open_sqlite(&dir.path().join("tether.db"))
        .await
        .expect("open store")
}

fn new_user(username: &str, is_admin: bool) -> NewUser {
    NewUser {
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        password_hash: format!("$argon2id$fake-for-{username}"),
        is_admin,
    }
}

#[tokio::test]
async fn users_are_listed_by_name_and_start_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    for name in ["carol", "Alice", "bob"] {
        store
            .create_user(new_user(name, false))
            .await
            .expect("create");
    }
    let names: Vec<String> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| {
            assert_eq!(u.status, UserStatus::Active);
            u.username
        })
        .collect();
    assert_eq!(names, ["Alice", "bob", "carol"]);
}

#[tokio::test]
async fn a_suspended_user_has_no_valid_session_until_activated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let _admin = store
        .create_user(new_user("alice", true))
        .await
        .expect("admin");
    let bob = store
        .create_user(new_user("bob", false))
        .await
        .expect("bob");
    let now = Utc::now();
    let hash = hash_token(&new_token());
    store
        .create_session(bob.id, hash, now + TimeDelta::hours(1))
        .await
        .expect("session");
    let (user, session) = store
        .session(hash, now)
        .await
        .expect("lookup")
        .expect("live");
    assert_eq!(user.id, bob.id);
    assert_eq!(session.id(), session_id(&hash));
    assert_eq!(session.id().len(), 16);

    let UserChange::Done(suspended) = store
        .set_user_status(bob.id, UserStatus::Suspended)
        .await
        .expect("suspend")
    else {
        panic!("suspending bob was refused");
    };
    assert_eq!(suspended.status, UserStatus::Suspended);
    // Even a session that was not deleted does not let a suspended user in.
    assert_eq!(store.session_user(hash, now).await.expect("lookup"), None);
    let UserChange::Done(active) = store
        .set_user_status(bob.id, UserStatus::Active)
        .await
        .expect("activate")
    else {
        panic!("activating bob was refused");
    };
    assert_eq!(active.status, UserStatus::Active);
    assert!(
        store
            .session_user(hash, now)
            .await
            .expect("lookup")
            .is_some()
    );
    assert_eq!(
        store
            .set_user_status(Uuid::new_v4(), UserStatus::Suspended)
            .await
            .expect("unknown"),
        UserChange::NotFound
    );
}

#[tokio::test]
async fn the_last_active_admin_can_be_neither_suspended_nor_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store
        .create_user(new_user("alice", true))
        .await
        .expect("alice");
    let root = store
        .create_user(new_user("root", true))
        .await
        .expect("root");
    // Two admins: one may go.
    assert!(matches!(
        store
            .set_user_status(root.id, UserStatus::Suspended)
            .await
            .expect("suspend root"),
        UserChange::Done(_)
    ));
    // Now alice is the only active admin.
    assert_eq!(
        store
            .set_user_status(alice.id, UserStatus::Suspended)
            .await
            .expect("suspend alice"),
        UserChange::LastAdmin
    );
    assert_eq!(
        store.delete_user(alice.id).await.expect("delete alice"),
        UserChange::LastAdmin
    );
    let still = store
        .user_by_id(alice.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(still.status, UserStatus::Active);
    // A suspended admin is no admin to keep: root may be deleted.
    assert!(matches!(
        store.delete_user(root.id).await.expect("delete root"),
        UserChange::Done(_)
    ));
}

#[tokio::test]
async fn deleting_a_user_takes_their_sessions_and_refuses_while_they_own_workspaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let _admin = store
        .create_user(new_user("alice", true))
        .await
        .expect("admin");
    let bob = store
        .create_user(new_user("bob", false))
        .await
        .expect("bob");
    let now = Utc::now();
    let hashes: Vec<[u8; 32]> = (0..2).map(|_| hash_token(&new_token())).collect();
    for h in &hashes {
        store
            .create_session(bob.id, *h, now + TimeDelta::hours(1))
            .await
            .expect("session");
    }
    assert_eq!(
        store
            .sessions_for_user(bob.id, now)
            .await
            .expect("list")
            .len(),
        2
    );
    let ws = store
        .create_workspace(NewWorkspace {
            owner_id: bob.id,
            name: "dev".into(),
            agent_id: Uuid::new_v4(),
            agent_token_hash: hash_token(&new_token()),
        })
        .await
        .expect("workspace");
    assert_eq!(
        store.delete_user(bob.id).await.expect("delete"),
        UserChange::HasWorkspaces(1)
    );
    assert!(store.user_by_id(bob.id).await.expect("read").is_some());
    assert!(store.delete_workspace(ws.id).await.expect("delete ws"));
    let UserChange::Done(gone) = store.delete_user(bob.id).await.expect("delete") else {
        panic!("deleting bob was refused");
    };
    assert_eq!(gone.username, "bob");
    assert!(store.user_by_id(bob.id).await.expect("read").is_none());
    for h in hashes {
        assert_eq!(store.session(h, now).await.expect("lookup"), None);
    }
    assert_eq!(
        store.delete_user(bob.id).await.expect("again"),
        UserChange::NotFound
    );
}

#[tokio::test]
async fn a_users_sessions_are_listed_newest_first_without_expired_ones_and_deleted_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let bob = store
        .create_user(new_user("bob", false))
        .await
        .expect("bob");
    let other = store
        .create_user(new_user("carol", false))
        .await
        .expect("carol");
    let now = Utc::now();
    let live = hash_token(&new_token());
    let expired = hash_token(&new_token());
    let carols = hash_token(&new_token());
    store
        .create_session(bob.id, expired, now + TimeDelta::seconds(1))
        .await
        .expect("session");
    store
        .create_session(bob.id, live, now + TimeDelta::hours(1))
        .await
        .expect("session");
    store
        .create_session(other.id, carols, now + TimeDelta::hours(1))
        .await
        .expect("session");
    let later = now + TimeDelta::seconds(2);
    let listed = store.sessions_for_user(bob.id, later).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].token_hash, live);
    assert_eq!(listed[0].user_id, bob.id);
    assert_eq!(store.delete_user_sessions(bob.id).await.expect("delete"), 2);
    assert_eq!(store.session(live, now).await.expect("lookup"), None);
    assert!(store.session(carols, now).await.expect("lookup").is_some());
}
