//! The daemon task against a fake vaultd: paging, actions, disconnect and
//! reconnect.

#[path = "common/fake_daemon.rs"]
mod fake_daemon;

use std::sync::Arc;
use std::time::Duration;

use fake_daemon::{FakeDaemon, ok, refuse};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;
use vault_proto::ErrorCode;
use vault_proto::frame::decode_args;
use vault_proto::ops::{JobState, JobView, QueueList, QueueListArgs, SchemeArgs, SchemePaused};
use vault_tui::daemon::{self, WorkerConfig};
use vault_tui::message::QUEUE_PAGE;
use vault_tui::{Command, QueueQuery, Update};

fn config(path: &std::path::Path) -> WorkerConfig {
    WorkerConfig {
        socket: path.to_owned(),
        poll_every: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        audit_idle_every: Duration::from_secs(30),
    }
}

/// Only ends a hung test: 300 polls of [`config`]'s 100 ms.
const CEILING: Duration = Duration::from_secs(30);

/// Waits for the first update that `want` picks.
async fn expect<T>(rx: &mut UnboundedReceiver<Update>, want: impl Fn(Update) -> Option<T>) -> T {
    let found = timeout(CEILING, async {
        loop {
            let update = rx.recv().await.expect("daemon task alive");
            if let Some(found) = want(update) {
                return found;
            }
        }
    })
    .await;
    found.expect("the expected update (the ceiling only ends a hung test)")
}

/// A queue of 100,000 jobs, served `limit` at a time after the cursor.
fn big_queue(id: u64, op: &str, args: Option<&[u8]>) -> Option<Vec<u8>> {
    const TOTAL: u64 = 100_000;
    match op {
        "queue_list" => {
            let args: QueueListArgs = decode_args(args).ok()?;
            let start = args.after.as_deref().map_or(0, |c| {
                c.trim_start_matches("job-").parse::<u64>().unwrap_or(0) + 1
            });
            let end = (start + u64::from(args.limit)).min(TOTAL);
            let jobs: Vec<JobView> = (start..end)
                .map(|i| JobView {
                    job_id: format!("job-{i}"),
                    alias: format!("{i:0>32}"),
                    kind: "provision".into(),
                    scheme: "visa".into(),
                    state: JobState::Scheduled,
                    attempts: 0,
                    next_at: 0,
                    last_error: None,
                })
                .collect();
            let next = (end < TOTAL).then(|| format!("job-{}", end - 1));
            ok(id, &QueueList { jobs, next })
        }
        _ => refuse(id, ErrorCode::UnknownOp, "not in this fake"),
    }
}

fn queue_requests(fake: &FakeDaemon) -> Vec<QueueListArgs> {
    fake.seen()
        .into_iter()
        .filter(|s| s.op == "queue_list")
        .map(|s| decode_args(s.args.as_deref()).expect("queue_list args"))
        .collect()
}

#[tokio::test]
async fn queue_is_fetched_a_page_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDaemon::start(&dir.path().join("vaultd.sock"), Arc::new(big_queue));
    let (tx, mut updates) = unbounded_channel();
    let (commands, task) = daemon::spawn(config(&fake.path), tx);

    let first = expect(&mut updates, |u| match u {
        Update::QueuePage { query, list } => Some((query, list)),
        _ => None,
    })
    .await;
    assert_eq!(first.0, QueueQuery::default());
    assert_eq!(first.1.jobs.len(), QUEUE_PAGE as usize);
    let cursor = first.1.next.clone().expect("a next cursor");

    let second = QueueQuery {
        state: None,
        after: Some(cursor.clone()),
    };
    commands
        .send(Command::ShowQueue(second.clone()))
        .expect("send");
    let page = expect(&mut updates, |u| match u {
        Update::QueuePage { query, list } if query == second => Some(list),
        _ => None,
    })
    .await;
    assert_eq!(page.jobs[0].job_id, format!("job-{}", QUEUE_PAGE));

    let requests = queue_requests(&fake);
    assert!(
        requests.iter().all(|a| a.limit == QUEUE_PAGE),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|a| a.after.as_deref() == Some(cursor.as_str()))
    );
    task.abort();
    fake.stop().await;
}

#[tokio::test]
async fn pause_is_sent_and_its_outcome_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let respond = |id: u64, op: &str, args: Option<&[u8]>| match op {
        "scheme_pause" => {
            let args: SchemeArgs = decode_args(args).ok()?;
            if args.scheme == "visa" {
                ok(
                    id,
                    &SchemePaused {
                        scheme: args.scheme,
                        paused: true,
                    },
                )
            } else {
                refuse(id, ErrorCode::BadRequest, "unknown scheme")
            }
        }
        _ => refuse(id, ErrorCode::UnknownOp, "not in this fake"),
    };
    let fake = FakeDaemon::start(&dir.path().join("vaultd.sock"), Arc::new(respond));
    let (tx, mut updates) = unbounded_channel();
    let (commands, task) = daemon::spawn(config(&fake.path), tx);

    commands
        .send(Command::PauseScheme {
            scheme: "visa".into(),
        })
        .expect("send");
    let done = expect(&mut updates, |u| match u {
        Update::ActionDone { ok, text } => Some((ok, text)),
        _ => None,
    })
    .await;
    assert_eq!(done, (true, "visa is paused".to_owned()));

    commands
        .send(Command::PauseScheme {
            scheme: "diners".into(),
        })
        .expect("send");
    let (ok, text) = expect(&mut updates, |u| match u {
        Update::ActionDone { ok, text } => Some((ok, text)),
        _ => None,
    })
    .await;
    assert!(!ok);
    assert!(text.contains("scheme_pause refused: bad_request"), "{text}");
    task.abort();
    fake.stop().await;
}

fn audit_reads(fake: &FakeDaemon) -> usize {
    fake.seen().iter().filter(|s| s.op == "audit").count()
}

fn stats_reads(fake: &FakeDaemon) -> usize {
    fake.seen().iter().filter(|s| s.op == "stats").count()
}

/// vaultd audits every read of the audit log, so the console tails it
/// every poll only while the Audit tab is on screen.
#[tokio::test]
async fn the_audit_log_is_tailed_only_while_its_tab_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDaemon::start(&dir.path().join("vaultd.sock"), Arc::new(big_queue));
    let (tx, mut updates) = unbounded_channel();
    let (commands, task) = daemon::spawn(config(&fake.path), tx);

    // A few polls (100 ms apart): one read for the chain verdict, no more.
    for _ in 0..4 {
        expect(&mut updates, |u| {
            matches!(u, Update::QueuePage { .. }).then_some(())
        })
        .await;
    }
    assert!(stats_reads(&fake) >= 4);
    assert_eq!(audit_reads(&fake), 1);

    // The tab opens: read at once, then on every poll.
    commands.send(Command::AuditLive(true)).expect("send");
    let polled = stats_reads(&fake);
    for _ in 0..4 {
        expect(&mut updates, |u| {
            matches!(u, Update::QueuePage { .. }).then_some(())
        })
        .await;
    }
    let live_reads = audit_reads(&fake) - 1;
    let live_polls = stats_reads(&fake) - polled;
    assert!(
        live_reads > live_polls,
        "{live_reads} reads in {live_polls} polls"
    );

    // It closes: back to idle.
    commands.send(Command::AuditLive(false)).expect("send");
    expect(&mut updates, |u| {
        matches!(u, Update::QueuePage { .. }).then_some(())
    })
    .await;
    let closed_at = audit_reads(&fake);
    for _ in 0..4 {
        expect(&mut updates, |u| {
            matches!(u, Update::QueuePage { .. }).then_some(())
        })
        .await;
    }
    assert_eq!(audit_reads(&fake), closed_at);
    task.abort();
    fake.stop().await;
}

#[tokio::test]
async fn disconnect_is_reported_and_the_task_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vaultd.sock");
    let (tx, mut updates) = unbounded_channel();
    let (_commands, task) = daemon::spawn(config(&path), tx);

    // No daemon yet.
    let (since, error) = expect(&mut updates, |u| match u {
        Update::Disconnected { since_ms, error } => Some((since_ms, error)),
        _ => None,
    })
    .await;
    assert!(error.contains("cannot connect"), "{error}");
    // Later attempts keep the first "since".
    let again = expect(&mut updates, |u| match u {
        Update::Disconnected { since_ms, .. } => Some(since_ms),
        _ => None,
    })
    .await;
    assert_eq!(again, since);

    let fake = FakeDaemon::start(&path, Arc::new(big_queue));
    expect(&mut updates, |u| {
        matches!(u, Update::Connected { .. }).then_some(())
    })
    .await;
    expect(&mut updates, |u| {
        matches!(u, Update::QueuePage { .. }).then_some(())
    })
    .await;

    // The daemon goes away (restart): reported, then reconnected.
    fake.stop().await;
    expect(&mut updates, |u| {
        matches!(u, Update::Disconnected { .. }).then_some(())
    })
    .await;
    let fake = FakeDaemon::start(&path, Arc::new(big_queue));
    expect(&mut updates, |u| {
        matches!(u, Update::Connected { .. }).then_some(())
    })
    .await;
    task.abort();
    fake.stop().await;
}

#[tokio::test]
async fn a_hung_daemon_counts_as_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDaemon::start(&dir.path().join("vaultd.sock"), Arc::new(|_, _, _| None));
    let (tx, mut updates) = unbounded_channel();
    let mut config = config(&fake.path);
    config.request_timeout = Duration::from_millis(300);
    let (_commands, task) = daemon::spawn(config, tx);
    expect(&mut updates, |u| {
        matches!(u, Update::Connected { .. }).then_some(())
    })
    .await;
    let error = expect(&mut updates, |u| match u {
        Update::Disconnected { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(error.contains("not answered within"), "{error}");
    task.abort();
    fake.stop().await;
}

/// A daemon with a million audit records and events: the console starts at
/// the newest page of each (from `stats.logs`), not at the oldest.
#[tokio::test]
async fn long_logs_are_tailed_from_their_newest_records() {
    use vault_proto::ops::{Audit, AuditView, EventView, Events, LogHeads, PageArgs, Stats};
    const NEWEST: u64 = 1_000_000;
    let respond = |id: u64, op: &str, args: Option<&[u8]>| {
        let page = |args: Option<&[u8]>| {
            let a: PageArgs = decode_args(args).ok()?;
            let start = a.after.unwrap_or(0) + 1;
            Some(start..=(start + u64::from(a.limit) - 1).min(NEWEST))
        };
        match op {
            "stats" => ok(
                id,
                &Stats {
                    logs: Some(LogHeads {
                        audit_seq: NEWEST,
                        events_seq: NEWEST,
                    }),
                    ..Stats::default()
                },
            ),
            "audit" => {
                let records = page(args)?
                    .map(|seq| AuditView {
                        seq,
                        at: seq,
                        client: "c".into(),
                        uid: 1,
                        pid: 1,
                        op: "tokenize".into(),
                        alias: None,
                        outcome: "ok".into(),
                    })
                    .collect();
                ok(
                    id,
                    &Audit {
                        records,
                        chain_ok: true,
                    },
                )
            }
            "events" => {
                let events = page(args)?
                    .map(|seq| EventView {
                        seq,
                        at: seq,
                        alias: None,
                        scheme: None,
                        kind: "provisioned".into(),
                        detail: String::new(),
                    })
                    .collect();
                ok(id, &Events { events })
            }
            _ => refuse(id, ErrorCode::UnknownOp, "not in this fake"),
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDaemon::start(&dir.path().join("vaultd.sock"), Arc::new(respond));
    let (tx, mut updates) = unbounded_channel();
    let (_commands, task) = daemon::spawn(config(&fake.path), tx);

    // The first page of each log, whichever comes first.
    let (mut audit, mut events) = (None, None);
    while audit.is_none() || events.is_none() {
        match expect(&mut updates, |u| match u {
            u @ (Update::Audit(_) | Update::Events(_)) => Some(u),
            _ => None,
        })
        .await
        {
            Update::Audit(a) if audit.is_none() => audit = Some(a),
            Update::Events(e) if events.is_none() => events = Some(e),
            _ => {}
        }
    }
    let seqs: Vec<u64> = audit.unwrap().records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs.last(),
        Some(&NEWEST),
        "the first page ends at the newest record"
    );
    assert!(
        seqs[0] > NEWEST - 2 * u64::from(daemon::LOG_PAGE),
        "{}",
        seqs[0]
    );
    assert_eq!(events.unwrap().last().map(|e| e.seq), Some(NEWEST));
    task.abort();
    fake.stop().await;
}
