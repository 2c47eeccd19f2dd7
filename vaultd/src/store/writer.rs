//! The group-commit writer: one thread owns `begin_write`. Requests hand it
//! closures over a channel; it runs every closure waiting (up to a bound)
//! inside one transaction, commits once with `Durability::Immediate`, and
//! only then lets each request see its result. One fsync thus serves a
//! whole batch, and no answer ever precedes its commit.
//!
//! The writer also seals the audit chain with the HSM (`store::audit`):
//! under load once per `audit_seal_interval` instead of once per commit (a
//! seal is an HSM call on the commit's path, and SoftHSM2 makes every other
//! session wait while it runs); when the load stops, the tail is sealed by
//! a commit of its own within the interval. Before it seals anything it
//! checks the trail's tail (`audit::check_tail`); after a seal it rewrites
//! the audit head file (at most once a second, and at the stop); every
//! committed record and every seal goes to the log
//! (`logging::AuditLog`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use vault_hsm::Hsm;

use super::atc::AtcBook;
use super::audit::{Head, HeadFile, Seal, SealKind};
use super::records::{AuditRec, EventRec, encode};
use super::slots::SlotFile;
use super::{AUDIT, AUDIT_SEALS, EVENTS, META, StoreError};

/// What the writer keeps between transactions: the audit chain head and the
/// id counters. Copied before each batch and restored if its commit fails.
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    pub audit_seq: u64,
    /// Hash of the chain's last record.
    pub audit_hash: [u8; 32],
    pub event_seq: u64,
    pub job_id: u64,
    /// The newest sealed audit record (`audit_seals`' last key; 0: none).
    pub sealed_seq: u64,
    /// That seal, which the next one covers (`None`: none, or unreadable).
    pub sealed: Option<Seal>,
}

/// The view a write closure gets: the open transaction plus helpers that
/// append to the chained logs.
pub struct WriteCtx<'a> {
    pub txn: &'a WriteTransaction,
    pub(crate) counters: &'a mut Counters,
    atcs: &'a mut AtcBook,
    slots: &'a SlotFile,
    /// New slots and their bytes, written in one pass before the commit.
    slot_writes: Vec<(u64, [u8; super::slots::SLOT])>,
    slot_frees: Vec<u64>,
    /// Counter changes in `meta`, applied once per batch.
    deltas: std::collections::BTreeMap<String, i64>,
    /// Seal the audit chain at this commit, due or not.
    seal: bool,
    /// The audit records of this batch, for the log once it committed.
    logged: Vec<(u64, AuditRec)>,
}

impl WriteCtx<'_> {
    /// Puts a sealed PAN into a fresh slot; written and synced before this
    /// batch commits.
    pub fn put_slot(&mut self, sealed: &[u8]) -> Result<u64, StoreError> {
        let (slot, bytes) = self.slots.alloc(sealed)?;
        self.slot_writes.push((slot, bytes));
        Ok(slot)
    }

    /// Adds `delta` to the counter `key` in `meta` (applied at commit).
    pub fn bump(&mut self, key: String, delta: i64) {
        *self.deltas.entry(key).or_insert(0) += delta;
    }

    /// The sealed PAN in `slot` (a slot is never rewritten while referenced).
    pub fn read_slot(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.slots.get(slot)
    }

    /// Marks a slot for zeroing once this batch's commit is durable.
    pub fn free_slot(&mut self, slot: u64) {
        self.slot_frees.push(slot);
    }

    /// Appends an audit record, chained to the previous one (the batch's
    /// commit seals the chain with the HSM).
    pub fn audit(&mut self, rec: &AuditRec) -> Result<u64, StoreError> {
        let body = encode(rec)?;
        let hash = super::audit::chain(&self.counters.audit_hash, &body);
        let seq = self.counters.audit_seq + 1;
        let mut stored = body;
        stored.extend_from_slice(&hash);
        self.txn.open_table(AUDIT)?.insert(seq, stored.as_slice())?;
        self.counters.audit_seq = seq;
        self.counters.audit_hash = hash;
        self.logged.push((seq, rec.clone()));
        Ok(seq)
    }

    /// Appends a lifecycle/provisioning event.
    pub fn event(&mut self, rec: &EventRec) -> Result<u64, StoreError> {
        let seq = self.counters.event_seq + 1;
        self.txn
            .open_table(EVENTS)?
            .insert(seq, encode(rec)?.as_slice())?;
        self.counters.event_seq = seq;
        Ok(seq)
    }

    /// Makes this batch's commit seal the audit chain, and returns the
    /// newest record it will cover at least.
    pub fn seal_audit(&mut self) -> u64 {
        self.seal = true;
        self.counters.audit_seq
    }

    /// The token's current ATC, given the one in its record (the record
    /// lags: see `store::atc`).
    pub fn atc(&self, token_ref: &str, in_record: u16) -> u16 {
        self.atcs.get(token_ref, in_record)
    }

    /// Sets the token's ATC, durably with this batch's commit.
    pub fn set_atc(&mut self, token_ref: &str, atc: u16) {
        self.atcs.set(token_ref, atc);
    }

    /// The token's record is being erased.
    pub fn forget_atc(&mut self, token_ref: &str) {
        self.atcs.forget(token_ref);
    }

    /// A fresh job id.
    pub fn next_job_id(&mut self) -> Result<u64, StoreError> {
        self.counters.job_id += 1;
        Ok(self.counters.job_id)
    }

    /// Writes the batch's counter changes and the job id counter.
    fn flush_counters(&mut self, job_id_before: u64) -> Result<(), StoreError> {
        let mut meta = self.txn.open_table(META)?;
        for (key, delta) in std::mem::take(&mut self.deltas) {
            if delta == 0 {
                continue;
            }
            let cur = super::meta_u64(&meta, &key)?;
            meta.insert(
                key.as_str(),
                cur.saturating_add_signed(delta).to_be_bytes().as_slice(),
            )?;
        }
        if self.counters.job_id != job_id_before {
            meta.insert("job_id", self.counters.job_id.to_be_bytes().as_slice())?;
        }
        Ok(())
    }
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> Result<Completion, StoreError> + Send>;

/// Handle to the writer thread.
pub struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts the writer exposes for benchmarks and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub mutations: std::sync::atomic::AtomicU64,
    /// The last commit failed (redb keeps an I/O error latched: writes stay
    /// refused until the database is reopened, so `health` must say so).
    pub failing: std::sync::atomic::AtomicBool,
    /// Start-up found the audit chain broken and no operator has
    /// acknowledged it yet: what is broken (for `health` and `audit`).
    pub audit_broken: std::sync::Mutex<Option<String>>,
}

/// How the writer commits (from `[storage]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterOptions {
    pub two_phase: bool,
    pub max_batch: usize,
    /// Longest time a committed audit record waits for its seal.
    pub seal_interval: Duration,
}

/// What the writer thread is started with.
pub(crate) struct WriterParts {
    pub db: Arc<Database>,
    pub slots: Arc<SlotFile>,
    pub hsm: Arc<dyn Hsm>,
    pub counters: Counters,
    /// Every token's current ATC (replayed from the journal at start-up).
    pub atcs: AtcBook,
    /// Tokens whose ATCs a restore made unknown
    /// ([`super::atc::forget_after_restore`]): audited at start.
    pub restored: Option<u64>,
    pub opts: WriterOptions,
    pub stats: Arc<WriterStats>,
    /// The audit head file (`audit::head_path`).
    pub head: PathBuf,
}

/// What the writer thread owns.
struct State {
    p: WriterParts,
    /// When the next seal is made without being asked for.
    next_seal: Instant,
    /// Records `from` to `to` are not vouched for by a seal, as start-up
    /// found, and no operator has acknowledged that: seals are
    /// [`SealKind::Broken`] ones.
    broken: Option<(u64, u64)>,
    /// Start-up could not check the trail (the HSM was unavailable):
    /// nothing is sealed until a check has run.
    unchecked: bool,
    /// The audit head of the newest seal (when it is chained and this
    /// process made or verified it), the seal the head file names, and
    /// when that was written.
    next_head: Option<Head>,
    head_seq: Option<u64>,
    head_at: Instant,
    log: crate::logging::AuditLog,
}

/// While the HSM refuses seals they are retried this often at most, not
/// at every commit.
const SEAL_RETRY: Duration = Duration::from_secs(1);
/// The audit head file is rewritten after a seal at most this often (and
/// at every stop): a file write, a sync and one HSM call.
const HEAD_EVERY: Duration = Duration::from_secs(1);

impl State {
    /// The next seal after a seal the HSM refused at `t0`.
    fn seal_refused_at(&mut self, t0: Instant) {
        self.next_seal = t0 + self.p.opts.seal_interval.max(SEAL_RETRY);
    }
}

impl Writer {
    pub(crate) fn start(parts: WriterParts) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>(parts.opts.max_batch * 4);
        // Only to wait for a job with a deadline (the next seal).
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let mut state = State {
            p: parts,
            next_seal: Instant::now(),
            broken: None,
            unchecked: true,
            next_head: None,
            head_seq: None,
            head_at: Instant::now(),
            log: crate::logging::AuditLog::start()?,
        };
        seal_leftover_tail(&mut state);
        note_restore(&mut state);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(state, &clock, rx))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` inside the next group commit and returns its result once
    /// that commit is durable. If `f` fails, or the commit fails, nothing of
    /// the batch is written and every request in it gets the error.
    ///
    /// `f` must do its checks before it writes: an `Err` aborts the whole
    /// batch, so domain refusals belong in `R`, not in the error.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |ctx| {
            let r = f(ctx)?;
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = done_tx.send(committed.map(|()| r));
            }))
        });
        self.submit(job).await?;
        done_rx
            .await
            .map_err(|_| StoreError::Unavailable("write batch aborted".into()))?
    }
}

/// The commit of a write whose result was handed out early
/// ([`Writer::write_early`]): resolves once that commit is durable (or
/// failed, in which case nothing of it was written).
pub struct Committed(oneshot::Receiver<Result<(), StoreError>>);

impl Committed {
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0
            .await
            .map_err(|_| StoreError::Unavailable("write batch aborted".into()))?
    }
}

impl Writer {
    /// Like [`Writer::write`], but hands out `f`'s result as soon as `f`
    /// ran, before the commit, with a [`Committed`] to await the commit.
    /// For work that may start from a value but must not be *returned*
    /// before the value is durable (a cryptogram computed from its ATC
    /// while the ATC's commit syncs).
    pub async fn write_early<R, F>(&self, f: F) -> Result<(R, Committed), StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (early_tx, early_rx) = oneshot::channel::<R>();
        let (done_tx, done_rx) = oneshot::channel::<Result<(), StoreError>>();
        let job: Job = Box::new(move |ctx| {
            let r = f(ctx)?;
            let _ = early_tx.send(r);
            Ok(Box::new(move |committed: Result<(), StoreError>| {
                let _ = done_tx.send(committed);
            }))
        });
        self.submit(job).await?;
        match early_rx.await {
            Ok(r) => Ok((r, Committed(done_rx))),
            // `f` failed or the batch was aborted before it ran.
            Err(_) => Err(done_rx
                .await
                .ok()
                .and_then(Result::err)
                .unwrap_or_else(|| StoreError::Unavailable("write batch aborted".into()))),
        }
    }

    /// Seals the audit chain now (one commit) and returns the newest
    /// record the seal covers at least: every record committed before this
    /// call. Unsealed if the HSM is unavailable (the next seal covers it).
    pub async fn seal_audit(&self) -> Result<u64, StoreError> {
        self.write(|ctx| Ok(ctx.seal_audit())).await
    }

    /// Hands `job` to the writer thread (waiting while its queue is full).
    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        let stopped = || StoreError::Unavailable("store writer stopped".into());
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(job).await.map_err(|_| stopped())
    }
}

impl Drop for Writer {
    /// Closes the channel, lets the thread commit what it already has, and
    /// joins it: dropping the store is a clean shutdown.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a batch did about the audit seal.
enum Sealed {
    /// Nothing new to seal, or not due yet.
    No,
    /// Sealed at this seq; the audit head for the seal.
    At(u64, Seal, Head),
    /// The HSM is unavailable: committed unsealed, tried again later.
    HsmDown,
}

fn run(mut st: State, clock: &tokio::runtime::Runtime, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(st.p.opts.max_batch);
    let mut closed = false;
    loop {
        let pending = st.p.counters.audit_seq > st.p.counters.sealed_seq;
        if batch.is_empty() && !closed {
            let next = if pending {
                // A quiet writer seals the tail once the seal is due.
                let due = tokio::time::Instant::from_std(st.next_seal);
                clock.block_on(async { tokio::time::timeout_at(due, rx.recv()).await })
            } else {
                Ok(clock.block_on(rx.recv()))
            };
            match next {
                Ok(Some(job)) => batch.push(job),
                Ok(None) => closed = true,
                Err(_elapsed) => {}
            }
        }
        if batch.is_empty() && !pending {
            if closed {
                keep_head(&mut st, true);
                return;
            }
            continue;
        }
        while batch.len() < st.p.opts.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if st.unchecked && Instant::now() >= st.next_seal {
            check_at_start(&mut st);
            keep_head(&mut st, true);
        }
        commit_batch(&mut st, &mut batch, closed);
        // Closed and drained: that commit was the last (it sealed the
        // tail, or the HSM is down and start-up will).
        if closed {
            keep_head(&mut st, true);
            return;
        }
    }
}

/// Start-up's audit check, before anything is sealed
/// ([`super::audit::check_tail`]): the tail from the newest good seal, the
/// seal links and the audit head. Then, if the trail is intact, records
/// committed without a seal before this start (a crash between a commit
/// and the seal after it, a backup taken between them, or a stop while the
/// HSM was unavailable) are named in a record and sealed; if it is broken,
/// the break is logged loudly and recorded, and from then on seals do not
/// vouch for the broken range ([`SealKind::Broken`]) until an operator
/// acknowledges it. If the HSM is unavailable nothing is sealed until the
/// check has run.
fn seal_leftover_tail(st: &mut State) {
    check_at_start(st);
    keep_head(st, true);
}

/// Runs the start-up check (again, while the HSM was unavailable for it).
fn check_at_start(st: &mut State) {
    let head = Head::read(&st.p.head);
    let restored = st.p.restored.is_some();
    let hsm = st.p.hsm.clone();
    let mut mac = |v: u32, p: &[u8; 32], d: &[u8]| hsm.audit_mac_with(v, p, d);
    let check =
        st.p.db
            .begin_read()
            .map_err(StoreError::from)
            .and_then(|r| super::audit::check_tail(&r, &head, restored, &mut mac));
    let check = match check {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not check the audit trail at start-up; nothing is sealed until the check has run"
            );
            st.seal_refused_at(Instant::now());
            return;
        }
    };
    st.unchecked = false;
    st.next_head = check.head;
    // A head that is wrong in any way is rewritten at once.
    st.head_seq = match head {
        HeadFile::Found(h) if check.findings.is_empty() => Some(h.seq),
        _ => None,
    };
    for note in &check.notes {
        tracing::warn!("audit trail: {note}");
    }
    if let Some((from, to, why)) = check.broken() {
        let range = super::audit::range_text(from, to);
        let outcome = format!(
            "the audit chain is broken from record {from}: {range} are not vouched for by a valid seal ({why}); new records are sealed without vouching for them until an operator acknowledges the break (vaultd audit acknowledge)"
        );
        tracing::error!(
            first_bad = from,
            through = to,
            "AUDIT CHAIN BROKEN: {why}. vaultd serves on and seals new records, never vouching for {range}; compare the trail with the log (`vaultd audit verify` names the first bad record), then run `vaultd audit acknowledge` with vaultd stopped"
        );
        st.broken = Some((from, to));
        *st.p
            .stats
            .audit_broken
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "audit chain broken from record {from} ({range}), not acknowledged: {why}"
        ));
        let job: Job = Box::new(move |ctx: &mut WriteCtx<'_>| {
            ctx.audit(&AuditRec::by_daemon("audit_chain_broken", outcome))?;
            ctx.seal_audit();
            Ok(Box::new(|_| {}) as Completion)
        });
        commit_batch(st, &mut vec![job], false);
        return;
    }
    if let Some((from, to)) = check.unacknowledged {
        let range = super::audit::range_text(from, to);
        tracing::error!(
            first_bad = from,
            through = to,
            "AUDIT CHAIN BROKEN: an earlier start found {range} not vouched for by a valid seal, and no operator has acknowledged it; `vaultd audit verify` names the break, `vaultd audit acknowledge` (vaultd stopped) records that it was seen"
        );
        st.broken = Some((from, to));
        *st.p
            .stats
            .audit_broken
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "audit chain broken from record {from} ({range}, found at an earlier start), not acknowledged"
        ));
    }
    let Some((from, to)) = check.unsealed else {
        return;
    };
    let job: Job = Box::new(move |ctx: &mut WriteCtx<'_>| {
        let outcome = format!(
            "sealed records {from} to {to}, committed without a seal before this start (a crash, a restored backup or an HSM outage)"
        );
        ctx.audit(&AuditRec::by_daemon("audit_seal", outcome))?;
        ctx.seal_audit();
        Ok(Box::new(|_| {}) as Completion)
    });
    tracing::warn!(
        from,
        to,
        "audit records found unsealed at start-up; they hash from the last seal: sealing them"
    );
    commit_batch(st, &mut vec![job], false);
}

/// Rewrites the audit head file to name the newest seal, if it names an
/// older one (or none) and was written more than [`HEAD_EVERY`] ago (or
/// `now`). A file write, no HSM call: the seal's MAC gave the head. A head
/// that lags is safe (start-up only refuses one ahead of the trail), so a
/// failure is a warning.
fn keep_head(st: &mut State, now: bool) {
    let Some(head) = st.next_head else { return };
    if st.unchecked
        || st.head_seq == Some(head.seq)
        || (!now && st.head_seq.is_some() && st.head_at.elapsed() < HEAD_EVERY)
    {
        return;
    }
    match head.write(&st.p.head) {
        Ok(()) => {
            st.head_seq = Some(head.seq);
            st.head_at = Instant::now();
        }
        Err(e) => tracing::warn!(
            error = %e,
            path = %st.p.head.display(),
            seal = head.seq,
            "could not rewrite the audit head file; retried after the next seal"
        ),
    }
}

/// The first start after a restore: says in the trail what the restore
/// pass did and clears the database's restore mark in the same commit. If
/// the commit fails the mark stays, and the next start does both again.
fn note_restore(st: &mut State) {
    let Some(tokens) = st.p.restored.take() else {
        return;
    };
    let job: Job = Box::new(move |ctx: &mut WriteCtx<'_>| {
        let outcome = format!(
            "started on a restored backup: the ATCs of {tokens} network tokens may be behind the schemes', so each one's next cryptogram waits for a key refresh"
        );
        ctx.audit(&AuditRec::by_daemon("restore", outcome))?;
        ctx.txn
            .open_table(super::META)?
            .remove(super::atc::ATCS_UNKNOWN)?;
        Ok(Box::new(|_| {}) as Completion)
    });
    tracing::warn!(
        tokens,
        "started on a restored backup: every network token needs a key refresh before its next cryptogram (queued at its next payment)"
    );
    commit_batch(st, &mut vec![job], false);
}

/// Runs `batch` in one transaction and commits it, sealing the audit chain
/// when a seal is due, asked for, or the writer is stopping; then answers
/// every job.
fn commit_batch(st: &mut State, batch: &mut Vec<Job>, stopping: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    // A batch of no jobs is only run to seal the tail.
    let seal_anyway = stopping || batch.is_empty();
    let n = batch.len() as u64;
    let saved = st.p.counters.clone();
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut slot_writes: Vec<(u64, [u8; super::slots::SLOT])> = Vec::new();
    let mut slot_frees = Vec::new();
    let mut logged = Vec::new();
    let t0 = Instant::now();
    let (unchecked, kind) = (
        st.unchecked,
        st.broken
            .map_or(SealKind::Normal, |(from, to)| SealKind::Broken { from, to }),
    );
    let (db, slots, hsm) = (&st.p.db, &st.p.slots, &st.p.hsm);
    let counters = &mut st.p.counters;
    let atcs = &mut st.p.atcs;
    let outcome = (|| -> Result<Sealed, StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_two_phase_commit(st.p.opts.two_phase);
        let asked;
        {
            let mut ctx = WriteCtx {
                txn: &txn,
                counters: &mut *counters,
                atcs: &mut *atcs,
                slots,
                slot_writes: Vec::new(),
                slot_frees: Vec::new(),
                deltas: std::collections::BTreeMap::new(),
                seal: seal_anyway,
                logged: Vec::new(),
            };
            let run_all = (|| {
                for job in batch.drain(..) {
                    completions.push(job(&mut ctx)?);
                }
                ctx.flush_counters(saved.job_id)?;
                ctx.atcs.finish_batch(ctx.txn)
            })();
            slot_writes = std::mem::take(&mut ctx.slot_writes);
            slot_frees = std::mem::take(&mut ctx.slot_frees);
            logged = std::mem::take(&mut ctx.logged);
            asked = ctx.seal;
            run_all?;
        }
        let mut sealed = Sealed::No;
        if !unchecked && counters.audit_seq > counters.sealed_seq && (asked || t0 >= st.next_seal) {
            sealed = seal(hsm.as_ref(), &txn, counters, kind)?;
            if let Sealed::At(seq, s, _) = &sealed {
                counters.sealed_seq = *seq;
                counters.sealed = Some(*s);
            }
        }
        let t_run = t0.elapsed();
        // New PANs are on disk before the commit that points at them.
        if !slot_writes.is_empty() {
            slots.write_all(&mut slot_writes)?;
        }
        let t_slots = t0.elapsed();
        txn.commit()?;
        tracing::trace!(
            mutations = n,
            sealed = matches!(sealed, Sealed::At(..)),
            run_us = t_run.as_micros() as u64,
            slots_us = (t_slots - t_run).as_micros() as u64,
            commit_us = (t0.elapsed() - t_slots).as_micros() as u64,
            "group commit"
        );
        Ok(sealed)
    })();
    // Erased PANs are zeroed in place once their erasure is durable
    // (a crash before this is finished at start-up); slots written by a
    // batch that did not commit are zeroed and reused.
    let written: Vec<u64> = slot_writes.iter().map(|(s, _)| *s).collect();
    let to_zero = if outcome.is_ok() {
        &slot_frees
    } else {
        &written
    };
    if let Err(e) = slots.erase(to_zero) {
        tracing::error!(error = %e, "could not zero PAN slots; start-up will");
    }
    // Jobs not run (after a failure) drop their reply senders: their
    // callers see "write batch aborted".
    batch.clear();
    match outcome {
        Ok(sealed) => {
            metrics::histogram!("vaultd_store_commit_batch_size").record(n as f64);
            metrics::histogram!("vaultd_store_commit_duration_seconds")
                .record(t0.elapsed().as_secs_f64());
            st.p.atcs.committed();
            st.p.stats.commits.fetch_add(1, Relaxed);
            st.p.stats.failing.store(false, Relaxed);
            st.p.stats.mutations.fetch_add(n, Relaxed);
            for c in completions {
                c(Ok(()));
            }
            st.log.records(logged);
            match sealed {
                Sealed::No => {}
                Sealed::At(seq, s, head) => {
                    st.next_seal = t0 + st.p.opts.seal_interval;
                    st.log.seal(seq, &s);
                    st.next_head = Some(head);
                    keep_head(st, stopping);
                }
                Sealed::HsmDown => st.seal_refused_at(t0),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, mutations = n, "group commit failed; batch rolled back");
            st.p.counters = saved;
            st.p.atcs.rollback();
            // An HSM refusal (the audit seal) is the HSM's state, which
            // health reports on its own; only storage failures latch.
            if !matches!(e, StoreError::Hsm(_)) {
                st.p.stats.failing.store(true, Relaxed);
            } else {
                st.seal_refused_at(t0);
            }
            for c in completions {
                c(Err(StoreError::Unavailable(
                    "the store could not commit this batch".into(),
                )));
            }
        }
    }
}

/// Seals the audit chain at its head in `txn` with the newest audit key:
/// a chained seal ([`Seal`]) over the head's hash and the previous seal,
/// of `kind`.
fn seal(
    hsm: &dyn Hsm,
    txn: &WriteTransaction,
    c: &Counters,
    kind: SealKind,
) -> Result<Sealed, StoreError> {
    let seq = c.audit_seq;
    let made = Seal::make(
        hsm.audit_key_version(),
        seq,
        &c.audit_hash,
        (c.sealed_seq, c.sealed.as_ref().map_or(&[][..], Seal::tag)),
        crate::vault::cards::now_ms(),
        kind,
        |v, p, d| hsm.audit_mac_with(v, p, d),
    );
    match made {
        Ok((s, head)) => {
            txn.open_table(AUDIT_SEALS)?
                .insert(seq, s.encode().as_slice())?;
            Ok(Sealed::At(seq, s, head))
        }
        // The HSM is down: commit the records chained but unsealed rather
        // than lose them (refusals during the outage, erasures, queue
        // changes). The next seal covers the chain up to its own record,
        // these included, and until then `audit` reports the tail as
        // unverified.
        Err(vault_hsm::HsmError::Unavailable(why)) => {
            tracing::warn!(
                through = seq,
                error = %why,
                "audit records committed without a seal; the next commit with the HSM seals them"
            );
            Ok(Sealed::HsmDown)
        }
        Err(e) => Err(StoreError::Hsm(e)),
    }
}

/// Reads the counters back from the tables at start-up.
pub(crate) fn load_counters(db: &Database) -> Result<Counters, StoreError> {
    let r = db.begin_read()?;
    let audit = r.open_table(AUDIT)?;
    let (audit_seq, audit_hash) = match audit.last()? {
        Some((k, v)) => {
            let v = v.value();
            if v.len() < 32 {
                return Err(StoreError::Corrupt("short audit record".into()));
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&v[v.len() - 32..]);
            (k.value(), hash)
        }
        None => (0, [0u8; 32]),
    };
    let event_seq = super::newest_seq(&r.open_table(EVENTS)?)?;
    let job_id = r
        .open_table(META)?
        .get("job_id")?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    // The newest seal, which the next one links to (start-up's check
    // reports an unreadable one).
    let (sealed_seq, sealed) = match r.open_table(AUDIT_SEALS)?.last()? {
        Some((k, v)) => (k.value(), Seal::decode(v.value()).ok()),
        None => (0, None),
    };
    Ok(Counters {
        audit_seq,
        audit_hash,
        event_seq,
        job_id,
        sealed_seq,
        sealed,
    })
}
