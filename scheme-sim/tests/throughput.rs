//! Load: provisions per second with a 50 ms injected latency, as vaultd's
//! provisioning worker drives it. Its own test binary, so it runs alone.

mod common;

use std::time::Instant;

use common::SimProcess;
use serde_json::json;

#[test]
fn sustains_over_1000_provisions_per_second_at_50ms_latency() {
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
    let elapsed = start.elapsed().as_secs_f64();
    let total = threads * per_thread;
    let rate = f64::from(total) / elapsed;
    eprintln!("{total} provisions in {elapsed:.2} s: {rate:.0}/s");
    assert_eq!(sim.stats()["tokens_issued"], total);
    // 128 clients each waiting 50 ms per call cap the rate at 2,560/s.
    assert!(rate > 1000.0, "{rate:.0} provisions/s");
}
