//! The domain: tokenize, alias status, transaction tokens, erasure, admin
//! views. Pure logic over [`Store`] and [`Hsm`]; it knows nothing of
//! sockets or redb. HSM work runs on the HSM pool's threads, reads run
//! inline (redb reads are short and never block on the writer), writes go
//! through the store's group commit.

pub mod admin;
pub mod cards;
pub mod credentials;
pub mod keys;
pub mod retention;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use base64::Engine;
use vault_hsm::{Hsm, HsmError, HsmPool};
use vault_proto::ops::{
    self, AliasRecord, Audit, AuditView, Card, Handle, Health, Stats, TokenInfo, TokenizeArgs,
    TokenizeResult,
};
use vault_proto::{ErrorCode, Pan, WireError};

use crate::config::{self, Config, Retention};
use crate::store::records::{AliasRec, AuditRec, NtState};
use crate::store::{AliasView, NewAlias, Store, StoreError, TokenizeOutcome, TokenizeWrite};
use crate::tokens::Tokens;
use cards::now_ms;

/// Who is calling, as the server established it (SO_PEERCRED + config).
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: String,
    pub uid: u32,
    pub pid: i32,
    /// The merchant account of collector and merchant clients.
    pub tenant: Option<String>,
    /// Tenants a forwarder serves; `None` means all.
    pub tenants: Option<Vec<String>>,
    /// Most PAN-returning `credentials` answers per minute.
    pub pan_per_minute: Option<u32>,
}

impl Caller {
    pub fn audit(&self, op: &str, alias: Option<String>, outcome: impl Into<String>) -> AuditRec {
        AuditRec {
            at: now_ms(),
            client: self.client.clone(),
            uid: self.uid,
            pid: self.pid,
            op: op.to_owned(),
            alias,
            outcome: outcome.into(),
        }
    }
}

/// Why a vault operation failed. `Refused` is a protocol answer; the others
/// carry detail for the log that never reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Refused(WireError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Hsm(#[from] HsmError),
}

impl VaultError {
    pub fn refuse(code: ErrorCode, msg: impl Into<String>) -> Self {
        VaultError::Refused(WireError::new(code, msg))
    }

    /// The wire error; internal detail is logged here and not sent.
    pub fn into_wire(self) -> WireError {
        match self {
            VaultError::Refused(e) => e,
            VaultError::Store(StoreError::Unavailable(m)) => {
                tracing::warn!(error = %m, "store unavailable");
                WireError::new(
                    ErrorCode::Unavailable,
                    "storage temporarily unavailable; the write may not have been applied, retrying is safe",
                )
            }
            VaultError::Store(StoreError::Hsm(e)) | VaultError::Hsm(e) => hsm_wire(e),
            VaultError::Store(StoreError::Corrupt(m)) => {
                tracing::error!(error = %m, "store corrupt");
                WireError::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

fn hsm_wire(e: HsmError) -> WireError {
    match e {
        HsmError::Unavailable(m) => {
            tracing::warn!(error = %m, "HSM unavailable");
            WireError::new(
                ErrorCode::Unavailable,
                "HSM temporarily unavailable; nothing was written",
            )
        }
        other => {
            tracing::error!(error = %other, "HSM error");
            WireError::new(ErrorCode::Internal, "internal error; see the server log")
        }
    }
}

pub type VaultResult<T> = Result<T, VaultError>;

/// Per-tenant policy, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub network_tokens: bool,
    pub retention: Retention,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub tenants: HashMap<String, TenantPolicy>,
    /// scheme → token requestor id, for schemes with a token service.
    pub schemes: HashMap<String, String>,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        Policy {
            tenants: cfg
                .tenants
                .iter()
                .map(|t| {
                    (
                        t.id.clone(),
                        TenantPolicy {
                            network_tokens: t.network_tokens,
                            retention: t.pan_retention.clone(),
                        },
                    )
                })
                .collect(),
            schemes: cfg
                .schemes
                .iter()
                .map(|(k, v)| (k.clone(), v.token_requestor_id.clone()))
                .collect(),
        }
    }
}

/// How long `transaction_tokens` remembers a transaction id.
pub const TRANSACTION_TTL_MS: u64 = 30 * 60 * 1000;

pub struct Vault<S: Store, H: Hsm> {
    pub store: Arc<S>,
    pub hsm: Arc<HsmPool<H>>,
    pub tokens: Arc<Tokens<S, H>>,
    policy: RwLock<Arc<Policy>>,
    started: Instant,
    background: std::sync::Mutex<Option<Background>>,
    limiter: credentials::PanLimiter,
    keys: keys::KeyJob,
}

/// The background tasks (provisioning worker, lifecycle feeds) and the
/// signal that stops them.
struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl<S: Store, H: Hsm> Vault<S, H> {
    /// Builds the vault and starts its background tasks (must run inside a
    /// tokio runtime). Call [`Vault::shutdown`] before dropping the store.
    pub fn new(cfg: &Config, store: Arc<S>, hsm: HsmPool<H>) -> Result<Self, String> {
        let hsm = Arc::new(hsm);
        let tokens = Arc::new(Tokens::new(cfg, store.clone(), hsm.clone())?);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(tokens.clone().run(stop_rx.clone()));
        // The retention scheduler needs the vault itself: started by
        // `start_retention` once the vault is in an Arc.
        for scheme in cfg.schemes.keys() {
            tasks.spawn(crate::tokens::lifecycle::follow(
                tokens.clone(),
                scheme.clone(),
                stop_rx.clone(),
            ));
        }
        let vault = Vault {
            store,
            hsm,
            tokens,
            policy: RwLock::new(Arc::new(Policy::from_config(cfg))),
            started: Instant::now(),
            background: std::sync::Mutex::new(Some(Background { stop, tasks })),
            limiter: credentials::PanLimiter::default(),
            keys: keys::KeyJob::new(&cfg.keys),
        };
        Ok(vault)
    }

    /// Starts the retention scheduler (it needs the vault in an `Arc`).
    pub fn start_retention(self: &Arc<Self>, tick: std::time::Duration) {
        if let Ok(mut bg) = self.background.lock()
            && let Some(bg) = bg.as_mut()
        {
            let stop = bg.stop.subscribe();
            bg.tasks
                .spawn(retention::run_scheduler(self.clone(), tick, stop));
        }
    }

    /// Stops the background tasks and waits for running jobs to end.
    pub async fn shutdown(&self) {
        let bg = self.background.lock().ok().and_then(|mut b| b.take());
        if let Some(mut bg) = bg {
            let _ = bg.stop.send(true);
            while bg.tasks.join_next().await.is_some() {}
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_policy(&self, p: Policy) {
        match self.policy.write() {
            Ok(mut g) => *g = Arc::new(p),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(p),
        }
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) async fn hsm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&H) -> Result<R, HsmError> + Send + 'static,
    ) -> VaultResult<R> {
        Ok(self.hsm.run(f).await??)
    }

    // ------------------------------------------------------------ health

    pub async fn health(&self) -> Health {
        let hsm = match self.hsm.run(|h| h.check()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) | Err(e) => e.to_string(),
        };
        let store = match self.store.counts() {
            Ok(_) if self.store.writable() => "ok".to_owned(),
            Ok(_) => "commits failing: reads work, writes are refused (check the disk, then restart vaultd)".to_owned(),
            Err(e) => e.to_string(),
        };
        let ready = hsm == "ok" && store == "ok";
        // A broken audit chain does not stop the vault serving (see
        // `store::audit`), but health says so until it is acknowledged.
        let store = match self.store.audit_broken() {
            Some(b) => format!("{store}; {b}"),
            None => store,
        };
        Health {
            ready,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hsm,
            store,
            uptime_ms: self.uptime_ms(),
        }
    }

    // ------------------------------------------------------------ tokenize

    pub async fn tokenize(
        &self,
        caller: &Caller,
        args: TokenizeArgs,
    ) -> VaultResult<TokenizeResult> {
        let tenant = caller
            .tenant
            .clone()
            .ok_or_else(|| VaultError::refuse(ErrorCode::Forbidden, "client has no tenant"))?;
        if let Err(p) = args.pan.check() {
            return Err(VaultError::refuse(ErrorCode::InvalidPan, p.to_string()));
        }
        let now = now_ms();
        if let Err(m) = cards::expiry_valid(args.exp_month, args.exp_year, now) {
            return Err(VaultError::refuse(ErrorCode::InvalidExpiry, m));
        }
        if let Some(t) = &args.transaction_id
            && !cards::valid_transaction_id(t)
        {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                "transaction_id must be 1 to 64 characters of [A-Za-z0-9_-]",
            ));
        }
        let policy = self.policy();
        let tp =
            policy.tenants.get(&tenant).cloned().ok_or_else(|| {
                VaultError::refuse(ErrorCode::Forbidden, "tenant is not configured")
            })?;
        let scheme = vault_proto::Scheme::route(args.pan.expose()).map(vault_proto::Scheme::name);
        let tokens_on = tp.network_tokens && scheme.is_some_and(|s| self.tokens.has_scheme(s));
        let store_pan = tp.retention != Retention::None;
        if !store_pan && !tokens_on {
            // Nothing may be stored but the card cannot get a network token.
            return Err(VaultError::refuse(
                ErrorCode::NetworkTokenRequired,
                "this tenant stores no PANs and the card's scheme has no token service here",
            ));
        }

        let pan = Arc::new(args.pan);
        // One trip to the HSM threads for a new card: fingerprint, lookup
        // (a short read), alias and seal together. `None`: the card has an
        // alias already.
        let (fp, sealed) = {
            let (pan, tenant, store) = (pan.clone(), tenant.clone(), self.store.clone());
            self.hsm
                .run(move |h| -> VaultResult<(Fingerprint, Option<Sealed>)> {
                    let fp = h.fingerprint(&tenant, &pan)?;
                    if store.find_by_fingerprint(&tenant, &fp)?.is_some() {
                        return Ok((fp, None));
                    }
                    Ok((fp, Some(alias_and_seal(h, &pan, store_pan, now)?)))
                })
                .await??
        };
        let transaction = args.transaction_id.map(|t| (t, now + TRANSACTION_TTL_MS));
        let mut write = TokenizeWrite {
            tenant: tenant.clone(),
            fingerprint: fp.to_vec(),
            exp_month: args.exp_month,
            exp_year: args.exp_year,
            new: None,
            transaction,
            audit: caller.audit("tokenize", None, "ok"),
        };
        if let Some(sealed) = sealed {
            write.new = Some(
                self.new_alias(&pan, &write, scheme, tokens_on, store_pan, now, sealed)
                    .await?,
            );
        }
        loop {
            let retry = TokenizeWrite {
                tenant: write.tenant.clone(),
                fingerprint: write.fingerprint.clone(),
                exp_month: write.exp_month,
                exp_year: write.exp_year,
                new: None,
                transaction: write.transaction.clone(),
                audit: write.audit.clone(),
            };
            match self.store.tokenize(write).await? {
                TokenizeOutcome::Created(v) => {
                    self.tokens.wake();
                    // Synchronously provisioned, and deleted by the token
                    // service before this commit (a parked event): its key
                    // goes now.
                    if let Some(t) = &v.token
                        && t.status == vault_proto::ops::TokenStatus::Deleted
                        && let Some(r) = v.rec.nt.as_ref().and_then(|n| n.token_ref.clone())
                        && let Err(e) = self
                            .hsm
                            .run_background(move |h| h.destroy_token_key(&r))
                            .await
                            .and_then(|r| r)
                    {
                        tracing::warn!(error = %e, "could not destroy a deleted token's key");
                    }
                    return Ok(TokenizeResult {
                        created: true,
                        record: alias_record(&v, &policy),
                    });
                }
                TokenizeOutcome::Existing(v) => {
                    return Ok(TokenizeResult {
                        created: false,
                        record: alias_record(&v, &policy),
                    });
                }
                // The alias was deleted between our lookup and the write.
                TokenizeOutcome::NeedsNew => {
                    write = retry;
                    write.new = Some(
                        self.seal_new(&pan, &write, scheme, tokens_on, store_pan, now)
                            .await?,
                    );
                }
            }
        }
    }

    async fn seal_new(
        &self,
        pan: &Arc<Pan>,
        w: &TokenizeWrite,
        scheme: Option<&'static str>,
        tokens_on: bool,
        store_pan: bool,
        now: u64,
    ) -> VaultResult<NewAlias> {
        let pan2 = pan.clone();
        let sealed = self
            .hsm(move |h| alias_and_seal(h, &pan2, store_pan, now))
            .await?;
        self.new_alias(pan, w, scheme, tokens_on, store_pan, now, sealed)
            .await
    }

    /// The record of a new alias whose PAN is already sealed (or, for
    /// tenants that store none, whose token is provisioned here).
    #[allow(clippy::too_many_arguments)]
    async fn new_alias(
        &self,
        pan: &Arc<Pan>,
        w: &TokenizeWrite,
        scheme: Option<&'static str>,
        tokens_on: bool,
        store_pan: bool,
        now: u64,
        (alias, pan_ct): Sealed,
    ) -> VaultResult<NewAlias> {
        // No PAN may be stored: the token is provisioned now, the PAN only
        // ever in memory (and zeroized when `pan` drops).
        let token = match (store_pan, scheme) {
            (false, Some(scheme)) => {
                // Random per provisioning: a PAN deleted and tokenized
                // again is a new token, never the deleted one (and the
                // card's fingerprint never leaves the vault).
                let key = crate::store::records::new_idempotency_key();
                match self
                    .tokens
                    .provision_now(
                        &crate::tokens::CardToTokenize {
                            alias: &alias,
                            tenant: &w.tenant,
                            scheme,
                            pan,
                            exp_month: w.exp_month,
                            exp_year: w.exp_year,
                        },
                        &key,
                    )
                    .await
                {
                    Ok(t) => Some(t),
                    Err(crate::tokens::SyncError::NotEligible(m)) => {
                        tracing::info!(reason = %m, "card not eligible for a network token; nothing stored");
                        return Err(VaultError::refuse(
                            ErrorCode::NetworkTokenRequired,
                            "the card cannot get a network token and this tenant stores no PANs",
                        ));
                    }
                    Err(crate::tokens::SyncError::Unavailable(m)) => {
                        tracing::warn!(reason = %m, "synchronous provisioning failed; nothing stored");
                        return Err(VaultError::refuse(
                            ErrorCode::Unavailable,
                            "the token service did not issue a token in time (unreachable, or refusing the vault); nothing was stored",
                        ));
                    }
                }
            }
            _ => None,
        };
        let rec = AliasRec {
            tenant: w.tenant.clone(),
            fingerprint: w.fingerprint.clone(),
            bin: pan.bin().to_owned(),
            last4: pan.last4().to_owned(),
            pan_len: pan.len() as u8,
            exp_month: w.exp_month,
            exp_year: w.exp_year,
            scheme: scheme.unwrap_or("unknown").to_owned(),
            created_at: now,
            pan_removed: !store_pan,
            pan_slot: None,
            nt: tokens_on.then(|| NtState {
                status: token
                    .as_ref()
                    .map(|t| t.token.status)
                    .unwrap_or(vault_proto::ops::TokenStatus::Pending),
                token_ref: token.as_ref().map(|t| t.token_ref.clone()),
                updated_at: now,
                last_error: None,
                active_since: token
                    .as_ref()
                    .filter(|t| t.token.status == vault_proto::ops::TokenStatus::Active)
                    .map(|_| now),
                job: None,
            }),
        };
        Ok(NewAlias {
            alias,
            rec,
            pan_ct,
            provision: tokens_on && store_pan,
            token: token.map(|t| (t.token_ref, t.token)),
        })
    }

    // ------------------------------------------------------------ reads

    /// The alias if it exists and belongs to `tenant`.
    pub fn alias_of_tenant(&self, tenant: &str, alias: &str) -> VaultResult<AliasView> {
        let not_found = || VaultError::refuse(ErrorCode::AliasNotFound, "no such alias");
        if !cards::valid_alias(alias) {
            return Err(not_found());
        }
        match self.store.alias(alias)? {
            Some(v) if v.rec.tenant == tenant => Ok(v),
            _ => Err(not_found()),
        }
    }

    pub fn alias_status(&self, caller: &Caller, alias: &str) -> VaultResult<AliasRecord> {
        let tenant = caller.tenant.as_deref().unwrap_or("");
        let v = self.alias_of_tenant(tenant, alias)?;
        Ok(alias_record(&v, &self.policy()))
    }

    pub fn transaction_tokens(&self, caller: &Caller, txid: &str) -> VaultResult<AliasRecord> {
        let tenant = caller.tenant.as_deref().unwrap_or("");
        let nf = || {
            VaultError::refuse(
                ErrorCode::TransactionNotFound,
                "no such transaction id, or it expired",
            )
        };
        if !cards::valid_transaction_id(txid) {
            return Err(nf());
        }
        let alias = self
            .store
            .transaction(tenant, txid, now_ms())?
            .ok_or_else(nf)?;
        match self.store.alias(&alias)? {
            Some(v) if v.rec.tenant == tenant => Ok(alias_record(&v, &self.policy())),
            _ => Err(nf()),
        }
    }

    // ------------------------------------------------------------ erasure

    pub async fn delete_alias(&self, caller: &Caller, alias: &str) -> VaultResult<()> {
        let tenant = caller.tenant.clone().unwrap_or_default();
        if !cards::valid_alias(alias) {
            return Err(VaultError::refuse(
                ErrorCode::AliasNotFound,
                "no such alias",
            ));
        }
        let audit = caller.audit("delete_alias", Some(alias.to_owned()), "ok");
        // The token key is destroyed by the durable delete job the same
        // commit queues (with the deletion at the token service), so an HSM
        // failure cannot leave it behind and erasure never waits on it.
        if self.store.delete_alias(&tenant, alias, audit).await? {
            Ok(())
        } else {
            Err(VaultError::refuse(
                ErrorCode::AliasNotFound,
                "no such alias",
            ))
        }
    }

    // ------------------------------------------------------------ admin

    pub fn stats(&self) -> VaultResult<Stats> {
        let c = self.store.counts()?;
        let q = self.store.queue_counts(now_ms())?;
        let in_flight = self.tokens.in_flight().len() as u64;
        Ok(Stats {
            aliases: c.aliases,
            pans_retained: c.pans_retained,
            tokens: c.tokens,
            queue: vault_proto::ops::QueueCounts {
                // Jobs in flight are still due on disk (so a crash makes
                // them due again); show them once.
                due: q.due.saturating_sub(in_flight),
                scheduled: q.scheduled,
                in_flight,
                failed: q.failed,
                reads: self.tokens.queue_reads(),
            },
            schemes: self.tokens.scheme_stats(),
            uptime_ms: self.uptime_ms(),
            keys: Some(
                self.keys
                    .stats(self.hsm.hsm().as_ref(), self.store.kek_usage()?),
            ),
            logs: Some(self.store.log_heads()?),
            hsm: self.hsm.stats(),
        })
    }

    /// A page of the audit log and whether its chain verifies (see
    /// `store::audit`): hashes recomputed, seals checked in the HSM, no gap.
    pub async fn audit_page(&self, after: Option<u64>, limit: u32) -> VaultResult<Audit> {
        let limit = match limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let after = after.unwrap_or(0);
        // Records committed since the last seal are sealed first; those
        // committed after that are left for the next page (the seal would
        // not cover them yet).
        let upto = match self.store.seal_audit().await {
            Ok(upto) => upto,
            // Writes are failing: the trail can still be read, its
            // unsealed tail reported as unverified.
            Err(e) => {
                tracing::warn!(error = %e, "could not seal the audit chain before reading it");
                u64::MAX
            }
        };
        let page = self.store.audit_page(after, limit, upto)?;
        let (page, chain_ok) = self
            .hsm
            .run(move |h| {
                let ok = page.verify(after, |v, prev, data| h.audit_mac_with(v, prev, data));
                (page, ok)
            })
            .await?;
        let chain_ok = chain_ok?;
        Ok(Audit {
            records: page
                .records
                .into_iter()
                .map(|(seq, r, _, _)| AuditView {
                    seq,
                    at: r.at,
                    client: r.client,
                    uid: r.uid,
                    pid: r.pid,
                    op: r.op,
                    alias: r.alias,
                    outcome: r.outcome,
                })
                .collect(),
            chain_ok,
        })
    }
}

type Fingerprint = [u8; 32];
/// A new alias and its sealed PAN (none for tenants that store no PAN).
type Sealed = (String, Option<Vec<u8>>);

/// A fresh alias and, for tenants that keep PANs, the PAN sealed under it.
fn alias_and_seal<H: Hsm>(h: &H, pan: &Pan, store_pan: bool, now: u64) -> Result<Sealed, HsmError> {
    let alias = new_alias(now)?;
    let ct = if store_pan {
        Some(h.seal(&alias, "pan", pan.expose().as_bytes())?)
    } else {
        None
    };
    Ok((alias, ct))
}

/// A fresh alias. Its randomness comes from the kernel's CSPRNG: it
/// protects nothing secret (it is handed out), and every HSM call costs a
/// round through SoftHSM's global lock.
fn new_alias(now: u64) -> Result<String, HsmError> {
    let mut rnd = [0u8; 48];
    loop {
        getrandom::fill(&mut rnd).map_err(|e| HsmError::Other(format!("OS random source: {e}")))?;
        if let Some(a) = cards::alias_from_random(now, &rnd) {
            return Ok(a);
        }
    }
}

/// `token_info.last_error` of a card stored before network tokens were
/// enabled for its tenant or scheme, until `provision` asks for its token.
pub const NOT_REQUESTED: &str = "no network token requested: the card was stored before network tokens were enabled; provision requests one";

/// `token_info` of a card without token state whose tenant and scheme now
/// have network tokens: PROTOCOL.md keeps `token_info` for those, and has no
/// status for "never requested", so it is `failed` (no token; `provision`
/// gets one) with [`NOT_REQUESTED`] as the reason.
fn not_requested(r: &AliasRec, policy: &Policy) -> Option<TokenInfo> {
    let tokens_on = policy
        .tenants
        .get(&r.tenant)
        .is_some_and(|t| t.network_tokens);
    let requestor = policy.schemes.get(&r.scheme).filter(|_| tokens_on)?;
    Some(TokenInfo {
        status: vault_proto::ops::TokenStatus::Failed,
        scheme: r.scheme.clone(),
        token_ref: None,
        token_last4: None,
        exp_month: None,
        exp_year: None,
        par: None,
        token_requestor_id: Some(requestor.clone()),
        updated_at: r.created_at,
        last_error: Some(NOT_REQUESTED.into()),
    })
}

/// The merchant-facing record of an alias.
pub fn alias_record(v: &AliasView, policy: &Policy) -> AliasRecord {
    let r = &v.rec;
    let masked = format!(
        "{}{}{}",
        r.bin,
        "x".repeat(usize::from(r.pan_len).saturating_sub(10)),
        r.last4
    );
    let token_info =
        r.nt.as_ref()
            .map(|nt| {
                let t = v.token.as_ref();
                TokenInfo {
                    status: t.map(|t| t.status).unwrap_or(nt.status),
                    scheme: r.scheme.clone(),
                    token_ref: nt.token_ref.clone(),
                    token_last4: t.map(|t| t.token_last4.clone()),
                    exp_month: t.map(|t| t.exp_month),
                    exp_year: t.map(|t| t.exp_year),
                    par: t.and_then(|t| t.par.clone()),
                    token_requestor_id: t
                        .map(|t| t.token_requestor_id.clone())
                        .or_else(|| policy.schemes.get(&r.scheme).cloned()),
                    updated_at: t
                        .map(|t| t.updated_at)
                        .unwrap_or(nt.updated_at)
                        .max(nt.updated_at),
                    last_error: nt.last_error.clone(),
                }
            })
            .or_else(|| not_requested(r, policy));
    AliasRecord {
        alias: v.alias.clone(),
        fingerprint: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&r.fingerprint),
        kind: "card".into(),
        masked,
        created_at: r.created_at,
        card: Card {
            bin: r.bin.clone(),
            last4: r.last4.clone(),
            exp_month: r.exp_month,
            exp_year: r.exp_year,
            scheme: r.scheme.clone(),
            pan_removed: r.pan_removed,
        },
        token_info,
    }
}

/// Used by config reload and start-up.
pub fn policy_of(cfg: &config::Config) -> Policy {
    Policy::from_config(cfg)
}

// ------------------------------------------------------------ op handlers
//
// The vault serves every op of `vault_proto::ops`'s registry: one
// `Handle` impl per op, next to the op's logic (here, `admin.rs`,
// `credentials.rs`, `keys.rs`, `retention.rs`). `dispatch` needs them
// all, so an op without one does not compile.

impl<S: Store, H: Hsm> ops::Backend for Vault<S, H> {
    type Caller = Caller;
    type Error = VaultError;
}

impl From<WireError> for VaultError {
    fn from(e: WireError) -> Self {
        VaultError::Refused(e)
    }
}

impl<S: Store, H: Hsm> Handle<ops::HealthOp> for Vault<S, H> {
    async fn handle(&self, _: &Caller, _: ops::NoArgs) -> VaultResult<Health> {
        Ok(self.health().await)
    }
}

impl<S: Store, H: Hsm> Handle<ops::Tokenize> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: TokenizeArgs) -> VaultResult<TokenizeResult> {
        self.tokenize(who, a).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::AliasStatus> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::AliasArgs) -> VaultResult<AliasRecord> {
        self.alias_status(who, &a.alias)
    }
}

impl<S: Store, H: Hsm> Handle<ops::TransactionTokens> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::TransactionArgs) -> VaultResult<AliasRecord> {
        self.transaction_tokens(who, &a.transaction_id)
    }
}

impl<S: Store, H: Hsm> Handle<ops::DeleteAlias> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::AliasArgs) -> VaultResult<ops::DeleteResult> {
        self.delete_alias(who, &a.alias).await?;
        Ok(ops::DeleteResult { deleted: true })
    }
}

impl<S: Store, H: Hsm> Handle<ops::StatsOp> for Vault<S, H> {
    async fn handle(&self, _: &Caller, _: ops::NoArgs) -> VaultResult<Stats> {
        self.stats()
    }
}

impl<S: Store, H: Hsm> Handle<ops::AuditOp> for Vault<S, H> {
    /// Reading the audit log is itself audited.
    async fn handle(&self, who: &Caller, a: ops::PageArgs) -> VaultResult<Audit> {
        let page = self.audit_page(a.after, a.limit).await?;
        self.store
            .audit(who.audit(ops::op::AUDIT, None, "ok"))
            .await?;
        Ok(page)
    }
}
