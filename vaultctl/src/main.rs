//! `vaultctl`: the operators' and scripts' CLI for vaultd. Human output by
//! default, `--json` for scripts. Exit codes: 0 success, 1 the server
//! refused (its error code is printed), 2 usage, 3 cannot reach the server.
//!
//! Card numbers are read from standard input, never from arguments (which
//! end up in shell history and `ps`).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use vault_proto::client::ClientError;
use vault_proto::ops::{self, NoArgs};
use vault_proto::{BlockingClient, Pan};

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Talk to vaultd")]
struct Cli {
    /// vaultd's socket.
    #[arg(long, global = true, env = "VAULTD_SOCKET", default_value = vault_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the raw result as JSON.
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
    /// result as JSON (diagnostics and scripts).
    Call { op: String },
    /// The audit trail, with the chain check.
    Audit {
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut client = match BlockingClient::connect(&cli.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultctl: cannot connect to {}: {e}", cli.socket.display());
            return ExitCode::from(3);
        }
    };
    match run(&mut client, cli.cmd, cli.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("vaultctl: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Client(ClientError::Server(e))) => {
            eprintln!("vaultctl: {}: {}", e.code, e.message);
            ExitCode::from(1)
        }
        Err(Failure::Client(e)) => {
            eprintln!("vaultctl: {e}");
            ExitCode::from(3)
        }
    }
}

enum Failure {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

fn print<T: Serialize>(json: bool, v: &T, human: impl FnOnce(&T)) {
    if json {
        match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("vaultctl: cannot print JSON: {e}"),
        }
    } else {
        human(v)
    }
}

fn parse_exp(s: &str) -> Result<(u8, u16), Failure> {
    let bad = || Failure::Usage(format!("--exp {s:?}: expected MM/YYYY"));
    let (m, y) = s.split_once('/').ok_or_else(bad)?;
    Ok((m.parse().map_err(|_| bad())?, y.parse().map_err(|_| bad())?))
}

fn show_record(r: &ops::AliasRecord) {
    println!("alias        {}", r.alias);
    println!(
        "card         {} {} exp {:02}/{}{}",
        r.card.scheme,
        r.masked,
        r.card.exp_month,
        r.card.exp_year,
        if r.card.pan_removed {
            " (PAN removed)"
        } else {
            ""
        }
    );
    println!("fingerprint  {}", r.fingerprint);
    match &r.token_info {
        None => println!("token        none"),
        Some(t) => {
            println!("token        {} {}", t.scheme, t.status.as_str());
            if let Some(r) = &t.token_ref {
                println!("token_ref    {r}");
            }
            if let (Some(l4), Some(m), Some(y)) = (&t.token_last4, t.exp_month, t.exp_year) {
                println!("token        ...{l4} exp {m:02}/{y}");
            }
            if let Some(e) = &t.last_error {
                println!("last_error   {e}");
            }
        }
    }
}

fn run(c: &mut BlockingClient, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Health => {
            let h = c.op::<ops::HealthOp>(&NoArgs {})?;
            print(json, &h, |h| {
                println!("ready   {}", h.ready);
                println!("version {}", h.version);
                println!("hsm     {}", h.hsm);
                println!("store   {}", h.store);
                println!("uptime  {} s", h.uptime_ms / 1000);
            });
        }
        Cmd::Tokenize {
            exp,
            transaction_id,
        } => {
            let (exp_month, exp_year) = parse_exp(&exp)?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Failure::Usage(format!("cannot read the PAN from stdin: {e}")))?;
            let pan = Pan::new(line.trim().to_owned());
            // Wipe our copy of the line.
            line.clear();
            line.shrink_to_fit();
            let r = c.op::<ops::Tokenize>(&ops::TokenizeArgs {
                pan,
                exp_month,
                exp_year,
                transaction_id,
            })?;
            print(json, &r, |r| {
                println!("created      {}", r.created);
                show_record(&r.record);
            });
        }
        Cmd::Call { op } => {
            let mut input = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut input)
                .map_err(|e| Failure::Usage(format!("cannot read args from stdin: {e}")))?;
            let args: serde_json::Value = if input.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_str(&input)
                    .map_err(|e| Failure::Usage(format!("args are not JSON: {e}")))?
            };
            input.clear();
            let r: serde_json::Value = c.call(&op, &args)?;
            match serde_json::to_string(&r) {
                Ok(s) => println!("{s}"),
                Err(e) => return Err(Failure::Usage(format!("cannot print: {e}"))),
            }
        }
        Cmd::Status { alias } => {
            let r = c.op::<ops::AliasStatus>(&ops::AliasArgs { alias })?;
            print(json, &r, show_record);
        }
        Cmd::Delete { alias } => {
            let r = c.op::<ops::DeleteAlias>(&ops::AliasArgs { alias })?;
            print(json, &r, |_| println!("deleted"));
        }
        Cmd::Stats => {
            let s = c.op::<ops::StatsOp>(&NoArgs {})?;
            print(json, &s, |s| {
                println!("aliases        {}", s.aliases);
                println!("pans_retained  {}", s.pans_retained);
                for (k, v) in &s.tokens {
                    println!("tokens.{k:<12} {v}");
                }
                println!(
                    "queue          due {} scheduled {} in_flight {} failed {}",
                    s.queue.due, s.queue.scheduled, s.queue.in_flight, s.queue.failed
                );
                for (name, sc) in &s.schemes {
                    println!(
                        "scheme {name:<11} provisioned {} not_eligible {} errors {} p50 {} ms p99 {} ms{}",
                        sc.provisioned,
                        sc.not_eligible,
                        sc.errors,
                        sc.p50_ms,
                        sc.p99_ms,
                        if sc.paused { " PAUSED" } else { "" }
                    );
                }
                println!("uptime         {} s", s.uptime_ms / 1000);
            });
        }
        Cmd::Audit { after, limit } => {
            let a = c.op::<ops::AuditOp>(&ops::PageArgs { after, limit })?;
            print(json, &a, |a| {
                for r in &a.records {
                    println!(
                        "{:>8} {} {:<20} uid {:<6} pid {:<7} {:<16} {:<32} {}",
                        r.seq,
                        r.at,
                        r.client,
                        r.uid,
                        r.pid,
                        r.op,
                        r.alias.as_deref().unwrap_or("-"),
                        r.outcome
                    );
                }
                println!("chain {}", if a.chain_ok { "OK" } else { "BROKEN" });
            });
        }
    }
    Ok(())
}
