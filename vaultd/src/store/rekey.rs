//! Re-encryption under the newest PAN key: finding the ciphertexts (sealed
//! PANs in the slot file, token numbers in `tokens`) still under an older
//! `vault.pan.v<N>`, counting them per version, and swapping re-sealed ones
//! in through the group commit with a compare-and-swap, so a record erased
//! or changed meanwhile is left alone. Stateless: a scan finds whatever is
//! left, so the job resumes after a crash by simply running again.

use std::collections::BTreeMap;
use std::future::Future;

use redb::{ReadableDatabase, ReadableTable};

use super::records::{AliasRec, AuditRec, TokenRec, decode, encode};
use super::{ALIASES, META, RedbStore, StoreResult, TOKENS, keys_after};

/// `meta` key of [`KeyStore::pan_clean_version`].
const PAN_CLEAN_VERSION: &str = "pan_clean_version";

/// The PAN key version a stored ciphertext names (its first 4 bytes, BE).
pub fn sealed_version(ct: &[u8]) -> Option<u32> {
    let v: [u8; 4] = ct.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(v))
}

/// Where a ciphertext lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The alias's sealed PAN, in this slot (field "pan").
    Pan { slot: u64 },
    /// A token number in `tokens` under this token_ref (field "token").
    Token { token_ref: String },
}

/// A ciphertext under an old key: the alias it is bound to (its AAD), where
/// it is, and its bytes.
#[derive(Debug, Clone)]
pub struct Stale {
    pub alias: String,
    pub place: Place,
    pub ct: Vec<u8>,
}

impl Stale {
    /// The AAD field name the ciphertext was sealed with.
    pub fn field(&self) -> &'static str {
        match self.place {
            Place::Pan { .. } => "pan",
            Place::Token { .. } => "token",
        }
    }
}

/// Where a scan continues: aliases after a key, then tokens after a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ScanCursor {
    #[default]
    Start,
    Aliases(String),
    Tokens(String),
    Done,
}

/// The store side of key rotation and backup.
pub trait KeyStore {
    /// Up to `limit` ciphertexts under a PAN key version older than
    /// `newest`, from `cursor` on, looking at no more than `limit * 8`
    /// records, and the cursor to continue from ([`ScanCursor::Done`] at
    /// the end).
    fn stale_page(
        &self,
        newest: u32,
        cursor: &ScanCursor,
        limit: usize,
    ) -> StoreResult<(Vec<Stale>, ScanCursor)>;

    /// How many PAN and token-number ciphertexts each PAN key version
    /// seals (a full scan).
    fn key_versions(&self) -> StoreResult<BTreeMap<u32, u64>>;

    /// How many stored token keys each KEK version wraps, per scheme
    /// (version 0: tokens whose key is still a legacy `nt.*` HSM object).
    /// Kept as counters: no scan.
    fn kek_usage(&self) -> StoreResult<BTreeMap<(String, u32), u64>>;

    /// The PAN key version a full pass last found every ciphertext under
    /// (0: none yet). New ciphertexts are sealed under the newest version
    /// only, so while that is still the newest, no pass over every alias
    /// is needed at start-up.
    fn pan_clean_version(&self) -> StoreResult<u32>;
    fn set_pan_clean_version(&self, version: u32) -> impl Future<Output = StoreResult<()>> + Send;

    /// Puts each `(stale, new ciphertext)` in place where the record still
    /// holds the stale one, audits the batch with `audit` (its outcome gets
    /// the count), and returns how many were replaced. Replaced PAN slots
    /// are zeroed once the commit is durable.
    fn reseal(
        &self,
        items: Vec<(Stale, Vec<u8>)>,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Queues a key refresh for every token of `scheme` whose stored key is
    /// wrapped under KEK `version` (0: no stored key, a legacy `nt.*`
    /// object), unless one is queued already; audits the count with
    /// `audit`. Returns how many were queued.
    fn queue_key_refreshes(
        &self,
        scheme: &str,
        version: u32,
        audit: AuditRec,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// Whether `t` is a token of `scheme` under KEK `version` without a
/// refresh queued.
fn wants_refresh(t: &TokenRec, scheme: &str, version: u32) -> bool {
    t.scheme == scheme
        && t.status != vault_proto::ops::TokenStatus::Deleted
        && !t.refresh_pending
        && t.key.as_ref().map_or(0, |k| k.kek_version) == version
}

/// Token records per transaction of [`KeyStore::queue_key_refreshes`].
const REFRESH_CHUNK: usize = 2_000;

impl KeyStore for RedbStore {
    fn stale_page(
        &self,
        newest: u32,
        cursor: &ScanCursor,
        limit: usize,
    ) -> StoreResult<(Vec<Stale>, ScanCursor)> {
        let budget = limit.saturating_mul(8).max(1);
        let r = self.db().begin_read()?;
        let mut out = Vec::new();
        let mut seen = 0usize;
        let old = |ct: &[u8]| sealed_version(ct).is_some_and(|v| v < newest);

        if matches!(cursor, ScanCursor::Start | ScanCursor::Aliases(_)) {
            let aliases = r.open_table(ALIASES)?;
            let after = match cursor {
                ScanCursor::Aliases(after) => Some(after.as_str()),
                _ => None,
            };
            let iter = aliases.range::<&str>(keys_after(after))?;
            for item in iter {
                let (k, v) = item?;
                seen += 1;
                let rec: AliasRec = decode("alias", v.value())?;
                if let Some(slot) = rec.pan_slot
                    && let Some(ct) = self.slots.get(slot)?
                    && old(&ct)
                {
                    out.push(Stale {
                        alias: k.value().to_owned(),
                        place: Place::Pan { slot },
                        ct,
                    });
                }
                if out.len() >= limit || seen >= budget {
                    return Ok((out, ScanCursor::Aliases(k.value().to_owned())));
                }
            }
        }
        let tokens = r.open_table(TOKENS)?;
        let after = match cursor {
            ScanCursor::Tokens(after) => Some(after.as_str()),
            ScanCursor::Done => return Ok((out, ScanCursor::Done)),
            _ => None,
        };
        let iter = tokens.range::<&str>(keys_after(after))?;
        for item in iter {
            let (k, v) = item?;
            seen += 1;
            let rec: TokenRec = decode("token", v.value())?;
            if old(&rec.token_ct) {
                out.push(Stale {
                    alias: rec.alias,
                    place: Place::Token {
                        token_ref: k.value().to_owned(),
                    },
                    ct: rec.token_ct,
                });
            }
            if out.len() >= limit || seen >= budget {
                return Ok((out, ScanCursor::Tokens(k.value().to_owned())));
            }
        }
        Ok((out, ScanCursor::Done))
    }

    fn pan_clean_version(&self) -> StoreResult<u32> {
        let r = self.db().begin_read()?;
        let v = super::meta_u64(&r.open_table(META)?, PAN_CLEAN_VERSION)?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    async fn set_pan_clean_version(&self, version: u32) -> StoreResult<()> {
        self.writer()
            .write(move |ctx| {
                ctx.txn.open_table(META)?.insert(
                    PAN_CLEAN_VERSION,
                    u64::from(version).to_be_bytes().as_slice(),
                )?;
                Ok(())
            })
            .await
    }

    fn kek_usage(&self) -> StoreResult<BTreeMap<(String, u32), u64>> {
        super::kek_use::read_db(self.db())
    }

    fn key_versions(&self) -> StoreResult<BTreeMap<u32, u64>> {
        let r = self.db().begin_read()?;
        let mut counts = BTreeMap::new();
        for item in r.open_table(ALIASES)?.iter()? {
            let (_, v) = item?;
            let rec: AliasRec = decode("alias", v.value())?;
            if let Some(slot) = rec.pan_slot
                && let Some(version) = self.slots.get(slot)?.as_deref().and_then(sealed_version)
            {
                *counts.entry(version).or_insert(0) += 1;
            }
        }
        for item in r.open_table(TOKENS)?.iter()? {
            let (_, v) = item?;
            let rec: TokenRec = decode("token", v.value())?;
            if let Some(version) = sealed_version(&rec.token_ct) {
                *counts.entry(version).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    async fn queue_key_refreshes(
        &self,
        scheme: &str,
        version: u32,
        audit: AuditRec,
    ) -> StoreResult<u64> {
        let refs: Vec<String> = {
            let r = self.db().begin_read()?;
            let mut refs = Vec::new();
            for item in r.open_table(TOKENS)?.iter()? {
                let (k, v) = item?;
                if wants_refresh(&decode("token", v.value())?, scheme, version) {
                    refs.push(k.value().to_owned());
                }
            }
            refs
        };
        let mut queued = 0u64;
        let chunks: Vec<Vec<String>> = refs.chunks(REFRESH_CHUNK).map(<[String]>::to_vec).collect();
        let last = chunks.len();
        for (i, chunk) in chunks
            .into_iter()
            .chain(
                // One write for the audit record when nothing matched.
                (last == 0).then(Vec::new),
            )
            .enumerate()
        {
            let scheme = scheme.to_owned();
            let mut audit = (i + 1 >= last).then(|| audit.clone());
            let total = queued;
            queued += self
                .writer()
                .write(move |ctx| {
                    let mut n = 0u64;
                    for r in chunk {
                        let raw = ctx
                            .txn
                            .open_table(TOKENS)?
                            .get(r.as_str())?
                            .map(|v| v.value().to_vec());
                        let Some(raw) = raw else { continue };
                        let mut t: TokenRec = decode("token", &raw)?;
                        // Changed since the scan: refreshed, deleted, queued.
                        if !wants_refresh(&t, &scheme, version) {
                            continue;
                        }
                        t.refresh_pending = true;
                        ctx.txn
                            .open_table(TOKENS)?
                            .insert(r.as_str(), encode(&t)?.as_slice())?;
                        super::queue::enqueue(
                            ctx,
                            super::records::JobKind::KeyRefresh,
                            &t.alias,
                            &t.tenant,
                            &t.scheme,
                            Some(r.clone()),
                        )?;
                        n += 1;
                    }
                    if let Some(mut a) = audit.take() {
                        a.outcome = format!(
                            "ok {scheme} kek v{version}: {} key refreshes queued",
                            total + n
                        );
                        ctx.audit(&a)?;
                    }
                    Ok(n)
                })
                .await?;
        }
        Ok(queued)
    }

    async fn reseal(&self, items: Vec<(Stale, Vec<u8>)>, audit: AuditRec) -> StoreResult<u64> {
        self.writer()
            .write(move |ctx| {
                let mut replaced = 0u64;
                for (stale, new_ct) in items {
                    match stale.place {
                        Place::Pan { slot } => {
                            let aliases = ctx.txn.open_table(ALIASES)?;
                            let Some(raw) = aliases
                                .get(stale.alias.as_str())?
                                .map(|v| v.value().to_vec())
                            else {
                                continue; // deleted meanwhile
                            };
                            let mut rec: AliasRec = decode("alias", &raw)?;
                            // Erased or already moved: leave it.
                            if rec.pan_slot != Some(slot)
                                || ctx.read_slot(slot)?.as_deref() != Some(&stale.ct[..])
                            {
                                continue;
                            }
                            drop(aliases);
                            let new_slot = ctx.put_slot(&new_ct)?;
                            rec.pan_slot = Some(new_slot);
                            ctx.txn
                                .open_table(ALIASES)?
                                .insert(stale.alias.as_str(), encode(&rec)?.as_slice())?;
                            ctx.free_slot(slot);
                        }
                        Place::Token { token_ref } => {
                            let mut tokens = ctx.txn.open_table(TOKENS)?;
                            let Some(raw) =
                                tokens.get(token_ref.as_str())?.map(|v| v.value().to_vec())
                            else {
                                continue;
                            };
                            let mut rec: TokenRec = decode("token", &raw)?;
                            if rec.token_ct != stale.ct {
                                continue;
                            }
                            rec.token_ct = new_ct;
                            tokens.insert(token_ref.as_str(), encode(&rec)?.as_slice())?;
                        }
                    }
                    replaced += 1;
                }
                if replaced > 0 {
                    let mut audit = audit;
                    audit.outcome = format!("ok {replaced} re-encrypted");
                    ctx.audit(&audit)?;
                }
                Ok(replaced)
            })
            .await
    }
}
