//! Tests of the SQLite store against real database files in a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tether_store::secret::{hash_token, new_token};
use tether_store::{NewUser, NewWorkspace, Store, StoreError, User};
use uuid::Uuid;

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tether.db")
}

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open_sqlite(&db_path(dir)).await.expect("open store")
}

fn new_user(username: &str) -> NewUser {
    NewUser {
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        password_hash: format!("$argon2id$fake-for-{username}"),
        is_admin: false,
    }
}

fn new_workspace(owner: &User, name: &str) -> (NewWorkspace, String) {
    let token = new_token();
    let ws = NewWorkspace {
        owner_id: owner.id,
        name: name.to_owned(),
        agent_id: Uuid::new_v4(),
        agent_token_hash: hash_token(&token),
    };
    (ws, token)
}

/// A second, raw connection to the same file, to observe what the API does not expose.
async fn raw(path: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn open_creates_the_file_in_wal_mode_and_ping_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/tether.db");
    let store = Store::open_sqlite(&path).await.expect("open");
    assert!(path.is_file());
    let rtt = store.ping().await.expect("ping");
    assert!(rtt < Duration::from_secs(5));

    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw(&path).await)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn create_user_and_look_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    assert_eq!(store.user_count().await.expect("count"), 0);

    let mut input = new_user("alice");
    input.is_admin = true;
    let alice = store.create_user(input).await.expect("create");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.email, "alice@example.com");
    assert!(alice.is_admin);
    assert_eq!(alice.password_hash, "$argon2id$fake-for-alice");
    assert_eq!(store.user_count().await.expect("count"), 1);

    assert_eq!(
        store.user_by_id(alice.id).await.expect("by id"),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_id(Uuid::new_v4()).await.expect("by id"), None);
    for login in ["alice", "ALICE", "alice@example.com", "Alice@Example.COM"] {
        assert_eq!(
            store.user_by_login(login).await.expect("by login"),
            Some(alice.clone()),
            "login {login}"
        );
    }
    assert_eq!(store.user_by_login("bob").await.expect("by login"), None);
}

#[tokio::test]
async fn duplicate_username_or_email_is_a_conflict_naming_the_clash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    store.create_user(new_user("alice")).await.expect("create");

    let mut same_name = new_user("Alice");
    same_name.email = "other@example.com".to_owned();
    match store.create_user(same_name).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "a user named Alice already exists"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut same_email = new_user("bob");
    same_email.email = "ALICE@example.com".to_owned();
    match store.create_user(same_email).await {
        Err(StoreError::Conflict(msg)) => {
            assert_eq!(msg, "a user with email ALICE@example.com already exists")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.user_count().await.expect("count"), 1);
}

#[tokio::test]
async fn login_prefers_a_username_match_over_an_email_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let mut carol = new_user("carol");
    carol.email = "dave".to_owned();
    store.create_user(carol).await.expect("create carol");
    let dave = store
        .create_user(new_user("dave"))
        .await
        .expect("create dave");
    assert_eq!(
        store.user_by_login("dave").await.expect("login"),
        Some(dave)
    );
}

/// A session's recorded last use, read straight from the database.
async fn last_used(dir: &tempfile::TempDir, hash: [u8; 32]) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT last_used_at FROM sessions WHERE token_hash = $1")
        .bind(&hash[..])
        .fetch_one(&raw(&db_path(dir)).await)
        .await
        .expect("last_used_at")
}

#[tokio::test]
async fn sessions_resolve_until_expiry_and_bump_last_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("create");
    let hash = hash_token(&new_token());
    let now = Utc::now();
    let expires = now + TimeDelta::hours(1);
    store
        .create_session(alice.id, hash, expires)
        .await
        .expect("session");

    let later = now + TimeDelta::minutes(30);
    assert_eq!(
        store.session_user(hash, later).await.expect("lookup"),
        Some(alice.clone())
    );
    assert_eq!(last_used(&dir, hash).await, later);
    // Within a minute of the last recorded use, a lookup is a read only.
    store
        .session_user(hash, later + TimeDelta::seconds(59))
        .await
        .expect("lookup");
    assert_eq!(last_used(&dir, hash).await, later);

    assert_eq!(
        store.session_user(hash, expires).await.expect("lookup"),
        None
    );
    assert_eq!(
        store
            .session_user(hash, expires + TimeDelta::days(1))
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store
            .session_user(hash_token("unknown"), now)
            .await
            .expect("lookup"),
        None
    );

    store.delete_session(hash).await.expect("delete");
    assert_eq!(store.session_user(hash, now).await.expect("lookup"), None);
    store
        .delete_session(hash)
        .await
        .expect("deleting twice is fine");
}

#[tokio::test]
async fn session_for_unknown_user_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let ghost = Uuid::new_v4();
    match store
        .create_session(ghost, hash_token("t"), Utc::now())
        .await
    {
        Err(StoreError::NotFound(msg)) => assert_eq!(msg, format!("no user with id {ghost}")),
        other => panic!("expected not found, got {other:?}"),
    }
}

#[tokio::test]
async fn delete_expired_sessions_keeps_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("create");
    let now = Utc::now();
    let (old, live) = (hash_token("old"), hash_token("live"));
    store
        .create_session(alice.id, old, now - TimeDelta::seconds(1))
        .await
        .expect("old");
    store
        .create_session(alice.id, live, now + TimeDelta::hours(1))
        .await
        .expect("live");

    assert_eq!(store.delete_expired_sessions(now).await.expect("sweep"), 1);
    assert_eq!(
        store.session_user(live, now).await.expect("lookup"),
        Some(alice)
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&raw(&db_path(&dir)).await)
        .await
        .expect("count");
    assert_eq!(left, 1);
}

#[tokio::test]
async fn workspaces_are_listed_found_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("alice");
    let bob = store.create_user(new_user("bob")).await.expect("bob");

    let (zeta_in, _) = new_workspace(&alice, "zeta");
    let (alpha_in, alpha_token) = new_workspace(&alice, "alpha");
    let (bob_in, _) = new_workspace(&bob, "alpha");
    let zeta = store.create_workspace(zeta_in.clone()).await.expect("zeta");
    let alpha = store
        .create_workspace(alpha_in.clone())
        .await
        .expect("alpha");
    let bobs = store.create_workspace(bob_in).await.expect("bob's alpha");

    assert_eq!(alpha.owner_id, alice.id);
    assert_eq!(alpha.owner_username, "alice");
    assert_eq!(alpha.name, "alpha");
    assert_eq!(alpha.agent_id, alpha_in.agent_id);
    assert_eq!((alpha.last_seen_at, alpha.last_relay), (None, None));

    let names = |list: Vec<tether_store::Workspace>| {
        list.into_iter()
            .map(|w| format!("{}/{}", w.owner_username, w.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.workspaces_for_owner(alice.id).await.expect("list")),
        ["alice/alpha", "alice/zeta"]
    );
    assert_eq!(
        names(store.all_workspaces().await.expect("all")),
        ["alice/alpha", "alice/zeta", "bob/alpha"]
    );
    assert!(
        store
            .workspaces_for_owner(Uuid::new_v4())
            .await
            .expect("list")
            .is_empty()
    );

    assert_eq!(
        store
            .workspace_by_name(alice.id, "alpha")
            .await
            .expect("by name"),
        Some(alpha.clone())
    );
    assert_eq!(
        store
            .workspace_by_name(bob.id, "alpha")
            .await
            .expect("by name"),
        Some(bobs)
    );
    assert_eq!(
        store
            .workspace_by_name(bob.id, "zeta")
            .await
            .expect("by name"),
        None
    );
    assert_eq!(
        store
            .workspace_by_agent_token(hash_token(&alpha_token))
            .await
            .expect("by token"),
        Some(alpha.clone())
    );
    assert_eq!(
        store
            .workspace_by_agent_token(hash_token("wrong"))
            .await
            .expect("by token"),
        None
    );

    assert!(store.delete_workspace(zeta.id).await.expect("delete"));
    assert!(!store.delete_workspace(zeta.id).await.expect("delete again"));
    assert_eq!(
        store
            .workspace_by_name(alice.id, "zeta")
            .await
            .expect("by name"),
        None
    );
    assert_eq!(store.all_workspaces().await.expect("all").len(), 2);
}

#[tokio::test]
async fn workspace_conflicts_and_unknown_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("alice");
    let (first, _) = new_workspace(&alice, "dev");
    store.create_workspace(first.clone()).await.expect("first");

    let (again, _) = new_workspace(&alice, "dev");
    match store.create_workspace(again).await {
        Err(StoreError::Conflict(msg)) => {
            assert_eq!(msg, "alice already has a workspace named dev")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut same_agent = first.clone();
    same_agent.name = "other".to_owned();
    assert!(matches!(
        store.create_workspace(same_agent).await,
        Err(StoreError::Conflict(msg)) if msg.contains(&first.agent_id.to_string())
    ));

    let ghost = Uuid::new_v4();
    let mut orphan = new_workspace(&alice, "orphan").0;
    orphan.owner_id = ghost;
    match store.create_workspace(orphan).await {
        Err(StoreError::NotFound(msg)) => assert_eq!(msg, format!("no user with id {ghost}")),
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(store.all_workspaces().await.expect("all").len(), 1);
}

#[tokio::test]
async fn record_agent_seen_updates_last_seen_and_relay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("alice");
    let (input, _) = new_workspace(&alice, "dev");
    store.create_workspace(input.clone()).await.expect("create");

    let at = Utc::now();
    store
        .record_agent_seen(input.agent_id, at, Some(900))
        .await
        .expect("seen");
    let ws = store
        .workspace_by_name(alice.id, "dev")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((ws.last_seen_at, ws.last_relay), (Some(at), Some(900)));

    let later = at + TimeDelta::seconds(10);
    store
        .record_agent_seen(input.agent_id, later, None)
        .await
        .expect("seen");
    let ws = store
        .workspace_by_name(alice.id, "dev")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((ws.last_seen_at, ws.last_relay), (Some(later), None));

    store
        .record_agent_seen(Uuid::new_v4(), at, Some(1))
        .await
        .expect("unknown agents are ignored");
}

#[tokio::test]
async fn config_first_writer_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    assert_eq!(store.config_value("derp_key").await.expect("get"), None);
    assert_eq!(
        store
            .config_value_or_insert("derp_key", "one")
            .await
            .expect("insert"),
        "one"
    );
    assert_eq!(
        store
            .config_value_or_insert("derp_key", "two")
            .await
            .expect("insert"),
        "one"
    );
    assert_eq!(
        store
            .config_value("derp_key")
            .await
            .expect("get")
            .as_deref(),
        Some("one")
    );
    assert_eq!(store.config_value("other").await.expect("get"), None);
}

// Several runtime threads and pooled connections, so the inserts really race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_config_value_or_insert_agrees_on_one_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .config_value_or_insert("key", &format!("value-{i}"))
                .await
        });
    }
    let mut seen = Vec::new();
    while let Some(result) = tasks.join_next().await {
        seen.push(result.expect("task").expect("insert"));
    }
    assert_eq!(seen.len(), 32);
    let winner = seen[0].clone();
    assert!(winner.starts_with("value-"));
    assert!(seen.iter().all(|v| *v == winner), "disagreement: {seen:?}");
    assert_eq!(store.config_value("key").await.expect("get"), Some(winner));
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("alice");
    let session = hash_token("session");
    let expires = Utc::now() + TimeDelta::days(1);
    store
        .create_session(alice.id, session, expires)
        .await
        .expect("session");
    let (input, token) = new_workspace(&alice, "dev");
    let ws = store.create_workspace(input).await.expect("workspace");
    store
        .config_value_or_insert("k", "v")
        .await
        .expect("config");
    store.close().await;
    drop(store);

    let store = open(&dir).await;
    assert_eq!(store.user_count().await.expect("count"), 1);
    assert_eq!(
        store.user_by_id(alice.id).await.expect("user"),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .session_user(session, Utc::now())
            .await
            .expect("session"),
        Some(alice)
    );
    assert_eq!(
        store
            .workspace_by_agent_token(hash_token(&token))
            .await
            .expect("ws"),
        Some(ws)
    );
    assert_eq!(
        store.config_value("k").await.expect("config").as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn only_token_hashes_reach_the_database_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let alice = store.create_user(new_user("alice")).await.expect("alice");
    let session_token = new_token();
    store
        .create_session(
            alice.id,
            hash_token(&session_token),
            Utc::now() + TimeDelta::hours(1),
        )
        .await
        .expect("session");
    let (input, agent_token) = new_workspace(&alice, "dev");
    store.create_workspace(input).await.expect("workspace");
    store.close().await;

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("list dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for token in [&session_token, &agent_token] {
        assert!(
            !contains(token.as_bytes()),
            "raw token found in the database"
        );
        // The scan itself works: the hash is there.
        assert!(
            contains(&hash_token(token)),
            "token hash missing from the database"
        );
    }
}

#[tokio::test]
async fn opening_under_a_regular_file_is_unavailable_with_path_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let path = file.join("tether.db");
    match Store::open_sqlite(&path).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(
                msg.contains(&path.display().to_string()),
                "no path in: {msg}"
            );
            assert!(
                msg.to_lowercase().contains("not a directory"),
                "no reason in: {msg}"
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn opening_a_file_that_is_not_a_database_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    std::fs::write(&path, vec![0xa5u8; 8192]).expect("write");
    match Store::open_sqlite(&path).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(
                msg.contains(&path.display().to_string()),
                "no path in: {msg}"
            );
            assert!(msg.contains("not a database"), "no reason in: {msg}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_after_close_are_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    store.close().await;
    match store.ping().await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("closed"), "{msg}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_blocked_by_another_writer_is_unavailable_after_the_busy_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let mut other = raw(&db_path(&dir)).await.acquire().await.expect("conn");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *other)
        .await
        .expect("lock");

    match store.create_user(new_user("alice")).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("tether.db") && msg.contains("locked"), "{msg}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    sqlx::query("ROLLBACK")
        .execute(&mut *other)
        .await
        .expect("unlock");
    store
        .create_user(new_user("alice"))
        .await
        .expect("works once unlocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_simultaneous_first_users_exactly_one_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_first_user(new_user(&format!("admin{i}")))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.expect("join").expect("insert").is_some());
    }
    assert_eq!(created, 1);
    assert_eq!(store.user_count().await.expect("count"), 1);
    // Later calls change nothing either; an ordinary create still works.
    assert!(
        store
            .create_first_user(new_user("late"))
            .await
            .expect("insert")
            .is_none()
    );
    store
        .create_user(new_user("second"))
        .await
        .expect("second user");
    assert_eq!(store.user_count().await.expect("count"), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("tether.db");
    let store = Store::open_sqlite(&db).await.expect("open");
    store.create_user(new_user("alice")).await.expect("write");
    assert_eq!(mode(&data), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(
            mode(&data.join(format!("tether.db{suffix}"))),
            0o600,
            "{suffix}"
        );
    }
}
