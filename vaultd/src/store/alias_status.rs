//! An alias record's token status, the one write every path that changes
//! it goes through (provisioning results in `queue`, lifecycle events in
//! `lifecycle`): it keeps the per-status counts and the retention schedule
//! in step with the record.

use redb::ReadableTable;
use vault_proto::ops::TokenStatus;

use super::records::{AliasRec, decode, encode};
use super::writer::WriteCtx;
use super::{ALIASES, StoreResult, count_status};
use crate::vault::cards::now_ms;

pub(crate) fn load_alias(ctx: &WriteCtx<'_>, alias: &str) -> StoreResult<Option<AliasRec>> {
    let t = ctx.txn.open_table(ALIASES)?;
    let v = t.get(alias)?.map(|v| v.value().to_vec());
    v.map(|v| decode("alias", &v)).transpose()
}

pub(crate) fn save_alias(ctx: &WriteCtx<'_>, alias: &str, rec: &AliasRec) -> StoreResult<()> {
    ctx.txn
        .open_table(ALIASES)?
        .insert(alias, encode(rec)?.as_slice())?;
    Ok(())
}

/// Sets an alias's token status, keeping the per-status counts.
pub(crate) fn set_alias_status(
    ctx: &mut WriteCtx<'_>,
    alias: &str,
    rec: &mut AliasRec,
    status: TokenStatus,
    last_error: Option<String>,
) -> StoreResult<()> {
    let now = now_ms();
    let from = rec.nt.as_ref().map(|n| n.status);
    let mut became_active = false;
    if let Some(nt) = rec.nt.as_mut() {
        nt.status = status;
        nt.updated_at = now;
        nt.last_error = last_error;
        if status == TokenStatus::Active && nt.active_since.is_none() {
            nt.active_since = Some(now);
            became_active = true;
        }
    }
    if became_active && !rec.pan_removed {
        super::retention::mark_active(ctx, &rec.tenant, alias, now)?;
    }
    count_status(ctx, from, Some(status))?;
    save_alias(ctx, alias, rec)
}
