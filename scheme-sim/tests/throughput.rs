//! Load: 128 clients provisioning at once with a 50 ms injected latency,
//! as vaultd's provisioning worker drives it. Its own test binary, so it
//! runs alone.
//!
//! The rate itself (over 1,000 provisions per second here) is a figure of
//! the benchmark, `scripts/bench --provisioning` (BENCHMARKS.md), which
//! drives scheme-sim at 50 ms through vaultd. What a test can assert on a
//! machine of any load is that the calls are served side by side: 20 calls
//! of 50 ms per client take 1 s at best, so the bound is ten times that,
//! which a simulator serving the clients one after another (128 s) or a
//! few at a time does not meet.

mod common;

use std::time::{Duration, Instant};

use common::SimProcess;
use serde_json::json;

#[test]
fn serves_128_clients_at_once_at_50ms_latency() {
    let sim = SimProcess::start();
    sim.set_faults(
        &json!({"scheme": null, "fail_rate": 0.0, "latency_ms": 50, "kind": "http_503"}),
    );
    let threads = 128;
    let per_thread = 20;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let sim = &sim;
            s.spawn(move || {
                for i in 0..per_thread {
                    let a = sim.provision("visa", &format!("load-{t}-{i}"), "4111111111111111");
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let total = threads * per_thread;
    let rate = f64::from(total) / elapsed.as_secs_f64();
    eprintln!("{total} provisions in {elapsed:.2?}: {rate:.0}/s");
    assert_eq!(sim.stats()["tokens_issued"], total);
    // 20 calls of 50 ms one after another per client: 1 s at best.
    let best = Duration::from_millis(50) * per_thread;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    assert!(
        elapsed < best * 10,
        "{total} provisions took {elapsed:.2?} ({rate:.0}/s), more than 10 times the {best:?} \
         they take when served side by side (load average {})",
        load.trim()
    );
}
