//! The one error type of the benchmark: what stops a run (a scenario whose
//! op the daemon refuses is not an error: it is reported and skipped).

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot reach vaultd at {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("vaultd call failed: {0}")]
    Client(#[from] vault_proto::client::ClientError),
    #[error("{0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type BenchResult<T> = Result<T, BenchError>;
