//! vault-bench: N connections × pipeline depth against a running vaultd,
//! throughput and latency per scenario, the daemon's memory and CPU, and
//! the raw SoftHSM and redb rates measured beside it (BENCHMARKS.md).

mod baseline;
mod cli;
mod error;
mod histogram;
mod load;
mod pans;
mod procfs;
mod report;
mod scenarios;
mod soak;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vault_proto::Client;
use vault_proto::ops::{HealthOp, NoArgs};

use crate::baseline::HsmTarget;
use crate::cli::{Args, Scenario};
use crate::error::{BenchError, BenchResult};
use crate::report::{Machine, Report};
use crate::scenarios::{Bench, Settings};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(BenchError::Io(e)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("vault-bench: FAILED (see the report's failures)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vault-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the connections; the first one also tells the daemon's pid.
async fn connect(args: &Args) -> BenchResult<(Vec<Arc<Client>>, Option<u32>)> {
    let mut clients = Vec::with_capacity(args.connections.max(1));
    let mut pid = None;
    for i in 0..args.connections.max(1) {
        let stream = tokio::net::UnixStream::connect(&args.socket)
            .await
            .map_err(|source| BenchError::Connect {
                socket: args.socket.display().to_string(),
                source,
            })?;
        if i == 0 {
            pid = procfs::peer_pid(&stream).ok().flatten();
        }
        clients.push(Arc::new(Client::from_stream(stream)));
    }
    Ok((clients, pid))
}

/// Opens `--connections` connections with effective uid `uid` (what the
/// daemon's SO_PEERCRED sees): on a thread of its own, which alone changes
/// its effective uid (the raw system call; glibc's `seteuid` would change
/// every thread's) and changes it back.
fn connect_as(args: &Args, uid: u32) -> BenchResult<Vec<Arc<Client>>> {
    let socket = args.socket.clone();
    let n = args.connections.max(1);
    let opened = std::thread::spawn(
        move || -> std::io::Result<Vec<std::os::unix::net::UnixStream>> {
            let keep = libc::uid_t::MAX; // -1: unchanged
            // SAFETY: plain system calls on this thread's credentials.
            if unsafe { libc::syscall(libc::SYS_setresuid, keep, uid, keep) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let streams = (0..n)
                .map(|_| std::os::unix::net::UnixStream::connect(&socket))
                .collect();
            // SAFETY: as above; back to the real uid (root) before the thread ends.
            unsafe { libc::syscall(libc::SYS_setresuid, keep, 0 as libc::uid_t, keep) };
            streams
        },
    )
    .join()
    .map_err(|_| BenchError::Setup("the connecting thread panicked".into()))?
    .map_err(|source| BenchError::Connect {
        socket: args.socket.display().to_string(),
        source,
    })?;
    opened
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true)?;
            Ok(Arc::new(Client::from_stream(
                tokio::net::UnixStream::from_std(s)?,
            )))
        })
        .collect::<std::io::Result<_>>()
        .map_err(|source| BenchError::Connect {
            socket: args.socket.display().to_string(),
            source,
        })
}

async fn baselines(args: &Args) -> Vec<baseline::Baseline> {
    if args.no_baselines {
        return Vec::new();
    }
    eprintln!(
        "vault-bench: measuring baselines ({:?} each)",
        args.baseline_time
    );
    let time = args.baseline_time;
    let hsm = args.hsm_module.clone().map(|module| HsmTarget {
        module,
        token_label: args.hsm_token_label.clone(),
        pin_file: args.hsm_pin_file.clone(),
    });
    let redb_dir = args.redb_dir.clone().unwrap_or_else(std::env::temp_dir);
    // Blocking work, one thread each in turn (and so one HSM session).
    let measured = tokio::task::spawn_blocking(move || {
        let mut out = match &hsm {
            Some(t) => baseline::hsm(t, time),
            None => Vec::new(),
        };
        out.extend(baseline::redb(&redb_dir, time));
        out
    })
    .await;
    let mut out = measured.unwrap_or_default();
    if args.hsm_module.is_none() {
        out.push(baseline::Baseline {
            name: baseline::HSM_SEAL_FP,
            what: "SoftHSM",
            ops: 0,
            secs: 0.0,
            per_sec: None,
            error: Some(
                "not measured: pass --hsm-module, --hsm-token-label and --hsm-pin-file".to_owned(),
            ),
        });
    }
    out
}

/// Runs the scenarios and prints the report; `Ok(false)` when a scenario
/// failed its verdict (the soak's verification or RSS).
async fn run(args: Args) -> BenchResult<bool> {
    let (clients, daemon) = connect(&args).await?;
    let health = clients[0].op::<HealthOp>(&NoArgs {}).await?;
    if !health.ready {
        return Err(BenchError::Setup(format!(
            "vaultd is not ready (hsm: {}, store: {})",
            health.hsm, health.store
        )));
    }
    if daemon.is_none() {
        eprintln!(
            "vault-bench: warning: the daemon's pid is unknown (SO_PEERCRED); no RSS or CPU figures"
        );
    }

    let baselines = baselines(&args).await;

    let pans = pans::PanGen::new()
        .map_err(|e| BenchError::Setup(format!("no randomness for the run tag: {e}")))?;
    let settings = Settings {
        depth: args.depth.max(1),
        duration: args.duration,
        warmup: args.warmup.unwrap_or(Duration::from_secs(1)),
        soak_warmup: args.warmup.unwrap_or(Duration::from_secs(300)),
        soak_window: args.soak_window,
        rss_tolerance: args.rss_tolerance,
        churn_per_sec: args.churn_per_sec,
        set_size: args.set_size,
        cards: args.cards,
        drain_timeout: args.drain_timeout,
        tenant: args.tenant.clone(),
        report_every: args.report_every,
        backlog: args.backlog,
    };
    let mut bench = Bench::new(clients, daemon, settings, pans);
    if let Some(uid) = args.plain_uid {
        bench.set_plain_clients(connect_as(&args, uid)?);
    }
    let scenario = match (args.scenario, args.fill) {
        (Some(s), _) => Some(s),
        (None, Some(_)) => None,
        (None, None) => Some(Scenario::All),
    };
    if let Some(s) = scenario {
        bench.run(s).await;
    }
    if let Some(n) = args.fill {
        bench.fill(n).await;
    }

    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::this(),
        connections: args.connections.max(1),
        depth: args.depth.max(1),
        duration_secs: args.duration.as_secs_f64(),
        daemon_pid: daemon,
        baselines,
        scenarios: std::mem::take(&mut bench.reports),
        ratios: Vec::new(),
        daemon_rss_end: daemon.and_then(procfs::rss),
        passed: true,
    };
    report.passed = !report.failed();
    compare_tokenize(&mut report);
    report.compute_ratios();
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Setup(format!("cannot encode the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", report.human());
    }
    Ok(!report.failed())
}

/// Issue 3: tokenize with provisioning running within 20% of without: the
/// same run's `provisioning:tokenize-paused`, or else its `tokenize-new`.
fn compare_tokenize(report: &mut Report) {
    let rate = |name: &'static str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == name && s.skipped.is_none())
            .map(|s| (name, s.ops_per_sec))
    };
    if let (Some((base_name, plain)), Some((_, busy))) = (
        rate("provisioning:tokenize-paused").or_else(|| rate("tokenize-new")),
        rate("provisioning:tokenize"),
    ) && plain > 0.0
        && let Some(s) = report
            .scenarios
            .iter_mut()
            .find(|s| s.name == "provisioning:tokenize")
    {
        s.notes.push(format!(
            "{:.0}% of {base_name}'s throughput in this run",
            busy / plain * 100.0
        ));
    }
}
