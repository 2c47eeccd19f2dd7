//! Lifecycle notifications applied durably: each scheme's feed cursor is
//! committed in the same transaction as the changes it covers, so after a
//! crash every event is applied exactly once, in feed order.

use std::future::Future;

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use vault_proto::ops::TokenStatus;

use super::alias_status::set_alias_status;
use super::records::{AliasRec, EventRec, TokenRec, decode, encode};
use super::writer::WriteCtx;
use super::{ALIASES, META, PARKED, PARKED_BY_EXPIRY, RedbStore, StoreResult, TOKENS, meta_u64};
use crate::vault::cards::now_ms;

/// How long an event for a token the vault does not have waits for that
/// token's provisioning to commit; then it is dropped.
const PARK_FOR_MS: u64 = 24 * 3600 * 1000;

/// An event parked in `parked_events` (see [`apply_parked`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct ParkedRec {
    pub scheme: String,
    /// When it was parked (ms).
    pub at: u64,
    pub kind: ChangeKind,
}

/// One notification, prepared (a new token number already sealed).
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u64,
    pub token_ref: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// An event the vault does not know, by its name (allow-listed).
    Unknown(String),
    /// A known event the vault refused for a malformed field: why (never
    /// a value). Recorded, never applied nor parked.
    Invalid(String),
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
                    match apply_to_token(ctx, &scheme, ch.seq, &ch.token_ref, &ch.kind, at)? {
                        Applied::NoToken => park(ctx, &scheme, ch, at)?,
                        Applied::Done { deleted: true } => deleted.push(ch.token_ref),
                        Applied::Done { deleted: false } => {}
                    }
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

/// What [`apply_to_token`] did.
enum Applied {
    /// The vault has no such token (yet): nothing changed.
    NoToken,
    /// Applied (or ignored: a deleted token stays deleted); `deleted`: this
    /// event deleted the token, whose HSM key goes next.
    Done { deleted: bool },
}

/// Applies one event of `scheme`'s feed to the token `token_ref`, if the
/// vault has it and `scheme` issued it: a feed never changes another
/// scheme's token. Unknown and invalid events are recorded, not applied.
fn apply_to_token(
    ctx: &mut WriteCtx<'_>,
    scheme: &str,
    seq: u64,
    token_ref: &str,
    kind: &ChangeKind,
    at: u64,
) -> StoreResult<Applied> {
    let raw = if token_ref.is_empty() {
        None
    } else {
        ctx.txn
            .open_table(TOKENS)?
            .get(token_ref)?
            .map(|v| v.value().to_vec())
    };
    let known: Option<TokenRec> = raw.map(|r| decode("token", &r)).transpose()?;
    let on_token = if token_ref.is_empty() {
        format!("feed seq {seq}")
    } else {
        format!("token {token_ref}, feed seq {seq}")
    };
    if let Some(t) = &known
        && t.scheme != scheme
    {
        ignored(
            ctx,
            scheme,
            Some(t.alias.clone()),
            format!("an event for a token of another scheme ({on_token})"),
            at,
        )?;
        return Ok(Applied::Done { deleted: false });
    }
    let refused = match kind {
        ChangeKind::Unknown(e) => Some(format!(
            "unknown event {:?}",
            crate::tokens::connector::allowed_name(e)
        )),
        ChangeKind::Invalid(why) => Some(format!("invalid event: {why}")),
        _ => None,
    };
    if let Some(detail) = refused {
        let alias = known.map(|t| t.alias);
        ignored(ctx, scheme, alias, format!("{detail} ({on_token})"), at)?;
        return Ok(Applied::Done { deleted: false });
    }
    let Some(mut t) = known else {
        return Ok(Applied::NoToken);
    };
    let alias = t.alias.clone();
    let araw = ctx
        .txn
        .open_table(ALIASES)?
        .get(alias.as_str())?
        .map(|v| v.value().to_vec());
    let mut rec: Option<AliasRec> = araw.map(|r| decode("alias", &r)).transpose()?;
    // A token no longer the alias's own (re-provisioned since) changes only
    // its own record.
    let current = rec
        .as_ref()
        .and_then(|r| r.nt.as_ref())
        .and_then(|n| n.token_ref.as_deref())
        == Some(token_ref);
    let (kind, detail, status) = match kind {
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
            "deleted by the token service; the PAN is the credential again".to_owned(),
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
        // Recorded above.
        ChangeKind::Unknown(_) | ChangeKind::Invalid(_) => {
            return Ok(Applied::Done { deleted: false });
        }
    };
    if t.status == TokenStatus::Deleted && status.is_some() {
        // Deleted is final.
        let detail = format!("seq {seq}: token {token_ref} is deleted");
        ignored(ctx, scheme, Some(alias), detail, at)?;
        return Ok(Applied::Done { deleted: false });
    }
    let deleted = status == Some(TokenStatus::Deleted);
    let before = t.clone();
    if let Some(st) = status {
        t.status = st;
    }
    if deleted {
        // The token number and its key leave the record in this commit;
        // the key's session object (or legacy HSM object) goes after it.
        t.token_ct.clear();
        t.key = None;
    }
    super::kek_use::replace(ctx, Some(&before), Some(&t));
    t.updated_at = at;
    ctx.txn
        .open_table(TOKENS)?
        .insert(token_ref, encode(&t)?.as_slice())?;
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
        scheme: Some(scheme.to_owned()),
        kind: kind.into(),
        detail: format!("{detail} (token {token_ref}, feed seq {seq})"),
    })?;
    Ok(Applied::Done { deleted })
}

/// Records an event of `scheme`'s feed the vault did not apply.
fn ignored(
    ctx: &mut WriteCtx<'_>,
    scheme: &str,
    alias: Option<String>,
    detail: String,
    at: u64,
) -> StoreResult<()> {
    ctx.event(&EventRec {
        at,
        alias,
        scheme: Some(scheme.to_owned()),
        kind: "notification_ignored".into(),
        detail,
    })?;
    Ok(())
}

/// An event for a token the vault does not have. Most often its
/// provisioning is between the token service's answer and the commit that
/// stores the token (the key is being unwrapped), and the event (an issuer
/// suspending a token just issued, say) must not be lost: it is kept, and
/// applied by that commit ([`apply_parked`]). Events of tokens the vault
/// erased are dropped after [`PARK_FOR_MS`].
fn park(ctx: &mut WriteCtx<'_>, scheme: &str, ch: Change, at: u64) -> StoreResult<()> {
    // Those past their wait go first, a bounded number per event (the
    // rest with the background purge, `Store::purge_expired`).
    drop_expired_parked(ctx.txn, at, 16)?;
    let mut parked = ctx.txn.open_table(PARKED)?;
    // A new token number cannot wait: it is sealed for the token's alias,
    // which nobody knows yet (`tokens::lifecycle::prepare` leaves it out),
    // and never kept in clear. A redigitization waits with its expiry only.
    let rec = ParkedRec {
        scheme: scheme.to_owned(),
        at,
        kind: ch.kind,
    };
    parked.insert((ch.token_ref.as_str(), ch.seq), encode(&rec)?.as_slice())?;
    drop(parked);
    ctx.txn
        .open_table(PARKED_BY_EXPIRY)?
        .insert((at + PARK_FOR_MS, ch.token_ref.as_str(), ch.seq), ())?;
    ctx.event(&EventRec {
        at,
        alias: None,
        scheme: Some(scheme.to_owned()),
        kind: "notification_parked".into(),
        detail: format!(
            "seq {} for token {}, not in the vault (yet): applied when its provisioning commits",
            ch.seq, ch.token_ref
        ),
    })?;
    Ok(())
}

/// Drops up to `limit` parked events whose wait ended before `now`;
/// returns how many.
pub(crate) fn drop_expired_parked(
    txn: &redb::WriteTransaction,
    now: u64,
    limit: usize,
) -> StoreResult<usize> {
    let mut by_expiry = txn.open_table(PARKED_BY_EXPIRY)?;
    let due: Vec<(u64, String, u64)> = by_expiry
        .range(..(now, "", 0))?
        .take(limit)
        .map(|item| {
            item.map(|(k, _)| {
                let (at, r, seq) = k.value();
                (at, r.to_owned(), seq)
            })
        })
        .collect::<Result<_, _>>()?;
    let mut parked = txn.open_table(PARKED)?;
    for (at, r, seq) in &due {
        by_expiry.remove((*at, r.as_str(), *seq))?;
        // The same event parked again since (a feed replay) waits anew.
        let stale = match parked.get((r.as_str(), *seq))? {
            Some(v) => decode::<ParkedRec>("parked event", v.value())?.at + PARK_FOR_MS <= *at,
            None => false,
        };
        if stale {
            parked.remove((r.as_str(), *seq))?;
        }
    }
    Ok(due.len())
}

/// Schema 4 ([`super::upgrade_to_4`]): the expiry index of the events
/// parked before it.
pub(crate) fn index_parked(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let all: Vec<(String, u64, u64)> = {
        let parked = txn.open_table(PARKED)?;
        parked
            .iter()?
            .map(|item| {
                let (k, v) = item?;
                let p: ParkedRec = decode("parked event", v.value())?;
                let (r, seq) = k.value();
                Ok((r.to_owned(), seq, p.at + PARK_FOR_MS))
            })
            .collect::<StoreResult<_>>()?
    };
    let mut by_expiry = txn.open_table(PARKED_BY_EXPIRY)?;
    for (r, seq, at) in &all {
        by_expiry.insert((*at, r.as_str(), *seq), ())?;
    }
    Ok(())
}

/// What [`apply_parked`] did.
#[derive(Debug, Default)]
pub(crate) struct Unparked {
    /// Events applied.
    pub applied: usize,
    /// One of them deleted the token: its HSM key goes next.
    pub deleted: bool,
}

/// Applies, in feed order, the events parked for `token_ref` ([`park`]),
/// in the transaction that has just stored its record.
pub(crate) fn apply_parked(ctx: &mut WriteCtx<'_>, token_ref: &str) -> StoreResult<Unparked> {
    let waiting: Vec<(u64, ParkedRec)> = {
        let parked = ctx.txn.open_table(PARKED)?;
        parked
            .range((token_ref, 0)..=(token_ref, u64::MAX))?
            .map(|item| {
                let (k, v) = item?;
                Ok((k.value().1, decode("parked event", v.value())?))
            })
            .collect::<StoreResult<_>>()?
    };
    let mut done = Unparked::default();
    for (seq, p) in waiting {
        ctx.txn.open_table(PARKED)?.remove((token_ref, seq))?;
        ctx.txn
            .open_table(PARKED_BY_EXPIRY)?
            .remove((p.at + PARK_FOR_MS, token_ref, seq))?;
        if let Applied::Done { deleted } =
            apply_to_token(ctx, &p.scheme, seq, token_ref, &p.kind, now_ms())?
        {
            done.applied += 1;
            done.deleted |= deleted;
        }
    }
    Ok(done)
}
