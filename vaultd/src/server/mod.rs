//! The front door: accept on the Unix socket, identify the peer, frame,
//! pipeline, push back, shut down gracefully. Knows nothing of cards: each
//! request body goes to [`Handler::handle`] and its framed answer comes back.
//! Per-uid limits (`quota`) keep one uid from starving the others.

mod connection;
mod quota;
mod read_ahead;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::Peer;
use quota::Bucket;

/// What the server hands requests to.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: Peer, body: &[u8]) -> impl Future<Output = Vec<u8>> + Send;
    /// Whether `uid` is a configured client. Unknown uids share one
    /// connection allowance, and an unknown uid's connection is closed
    /// once its first request is answered (`unauthenticated`).
    fn knows(&self, uid: u32) -> bool;
    /// Called once when serving has ended: write out what the handler
    /// holds back (coalesced refusal counts).
    fn finish(&self) -> impl Future<Output = ()> + Send;
}

impl<S: crate::store::Store, H: vault_hsm::Hsm> Handler for crate::dispatch::Dispatcher<S, H> {
    fn handle(&self, peer: Peer, body: &[u8]) -> impl Future<Output = Vec<u8>> + Send {
        crate::dispatch::Dispatcher::handle(self, peer, body)
    }
    fn knows(&self, uid: u32) -> bool {
        self.clients().get(uid).is_some()
    }
    fn finish(&self) -> impl Future<Output = ()> + Send {
        self.flush_refusals()
    }
}

pub use crate::config::UID_SHARE_OF_BUFFER;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub max_in_flight_per_uid: usize,
    pub max_buffered_bytes: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn from_config(s: &crate::config::Server) -> Limits {
        Limits {
            max_frame: s.max_frame,
            max_in_flight: s.max_in_flight,
            max_connections: s.max_connections,
            max_connections_per_uid: s.max_connections_per_uid,
            max_in_flight_per_uid: s.max_in_flight_per_uid,
            max_buffered_bytes: s.max_buffered_bytes,
            idle_timeout: s.idle_timeout.0,
            frame_timeout: s.frame_timeout.0,
            shutdown_grace: s.shutdown_grace.0,
        }
    }
}

/// Binds the socket at `path`: creates its directory (0750) if missing,
/// removes a stale socket left by a dead daemon (never a live one, never
/// a file that is not a socket), and sets mode 0660. An existing directory
/// is left as it is, with a warning if others may enter it (PROTOCOL.md
/// asks for 0750; the socket's 0660 and the uid check still hold).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        } else if let Ok(meta) = dir.metadata()
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o7777),
                "the socket's directory is open to other users; PROTOCOL.md asks for mode 0750"
            );
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running server", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves until `shutdown` resolves, then refuses new requests with
/// `shutting_down`, lets in-flight ones finish (up to the grace period),
/// lets the handler finish ([`Handler::finish`]) and returns.
pub async fn run<D: Handler>(
    listener: UnixListener,
    handler: Arc<D>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let quotas = quota::Quotas::new(&limits);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Admission is decided here, without a task: a refused
                // connection is answered and closed at once, so a storm
                // of them holds no slot and no task.
                if open.load(Ordering::Acquire) >= limits.max_connections {
                    connection::refuse_overloaded(stream, "too many connections");
                    continue;
                }
                let Some(peer) = connection::peer_of(&stream) else {
                    continue;
                };
                let bucket = if handler.knows(peer.uid) {
                    Bucket::Client(peer.uid)
                } else {
                    Bucket::Unknown
                };
                let Some(admission) = quotas.admit(bucket) else {
                    connection::note_uid_at_cap(peer.uid, bucket, limits.max_connections_per_uid);
                    connection::refuse_overloaded(stream, "too many connections from this uid");
                    continue;
                };
                open.fetch_add(1, Ordering::AcqRel);
                let guard = OpenGuard(open.clone());
                let h = handler.clone();
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    connection::serve(stream, peer, admission, h, limits, stop).await;
                    drop(guard);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    tracing::info!(
        connections = open.load(Ordering::Acquire),
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; dropping remaining connections");
        conns.abort_all();
    }
    handler.finish().await;
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
