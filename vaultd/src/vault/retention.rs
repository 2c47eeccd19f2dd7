//! PAN retention: `remove_pan`, the `retention` view, `purge_due`, and the
//! scheduler that erases PANs of `transition` tenants when they fall due.
//! Erasure is durable and audited (one record per PAN) in the same commit.

use std::sync::Arc;
use std::time::Duration;

use vault_hsm::Hsm;
use vault_proto::ErrorCode;
use vault_proto::ops::{
    self, AliasRecord, Handle, PurgeResult, Retention as RetentionView, TenantRetention,
};

use super::cards::now_ms;
use super::{Caller, Vault, VaultError, VaultResult, alias_record};
use crate::config::Retention;
use crate::store::Store;
use crate::store::records::AuditRec;
use crate::store::retention::EraseOutcome;

const DAY_MS: u64 = 86_400_000;
/// PANs erased per commit by the scheduler.
const PURGE_BATCH: usize = 500;

impl<S: Store, H: Hsm> Vault<S, H> {
    pub async fn remove_pan(&self, caller: &Caller, alias: &str) -> VaultResult<AliasRecord> {
        let tenant = caller.tenant.clone().unwrap_or_default();
        self.alias_of_tenant(&tenant, alias)?;
        match self
            .store
            .remove_pan(&tenant, alias, caller.audit("remove_pan", None, "ok"))
            .await?
        {
            EraseOutcome::NotFound => Err(VaultError::refuse(
                ErrorCode::AliasNotFound,
                "no such alias",
            )),
            EraseOutcome::NeedsActiveToken => Err(VaultError::refuse(
                ErrorCode::PanRequired,
                "the alias has no active network token; its PAN is its only credential",
            )),
            EraseOutcome::Erased => {
                let v = self.alias_of_tenant(&tenant, alias)?;
                Ok(alias_record(&v, &self.policy()))
            }
        }
    }

    pub fn retention(&self) -> VaultResult<RetentionView> {
        let now = now_ms();
        let policy = self.policy();
        let mut ids: Vec<&String> = policy.tenants.keys().collect();
        ids.sort();
        let mut tenants = Vec::new();
        let mut next_purge_at: Option<u64> = None;
        for id in ids {
            let p = &policy.tenants[id];
            let transition = match p.retention {
                Retention::Transition(d) => Some(d.as_millis() as u64),
                _ => None,
            };
            let upto = transition.map_or(0, |d| (now + 30 * DAY_MS).saturating_sub(d));
            let f = self.store.tenant_figures(id, upto)?;
            let (mut due_now, mut due_7d, mut due_30d) = (0, 0, 0);
            if let Some(d) = transition {
                for since in &f.active_since {
                    let due = since + d;
                    due_now += u64::from(due <= now);
                    due_7d += u64::from(due <= now + 7 * DAY_MS);
                    due_30d += u64::from(due <= now + 30 * DAY_MS);
                }
                if let Some(first) = f.first_active_since {
                    let at = first + d;
                    next_purge_at = Some(next_purge_at.map_or(at, |n| n.min(at)));
                }
            }
            tenants.push(TenantRetention {
                tenant: id.clone(),
                policy: p.retention.describe(),
                pans_retained: f.pans_retained,
                due_now,
                due_7d,
                due_30d,
                purged_total: f.purged_total,
                oldest_retained_at: f.oldest_retained_at,
            });
        }
        Ok(RetentionView {
            tenants,
            next_purge_at,
        })
    }

    /// Erases every PAN due now, for one tenant or all; `audit` is the
    /// record each erasure is filed under.
    async fn purge_now(&self, tenant: Option<&str>, audit: &AuditRec) -> VaultResult<u64> {
        let now = now_ms();
        let policy = self.policy();
        let mut total = 0;
        for (id, p) in &policy.tenants {
            if tenant.is_some_and(|t| t != id) {
                continue;
            }
            let Retention::Transition(d) = p.retention else {
                continue;
            };
            let upto = now.saturating_sub(d.as_millis() as u64);
            loop {
                let due = self.store.due_for_purge(id, upto, PURGE_BATCH)?;
                if due.is_empty() {
                    break;
                }
                let n = due.len();
                let erased = self.store.purge(due, audit.clone()).await?;
                total += erased;
                if n < PURGE_BATCH || erased == 0 {
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(erased = total, client = %audit.client, "PANs erased by retention policy");
        }
        Ok(total)
    }

    pub async fn purge_due(
        &self,
        caller: &Caller,
        tenant: Option<String>,
    ) -> VaultResult<PurgeResult> {
        if let Some(t) = &tenant
            && !self.policy().tenants.contains_key(t)
        {
            return Err(VaultError::refuse(ErrorCode::BadRequest, "no such tenant"));
        }
        let audit = caller.audit("purge_due", None, "ok");
        let purged = self.purge_now(tenant.as_deref(), &audit).await?;
        // The request itself is on the trail too, even when nothing was due.
        let mut a = audit;
        a.outcome = format!("ok purged {purged}");
        self.store.audit(a).await?;
        Ok(PurgeResult { purged })
    }
}

/// The retention scheduler: erases what falls due, every `tick`.
pub async fn run_scheduler<S: Store, H: Hsm>(
    vault: Arc<Vault<S, H>>,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let audit = AuditRec::by_daemon("retention_purge", String::new());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let mut a = audit.clone();
        a.at = now_ms();
        if let Err(e) = vault.purge_now(None, &a).await {
            tracing::warn!(error = %e, "retention purge failed; retrying next tick");
        }
        purge_expired(&*vault.store, now_ms()).await;
    }
}

/// Rows deleted per commit by [`purge_expired`].
const EXPIRY_BATCH: usize = 1_000;
/// Commits per tick at most: what is left waits for the next tick.
const EXPIRY_BATCHES: usize = 100;

/// Deletes expired transaction ids (and parked lifecycle events past their
/// wait), [`EXPIRY_BATCH`] rows a commit, so the `transactions` table holds
/// only live ones and no request waits behind a long commit.
pub async fn purge_expired<S: Store>(store: &S, now: u64) -> usize {
    let mut total = 0;
    for _ in 0..EXPIRY_BATCHES {
        match store.purge_expired(now, EXPIRY_BATCH).await {
            Ok(n) => {
                total += n;
                if n < EXPIRY_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purge of expired transaction ids failed; retrying next tick");
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(
            rows = total,
            "expired transaction ids and parked events deleted"
        );
    }
    total
}

// ------------------------------------------------------------ op handlers

impl<S: Store, H: Hsm> Handle<ops::RemovePan> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::AliasArgs) -> VaultResult<AliasRecord> {
        self.remove_pan(who, &a.alias).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::RetentionOp> for Vault<S, H> {
    async fn handle(&self, _: &Caller, _: ops::NoArgs) -> VaultResult<RetentionView> {
        self.retention()
    }
}

impl<S: Store, H: Hsm> Handle<ops::PurgeDue> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::PurgeArgs) -> VaultResult<PurgeResult> {
        self.purge_due(who, a.tenant).await
    }
}
