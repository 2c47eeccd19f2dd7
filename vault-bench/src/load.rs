//! The load driver: every connection runs `depth` tasks, each with one
//! request in flight at a time, so each connection keeps `depth` requests
//! pipelined (closed loop). Tasks keep their own histogram and counters and
//! merge them at the end; only shared progress counters are atomic.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use vault_proto::Client;
use vault_proto::client::ClientError;

use crate::histogram::Histogram;
use crate::procfs;

/// A refused or failed request; `op` names it in mixed workloads.
pub struct Failure {
    pub op: Option<&'static str>,
    pub err: ClientError,
}

impl Failure {
    pub fn of(err: ClientError) -> Failure {
        Failure { op: None, err }
    }

    pub fn in_op(op: &'static str, err: ClientError) -> Failure {
        Failure { op: Some(op), err }
    }

    /// The error's wire code (or `connection` / `protocol`), prefixed with
    /// the op when known.
    fn key(&self) -> String {
        let code = match &self.err {
            ClientError::Server(e) => e.code.as_str(),
            ClientError::Io(_) => "connection",
            ClientError::Protocol(_) => "protocol",
        };
        match self.op {
            Some(op) => format!("{op}:{code}"),
            None => code.to_owned(),
        }
    }

    /// The connection is gone: no point sending more on it.
    fn fatal(&self) -> bool {
        !matches!(self.err, ClientError::Server(_))
    }
}

/// A successful request's label (e.g. `created`, `network_token`).
pub type Outcome = Result<&'static str, Failure>;

/// When the load stops.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Run `warmup` unrecorded, then record for `measure`.
    For { warmup: Duration, measure: Duration },
    /// Exactly this many requests in all, every one recorded.
    Count(u64),
}

/// Periodic progress lines on stderr (soak and fill runs).
pub struct Progress {
    pub every: Duration,
    pub daemon: Option<u32>,
    pub label: String,
    /// Per-op counts to print as per-op rates (mixed workloads).
    pub ops: Option<Arc<OpCounters>>,
    /// More to append to each line (e.g. the live population).
    pub extra: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

/// Successful requests per op kind, bumped by a mixed workload's calls, so
/// progress lines can show each op's rate without locking.
pub struct OpCounters {
    names: &'static [&'static str],
    counts: Vec<AtomicU64>,
}

impl OpCounters {
    pub fn new(names: &'static [&'static str]) -> OpCounters {
        OpCounters {
            names,
            counts: names.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one answer of op `i` (an index into the names).
    pub fn bump(&self, i: usize) {
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }
}

/// The daemon's RSS at one moment of a run, seconds from its start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssSample {
    pub secs: f64,
    pub rss_kb: u64,
}

/// What one run measured.
pub struct RunStats {
    pub elapsed: Duration,
    pub hist: Histogram,
    pub ok: u64,
    pub failed: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Connections that broke during the run, with the first reason.
    pub lost_connections: Vec<String>,
    /// The daemon's RSS at every progress line, at the end of the warm-up
    /// and when the load stopped (empty without progress or daemon pid).
    pub rss_samples: Vec<RssSample>,
    /// Seconds of unrecorded warm-up at the start.
    pub warmup_secs: f64,
}

#[derive(Default)]
struct Shared {
    seq: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

struct TaskTally {
    hist: Histogram,
    ok: u64,
    failed: u64,
    outcomes: HashMap<&'static str, u64>,
    errors: HashMap<String, u64>,
    lost: Option<String>,
}

/// Drives `call(client, seq)` on every connection × `depth` until `stop`.
/// `seq` numbers requests from 0 across the whole run, so callers can derive
/// a unique card or pick an alias from it.
pub async fn run<F, Fut>(
    clients: &[Arc<Client>],
    depth: usize,
    stop: Stop,
    progress: Option<Progress>,
    call: F,
) -> RunStats
where
    F: Fn(Arc<Client>, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let call = Arc::new(call);
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let (record_from, end) = match stop {
        Stop::For { warmup, measure } => (start + warmup, Some(start + warmup + measure)),
        Stop::Count(_) => (start, None),
    };
    let limit = match stop {
        Stop::Count(n) => Some(n),
        Stop::For { .. } => None,
    };
    let finished = Arc::new(AtomicBool::new(false));
    let reporter = progress.map(|p| {
        tokio::spawn(report_progress(
            p,
            Arc::clone(&shared),
            Arc::clone(&finished),
            start,
            record_from,
            limit,
        ))
    });

    let mut tasks = Vec::with_capacity(clients.len() * depth);
    for client in clients {
        for _ in 0..depth.max(1) {
            let client = Arc::clone(client);
            let call = Arc::clone(&call);
            let shared = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                let mut t = TaskTally {
                    hist: Histogram::default(),
                    ok: 0,
                    failed: 0,
                    outcomes: HashMap::new(),
                    errors: HashMap::new(),
                    lost: None,
                };
                loop {
                    let seq = shared.seq.fetch_add(1, Relaxed);
                    if limit.is_some_and(|n| seq >= n) || end.is_some_and(|e| Instant::now() >= e) {
                        break;
                    }
                    let t0 = Instant::now();
                    let outcome = call(Arc::clone(&client), seq).await;
                    let took = t0.elapsed();
                    let recorded = t0 >= record_from;
                    match outcome {
                        Ok(tag) => {
                            shared.ok.fetch_add(1, Relaxed);
                            if recorded {
                                t.ok += 1;
                                t.hist.record(took);
                                *t.outcomes.entry(tag).or_default() += 1;
                            }
                        }
                        Err(f) => {
                            shared.failed.fetch_add(1, Relaxed);
                            if recorded || f.fatal() {
                                t.failed += 1;
                                *t.errors.entry(f.key()).or_default() += 1;
                            }
                            if f.fatal() {
                                t.lost = Some(f.err.to_string());
                                break;
                            }
                        }
                    }
                }
                t
            }));
        }
    }

    let mut stats = RunStats {
        elapsed: Duration::ZERO,
        hist: Histogram::default(),
        ok: 0,
        failed: 0,
        outcomes: BTreeMap::new(),
        errors: BTreeMap::new(),
        lost_connections: Vec::new(),
        rss_samples: Vec::new(),
        warmup_secs: record_from.duration_since(start).as_secs_f64(),
    };
    for task in tasks {
        match task.await {
            Ok(t) => {
                stats.hist.merge(&t.hist);
                stats.ok += t.ok;
                stats.failed += t.failed;
                for (k, v) in t.outcomes {
                    *stats.outcomes.entry(k.to_owned()).or_default() += v;
                }
                for (k, v) in t.errors {
                    *stats.errors.entry(k).or_default() += v;
                }
                if let Some(why) = t.lost {
                    stats.lost_connections.push(why);
                }
            }
            Err(e) => stats.lost_connections.push(format!("load task ended: {e}")),
        }
    }
    stats.elapsed = Instant::now().saturating_duration_since(record_from);
    finished.store(true, Relaxed);
    if let Some(r) = reporter {
        stats.rss_samples = r.await.unwrap_or_default();
    }
    stats
}

/// Prints a line every `p.every` (and one when the warm-up ends) and
/// returns the daemon's RSS at each of them plus one when the load stopped.
async fn report_progress(
    p: Progress,
    shared: Arc<Shared>,
    finished: Arc<AtomicBool>,
    start: Instant,
    warm_end: Instant,
    limit: Option<u64>,
) -> Vec<RssSample> {
    let mut samples = Vec::new();
    let mut sample = |now: Instant| {
        let rss = p.daemon.and_then(procfs::rss);
        if let Some(r) = rss {
            samples.push(RssSample {
                secs: now.duration_since(start).as_secs_f64(),
                rss_kb: r.rss_kb,
            });
        }
        rss.map(|r| r.describe())
            .unwrap_or_else(|| "RSS unknown".to_owned())
    };
    let mut last_ok = 0;
    let mut last_ops = p.ops.as_ref().map(|o| o.snapshot());
    let mut last_at = start;
    let tick = Duration::from_millis(200).min(p.every);
    let mut next = start + p.every;
    let mut warm_marked = false;
    while !finished.load(Relaxed) {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        if !warm_marked && now >= warm_end {
            warm_marked = true;
            let rss = sample(now);
            eprintln!(
                "[{}] t={:>6.0}s warm-up over  daemon {rss}",
                p.label,
                now.duration_since(start).as_secs_f64()
            );
        }
        if now < next {
            continue;
        }
        next += p.every;
        let secs = now.duration_since(last_at).as_secs_f64();
        let ok = shared.ok.load(Relaxed);
        let failed = shared.failed.load(Relaxed);
        let rate = (ok - last_ok) as f64 / secs;
        last_ok = ok;
        last_at = now;
        let mut per_op = String::new();
        if let (Some(ops), Some(before)) = (&p.ops, &mut last_ops) {
            let counts = ops.snapshot();
            for ((name, n), b) in ops.names.iter().zip(&counts).zip(before.iter()) {
                per_op.push_str(&format!(
                    " {name} {:.0}/s",
                    n.saturating_sub(*b) as f64 / secs
                ));
            }
            *before = counts;
        }
        let extra = p
            .extra
            .as_ref()
            .map(|f| format!(" {}", f()))
            .unwrap_or_default();
        let rss = sample(now);
        let of = limit.map(|n| format!("/{n}")).unwrap_or_default();
        eprintln!(
            "[{}] t={:>6.0}s ok={ok}{of} errors={failed} {rate:>9.0} ops/s{per_op}{extra}  daemon {rss}",
            p.label,
            now.duration_since(start).as_secs_f64()
        );
    }
    sample(Instant::now());
    samples
}
