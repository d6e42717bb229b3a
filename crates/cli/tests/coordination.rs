//! The coordinator through the real server: authorisation, node propagation, LOST on a
//! silent or vanished peer, DISCONNECTED, agent status in `tether list`, DERP map push.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_key::NodePrivate;
use tether_proto::coord::{Node, PeerUpdateKind, Request, Response};
use tether_testing::{CoordConn, TestServer, Tether, node_for, session_token, welcome};
use uuid::Uuid;

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// A node for peer `id` with a fresh key and home region `derp`.
fn node(id: Uuid, derp: u32) -> (Node, NodePrivate) {
    let key = NodePrivate::generate();
    (node_for(id, &key, derp), key)
}

fn is_update(r: &Response, id: Uuid, kind: PeerUpdateKind) -> bool {
    matches!(r, Response::PeerUpdates { updates } if updates.iter().any(|u| u.id == id && u.kind == kind))
}

#[tokio::test]
async fn tunnels_nodes_lost_and_status() {
    let srv = TestServer::start(&["--coordinator-lost-after", "1s"]);
    let alice = TETHER.first_user(&srv);
    let agent_token = TETHER.create_workspace(&alice, "dev");
    let out = TETHER.run(
        &alice,
        &[
            "users",
            "create",
            "--username",
            "bob",
            "--email",
            "b@example.com",
            "--password",
            "bobbobbob",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bob = srv.config_dir("bob");
    let out = TETHER.run(
        &bob,
        &[
            "login",
            &srv.url,
            "--username",
            "bob",
            "--password",
            "bobbobbob",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    let mut agent = CoordConn::agent(&srv.url, &agent_token).await.unwrap();
    let agent_id = welcome(&mut agent).await;
    let (agent_node, _) = node(agent_id, 999);
    agent
        .send(&Request::UpdateSelf {
            node: agent_node.clone(),
        })
        .await;

    // The workspace now shows as connected with its home relay (once the server has
    // processed the update; the coordinator does not acknowledge, so poll briefly).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = TETHER.run(&alice, &["list"]);
        let row: Vec<String> = list
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        if row == ["dev", "connected", "now", "tether"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never shown connected: {}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bob may not open a tunnel to Alice's agent; the refusal does not reveal it exists.
    let mut bob_c = CoordConn::client(&srv.url, &session_token(&bob))
        .await
        .unwrap();
    welcome(&mut bob_c).await;
    bob_c.send(&Request::AddTunnel { id: agent_id }).await;
    let refused = bob_c
        .expect("refusal", |r| matches!(r, Response::Error { .. }))
        .await;
    bob_c.send(&Request::AddTunnel { id: Uuid::new_v4() }).await;
    let unknown = bob_c
        .expect("refusal", |r| matches!(r, Response::Error { .. }))
        .await;
    let (Response::Error { message: a }, Response::Error { message: b }) = (&refused, &unknown)
    else {
        unreachable!()
    };
    assert_eq!(
        a.replace(&agent_id.to_string(), "ID"),
        b.split(' ')
            .map(|w| if Uuid::parse_str(w).is_ok() { "ID" } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Alice's client gets the agent's node; the agent gets the client's.
    let mut client = CoordConn::client(&srv.url, &session_token(&alice))
        .await
        .unwrap();
    let client_id = welcome(&mut client).await;
    let (client_node, _) = node(client_id, 999);
    client
        .send(&Request::UpdateSelf {
            node: client_node.clone(),
        })
        .await;
    client.send(&Request::AddTunnel { id: agent_id }).await;
    let got = client
        .expect("agent node", |r| {
            is_update(r, agent_id, PeerUpdateKind::Node)
        })
        .await;
    let Response::PeerUpdates { updates } = got else {
        unreachable!()
    };
    assert_eq!(
        updates
            .iter()
            .find(|u| u.id == agent_id)
            .unwrap()
            .node
            .as_ref(),
        Some(&agent_node)
    );
    agent
        .expect("client node", |r| {
            is_update(r, client_id, PeerUpdateKind::Node)
        })
        .await;
    agent
        .send(&Request::ReadyForHandshake { id: client_id })
        .await;
    // From here on the agent never reads (so never answers pings) and never writes.
    let silent_since = Instant::now();
    client
        .expect("ready", |r| {
            is_update(r, agent_id, PeerUpdateKind::ReadyForHandshake)
        })
        .await;
    // Bob saw none of it.
    assert!(bob_c.try_recv(Duration::from_millis(300)).await.is_none());

    // The silent agent is reported LOST within lost_after (1 s) + 1 s of timer slack.
    let lost = client
        .expect("LOST", |r| is_update(r, agent_id, PeerUpdateKind::Lost))
        .await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "LOST after {waited:?}: {lost:?}"
    );
    drop(agent);

    // Status flips to disconnected and keeps the relay it last had.
    let list = TETHER.run(&alice, &["list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v[0]["status"], "disconnected");
    assert_eq!(v[0]["relay"]["region_id"], 999);

    // A new agent connection gets the client's node at once; a clean disconnect is DISCONNECTED.
    let mut agent2 = CoordConn::agent(&srv.url, &agent_token).await.unwrap();
    welcome(&mut agent2).await;
    agent2
        .expect("client node again", |r| {
            is_update(r, client_id, PeerUpdateKind::Node)
        })
        .await;
    agent2
        .send(&Request::UpdateSelf {
            node: agent_node.clone(),
        })
        .await;
    client
        .expect("agent node again", |r| {
            is_update(r, agent_id, PeerUpdateKind::Node)
        })
        .await;
    agent2.send(&Request::Disconnect).await;
    client
        .expect("DISCONNECTED", |r| {
            is_update(r, agent_id, PeerUpdateKind::Disconnected)
        })
        .await;

    // An agent whose TCP connection just vanishes is LOST at once, not after the timeout.
    let mut agent3 = CoordConn::agent(&srv.url, &agent_token).await.unwrap();
    welcome(&mut agent3).await;
    agent3.send(&Request::UpdateSelf { node: agent_node }).await;
    client
        .expect("agent node third time", |r| {
            is_update(r, agent_id, PeerUpdateKind::Node)
        })
        .await;
    let dropped_at = Instant::now();
    drop(agent3);
    client
        .expect("LOST on drop", |r| {
            is_update(r, agent_id, PeerUpdateKind::Lost)
        })
        .await;
    assert!(
        dropped_at.elapsed() < Duration::from_millis(900),
        "took {:?}",
        dropped_at.elapsed()
    );

    // Deleting the workspace revokes the agent token.
    let out = TETHER.run(&alice, &["delete", "dev", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        CoordConn::agent(&srv.url, &agent_token)
            .await
            .err()
            .unwrap()
            .status,
        401
    );
}

/// Serves whatever JSON is in `body` over plain HTTP/1.1 on loopback.
fn map_server(body: Arc<Mutex<String>>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let b = body.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            );
        }
    });
    format!("http://{addr}/derpmap.json")
}

fn region_json(id: u32, code: &str) -> String {
    format!(
        r#"{{"Regions":{{"{id}":{{"RegionID":{id},"RegionCode":"{code}","RegionName":"Test {code}","Nodes":[{{"Name":"{id}a","RegionID":{id},"HostName":"127.0.0.1","DERPPort":1,"ForceHTTP":true}}]}}}}}}"#
    )
}

#[tokio::test]
async fn derp_map_url_is_merged_and_changes_are_pushed() {
    let body = Arc::new(Mutex::new(region_json(1, "one")));
    let url = map_server(body.clone());
    let srv = TestServer::start(&["--derp-config-url", &url, "--derp-config-refresh", "300ms"]);
    let alice = TETHER.first_user(&srv);
    let mut client = CoordConn::client(&srv.url, &session_token(&alice))
        .await
        .unwrap();
    welcome(&mut client).await;
    let Response::DerpMap { derp_map } = client.recv().await else {
        panic!("expected the DERP map")
    };
    assert_eq!(
        derp_map.regions.keys().copied().collect::<Vec<_>>(),
        vec![1, 999]
    );

    *body.lock().unwrap() = region_json(2, "two");
    let pushed = client
        .expect("pushed map", |r| matches!(r, Response::DerpMap { .. }))
        .await;
    let Response::DerpMap { derp_map } = pushed else {
        unreachable!()
    };
    assert_eq!(
        derp_map.regions.keys().copied().collect::<Vec<_>>(),
        vec![2, 999]
    );
    assert_eq!(derp_map.regions[&2].region_code, "two");

    // A broken refresh keeps the last good map and shows as a warning in health.
    *body.lock().unwrap() = "not json".into();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let h = srv.health(&session_token(&alice)).await;
    assert_eq!(h["derp"]["severity"], "warning", "{h}");
    assert_eq!(h["derp"]["code"], "EDERP02", "{h}");
    let m: serde_json::Value = reqwest::get(format!("{}/api/v2/derp-map", srv.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["Regions"]["2"]["RegionCode"], "two");
}

#[test]
fn derp_config_path_replaces_builtin_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map.json");
    std::fs::write(&path, region_json(5, "five")).unwrap();
    let srv = TestServer::start(&[
        "--derp-server-enable=false",
        "--derp-config-path",
        path.to_str().unwrap(),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{}/api/v2/derp-map", srv.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let regions: Vec<&String> = m["Regions"].as_object().unwrap().keys().collect();
    assert_eq!(regions, ["5"]);
    // The relay itself is off.
    let status = rt.block_on(async {
        reqwest::get(format!("{}/derp/probe", srv.url))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404);
}
