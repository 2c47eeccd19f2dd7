//! The store: redb behind the [`Store`] trait. Tables are defined here, at
//! the top, and nowhere else; records are versioned MessagePack
//! ([`records`]); every write goes through the group-commit [`writer`].
//!
//! `Store` is the seam for a replicated backend one day: the vault only
//! sees these domain operations, never redb.

pub(crate) mod alias_status;
pub mod atc;
pub mod audit;
pub mod backup;
#[cfg(any(test, feature = "fault-injection"))]
pub mod faulty;
pub(crate) mod kek_use;
pub mod lifecycle;
mod migrate_keys;
pub mod queue;
pub mod records;
pub mod rekey;
pub mod retention;
pub mod slots;
pub mod tokens;
pub mod writer;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use vault_hsm::{Hsm, HsmError};

pub use backup::{BackupStore, BackupSummary};
pub use lifecycle::{Change, ChangeKind, LifecycleStore};
pub use queue::{JobFinish, QueueStore};
use records::{AliasRec, AuditRec, TokenRec, TxnRec, decode, encode};
pub use rekey::KeyStore;
pub use retention::RetentionStore;
pub use tokens::{AtcOutcome, TokenStore};

/// Per (scheme, KEK version), how many stored token keys it wraps
/// (version 0: legacy `nt.*` HSM objects). See `kek_use`.
pub type KekUsage = std::collections::BTreeMap<(String, u32), u64>;
pub use writer::{WriteCtx, Writer, WriterStats};

/// alias → [`AliasRec`]
pub(crate) const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// tenant ‖ 0x00 ‖ fingerprint → alias: the convergent lookup.
pub(crate) const FINGERPRINTS: TableDefinition<&[u8], &str> = TableDefinition::new("fingerprints");
/// token_ref → [`TokenRec`]
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// job id → [`records::JobRec`]
pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// (scheme, next_at, job id) → (): due and scheduled jobs, in time order
/// within each scheme (see [`queue`]).
pub(crate) const JOB_QUEUE: TableDefinition<(&str, u64, u64), ()> =
    TableDefinition::new("job_queue_by_scheme");
/// Schema 3 and before: (next_at, job id) → (), every scheme in one order.
const OLD_JOB_QUEUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("job_queue");
/// tenant ‖ 0x00 ‖ transaction id → [`TxnRec`]
pub(crate) const TRANSACTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("transactions");
/// (expires_at, tenant ‖ 0x00 ‖ transaction id) → (): what
/// [`Store::purge_expired`] deletes, oldest first, without a scan.
pub(crate) const TRANSACTIONS_BY_EXPIRY: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new("transactions_by_expiry");
/// seq → [`records::EventRec`]
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// seq → encoded [`AuditRec`] ‖ chain hash (32 bytes), see [`audit`].
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// seq of an audit record → HSM seal of the chain there (one every
/// `audit_seal_interval` at most, see `writer`).
pub(crate) const AUDIT_SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_seals");
/// seq → the ATCs one group commit issued ([`atc`]): the journal the
/// current ATCs are replayed from over `tokens`' (lagging) `atc` fields.
pub(crate) const ATC_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("atc_log");
/// (token_ref, feed seq) → [`lifecycle::ParkedRec`]: lifecycle events for
/// a token not in the vault yet, applied when its provisioning commits.
pub(crate) const PARKED: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("parked_events");
/// (drop at, token_ref, feed seq) → (): parked events by when they are
/// dropped ([`lifecycle`]), so parking one never scans the others.
pub(crate) const PARKED_BY_EXPIRY: TableDefinition<(u64, &str, u64), ()> =
    TableDefinition::new("parked_events_by_expiry");
/// Schema version, counters, cursors, key versions.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// tenant ‖ 0x00 ‖ created_at (BE) ‖ alias → (): every retained PAN, oldest first.
pub(crate) const RETAINED: TableDefinition<&[u8], ()> = TableDefinition::new("retained");
/// tenant ‖ 0x00 ‖ active_since (BE) ‖ alias → (): retained PANs whose
/// token became active: what `transition` retention erases, in due order.
pub(crate) const ACTIVE_RETAINED: TableDefinition<&[u8], ()> =
    TableDefinition::new("active_retained");

/// Layout version of the whole database. The store refuses any other.
///
/// 2: the ATC journal (`atc_log`); `tokens`' `atc` fields lag behind it, so
/// a build of version 1 must not open such a database (it would issue ATCs
/// again). A version 1 database is upgraded in place: its journal is empty.
///
/// 3: token keys are stored in token records (`TokenRec::key`) instead of
/// HSM objects; a version 2 database is upgraded in place and its tokens'
/// keys are refreshed (`migrate_keys`). A build of version 2 must not open
/// it: it would not see the stored keys.
///
/// 4: the job queue is ordered by scheme first (`job_queue_by_scheme`),
/// and expiry indexes for transactions and parked events. An earlier
/// database is upgraded in place ([`upgrade_to_4`]); a build of version 3
/// must not open it: it would not see the queued jobs.
pub const SCHEMA_VERSION: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot serve now (I/O failure, aborted batch); nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record or the schema is not what this build understands.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The HSM failed inside a write (audit chain MAC).
    #[error("{0}")]
    Hsm(HsmError),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(m) => StoreError::Corrupt(m),
            redb::Error::TableTypeMismatch { .. } | redb::Error::UpgradeRequired(_) => {
                StoreError::Corrupt(e.to_string())
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type StoreResult<T> = Result<T, StoreError>;

/// The key of the fingerprint index.
pub fn fingerprint_key(tenant: &str, fp: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + fp.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(fp);
    k
}

fn txn_key(tenant: &str, txid: &str) -> Vec<u8> {
    fingerprint_key(tenant, txid.as_bytes())
}

/// An alias as read: its record and, when it has one, its token.
#[derive(Debug, Clone)]
pub struct AliasView {
    pub alias: String,
    pub rec: AliasRec,
    pub token: Option<TokenRec>,
}

/// Everything `tokenize` writes for a card the tenant has not stored yet.
pub struct NewAlias {
    pub alias: String,
    pub rec: AliasRec,
    pub pan_ct: Option<Vec<u8>>,
    /// Queue a provisioning job with the alias (network tokens on).
    pub provision: bool,
    /// A token provisioned synchronously (tenants that store no PAN).
    pub token: Option<(String, TokenRec)>,
}

/// One `tokenize` write: create the alias, or find the existing one for the
/// same fingerprint and refresh it.
pub struct TokenizeWrite {
    pub tenant: String,
    pub fingerprint: Vec<u8>,
    pub exp_month: u8,
    pub exp_year: u16,
    pub new: Option<NewAlias>,
    pub transaction: Option<(String, u64)>,
    pub audit: AuditRec,
}

pub enum TokenizeOutcome {
    Created(AliasView),
    Existing(AliasView),
    /// The fingerprint is unknown and no new alias was supplied: the caller
    /// seals the PAN and tries again.
    NeedsNew,
}

/// Counts for `stats`, read from table lengths.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub aliases: u64,
    pub pans_retained: u64,
    /// Aliases by network token status.
    pub tokens: std::collections::BTreeMap<String, u64>,
}

/// The vault's storage, whatever holds it: aliases here, the job queue in
/// [`QueueStore`], network tokens in [`TokenStore`].
pub trait Store:
    QueueStore
    + TokenStore
    + RetentionStore
    + LifecycleStore
    + KeyStore
    + BackupStore
    + Send
    + Sync
    + 'static
{
    fn find_by_fingerprint(&self, tenant: &str, fp: &[u8]) -> StoreResult<Option<String>>;
    fn alias(&self, alias: &str) -> StoreResult<Option<AliasView>>;
    fn pan_ciphertext(&self, alias: &str) -> StoreResult<Option<Vec<u8>>>;
    /// The alias remembered under a transaction id, if not expired at `now`.
    fn transaction(&self, tenant: &str, txid: &str, now: u64) -> StoreResult<Option<String>>;
    /// Deletes up to `limit` transaction ids expired at `now`, and parked
    /// lifecycle events past their wait, oldest first, in one commit.
    /// Returns how many rows went; fewer than `limit`: nothing more is due.
    fn purge_expired(
        &self,
        now: u64,
        limit: usize,
    ) -> impl Future<Output = StoreResult<usize>> + Send;
    fn counts(&self) -> StoreResult<Counts>;
    /// The newest audit record's and event's sequence numbers (0: none).
    fn log_heads(&self) -> StoreResult<vault_proto::ops::LogHeads>;
    /// Whether writes are going through (the last commit succeeded).
    fn writable(&self) -> bool;
    /// What start-up found broken in the audit chain, while no operator has
    /// acknowledged it (`store::audit`).
    fn audit_broken(&self) -> Option<String>;
    /// Audit records after `after` and at most `upto` (up to `limit` of
    /// them), each with its chain hash, and what verifying them needs (see
    /// [`AuditPage`]).
    fn audit_page(&self, after: u64, limit: usize, upto: u64) -> StoreResult<AuditPage>;
    /// Seals the audit chain now and returns the newest record the seal
    /// covers at least (every record committed before the call).
    fn seal_audit(&self) -> impl Future<Output = StoreResult<u64>> + Send;

    fn tokenize(
        &self,
        w: TokenizeWrite,
    ) -> impl Future<Output = StoreResult<TokenizeOutcome>> + Send;
    /// Erases the alias with its PAN, fingerprint entry and token record,
    /// and queues the durable delete job of its token (which destroys the
    /// token key and deletes the token at the scheme). False when the alias
    /// is not the tenant's.
    fn delete_alias(
        &self,
        tenant: &str,
        alias: &str,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Appends an audit record on its own (refusals, reads).
    fn audit(&self, rec: AuditRec) -> impl Future<Output = StoreResult<()>> + Send;
    /// Appends an event on its own (warnings the console shows).
    fn add_event(&self, rec: records::EventRec) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Events after `after`, up to `limit`, in order.
    fn events_page(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, records::EventRec)>>;
}

pub use audit::AuditPage;

/// The redb implementation.
pub struct RedbStore {
    db: Arc<Database>,
    slots: Arc<slots::SlotFile>,
    writer: Writer,
    pub stats: Arc<WriterStats>,
}

impl RedbStore {
    /// Opens (or creates) the database and its PAN slot file beside it,
    /// refuses an unknown schema version, and starts the writer thread.
    pub fn open(path: &Path, hsm: Arc<dyn Hsm>, opts: &StoreOptions) -> StoreResult<RedbStore> {
        let db = Database::builder()
            .set_cache_size(opts.cache_size)
            .create(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::start(db, &slot_path(path), audit::head_path(path), hsm, opts)
    }

    /// Like [`RedbStore::open`], on any redb storage backend: the fault
    /// tests run the store on a backend that fails the Nth write or sync.
    /// `slots` is the PAN slot file's path.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        slots: &Path,
        hsm: Arc<dyn Hsm>,
        opts: &StoreOptions,
    ) -> StoreResult<RedbStore> {
        let db = Database::builder()
            .set_cache_size(opts.cache_size)
            .create_with_backend(backend)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the database: {e}")))?;
        Self::start(db, slots, audit::head_path_beside_slots(slots), hsm, opts)
    }

    fn start(
        db: Database,
        slots: &Path,
        head: std::path::PathBuf,
        hsm: Arc<dyn Hsm>,
        opts: &StoreOptions,
    ) -> StoreResult<RedbStore> {
        init_schema(&db)?;
        migrate_keys::migrate(&db)?;
        let restored = atc::forget_after_restore(&db)?;
        let counters = writer::load_counters(&db)?;
        let atcs = atc::AtcBook::load(&db, opts.atc_fold_after)?;
        let slots = Arc::new(slots::SlotFile::open(slots, &used_slots(&db)?)?);
        let db = Arc::new(db);
        let stats = Arc::new(WriterStats::default());
        let writer = Writer::start(writer::WriterParts {
            db: db.clone(),
            slots: slots.clone(),
            hsm,
            counters,
            atcs,
            restored,
            opts: writer::WriterOptions {
                two_phase: opts.two_phase_commit,
                max_batch: opts.max_batch,
                seal_interval: opts.audit_seal_interval,
            },
            stats: stats.clone(),
            head,
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(RedbStore {
            db,
            slots,
            writer,
            stats,
        })
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub(crate) fn slots(&self) -> &slots::SlotFile {
        &self.slots
    }

    fn pan_slot_of(&self, alias: &str) -> StoreResult<Option<u64>> {
        let r = self.db.begin_read()?;
        let Some(raw) = r.open_table(ALIASES)?.get(alias)? else {
            return Ok(None);
        };
        let rec: AliasRec = decode("alias", raw.value())?;
        Ok(rec.pan_slot)
    }

    pub fn db(&self) -> &Database {
        &self.db
    }
}

/// How the store is opened (from `[storage]`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub two_phase_commit: bool,
    pub max_batch: usize,
    /// redb's page cache, bytes.
    pub cache_size: usize,
    /// Longest time a committed audit record waits for its HSM seal
    /// (`[storage] audit_seal_interval`; zero seals every commit).
    pub audit_seal_interval: std::time::Duration,
    /// ATCs journaled between two folds ([`atc`]).
    pub atc_fold_after: u64,
}

/// The PAN slot file beside the database: `vault.redb` → `vault.redb.pans`.
pub fn slot_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".pans");
    p.into()
}

/// Slots referenced by aliases (read once at start-up).
fn used_slots(db: &Database) -> StoreResult<std::collections::HashSet<u64>> {
    let r = db.begin_read()?;
    let mut used = std::collections::HashSet::new();
    for item in r.open_table(ALIASES)?.iter()? {
        let (_, v) = item?;
        let rec: AliasRec = decode("alias", v.value())?;
        if let Some(s) = rec.pan_slot {
            used.insert(s);
        }
    }
    Ok(used)
}

/// Schema 4 over an earlier database, in the transaction that marks it:
/// the job queue re-keyed by scheme, the expiry indexes built from the
/// records. One pass over the queue, the transactions and the parked
/// events (each bounded by what the vault holds), once.
fn upgrade_to_4(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let old: Vec<(u64, u64)> = {
        let t = txn.open_table(OLD_JOB_QUEUE)?;
        t.iter()?
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?
    };
    let jobs = txn.open_table(JOBS)?;
    let mut queue = txn.open_table(JOB_QUEUE)?;
    for (next_at, id) in old {
        if let Some(raw) = jobs.get(id)? {
            let job: records::JobRec = decode("job", raw.value())?;
            queue.insert((job.scheme.as_str(), next_at, id), ())?;
        }
    }
    drop((jobs, queue));
    txn.delete_table(OLD_JOB_QUEUE)?;
    let expiring: Vec<(Vec<u8>, u64)> = {
        let t = txn.open_table(TRANSACTIONS)?;
        t.iter()?
            .map(|item| {
                let (k, v) = item?;
                let rec: TxnRec = decode("transaction", v.value())?;
                Ok((k.value().to_vec(), rec.expires_at))
            })
            .collect::<StoreResult<_>>()?
    };
    let mut by_expiry = txn.open_table(TRANSACTIONS_BY_EXPIRY)?;
    for (k, at) in &expiring {
        by_expiry.insert((*at, k.as_slice()), ())?;
    }
    drop(by_expiry);
    lifecycle::index_parked(txn)
}

fn init_schema(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let current = meta
            .get("schema_version")?
            .map(|v| v.value().try_into().map(u32::from_be_bytes));
        match current {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())?;
                drop(meta);
                migrate_keys::mark_done(&txn)?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(Ok(v @ (1..=3))) => {
                meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())?;
                drop(meta);
                upgrade_to_4(&txn)?;
                tracing::info!("database upgraded from schema version {v} to {SCHEMA_VERSION}");
            }
            Some(Ok(v)) => {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {v}, this vaultd understands {SCHEMA_VERSION}"
                )));
            }
            Some(Err(_)) => return Err(StoreError::Corrupt("bad schema_version".into())),
        }
        // Create every table so readers never meet a missing one.
        txn.open_table(ALIASES)?;
        txn.open_table(FINGERPRINTS)?;
        txn.open_table(TOKENS)?;
        txn.open_table(ATC_LOG)?;
        txn.open_table(PARKED)?;
        txn.open_table(JOBS)?;
        txn.open_table(JOB_QUEUE)?;
        txn.open_table(TRANSACTIONS)?;
        txn.open_table(TRANSACTIONS_BY_EXPIRY)?;
        txn.open_table(PARKED_BY_EXPIRY)?;
        txn.open_table(EVENTS)?;
        txn.open_table(AUDIT)?;
        txn.open_table(AUDIT_SEALS)?;
        txn.open_table(RETAINED)?;
        txn.open_table(ACTIVE_RETAINED)?;
    }
    txn.commit()?;
    Ok(())
}

/// Keeps the per-status token counts (`meta` "nt.<status>") in step with
/// every status change, so `stats` never scans.
pub(crate) fn count_status(
    ctx: &mut WriteCtx<'_>,
    from: Option<vault_proto::ops::TokenStatus>,
    to: Option<vault_proto::ops::TokenStatus>,
) -> StoreResult<()> {
    if from == to {
        return Ok(());
    }
    for (status, delta) in [(from, -1i64), (to, 1i64)] {
        if let Some(status) = status {
            ctx.bump(format!("nt.{}", status.as_str()), delta);
        }
    }
    Ok(())
}

/// The keys after `after` (every key when `None`): the range of a scan
/// resumed at a cursor.
pub(crate) fn keys_after(after: Option<&str>) -> (std::ops::Bound<&str>, std::ops::Bound<&str>) {
    (
        after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        std::ops::Bound::Unbounded,
    )
}

/// Reads a u64 from `meta`.
pub(crate) fn meta_u64<T: ReadableTable<&'static str, &'static [u8]>>(
    meta: &T,
    key: &str,
) -> StoreResult<u64> {
    Ok(meta
        .get(key)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The newest key of a log table (`audit`, `events`): 0 when it is empty.
pub(crate) fn newest_seq<T: ReadableTable<u64, &'static [u8]>>(log: &T) -> StoreResult<u64> {
    Ok(log.last()?.map_or(0, |(k, _)| k.value()))
}

/// Reads an alias and its token inside any transaction.
pub(crate) fn read_alias<A, T>(
    aliases: &A,
    tokens: &T,
    alias: &str,
) -> StoreResult<Option<AliasView>>
where
    A: ReadableTable<&'static str, &'static [u8]>,
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let Some(raw) = aliases.get(alias)? else {
        return Ok(None);
    };
    let rec: AliasRec = decode("alias", raw.value())?;
    let token = match rec.nt.as_ref().and_then(|n| n.token_ref.as_deref()) {
        Some(r) => match tokens.get(r)? {
            Some(t) => Some(decode::<TokenRec>("token", t.value())?),
            None => None,
        },
        None => None,
    };
    Ok(Some(AliasView {
        alias: alias.to_owned(),
        rec,
        token,
    }))
}

impl Store for RedbStore {
    fn find_by_fingerprint(&self, tenant: &str, fp: &[u8]) -> StoreResult<Option<String>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(FINGERPRINTS)?;
        Ok(t.get(fingerprint_key(tenant, fp).as_slice())?
            .map(|v| v.value().to_owned()))
    }

    fn alias(&self, alias: &str) -> StoreResult<Option<AliasView>> {
        let r = self.db.begin_read()?;
        read_alias(&r.open_table(ALIASES)?, &r.open_table(TOKENS)?, alias)
    }

    fn pan_ciphertext(&self, alias: &str) -> StoreResult<Option<Vec<u8>>> {
        // Re-encryption moves a live PAN to a new slot and zeroes the old
        // one after its commit: a read that raced with that finds the record
        // pointing elsewhere afterwards, and reads again.
        let mut tries = 0;
        loop {
            let slot = self.pan_slot_of(alias)?;
            let Some(slot) = slot else { return Ok(None) };
            let ct = self.slots.get(slot)?;
            tries += 1;
            if tries >= 4 || self.pan_slot_of(alias)? == Some(slot) {
                return Ok(ct);
            }
        }
    }

    fn transaction(&self, tenant: &str, txid: &str, now: u64) -> StoreResult<Option<String>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(TRANSACTIONS)?;
        let Some(raw) = t.get(txn_key(tenant, txid).as_slice())? else {
            return Ok(None);
        };
        let rec: TxnRec = decode("transaction", raw.value())?;
        Ok((rec.expires_at > now).then_some(rec.alias))
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> StoreResult<usize> {
        // Called at every retention tick: a read first, so an idle vault
        // makes no commit (and no sync) when nothing has expired.
        {
            let r = self.db.begin_read()?;
            let txn_due = r
                .open_table(TRANSACTIONS_BY_EXPIRY)?
                .first()?
                .is_some_and(|(k, _)| k.value().0 < now);
            let parked_due = r
                .open_table(PARKED_BY_EXPIRY)?
                .first()?
                .is_some_and(|(k, _)| k.value().0 < now);
            if !txn_due && !parked_due {
                return Ok(0);
            }
        }
        self.writer()
            .write(move |ctx| {
                let due: Vec<(u64, Vec<u8>)> = ctx
                    .txn
                    .open_table(TRANSACTIONS_BY_EXPIRY)?
                    .range(..(now, &[][..]))?
                    .take(limit)
                    .map(|item| item.map(|(k, _)| (k.value().0, k.value().1.to_vec())))
                    .collect::<Result<_, _>>()?;
                let mut txns = ctx.txn.open_table(TRANSACTIONS)?;
                let mut by_expiry = ctx.txn.open_table(TRANSACTIONS_BY_EXPIRY)?;
                for (at, key) in &due {
                    by_expiry.remove((*at, key.as_slice()))?;
                    // The id may have been used again since, with a later
                    // expiry (and an index entry of its own).
                    let expired = match txns.get(key.as_slice())? {
                        Some(v) => decode::<TxnRec>("transaction", v.value())?.expires_at <= now,
                        None => false,
                    };
                    if expired {
                        txns.remove(key.as_slice())?;
                    }
                }
                drop((txns, by_expiry));
                let parked = lifecycle::drop_expired_parked(ctx.txn, now, limit - due.len())?;
                Ok(due.len() + parked)
            })
            .await
    }

    fn writable(&self) -> bool {
        !self
            .stats
            .failing
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn audit_broken(&self) -> Option<String> {
        self.stats
            .audit_broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn counts(&self) -> StoreResult<Counts> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(META)?;
        let mut tokens = std::collections::BTreeMap::new();
        for st in vault_proto::ops::TokenStatus::ALL {
            let n = meta_u64(&meta, &format!("nt.{}", st.as_str()))?;
            if n > 0 {
                tokens.insert(st.as_str().to_owned(), n);
            }
        }
        Ok(Counts {
            aliases: r.open_table(ALIASES)?.len()?,
            pans_retained: r.open_table(RETAINED)?.len()?,
            tokens,
        })
    }

    fn log_heads(&self) -> StoreResult<vault_proto::ops::LogHeads> {
        let r = self.db.begin_read()?;
        Ok(vault_proto::ops::LogHeads {
            audit_seq: newest_seq(&r.open_table(AUDIT)?)?,
            events_seq: newest_seq(&r.open_table(EVENTS)?)?,
        })
    }

    fn audit_page(&self, after: u64, limit: usize, upto: u64) -> StoreResult<AuditPage> {
        self.read_audit_page(after, limit, upto)
    }

    async fn seal_audit(&self) -> StoreResult<u64> {
        self.writer.seal_audit().await
    }

    async fn tokenize(&self, w: TokenizeWrite) -> StoreResult<TokenizeOutcome> {
        self.writer
            .write(move |ctx| {
                let txn = ctx.txn;
                let fkey = fingerprint_key(&w.tenant, &w.fingerprint);
                let mut aliases = txn.open_table(ALIASES)?;
                let mut fps = txn.open_table(FINGERPRINTS)?;
                let existing = fps.get(fkey.as_slice())?.map(|v| v.value().to_owned());
                let (mut view, created) = match (existing, w.new) {
                    (Some(alias), _) => {
                        let raw = aliases
                            .get(alias.as_str())?
                            .map(|v| v.value().to_vec())
                            .ok_or_else(|| {
                                StoreError::Corrupt("fingerprint without alias".into())
                            })?;
                        let mut rec: AliasRec = decode("alias", &raw)?;
                        // A later expiry replaces the stored one (card renewed).
                        if (w.exp_year, w.exp_month) > (rec.exp_year, rec.exp_month) {
                            rec.exp_year = w.exp_year;
                            rec.exp_month = w.exp_month;
                            aliases.insert(alias.as_str(), encode(&rec)?.as_slice())?;
                        }
                        let token = match rec.nt.as_ref().and_then(|n| n.token_ref.as_deref()) {
                            Some(r) => txn
                                .open_table(TOKENS)?
                                .get(r)?
                                .map(|v| decode::<TokenRec>("token", v.value()))
                                .transpose()?,
                            None => None,
                        };
                        (AliasView { alias, rec, token }, false)
                    }
                    (None, Some(mut new)) => {
                        let job_id = if new.provision {
                            Some(ctx.next_job_id()?)
                        } else {
                            None
                        };
                        if let Some(nt) = new.rec.nt.as_mut() {
                            nt.job = job_id;
                            count_status(ctx, None, Some(nt.status))?;
                        }
                        if let Some(ct) = &new.pan_ct {
                            let slot = retention::keep_pan(
                                ctx,
                                &w.tenant,
                                &new.alias,
                                new.rec.created_at,
                                ct,
                            )?;
                            new.rec.pan_slot = Some(slot);
                        }
                        fps.insert(fkey.as_slice(), new.alias.as_str())?;
                        aliases.insert(new.alias.as_str(), encode(&new.rec)?.as_slice())?;
                        if let Some((r, t)) = &new.token {
                            txn.open_table(TOKENS)?
                                .insert(r.as_str(), encode(t)?.as_slice())?;
                            kek_use::replace(ctx, None, Some(t));
                        }

                        if let Some(id) = job_id {
                            let job = queue::new_job(
                                id,
                                records::JobKind::Provision,
                                &new.alias,
                                &w.tenant,
                                &new.rec.scheme,
                                None,
                                new.rec.created_at,
                            );
                            queue::put_new_job(ctx.txn, &job)?;
                        }
                        let view = AliasView {
                            alias: new.alias,
                            rec: new.rec,
                            token: new.token.map(|(_, t)| t),
                        };
                        (view, true)
                    }
                    (None, None) => return Ok(TokenizeOutcome::NeedsNew),
                };
                let alias = view.alias.clone();
                drop(aliases);
                drop(fps);
                // A token provisioned synchronously (no PAN stored): the
                // events the feed brought before this commit.
                if created
                    && let Some(r) = view.rec.nt.as_ref().and_then(|n| n.token_ref.clone())
                    && lifecycle::apply_parked(ctx, &r)?.applied > 0
                {
                    view = read_alias(
                        &ctx.txn.open_table(ALIASES)?,
                        &ctx.txn.open_table(TOKENS)?,
                        &alias,
                    )?
                    .ok_or_else(|| StoreError::Corrupt("alias vanished in its commit".into()))?;
                }
                if let Some((txid, expires_at)) = &w.transaction {
                    let key = txn_key(&w.tenant, txid);
                    ctx.txn.open_table(TRANSACTIONS)?.insert(
                        key.as_slice(),
                        encode(&TxnRec {
                            alias: alias.clone(),
                            expires_at: *expires_at,
                        })?
                        .as_slice(),
                    )?;
                    ctx.txn
                        .open_table(TRANSACTIONS_BY_EXPIRY)?
                        .insert((*expires_at, key.as_slice()), ())?;
                }
                let mut audit = w.audit;
                audit.alias = Some(alias.clone());
                audit.outcome = if created { "ok created" } else { "ok existing" }.into();
                ctx.audit(&audit)?;
                // The view is what was just written: no second read.
                Ok(if created {
                    TokenizeOutcome::Created(view)
                } else {
                    TokenizeOutcome::Existing(view)
                })
            })
            .await
    }

    async fn delete_alias(&self, tenant: &str, alias: &str, audit: AuditRec) -> StoreResult<bool> {
        let tenant = tenant.to_owned();
        let alias = alias.to_owned();
        self.writer
            .write(move |ctx| {
                let txn = ctx.txn;
                let mut aliases = txn.open_table(ALIASES)?;
                let Some(raw) = aliases.get(alias.as_str())?.map(|v| v.value().to_vec()) else {
                    return Ok(false);
                };
                let rec: AliasRec = decode("alias", &raw)?;
                if rec.tenant != tenant {
                    return Ok(false);
                }
                aliases.remove(alias.as_str())?;
                drop(aliases);
                let mut rec = rec;
                retention::erase_pan(ctx, &alias, &mut rec, retention::Erasure::Deleted)?;
                ctx.txn
                    .open_table(FINGERPRINTS)?
                    .remove(fingerprint_key(&tenant, &rec.fingerprint).as_slice())?;
                if let Some(nt) = &rec.nt {
                    count_status(ctx, Some(nt.status), None)?;
                    if let Some(job) = nt.job {
                        queue::remove_job(ctx, job)?;
                    }
                }
                if let Some(r) = rec.nt.and_then(|n| n.token_ref) {
                    let gone = ctx
                        .txn
                        .open_table(TOKENS)?
                        .remove(r.as_str())?
                        .map(|v| decode::<TokenRec>("token", v.value()))
                        .transpose()?;
                    kek_use::replace(ctx, gone.as_ref(), None);
                    let gone = gone.is_some();
                    ctx.forget_atc(&r);
                    if gone {
                        // The delete job destroys its key, then deletes it
                        // at the token service (retried).
                        queue::enqueue(
                            ctx,
                            records::JobKind::Delete,
                            &alias,
                            &tenant,
                            &rec.scheme,
                            Some(r),
                        )?;
                    }
                }
                let mut audit = audit;
                audit.alias = Some(alias);
                audit.outcome = "ok deleted".into();
                ctx.audit(&audit)?;
                Ok(true)
            })
            .await
    }

    async fn audit(&self, rec: AuditRec) -> StoreResult<()> {
        self.writer
            .write(move |ctx| ctx.audit(&rec).map(|_| ()))
            .await
    }

    async fn add_event(&self, rec: records::EventRec) -> StoreResult<u64> {
        self.writer.write(move |ctx| ctx.event(&rec)).await
    }

    fn events_page(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, records::EventRec)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EVENTS)?;
        let mut out = Vec::new();
        for item in t.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = item?;
            out.push((k.value(), decode("event", v.value())?));
        }
        Ok(out)
    }
}
