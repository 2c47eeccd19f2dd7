//! Key lifecycle in the running vault: the `key_rotate` op, picking up
//! versions rotated outside (`vaultd keys rotate`, `rotate-audit`), the
//! background re-encryption job, `key_retire`, and the `backup` op.
//!
//! Re-encryption: every `[keys].refresh_interval` (or at once after
//! `key_rotate`) the job rescans the HSM's key versions; while any PAN or
//! token-number ciphertext is under an older PAN key it rewrites them in
//! batches of `reencrypt_batch` per group commit, pausing
//! `reencrypt_pause` between batches. It keeps no state on disk: after a
//! crash the next scan finds what is left.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vault_hsm::{Hsm, HsmError};
use vault_proto::ErrorCode;
use vault_proto::ops::{
    self, BackupResult, Handle, KekRefreshResult, KeyRetireResult, KeyRotateResult, KeyStats,
};

use super::{Caller, Vault, VaultError, VaultResult};
use crate::store::records::AuditRec;
use crate::store::rekey::{ScanCursor, Stale};
use crate::store::{Store, StoreError};

/// Ciphertexts re-sealed per HSM pool call, so a batch never holds one pool
/// thread for long.
const HSM_CHUNK: usize = 50;

/// A new version is declared fully applied only this long after the job
/// first saw it: a seal made just before the switch may commit a moment
/// after it.
const SETTLE: Duration = Duration::from_secs(2);

/// Shared state of the re-encryption job (read by `stats`).
pub struct KeyJob {
    batch: usize,
    pause: Duration,
    refresh: Duration,
    remaining: AtomicU64,
    reencrypted: AtomicU64,
    /// The newest PAN key version every ciphertext was found under (0:
    /// not known yet).
    clean_version: AtomicU32,
    wake: tokio::sync::Notify,
}

impl KeyJob {
    pub fn new(cfg: &crate::config::Keys) -> KeyJob {
        KeyJob {
            batch: cfg.reencrypt_batch,
            pause: cfg.reencrypt_pause.0,
            refresh: cfg.refresh_interval.0,
            remaining: AtomicU64::new(0),
            reencrypted: AtomicU64::new(0),
            clean_version: AtomicU32::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn stats<H: Hsm>(
        &self,
        hsm: &H,
        keks: std::collections::BTreeMap<(String, u32), u64>,
    ) -> KeyStats {
        KeyStats {
            pan_key_version: hsm.pan_key_version(),
            audit_key_version: hsm.audit_key_version(),
            reencrypt_remaining: self.remaining.load(Ordering::Relaxed),
            reencrypted: self.reencrypted.load(Ordering::Relaxed),
            keks: keks
                .into_iter()
                .map(|((scheme, version), tokens)| vault_proto::ops::KekUse {
                    scheme,
                    version,
                    tokens,
                })
                .collect(),
        }
    }
}

/// The audit record of the daemon's own key work.
fn own_audit(op: &str) -> AuditRec {
    AuditRec::by_daemon(op, "ok")
}

/// Runs a blocking store call off the async workers.
async fn blocking<S: Store, R: Send + 'static>(
    store: &Arc<S>,
    f: impl FnOnce(&S) -> Result<R, StoreError> + Send + 'static,
) -> VaultResult<R> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| VaultError::Store(StoreError::Unavailable(format!("store task: {e}"))))?
        .map_err(VaultError::Store)
}

/// The re-encryption job; stops when `stop` turns true.
pub async fn run_reencryption<S: Store, H: Hsm>(
    vault: Arc<Vault<S, H>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let job = &vault.keys;
    // The version in use at start-up has no seals of an older one in
    // flight in this process: it needs no settling time.
    let start = Instant::now();
    let mut seen = (
        vault.hsm.hsm().pan_key_version(),
        start.checked_sub(SETTLE).unwrap_or(start),
    );
    loop {
        let wait = match vault.reencrypt_round(&mut seen, &stop).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "re-encryption round failed; retrying");
                job.refresh.min(Duration::from_secs(5))
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            () = job.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

impl<S: Store, H: Hsm> Vault<S, H> {
    /// Starts the re-encryption job (it needs the vault in an `Arc`).
    pub fn start_key_job(self: &Arc<Self>) {
        if let Ok(mut bg) = self.background.lock()
            && let Some(bg) = bg.as_mut()
        {
            let stop = bg.stop.subscribe();
            bg.tasks.spawn(run_reencryption(self.clone(), stop));
        }
    }

    /// One round: refresh the key versions, count what is left under older
    /// PAN keys, and rewrite it. Returns how long to wait before the next
    /// round: the refresh interval once nothing is left, else less.
    async fn reencrypt_round(
        &self,
        seen: &mut (u32, Instant),
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> VaultResult<Duration> {
        let job = &self.keys;
        let newest = self.hsm(|h| h.refresh_key_versions()).await?;
        if newest != seen.0 {
            *seen = (newest, Instant::now());
        }
        if newest == 0 || job.clean_version.load(Ordering::Acquire) == newest {
            return Ok(job.refresh);
        }
        // A pass of an earlier run found everything under this version
        // already: no pass over every alias (a million of them take
        // seconds, and held a stop until done).
        if self.store.pan_clean_version()? == newest {
            job.clean_version.store(newest, Ordering::Release);
            job.remaining.store(0, Ordering::Relaxed);
            tracing::info!(
                version = newest,
                "every ciphertext was under the newest PAN key at the last pass; no pass needed"
            );
            return Ok(job.refresh);
        }
        let counts = blocking(&self.store, |s| s.key_versions()).await?;
        let old: u64 = counts.range(..newest).map(|(_, n)| n).sum();
        job.remaining.store(old, Ordering::Relaxed);
        if old == 0 {
            let settling = SETTLE.saturating_sub(seen.1.elapsed());
            if settling.is_zero() {
                job.clean_version.store(newest, Ordering::Release);
                tracing::info!(
                    version = newest,
                    "every ciphertext is under the newest PAN key"
                );
                self.store.set_pan_clean_version(newest).await?;
                return Ok(job.refresh);
            }
            return Ok(settling);
        }
        tracing::info!(
            version = newest,
            remaining = old,
            "re-encrypting under the newest PAN key"
        );
        let mut cursor = ScanCursor::Start;
        loop {
            if *stop.borrow() {
                return Ok(job.pause);
            }
            let (batch, at) = (job.batch, cursor.clone());
            let (items, next) =
                blocking(&self.store, move |s| s.stale_page(newest, &at, batch)).await?;
            if !items.is_empty() {
                let resealed = self.reseal_in_hsm(items).await?;
                let n = self.store.reseal(resealed, own_audit("reencrypt")).await?;
                job.reencrypted.fetch_add(n, Ordering::Relaxed);
                let left = job.remaining.load(Ordering::Relaxed).saturating_sub(n);
                job.remaining.store(left, Ordering::Relaxed);
                tokio::time::sleep(job.pause).await;
            }
            if next == ScanCursor::Done {
                // Count again next round: writes sealed just before the
                // switch, or a page that skipped changed records.
                return Ok(job.pause);
            }
            cursor = next;
        }
    }

    /// Opens each stale ciphertext and seals it again under the newest key,
    /// a chunk per pool call. One that no longer authenticates (its slot was
    /// reused after the scan read it) is left for the next scan.
    async fn reseal_in_hsm(&self, items: Vec<Stale>) -> VaultResult<Vec<(Stale, Vec<u8>)>> {
        let mut out = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<Stale> = items.by_ref().take(HSM_CHUNK).collect();
            // Background work: tokenize and credentials calls go first.
            let done = self
                .hsm
                .run_background(move |h| {
                    let mut done = Vec::with_capacity(chunk.len());
                    for stale in chunk {
                        let field = stale.field();
                        let plain = match h.open(&stale.alias, field, &stale.ct) {
                            Ok(p) => p,
                            Err(HsmError::Integrity) => continue,
                            Err(e) => return Err(e),
                        };
                        let ct = h.seal(&stale.alias, field, &plain)?;
                        done.push((stale, ct));
                    }
                    Ok(done)
                })
                .await??;
            out.extend(done);
        }
        Ok(out)
    }

    /// The `key_rotate` op: a new PAN key (default) or audit key version,
    /// used by new writes at once; re-encryption starts right away.
    pub async fn key_rotate(
        &self,
        caller: &Caller,
        key: Option<String>,
    ) -> VaultResult<KeyRotateResult> {
        let key = key.unwrap_or_else(|| "pan".into());
        let version = match key.as_str() {
            "pan" => self.hsm(|h| h.rotate_pan_key()).await?,
            "audit" => self.hsm(|h| h.rotate_audit_key()).await?,
            _ => {
                return Err(VaultError::refuse(
                    ErrorCode::BadRequest,
                    "`key` must be \"pan\" or \"audit\"",
                ));
            }
        };
        self.store
            .audit(caller.audit("key_rotate", None, format!("ok {key} v{version}")))
            .await?;
        tracing::info!(key, version, client = %caller.client, "key rotated");
        self.keys.wake.notify_one();
        Ok(KeyRotateResult { key, version })
    }

    /// The `key_retire` op: destroys `vault.pan.v<version>` once no
    /// ciphertext uses it. Refused for the newest version and while any
    /// record still uses it.
    pub async fn key_retire(&self, caller: &Caller, version: u32) -> VaultResult<KeyRetireResult> {
        let newest = self.hsm(|h| h.refresh_key_versions()).await?;
        if version == 0 || version >= newest {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                format!("cannot retire version {version}: the newest PAN key is v{newest}"),
            ));
        }
        let counts = blocking(&self.store, |s| s.key_versions()).await?;
        if let Some(n) = counts.get(&version).filter(|n| **n > 0) {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                format!(
                    "{n} ciphertexts still use vault.pan.v{version}; wait until stats keys.reencrypt_remaining is 0"
                ),
            ));
        }
        let destroyed = self.hsm(move |h| h.retire_pan_key(version)).await?;
        let label = format!("vault.pan.v{version}");
        self.store
            .audit(caller.audit(
                "key_retire",
                None,
                format!(
                    "ok {label} {}",
                    if destroyed { "destroyed" } else { "absent" }
                ),
            ))
            .await?;
        tracing::info!(%label, destroyed, client = %caller.client, "PAN key retired");
        Ok(KeyRetireResult { label, destroyed })
    }

    /// The `kek_refresh` op: every token of `scheme` whose stored key is
    /// wrapped under KEK `version` (0: a legacy `nt.*` object) gets a key
    /// refresh job; each refreshed key is stored under the KEK the token
    /// service wraps it with now (after a KEK rotation, the newest), so the
    /// old version can then be retired.
    pub async fn kek_refresh(
        &self,
        caller: &Caller,
        scheme: String,
        version: u32,
    ) -> VaultResult<KekRefreshResult> {
        if scheme.parse::<vault_proto::Scheme>().is_err() {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                format!("unknown scheme (one of {})", vault_proto::Scheme::names()),
            ));
        }
        let audit = caller.audit("kek_refresh", None, "ok");
        let queued = self
            .store
            .queue_key_refreshes(&scheme, version, audit)
            .await?;
        tracing::info!(%scheme, version, queued, client = %caller.client, "key refreshes queued for a KEK version");
        self.tokens.wake();
        Ok(KekRefreshResult {
            scheme,
            version,
            queued,
        })
    }

    /// The `backup` op: a consistent copy of the store at `path` (see
    /// `store::backup`).
    pub async fn backup(&self, caller: &Caller, path: String) -> VaultResult<BackupResult> {
        let dest = PathBuf::from(&path);
        let bad = |m: String| VaultError::refuse(ErrorCode::BadRequest, m);
        if !dest.is_absolute() {
            return Err(bad("`path` must be absolute (the daemon writes it)".into()));
        }
        if dest.exists() || crate::store::slot_path(&dest).exists() {
            return Err(bad(format!("{path} (or its .pans file) exists")));
        }
        if !dest.parent().is_some_and(|d| d.is_dir()) {
            return Err(bad(format!("the directory of {path} does not exist")));
        }
        let started = Instant::now();
        // The copy's audit trail then ends sealed, but for records committed
        // while it is taken (a restored copy seals those when it starts).
        if let Err(e) = self.store.seal_audit().await {
            tracing::warn!(error = %e, "could not seal the audit chain before the backup");
        }
        let summary = match blocking(&self.store, move |s| s.backup(&dest)).await {
            Ok(s) => s,
            // The operator needs the reason (it names paths, never card data).
            Err(VaultError::Store(StoreError::Unavailable(m))) => {
                return Err(VaultError::refuse(ErrorCode::Unavailable, m));
            }
            Err(e) => return Err(e),
        };
        self.store
            .audit(caller.audit(
                "backup",
                None,
                format!("ok {} aliases {} pans", summary.aliases, summary.pans),
            ))
            .await?;
        tracing::info!(
            path,
            aliases = summary.aliases,
            pans = summary.pans,
            ms = started.elapsed().as_millis() as u64,
            "backup written"
        );
        Ok(BackupResult {
            path,
            aliases: summary.aliases,
            pans: summary.pans,
            audit_seq: summary.audit_seq,
        })
    }
}

// ------------------------------------------------------------ op handlers

impl<S: Store, H: Hsm> Handle<ops::KeyRotate> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::KeyRotateArgs) -> VaultResult<KeyRotateResult> {
        self.key_rotate(who, a.key).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::KeyRetire> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::KeyRetireArgs) -> VaultResult<KeyRetireResult> {
        self.key_retire(who, a.version).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::BackupOp> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::BackupArgs) -> VaultResult<BackupResult> {
        self.backup(who, a.path).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::KekRefresh> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::KekRefreshArgs) -> VaultResult<KekRefreshResult> {
        self.kek_refresh(who, a.scheme, a.version).await
    }
}
