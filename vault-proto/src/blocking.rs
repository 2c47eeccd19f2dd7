//! Blocking client: one request at a time over a std Unix stream. For CLIs
//! and scripts; services that want pipelining use [`crate::Client`].

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DEFAULT_MAX_FRAME;
use crate::client::{ClientError, decode_result};
use crate::frame::{self, FrameRead};
use crate::ops::Op;

pub struct BlockingClient {
    stream: UnixStream,
    next_id: u64,
}

impl BlockingClient {
    pub fn connect(path: impl AsRef<Path>) -> std::io::Result<BlockingClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(BlockingClient { stream, next_id: 1 })
    }

    pub fn set_timeout(&mut self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    /// A typed call: `client.op::<AliasStatus>(&args)`.
    pub fn op<O: Op>(&mut self, args: &O::Args) -> Result<O::Result, ClientError> {
        self.call(O::NAME, args)
    }

    pub fn call<A: Serialize, R: DeserializeOwned>(
        &mut self,
        op: &str,
        args: &A,
    ) -> Result<R, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = self.round_trip_raw(&frame::encode_request(id, op, args), Some(id))?;
        decode_result(&body)
    }

    /// Writes raw bytes and returns the body of the next answer for `id`
    /// (or the next answer at all when `id` is `None`).
    pub fn round_trip_raw(
        &mut self,
        bytes: &[u8],
        id: Option<u64>,
    ) -> Result<Vec<u8>, ClientError> {
        self.stream.write_all(bytes)?;
        loop {
            match frame::read_frame_blocking(&mut self.stream, DEFAULT_MAX_FRAME * 16)? {
                FrameRead::Frame(body) => {
                    let head = frame::decode_response(&body).map_err(ClientError::Protocol)?;
                    if id.is_none() || head.id == id || head.id.is_none() {
                        return Ok(body);
                    }
                }
                _ => {
                    return Err(ClientError::Protocol(
                        "connection closed by the server".into(),
                    ));
                }
            }
        }
    }

    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}
