//! How many stored token keys each KEK version wraps (DESIGN.md "Keys"):
//! `meta` counters `kek.<scheme>.v<N>`, and `kek.<scheme>.legacy` for tokens
//! of a release before 2026-12 whose key is still an HSM object
//! `nt.<token_ref>`. Every write that stores, replaces or drops a token's
//! key adjusts them in its own transaction, so `stats.keys` and the refusal
//! to retire a KEK version in use read them without a scan.

use std::collections::BTreeMap;

use redb::ReadableTable;
use vault_proto::ops::TokenStatus;

use super::records::TokenRec;
use super::writer::WriteCtx;
use super::{META, StoreResult};

const PREFIX: &str = "kek.";

/// The counter a token's key counts under; none for a deleted token.
fn slot(t: &TokenRec) -> Option<String> {
    if t.status == TokenStatus::Deleted {
        return None;
    }
    Some(match &t.key {
        Some(k) => format!("{PREFIX}{}.v{}", t.scheme, k.kek_version),
        None => format!("{PREFIX}{}.legacy", t.scheme),
    })
}

/// A token record changes from `before` to `after` (`None`: absent).
pub(crate) fn replace(ctx: &mut WriteCtx<'_>, before: Option<&TokenRec>, after: Option<&TokenRec>) {
    let (from, to) = (before.and_then(slot), after.and_then(slot));
    if from == to {
        return;
    }
    if let Some(k) = from {
        ctx.bump(k, -1);
    }
    if let Some(k) = to {
        ctx.bump(k, 1);
    }
}

/// What the counters say: per scheme, KEK version (0: legacy `nt.*`
/// objects) → tokens.
pub(crate) fn read<T: ReadableTable<&'static str, &'static [u8]>>(
    meta: &T,
) -> StoreResult<BTreeMap<(String, u32), u64>> {
    let mut out = BTreeMap::new();
    for item in meta.range(PREFIX..)? {
        let (k, v) = item?;
        let Some(rest) = k.value().strip_prefix(PREFIX) else {
            break;
        };
        let Some((scheme, which)) = rest.rsplit_once('.') else {
            continue;
        };
        let version = match which {
            "legacy" => 0,
            v => match v.strip_prefix('v').and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => continue,
            },
        };
        let n = v.value().try_into().map(u64::from_be_bytes).unwrap_or(0);
        if n > 0 {
            out.insert((scheme.to_owned(), version), n);
        }
    }
    Ok(out)
}

/// Opens `meta` for [`read`] in a read transaction.
pub(crate) fn read_db(db: &redb::Database) -> StoreResult<BTreeMap<(String, u32), u64>> {
    use redb::ReadableDatabase;
    let r = db.begin_read()?;
    read(&r.open_table(META)?)
}
