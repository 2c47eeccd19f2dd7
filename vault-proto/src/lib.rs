//! The vaultd wire protocol, version 1 (`PROTOCOL.md` is the contract).
//!
//! Everything a client or the daemon needs to speak it: the op argument and
//! result types ([`ops`]), the error codes ([`ErrorCode`]), the card number
//! type that never prints itself ([`Pan`]), the length-prefixed framing and
//! request envelope decoding ([`frame`]), and two clients: an async one that
//! pipelines ([`Client`]) and a blocking one ([`BlockingClient`]).
//!
//! This crate knows nothing of HSMs or storage.

pub mod blocking;
pub mod client;
pub mod error;
pub mod frame;
pub mod ops;
pub mod pan;
pub mod scheme;

pub use blocking::BlockingClient;
pub use client::Client;
pub use error::{ErrorCode, WireError};
pub use pan::Pan;
pub use scheme::Scheme;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Default socket path of the daemon.
pub const DEFAULT_SOCKET: &str = "/run/vaultd/vaultd.sock";

/// Default and upper bound of a frame body, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
