//! The group-commit writer: one thread owns `begin_write`. Requests hand it
//! closures over a channel; it runs every closure waiting (up to a bound)
//! inside one transaction, commits once with `Durability::Immediate`, and
//! only then lets each request see its result. One fsync thus serves a
//! whole batch, and no answer ever precedes its commit.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use vault_hsm::Hsm;

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
}

/// The view a write closure gets: the open transaction plus helpers that
/// append to the chained logs.
pub struct WriteCtx<'a> {
    pub txn: &'a WriteTransaction,
    pub(crate) counters: &'a mut Counters,
    slots: &'a SlotFile,
    /// New slots and their bytes, written in one pass before the commit.
    slot_writes: Vec<(u64, [u8; super::slots::SLOT])>,
    slot_frees: Vec<u64>,
    /// Counter changes in `meta`, applied once per batch.
    deltas: std::collections::BTreeMap<String, i64>,
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
}

impl Writer {
    pub(crate) fn start(
        db: Arc<Database>,
        slots: Arc<SlotFile>,
        hsm: Arc<dyn Hsm>,
        counters: Counters,
        two_phase: bool,
        max_batch: usize,
        stats: Arc<WriterStats>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>(max_batch * 4);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, slots, hsm, counters, two_phase, max_batch, rx, stats))?;
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

#[allow(clippy::too_many_arguments)]
fn run(
    db: Arc<Database>,
    slots: Arc<SlotFile>,
    hsm: Arc<dyn Hsm>,
    mut counters: Counters,
    two_phase: bool,
    max_batch: usize,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<WriterStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let saved = counters.clone();
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        let mut slot_writes: Vec<(u64, [u8; super::slots::SLOT])> = Vec::new();
        let mut slot_frees = Vec::new();
        let t0 = std::time::Instant::now();
        let outcome = (|| -> Result<(), StoreError> {
            let mut txn = db.begin_write()?;
            txn.set_two_phase_commit(two_phase);
            {
                let mut ctx = WriteCtx {
                    txn: &txn,
                    counters: &mut counters,
                    slots: &slots,
                    slot_writes: Vec::new(),
                    slot_frees: Vec::new(),
                    deltas: std::collections::BTreeMap::new(),
                };
                let run_all = (|| {
                    for job in batch.drain(..) {
                        completions.push(job(&mut ctx)?);
                    }
                    ctx.flush_counters(saved.job_id)
                })();
                slot_writes = std::mem::take(&mut ctx.slot_writes);
                slot_frees = std::mem::take(&mut ctx.slot_frees);
                run_all?;
            }
            // Seal the audit chain at this commit's last record.
            if counters.audit_seq != saved.audit_seq {
                let seq = counters.audit_seq;
                // The newest audit key; the seal records which one it was.
                let version = hsm.audit_key_version();
                match hsm.audit_mac_with(
                    version,
                    &counters.audit_hash,
                    &super::audit::seal_input(seq),
                ) {
                    Ok(seal) => {
                        txn.open_table(AUDIT_SEALS)?
                            .insert(seq, super::audit::encode_seal(version, &seal).as_slice())?;
                    }
                    // The HSM is down: commit the records chained but
                    // unsealed rather than lose them (refusals during the
                    // outage, erasures, queue changes). The next seal covers
                    // the chain up to its own record, these included, and
                    // until then `audit` reports the tail as unverified.
                    Err(vault_hsm::HsmError::Unavailable(why)) => {
                        tracing::warn!(
                            through = seq,
                            error = %why,
                            "audit records committed without a seal; the next commit with the HSM seals them"
                        );
                    }
                    Err(e) => return Err(StoreError::Hsm(e)),
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
                run_us = t_run.as_micros() as u64,
                slots_us = (t_slots - t_run).as_micros() as u64,
                commit_us = (t0.elapsed() - t_slots).as_micros() as u64,
                "group commit"
            );
            Ok(())
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
            Ok(()) => {
                stats.commits.fetch_add(1, Relaxed);
                stats.failing.store(false, Relaxed);
                stats.mutations.fetch_add(n, Relaxed);
                for c in completions {
                    c(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, mutations = n, "group commit failed; batch rolled back");
                counters = saved;
                // An HSM refusal (the audit seal) is the HSM's state, which
                // health reports on its own; only storage failures latch.
                if !matches!(e, StoreError::Hsm(_)) {
                    stats.failing.store(true, Relaxed);
                }
                for c in completions {
                    c(Err(StoreError::Unavailable(
                        "the store could not commit this batch".into(),
                    )));
                }
            }
        }
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
            let mut mac = [0u8; 32];
            mac.copy_from_slice(&v[v.len() - 32..]);
            (k.value(), mac)
        }
        None => (0, [0u8; 32]),
    };
    let event_seq = super::newest_seq(&r.open_table(EVENTS)?)?;
    let job_id = r
        .open_table(META)?
        .get("job_id")?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    Ok(Counters {
        audit_seq,
        audit_hash,
        event_seq,
        job_id,
    })
}
