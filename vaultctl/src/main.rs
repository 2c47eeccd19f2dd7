//! `vaultctl`: the operators' and scripts' CLI for vaultd. Human output by
//! default, `--json` for scripts. Exit codes: 0 success, 1 the server
//! refused (its error code is printed), 2 usage, 3 cannot reach the server,
//! 4 `health` answered but the daemon is not ready. Under `--json` a
//! failure is one JSON object on standard error: `{"code", "message",
//! "retryable"}` (`code` is the server's error code, or `usage`,
//! `unreachable`, `not_ready`).
//!
//! Card numbers are read from standard input, never from arguments (which
//! end up in shell history and `ps`).
//!
//! This file is the command line and the exit codes; each family of
//! commands is a module of its own ([`cards`], [`credentials`], [`call`],
//! [`daemon`], [`logs`], [`retention`], [`queue`], [`admin`]), printing
//! through [`output`] and reading stdin through [`stdin`].

mod admin;
mod call;
mod cards;
mod credentials;
mod daemon;
mod logs;
mod output;
mod queue;
mod retention;
mod stdin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vault_proto::BlockingClient;
use vault_proto::client::ClientError;
use vault_proto::ops;

use credentials::CredentialsCmd;

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Talk to vaultd")]
struct Cli {
    /// vaultd's socket.
    #[arg(long, global = true, env = "VAULTD_SOCKET", default_value = vault_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the result as JSON (`credentials`: its redacted view only).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Is the daemon ready (HSM, store)?
    Health,
    /// Tokenize a card: reads the PAN from standard input.
    Tokenize {
        /// Expiry as MM/YYYY.
        #[arg(long)]
        exp: String,
        #[arg(long)]
        transaction_id: Option<String>,
    },
    /// Show an alias's record.
    Status { alias: String },
    /// Delete an alias (PAN, token, keys).
    Delete { alias: String },
    /// Counts: aliases, PANs retained, tokens, queue, schemes.
    Stats,
    /// Any op by name, args as a JSON object on standard input; prints the
    /// result as JSON (diagnostics and scripts), card data masked: a PAN or
    /// token number shows its last four digits, a cryptogram not at all.
    Call { op: String },
    /// Payment credentials for an alias, redacted for diagnostics: kind,
    /// scheme, masked number, ECI, ATC. Never prints the full token or PAN
    /// nor the cryptogram. Issues a real cryptogram (it spends an ATC).
    Credentials(CredentialsCmd),
    /// The audit trail, with the chain check: the newest LIMIT records
    /// (`--after 0` for the oldest). vaultd seals before it reads, so the
    /// page is covered by a seal; `chain BROKEN` also while a break found
    /// at start-up is not acknowledged (`vaultd audit verify` checks the
    /// whole trail offline).
    Audit {
        /// Records after this seq (default: the newest LIMIT).
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Lifecycle and provisioning events.
    Events {
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// PAN retention per tenant: policy, retained, falling due, purged.
    Retention,
    /// Erase the PANs that fell due now (one tenant, or all).
    PurgeDue {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The provisioning queue, a page at a time.
    Queue {
        /// due, scheduled, in_flight or failed
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Job id to continue after (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Make a failed job due again.
    Retry { job_id: String },
    /// Stop provisioning for a scheme.
    Pause { scheme: String },
    /// Resume provisioning for a scheme.
    Resume { scheme: String },
    /// Queue network token provisioning for an alias.
    Provision { alias: String },
    /// Erase an alias's PAN (it keeps working through its active token).
    RemovePan { alias: String },
    /// Rotate the PAN key (or, with --audit, the audit key) through the
    /// daemon: new writes use the new version at once; PANs and token
    /// numbers are re-encrypted in the background (see `stats`).
    KeyRotate {
        #[arg(long)]
        audit: bool,
    },
    /// Destroy vault.pan.v<N> in the HSM; refused while any record uses it.
    KeyRetire {
        #[arg(long)]
        version: u32,
    },
    /// Give every token of SCHEME whose stored key is wrapped under KEK
    /// VERSION a fresh key from the token service (after `vaultd keys
    /// import-kek` made a newer version; 0: tokens still on nt.* objects).
    /// Once `stats` shows no token under VERSION, `vaultd keys retire-kek`
    /// can remove it.
    KekRefresh {
        #[arg(long)]
        scheme: String,
        #[arg(long)]
        version: u32,
    },
    /// Have the daemon write a consistent copy of its database to FILE
    /// (absolute path, written by the daemon) and FILE.pans.
    Backup {
        #[arg(long = "to")]
        to: PathBuf,
    },
}

/// The command line, with `call --help` listing the ops of the registry.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("call", |c| c.after_help(call::ops_help()))
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let json = cli.json;
    // One line on stderr: the message, or under --json the object.
    let fail = |exit: u8, code: &str, message: String, retryable: bool| {
        if json {
            let o = serde_json::json!({"code": code, "message": message, "retryable": retryable});
            eprintln!("{o}");
        } else if code == "usage" || code == "unreachable" || code == "not_ready" {
            eprintln!("vaultctl: {message}");
        } else {
            eprintln!("vaultctl: {code}: {message}");
        }
        ExitCode::from(exit)
    };
    let mut client = match BlockingClient::connect(&cli.socket) {
        Ok(c) => c,
        Err(e) => {
            let m = format!("cannot connect to {}: {e}", cli.socket.display());
            return fail(3, "unreachable", m, true);
        }
    };
    match run(&mut client, cli.cmd, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => fail(2, "usage", m, false),
        Err(Failure::NotReady) => fail(4, "not_ready", "the daemon is not ready".into(), true),
        Err(Failure::Client(ClientError::Server(e))) => {
            fail(1, e.code.as_str(), e.message, e.code.retryable())
        }
        Err(Failure::Client(e)) => fail(3, "unreachable", e.to_string(), true),
    }
}

/// Why a command failed, which sets the exit code.
enum Failure {
    Usage(String),
    Client(ClientError),
    /// `health` answered `ready: false`.
    NotReady,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

/// Sends each command to its family's module.
fn run(c: &mut BlockingClient, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Health => daemon::health(c, json),
        Cmd::Stats => daemon::stats(c, json),
        Cmd::Tokenize {
            exp,
            transaction_id,
        } => cards::tokenize(c, json, &exp, transaction_id),
        Cmd::Status { alias } => cards::record::<ops::AliasStatus>(c, json, alias),
        Cmd::Delete { alias } => cards::delete(c, json, alias),
        Cmd::Provision { alias } => cards::record::<ops::Provision>(c, json, alias),
        Cmd::RemovePan { alias } => cards::record::<ops::RemovePan>(c, json, alias),
        Cmd::Call { op } => call::call(c, &op),
        Cmd::Credentials(args) => credentials::credentials(c, json, args),
        Cmd::Audit { after, limit } => logs::audit(c, json, after, limit),
        Cmd::Events { after, limit } => logs::events(c, json, after, limit),
        Cmd::Retention => retention::retention(c, json),
        Cmd::PurgeDue { tenant } => retention::purge_due(c, json, tenant),
        Cmd::Queue {
            state,
            limit,
            after,
        } => queue::queue(c, json, state, limit, after),
        Cmd::Retry { job_id } => queue::retry(c, json, job_id),
        Cmd::Pause { scheme } => queue::switch_scheme::<ops::SchemePause>(c, json, scheme),
        Cmd::Resume { scheme } => queue::switch_scheme::<ops::SchemeResume>(c, json, scheme),
        Cmd::KeyRotate { audit } => admin::key_rotate(c, json, audit),
        Cmd::KeyRetire { version } => admin::key_retire(c, json, version),
        Cmd::KekRefresh { scheme, version } => admin::kek_refresh(c, json, scheme, version),
        Cmd::Backup { to } => admin::backup(c, json, &to),
    }
}
