//! The metrics endpoint (`[metrics] listen`): scraped over its Unix socket
//! while load runs, parsed with a real Prometheus text-format parser, and
//! checked against what the load did. No card number in any scrape.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_parse::{Sample, Scrape, Value};
use vault_e2e::{CEILING, TokenEnv, TokenOpts, pan, tokenize, wait_for_state};
use vault_proto::ErrorCode;
use vault_proto::ops::{AliasArgs, AliasStatus};

/// `GET /metrics` over the socket: the body.
fn scrape_text(socket: &Path) -> String {
    let mut s = UnixStream::connect(socket).expect("connect to the metrics socket");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: vaultd\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

fn scrape(socket: &Path) -> (String, Scrape) {
    let text = scrape_text(socket);
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    (text, parsed)
}

fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(b) => b.iter().map(|c| c.count).fold(0.0, f64::max),
        Value::Summary(_) => f64::NAN,
    }
}

/// The value of `metric` whose labels include `labels`; 0 when absent.
fn get(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

fn has(s: &Scrape, metric: &str) -> bool {
    s.samples.iter().any(|x| x.metric == metric)
}

#[test]
fn the_metrics_endpoint_counts_what_the_load_did() {
    let socket: PathBuf =
        std::env::temp_dir().join(format!("vaultd-metrics-{}.sock", std::process::id()));
    let clients: &'static str =
        Box::leak(format!("\n[metrics]\nlisten = \"{}\"\n", socket.display()).into_boxed_str());
    let t = TokenEnv::start(TokenOpts {
        clients,
        ..TokenOpts::default()
    });

    // Before any request: the endpoint answers, with the scrape-time gauges.
    let (_, first) = scrape(&socket);
    assert!(get(&first, "vaultd_process_resident_memory_bytes", &[]) > 0.0);
    for state in ["due", "scheduled", "in_flight", "failed"] {
        assert!(
            first
                .samples
                .iter()
                .any(|x| x.metric == "vaultd_queue_jobs" && x.labels.get("state") == Some(state)),
            "queue state {state}"
        );
    }

    // Load: N new cards, scraped while it runs.
    const N: u64 = 60;
    let pans: Vec<String> = (0..N).map(|i| pan("4000", 7_000 + i)).collect();
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (socket, done) = (socket.clone(), done.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u32;
            let mut texts = Vec::new();
            while !done.load(Ordering::Relaxed) || scrapes == 0 {
                let (text, _) = scrape(&socket);
                texts.push(text);
                scrapes += 1;
                // Pacing, as a scraper would (Prometheus: every 15 s).
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            texts
        })
    };
    let mut c = t.client();
    let mut aliases = Vec::new();
    for p in &pans {
        aliases.push(tokenize(&mut c, p, 12, 2031).record.alias);
    }
    // One refusal of a known kind.
    let unknown = c.op::<AliasStatus>(&AliasArgs {
        alias: "0".repeat(32),
    });
    let code = unknown
        .expect_err("an alias that does not exist")
        .code()
        .expect("an error code");
    done.store(true, Ordering::Relaxed);
    let during = scraper.join().expect("scraper");
    assert!(!during.is_empty());

    // Every tokenize answered is counted, with its latency; the refusal
    // under its code.
    let (text, s) = scrape(&socket);
    assert!(
        get(
            &s,
            "vaultd_requests_total",
            &[("op", "tokenize"), ("code", "ok")]
        ) >= N as f64,
        "{text}"
    );
    assert!(
        get(
            &s,
            "vaultd_request_duration_seconds_count",
            &[("op", "tokenize")]
        ) >= N as f64,
        "{text}"
    );
    assert_eq!(
        get(
            &s,
            "vaultd_requests_total",
            &[("op", "alias_status"), ("code", code.as_str())]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(code, ErrorCode::AliasNotFound);
    // Group commits, HSM calls, the audit chain's head.
    assert!(
        get(&s, "vaultd_store_commit_batch_size_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(has(&s, "vaultd_store_commit_duration_seconds"), "{text}");
    assert!(
        get(&s, "vaultd_hsm_call_duration_seconds_count", &[]) >= N as f64,
        "{text}"
    );
    assert!(get(&s, "vaultd_audit_seq", &[]) >= 1.0, "{text}");
    assert!(get(&s, "vaultd_aliases", &[]) >= N as f64, "{text}");

    // Provisioning outcomes arrive as scheme-sim answers.
    wait_for_state(CEILING, "provisioning outcomes in the metrics", || {
        let (_, s) = scrape(&socket);
        let n = get(
            &s,
            "vaultd_provisioning_jobs_total",
            &[
                ("scheme", "visa"),
                ("kind", "provision"),
                ("outcome", "provisioned"),
            ],
        );
        if n >= N as f64 {
            Ok(())
        } else {
            Err(format!("{n} provisioned"))
        }
    });
    let (text, s) = scrape(&socket);
    assert!(
        get(&s, "vaultd_tokens", &[("status", "active")]) >= N as f64,
        "{text}"
    );
    assert!(
        s.samples.iter().any(|x| x.metric == "vaultd_scheme_breaker"
            && x.labels.get("scheme") == Some("visa")
            && x.labels.get("state") == Some("closed")
            && value(x) == 1.0),
        "{text}"
    );

    // No card number, alias or token in any scrape.
    for body in during.iter().chain([&text]) {
        for p in &pans {
            assert!(!body.contains(p.as_str()), "a PAN in a scrape");
        }
        for a in &aliases {
            assert!(!body.contains(a.as_str()), "an alias in a scrape");
        }
    }
    drop(c);
    let _ = std::fs::remove_file(&socket);
}
