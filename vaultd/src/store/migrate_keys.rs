//! Schema 3: network token keys move out of the HSM's object store into
//! their token records (DESIGN.md "Keys"). A database written by an
//! earlier release has tokens whose key is the HSM object `nt.<token_ref>`
//! and whose record holds no key. The first start of this release queues a
//! key refresh for each such token ([`migrate`]): the refreshed key is
//! stored in the record (wrapped, as the token service delivers it) and the
//! old object is destroyed once that commit is durable. Until then the
//! token's payments keep using the old object.
//!
//! The pass runs before the writer starts, in transactions of
//! [`CHUNK`] tokens with a cursor in `meta`, so a crash part-way resumes
//! where it stopped and queues no token twice; `kek.<scheme>.legacy`
//! counts the tokens still waiting (see `kek_use`).

use redb::{Database, ReadableDatabase, ReadableTable};
use vault_proto::ops::TokenStatus;

use super::queue::{new_job, put_new_job};
use super::records::{JobKind, TokenRec, decode, encode};
use super::{META, StoreError, TOKENS, meta_u64};

/// `meta` key: 1 once every token of an earlier release has its refresh queued.
const DONE: &str = "token_keys_migrated";
/// `meta` key: the last token_ref the pass covered.
const CURSOR: &str = "token_keys_cursor";
const CHUNK: usize = 10_000;

/// Marks a new database as needing no migration.
pub(crate) fn mark_done(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?
        .insert(DONE, 1u64.to_be_bytes().as_slice())?;
    Ok(())
}

/// Queues a key refresh for every token without a stored key; returns how
/// many (0 also when the pass had run before).
pub(crate) fn migrate(db: &Database) -> Result<u64, StoreError> {
    migrate_in_chunks(db, CHUNK)
}

fn migrate_in_chunks(db: &Database, chunk_len: usize) -> Result<u64, StoreError> {
    {
        let r = db.begin_read()?;
        if meta_u64(&r.open_table(META)?, DONE)? == 1 {
            return Ok(0);
        }
    }
    let mut queued = 0u64;
    loop {
        let txn = db.begin_write()?;
        let more = {
            let mut meta = txn.open_table(META)?;
            let after = meta
                .get(CURSOR)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            let tokens = txn.open_table(TOKENS)?;
            let chunk: Vec<(String, Vec<u8>)> = tokens
                .range::<&str>(super::keys_after(after.as_deref()))?
                .take(chunk_len)
                .map(|item| item.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
                .collect::<Result<_, _>>()?;
            drop(tokens);
            let mut pending = Vec::new();
            let mut job_id = meta_u64(&meta, "job_id")?;
            let now = crate::vault::cards::now_ms();
            for (r, raw) in &chunk {
                let t: TokenRec = decode("token", raw)?;
                if t.status == TokenStatus::Deleted || t.key.is_some() {
                    continue;
                }
                let legacy = format!("kek.{}.legacy", t.scheme);
                let n = meta_u64(&meta, &legacy)?;
                meta.insert(legacy.as_str(), (n + 1).to_be_bytes().as_slice())?;
                if t.refresh_pending {
                    // Its refresh (ATCs spent) is queued already.
                    continue;
                }
                // Marked like an ATC-exhausted token's, so a payment that
                // finds its ATCs spent (after a restore) queues no second
                // refresh; the refresh clears it.
                let mut t = t;
                t.refresh_pending = true;
                pending.push((r.clone(), encode(&t)?));
                job_id += 1;
                let job = new_job(
                    job_id,
                    JobKind::KeyRefresh,
                    &t.alias,
                    &t.tenant,
                    &t.scheme,
                    Some(r.clone()),
                    now,
                );
                put_new_job(&txn, &job)?;
                queued += 1;
            }
            meta.insert("job_id", job_id.to_be_bytes().as_slice())?;
            let mut tokens = txn.open_table(TOKENS)?;
            for (r, rec) in &pending {
                tokens.insert(r.as_str(), rec.as_slice())?;
            }
            match chunk.last() {
                Some((r, _)) if chunk.len() == chunk_len => {
                    meta.insert(CURSOR, r.as_bytes())?;
                    true
                }
                _ => {
                    meta.remove(CURSOR)?;
                    meta.insert(DONE, 1u64.to_be_bytes().as_slice())?;
                    false
                }
            }
        };
        txn.commit()?;
        if !more {
            if queued > 0 {
                tracing::info!(
                    tokens = queued,
                    "network token keys of an earlier release: a key refresh is queued for each; \
                     their nt.* HSM objects are destroyed as the refreshed keys are stored"
                );
            }
            return Ok(queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{JobRec, StoredKey};
    use crate::store::{JOB_QUEUE, JOBS};
    use redb::ReadableTableMetadata;

    fn token(alias: &str, status: TokenStatus, key: bool) -> TokenRec {
        TokenRec {
            alias: alias.into(),
            tenant: "t".into(),
            scheme: "visa".into(),
            token_ct: vec![1],
            token_last4: "0000".into(),
            exp_month: 1,
            exp_year: 2030,
            par: None,
            token_requestor_id: "trid".into(),
            status,
            atc: 3,
            updated_at: 0,
            refresh_pending: false,
            key: key.then(|| StoredKey {
                kek_version: 1,
                wrapped: vec![0; 24],
            }),
        }
    }

    /// Every legacy token gets one refresh job, across chunks and a second
    /// run; tokens with a stored key and deleted ones get none.
    #[test]
    fn queues_one_refresh_per_legacy_token_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("m.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(TOKENS).unwrap();
            for i in 0..10 {
                let (status, key) = match i {
                    0 => (TokenStatus::Deleted, false),
                    1 => (TokenStatus::Active, true),
                    _ => (TokenStatus::Active, false),
                };
                let rec = token(&format!("a{i}"), status, key);
                t.insert(
                    format!("tok{i:02}").as_str(),
                    encode(&rec).unwrap().as_slice(),
                )
                .unwrap();
            }
            w.open_table(META).unwrap();
            w.open_table(JOBS).unwrap();
            w.open_table(JOB_QUEUE).unwrap();
        }
        w.commit().unwrap();
        assert_eq!(migrate_in_chunks(&db, 3).unwrap(), 8);
        assert_eq!(migrate_in_chunks(&db, 3).unwrap(), 0, "runs once");
        let r = db.begin_read().unwrap();
        let jobs = r.open_table(JOBS).unwrap();
        let mut refs: Vec<String> = jobs
            .iter()
            .unwrap()
            .map(|j| {
                let j: JobRec = decode("job", j.unwrap().1.value()).unwrap();
                assert_eq!(j.kind, JobKind::KeyRefresh);
                j.token_ref.unwrap()
            })
            .collect();
        refs.sort();
        let want: Vec<String> = (2..10).map(|i| format!("tok{i:02}")).collect();
        assert_eq!(refs, want);
        let meta = r.open_table(META).unwrap();
        assert_eq!(meta_u64(&meta, "kek.visa.legacy").unwrap(), 8);
        assert_eq!(meta_u64(&meta, "job_id").unwrap(), 8);
        assert_eq!(r.open_table(JOB_QUEUE).unwrap().len().unwrap(), 8);
        // Marked pending, so an exhausted ATC queues no second refresh.
        let tokens = r.open_table(TOKENS).unwrap();
        for i in 2..10 {
            let t: TokenRec = decode(
                "token",
                tokens
                    .get(format!("tok{i:02}").as_str())
                    .unwrap()
                    .unwrap()
                    .value(),
            )
            .unwrap();
            assert!(t.refresh_pending, "tok{i:02}");
        }
    }
}
