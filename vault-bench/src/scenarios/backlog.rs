//! `backlog` (issue 22): tokenize keeps its speed while provisioning
//! backs up. In one run, against one daemon:
//!
//! 1. every scheme paused; `--backlog` cards of a tenant without network
//!    tokens (connections opened as `--plain-uid`) tokenized first, so the
//!    database is as large as it will be with the backlog (the control:
//!    what follows then shows the queue's cost, not the growth of every
//!    table by a million cards);
//! 2. tokenize of new PANs measured on an empty queue, for the bench
//!    tenant (network tokens: each call queues a job) and for the tenant
//!    without;
//! 3. `--backlog` jobs queued for the paused schemes (tokenize, counted),
//!    and both measured again over that backlog;
//! 4. the schemes resumed, and both measured once more while the worker
//!    provisions the backlog (scheme-sim at its latency).
//!
//! Each report notes its ratio to the matching one, and how many times the
//! worker read due jobs meanwhile (`stats.queue.reads`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use vault_proto::Client;
use vault_proto::ops::{NoArgs, StatsOp, Tokenize};

use super::foundation::created;
use super::network::pause_schemes;
use super::{Bench, tokenize_args};
use crate::load::Failure;
use crate::report::ScenarioReport;

impl Bench {
    pub(super) async fn backlog(&mut self) {
        if let Err(why) = self.backlog_run().await {
            self.reports.push(ScenarioReport::skipped("backlog", why));
        }
    }

    async fn backlog_run(&mut self) -> Result<(), String> {
        if self.plain.is_empty() {
            return Err(
                "no connections for a tenant without network tokens: pass --plain-uid \
                 (scripts/bench --provisioning configures one)"
                    .to_owned(),
            );
        }
        let control = self.control();
        let first = control
            .op::<StatsOp>(&NoArgs {})
            .await
            .map_err(|e| format!("stats (admin role needed): {e}"))?;
        let schemes: Vec<String> = first.schemes.into_keys().collect();
        if schemes.is_empty() {
            return Err("no token service configured: run scripts/bench --provisioning".into());
        }
        pause_schemes(&control, &schemes, true).await?;

        let n = self.cfg.backlog;
        let start = self.next_card.fetch_add(n, Relaxed);
        let pans = Arc::clone(&self.pans);
        let plain = self.plain.clone();
        let mut prefill = self
            .measured_on(
                &plain,
                "backlog:prefill",
                crate::load::Stop::Count(n),
                move |client, seq| {
                    let pan = pans.any_scheme(start + seq);
                    tokenize_call(client, pan)
                },
            )
            .await;
        prefill.notes.push(format!(
            "{n} new cards of the tenant without network tokens: the database grows as much as the backlog will make it grow, and no job is queued"
        ));
        self.reports.push(prefill);

        let plain_empty = self.tokenize_as(true, "backlog:plain-empty").await;
        let nt_empty = self.tokenize_as(false, "backlog:nt-empty").await;

        let start = self.next_card.fetch_add(n, Relaxed);
        let pans = Arc::clone(&self.pans);
        let mut fill = self
            .measured(
                "backlog:fill",
                crate::load::Stop::Count(n),
                Some(self.progress("backlog:fill")),
                move |client, seq| {
                    let pan = pans.any_scheme(start + seq);
                    tokenize_call(client, pan)
                },
            )
            .await;
        let queued = queue_due(&control).await;
        fill.extra.insert("jobs_queued".into(), queued as f64);
        fill.notes.push(format!(
            "{n} new cards of the network-token tenant with every scheme paused: {queued} jobs queued"
        ));
        self.reports.push(fill);

        let plain_full = self.tokenize_as(true, "backlog:plain-full").await;
        let nt_full = self.tokenize_as(false, "backlog:nt-full").await;

        pause_schemes(&control, &schemes, false).await?;
        let plain_running = self.tokenize_as(true, "backlog:plain-running").await;
        let nt_running = self.tokenize_as(false, "backlog:nt-running").await;
        // Leave the daemon quiet for what runs next.
        pause_schemes(&control, &schemes, true).await?;

        // (report, what it shows, index of the report it is compared with)
        let reports = [
            (
                plain_empty,
                "tenant without network tokens, empty queue, schemes paused",
                None,
            ),
            (
                nt_empty,
                "network-token tenant, empty queue, schemes paused",
                None,
            ),
            (
                plain_full,
                "tenant without network tokens over the backlog (issue 22: within 10% of plain-empty)",
                Some(0),
            ),
            (
                nt_full,
                "network-token tenant over the backlog (issue 22: within 10% of nt-empty)",
                Some(1),
            ),
            (
                plain_running,
                "tenant without network tokens while the worker provisions the backlog",
                None,
            ),
            (
                nt_running,
                "network-token tenant while the worker provisions the backlog (issue 22: at least 0.9x plain-running)",
                Some(4),
            ),
        ];
        let rates: Vec<(String, f64)> = reports
            .iter()
            .map(|(r, _, _)| (r.name.clone(), r.ops_per_sec))
            .collect();
        for (mut r, what, against) in reports {
            r.notes.push(what.to_owned());
            if let Some((name, base)) = against.map(|i| &rates[i])
                && *base > 0.0
            {
                let x = r.ops_per_sec / base;
                r.extra.insert(format!("ratio_to_{name}"), x);
                r.notes
                    .push(format!("{:.0}% of {name}'s throughput", x * 100.0));
            }
            self.reports.push(r);
        }
        Ok(())
    }

    /// Tokenize of new PANs for `--duration`, on the plain tenant's
    /// connections or the bench tenant's; notes the worker's queue reads.
    async fn tokenize_as(&mut self, plain: bool, name: &str) -> ScenarioReport {
        let control = self.control();
        let reads_before = queue_reads(&control).await;
        let pans = Arc::clone(&self.pans);
        let next = Arc::clone(&self.next_card);
        let clients = if plain {
            self.plain.clone()
        } else {
            self.clients.clone()
        };
        let stop = self.timed();
        let mut r = self
            .measured_on(&clients, name, stop, move |client, _| {
                let pan = pans.any_scheme(next.fetch_add(1, Relaxed));
                tokenize_call(client, pan)
            })
            .await;
        let reads = queue_reads(&control).await.saturating_sub(reads_before);
        r.extra.insert("worker_queue_reads".into(), reads as f64);
        r
    }
}

async fn tokenize_call(client: Arc<Client>, pan: vault_proto::Pan) -> crate::load::Outcome {
    match client.op::<Tokenize>(&tokenize_args(pan)).await {
        Ok(r) => Ok(created(r.created)),
        Err(e) => Err(Failure::of(e)),
    }
}

async fn queue_reads(c: &Client) -> u64 {
    c.op::<StatsOp>(&NoArgs {})
        .await
        .map(|s| s.queue.reads)
        .unwrap_or(0)
}

async fn queue_due(c: &Client) -> u64 {
    c.op::<StatsOp>(&NoArgs {})
        .await
        .map(|s| s.queue.due)
        .unwrap_or(0)
}
