//! The ATC book: every token's current ATC, kept in memory by the writer
//! thread and made durable through an append-only journal.
//!
//! Writing the new ATC into the token's record made every cryptogram
//! rewrite one random leaf of `tokens`: a group commit of 16 payments wrote
//! ~16 leaves, 3.5 times the cost of a commit of one. Instead, each batch
//! appends **one** journal row (`atc_log`, seq → every ATC the batch
//! issued), which lands on the journal's last page. The records are brought
//! up to date now and then by a *fold* that rewrites them in key order, a
//! few hundred per batch, and then trims the journal rows it covered.
//!
//! The invariant: for a token in [`AtcBook::current`], that value is its
//! newest ATC and the journal holds it as the token's last entry; for any
//! other token, its record's `atc` is the newest. Every change of an ATC
//! (an issue, a key refresh's reset to 0) goes through [`AtcBook::set`], so
//! it is journaled in the commit that makes it. At start-up the journal is
//! replayed in order, last entry wins, over the records.
//!
//! A restored backup is the exception: its ATCs may be behind what the
//! schemes accepted, so the first start after a restore takes every token
//! to its key's last ATC and empties the journal ([`forget_after_restore`]).
//!
//! The book is changed only by the writer thread, inside a batch; if the
//! batch's commit fails, its changes are undone ([`AtcBook::rollback`]).

use std::collections::HashMap;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use vault_proto::ops::TokenStatus;

use super::records::{TokenRec, decode, encode};
use super::{ATC_LOG, META, StoreError, TOKENS};

/// Entries journaled between the starts of two folds. The journal holds at
/// most about twice this many (the fold in progress and the next), which
/// start-up replays in well under a second.
pub const FOLD_AFTER: u64 = 65_536;
/// Token records a fold rewrites per batch, in key order (so neighbours
/// share leaves): bounds what a fold adds to one commit.
const FOLD_CHUNK: usize = 256;
/// Journal rows a trim deletes per batch.
const TRIM_CHUNK: u64 = 1024;

/// `meta` key of a database whose ATCs may be behind what the schemes have
/// accepted: set in every backup's copy and by a restore, cleared by the
/// first start that has handled it ([`forget_after_restore`]). Its value
/// is the time it was set (Unix milliseconds, big-endian).
pub(crate) const ATCS_UNKNOWN: &str = "atcs_unknown";
/// Token records the restore pass rewrites per transaction.
const RESTORE_CHUNK: usize = 10_000;

/// Where the fold is.
#[derive(Debug)]
enum Fold {
    Idle,
    /// Rewriting the records of `rest` (sorted descending: popped in key
    /// order); then every row up to `upto` is covered by the records.
    Folding {
        rest: Vec<String>,
        upto: u64,
    },
    /// Deleting the rows up to `upto`.
    Trimming {
        upto: u64,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct AtcBook {
    /// Tokens whose newest ATC is in the journal and not yet in the record.
    current: HashMap<String, u16>,
    /// This batch's entries: one journal row at its end.
    pending: Vec<(String, u16)>,
    /// What undoes this batch's changes to `current`, oldest first.
    undo: Vec<(String, Option<u16>)>,
    /// The newest journal row's key (0: none yet).
    seq: u64,
    /// Entries journaled since the last fold began.
    since_fold: u64,
    fold: Fold,
    fold_after: u64,
}

/// One journal row: the ATCs one batch issued, in order.
type Row = Vec<(String, u16)>;

/// The start-up pass over a restored database (one marked
/// [`ATCS_UNKNOWN`]); returns how many tokens it covered, or `None` for a
/// database that was not restored.
///
/// A backup holds each token's ATC as of the backup, and payments made
/// after it spent higher ones that the schemes remember. Counting on from
/// the restored value would issue those ATCs a second time (DESIGN.md: no
/// ATC is ever issued twice). So every token that has a key is marked as
/// having spent its key's last ATC (`u16::MAX`) and the journal, which
/// could only bring back values as old, is emptied: the token's next
/// cryptogram queues a key refresh and falls back until it is done, and the
/// new key starts over at ATC 1 (`store::tokens::next_atc`). Tokens that
/// are not used again are never refreshed, so a restore tried on a spare
/// host does not call the schemes by itself.
///
/// Idempotent, in transactions of [`RESTORE_CHUNK`] records: a crash
/// part-way leaves the marker, and the next start runs it again. The
/// writer clears the marker with its audit record ([`super::writer`]).
pub(crate) fn forget_after_restore(db: &Database) -> Result<Option<u64>, StoreError> {
    forget_in_chunks(db, RESTORE_CHUNK)
}

fn forget_in_chunks(db: &Database, chunk_len: usize) -> Result<Option<u64>, StoreError> {
    if db
        .begin_read()?
        .open_table(META)?
        .get(ATCS_UNKNOWN)?
        .is_none()
    {
        return Ok(None);
    }
    let (mut covered, mut after) = (0u64, None::<String>);
    loop {
        let txn = db.begin_write()?;
        let more = {
            let mut tokens = txn.open_table(TOKENS)?;
            let chunk: Vec<(String, Vec<u8>)> = {
                tokens
                    .range::<&str>(super::keys_after(after.as_deref()))?
                    .take(chunk_len)
                    .map(|item| item.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
                    .collect::<Result<_, _>>()?
            };
            for (r, raw) in &chunk {
                let mut t: TokenRec = decode("token", raw)?;
                if t.status == TokenStatus::Deleted {
                    continue;
                }
                covered += 1;
                if t.atc != u16::MAX {
                    t.atc = u16::MAX;
                    tokens.insert(r.as_str(), encode(&t)?.as_slice())?;
                }
            }
            after = chunk.last().map(|(r, _)| r.clone());
            chunk.len() == chunk_len
        };
        if !more {
            txn.open_table(ATC_LOG)?.retain(|_, _| false)?;
        }
        txn.commit()?;
        if !more {
            return Ok(Some(covered));
        }
    }
}

/// Marks a database file (a backup's copy, a restored file) as holding
/// ATCs that may be behind the schemes' ([`ATCS_UNKNOWN`]).
pub(crate) fn mark_atcs_unknown(txn: &WriteTransaction) -> Result<(), StoreError> {
    let now = crate::vault::cards::now_ms();
    txn.open_table(META)?
        .insert(ATCS_UNKNOWN, now.to_be_bytes().as_slice())?;
    Ok(())
}

impl AtcBook {
    /// Replays the journal over the records (start-up).
    pub(crate) fn load(db: &Database, fold_after: u64) -> Result<AtcBook, StoreError> {
        let r = db.begin_read()?;
        let log = r.open_table(ATC_LOG)?;
        let tokens = r.open_table(TOKENS)?;
        let mut book = AtcBook::empty(fold_after);
        for item in log.iter()? {
            let (k, v) = item?;
            let row: Row = decode("atc journal", v.value())?;
            book.since_fold += row.len() as u64;
            book.current.extend(row);
            book.seq = k.value();
        }
        // Entries of tokens erased since are of no use.
        let mut gone = Vec::new();
        for r in book.current.keys() {
            if tokens.get(r.as_str())?.is_none() {
                gone.push(r.clone());
            }
        }
        for r in gone {
            book.current.remove(&r);
        }
        Ok(book)
    }

    fn empty(fold_after: u64) -> AtcBook {
        AtcBook {
            current: HashMap::new(),
            pending: Vec::new(),
            undo: Vec::new(),
            seq: 0,
            since_fold: 0,
            fold: Fold::Idle,
            fold_after,
        }
    }

    /// The token's current ATC, given the one in its record.
    pub(crate) fn get(&self, token_ref: &str, in_record: u16) -> u16 {
        self.current.get(token_ref).copied().unwrap_or(in_record)
    }

    /// Sets the token's ATC; journaled by this batch's commit.
    pub(crate) fn set(&mut self, token_ref: &str, atc: u16) {
        let before = self.current.insert(token_ref.to_owned(), atc);
        self.undo.push((token_ref.to_owned(), before));
        self.pending.push((token_ref.to_owned(), atc));
    }

    /// The token's record is erased: its journal entries are ignored from
    /// now on (and dropped by the next trim).
    pub(crate) fn forget(&mut self, token_ref: &str) {
        if let Some(before) = self.current.remove(token_ref) {
            self.undo.push((token_ref.to_owned(), Some(before)));
        }
    }

    /// The end of a batch, in its transaction: a step of the fold, then
    /// the batch's journal row.
    pub(crate) fn finish_batch(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        self.fold_step(txn)?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let row = encode(&self.pending)?;
        txn.open_table(ATC_LOG)?
            .insert(self.seq + 1, row.as_slice())?;
        Ok(())
    }

    /// The batch committed.
    pub(crate) fn committed(&mut self) {
        if !self.pending.is_empty() {
            self.seq += 1;
            self.since_fold += self.pending.len() as u64;
            self.pending.clear();
        }
        self.undo.clear();
    }

    /// The batch did not commit: `current` is as before it, and a fold in
    /// progress starts again (always safe: see [`AtcBook::fold_step`]).
    pub(crate) fn rollback(&mut self) {
        for (r, before) in self.undo.drain(..).rev() {
            match before {
                Some(v) => self.current.insert(r, v),
                None => self.current.remove(&r),
            };
        }
        self.pending.clear();
        if !matches!(self.fold, Fold::Idle) {
            self.fold = Fold::Idle;
            self.since_fold = self.since_fold.max(self.fold_after);
        }
    }

    /// One bounded step of the fold.
    ///
    /// A fold snapshots the tokens in `current` and the newest row `upto`.
    /// It writes each one's current ATC into its record and drops it from
    /// `current` (a token changed again afterwards comes back with a row
    /// after `upto`). Once all are written, no token's newest entry is in a
    /// row up to `upto` unless its record has it, so those rows go. A fold
    /// cut short by a failed commit is simply begun again: the records it
    /// already wrote hold the newest ATCs of tokens no longer in `current`.
    fn fold_step(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        match &mut self.fold {
            Fold::Idle => {
                if self.since_fold < self.fold_after {
                    return Ok(());
                }
                let mut rest: Vec<String> = self.current.keys().cloned().collect();
                rest.sort_unstable_by(|a, b| b.cmp(a));
                self.fold = Fold::Folding {
                    rest,
                    upto: self.seq,
                };
                self.since_fold = 0;
            }
            Fold::Folding { rest, upto } => {
                let mut tokens = txn.open_table(TOKENS)?;
                for _ in 0..FOLD_CHUNK {
                    let Some(r) = rest.pop() else { break };
                    let Some(atc) = self.current.remove(&r) else {
                        continue;
                    };
                    let raw = tokens.get(r.as_str())?.map(|v| v.value().to_vec());
                    if let Some(raw) = raw {
                        let mut t: TokenRec = decode("token", &raw)?;
                        if t.atc != atc {
                            t.atc = atc;
                            tokens.insert(r.as_str(), encode(&t)?.as_slice())?;
                        }
                    }
                    self.undo.push((r, Some(atc)));
                }
                if rest.is_empty() {
                    self.fold = Fold::Trimming { upto: *upto };
                }
            }
            Fold::Trimming { upto } => {
                let mut log = txn.open_table(ATC_LOG)?;
                let first = log.first()?.map(|(k, _)| k.value());
                match first {
                    // Rows are numbered without gaps.
                    Some(first) if first <= *upto => {
                        let last = (*upto).min(first + TRIM_CHUNK - 1);
                        log.retain_in(first..=last, |_, _| false)?;
                        if last == *upto {
                            tracing::debug!(
                                through_row = *upto,
                                "ATC journal folded into the token records and trimmed"
                            );
                            self.fold = Fold::Idle;
                        }
                    }
                    _ => self.fold = Fold::Idle,
                }
            }
        }
        Ok(())
    }

    /// Tokens whose ATC is only in the journal (for tests and stats).
    #[cfg(test)]
    pub(crate) fn unfolded(&self) -> usize {
        self.current.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::TokenRec;

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(ATC_LOG).unwrap();
        w.open_table(TOKENS).unwrap();
        w.commit().unwrap();
        (dir, db)
    }

    fn token(atc: u16) -> TokenRec {
        TokenRec {
            alias: "a".into(),
            tenant: "t".into(),
            scheme: "visa".into(),
            token_ct: vec![1, 2, 3],
            token_last4: "0000".into(),
            exp_month: 1,
            exp_year: 2030,
            par: None,
            token_requestor_id: "trid".into(),
            status: TokenStatus::Active,
            atc,
            updated_at: 0,
            refresh_pending: false,
            key: None,
        }
    }

    fn put_tokens(db: &Database, n: usize) {
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(TOKENS).unwrap();
            for i in 0..n {
                t.insert(
                    format!("tok{i:05}").as_str(),
                    encode(&token(0)).unwrap().as_slice(),
                )
                .unwrap();
            }
        }
        w.commit().unwrap();
    }

    /// One batch: `f` on the book, then its end, then commit (or not).
    fn batch(db: &Database, book: &mut AtcBook, commit: bool, f: impl FnOnce(&mut AtcBook)) {
        let w = db.begin_write().unwrap();
        f(book);
        book.finish_batch(&w).unwrap();
        if commit {
            w.commit().unwrap();
            book.committed();
        } else {
            w.abort().unwrap();
            book.rollback();
        }
    }

    fn record_atc(db: &Database, r: &str) -> u16 {
        let rt = db.begin_read().unwrap();
        let t = rt.open_table(TOKENS).unwrap();
        let raw = t.get(r).unwrap().unwrap();
        decode::<TokenRec>("token", raw.value()).unwrap().atc
    }

    fn rows(db: &Database) -> u64 {
        use redb::ReadableTableMetadata;
        db.begin_read()
            .unwrap()
            .open_table(ATC_LOG)
            .unwrap()
            .len()
            .unwrap()
    }

    #[test]
    fn replay_gives_the_newest_atc_and_last_entry_wins() {
        let (_d, db) = db();
        put_tokens(&db, 3);
        let mut book = AtcBook::empty(u64::MAX);
        for atc in 1..=5 {
            batch(&db, &mut book, true, |b| {
                b.set("tok00000", atc);
                b.set("tok00001", atc * 2);
            });
        }
        // A key refresh resets to 0: later than the higher entries.
        batch(&db, &mut book, true, |b| b.set("tok00001", 0));
        // An uncommitted batch leaves nothing behind.
        batch(&db, &mut book, false, |b| {
            b.set("tok00000", 99);
            b.set("tok00002", 99);
        });
        assert_eq!(book.get("tok00000", 0), 5);
        assert_eq!(book.get("tok00002", 7), 7);
        let again = AtcBook::load(&db, u64::MAX).unwrap();
        assert_eq!(again.get("tok00000", 0), 5);
        assert_eq!(again.get("tok00001", 0), 0);
        assert_eq!(again.get("tok00002", 7), 7);
        assert_eq!(again.seq, 6);
        // Records are untouched until a fold.
        assert_eq!(record_atc(&db, "tok00000"), 0);
    }

    #[test]
    fn a_fold_moves_every_atc_into_the_records_and_trims_the_journal() {
        let (_d, db) = db();
        put_tokens(&db, 1000);
        let mut book = AtcBook::empty(2000);
        let mut want = vec![0u16; 1000];
        let mut i = 0usize;
        // Enough batches to fold at least twice, with issues during folds.
        for round in 0..400 {
            batch(&db, &mut book, true, |b| {
                for _ in 0..16 {
                    let k = (i * 7919) % 1000;
                    want[k] += 1;
                    b.set(&format!("tok{k:05}"), want[k]);
                    i += 1;
                }
            });
            // Now and then a batch fails, fold step included.
            if round % 37 == 0 {
                batch(&db, &mut book, false, |b| b.set("tok00001", 60_000));
            }
            let replayed = AtcBook::load(&db, u64::MAX).unwrap();
            for k in [0usize, 1, 500, 999, (i * 7919) % 1000] {
                let r = format!("tok{k:05}");
                assert_eq!(
                    replayed.get(&r, record_atc(&db, &r)),
                    want[k],
                    "{r} after {round}"
                );
            }
        }
        // Quiet batches finish the fold in progress.
        for _ in 0..20 {
            batch(&db, &mut book, true, |_| {});
        }
        assert!(rows(&db) < 200, "journal trimmed: {} rows", rows(&db));
        assert!((0..1000).all(|k| record_atc(&db, &format!("tok{k:05}")) > 0));
        let replayed = AtcBook::load(&db, u64::MAX).unwrap();
        for (k, w) in want.iter().enumerate() {
            let r = format!("tok{k:05}");
            assert_eq!(replayed.get(&r, record_atc(&db, &r)), *w, "{r}");
        }
        // Folded tokens left the book; what is left is newer than the fold.
        assert!(book.unfolded() < 1000);
    }

    #[test]
    fn forgotten_tokens_are_not_replayed() {
        let (_d, db) = db();
        put_tokens(&db, 2);
        let mut book = AtcBook::empty(u64::MAX);
        batch(&db, &mut book, true, |b| b.set("tok00000", 3));
        let w = db.begin_write().unwrap();
        w.open_table(TOKENS).unwrap().remove("tok00000").unwrap();
        book.forget("tok00000");
        book.finish_batch(&w).unwrap();
        w.commit().unwrap();
        book.committed();
        assert_eq!(book.get("tok00000", 0), 0);
        assert_eq!(AtcBook::load(&db, u64::MAX).unwrap().unfolded(), 0);
    }

    /// The restore pass covers every token in chunks (here 4 records per
    /// transaction, 9 tokens, one deleted), takes each to ATC 65,535 and
    /// empties the journal, so a replay brings no older value back; a
    /// database without the mark is left alone.
    #[test]
    fn the_restore_pass_retires_every_atc_in_chunks() {
        let (_dir, db) = db();
        put_tokens(&db, 9);
        {
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(TOKENS).unwrap();
                let mut gone = token(3);
                gone.status = TokenStatus::Deleted;
                t.insert("tok00004", encode(&gone).unwrap().as_slice())
                    .unwrap();
            }
            w.open_table(META).unwrap();
            w.commit().unwrap();
        }
        let mut book = AtcBook::load(&db, FOLD_AFTER).unwrap();
        batch(&db, &mut book, true, |b| {
            b.set("tok00001", 7);
            b.set("tok00008", 9);
        });
        assert_eq!(forget_in_chunks(&db, 4).unwrap(), None, "not restored");
        assert_eq!(record_atc(&db, "tok00000"), 0);
        assert_eq!(rows(&db), 1);

        let w = db.begin_write().unwrap();
        mark_atcs_unknown(&w).unwrap();
        w.commit().unwrap();
        assert_eq!(forget_in_chunks(&db, 4).unwrap(), Some(8));
        assert_eq!(rows(&db), 0, "journal emptied");
        for i in (0..9).filter(|i| *i != 4) {
            assert_eq!(
                record_atc(&db, &format!("tok{i:05}")),
                u16::MAX,
                "tok{i:05}"
            );
        }
        assert_eq!(record_atc(&db, "tok00004"), 3, "a deleted token is left");
        let book = AtcBook::load(&db, FOLD_AFTER).unwrap();
        assert_eq!(book.get("tok00001", u16::MAX), u16::MAX);
        // Until the writer clears the mark, the pass runs again (and
        // changes nothing more).
        assert_eq!(forget_in_chunks(&db, 8).unwrap(), Some(8));
    }
}
