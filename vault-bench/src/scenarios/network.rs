//! Network-token scenarios (issues 3 and 4): provisioning throughput, read
//! from `stats` while the queue drains, and customer-initiated `credentials`
//! over aliases whose tokens are active. When the daemon refuses an op these
//! need (not built yet, tenant without network tokens), the scenario is
//! reported as skipped with the daemon's answer.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_proto::Client;
use vault_proto::client::ClientError;
use vault_proto::ops::{
    CredentialKind, Credentials, CredentialsArgs, CredentialsOp, FallbackReason, HsmStats,
    Initiator, NoArgs, SchemeArgs, SchemePause, SchemeResume, Stats, StatsOp, Tokenize,
};

use super::{AliasSlots, Bench, refusal, tokenize_args, tokenize_into};
use crate::load::{Failure, Stop};
use crate::report::ScenarioReport;

/// The queue and scheme figures the drain watch needs.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    provisioned: u64,
    not_eligible: u64,
    errors: u64,
    pending: u64,
    failed: u64,
    p50_ms: u64,
    p99_ms: u64,
}

impl From<&Stats> for Progress {
    fn from(s: &Stats) -> Self {
        let mut p = Progress {
            pending: s.queue.due + s.queue.scheduled + s.queue.in_flight,
            failed: s.queue.failed,
            ..Progress::default()
        };
        for sc in s.schemes.values() {
            p.provisioned += sc.provisioned;
            p.not_eligible += sc.not_eligible;
            p.errors += sc.errors;
            p.p50_ms = p.p50_ms.max(sc.p50_ms);
            p.p99_ms = p.p99_ms.max(sc.p99_ms);
        }
        p
    }
}

/// `scheme_pause` (or `scheme_resume`) for every scheme.
pub(super) async fn pause_schemes(
    c: &Client,
    schemes: &[String],
    pause: bool,
) -> Result<(), String> {
    for scheme in schemes {
        let args = SchemeArgs {
            scheme: scheme.clone(),
        };
        let done = if pause {
            c.op::<SchemePause>(&args).await
        } else {
            c.op::<SchemeResume>(&args).await
        };
        done.map_err(|e| refusal("scheme_pause / scheme_resume", &e))?;
    }
    Ok(())
}

/// `stats.hsm`, when the daemon reports it.
async fn hsm_stats(c: &Client) -> Option<HsmStats> {
    c.op::<StatsOp>(&NoArgs {}).await.ok().and_then(|s| s.hsm)
}

/// The token-key cache's work between two `stats.hsm`: unwraps during the
/// run (a cryptogram whose key was not cached costs one) and keys cached at
/// its end.
fn token_key_figures(
    report: &mut ScenarioReport,
    before: Option<HsmStats>,
    after: Option<HsmStats>,
) {
    let (Some(b), Some(a)) = (before, after) else {
        return;
    };
    let unwraps = a.token_key_unwraps.saturating_sub(b.token_key_unwraps);
    report
        .extra
        .insert("hsm_token_key_unwraps_during".into(), unwraps as f64);
    report
        .extra
        .insert("hsm_token_keys_cached".into(), a.token_keys_cached as f64);
    report.extra.insert(
        "hsm_reinitializations_during".into(),
        a.reinitializations.saturating_sub(b.reinitializations) as f64,
    );
}

async fn stats(c: &Client) -> Result<Progress, ClientError> {
    c.op::<StatsOp>(&NoArgs {})
        .await
        .map(|s| Progress::from(&s))
}

fn credentials_args(alias: String, tenant: String) -> CredentialsArgs {
    CredentialsArgs {
        alias,
        tenant,
        accept: vec![CredentialKind::NetworkToken, CredentialKind::Pan],
        initiator: Initiator::Customer,
        amount_minor: 1250,
        currency: "CHF".to_owned(),
        authenticated_eci: None,
    }
}

/// The label of a `credentials` answer (never its content).
pub(super) fn credential_kind(c: &Credentials) -> &'static str {
    match c {
        Credentials::NetworkToken {
            cryptogram: Some(_),
            ..
        } => "network_token",
        Credentials::NetworkToken { .. } => "network_token_without_cryptogram",
        Credentials::Pan {
            fallback_reason, ..
        } => match fallback_reason {
            FallbackReason::ReceiverPanOnly => "pan:receiver_pan_only",
            FallbackReason::NoToken => "pan:no_token",
            FallbackReason::TokenNotActive => "pan:token_not_active",
        },
    }
}

pub(super) async fn credentials_call(
    client: Arc<Client>,
    alias: String,
    tenant: String,
) -> Result<&'static str, ClientError> {
    client
        .op::<CredentialsOp>(&credentials_args(alias, tenant))
        .await
        .map(|c| credential_kind(&c))
}

impl Bench {
    pub(super) async fn provisioning(&mut self) {
        if let Err(why) = self.ensure_provisioned().await {
            self.reports
                .push(ScenarioReport::skipped("provisioning", why));
        }
    }

    /// Issue 3 in one run, against one daemon and one database:
    ///
    /// 1. every scheme paused (`scheme_pause`), `--cards` cards tokenized
    ///    (`provisioning:tokenize-paused`): the same writes, jobs queued,
    ///    nothing provisioned;
    /// 2. the schemes resumed, so the worker starts on that backlog, and
    ///    `--cards` more tokenized while it runs (`provisioning:tokenize`);
    /// 3. the queue watched until both batches are provisioned
    ///    (`provisioning`, tokens/s from the resume).
    ///
    /// The first batch's aliases become the credentials set. `Err` says why
    /// the daemon cannot provision.
    pub(super) async fn ensure_provisioned(&mut self) -> Result<(), String> {
        if self.provisioned.is_some() {
            return Ok(());
        }
        let control = self.control();
        let schemes: Vec<String> = control
            .op::<StatsOp>(&NoArgs {})
            .await
            .map_err(|e| refusal("stats (admin role needed)", &e))?
            .schemes
            .into_keys()
            .collect();
        // One card first: without network tokens for this tenant there is
        // nothing to provision.
        let probe = self.pans.any_scheme(self.next_card.fetch_add(1, Relaxed));
        match control.op::<Tokenize>(&tokenize_args(probe)).await {
            Ok(r) if r.record.token_info.is_none() => {
                return Err("the tenant has no network tokens (token_info is nil); \
                     run scripts/bench --provisioning"
                    .to_owned());
            }
            Ok(_) => {}
            Err(e) => return Err(refusal("tokenize", &e)),
        }

        pause_schemes(&control, &schemes, true).await?;
        let before = stats(&control).await;
        let (mut paused, aliases) = self.tokenize_cards("provisioning:tokenize-paused").await;
        paused.notes.push(
            "tokenize with every scheme paused: jobs queued, nothing provisioned (the baseline \
             for provisioning:tokenize)"
                .to_owned(),
        );
        self.reports.push(paused);
        pause_schemes(&control, &schemes, false).await?;
        let before = before.map_err(|e| refusal("stats (admin role needed)", &e))?;
        let t0 = Instant::now();

        let (mut busy, more) = self.tokenize_cards("provisioning:tokenize").await;
        // What the worker provisioned while tokenize ran (since the resume).
        if let Ok(now) = stats(&control).await {
            let done = now.provisioned.saturating_sub(before.provisioned);
            busy.extra.insert(
                "tokens_provisioned_per_sec_meanwhile".into(),
                done as f64 / t0.elapsed().as_secs_f64(),
            );
        }
        busy.notes.push(
            "tokenize while the provisioning worker works through the first batch (issue 3 \
             allows at most 20% less than provisioning:tokenize-paused)"
                .to_owned(),
        );
        self.reports.push(busy);
        let report = self
            .drain(&control, before, t0, aliases.len() + more.len())
            .await;
        self.reports.push(report);
        let mut all = aliases.clone();
        all.extend(more);
        self.provisioned = Some(Arc::new(aliases));
        self.provisioned_all = Some(Arc::new(all));
        Ok(())
    }

    /// Tokenizes `--cards` new cards of every scheme as the measured
    /// scenario `name`; returns its report and the aliases.
    async fn tokenize_cards(&mut self, name: &str) -> (ScenarioReport, Vec<String>) {
        let n = self.cfg.cards.max(1);
        let start_card = self.next_card.fetch_add(n as u64, Relaxed);
        let pans = Arc::clone(&self.pans);
        let slots: AliasSlots = Arc::new(Mutex::new(vec![None; n]));
        let s = Arc::clone(&slots);
        let report = self
            .measured(name, Stop::Count(n as u64), None, move |client, seq| {
                let pan = pans.any_scheme(start_card + seq);
                tokenize_into(client, pan, Arc::clone(&s), seq as usize)
            })
            .await;
        let aliases = slots
            .lock()
            .map(|v| v.iter().flatten().cloned().collect())
            .unwrap_or_default();
        (report, aliases)
    }

    /// Polls `stats` until the queue is empty (or the timeout), and turns
    /// the counts into tokens/s.
    async fn drain(
        &self,
        control: &Client,
        before: Progress,
        t0: Instant,
        cards: usize,
    ) -> ScenarioReport {
        eprintln!("vault-bench: waiting for the provisioning queue to drain");
        let deadline = t0 + self.cfg.drain_timeout;
        let mut last = before;
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        let mut poll_errors = 0u64;
        let mut timed_out = false;
        let daemon_cpu = self.daemon.map(crate::procfs::CpuSnapshot::take);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match stats(control).await {
                Ok(p) => {
                    last = p;
                    samples.push((
                        Instant::now(),
                        p.provisioned.saturating_sub(before.provisioned),
                    ));
                    let settled = (p.provisioned + p.not_eligible + p.failed)
                        .saturating_sub(before.provisioned + before.not_eligible + before.failed);
                    if p.pending == 0 && settled >= cards as u64 {
                        break;
                    }
                }
                Err(_) => poll_errors += 1,
            }
            if Instant::now() > deadline {
                timed_out = true;
                break;
            }
        }
        let done = samples.last().map_or(0, |s| s.1);
        let end = samples.last().map_or_else(Instant::now, |s| s.0);
        let secs = end.duration_since(t0).as_secs_f64();
        let mut r = ScenarioReport::skipped("provisioning", String::new());
        r.skipped = None;
        r.secs = secs;
        r.ok = done;
        r.errors = last.errors.saturating_sub(before.errors);
        r.ops_per_sec = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        r.daemon_cpu = daemon_cpu.map(|s| s.used_since());
        r.daemon_rss = self.daemon.and_then(crate::procfs::rss);
        r.outcomes.insert("provisioned".into(), done);
        r.outcomes.insert(
            "not_eligible".into(),
            last.not_eligible.saturating_sub(before.not_eligible),
        );
        r.outcomes
            .insert("failed".into(), last.failed.saturating_sub(before.failed));
        r.extra.insert("tokens_per_sec".into(), r.ops_per_sec);
        if let Some(steady) = steady_rate(&samples, done) {
            r.extra.insert("tokens_per_sec_10_to_90pct".into(), steady);
        }
        r.extra
            .insert("scheme_p50_ms_max".into(), last.p50_ms as f64);
        r.extra
            .insert("scheme_p99_ms_max".into(), last.p99_ms as f64);
        r.notes.push(format!(
            "{cards} cards tokenized; tokens/s = provisioned / time from the schemes' resume to the \
             drained queue (polling stats every 250 ms)"
        ));
        if timed_out {
            r.notes.push(format!(
                "timed out after {:?} with {} jobs still queued",
                self.cfg.drain_timeout, last.pending
            ));
        }
        if poll_errors > 0 {
            r.notes.push(format!("{poll_errors} stats polls failed"));
        }
        r
    }

    pub(super) async fn credentials(&mut self) {
        self.provisioning().await;
        let Some(aliases) = self.provisioned.clone().filter(|a| !a.is_empty()) else {
            self.reports.push(ScenarioReport::skipped(
                "credentials",
                "no provisioned aliases (see the provisioning scenario)".to_owned(),
            ));
            return;
        };
        let tenant = self.cfg.tenant.clone();
        match credentials_call(self.control(), aliases[0].clone(), tenant.clone()).await {
            Ok(_) => {}
            Err(e) => {
                let why = refusal("credentials (forwarder role needed)", &e);
                self.reports
                    .push(ScenarioReport::skipped("credentials", why));
                return;
            }
        }
        let n = aliases.len();
        let control = self.control();
        let hsm_before = hsm_stats(&control).await;
        let mut report = self
            .measured("credentials", self.timed(), None, move |client, seq| {
                let alias = aliases[(seq % aliases.len() as u64) as usize].clone();
                let tenant = tenant.clone();
                async move {
                    credentials_call(client, alias, tenant)
                        .await
                        .map_err(Failure::of)
                }
            })
            .await;
        token_key_figures(&mut report, hsm_before, hsm_stats(&control).await);
        report.notes.push(format!(
            "customer-initiated, accept [network_token, pan], CHF 12.50, over {n} aliases in \
             turn; hsm_token_key_unwraps_during counts the warm-up too (a cryptogram whose \
             token key was not in the cache unwraps it)"
        ));
        if report.outcomes.keys().any(|k| k.starts_with("pan:")) {
            report
                .notes
                .push("some answers fell back to the PAN: their tokens were not active".to_owned());
        }
        self.reports.push(report);
    }

    /// Issue 20: the daemon's memory with many tokens whose keys are all
    /// in their records. Provisions (both batches of the provisioning
    /// scenario: 2 x `--cards` tokens), then makes one customer-initiated
    /// `credentials` call on each provisioned alias, in order, so every
    /// token key is unwrapped once (the cache keeps the last
    /// `[hsm] token_key_cache` of them); reports RSS after each step and
    /// the HSM's counts.
    pub(super) async fn token_memory(&mut self) {
        self.provisioning().await;
        let Some(aliases) = self.provisioned_all.clone().filter(|a| !a.is_empty()) else {
            self.reports.push(ScenarioReport::skipped(
                "token-memory",
                "no provisioned aliases (see the provisioning scenario)".to_owned(),
            ));
            return;
        };
        let control = self.control();
        let provisioned_rss = self.daemon.and_then(crate::procfs::rss);
        let hsm_before = hsm_stats(&control).await;
        let tenant = self.cfg.tenant.clone();
        let n = aliases.len();
        let calls = Arc::clone(&aliases);
        let mut report = self
            .measured(
                "token-memory:credentials",
                Stop::Count(n as u64),
                Some(self.progress("token-memory")),
                move |client, seq| {
                    let alias = calls[seq as usize % calls.len()].clone();
                    let tenant = tenant.clone();
                    async move {
                        credentials_call(client, alias, tenant)
                            .await
                            .map_err(Failure::of)
                    }
                },
            )
            .await;
        let mb = |kb: u64| kb as f64 / 1024.0;
        if let Some(r) = provisioned_rss {
            report
                .extra
                .insert("rss_mb_after_provisioning".into(), mb(r.rss_kb));
        }
        if let Some(r) = report.daemon_rss {
            report
                .extra
                .insert("rss_mb_after_credentials".into(), mb(r.rss_kb));
            report.extra.insert("rss_mb_peak".into(), mb(r.hwm_kb));
        }
        if let Some(parts) = self.daemon.and_then(crate::procfs::rss_parts) {
            for (kind, kb) in parts {
                report
                    .extra
                    .insert(format!("rss_mb_after_credentials_{kind}"), mb(kb));
            }
        }
        // What the allocator keeps only for a while (jemalloc returns
        // unused pages after some seconds) against what stays.
        tokio::time::sleep(IDLE_BEFORE_RSS).await;
        if let Some(r) = self.daemon.and_then(crate::procfs::rss) {
            report.extra.insert(
                format!("rss_mb_after_{}s_idle", IDLE_BEFORE_RSS.as_secs()),
                mb(r.rss_kb),
            );
        }
        match control.op::<StatsOp>(&NoArgs {}).await {
            Ok(s) => {
                let tokens: u64 = s.tokens.values().sum();
                report.extra.insert("tokens_in_vault".into(), tokens as f64);
                token_key_figures(&mut report, hsm_before, s.hsm);
                if let Some(h) = s.hsm {
                    report
                        .extra
                        .insert("hsm_session_objects".into(), h.session_objects as f64);
                }
            }
            Err(e) => report.notes.push(refusal("stats", &e)),
        }
        report.notes.push(format!(
            "one customer-initiated credentials call on each of the {n} provisioned aliases, in \
             order; rss_mb_* = VmRSS after provisioning / after these calls (and what it is made \
             of) / after 15 s idle, VmHWM (issue 20: under 150 MB with 100,000 tokens)"
        ));
        self.reports.push(report);
    }

    /// Aliases for `credentials` in the mixed soak: provisioned ones when the
    /// provisioning scenario ran, else none.
    pub(super) fn credential_aliases(&self) -> Option<Arc<Vec<String>>> {
        self.provisioned.clone().filter(|a| !a.is_empty())
    }
}

/// token-memory: how long the daemon idles before its memory is read again.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(15);

/// Provisioning rate between 10% and 90% of the final count: the steady
/// state, without the ramp-up and the tail.
fn steady_rate(samples: &[(Instant, u64)], total: u64) -> Option<f64> {
    if total < 10 {
        return None;
    }
    let at = |frac: f64| {
        let goal = (total as f64 * frac).ceil() as u64;
        samples.iter().find(|s| s.1 >= goal).copied()
    };
    let (a, b) = (at(0.1)?, at(0.9)?);
    let secs = b.0.duration_since(a.0).as_secs_f64();
    (secs > 0.0).then(|| (b.1 - a.1) as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_proto::Pan;

    #[test]
    fn steady_rate_ignores_ramp_and_tail() {
        let t = Instant::now();
        let s = |ms: u64, n: u64| (t + Duration::from_millis(ms), n);
        // 100 at 1 s, 900 at 2 s: 800 tokens in 1 s.
        let samples = [s(0, 0), s(1000, 100), s(2000, 900), s(9000, 1000)];
        let rate = steady_rate(&samples, 1000).expect("a rate");
        assert!((rate - 800.0).abs() < 1e-6, "rate {rate}");
        assert_eq!(steady_rate(&samples, 5), None);
    }

    #[test]
    fn credential_answers_are_labelled_without_their_content() {
        let nt = Credentials::NetworkToken {
            scheme: "visa".into(),
            network_token: Pan::new("4895370012345678".into()),
            exp_month: 11,
            exp_year: 2029,
            cryptogram: Some("AQAHobLD1CBOMRA3qejWCm4/tRI=".into()),
            eci: Some("05".into()),
            atc: Some(7),
            par: None,
            token_ref: "r".into(),
        };
        assert_eq!(credential_kind(&nt), "network_token");
        let pan = Credentials::Pan {
            scheme: "visa".into(),
            pan: Pan::new("4111111111111111".into()),
            exp_month: 1,
            exp_year: 2030,
            fallback_reason: FallbackReason::TokenNotActive,
        };
        assert_eq!(credential_kind(&pan), "pan:token_not_active");
    }
}
