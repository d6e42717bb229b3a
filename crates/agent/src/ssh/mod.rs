//! The agent's SSH server (russh), serving one connection at a time over any byte stream.
//!
//! Authentication accepts every method: the tailnet has already authenticated the peer,
//! as in Coder. Programs run as the agent's own user.

mod handler;
mod pipe;
mod process;
mod sftp;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::RngCore;
use russh::MethodKind;
use russh::keys::ssh_key::private::Ed25519Keypair;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

pub use russh::keys::{PrivateKey, PublicKey};
pub use stats::SshStats;

/// Channel window advertised to clients (16 MiB; russh's default of 2 MiB caps throughput).
pub const WINDOW_SIZE: u32 = 16 * 1024 * 1024;
/// Largest channel data packet we accept (128 KiB; russh reads packets up to 256 KiB).
pub const MAX_PACKET_SIZE: u32 = 128 * 1024;

/// Why an SSH connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The SSH protocol layer failed (bad peer, key exchange, transport I/O).
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// Local I/O failed.
    #[error("ssh: {0}")]
    Io(#[from] std::io::Error),
    /// A host key could not be made or encoded.
    #[error("ssh host key: {0}")]
    Key(String),
}

/// An SSH server with one host key; [`SshServer::serve`] handles one connection.
///
/// Cheap to share (`Arc` it); every connection gets its own handler state.
#[derive(Debug, Clone)]
pub struct SshServer {
    config: Arc<russh::server::Config>,
    user: Arc<crate::user::User>,
    host_key: PublicKey,
    counters: Arc<stats::Counters>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl SshServer {
    /// A server with a fresh in-memory ed25519 host key.
    ///
    /// # Errors
    /// Never in practice; kept fallible for key sources that can fail.
    pub fn new() -> Result<Self, SshError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        Ok(Self::with_host_key(key))
    }

    /// A server presenting `host_key`.
    pub fn with_host_key(host_key: PrivateKey) -> Self {
        let public = host_key.public_key().clone();
        let config = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-tether".into()),
            methods: russh::MethodSet::from(
                &[
                    MethodKind::None,
                    MethodKind::PublicKey,
                    MethodKind::Password,
                    MethodKind::KeyboardInteractive,
                ][..],
            ),
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            window_size: WINDOW_SIZE,
            maximum_packet_size: MAX_PACKET_SIZE,
            channel_buffer_size: 256,
            event_buffer_size: 64,
            // Interactive sessions may idle for hours; dead peers are found by keepalives.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        };
        Self {
            config: Arc::new(config),
            user: Arc::new(crate::user::User::current()),
            host_key: public,
            counters: Arc::default(),
        }
    }

    /// The host public key clients will see.
    pub fn host_public_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// Connections and session channels served so far and open now (shared by clones).
    pub fn stats(&self) -> SshStats {
        self.counters.read()
    }

    /// Serve one SSH connection on `stream` until the client disconnects.
    ///
    /// Everything the connection started (programs, forwards, agent sockets) is hung up
    /// when it ends.
    ///
    /// # Errors
    /// [`SshError`] when the handshake or the transport fails; a clean disconnect is `Ok`.
    pub async fn serve<S>(&self, stream: S) -> Result<(), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("ssh", conn);
        async move {
            tracing::debug!("ssh connection started");
            let _open = self.counters.connection();
            let handler =
                handler::ConnHandler::new(Arc::clone(&self.user), Arc::clone(&self.counters));
            let session =
                russh::server::run_stream(Arc::clone(&self.config), stream, handler).await?;
            let result = session.await;
            match result {
                Ok(()) => {
                    tracing::debug!("ssh connection closed");
                    Ok(())
                }
                Err(SshError::Ssh(russh::Error::Disconnect | russh::Error::HUP)) => {
                    tracing::debug!("ssh connection closed by peer");
                    Ok(())
                }
                Err(SshError::Ssh(russh::Error::IO(e)))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    tracing::debug!("ssh connection closed by peer");
                    Ok(())
                }
                Err(e) => {
                    tracing::info!(error = %e, "ssh connection failed");
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }
}
