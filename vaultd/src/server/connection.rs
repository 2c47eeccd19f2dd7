//! One client connection: identify the peer and take its uid's connection
//! slot, read frames (limits checked before allocating, idle and
//! slow-frame timeouts), handle up to `max_in_flight` requests
//! concurrently, write answers as they complete (coalescing writes), and
//! stop reading when the connection's or the uid's in-flight bound or the
//! byte budget is reached (back-pressure).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout_at};
use vault_proto::frame;
use vault_proto::{ErrorCode, WireError};
use zeroize::{Zeroize, Zeroizing};

use super::quota::{Admission, Bucket};
use super::read_ahead::ReadAhead;
use super::{Handler, Limits};
use crate::dispatch::Peer;

/// Answers `overloaded` (id nil) and closes. A fresh socket's send buffer
/// is empty, so the answer is written without waiting, and a refused
/// connection costs no task.
pub(super) fn refuse_overloaded(stream: UnixStream, why: &str) {
    let e = WireError::new(ErrorCode::Overloaded, format!("{why}; try again later"));
    if let Ok(mut s) = stream.into_std() {
        let _ = std::io::Write::write_all(&mut s, &frame::encode_err(None, &e));
    }
}

/// The peer's credentials (`SO_PEERCRED`: taken at its `connect`).
pub(super) fn peer_of(stream: &UnixStream) -> Option<Peer> {
    match stream.peer_cred() {
        Ok(c) => Some(Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "could not read peer credentials; closing");
            None
        }
    }
}

/// While stopping, a connection is closed once its client has been quiet
/// this long (requests that do arrive are answered `shutting_down`).
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// What the header of the next frame said.
enum Head {
    /// A body of this many bytes follows; `began` is when its first
    /// header byte arrived.
    Frame {
        len: usize,
        began: Instant,
    },
    TooLarge,
    Close,
}

/// Bytes read ahead per connection: a pipelining client's frames then
/// arrive several per syscall instead of three syscalls per frame.
const READ_AHEAD: usize = 8 * 1024;

/// Reads the rest of a frame header whose first byte is `first`. A frame
/// that has begun must complete within `frame_timeout` (not counting the
/// time the server makes it wait), so a slow writer cannot hold the
/// connection (slowloris).
async fn rest_of_head(rd: &mut ReadAhead, first: u8, limits: &Limits) -> std::io::Result<Head> {
    let began = Instant::now();
    let mut header = [first, 0, 0, 0];
    timeout_at(
        began + limits.frame_timeout,
        rd.read_exact(&mut header[1..]),
    )
    .await
    .map_err(|_| timed_out())??;
    let len = u32::from_be_bytes(header) as usize;
    Ok(if len == 0 {
        Head::Close
    } else if len > limits.max_frame {
        Head::TooLarge
    } else {
        Head::Frame { len, began }
    })
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "frame not completed in time")
}

/// Serves one admitted connection; `admission` is its uid's slot, held
/// until the connection is gone.
pub(super) async fn serve<D: Handler>(
    stream: UnixStream,
    peer: Peer,
    admission: Admission,
    handler: Arc<D>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let (rd, wr) = stream.into_split();
    let mut rd = ReadAhead::new(rd, READ_AHEAD);
    let (tx, rx) = mpsc::channel::<Zeroizing<Vec<u8>>>(limits.max_in_flight + 2);
    let writer = tokio::spawn(write_loop(wr, rx, limits.idle_timeout));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut stopping = *stop.borrow();

    loop {
        // Back-pressure: no permit, no read. The kernel buffer fills and the
        // client's writes block; nothing is dropped.
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed(), if !stopping => { stopping = true; continue; }
        };
        // Draining: take what the client already sent, then close. A
        // connection idle while requests are in flight is kept (the idle
        // arm below), so a slow answer never costs the client its socket.
        let idle = if stopping {
            DRAIN_QUIET
        } else {
            limits.idle_timeout
        };
        // Only the wait for a frame's first byte may be interrupted: a
        // frame once begun is read whole, so the stream stays in sync.
        let got = tokio::select! {
            r = tokio::time::timeout(idle, rd.read_byte()) => r,
            // The writer gave up on a client that stopped reading its answers.
            _ = tx.closed() => break,
            _ = stop.changed(), if !stopping => { stopping = true; continue; }
        };
        let first = match got {
            Ok(Ok(None)) => break,
            Ok(Ok(Some(b))) => b,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, uid = peer.uid, "connection read ended");
                break;
            }
            Err(_idle) => {
                if stopping || in_flight.available_permits() + 1 >= limits.max_in_flight {
                    break;
                }
                continue;
            }
        };
        let (len, began) = match rest_of_head(&mut rd, first, &limits).await {
            Ok(Head::Frame { len, began }) => (len, began),
            Ok(Head::TooLarge) => {
                let e = WireError::new(
                    ErrorCode::FrameTooLarge,
                    format!("frame longer than max_frame ({} bytes)", limits.max_frame),
                );
                let _ = tx.send(Zeroizing::new(frame::encode_err(None, &e))).await;
                break;
            }
            Ok(Head::Close) => break,
            Err(e) => {
                tracing::debug!(error = %e, uid = peer.uid, "connection read ended");
                break;
            }
        };
        // The uid's allowance and the global byte budget: until they have
        // room the body stays unread (back-pressure), and that wait is not
        // the client's slowness.
        let waiting = Instant::now();
        let Some(quota) = admission.request(len).await else {
            break;
        };
        let deadline = began + limits.frame_timeout + waiting.elapsed();
        // Wiped when dropped, whatever path drops it (a handler's panic
        // too): it may hold a PAN.
        let mut body = Zeroizing::new(vec![0u8; len]);
        match timeout_at(deadline, rd.read_exact(&mut body[..])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, uid = peer.uid, "connection read ended");
                break;
            }
            Err(_) => {
                tracing::debug!(uid = peer.uid, "frame not completed in time");
                break;
            }
        }
        stopping = stopping || *stop.borrow();
        if stopping {
            let id = frame::decode_request(&body).ok().map(|h| h.id);
            drop(body);
            drop(quota);
            let e = WireError::new(
                ErrorCode::ShuttingDown,
                "the server is stopping; retry elsewhere or later",
            );
            if tx
                .send(Zeroizing::new(frame::encode_err(id, &e)))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        // Asked per request: a reload may have removed the client.
        let last = !handler.knows(peer.uid);
        let h = handler.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // The inner task may panic (a bug): the client still
            // gets an answer for its id.
            let id = frame::decode_request(&body).ok().map(|h| h.id);
            let inner = tokio::spawn(async move { h.handle(peer, &body).await });
            let resp = match inner.await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("request handler panicked");
                    frame::encode_err(
                        id,
                        &WireError::new(ErrorCode::Internal, "internal error; see the server log"),
                    )
                }
            };
            let _ = tx.send(Zeroizing::new(resp)).await;
            drop((permit, quota));
        });
        if last {
            // An unknown uid gets its `unauthenticated` answer, then the
            // door: whatever else it queued is never read.
            break;
        }
    }
    // Let in-flight requests finish and their answers go out.
    let _ = in_flight.acquire_many(limits.max_in_flight as u32).await;
    drop(tx);
    let _ = writer.await;
    drop(admission);
}

/// Logs a uid refused at its connection cap, at most once per 10 s for
/// the whole server: a flood of refusals must not flood the log too.
pub(super) fn note_uid_at_cap(uid: u32, bucket: Bucket, cap: usize) {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    // Milliseconds since the first call, plus the quiet period, so the
    // first call logs.
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 10_000;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let unknown = bucket == Bucket::Unknown;
        tracing::warn!(
            uid,
            unknown,
            max_connections_per_uid = cap,
            "connection refused: the uid is at its connection cap (further refusals are not logged for 10 s)"
        );
    }
}

/// Writes answers as they come, flushing only when none is waiting, so a
/// pipelining client gets many answers per syscall.
/// A client that stops reading for longer than `stall` is dropped: its
/// pending answers are discarded and its in-flight slots freed.
///
/// Answers may carry card data (a PAN, a network token and its
/// cryptogram): each is wiped as soon as it is copied into the batch, and
/// the batch buffer (which never grows: a larger answer goes out on its
/// own) as soon as it is written. Answers still queued when the connection
/// ends are wiped on drop.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Zeroizing<Vec<u8>>>,
    stall: Duration,
) {
    const BATCH: usize = 64 * 1024;
    let mut batch: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(BATCH));
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let written = async {
            while let Some(answer) = next.take() {
                if batch.len() + answer.len() > BATCH {
                    write_wiped(&mut wr, &mut batch).await?;
                }
                if answer.len() > BATCH {
                    wr.write_all(&answer).await?;
                } else {
                    batch.extend_from_slice(&answer);
                }
                drop(answer);
                next = rx.try_recv().ok();
            }
            write_wiped(&mut wr, &mut batch).await
        };
        match tokio::time::timeout(stall, written).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("client stopped reading answers; closing its connection");
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes `batch` whole, then wipes it (keeping its block for the next).
async fn write_wiped(wr: &mut OwnedWriteHalf, batch: &mut Vec<u8>) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = wr.write_all(batch).await;
    batch.zeroize();
    r
}
