//! Fault injection for tests (feature `fault-injection` or test builds): a
//! redb [`StorageBackend`] around another one that fails the Nth write or
//! sync, the way redb's own `tests/crash_consistency.rs` tests itself.
//! After the fault the disk is "gone": every later write, sync and resize
//! fails too, as after a crash, so what the inner backend holds is exactly
//! what a crash at that point would leave (every write issued before the
//! fault reached the disk). Never compiled into a production build.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

/// Which operation the armed fault waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    Write,
    Sync,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    op: DiskOp,
    /// The operation count (of `op`, over the backend's lifetime) that fails.
    at: u64,
    /// A failing write first writes half its bytes (a torn write).
    torn: bool,
}

/// The switchboard a test holds.
#[derive(Debug, Default)]
pub struct DiskFaults {
    writes: AtomicU64,
    syncs: AtomicU64,
    tripped: AtomicBool,
    plan: Mutex<Option<Plan>>,
}

impl DiskFaults {
    /// Writes seen so far (including the failed one).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Syncs seen so far (including the failed one).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Whether the fault has happened.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// The `nth` `op` from now (1 = the next one) fails, and the disk with
    /// it. With `torn`, a failing write leaves its first half behind.
    pub fn fail_nth(&self, op: DiskOp, nth: u64, torn: bool) {
        let seen = match op {
            DiskOp::Write => self.writes(),
            DiskOp::Sync => self.syncs(),
        };
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(Plan {
            op,
            at: seen + nth.max(1),
            torn,
        });
    }

    /// Disarms a fault that has not tripped yet (a tripped disk stays gone).
    pub fn disarm(&self) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Counts one `op` and says whether it must fail (and whether torn).
    fn check(&self, op: DiskOp) -> Result<(), bool> {
        if self.tripped() {
            return Err(false);
        }
        let n = match op {
            DiskOp::Write => self.writes.fetch_add(1, Ordering::SeqCst) + 1,
            DiskOp::Sync => self.syncs.fetch_add(1, Ordering::SeqCst) + 1,
        };
        let plan = *self.plan.lock().unwrap_or_else(|p| p.into_inner());
        match plan {
            Some(p) if p.op == op && n == p.at => {
                self.tripped.store(true, Ordering::SeqCst);
                Err(p.torn)
            }
            _ => Ok(()),
        }
    }
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected disk fault")
}

/// A backend that is `inner` until the armed fault trips.
#[derive(Debug)]
pub struct FaultyBackend<B: StorageBackend> {
    inner: B,
    faults: Arc<DiskFaults>,
}

impl<B: StorageBackend> FaultyBackend<B> {
    /// Wraps `inner`; the returned switchboard controls the faults.
    pub fn new(inner: B) -> (FaultyBackend<B>, Arc<DiskFaults>) {
        let faults = Arc::new(DiskFaults::default());
        (
            FaultyBackend {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl<B: StorageBackend> StorageBackend for FaultyBackend<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.faults.tripped() {
            return Err(injected());
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        match self.faults.check(DiskOp::Sync) {
            Ok(()) => self.inner.sync_data(),
            Err(_) => Err(injected()),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        match self.faults.check(DiskOp::Write) {
            Ok(()) => self.inner.write(offset, data),
            Err(torn) => {
                if torn {
                    let _ = self.inner.write(offset, &data[..data.len() / 2]);
                }
                Err(injected())
            }
        }
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    // Locks pass through: the file backend's locks keep a second process out.
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;

    #[test]
    fn the_nth_write_fails_and_the_disk_stays_gone() {
        let (b, faults) = FaultyBackend::new(InMemoryBackend::new());
        b.set_len(16).unwrap();
        faults.fail_nth(DiskOp::Write, 2, true);
        b.write(0, &[1; 8]).unwrap();
        assert!(b.write(8, &[2; 8]).is_err());
        assert!(faults.tripped());
        let mut out = [0u8; 16];
        b.read(0, &mut out).unwrap();
        assert_eq!(&out[..8], &[1; 8]);
        assert_eq!(&out[8..], &[2, 2, 2, 2, 0, 0, 0, 0], "torn: half written");
        assert!(b.write(0, &[3; 1]).is_err(), "nothing after the fault");
        assert!(b.sync_data().is_err());
        assert!(b.set_len(32).is_err());
    }

    #[test]
    fn the_nth_sync_fails() {
        let (b, faults) = FaultyBackend::new(InMemoryBackend::new());
        faults.fail_nth(DiskOp::Sync, 3, false);
        b.sync_data().unwrap();
        b.sync_data().unwrap();
        assert!(b.sync_data().is_err());
        assert_eq!(faults.syncs(), 3);
        assert_eq!(faults.writes(), 0);
    }
}
