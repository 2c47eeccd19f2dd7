//! Recorded daemon answers (as vault-proto result structs) at a fixed
//! "now", and a helper to render the console into a `TestBackend`.
#![allow(dead_code)] // shared by several test crates, each uses a part

use std::collections::BTreeMap;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vault_proto::ops::{
    Audit, AuditView, EventView, Health, HsmStats, JobState, JobView, QueueCounts, QueueList,
    Retention, SchemeStats, Stats, TenantRetention,
};
use vault_tui::{App, QueueQuery, Update};

/// 2025-03-01 12:34:56 UTC.
pub const NOW: u64 = 1_740_832_496_000;
pub const SOCKET: &str = "/run/vaultd/vaultd.sock";
const DAY: u64 = 86_400_000;

/// A deterministic 32-character alias (aliases are random in vaultd).
pub fn alias(i: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..32)
        .map(|_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 32;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

pub fn health() -> Health {
    Health {
        ready: true,
        version: "0.1.0".into(),
        hsm: "ok".into(),
        store: "ok".into(),
        uptime_ms: 3 * 3_600_000 + 12 * 60_000 + 5_000,
    }
}

/// `stats` as sampled `k` seconds into the recording.
pub fn stats(k: u64) -> Stats {
    // A wave so the sparkline has shape: 0..=9 more tokens each second.
    let provisioned_by = |k: u64| (0..k).map(|i| (i * 7) % 10).sum::<u64>();
    let visa = 8_000 + provisioned_by(k);
    let mastercard = 5_200 + provisioned_by(k) / 2;
    let mut schemes = BTreeMap::new();
    schemes.insert(
        "amex".to_owned(),
        SchemeStats {
            provisioned: 1_204,
            not_eligible: 310,
            errors: 0,
            p50_ms: 140,
            p99_ms: 820,
            paused: true,
            breaker: Some("closed".into()),
        },
    );
    schemes.insert(
        "discover".to_owned(),
        SchemeStats {
            provisioned: 96,
            not_eligible: 12,
            errors: 41,
            p50_ms: 380,
            p99_ms: 5_000,
            paused: false,
            breaker: Some("open".into()),
        },
    );
    schemes.insert(
        "mastercard".to_owned(),
        SchemeStats {
            provisioned: mastercard,
            not_eligible: 88,
            errors: 3,
            p50_ms: 95,
            p99_ms: 610,
            paused: false,
            breaker: Some("half_open".into()),
        },
    );
    schemes.insert(
        "visa".to_owned(),
        SchemeStats {
            provisioned: visa,
            not_eligible: 1_023,
            errors: 7,
            p50_ms: 82,
            p99_ms: 455,
            paused: false,
            breaker: None,
        },
    );
    let tokens = [
        ("active", 14_210),
        ("pending", 432),
        ("inactive", 17),
        ("suspended", 9),
        ("deleted", 251),
        ("not_eligible", 1_433),
        ("failed", 12),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Stats {
        aliases: 16_364,
        pans_retained: 9_871,
        tokens,
        queue: QueueCounts {
            due: 118,
            scheduled: 97_402,
            in_flight: 8,
            failed: 12,
            reads: 0,
        },
        schemes,
        uptime_ms: health().uptime_ms,
        keys: None,
        logs: None,
        hsm: Some(HsmStats {
            reinit_after_objects: 600_000,
            session_objects: 246_000,
            reinitializations: 3,
            last_reinit_pause_ms: 0,
            standby_switches: 3,
            key_copies_made: 41_208,
            background_queued: 0,
            background_done: 20_118,
            token_key_unwraps: 3_112,
            token_keys_cached: 3_001,
        }),
    }
}

pub fn retention() -> Retention {
    let t = |tenant: &str, policy: &str, kept, now, d7, d30, purged, oldest_days: Option<u64>| {
        TenantRetention {
            tenant: tenant.into(),
            policy: policy.into(),
            pans_retained: kept,
            due_now: now,
            due_7d: d7,
            due_30d: d30,
            purged_total: purged,
            oldest_retained_at: oldest_days.map(|d| NOW - d * DAY),
        }
    };
    Retention {
        tenants: vec![
            t("acme-shop", "90d", 6_120, 41, 380, 1_502, 22_870, Some(97)),
            t("bistro-ch", "30d", 2_407, 0, 122, 640, 8_113, Some(29)),
            t(
                "cinema-zh",
                "active_token",
                1_344,
                7,
                20,
                51,
                310,
                Some(412),
            ),
            t("dojo-pay", "none", 0, 0, 0, 0, 0, None),
        ],
        next_purge_at: Some(NOW + 25 * 60_000),
    }
}

pub fn queue_page() -> QueueList {
    let schemes = ["visa", "mastercard", "amex", "discover"];
    let errors = [
        None,
        Some("token service answered 503, retrying"),
        Some("issuer declined provisioning"),
        Some("timeout after 5000 ms"),
    ];
    let jobs = (0..40u64)
        .map(|i| {
            let state = match i % 10 {
                0 | 1 => JobState::Due,
                2 => JobState::InFlight,
                7 => JobState::Failed,
                _ => JobState::Scheduled,
            };
            let attempts = match state {
                JobState::Failed => 8,
                JobState::Due => (i % 3) as u32,
                _ => (i % 5) as u32 + 1,
            };
            JobView {
                job_id: format!("job-{:06}", 120_000 + i),
                alias: alias(i),
                kind: if i % 6 == 5 { "delete" } else { "provision" }.into(),
                scheme: schemes[(i % 4) as usize].into(),
                state,
                attempts,
                next_at: match state {
                    JobState::Due => NOW - i * 1_000,
                    _ => NOW + i * 37_000,
                },
                last_error: if state == JobState::Failed {
                    Some("retries exhausted: issuer declined provisioning".into())
                } else if attempts > 0 {
                    errors[(i % 4) as usize].map(str::to_owned)
                } else {
                    None
                },
            }
        })
        .collect();
    QueueList {
        jobs,
        next: Some("job-000120039".into()),
    }
}

pub fn events() -> Vec<EventView> {
    let kinds = [
        ("token_active", "token service activated the token"),
        ("provision_queued", "provisioning queued"),
        (
            "provision_failed",
            "token service answered 503, retry in 30s",
        ),
        ("token_suspended", "issuer suspended the token"),
        ("pan_purged", "retention policy 90d: PAN erased"),
    ];
    (0..60u64)
        .map(|i| {
            let (kind, detail) = kinds[(i % 5) as usize];
            EventView {
                seq: 5_000 + i,
                at: NOW - (60 - i) * 4_000,
                alias: Some(alias(i + 100)),
                scheme: Some(["visa", "mastercard", "amex"][(i % 3) as usize].into()),
                kind: kind.into(),
                detail: detail.into(),
            }
        })
        .collect()
}

pub fn audit(chain_ok: bool) -> Audit {
    let ops = [
        ("shop-frontend", 1001, "tokenize", "ok"),
        ("forwarder", 1002, "credentials", "ok"),
        ("merchant-api", 1003, "alias_status", "alias_not_found"),
        ("secops", 0, "scheme_pause", "ok"),
        ("unknown", 4242, "stats", "unauthenticated"),
    ];
    let records = (0..60u64)
        .map(|i| {
            let (client, uid, op, outcome) = ops[(i % 5) as usize];
            AuditView {
                seq: 90_000 + i,
                at: NOW - (60 - i) * 3_000,
                client: client.into(),
                uid,
                pid: 20_000 + i as i32,
                op: op.into(),
                alias: (op != "stats" && op != "scheme_pause").then(|| alias(i + 500)),
                outcome: outcome.into(),
            }
        })
        .collect();
    Audit { records, chain_ok }
}

/// The console after a minute of answers from a busy daemon.
pub fn busy_app() -> App {
    let mut app = App::new(SOCKET, NOW);
    app.apply(Update::Connected {
        at_ms: NOW - 3_600_000,
    });
    app.apply(Update::Health(health()));
    for k in 0..=60 {
        app.apply(Update::Stats {
            at_ms: NOW - (60 - k) * 1_000,
            stats: stats(k),
        });
    }
    app.apply(Update::Retention(retention()));
    app.apply(Update::QueuePage {
        query: QueueQuery::default(),
        list: queue_page(),
    });
    app.apply(Update::Events(events()));
    app.apply(Update::Audit(audit(true)));
    app
}

/// Renders `app` at `width`×`height` and returns the terminal.
pub fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(never) => match never {},
    };
    let drawn = terminal.draw(|frame| vault_tui::ui::draw(frame, app));
    assert!(drawn.is_ok());
    assert_no_card_numbers(&terminal);
    terminal
}

/// No run of 12+ digits (a possible PAN or token number) anywhere on screen.
pub fn assert_no_card_numbers(terminal: &Terminal<TestBackend>) {
    let screen = terminal.backend().to_string();
    let mut run = 0;
    for c in screen.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        assert!(run < 12, "a 12+ digit run is on screen:\n{screen}");
    }
}

/// The screen as text lines, for assertions.
pub fn lines(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    buffer
        .content
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect())
        .collect()
}

/// The machine's load (`/proc/loadavg`), for messages about measured time.
pub fn machine_load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<&str> = avg.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {} on {cores} cores", avg.join(" "))
}
