//! Async client: one connection, many requests in flight (pipelining), each
//! answered by `id` whatever the order the server replies in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

use crate::frame::{self, FrameRead};
use crate::ops::Op;
use crate::{DEFAULT_MAX_FRAME, WireError};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Server(WireError),
}

impl ClientError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<crate::ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

type Answer = Result<Vec<u8>, ClientError>;
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Answer>>>>>;

/// A pipelining client. Cheap to share behind an `Arc`; calls may run
/// concurrently.
pub struct Client {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn connect(path: impl AsRef<Path>) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path).await?;
        Ok(Client::from_stream(stream))
    }

    pub fn from_stream(stream: UnixStream) -> Client {
        let (mut rd, wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            let why = loop {
                match frame::read_frame(&mut rd, DEFAULT_MAX_FRAME * 16).await {
                    Ok(FrameRead::Frame(body)) => {
                        let id = match frame::decode_response(&body) {
                            Ok(head) => head.id,
                            Err(e) => break format!("undecodable response: {e}"),
                        };
                        let waiter = id.and_then(|id| {
                            p.lock()
                                .ok()
                                .and_then(|mut m| m.as_mut().and_then(|m| m.remove(&id)))
                        });
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(Ok(body));
                            }
                            // An answer without an id (frame_too_large,
                            // bad_request): give it to every waiter.
                            None if id.is_none() => {
                                if let Ok(mut m) = p.lock()
                                    && let Some(m) = m.as_mut()
                                {
                                    for (_, tx) in m.drain() {
                                        let _ = tx.send(Ok(body.clone()));
                                    }
                                }
                            }
                            None => {}
                        }
                    }
                    Ok(_) => break "connection closed by the server".to_owned(),
                    Err(e) => break format!("read failed: {e}"),
                }
            };
            if let Ok(mut m) = p.lock()
                && let Some(m) = m.take()
            {
                for (_, tx) in m {
                    let _ = tx.send(Err(ClientError::Protocol(why.clone())));
                }
            }
        });
        Client {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        }
    }

    /// A typed call: `client.op::<Tokenize>(&args).await`.
    pub async fn op<O: Op>(&self, args: &O::Args) -> Result<O::Result, ClientError> {
        self.call(O::NAME, args).await
    }

    /// An untyped call by op name.
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        op: &str,
        args: &A,
    ) -> Result<R, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = self
            .round_trip(id, frame::encode_request(id, op, args))
            .await?;
        decode_result(&body)
    }

    /// Sends an already framed request with the given id and waits for the
    /// raw answer (tests use this for hand-made frames).
    pub async fn round_trip(&self, id: u64, framed: Vec<u8>) -> Answer {
        let (tx, rx) = oneshot::channel();
        {
            let mut m = self
                .pending
                .lock()
                .map_err(|_| ClientError::Protocol("client poisoned".into()))?;
            match m.as_mut() {
                Some(m) => m.insert(id, tx),
                None => return Err(ClientError::Protocol("connection closed".into())),
            };
        }
        {
            let mut w = self.writer.lock().await;
            w.write_all(&framed).await?;
        }
        rx.await
            .map_err(|_| ClientError::Protocol("connection closed".into()))?
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Decodes a response body into the op's result, or the server's error.
pub fn decode_result<R: DeserializeOwned>(body: &[u8]) -> Result<R, ClientError> {
    let head = frame::decode_response(body).map_err(ClientError::Protocol)?;
    match head.outcome {
        Ok(raw) => rmp_serde::from_slice(raw)
            .map_err(|e| ClientError::Protocol(format!("unexpected result shape: {e}"))),
        Err(e) => Err(ClientError::Server(e)),
    }
}
