//! `vaultctl`: the operators' and scripts' CLI for vaultd. Human output by
//! default, `--json` for scripts. Exit codes: 0 success, 1 the server
//! refused (its error code is printed), 2 usage, 3 cannot reach the server.
//!
//! Card numbers are read from standard input, never from arguments (which
//! end up in shell history and `ps`).

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
    Credentials {
        alias: String,
        /// The tenant the alias belongs to.
        #[arg(long)]
        tenant: String,
        /// What the receiver takes, in order of preference.
        #[arg(long, value_delimiter = ',', default_value = "network_token,pan")]
        accept: Vec<String>,
        /// Merchant-initiated (no cryptogram, no ECI); default customer-initiated.
        #[arg(long)]
        mit: bool,
        /// Amount in minor units (e.g. 1250 for 12.50).
        #[arg(long)]
        amount: u64,
        /// ISO 4217 alphabetic currency code, e.g. CHF.
        #[arg(long)]
        currency: String,
        /// ECI of a 3-D Secure authentication, passed through.
        #[arg(long)]
        eci: Option<String>,
    },
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

fn fmt_ms(ms: u64) -> String {
    // Seconds since the epoch are enough for operators and scripts alike.
    format!("{}.{:03}", ms / 1000, ms % 1000)
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

/// What `vaultctl credentials` may show of a `credentials` answer: the
/// number masked, the cryptogram reduced to its presence and length.
#[derive(Serialize)]
struct RedactedCredentials {
    kind: &'static str,
    scheme: String,
    masked: String,
    exp_month: u8,
    exp_year: u16,
    eci: Option<String>,
    atc: Option<u16>,
    cryptogram_present: bool,
    cryptogram_chars: Option<usize>,
    par: Option<String>,
    token_ref: Option<String>,
    fallback_reason: Option<&'static str>,
}

impl RedactedCredentials {
    fn of(c: &ops::Credentials) -> Self {
        match c {
            ops::Credentials::NetworkToken {
                scheme,
                network_token,
                exp_month,
                exp_year,
                cryptogram,
                eci,
                atc,
                par,
                token_ref,
            } => RedactedCredentials {
                kind: "network_token",
                scheme: scheme.clone(),
                masked: network_token.masked(),
                exp_month: *exp_month,
                exp_year: *exp_year,
                eci: eci.clone(),
                atc: *atc,
                cryptogram_present: cryptogram.is_some(),
                cryptogram_chars: cryptogram.as_ref().map(String::len),
                par: par.clone(),
                token_ref: Some(token_ref.clone()),
                fallback_reason: None,
            },
            ops::Credentials::Pan {
                scheme,
                pan,
                exp_month,
                exp_year,
                fallback_reason,
            } => RedactedCredentials {
                kind: "pan",
                scheme: scheme.clone(),
                masked: pan.masked(),
                exp_month: *exp_month,
                exp_year: *exp_year,
                eci: None,
                atc: None,
                cryptogram_present: false,
                cryptogram_chars: None,
                par: None,
                token_ref: None,
                fallback_reason: Some(match fallback_reason {
                    ops::FallbackReason::ReceiverPanOnly => "receiver_pan_only",
                    ops::FallbackReason::NoToken => "no_token",
                    ops::FallbackReason::TokenNotActive => "token_not_active",
                }),
            },
        }
    }

    fn show(&self) {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("kind             {}", self.kind);
        println!("scheme           {}", self.scheme);
        let label = if self.kind == "pan" {
            "pan"
        } else {
            "network_token"
        };
        println!("{label:<16} {}", self.masked);
        println!("expiry           {:02}/{}", self.exp_month, self.exp_year);
        if self.kind == "network_token" {
            println!("eci              {}", opt(self.eci.clone()));
            println!("atc              {}", opt(self.atc.map(|a| a.to_string())));
            match self.cryptogram_chars {
                Some(n) => println!("cryptogram: present ({n} chars)"),
                None => println!("cryptogram: none"),
            }
            println!("token_ref        {}", opt(self.token_ref.clone()));
            println!("par              {}", opt(self.par.clone()));
        }
        if let Some(r) = self.fallback_reason {
            println!("fallback_reason  {r}");
        }
    }
}

fn parse_accept(kinds: &[String]) -> Result<Vec<ops::CredentialKind>, Failure> {
    kinds
        .iter()
        .map(|k| match k.trim() {
            "network_token" => Ok(ops::CredentialKind::NetworkToken),
            "pan" => Ok(ops::CredentialKind::Pan),
            other => Err(Failure::Usage(format!(
                "--accept {other:?}: expected network_token or pan"
            ))),
        })
        .collect()
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
            let line = read_stdin_wiped(PAN_LINE_MAX, true)
                .map_err(|e| Failure::Usage(format!("cannot read the PAN from stdin: {e}")))?;
            let pan = Pan::from_bytes(line.trim_ascii())
                .ok_or_else(|| Failure::Usage("the PAN read from stdin is not text".to_owned()))?;
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
            let input = read_stdin_wiped(ARGS_MAX, false)
                .map_err(|e| Failure::Usage(format!("cannot read args from stdin: {e}")))?;
            let mut args: serde_json::Value = if input.trim_ascii().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_slice(&input)
                    .map_err(|e| Failure::Usage(format!("args are not JSON: {e}")))?
            };
            drop(input);
            let called = c.call(&op, &args);
            // The args may hold a PAN: every string in them is wiped.
            wipe_strings(&mut args);
            let mut r: serde_json::Value = called?;
            redact_card_data(&mut r);
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
                if let Some(k) = &s.keys {
                    println!(
                        "keys           pan v{} audit v{} reencrypt_remaining {} reencrypted {}",
                        k.pan_key_version,
                        k.audit_key_version,
                        k.reencrypt_remaining,
                        k.reencrypted
                    );
                    for u in &k.keks {
                        let kek = if u.version == 0 {
                            "legacy nt.* objects".to_owned()
                        } else {
                            format!("kek v{}", u.version)
                        };
                        println!("keys.{:<9} {kek} wraps {} token keys", u.scheme, u.tokens);
                    }
                }
                if let Some(h) = &s.hsm {
                    println!(
                        "hsm            session_objects {} of {} reinitializations {} \
                         (standby_switches {}) last_pause {} ms key_copies_made {} \
                         background queued {} done {} token_keys cached {} unwrapped {}",
                        h.session_objects,
                        h.reinit_after_objects,
                        h.reinitializations,
                        h.standby_switches,
                        h.last_reinit_pause_ms,
                        h.key_copies_made,
                        h.background_queued,
                        h.background_done,
                        h.token_keys_cached,
                        h.token_key_unwraps
                    );
                }
                println!("uptime         {} s", s.uptime_ms / 1000);
            });
        }
        Cmd::Credentials {
            alias,
            tenant,
            accept,
            mit,
            amount,
            currency,
            eci,
        } => {
            let args = ops::CredentialsArgs {
                alias,
                tenant,
                accept: parse_accept(&accept)?,
                initiator: if mit {
                    ops::Initiator::Merchant
                } else {
                    ops::Initiator::Customer
                },
                amount_minor: amount,
                currency,
                authenticated_eci: eci,
            };
            // The answer holds the full number and the cryptogram: only its
            // redacted view leaves this block, and the `Pan` zeroizes on drop.
            let redacted = RedactedCredentials::of(&c.op::<ops::CredentialsOp>(&args)?);
            print(json, &redacted, RedactedCredentials::show);
        }
        Cmd::Audit { after, limit } => {
            // The newest records by default: the head from `stats`.
            let after = match after {
                Some(a) => Some(a),
                None => c
                    .op::<ops::StatsOp>(&NoArgs {})?
                    .logs
                    // The daemon's page size: 0 is 100, at most 1000.
                    .map(|l| {
                        let n = if limit == 0 { 100 } else { limit.min(1000) };
                        l.audit_seq.saturating_sub(u64::from(n))
                    }),
            };
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
        Cmd::Events { after, limit } => {
            let e = c.op::<ops::EventsOp>(&ops::PageArgs { after, limit })?;
            print(json, &e, |e| {
                for ev in &e.events {
                    println!(
                        "{:>8} {} {:<10} {:<24} {:<32} {}",
                        ev.seq,
                        fmt_ms(ev.at),
                        ev.scheme.as_deref().unwrap_or("-"),
                        ev.kind,
                        ev.alias.as_deref().unwrap_or("-"),
                        ev.detail
                    );
                }
            });
        }
        Cmd::Retention => {
            let r = c.op::<ops::RetentionOp>(&NoArgs {})?;
            print(json, &r, |r| {
                println!(
                    "{:<16} {:<20} {:>9} {:>8} {:>8} {:>8} {:>8}  oldest retained",
                    "tenant", "policy", "retained", "due now", "due 7d", "due 30d", "purged"
                );
                for t in &r.tenants {
                    println!(
                        "{:<16} {:<20} {:>9} {:>8} {:>8} {:>8} {:>8}  {}",
                        t.tenant,
                        t.policy,
                        t.pans_retained,
                        t.due_now,
                        t.due_7d,
                        t.due_30d,
                        t.purged_total,
                        t.oldest_retained_at
                            .map(fmt_ms)
                            .unwrap_or_else(|| "-".into())
                    );
                }
                println!(
                    "next purge at {}",
                    r.next_purge_at.map(fmt_ms).unwrap_or_else(|| "-".into())
                );
            });
        }
        Cmd::PurgeDue { tenant } => {
            let r = c.op::<ops::PurgeDue>(&ops::PurgeArgs { tenant })?;
            print(json, &r, |r| println!("purged {}", r.purged));
        }
        Cmd::Queue {
            state,
            limit,
            after,
        } => {
            let state = match state.as_deref() {
                None => None,
                Some("due") => Some(ops::JobState::Due),
                Some("scheduled") => Some(ops::JobState::Scheduled),
                Some("in_flight") => Some(ops::JobState::InFlight),
                Some("failed") => Some(ops::JobState::Failed),
                Some(other) => {
                    return Err(Failure::Usage(format!(
                        "--state {other:?}: due, scheduled, in_flight or failed"
                    )));
                }
            };
            let q = c.op::<ops::QueueListOp>(&ops::QueueListArgs {
                state,
                limit,
                after,
            })?;
            print(json, &q, |q| {
                for j in &q.jobs {
                    println!(
                        "{} {:<11} {:<10} {:<9} attempts {:<3} next {} {:<32} {}",
                        j.job_id,
                        j.kind,
                        j.scheme,
                        j.state.as_str(),
                        j.attempts,
                        fmt_ms(j.next_at),
                        j.alias,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
                if let Some(n) = &q.next {
                    println!("more: --after {n}");
                }
            });
        }
        Cmd::Retry { job_id } => {
            let r = c.op::<ops::QueueRetry>(&ops::JobArgs { job_id })?;
            print(json, &r, |r| println!("{} {}", r.job_id, r.state.as_str()));
        }
        Cmd::Pause { scheme } => {
            let r = c.op::<ops::SchemePause>(&ops::SchemeArgs { scheme })?;
            print(json, &r, |r| println!("{} paused {}", r.scheme, r.paused));
        }
        Cmd::Resume { scheme } => {
            let r = c.op::<ops::SchemeResume>(&ops::SchemeArgs { scheme })?;
            print(json, &r, |r| println!("{} paused {}", r.scheme, r.paused));
        }
        Cmd::Provision { alias } => {
            let r = c.op::<ops::Provision>(&ops::AliasArgs { alias })?;
            print(json, &r, show_record);
        }
        Cmd::RemovePan { alias } => {
            let r = c.op::<ops::RemovePan>(&ops::AliasArgs { alias })?;
            print(json, &r, show_record);
        }
        Cmd::KeyRotate { audit } => {
            let key = audit.then(|| "audit".to_owned());
            let r = c.op::<ops::KeyRotate>(&ops::KeyRotateArgs { key })?;
            print(json, &r, |r| {
                println!("{} key now at version {}", r.key, r.version)
            });
        }
        Cmd::KekRefresh { scheme, version } => {
            let r = c.op::<ops::KekRefresh>(&ops::KekRefreshArgs { scheme, version })?;
            print(json, &r, |r| {
                println!(
                    "{}: {} key refreshes queued for tokens under KEK version {}",
                    r.scheme, r.queued, r.version
                )
            });
        }
        Cmd::KeyRetire { version } => {
            let r = c.op::<ops::KeyRetire>(&ops::KeyRetireArgs { version })?;
            print(json, &r, |r| {
                println!(
                    "{} {}",
                    r.label,
                    if r.destroyed {
                        "destroyed"
                    } else {
                        "not present"
                    }
                )
            });
        }
        Cmd::Backup { to } => {
            let path = std::path::absolute(&to)
                .map_err(|e| Failure::Usage(format!("{}: {e}", to.display())))?;
            let r = c.op::<ops::BackupOp>(&ops::BackupArgs {
                path: path.to_string_lossy().into_owned(),
            })?;
            print(json, &r, |r| {
                println!(
                    "backup {} (+ .pans): {} aliases, {} PANs, audit up to #{}",
                    r.path, r.aliases, r.pans, r.audit_seq
                )
            });
        }
    }
    Ok(())
}

/// Masks card data in a result before an operator's terminal sees it: `pan`
/// and `network_token` keep their last four digits (as `Pan` prints them),
/// `cryptogram` is replaced. The forwarder's own client gets the values;
/// an operator CLI has no use for them (PCI DSS 3.4: render PAN unreadable
/// wherever it is displayed).
/// Longest PAN line read from stdin (a PAN is at most 19 digits).
const PAN_LINE_MAX: usize = 256;
/// Longest `call` args read from stdin.
const ARGS_MAX: usize = 1 << 20;

/// Reads stdin (up to a newline when `line`, else to its end) without a
/// buffer of its own: std's `Stdin` keeps what it read in an 8 KiB buffer
/// for the life of the process, and a growing `String` frees its old
/// blocks with the bytes in them. The one block here is sized once and
/// wiped on drop; input longer than `max` is refused.
fn read_stdin_wiped(max: usize, line: bool) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut fd = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut out = zeroize::Zeroizing::new(vec![0u8; max]);
    let mut n = 0;
    loop {
        if n == max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than {max} bytes"),
            ));
        }
        // A line is read a byte at a time, so nothing after it is taken.
        let want = if line { n + 1 } else { max };
        let got = fd.read(&mut out[n..want])?;
        if got == 0 {
            break;
        }
        n += got;
        if line && out[n - 1] == b'\n' {
            break;
        }
    }
    out.truncate(n);
    Ok(out)
}

/// Wipes every string (and key) of a JSON value before it is dropped.
fn wipe_strings(v: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        serde_json::Value::Object(map) => {
            for (_, field) in map.iter_mut() {
                wipe_strings(field);
            }
        }
        _ => {}
    }
}

fn redact_card_data(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &mut *field) {
                    ("pan" | "network_token", serde_json::Value::String(number)) => {
                        // Moved into a `Pan`, which wipes it when dropped.
                        let masked = Pan::new(std::mem::take(number)).masked();
                        *field = serde_json::Value::String(masked);
                    }
                    ("cryptogram", serde_json::Value::String(_)) => {
                        *field = serde_json::Value::String("<redacted>".into());
                    }
                    _ => redact_card_data(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_card_data),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::redact_card_data;

    #[test]
    fn call_output_masks_card_data() {
        let mut v = serde_json::json!({
            "kind": "network_token",
            "network_token": "4895370012345678",
            "cryptogram": "AQAHobLD1CBOMRA3qejWCm4/tRI=",
            "nested": [{"pan": "4111111111111111", "last4": "1111"}],
            "alias": "abc",
        });
        redact_card_data(&mut v);
        let text = v.to_string();
        for secret in ["4895370012345678", "4111111111111111", "AQAHobLD"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(v["network_token"].as_str().unwrap().ends_with("5678"));
        assert_eq!(v["nested"][0]["last4"], "1111");
        assert_eq!(v["alias"], "abc");
    }
}
