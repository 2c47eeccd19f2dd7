//! The scenarios and what they share: the open connections, the card
//! generator, the sets of aliases created along the way, and a wrapper that
//! measures the daemon's and the bench's CPU around each run.

mod backlog;
mod foundation;
mod ledger;
mod mixed;
mod network;
mod verify;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vault_proto::Client;
use vault_proto::client::ClientError;
use vault_proto::ops::{Tokenize, TokenizeArgs};

use crate::load::{self, Failure, Outcome, Progress, Stop};
use crate::pans::PanGen;
use crate::procfs::{self, CpuSnapshot, SystemCpu};
use crate::report::ScenarioReport;

pub use crate::cli::Scenario;

/// Settings the scenarios read.
pub struct Settings {
    pub depth: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// The mixed soak's warm-up (RSS reference at its end).
    pub soak_warmup: Duration,
    pub soak_window: usize,
    pub rss_tolerance: f64,
    /// Soak: new cards per second at most (0: unpaced).
    pub churn_per_sec: f64,
    pub set_size: usize,
    pub cards: usize,
    pub drain_timeout: Duration,
    pub tenant: String,
    pub report_every: Duration,
    /// backlog: jobs queued for the paused schemes before the second round.
    pub backlog: u64,
}

/// Aliases created earlier, with the cards behind them (for repeats).
struct CardSet {
    pans: Arc<Vec<vault_proto::Pan>>,
    aliases: Arc<Vec<String>>,
}

pub struct Bench {
    clients: Vec<Arc<Client>>,
    /// Connections of a tenant without network tokens (`--plain-uid`).
    plain: Vec<Arc<Client>>,
    daemon: Option<u32>,
    cfg: Settings,
    pans: Arc<PanGen>,
    /// Next card number of this run: every new-PAN request takes one.
    next_card: Arc<AtomicU64>,
    set: Option<CardSet>,
    /// Aliases whose cards went through provisioning: the first batch (the
    /// credentials set).
    provisioned: Option<Arc<Vec<String>>>,
    /// Both batches of the provisioning scenario.
    provisioned_all: Option<Arc<Vec<String>>>,
    pub reports: Vec<ScenarioReport>,
}

impl Bench {
    pub fn new(
        clients: Vec<Arc<Client>>,
        daemon: Option<u32>,
        cfg: Settings,
        pans: PanGen,
    ) -> Bench {
        Bench {
            clients,
            plain: Vec::new(),
            daemon,
            cfg,
            pans: Arc::new(pans),
            next_card: Arc::new(AtomicU64::new(0)),
            set: None,
            provisioned: None,
            provisioned_all: None,
            reports: Vec::new(),
        }
    }

    pub async fn run(&mut self, scenario: Scenario) {
        match scenario {
            Scenario::TokenizeNew => self.tokenize_new().await,
            Scenario::TokenizeRepeat => self.tokenize_repeat().await,
            Scenario::AliasStatus => self.alias_status().await,
            Scenario::All => {
                self.tokenize_new().await;
                self.tokenize_repeat().await;
                self.alias_status().await;
            }
            Scenario::Provisioning => self.provisioning().await,
            Scenario::Credentials => self.credentials().await,
            Scenario::TokenMemory => self.token_memory().await,
            Scenario::Mixed => self.mixed().await,
            Scenario::Backlog => self.backlog().await,
        }
    }

    /// Connections of a tenant without network tokens, for `backlog`.
    pub fn set_plain_clients(&mut self, plain: Vec<Arc<Client>>) {
        self.plain = plain;
    }

    /// The first connection, for single calls (probes, `stats`).
    fn control(&self) -> Arc<Client> {
        Arc::clone(&self.clients[0])
    }

    fn timed(&self) -> Stop {
        Stop::For {
            warmup: self.cfg.warmup,
            measure: self.cfg.duration,
        }
    }

    fn progress(&self, label: &str) -> Progress {
        Progress {
            every: self.cfg.report_every,
            daemon: self.daemon,
            label: label.to_owned(),
            ops: None,
            extra: None,
        }
    }

    /// Runs a load and reports it with the CPU both processes used and the
    /// daemon's memory afterwards.
    async fn measured<F, Fut>(
        &self,
        name: &str,
        stop: Stop,
        progress: Option<Progress>,
        call: F,
    ) -> ScenarioReport
    where
        F: Fn(Arc<Client>, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.measured_run(name, stop, progress, call).await.0
    }

    /// [`Bench::measured`], also handing back the raw run (RSS samples).
    async fn measured_run<F, Fut>(
        &self,
        name: &str,
        stop: Stop,
        progress: Option<Progress>,
        call: F,
    ) -> (ScenarioReport, load::RunStats)
    where
        F: Fn(Arc<Client>, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.run_on(&self.clients, name, stop, progress, call).await
    }

    /// [`Bench::measured`] on other connections than the bench's own.
    async fn measured_on<F, Fut>(
        &self,
        clients: &[Arc<Client>],
        name: &str,
        stop: Stop,
        call: F,
    ) -> ScenarioReport
    where
        F: Fn(Arc<Client>, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.run_on(clients, name, stop, None, call).await.0
    }

    async fn run_on<F, Fut>(
        &self,
        clients: &[Arc<Client>],
        name: &str,
        stop: Stop,
        progress: Option<Progress>,
        call: F,
    ) -> (ScenarioReport, load::RunStats)
    where
        F: Fn(Arc<Client>, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        eprintln!("vault-bench: running {name}");
        let daemon_cpu = self.daemon.map(CpuSnapshot::take);
        let own_cpu = CpuSnapshot::own();
        let machine = SystemCpu::take();
        let run = load::run(clients, self.cfg.depth, stop, progress, call).await;
        let mut report = ScenarioReport::from_run(name, &run);
        report.daemon_cpu = daemon_cpu.map(|s| s.used_since());
        report.bench_cpu = Some(own_cpu.used_since());
        report.machine_cpu_cores = Some(machine.cores_since());
        report.daemon_rss = self.daemon.and_then(procfs::rss);
        (report, run)
    }
}

/// A tokenize request for `pan` with a far, valid expiry.
fn tokenize_args(pan: vault_proto::Pan) -> TokenizeArgs {
    TokenizeArgs {
        pan,
        exp_month: 12,
        exp_year: 2031,
        transaction_id: None,
    }
}

/// Aliases by call number, filled in as tokenize calls answer.
type AliasSlots = Arc<Mutex<Vec<Option<String>>>>;

/// One tokenize of `pan` whose alias is kept in `slots[i]`.
async fn tokenize_into(
    client: Arc<Client>,
    pan: vault_proto::Pan,
    slots: AliasSlots,
    i: usize,
) -> Outcome {
    let r = client
        .op::<Tokenize>(&tokenize_args(pan))
        .await
        .map_err(Failure::of)?;
    if let Ok(mut v) = slots.lock() {
        v[i] = Some(r.record.alias);
    }
    Ok(if r.created { "created" } else { "existing" })
}

/// `code: message` of a refused probe, for a skipped scenario.
fn refusal(what: &str, e: &ClientError) -> String {
    format!("{what} answered {e}")
}
