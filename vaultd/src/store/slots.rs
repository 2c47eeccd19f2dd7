//! The PAN slot file: sealed PANs live here, in fixed 64-byte slots, not in
//! redb. redb copies pages on write, so an erased value would linger in
//! freed pages of the database file; a slot is overwritten with zeros in
//! place once the commit that erased it is durable, so an erased PAN's
//! ciphertext is gone from the disk, not just unreferenced.
//!
//! Order of writes: a new slot is written and synced before the commit that
//! references it; a freed slot is zeroed and synced after the commit that
//! dropped it. At start-up every slot no alias references is zeroed, which
//! finishes any erasure a crash interrupted.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use super::{StoreError, StoreResult};

/// Bytes per slot: one length byte and up to 63 bytes of sealed PAN
/// (`version 4 ‖ iv 12 ‖ up to 19 digits ‖ tag 16` = 51 at most).
pub const SLOT: usize = 64;

/// Slots the file grows by at a time, written with zeros and synced. New
/// PANs then land in blocks the file system has already allocated, in a
/// file whose size does not change, so the sync before each commit writes
/// data only, without a journal commit for the file's new size and blocks.
const GROW: u64 = 4096;

pub struct SlotFile {
    file: File,
    state: Mutex<State>,
}

struct State {
    /// Slots in the file.
    len: u64,
    free: Vec<u64>,
    /// Backups in progress: while any runs, freed slots are neither zeroed
    /// nor reused, so every slot its snapshot references keeps its bytes.
    holds: usize,
    /// Slots freed while held, zeroed when the last hold ends.
    deferred: Vec<u64>,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("PAN slot file: {e}"))
}

impl SlotFile {
    /// Opens (or creates, mode 0600) the slot file and zeroes every slot not
    /// in `used`.
    pub fn open(path: &Path, used: &HashSet<u64>) -> StoreResult<SlotFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let len = bytes / SLOT as u64;
        let mut free = Vec::new();
        let mut buf = [0u8; SLOT];
        let mut zeroed = 0;
        for slot in (0..len).rev() {
            if used.contains(&slot) {
                continue;
            }
            file.read_exact_at(&mut buf, slot * SLOT as u64)
                .map_err(io)?;
            if buf.iter().any(|b| *b != 0) {
                file.write_all_at(&[0u8; SLOT], slot * SLOT as u64)
                    .map_err(io)?;
                zeroed += 1;
            }
            free.push(slot);
        }
        if zeroed > 0 {
            file.sync_data().map_err(io)?;
            tracing::info!(
                slots = zeroed,
                "finished PAN erasures interrupted by a crash"
            );
        }
        Ok(SlotFile {
            file,
            state: Mutex::new(State {
                len,
                free,
                holds: 0,
                deferred: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a free slot for `sealed` and returns it with the bytes to
    /// write there ([`SlotFile::write_all`] writes a batch's slots at once).
    pub fn alloc(&self, sealed: &[u8]) -> StoreResult<(u64, [u8; SLOT])> {
        if sealed.is_empty() || sealed.len() >= SLOT {
            return Err(StoreError::Corrupt(format!(
                "sealed PAN of {} bytes does not fit a slot",
                sealed.len()
            )));
        }
        let slot = {
            let mut st = self.state();
            if st.free.is_empty() {
                self.grow(&mut st)?;
            }
            st.free
                .pop()
                .ok_or_else(|| io(std::io::ErrorKind::StorageFull.into()))?
        };
        let mut buf = [0u8; SLOT];
        buf[0] = sealed.len() as u8;
        buf[1..=sealed.len()].copy_from_slice(sealed);
        Ok((slot, buf))
    }

    /// Adds [`GROW`] zeroed slots at the end of the file, synced, to the
    /// free list (lowest first).
    fn grow(&self, st: &mut State) -> StoreResult<()> {
        let zeros = vec![0u8; GROW as usize * SLOT];
        self.file
            .write_all_at(&zeros, st.len * SLOT as u64)
            .map_err(io)?;
        self.sync()?;
        st.free.extend((st.len..st.len + GROW).rev());
        st.len += GROW;
        Ok(())
    }

    /// Writes allocated slots, neighbours in one call each, and syncs.
    pub fn write_all(&self, slots: &mut [(u64, [u8; SLOT])]) -> StoreResult<()> {
        slots.sort_unstable_by_key(|(s, _)| *s);
        let mut run: Vec<u8> = Vec::with_capacity(slots.len() * SLOT);
        let mut start = None;
        let mut next = 0;
        for (slot, bytes) in slots.iter() {
            if start.is_some() && *slot != next {
                let at = start.unwrap_or(0) * SLOT as u64;
                self.file.write_all_at(&run, at).map_err(io)?;
                run.clear();
                start = None;
            }
            if start.is_none() {
                start = Some(*slot);
            }
            run.extend_from_slice(bytes);
            next = slot + 1;
        }
        if let Some(s) = start {
            self.file.write_all_at(&run, s * SLOT as u64).map_err(io)?;
        }
        run.fill(0);
        self.sync()
    }

    /// The sealed PAN in `slot`, if the slot holds one.
    pub fn get(&self, slot: u64) -> StoreResult<Option<Vec<u8>>> {
        let mut buf = [0u8; SLOT];
        match self.file.read_exact_at(&mut buf, slot * SLOT as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let n = usize::from(buf[0]);
        if n == 0 || n >= SLOT {
            return Ok(None);
        }
        Ok(Some(buf[1..=n].to_vec()))
    }

    pub fn sync(&self) -> StoreResult<()> {
        self.file.sync_data().map_err(io)
    }

    /// Zeroes `slots` in place, syncs, and makes them free again (later,
    /// when a backup holds the file: see [`SlotFile::hold`]).
    pub fn erase(&self, slots: &[u64]) -> StoreResult<()> {
        if slots.is_empty() {
            return Ok(());
        }
        {
            let mut st = self.state();
            if st.holds > 0 {
                st.deferred.extend_from_slice(slots);
                return Ok(());
            }
        }
        self.zero(slots)
    }

    /// Keeps every slot's bytes as they are (freed slots are not zeroed nor
    /// reused) until the returned guard drops. Taken before a backup's read
    /// transaction begins, so each slot that snapshot references can still
    /// be read: an erasure committed meanwhile is finished when the guard drops.
    pub fn hold(&self) -> SlotHold<'_> {
        self.state().holds += 1;
        SlotHold { file: self }
    }

    fn release(&self) {
        let deferred = {
            let mut st = self.state();
            st.holds = st.holds.saturating_sub(1);
            if st.holds > 0 {
                return;
            }
            std::mem::take(&mut st.deferred)
        };
        if let Err(e) = self.zero(&deferred) {
            // Start-up zeroes every unreferenced slot; nothing is lost.
            tracing::error!(error = %e, "could not zero PAN slots freed during a backup");
        }
    }

    fn zero(&self, slots: &[u64]) -> StoreResult<()> {
        if slots.is_empty() {
            return Ok(());
        }
        for s in slots {
            self.file
                .write_all_at(&[0u8; SLOT], s * SLOT as u64)
                .map_err(io)?;
        }
        self.sync()?;
        self.state().free.extend_from_slice(slots);
        Ok(())
    }
}

/// See [`SlotFile::hold`].
pub struct SlotHold<'a> {
    file: &'a SlotFile,
}

impl Drop for SlotHold<'_> {
    fn drop(&mut self) {
        self.file.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_grows_by_zeroed_slots_taken_lowest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pans");
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let f = SlotFile::open(&path, &HashSet::new()).unwrap();
        let mut batch = Vec::new();
        for want in 0..3 {
            let (slot, bytes) = f.alloc(b"sealed").unwrap();
            assert_eq!(slot, want);
            batch.push((slot, bytes));
        }
        assert_eq!(size(&path), GROW * SLOT as u64, "grown once, ahead of use");
        f.write_all(&mut batch).unwrap();
        assert_eq!(f.get(1).unwrap().as_deref(), Some(&b"sealed"[..]));
        assert_eq!(f.get(3).unwrap(), None, "the rest is zeros");
        for _ in 3..GROW {
            f.alloc(b"x").unwrap();
        }
        assert_eq!(f.alloc(b"y").unwrap().0, GROW);
        assert_eq!(size(&path), 2 * GROW * SLOT as u64);
        drop(f);

        // Reopened: the written slots are kept, the zeroed tail is free.
        let used: HashSet<u64> = [0, 1, 2].into();
        let f = SlotFile::open(&path, &used).unwrap();
        assert_eq!(f.get(2).unwrap().as_deref(), Some(&b"sealed"[..]));
        assert_eq!(f.alloc(b"z").unwrap().0, 3);
        assert_eq!(size(&path), 2 * GROW * SLOT as u64, "no growth while free");
    }
}
