//! A stand-in for vaultd on a Unix socket: records every request and answers
//! through a closure (or never, to play a hung daemon).
#![allow(dead_code)] // shared by several test crates, each uses a part

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::task::{JoinHandle, JoinSet};
use vault_proto::frame::{self, FrameRead};

/// A recorded request: op name and raw MessagePack args.
#[derive(Debug, Clone)]
pub struct Seen {
    pub op: String,
    pub args: Option<Vec<u8>>,
}

/// `(id, op, args) -> framed answer`, or `None` to leave it unanswered.
pub type Responder = Arc<dyn Fn(u64, &str, Option<&[u8]>) -> Option<Vec<u8>> + Send + Sync>;

pub struct FakeDaemon {
    pub path: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl FakeDaemon {
    pub fn start(path: &Path, respond: Responder) -> FakeDaemon {
        let listener = UnixListener::bind(path).expect("bind fake daemon socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, respond) = (log.clone(), respond.clone());
                connections.spawn(async move {
                    let (mut rd, mut wr) = stream.into_split();
                    while let Ok(FrameRead::Frame(body)) = frame::read_frame(&mut rd, 1 << 20).await
                    {
                        let Ok(head) = frame::decode_request(&body) else {
                            return;
                        };
                        log.lock().expect("log").push(Seen {
                            op: head.op.to_owned(),
                            args: head.args.map(<[u8]>::to_vec),
                        });
                        if let Some(answer) = respond(head.id, head.op, head.args)
                            && wr.write_all(&answer).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        FakeDaemon {
            path: path.to_owned(),
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    /// Stops listening and closes every connection, like a daemon exiting.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A framed success answer.
pub fn ok<T: serde::Serialize>(id: u64, result: &T) -> Option<Vec<u8>> {
    Some(frame::encode_ok(Some(id), result).expect("encode"))
}

/// A framed error answer.
pub fn refuse(id: u64, code: vault_proto::ErrorCode, message: &str) -> Option<Vec<u8>> {
    Some(frame::encode_err(
        Some(id),
        &vault_proto::WireError::new(code, message),
    ))
}
