//! Command-line arguments.

use std::path::PathBuf;

use clap::Parser;

/// The security console of vaultd (needs the `admin` role on the socket).
#[derive(Debug, Parser)]
#[command(name = "vault-tui", version)]
pub struct Args {
    /// vaultd's admin socket.
    #[arg(long, env = "VAULTD_SOCKET", default_value = vault_proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}
