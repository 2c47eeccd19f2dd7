//! Lifecycle notifications applied durably: each scheme's feed cursor is
//! committed in the same transaction as the changes it covers, so after a
//! crash every event is applied exactly once, in feed order.

use std::future::Future;

use redb::{ReadableDatabase, ReadableTable};
use vault_proto::ops::TokenStatus;

use super::queue::set_alias_status;
use super::records::{AliasRec, EventRec, TokenRec, decode, encode};
use super::{ALIASES, META, RedbStore, StoreResult, TOKENS, meta_u64};
use crate::vault::cards::now_ms;

/// One notification, prepared (a new token number already sealed).
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u64,
    pub token_ref: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    Suspend,
    Resume,
    Delete,
    /// New token number (sealed for the alias) and/or new token expiry.
    Redigitize {
        token_ct: Option<Vec<u8>>,
        token_last4: Option<String>,
        exp: Option<(u8, u16)>,
    },
    /// The card's expiry changed (account updater).
    PanExpiry {
        exp_month: u8,
        exp_year: u16,
    },
    Unknown(String),
}

pub trait LifecycleStore {
    fn feed_cursor(&self, scheme: &str) -> StoreResult<u64>;
    /// Applies the changes after the stored cursor and moves it to
    /// `cursor`; returns the token_refs deleted (their HSM keys go next).
    fn apply_changes(
        &self,
        scheme: &str,
        changes: Vec<Change>,
        cursor: u64,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
}

fn cursor_key(scheme: &str) -> String {
    format!("feed.{scheme}")
}

impl LifecycleStore for RedbStore {
    fn feed_cursor(&self, scheme: &str) -> StoreResult<u64> {
        let r = self.db().begin_read()?;
        meta_u64(&r.open_table(META)?, &cursor_key(scheme))
    }

    async fn apply_changes(
        &self,
        scheme: &str,
        changes: Vec<Change>,
        cursor: u64,
    ) -> StoreResult<Vec<String>> {
        let scheme = scheme.to_owned();
        self.writer()
            .write(move |ctx| {
                let stored = meta_u64(&ctx.txn.open_table(META)?, &cursor_key(&scheme))?;
                let mut deleted = Vec::new();
                let at = now_ms();
                for ch in changes.into_iter().filter(|c| c.seq > stored) {
                    let raw = ctx
                        .txn
                        .open_table(TOKENS)?
                        .get(ch.token_ref.as_str())?
                        .map(|v| v.value().to_vec());
                    let Some(raw) = raw else {
                        ctx.event(&EventRec {
                            at,
                            alias: None,
                            scheme: Some(scheme.clone()),
                            kind: "notification_ignored".into(),
                            detail: format!("seq {} for unknown token {}", ch.seq, ch.token_ref),
                        })?;
                        continue;
                    };
                    let mut t: TokenRec = decode("token", &raw)?;
                    let alias = t.alias.clone();
                    let araw = ctx
                        .txn
                        .open_table(ALIASES)?
                        .get(alias.as_str())?
                        .map(|v| v.value().to_vec());
                    let mut rec: Option<AliasRec> =
                        araw.map(|r| decode("alias", &r)).transpose()?;
                    // A token no longer the alias's own (re-provisioned since)
                    // changes only its own record.
                    let current = rec
                        .as_ref()
                        .and_then(|r| r.nt.as_ref())
                        .and_then(|n| n.token_ref.as_deref())
                        == Some(ch.token_ref.as_str());
                    let (kind, detail, status) = match &ch.kind {
                        ChangeKind::Suspend => (
                            "token_suspended",
                            "suspended by the token service".to_owned(),
                            Some(TokenStatus::Suspended),
                        ),
                        ChangeKind::Resume => (
                            "token_resumed",
                            "resumed by the token service".to_owned(),
                            Some(TokenStatus::Active),
                        ),
                        ChangeKind::Delete => (
                            "token_deleted",
                            "deleted by the token service; the PAN is the credential again"
                                .to_owned(),
                            Some(TokenStatus::Deleted),
                        ),
                        ChangeKind::Redigitize {
                            token_ct,
                            token_last4,
                            exp,
                        } => {
                            if let (Some(ct), Some(l4)) = (token_ct, token_last4) {
                                t.token_ct = ct.clone();
                                t.token_last4 = l4.clone();
                            }
                            if let Some((m, y)) = exp {
                                t.exp_month = *m;
                                t.exp_year = *y;
                            }
                            let what = match (token_ct.is_some(), exp.is_some()) {
                                (true, true) => "new token number and expiry",
                                (true, false) => "new token number",
                                _ => "new token expiry",
                            };
                            ("token_redigitized", what.to_owned(), None)
                        }
                        ChangeKind::PanExpiry {
                            exp_month,
                            exp_year,
                        } => {
                            if let Some(r) = rec.as_mut() {
                                r.exp_month = *exp_month;
                                r.exp_year = *exp_year;
                            }
                            (
                                "card_expiry_updated",
                                "card expiry updated by the issuer".to_owned(),
                                None,
                            )
                        }
                        ChangeKind::Unknown(e) => {
                            ("notification_ignored", format!("unknown event {e:?}"), None)
                        }
                    };
                    if t.status == TokenStatus::Deleted && status.is_some() {
                        // Deleted is final.
                        ctx.event(&EventRec {
                            at,
                            alias: Some(alias),
                            scheme: Some(scheme.clone()),
                            kind: "notification_ignored".into(),
                            detail: format!("seq {}: token {} is deleted", ch.seq, ch.token_ref),
                        })?;
                        continue;
                    }
                    if let Some(st) = status {
                        t.status = st;
                        if st == TokenStatus::Deleted {
                            t.token_ct.clear();
                            deleted.push(ch.token_ref.clone());
                        }
                    }
                    t.updated_at = at;
                    ctx.txn
                        .open_table(TOKENS)?
                        .insert(ch.token_ref.as_str(), encode(&t)?.as_slice())?;
                    if let Some(mut r) = rec {
                        match status {
                            Some(st) if current => set_alias_status(ctx, &alias, &mut r, st, None)?,
                            _ => {
                                if let Some(nt) = r.nt.as_mut()
                                    && current
                                {
                                    nt.updated_at = at;
                                }
                                ctx.txn
                                    .open_table(ALIASES)?
                                    .insert(alias.as_str(), encode(&r)?.as_slice())?;
                            }
                        }
                    }
                    ctx.event(&EventRec {
                        at,
                        alias: Some(alias),
                        scheme: Some(scheme.clone()),
                        kind: kind.into(),
                        detail: format!("{} (token {}, feed seq {})", detail, ch.token_ref, ch.seq),
                    })?;
                }
                if cursor > stored {
                    ctx.txn.open_table(META)?.insert(
                        cursor_key(&scheme).as_str(),
                        cursor.to_be_bytes().as_slice(),
                    )?;
                }
                Ok(deleted)
            })
            .await
    }
}
