//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// tokenize with a new Luhn-valid PAN per request
    TokenizeNew,
    /// tokenize PANs of a set tokenized beforehand (convergent lookups)
    TokenizeRepeat,
    /// alias_status on aliases created beforehand
    AliasStatus,
    /// tokenize-new, tokenize-repeat and alias-status (issue 2)
    All,
    /// tokenize --cards cards of every scheme, then wait until the
    /// provisioning queue drains (daemon with scheme-sim and network tokens)
    Provisioning,
    /// customer-initiated credentials over aliases with active tokens
    Credentials,
    /// provisioning (2 x --cards tokens), then one credentials call on
    /// each provisioned alias, and the daemon's memory after each step
    /// (issue 20: RSS under 150 MB after 100,000 tokens, --cards 50000)
    TokenMemory,
    /// soak: tokenize/delete/status/credentials mix for --warmup plus
    /// --duration, a progress line every --report-every, then every
    /// acknowledged write verified and an RSS verdict (fails the run)
    Mixed,
    /// issue 22: tokenize of new PANs (a tenant with network tokens and one
    /// without, --plain-uid) on an empty queue, over --backlog jobs queued
    /// for paused schemes, and while the worker provisions them
    Backlog,
}

/// Load generator for a running vaultd, with raw SoftHSM and redb baselines
/// measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "vault-bench", version)]
pub struct Args {
    /// vaultd's socket.
    #[arg(long, env = "VAULTD_SOCKET")]
    pub socket: PathBuf,
    /// Connections to open.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Requests each connection keeps in flight.
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Measured time per scenario (e.g. 10s, 2m, 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unrecorded load before each timed scenario (default 1s). For mixed
    /// (default 5m) it is also the soak's warm-up: the daemon's RSS at its
    /// end is the reference for --rss-tolerance.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// mixed: once more than this many soak-created aliases are live, the
    /// delete slots delete the oldest, so the population stays about here.
    #[arg(long, default_value_t = 20_000)]
    pub soak_window: usize,
    /// mixed: the run fails if the daemon's RSS after the warm-up strays
    /// more than this many % from its value at the warm-up's end.
    #[arg(long, default_value_t = 15.0)]
    pub rss_tolerance: f64,
    /// Soak: at most this many new cards per second (and so about as many
    /// deletes once the window is full); 0 = as fast as the mix runs.
    /// The soaks of sessions 3-10 ran provisioning daemons paced (then each
    /// card's key was a token object, which SoftHSM2's file backend
    /// destroys in time linear in the token's object count).
    #[arg(long, default_value_t = 0.0)]
    pub churn_per_sec: f64,
    /// What to run (default: all, or nothing but --fill when that is given).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// Tokenize this many new PANs as fast as possible, then report the
    /// daemon's RSS (issue 2: < 100 MB after 1,000,000 aliases).
    #[arg(long)]
    pub fill: Option<u64>,
    /// Cards tokenized beforehand for tokenize-repeat and alias-status.
    #[arg(long, default_value_t = 10_000)]
    pub set_size: usize,
    /// backlog: jobs queued for the paused schemes (new cards of the bench
    /// tenant) before tokenize is measured again.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Open --connections more connections with this effective uid (the
    /// daemon's client table maps it to a tenant without network tokens),
    /// for `backlog`. Needs root; only the connecting thread changes uid.
    #[arg(long)]
    pub plain_uid: Option<u32>,
    /// Cards tokenized (all four schemes) for provisioning and credentials.
    #[arg(long, default_value_t = 10_000)]
    pub cards: usize,
    /// Longest wait for the provisioning queue to drain.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The tenant the bench client's aliases belong to (for `credentials`).
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Progress lines (mixed, fill) this often.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub report_every: Duration,
    /// PKCS#11 module for the HSM baselines (normally the daemon's).
    #[arg(long)]
    pub hsm_module: Option<PathBuf>,
    /// Token label for the HSM baselines.
    #[arg(long, default_value = "vaultd")]
    pub hsm_token_label: String,
    /// PIN file for the HSM baselines (or VAULTD_HSM_PIN).
    #[arg(long)]
    pub hsm_pin_file: Option<PathBuf>,
    /// Directory for the redb baseline's temp file (put it on the daemon's
    /// file system). Default: the system temp dir.
    #[arg(long)]
    pub redb_dir: Option<PathBuf>,
    /// Time each baseline runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub baseline_time: Duration,
    /// Skip the baselines.
    #[arg(long)]
    pub no_baselines: bool,
    /// Threads of the bench client's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `"250ms"`, `"10s"`, `"5m"`, `"1h"`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms, 10s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_match_issue_two() {
        let a = Args::try_parse_from(["vault-bench", "--socket", "/tmp/x.sock"]).expect("parse");
        assert_eq!((a.connections, a.depth), (32, 16));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.scenario, None);
        assert_eq!(a.warmup, None, "per-scenario default");
        assert_eq!((a.soak_window, a.rss_tolerance), (20_000, 15.0));
        let a = Args::try_parse_from([
            "vault-bench",
            "--socket",
            "/tmp/x.sock",
            "--scenario",
            "tokenize-new",
        ])
        .expect("parse");
        assert_eq!(a.scenario, Some(Scenario::TokenizeNew));
    }
}
