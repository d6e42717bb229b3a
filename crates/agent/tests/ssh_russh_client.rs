//! The server over a non-TCP byte stream (an in-memory duplex), driven by russh's client:
//! what OpenSSH's CLI cannot send (`signal`) or hides (`exit-signal`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Sig};
use tether_agent::SshServer;

struct AcceptAny;

impl russh::client::Handler for AcceptAny {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn connect() -> russh::client::Handle<AcceptAny> {
    tether_testing::init_tracing_with("warn");
    let server = SshServer::new().unwrap();
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move { server.serve(server_end).await });
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect_stream(config, client_end, AcceptAny)
        .await
        .unwrap();
    let auth = handle.authenticate_none("anyone").await.unwrap();
    assert!(matches!(auth, russh::client::AuthResult::Success));
    handle
}

/// Collect stdout and the exit report of a channel (bounded).
async fn finish(mut ch: russh::Channel<russh::client::Msg>) -> (Vec<u8>, Option<u32>, Option<Sig>) {
    let (mut out, mut status, mut signal) = (Vec::new(), None, None);
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    })
    .await
    .expect("channel did not finish");
    (out, status, signal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_in_memory_stream() {
    let handle = connect().await;
    let ch = handle.channel_open_session().await.unwrap();
    ch.exec(true, "echo over-duplex; exit 5").await.unwrap();
    let (out, status, signal) = finish(ch).await;
    assert_eq!(out, b"over-duplex\n");
    assert_eq!(status, Some(5));
    assert!(signal.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_request_reaches_the_process() {
    let handle = connect().await;
    let ch = handle.channel_open_session().await.unwrap();
    // `exec` so the signal hits `sleep` itself, not a shell waiting for it.
    ch.exec(true, "echo started; exec sleep 30").await.unwrap();
    let mut ch = ch;
    // Wait for the process to run before signalling it.
    let started = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ch.wait().await {
            if let ChannelMsg::Data { data } = msg
                && data.starts_with(b"started")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(started);
    ch.signal(Sig::TERM).await.unwrap();
    let began = std::time::Instant::now();
    let (_, status, signal) = finish(ch).await;
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(matches!(signal, Some(Sig::TERM)), "{signal:?}");
    assert_eq!(status, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_signal_reported_for_killed_process() {
    let handle = connect().await;
    let ch = handle.channel_open_session().await.unwrap();
    ch.exec(true, "kill -KILL $$").await.unwrap();
    let (_, status, signal) = finish(ch).await;
    assert!(matches!(signal, Some(Sig::KILL)), "{signal:?}");
    assert_eq!(status, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_channel_hangs_up_the_program() {
    let handle = connect().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("hup");
    let ch = handle.channel_open_session().await.unwrap();
    let script = format!(
        "trap 'echo hup > {}; exit 0' HUP; echo ready; while :; do sleep 0.1; done",
        marker.display()
    );
    ch.exec(true, script).await.unwrap();
    let mut ch = ch;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ch.wait().await {
            if matches!(msg, ChannelMsg::Data { .. }) {
                break;
            }
        }
    })
    .await
    .unwrap();
    ch.close().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "program was not hung up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
