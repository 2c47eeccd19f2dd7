//! One client connection: read frames (limit checked before allocating,
//! idle and slow-frame timeouts), handle up to `max_in_flight` requests
//! concurrently, write answers as they complete (coalescing writes), and
//! stop reading when the in-flight bound is reached (back-pressure).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};
use vault_proto::frame;
use vault_proto::{ErrorCode, WireError};
use zeroize::Zeroize;

use super::{Handler, Limits};
use crate::dispatch::Peer;

pub(super) async fn refuse_overloaded(mut stream: UnixStream) {
    let e = WireError::new(
        ErrorCode::Overloaded,
        "too many connections; try again later",
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(&frame::encode_err(None, &e)),
    )
    .await;
}

/// While stopping, a connection is closed once its client has been quiet
/// this long (requests that do arrive are answered `shutting_down`).
const DRAIN_QUIET: Duration = Duration::from_millis(200);

enum Next {
    Frame(Vec<u8>),
    TooLarge,
    Close,
    Idle,
}

/// Bytes read ahead per connection: a pipelining client's frames then
/// arrive several per syscall instead of three syscalls per frame.
const READ_AHEAD: usize = 8 * 1024;

/// Reads the next frame. Waiting for its first byte is bounded by the idle
/// timeout; once a frame has begun it must complete within `frame_timeout`,
/// so a slow writer cannot hold the connection (slowloris).
async fn next_frame(
    rd: &mut BufReader<OwnedReadHalf>,
    limits: &Limits,
    idle: Duration,
) -> std::io::Result<Next> {
    let mut header = [0u8; frame::HEADER_LEN];
    match tokio::time::timeout(idle, rd.read(&mut header[..1])).await {
        Err(_) => return Ok(Next::Idle),
        Ok(Ok(0)) => return Ok(Next::Close),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    let rest = async {
        rd.read_exact(&mut header[1..]).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 {
            return Ok(Next::Close);
        }
        if len > limits.max_frame {
            return Ok(Next::TooLarge);
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await?;
        Ok(Next::Frame(body))
    };
    match tokio::time::timeout(limits.frame_timeout, rest).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "frame not completed in time",
        )),
    }
}

pub(super) async fn serve<D: Handler>(
    stream: UnixStream,
    handler: Arc<D>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not read peer credentials; closing");
            return;
        }
    };
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_AHEAD, rd);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(limits.max_in_flight + 2);
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
        // connection idle while requests are in flight is kept (the Idle
        // arm below), so a slow answer never costs the client its socket.
        let idle = if stopping {
            DRAIN_QUIET
        } else {
            limits.idle_timeout
        };
        let next = tokio::select! {
            n = next_frame(&mut rd, &limits, idle) => n,
            // The writer gave up on a client that stopped reading its answers.
            _ = tx.closed() => break,
            _ = stop.changed(), if !stopping => { stopping = true; continue; }
        };
        match next {
            Ok(Next::Frame(mut body)) => {
                if stopping {
                    let id = frame::decode_request(&body).ok().map(|h| h.id);
                    body.zeroize();
                    let e = WireError::new(
                        ErrorCode::ShuttingDown,
                        "the server is stopping; retry elsewhere or later",
                    );
                    if tx.send(frame::encode_err(id, &e)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let h = handler.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    // The inner task may panic (a bug): the client still
                    // gets an answer for its id.
                    let id = frame::decode_request(&body).ok().map(|h| h.id);
                    let inner = tokio::spawn(async move {
                        let resp = h.handle(peer, &body).await;
                        body.zeroize();
                        resp
                    });
                    let resp = match inner.await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::error!("request handler panicked");
                            frame::encode_err(
                                id,
                                &WireError::new(
                                    ErrorCode::Internal,
                                    "internal error; see the server log",
                                ),
                            )
                        }
                    };
                    let _ = tx.send(resp).await;
                    drop(permit);
                });
            }
            Ok(Next::TooLarge) => {
                let e = WireError::new(
                    ErrorCode::FrameTooLarge,
                    format!("frame longer than max_frame ({} bytes)", limits.max_frame),
                );
                let _ = tx.send(frame::encode_err(None, &e)).await;
                break;
            }
            Ok(Next::Close) => break,
            Ok(Next::Idle) => {
                if stopping || in_flight.available_permits() + 1 >= limits.max_in_flight {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, uid = peer.uid, "connection read ended");
                break;
            }
        }
    }
    // Let in-flight requests finish and their answers go out.
    let _ = in_flight.acquire_many(limits.max_in_flight as u32).await;
    drop(tx);
    let _ = writer.await;
}

/// Writes answers as they come, flushing only when none is waiting, so a
/// pipelining client gets many answers per syscall.
/// A client that stops reading for longer than `stall` is dropped: its
/// pending answers are discarded and its in-flight slots freed.
async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>, stall: Duration) {
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(first) = rx.recv().await {
        let batch = async {
            w.write_all(&first).await?;
            while let Ok(more) = rx.try_recv() {
                w.write_all(&more).await?;
            }
            w.flush().await
        };
        match tokio::time::timeout(stall, batch).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("client stopped reading answers; closing its connection");
                return;
            }
        }
    }
    let _ = w.shutdown().await;
}
