//! Backup and restore of the database and its PAN slot file.
//!
//! A backup runs while the daemon serves: one redb read transaction is the
//! snapshot, every table is copied from it into a new database, and each
//! PAN slot the snapshot references is copied to the same position of a new
//! slot file. The slot file is held for the duration ([`SlotFile::hold`]):
//! a slot freed after the snapshot began keeps its bytes until the copy is
//! done. Both files are written under temporary names, synced, then renamed.
//!
//! A restore (daemon stopped) copies a backup pair over `[storage].path`
//! the same way. Both mark the copy: its ATCs are behind as soon as a
//! payment follows, and the next start deals with that
//! ([`super::atc::forget_after_restore`]). Keys are not in the backup:
//! they stay in the HSM, whose token must be backed up on its own.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::records::{AliasRec, decode};
use super::slots::{SLOT, SlotFile};
use super::{
    ACTIVE_RETAINED, ALIASES, ATC_LOG, AUDIT, AUDIT_SEALS, EVENTS, FINGERPRINTS, JOB_QUEUE, JOBS,
    META, PARKED, PARKED_BY_EXPIRY, RETAINED, RedbStore, SCHEMA_VERSION, StoreError, StoreResult,
    TOKENS, TRANSACTIONS, TRANSACTIONS_BY_EXPIRY, slot_path,
};

/// What a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSummary {
    pub aliases: u64,
    pub pans: u64,
    /// Sequence number of the last audit record in the copy.
    pub audit_seq: u64,
}

/// Consistent copies of the store while it serves.
pub trait BackupStore {
    /// Writes a copy of the store to `dest` (and `dest` + ".pans"). `dest`
    /// must be absolute and neither file may exist.
    fn backup(&self, dest: &Path) -> StoreResult<BackupSummary>;
}

impl BackupStore for RedbStore {
    fn backup(&self, dest: &Path) -> StoreResult<BackupSummary> {
        backup(self.db(), self.slots(), dest)
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("backup: {what} {}: {e}", path.display()))
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    s.into()
}

/// Creates `path` (mode 0600); it must not exist.
fn create_private(path: &Path) -> StoreResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("cannot create", path, e))
}

/// Removes the temporary files of an attempt that did not finish.
struct TmpFiles(Vec<PathBuf>);

impl Drop for TmpFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sync_dir(path: &Path) -> StoreResult<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync directory", dir, e))
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &ReadTransaction,
    w: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> StoreResult<()> {
    let src = r.open_table(def)?;
    let mut dst = w.open_table(def)?;
    for item in src.iter()? {
        let (k, v) = item?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// The backup itself (see the module documentation).
pub fn backup(db: &Database, slots: &SlotFile, dest: &Path) -> StoreResult<BackupSummary> {
    let refuse = |m: String| StoreError::Unavailable(format!("backup: {m}"));
    if !dest.is_absolute() {
        return Err(refuse(format!(
            "{} is not an absolute path (the daemon writes it)",
            dest.display()
        )));
    }
    let pans = slot_path(dest);
    for p in [dest, pans.as_path()] {
        if p.exists() {
            return Err(refuse(format!(
                "{} exists; choose a new file name",
                p.display()
            )));
        }
    }
    let (tmp_db, tmp_pans) = (tmp_path(dest), tmp_path(&pans));
    let pan_file = create_private(&tmp_pans)?;
    let mut cleanup = TmpFiles(vec![tmp_pans.clone()]);
    let db_file = create_private(&tmp_db)?;
    cleanup.0.push(tmp_db.clone());

    // Hold the slots first, then take the snapshot: every slot it
    // references keeps its bytes until the copy is complete.
    let hold = slots.hold();
    let r = db.begin_read()?;
    let backend = redb::backends::FileBackend::new(db_file)
        .map_err(|e| refuse(format!("cannot create {}: {e}", tmp_db.display())))?;
    let out = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| refuse(format!("cannot create {}: {e}", tmp_db.display())))?;
    let w = out.begin_write()?;
    copy_table(&r, &w, ALIASES)?;
    copy_table(&r, &w, FINGERPRINTS)?;
    copy_table(&r, &w, TOKENS)?;
    copy_table(&r, &w, ATC_LOG)?;
    copy_table(&r, &w, PARKED)?;
    copy_table(&r, &w, PARKED_BY_EXPIRY)?;
    copy_table(&r, &w, JOBS)?;
    copy_table(&r, &w, JOB_QUEUE)?;
    copy_table(&r, &w, TRANSACTIONS)?;
    copy_table(&r, &w, TRANSACTIONS_BY_EXPIRY)?;
    copy_table(&r, &w, EVENTS)?;
    copy_table(&r, &w, AUDIT)?;
    copy_table(&r, &w, AUDIT_SEALS)?;
    copy_table(&r, &w, META)?;
    copy_table(&r, &w, RETAINED)?;
    copy_table(&r, &w, ACTIVE_RETAINED)?;
    // The copy's ATCs fall behind with the first payment after it.
    super::atc::mark_atcs_unknown(&w)?;

    let mut summary = BackupSummary::default();
    for item in r.open_table(ALIASES)?.iter()? {
        let (_, v) = item?;
        summary.aliases += 1;
        let rec: AliasRec = decode("alias", v.value())?;
        let Some(slot) = rec.pan_slot else { continue };
        // Under the hold a referenced slot cannot have been zeroed.
        let ct = slots.get(slot)?.ok_or_else(|| {
            StoreError::Corrupt("a PAN slot the snapshot references is empty".into())
        })?;
        let mut buf = [0u8; SLOT];
        buf[0] = ct.len() as u8;
        buf[1..=ct.len()].copy_from_slice(&ct);
        pan_file
            .write_all_at(&buf, slot * SLOT as u64)
            .map_err(|e| io("cannot write", &tmp_pans, e))?;
        buf.fill(0);
        summary.pans += 1;
    }
    summary.audit_seq = super::newest_seq(&r.open_table(AUDIT)?)?;
    drop(r);
    drop(hold);
    w.commit()?;
    drop(out);
    pan_file
        .sync_all()
        .map_err(|e| io("cannot sync", &tmp_pans, e))?;
    std::fs::rename(&tmp_pans, &pans).map_err(|e| io("cannot rename", &tmp_pans, e))?;
    std::fs::rename(&tmp_db, dest).map_err(|e| io("cannot rename", &tmp_db, e))?;
    cleanup.0.clear();
    sync_dir(dest)?;
    Ok(summary)
}

/// Checks that `src` is a vaultd database this build understands (and has
/// its slot file), then copies both over `dest` and `dest` + ".pans":
/// temporary names, sync, rename (slot file first). The copy is marked as
/// holding ATCs the schemes may have passed (`atc::ATCS_UNKNOWN`), so the
/// next start retires them. The daemon must be stopped; re-running an
/// interrupted restore is safe.
pub fn restore(src: &Path, dest: &Path) -> StoreResult<BackupSummary> {
    let refuse = |m: String| StoreError::Unavailable(format!("restore: {m}"));
    let src_pans = slot_path(src);
    if !src_pans.exists() {
        return Err(refuse(format!(
            "{} is missing (a backup is the database and its .pans file)",
            src_pans.display()
        )));
    }
    let mut summary = BackupSummary::default();
    {
        let db = redb::ReadOnlyDatabase::open(src)
            .map_err(|e| refuse(format!("cannot open {}: {e}", src.display())))?;
        let r = db.begin_read()?;
        let version = r
            .open_table(META)?
            .get("schema_version")?
            .and_then(|v| v.value().try_into().ok().map(u32::from_be_bytes));
        // Version 1 is upgraded when the daemon opens it.
        if !version.is_some_and(|v| (1..=SCHEMA_VERSION).contains(&v)) {
            return Err(StoreError::Corrupt(format!(
                "{} is not a vaultd database of schema version 1 to {SCHEMA_VERSION}",
                src.display()
            )));
        }
        summary.aliases = r.open_table(ALIASES)?.len()?;
        summary.pans = r.open_table(RETAINED)?.len()?;
        summary.audit_seq = super::newest_seq(&r.open_table(AUDIT)?)?;
    }
    let dest_pans = slot_path(dest);
    for (from, to) in [(src_pans.as_path(), dest_pans.as_path()), (src, dest)] {
        let tmp = tmp_path(to);
        // An interrupted restore may have left its temporary file.
        let _ = std::fs::remove_file(&tmp);
        let mut out = create_private(&tmp)?;
        let mut input = File::open(from).map_err(|e| io("cannot open", from, e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| io("cannot copy", from, e))?;
        out.sync_all().map_err(|e| io("cannot sync", &tmp, e))?;
        drop(out);
        if to == dest {
            // A backup made by vaultd is marked already; a cold copy or a
            // file system snapshot is not.
            let db = Database::open(&tmp)
                .map_err(|e| refuse(format!("cannot open {}: {e}", tmp.display())))?;
            let w = db.begin_write()?;
            super::atc::mark_atcs_unknown(&w)?;
            w.commit()?;
        }
        std::fs::rename(&tmp, to).map_err(|e| io("cannot rename", &tmp, e))?;
    }
    sync_dir(dest)?;
    Ok(summary)
}
