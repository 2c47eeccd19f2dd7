//! Network tokens: the provisioning worker over the durable queue, one
//! connector per scheme, per-scheme breakers, pause/resume, and the figures
//! `stats` shows. The worker takes due jobs (bounded overall and per
//! scheme), calls the token service with the job id as idempotency key, and
//! reports each outcome to the store in one commit.

pub mod breaker;
pub mod connector;
pub mod lifecycle;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use vault_hsm::{Hsm, HsmPool, Lane};
use vault_proto::Pan;
use vault_proto::ops::{SchemeStats, TokenStatus};

use crate::config::Config;
use crate::store::Store;
use crate::store::queue::{FinishOutcome, JobFinish};
use crate::store::records::{JobKind, JobRec, StoredKey, TokenRec, job_id_string};
use crate::vault::cards::now_ms;
use breaker::{Admits, Breaker};
use connector::{Connector, Provisioned, TspError};

/// Live state of one scheme.
struct SchemeState {
    connector: Connector,
    slots: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
    paused: std::sync::atomic::AtomicBool,
    provisioned: AtomicU64,
    not_eligible: AtomicU64,
    errors: AtomicU64,
    latencies_ms: Mutex<VecDeque<u32>>,
}

const LATENCY_WINDOW: usize = 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub poll_interval: Duration,
    pub sync_timeout: Duration,
}

pub struct Tokens<S: Store, H: Hsm> {
    store: Arc<S>,
    hsm: Arc<HsmPool<H>>,
    schemes: HashMap<String, SchemeState>,
    settings: Settings,
    slots: Arc<Semaphore>,
    in_flight: Mutex<HashSet<u64>>,
    wake: Notify,
    passes: AtomicU64,
    reads: AtomicU64,
}

/// Least time between the starts of two queue passes (wakes meanwhile
/// fold into one pass).
const MIN_PASS_GAP: Duration = Duration::from_millis(5);
/// How often jobs of schemes no longer configured are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why a synchronous provisioning (`pan_retention = "none"`) failed.
pub enum SyncError {
    NotEligible(String),
    Unavailable(String),
}

/// The card a synchronous provisioning is for.
#[derive(Clone, Copy)]
pub struct CardToTokenize<'a> {
    pub alias: &'a str,
    pub tenant: &'a str,
    pub scheme: &'a str,
    pub pan: &'a Pan,
    pub exp_month: u8,
    pub exp_year: u16,
}

/// A token provisioned while the caller waits: its key is in the HSM and
/// its number sealed for the alias.
pub struct SyncToken {
    pub token_ref: String,
    pub token: TokenRec,
}

impl<S: Store, H: Hsm> Tokens<S, H> {
    pub fn new(cfg: &Config, store: Arc<S>, hsm: Arc<HsmPool<H>>) -> Result<Self, String> {
        let p = &cfg.provisioning;
        let paused: HashSet<String> = store
            .paused_schemes()
            .map_err(|e| format!("reading paused schemes: {e}"))?
            .into_iter()
            .collect();
        let mut schemes = HashMap::new();
        for (name, s) in &cfg.schemes {
            let connector =
                Connector::new(name, &s.url, &s.token_requestor_id, p.request_timeout.0)
                    .map_err(|e| format!("[schemes.{name}]: {e}"))?;
            schemes.insert(
                name.clone(),
                SchemeState {
                    connector,
                    slots: Arc::new(Semaphore::new(p.per_scheme_concurrency)),
                    breaker: Mutex::new(Breaker::new(p.breaker_threshold, p.breaker_cooldown.0)),
                    paused: std::sync::atomic::AtomicBool::new(paused.contains(name)),
                    provisioned: AtomicU64::new(0),
                    not_eligible: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    latencies_ms: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
                },
            );
        }
        Ok(Tokens {
            store,
            hsm,
            schemes,
            settings: Settings {
                concurrency: p.concurrency,
                max_attempts: p.max_attempts,
                backoff_initial: p.backoff_initial.0,
                backoff_max: p.backoff_max.0,
                poll_interval: p.poll_interval.0,
                sync_timeout: p.sync_timeout.0,
            },
            slots: Arc::new(Semaphore::new(p.concurrency)),
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            passes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    pub fn has_scheme(&self, scheme: &str) -> bool {
        self.schemes.contains_key(scheme)
    }

    pub fn connector(&self, scheme: &str) -> Option<&Connector> {
        self.schemes.get(scheme).map(|s| &s.connector)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New work is queued: look now instead of at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn in_flight(&self) -> HashSet<u64> {
        self.in_flight.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn is_paused(&self, scheme: &str) -> bool {
        self.schemes
            .get(scheme)
            .is_some_and(|s| s.paused.load(Ordering::Relaxed))
    }

    /// Pauses or resumes a scheme in memory (the store keeps it durably).
    pub fn set_paused(&self, scheme: &str, paused: bool) -> bool {
        match self.schemes.get(scheme) {
            Some(s) => {
                s.paused.store(paused, Ordering::Relaxed);
                if !paused {
                    self.wake();
                }
                true
            }
            None => false,
        }
    }

    pub fn scheme_stats(&self) -> BTreeMap<String, SchemeStats> {
        let now = Instant::now();
        self.schemes
            .iter()
            .map(|(name, s)| {
                let (p50, p99) = percentiles(&s.latencies_ms);
                let breaker = s.breaker.lock().map(|b| b.describe(now).to_owned()).ok();
                (
                    name.clone(),
                    SchemeStats {
                        provisioned: s.provisioned.load(Ordering::Relaxed),
                        not_eligible: s.not_eligible.load(Ordering::Relaxed),
                        errors: s.errors.load(Ordering::Relaxed),
                        p50_ms: p50,
                        p99_ms: p99,
                        paused: s.paused.load(Ordering::Relaxed),
                        breaker,
                    },
                )
            })
            .collect()
    }

    /// The worker: runs until `stop` fires.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let tick = Duration::from_millis(200);
        let mut last_sweep: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let started = Instant::now();
            if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                last_sweep = Some(started);
                self.fail_unserved().await;
            }
            self.dispatch_due().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => {}
            }
            // Wakes that come while a pass runs or within MIN_PASS_GAP of
            // its start fold into the next pass: a burst of tokenize calls
            // costs a bounded number of queue reads, not one each.
            let gap = MIN_PASS_GAP.saturating_sub(started.elapsed());
            if !gap.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(gap) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        // Let running jobs finish (each is bounded by the request timeout).
        let _ = self
            .slots
            .acquire_many(self.settings.concurrency as u32)
            .await;
    }

    /// One pass: for each configured scheme that is not paused, has free
    /// slots and whose breaker lets work through, read at most that many
    /// of its due jobs (skipping its jobs in flight) and start them. The
    /// backlog of a paused or saturated scheme is not read at all.
    async fn dispatch_due(self: &Arc<Self>) {
        if self.slots.available_permits() == 0 {
            return;
        }
        let pass = self.passes.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.in_flight();
        let skip = |id: u64| in_flight.contains(&id);
        let now = Instant::now();
        // A different scheme first each pass, so none waits on the others
        // for the global slots.
        let mut names: Vec<&String> = self.schemes.keys().collect();
        names.sort();
        let first = (pass as usize) % names.len().max(1);
        names.rotate_left(first);
        for name in names {
            let scheme = &self.schemes[name];
            let free = scheme
                .slots
                .available_permits()
                .min(self.slots.available_permits());
            if free == 0 || scheme.paused.load(Ordering::Relaxed) {
                continue;
            }
            let free = match scheme.breaker.lock().map(|b| b.admits(now)) {
                Ok(Admits::All) => free,
                Ok(Admits::One) => 1,
                Ok(Admits::None) | Err(_) => continue,
            };
            self.reads.fetch_add(1, Ordering::Relaxed);
            let jobs = match self.store.due_jobs(name, now_ms(), free, &skip) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, scheme = %name, "cannot read the job queue");
                    continue;
                }
            };
            for job in jobs {
                if !self.start(scheme, job, now) {
                    break;
                }
            }
        }
    }

    /// Starts `job` in a slot of its own; false when no slot is free or
    /// the breaker holds it back.
    fn start(self: &Arc<Self>, scheme: &SchemeState, job: JobRec, now: Instant) -> bool {
        let Ok(global) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        let Ok(local) = scheme.slots.clone().try_acquire_owned() else {
            return false;
        };
        let allowed = scheme
            .breaker
            .lock()
            .map(|mut b| b.try_acquire(now))
            .unwrap_or(false);
        if !allowed {
            return false;
        }
        if let Ok(mut f) = self.in_flight.lock() {
            f.insert(job.id);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let (id, kind, attempts) = (job.id, job.kind, job.attempts);
            let scheme = job.scheme.clone();
            // A panic in a job (a bug) must not leave it in flight until
            // a restart: it runs as a task of its own, and a panic sends
            // it back to the queue.
            let worker = me.clone();
            if let Err(e) = tokio::spawn(async move { worker.run_job(job).await }).await
                && e.is_panic()
            {
                me.job_panicked(id, kind, &scheme, attempts).await;
            }
            if let Ok(mut f) = me.in_flight.lock() {
                f.remove(&id);
            }
            drop(local);
            drop(global);
            me.wake();
        });
        true
    }

    /// Jobs of a scheme no longer configured are never read by a pass:
    /// they fail here, visibly, a bounded number per sweep.
    async fn fail_unserved(&self) {
        let schemes = match self.store.queued_schemes() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the job queue");
                return;
            }
        };
        for name in schemes.iter().filter(|s| !self.schemes.contains_key(*s)) {
            let jobs = match self.store.due_jobs(name, u64::MAX, 1_000, &|_| false) {
                Ok(j) => j,
                Err(_) => continue,
            };
            for job in jobs {
                let _ = self
                    .store
                    .finish_job(JobFinish::Refused {
                        job_id: job.id,
                        status: TokenStatus::Failed,
                        error: format!("no token service configured for {}", job.scheme),
                    })
                    .await;
            }
        }
    }

    /// Reads of due jobs since start (`stats.queue.reads`): one per
    /// scheme that could take work at a pass.
    pub fn queue_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let base = self
            .settings
            .backoff_initial
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.settings.backoff_max);
        // Full jitter over the upper half: spreads retries of a burst.
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        let frac = (u64::from_le_bytes(r) % 1000) as f64 / 1000.0;
        let d = base.mul_f64(0.5 + frac / 2.0);
        retry_after.map_or(d, |ra| d.max(ra.min(self.settings.backoff_max)))
    }

    /// A job's task panicked: frees its breaker slot and makes it due again
    /// after a backoff (failed when out of attempts, as for a transient
    /// failure), with an error and a log line that carry nothing from the
    /// panic.
    async fn job_panicked(&self, job_id: u64, kind: JobKind, scheme: &str, attempts: u32) {
        tracing::error!(job = %job_id_string(job_id), scheme, "a job panicked; it goes back to the queue");
        if let Some(s) = self.schemes.get(scheme)
            && let Ok(mut b) = s.breaker.lock()
        {
            b.release();
        }
        let attempts = attempts + 1;
        let finish = JobFinish::Retry {
            job_id,
            next_at: now_ms() + self.backoff(attempts - 1, None).as_millis() as u64,
            error: "the job stopped on an internal error; see the server log".into(),
            give_up: kind != JobKind::Delete && attempts >= self.settings.max_attempts,
        };
        if let Err(e) = self.store.finish_job(finish).await {
            tracing::warn!(error = %e, "could not record a job outcome; it stays due");
        }
    }

    async fn run_job(&self, job: JobRec) {
        let Some(scheme) = self.schemes.get(&job.scheme) else {
            return;
        };
        let started = Instant::now();
        let result = match job.kind {
            JobKind::Provision => self.provision_job(&job, &scheme.connector).await,
            JobKind::Delete => self.delete_job(&job, &scheme.connector).await,
            JobKind::KeyRefresh => self.refresh_job(&job, &scheme.connector).await,
        };
        let elapsed = started.elapsed();
        let finish = match result {
            Ok(f) => {
                if let Ok(mut b) = scheme.breaker.lock() {
                    b.success();
                }
                if let JobFinish::Provisioned { .. } = f {
                    scheme.provisioned.fetch_add(1, Ordering::Relaxed);
                    record_latency(&scheme.latencies_ms, elapsed);
                }
                f
            }
            Err(JobError::Tsp(TspError::NotEligible(m))) => {
                if let Ok(mut b) = scheme.breaker.lock() {
                    b.success();
                }
                scheme.not_eligible.fetch_add(1, Ordering::Relaxed);
                JobFinish::Refused {
                    job_id: job.id,
                    status: TokenStatus::NotEligible,
                    error: m,
                }
            }
            Err(JobError::Tsp(TspError::Refused(m))) => {
                if let Ok(mut b) = scheme.breaker.lock() {
                    b.success();
                }
                scheme.errors.fetch_add(1, Ordering::Relaxed);
                JobFinish::Refused {
                    job_id: job.id,
                    status: TokenStatus::Failed,
                    error: m,
                }
            }
            Err(JobError::Tsp(TspError::Transient {
                message,
                retry_after,
            })) => {
                if let Ok(mut b) = scheme.breaker.lock() {
                    b.failure(Instant::now());
                }
                scheme.errors.fetch_add(1, Ordering::Relaxed);
                let attempts = job.attempts + 1;
                // Deletes are retried until done; provisioning gives up.
                let give_up = job.kind != JobKind::Delete && attempts >= self.settings.max_attempts;
                let next_at = now_ms() + self.backoff(attempts - 1, retry_after).as_millis() as u64;
                JobFinish::Retry {
                    job_id: job.id,
                    next_at,
                    error: message,
                    give_up,
                }
            }
            Err(JobError::Local(e)) => {
                // HSM or store trouble on our side: not the scheme's fault.
                if let Ok(mut b) = scheme.breaker.lock() {
                    b.release();
                }
                tracing::warn!(job = %job_id_string(job.id), error = %e, "job failed locally; retrying later");
                let next_at = now_ms() + self.backoff(job.attempts, None).as_millis() as u64;
                JobFinish::Retry {
                    job_id: job.id,
                    next_at,
                    error: "vault-side error; see the server log".into(),
                    give_up: false,
                }
            }
            Err(JobError::Gone(msg)) => JobFinish::Refused {
                job_id: job.id,
                status: TokenStatus::Failed,
                error: msg,
            },
        };
        record_job(&job, &finish, elapsed);
        match self.store.finish_job(finish).await {
            Ok(FinishOutcome::Ok) => {}
            Ok(
                FinishOutcome::Orphaned { token_ref }
                | FinishOutcome::DeletedMeanwhile { token_ref }
                | FinishOutcome::KeyReplaced {
                    token_ref,
                    destroy: true,
                },
            ) => {
                let r = token_ref.clone();
                if let Err(e) = self
                    .hsm
                    .run_background(move |h| h.destroy_token_key(&r))
                    .await
                {
                    tracing::warn!(error = %e, "could not destroy an orphaned token key");
                }
            }
            // The new key replaced its old entry in the HSM's cache already.
            Ok(FinishOutcome::KeyReplaced { destroy: false, .. }) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a job outcome; it stays due"),
        }
    }

    /// The token key first: the alias is already erased, so nothing uses
    /// the key, and its destruction must not wait for the token service (nor
    /// be lost when the HSM fails: the job retries). Destroying a missing key
    /// succeeds.
    async fn delete_job(&self, job: &JobRec, c: &Connector) -> Result<JobFinish, JobError> {
        if let Some(r) = &job.token_ref {
            let key = r.clone();
            self.hsm
                .run_background(move |h| h.destroy_token_key(&key))
                .await
                .and_then(|r| r)
                .map_err(|e| JobError::Local(format!("could not destroy the token key: {e}")))?;
            c.delete(r).await.map_err(JobError::Tsp)?;
        }
        Ok(JobFinish::Done { job_id: job.id })
    }

    async fn provision_job(&self, job: &JobRec, c: &Connector) -> Result<JobFinish, JobError> {
        let alias = job.alias.clone();
        let view = self
            .store
            .alias(&alias)
            .map_err(|e| JobError::Local(e.to_string()))?
            .ok_or_else(|| JobError::Gone("alias deleted".into()))?;
        let ct = self
            .store
            .pan_ciphertext(&alias)
            .map_err(|e| JobError::Local(e.to_string()))?
            .ok_or_else(|| JobError::Gone("the PAN is no longer stored".into()))?;
        let a = alias.clone();
        let pan = self
            .hsm
            .run_background(move |h| h.open(&a, "pan", &ct).map(|p| Pan::from_bytes(&p)))
            .await
            .and_then(|r| r)
            .map_err(|e| JobError::Local(e.to_string()))?
            .ok_or_else(|| JobError::Local("stored PAN is not text".into()))?;
        let p = c
            .provision(
                &pan,
                view.rec.exp_month,
                view.rec.exp_year,
                &job.idempotency_key(),
            )
            .await
            .map_err(JobError::Tsp)?;
        drop(pan);
        let (token_ref, token) = self
            .install(&alias, &job.tenant, &job.scheme, c, p, Lane::Background)
            .await
            .map_err(JobError::Local)?;
        Ok(JobFinish::Provisioned {
            job_id: job.id,
            token_ref,
            token: Box::new(token),
        })
    }

    /// Puts an issued token's key into the HSM and seals its number, on the
    /// HSM pool's background lane for a queued job, ahead of it for a
    /// client that waits ([`Tokens::provision_now`]).
    async fn install(
        &self,
        alias: &str,
        tenant: &str,
        scheme: &str,
        c: &Connector,
        p: Provisioned,
        lane: Lane,
    ) -> Result<(String, TokenRec), String> {
        let wrapped =
            hex_decode(&p.wrapped_key).ok_or("token service sent a malformed wrapped key")?;
        let status = match p.status.as_str() {
            "active" => TokenStatus::Active,
            "inactive" => TokenStatus::Inactive,
            "suspended" => TokenStatus::Suspended,
            _ => TokenStatus::Inactive,
        };
        let token_ref = p.token_ref.clone();
        if !valid_ref(&token_ref) {
            return Err("token service sent a malformed token_ref".into());
        }
        let (a, s, r) = (alias.to_owned(), scheme.to_owned(), token_ref.clone());
        let number = p.token;
        let last4 = number.last4().to_owned();
        // The key is checked (unwrapped under the scheme's KEK into a
        // session object, ready for the first cryptogram) and stored as
        // delivered: nothing per token becomes an HSM object.
        let work = move |h: &H| {
            let kek_version = h.accept_token_key(&s, &r, &wrapped)?;
            let ct = h.seal(&a, "token", number.expose().as_bytes())?;
            Ok::<_, vault_hsm::HsmError>((
                ct,
                StoredKey {
                    kek_version,
                    wrapped,
                },
            ))
        };
        let (token_ct, key) = self
            .hsm
            .run_in(lane, work)
            .await
            .and_then(|r| r)
            .map_err(|e| e.to_string())?;
        Ok((
            token_ref,
            TokenRec {
                alias: alias.to_owned(),
                tenant: tenant.to_owned(),
                scheme: scheme.to_owned(),
                token_ct,
                token_last4: last4,
                exp_month: p.exp_month,
                exp_year: p.exp_year,
                par: p.par,
                token_requestor_id: c.token_requestor_id.clone(),
                status,
                atc: 0,
                updated_at: now_ms(),
                refresh_pending: false,
                key: Some(key),
            },
        ))
    }

    async fn refresh_job(&self, job: &JobRec, c: &Connector) -> Result<JobFinish, JobError> {
        let r = job
            .token_ref
            .clone()
            .ok_or_else(|| JobError::Gone("no token".into()))?;
        let k = c.refresh_key(&r).await.map_err(JobError::Tsp)?;
        let wrapped = hex_decode(&k.wrapped_key)
            .ok_or_else(|| JobError::Local("malformed wrapped key".into()))?;
        let s = job.scheme.clone();
        // The new key replaces the old one in the token's record, with its
        // ATC reset, in one commit; the old key's cached session object (or
        // an earlier release's `nt.*` object) goes after it.
        let w = wrapped.clone();
        let kek_version = self
            .hsm
            .run_background(move |h| h.accept_token_key(&s, &r, &w))
            .await
            .and_then(|r| r)
            .map_err(|e| JobError::Local(e.to_string()))?;
        Ok(JobFinish::Refreshed {
            job_id: job.id,
            key: StoredKey {
                kek_version,
                wrapped,
            },
        })
    }

    /// Provisions while the caller waits (tenants that store no PAN), with
    /// the caller's idempotency key (random per provisioning: a card
    /// deleted and tokenized again gets a new token, never the old one and
    /// its spent ATCs; a client retry after a timeout may leave an unused
    /// token at the scheme). A token the vault holds for another alias is
    /// refused.
    pub async fn provision_now(
        &self,
        card: &CardToTokenize<'_>,
        idempotency_key: &str,
    ) -> Result<SyncToken, SyncError> {
        let CardToTokenize {
            alias,
            tenant,
            scheme,
            pan,
            exp_month,
            exp_year,
        } = *card;
        let s = self.schemes.get(scheme).ok_or_else(|| {
            SyncError::NotEligible("no token service for this card's scheme".into())
        })?;
        if s.paused.load(Ordering::Relaxed) {
            return Err(SyncError::Unavailable(
                "provisioning for this scheme is paused".into(),
            ));
        }
        let started = Instant::now();
        let call = s
            .connector
            .provision(pan, exp_month, exp_year, idempotency_key);
        let p = match tokio::time::timeout(self.settings.sync_timeout, call).await {
            Err(_) => {
                return Err(SyncError::Unavailable(
                    "the token service did not answer in time".into(),
                ));
            }
            Ok(Err(TspError::NotEligible(m))) => {
                s.not_eligible.fetch_add(1, Ordering::Relaxed);
                return Err(SyncError::NotEligible(m));
            }
            Ok(Err(TspError::Refused(m))) => {
                // Not the card: the vault's request or credentials, which an
                // operator must fix (the background path keeps a failed job).
                s.errors.fetch_add(1, Ordering::Relaxed);
                return Err(SyncError::Unavailable(format!("refused: {m}")));
            }
            Ok(Err(TspError::Transient { message, .. })) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                return Err(SyncError::Unavailable(message));
            }
            Ok(Ok(p)) => p,
        };
        // Never another card's token (a service that replays one).
        let held = self
            .store
            .token(&p.token_ref)
            .map_err(|e| SyncError::Unavailable(e.to_string()))?;
        if held.is_some_and(|t| t.alias != alias) {
            s.errors.fetch_add(1, Ordering::Relaxed);
            return Err(SyncError::Unavailable(
                "the token service answered with a token of another card".into(),
            ));
        }
        let (token_ref, token) = self
            .install(alias, tenant, scheme, &s.connector, p, Lane::Foreground)
            .await
            .map_err(SyncError::Unavailable)?;
        s.provisioned.fetch_add(1, Ordering::Relaxed);
        record_latency(&s.latencies_ms, started.elapsed());
        Ok(SyncToken { token_ref, token })
    }
}

enum JobError {
    Tsp(TspError),
    Local(String),
    Gone(String),
}

fn record_latency(window: &Mutex<VecDeque<u32>>, d: Duration) {
    if let Ok(mut w) = window.lock() {
        if w.len() == LATENCY_WINDOW {
            w.pop_front();
        }
        w.push_back(d.as_millis().min(u128::from(u32::MAX)) as u32);
    }
}

fn percentiles(window: &Mutex<VecDeque<u32>>) -> (u64, u64) {
    let Ok(w) = window.lock() else { return (0, 0) };
    if w.is_empty() {
        return (0, 0);
    }
    let mut v: Vec<u32> = w.iter().copied().collect();
    v.sort_unstable();
    let at = |q: f64| u64::from(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.50), at(0.99))
}

/// Token references travel in URLs and HSM labels: keep them tame.
pub fn valid_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The job's outcome for the metrics endpoint (`crate::metrics`).
fn record_job(job: &JobRec, finish: &JobFinish, took: Duration) {
    let outcome = match finish {
        JobFinish::Provisioned { .. } => "provisioned",
        JobFinish::Done { .. } => "done",
        JobFinish::Refreshed { .. } => "refreshed",
        JobFinish::Refused {
            status: TokenStatus::NotEligible,
            ..
        } => "not_eligible",
        JobFinish::Refused { .. } => "refused",
        JobFinish::Retry { give_up: true, .. } => "failed",
        JobFinish::Retry { .. } => "retry",
    };
    let kind = job.kind.as_str();
    let scheme = job.scheme.clone();
    metrics::counter!("vaultd_provisioning_jobs_total", "scheme" => scheme.clone(), "kind" => kind, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("vaultd_provisioning_job_duration_seconds", "scheme" => scheme, "kind" => kind)
        .record(took.as_secs_f64());
}
