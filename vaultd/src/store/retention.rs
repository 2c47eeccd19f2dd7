//! PAN retention: where PANs are kept, the indexes that say which fall due
//! when, and erasure. Every erasure removes the sealed PAN, its index
//! entries, and keeps the per-tenant counts (`pans.<tenant>`,
//! `purged.<tenant>`) that the retention view reads without scanning.

use std::future::Future;

use redb::{ReadableDatabase, ReadableTable};

use super::records::{AliasRec, AuditRec, decode, encode};
use super::{ACTIVE_RETAINED, ALIASES, META, RETAINED, RedbStore, StoreResult, WriteCtx, meta_u64};

fn index_key(tenant: &str, at: u64, alias: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 9 + alias.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(alias.as_bytes());
    k
}

fn tenant_range(tenant: &str, upto: u64) -> (Vec<u8>, Vec<u8>) {
    let mut lo = tenant.as_bytes().to_vec();
    lo.push(0);
    let mut hi = lo.clone();
    lo.extend_from_slice(&0u64.to_be_bytes());
    hi.extend_from_slice(&upto.to_be_bytes());
    hi.push(0xff);
    (lo, hi)
}

fn alias_of_key(k: &[u8], tenant: &str) -> Option<(u64, String)> {
    let rest = k.get(tenant.len() + 1..)?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let alias = std::str::from_utf8(rest.get(8..)?).ok()?.to_owned();
    Some((at, alias))
}

fn bump(ctx: &mut WriteCtx<'_>, key: &str, delta: i64) -> StoreResult<()> {
    ctx.bump(key.to_owned(), delta);
    Ok(())
}

/// Stores a sealed PAN for an alias; returns the slot the record keeps.
pub(crate) fn keep_pan(
    ctx: &mut WriteCtx<'_>,
    tenant: &str,
    alias: &str,
    created_at: u64,
    ct: &[u8],
) -> StoreResult<u64> {
    let slot = ctx.put_slot(ct)?;
    ctx.txn
        .open_table(RETAINED)?
        .insert(index_key(tenant, created_at, alias).as_slice(), ())?;
    bump(ctx, &format!("pans.{tenant}"), 1)?;
    Ok(slot)
}

/// The alias's token became active while its PAN is kept.
pub(crate) fn mark_active(
    ctx: &mut WriteCtx<'_>,
    tenant: &str,
    alias: &str,
    since: u64,
) -> StoreResult<()> {
    ctx.txn
        .open_table(ACTIVE_RETAINED)?
        .insert(index_key(tenant, since, alias).as_slice(), ())?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// `remove_pan` by the merchant.
    Removed,
    /// Retention policy.
    Purged,
    /// The whole alias went (`delete_alias`).
    Deleted,
}

/// Erases an alias's PAN (if kept): the record forgets its slot, and the
/// slot is zeroed after the commit. Returns whether there was one.
pub(crate) fn erase_pan(
    ctx: &mut WriteCtx<'_>,
    alias: &str,
    rec: &mut AliasRec,
    why: Erasure,
) -> StoreResult<bool> {
    let Some(slot) = rec.pan_slot.take() else {
        return Ok(false);
    };
    ctx.free_slot(slot);
    rec.pan_removed = true;
    ctx.txn
        .open_table(RETAINED)?
        .remove(index_key(&rec.tenant, rec.created_at, alias).as_slice())?;
    if let Some(since) = rec.nt.as_ref().and_then(|n| n.active_since) {
        ctx.txn
            .open_table(ACTIVE_RETAINED)?
            .remove(index_key(&rec.tenant, since, alias).as_slice())?;
    }
    bump(ctx, &format!("pans.{}", rec.tenant), -1)?;
    if why != Erasure::Deleted {
        bump(ctx, &format!("purged.{}", rec.tenant), 1)?;
    }
    Ok(true)
}

/// Per-tenant retention figures.
#[derive(Debug, Clone, Default)]
pub struct TenantFigures {
    pub pans_retained: u64,
    pub purged_total: u64,
    pub oldest_retained_at: Option<u64>,
    /// `active_since` of retained PANs with an active(-once) token, oldest
    /// first, up to the bound asked for.
    pub active_since: Vec<u64>,
    /// The oldest `active_since` of all, whatever the bound.
    pub first_active_since: Option<u64>,
}

pub enum EraseOutcome {
    NotFound,
    /// The alias has no active token: its PAN is its only credential.
    NeedsActiveToken,
    Erased,
}

pub trait RetentionStore {
    fn tenant_figures(&self, tenant: &str, active_upto: u64) -> StoreResult<TenantFigures>;
    /// Aliases of `tenant` whose token became active at or before `upto`
    /// and whose PAN is still kept, oldest first.
    fn due_for_purge(&self, tenant: &str, upto: u64, limit: usize) -> StoreResult<Vec<String>>;
    /// Erases the PANs of `aliases` (skipping any that went meanwhile), one
    /// audit record each. Returns how many were erased.
    fn purge(
        &self,
        aliases: Vec<String>,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// `remove_pan`: erases the PAN of an alias of `tenant` with an active token.
    fn remove_pan(
        &self,
        tenant: &str,
        alias: &str,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<EraseOutcome>> + Send;
}

impl RetentionStore for RedbStore {
    fn tenant_figures(&self, tenant: &str, active_upto: u64) -> StoreResult<TenantFigures> {
        let r = self.db().begin_read()?;
        let meta = r.open_table(META)?;
        let (lo, hi) = tenant_range(tenant, u64::MAX);
        let oldest = r
            .open_table(RETAINED)?
            .range(lo.as_slice()..hi.as_slice())?
            .next()
            .transpose()?
            .and_then(|(k, _)| alias_of_key(k.value(), tenant).map(|(at, _)| at));
        let active = r.open_table(ACTIVE_RETAINED)?;
        let (lo, hi) = tenant_range(tenant, u64::MAX);
        let first_active_since = active
            .range(lo.as_slice()..hi.as_slice())?
            .next()
            .transpose()?
            .and_then(|(k, _)| alias_of_key(k.value(), tenant).map(|(at, _)| at));
        let (lo, hi) = tenant_range(tenant, active_upto);
        let mut active_since = Vec::new();
        for item in active.range(lo.as_slice()..hi.as_slice())? {
            let (k, _) = item?;
            if let Some((at, _)) = alias_of_key(k.value(), tenant) {
                active_since.push(at);
            }
        }
        Ok(TenantFigures {
            pans_retained: meta_u64(&meta, &format!("pans.{tenant}"))?,
            purged_total: meta_u64(&meta, &format!("purged.{tenant}"))?,
            oldest_retained_at: oldest,
            active_since,
            first_active_since,
        })
    }

    fn due_for_purge(&self, tenant: &str, upto: u64, limit: usize) -> StoreResult<Vec<String>> {
        let r = self.db().begin_read()?;
        let (lo, hi) = tenant_range(tenant, upto);
        let mut out = Vec::new();
        for item in r
            .open_table(ACTIVE_RETAINED)?
            .range(lo.as_slice()..hi.as_slice())?
            .take(limit)
        {
            let (k, _) = item?;
            if let Some((_, alias)) = alias_of_key(k.value(), tenant) {
                out.push(alias);
            }
        }
        Ok(out)
    }

    async fn purge(&self, aliases: Vec<String>, audit: AuditRec) -> StoreResult<u64> {
        self.writer()
            .write(move |ctx| {
                let mut n = 0;
                for alias in aliases {
                    let raw = ctx
                        .txn
                        .open_table(ALIASES)?
                        .get(alias.as_str())?
                        .map(|v| v.value().to_vec());
                    let Some(raw) = raw else { continue };
                    let mut rec: AliasRec = decode("alias", &raw)?;
                    if erase_pan(ctx, &alias, &mut rec, Erasure::Purged)? {
                        ctx.txn
                            .open_table(ALIASES)?
                            .insert(alias.as_str(), encode(&rec)?.as_slice())?;
                        let mut a = audit.clone();
                        a.alias = Some(alias);
                        a.outcome = "ok pan purged (retention)".into();
                        ctx.audit(&a)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
    }

    async fn remove_pan(
        &self,
        tenant: &str,
        alias: &str,
        audit: AuditRec,
    ) -> StoreResult<EraseOutcome> {
        let (tenant, alias) = (tenant.to_owned(), alias.to_owned());
        self.writer()
            .write(move |ctx| {
                let raw = ctx
                    .txn
                    .open_table(ALIASES)?
                    .get(alias.as_str())?
                    .map(|v| v.value().to_vec());
                let Some(raw) = raw else {
                    return Ok(EraseOutcome::NotFound);
                };
                let mut rec: AliasRec = decode("alias", &raw)?;
                if rec.tenant != tenant {
                    return Ok(EraseOutcome::NotFound);
                }
                let active = rec
                    .nt
                    .as_ref()
                    .is_some_and(|n| n.status == vault_proto::ops::TokenStatus::Active);
                if !active {
                    return Ok(EraseOutcome::NeedsActiveToken);
                }
                erase_pan(ctx, &alias, &mut rec, Erasure::Removed)?;
                ctx.txn
                    .open_table(ALIASES)?
                    .insert(alias.as_str(), encode(&rec)?.as_slice())?;
                let mut a = audit;
                a.alias = Some(alias);
                a.outcome = "ok pan removed".into();
                ctx.audit(&a)?;
                Ok(EraseOutcome::Erased)
            })
            .await
    }
}
