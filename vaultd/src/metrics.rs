//! The metrics endpoint (`[metrics] listen`, off by default): Prometheus
//! text format on a Unix socket or a loopback port, `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen, through the
//! `metrics` facade (a no-op when the endpoint is off):
//! - `vaultd_requests_total{op,code}`, `vaultd_request_duration_seconds{op}`
//!   (dispatch);
//! - `vaultd_store_commit_batch_size`, `vaultd_store_commit_duration_seconds`
//!   (the group-commit writer);
//! - `vaultd_hsm_call_duration_seconds{op}` (vault-hsm, per named call);
//! - `vaultd_provisioning_jobs_total{scheme,kind,outcome}`,
//!   `vaultd_provisioning_job_duration_seconds{scheme,kind}` (the worker).
//!
//! Gauges are read at each scrape from the same snapshot as the `stats` op:
//! aliases, PANs retained, tokens by status, queue depth by state, per
//! scheme paused and breaker state, the audit and event log heads, the
//! HSM's upkeep, and the process's resident memory.
//!
//! No label ever carries card data: ops, codes, schemes, kinds, outcomes
//! and HSM call names are fixed vocabularies (an op name a client sent is
//! used only if it is a known op).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use vault_proto::ops::Stats;

use crate::config::MetricsListen;

/// Latency buckets, in seconds: 50 µs to 5 s.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
/// Requests per group commit.
const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What a scrape reads: the `stats` snapshot.
pub type Snapshot = Arc<dyn Fn() -> Result<Stats, String> + Send + Sync>;

/// Installs the process-wide recorder. Call once, before anything records.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("vaultd_store_commit_batch_size".into()),
                BATCH,
            )
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The endpoint's socket, bound (so that a port in use stops the start).
pub enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Binds `listen`: a Unix socket gets mode 0660 (the daemon's user and
/// group scrape; add the scraper to the group).
pub fn bind(listen: &MetricsListen) -> std::io::Result<Bound> {
    match listen {
        MetricsListen::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(Bound::Tcp(tokio::net::TcpListener::from_std(l)?))
        }
        MetricsListen::Unix(path) => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            l.set_nonblocking(true)?;
            Ok(Bound::Unix(tokio::net::UnixListener::from_std(l)?))
        }
    }
}

/// Serves `GET /metrics` on `bound` until the process ends.
pub async fn serve(
    bound: Bound,
    handle: PrometheusHandle,
    snapshot: Snapshot,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, snapshot) = (handle.clone(), snapshot.clone());
            async move { scrape(handle, snapshot).await }
        }),
    );
    match bound {
        Bound::Tcp(l) => axum::serve(l, app).await,
        Bound::Unix(l) => axum::serve(l, app).await,
    }
}

async fn scrape(handle: PrometheusHandle, snapshot: Snapshot) -> axum::response::Response {
    let read = tokio::task::spawn_blocking(move || snapshot()).await;
    match read {
        Ok(Ok(stats)) => set_gauges(&stats),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: could not read the stats snapshot"),
        Err(e) => tracing::warn!(error = %e, "metrics: the stats snapshot task failed"),
    }
    if let Some(rss) = resident_bytes() {
        gauge!("vaultd_process_resident_memory_bytes").set(rss as f64);
    }
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

fn set_gauges(s: &Stats) {
    gauge!("vaultd_aliases").set(s.aliases as f64);
    gauge!("vaultd_pans_retained").set(s.pans_retained as f64);
    gauge!("vaultd_uptime_seconds").set(s.uptime_ms as f64 / 1000.0);
    for (status, n) in &s.tokens {
        gauge!("vaultd_tokens", "status" => status.clone()).set(*n as f64);
    }
    let q = &s.queue;
    for (state, n) in [
        ("due", q.due),
        ("scheduled", q.scheduled),
        ("in_flight", q.in_flight),
        ("failed", q.failed),
    ] {
        gauge!("vaultd_queue_jobs", "state" => state).set(n as f64);
    }
    for (scheme, st) in &s.schemes {
        gauge!("vaultd_scheme_paused", "scheme" => scheme.clone())
            .set(f64::from(u8::from(st.paused)));
        if let Some(b) = &st.breaker {
            for state in ["closed", "open", "half_open"] {
                gauge!("vaultd_scheme_breaker", "scheme" => scheme.clone(), "state" => state)
                    .set(f64::from(u8::from(b == state)));
            }
        }
    }
    if let Some(l) = &s.logs {
        gauge!("vaultd_audit_seq").set(l.audit_seq as f64);
        gauge!("vaultd_events_seq").set(l.events_seq as f64);
    }
    if let Some(h) = &s.hsm {
        gauge!("vaultd_hsm_session_objects").set(h.session_objects as f64);
        gauge!("vaultd_hsm_reinitializations").set(h.reinitializations as f64);
        gauge!("vaultd_hsm_last_reinit_pause_seconds").set(h.last_reinit_pause_ms as f64 / 1000.0);
    }
}

/// The process's resident set, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| p * pages)
}

/// Records one answered request. `op` is a known op's name or a fixed
/// placeholder (`(unknown op)`, `(malformed)`): labels are a closed set.
pub fn request(op: &'static str, code: &'static str, took: Duration) {
    metrics::counter!("vaultd_requests_total", "op" => op, "code" => code).increment(1);
    metrics::histogram!("vaultd_request_duration_seconds", "op" => op).record(took.as_secs_f64());
}
