//! Network token records: reads, and the ATC counter that every cryptogram
//! advances durably before the cryptogram leaves the vault.

use std::future::Future;

use redb::{ReadableDatabase, ReadableTable};
use vault_proto::ops::TokenStatus;

use super::records::{AuditRec, JobKind, TokenRec, decode, encode};
use super::writer::Committed;
use super::{RedbStore, StoreResult, TOKENS, queue};

pub enum AtcOutcome {
    /// The next ATC is committed; use it.
    Issued { atc: u16, token: Box<TokenRec> },
    /// The token is not active (or gone).
    NotActive,
    /// Every ATC of this key is spent; a key refresh is queued.
    Exhausted,
}

pub trait TokenStore {
    fn token(&self, token_ref: &str) -> StoreResult<Option<TokenRec>>;
    /// Advances the token's ATC by one inside a group commit, with the audit
    /// record of the `credentials` call. Returns the outcome as soon as the
    /// write ran, before its commit: nothing made from the new ATC may leave
    /// the vault before [`Committed::wait`] returned `Ok`.
    fn next_atc(
        &self,
        token_ref: &str,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<(AtcOutcome, Committed)>> + Send;
}

impl TokenStore for RedbStore {
    fn token(&self, token_ref: &str) -> StoreResult<Option<TokenRec>> {
        let r = self.db().begin_read()?;
        let t = r.open_table(TOKENS)?;
        t.get(token_ref)?
            .map(|v| decode("token", v.value()))
            .transpose()
    }

    async fn next_atc(
        &self,
        token_ref: &str,
        audit: AuditRec,
    ) -> StoreResult<(AtcOutcome, Committed)> {
        let token_ref = token_ref.to_owned();
        self.writer()
            .write_early(move |ctx| {
                let txn = ctx.txn;
                let mut tokens = txn.open_table(TOKENS)?;
                let raw = tokens.get(token_ref.as_str())?.map(|v| v.value().to_vec());
                let Some(raw) = raw else {
                    return Ok(AtcOutcome::NotActive);
                };
                let mut t: TokenRec = decode("token", &raw)?;
                if t.status != TokenStatus::Active {
                    return Ok(AtcOutcome::NotActive);
                }
                // The record's ATC lags; the writer's book has the current
                // one, journaled by the commit (`store::atc`).
                t.atc = ctx.atc(&token_ref, t.atc);
                if t.atc == u16::MAX {
                    if !t.refresh_pending {
                        t.refresh_pending = true;
                        tokens.insert(token_ref.as_str(), encode(&t)?.as_slice())?;
                        drop(tokens);
                        queue::enqueue(
                            ctx,
                            JobKind::KeyRefresh,
                            &t.alias,
                            &t.tenant,
                            &t.scheme,
                            Some(token_ref.clone()),
                        )?;
                    }
                    return Ok(AtcOutcome::Exhausted);
                }
                drop(tokens);
                t.atc += 1;
                ctx.set_atc(&token_ref, t.atc);
                let mut audit = audit;
                audit.outcome = format!("ok network_token atc {}", t.atc);
                ctx.audit(&audit)?;
                Ok(AtcOutcome::Issued {
                    atc: t.atc,
                    token: Box::new(t),
                })
            })
            .await
    }
}
