//! Session copies of the keys the hot path uses, one set per thread.
//!
//! Every use of a token object costs SoftHSM2 a file check (open, `fcntl`
//! lock, read of the object's generation) and a decryption of the key value;
//! a session object lives in memory only. So each HSM thread copies a key it
//! uses into a session object once (`C_CopyObject` with `CKA_TOKEN` false:
//! still sensitive, non-extractable, private, with the same usage flags) and
//! uses the copy from then on. Copies vanish with their session, so a lost
//! session (HSM restart, fault) also drops them; this module forgets them at
//! the same moment.
//!
//! A copy must never outlive a change of its key: [`KeyEpochs`] records which
//! labels were destroyed or replaced, and when, and a copy made before the
//! change is thrown away at its next use. Which keys are copied is the
//! caller's choice (`KeyRef::copyable`: the vault's own keys).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::errors::CallResult;

/// Above this many copies a thread destroys its least recently used quarter
/// (SoftHSM2 spends about 8 KB per session object). Only the vault's own
/// keys are copied, so this is a guard, not a working-set size.
const MAX_COPIES: usize = 64;
/// Above this many remembered changes the record is reset and every copy
/// made before the reset is treated as stale.
const MAX_CHANGES: usize = 65_536;

/// When labels last changed, for one HSM instance.
#[derive(Default)]
pub(crate) struct KeyEpochs {
    /// Bumped (under `changes`' lock) by every change.
    epoch: AtomicU64,
    changes: Mutex<Changes>,
}

#[derive(Default)]
struct Changes {
    /// Label → epoch of its last destruction or replacement.
    by_label: HashMap<String, u64>,
    /// Copies made before this epoch are stale (the map was reset then).
    floor: u64,
}

impl KeyEpochs {
    /// Records that `label`'s object was destroyed or replaced. Call it
    /// *after* the token changed, so no copy made after the mark can be of
    /// the old object.
    pub(crate) fn changed(&self, label: &str) {
        let mut c = lock(&self.changes);
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if c.by_label.len() >= MAX_CHANGES {
            c.by_label.clear();
            c.floor = now;
        }
        c.by_label.insert(label.to_owned(), now);
    }

    fn current(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether a copy of `label` made at `made` is still of the live object;
    /// if so, the epoch it is now known good up to.
    fn still_good(&self, label: &str, made: u64) -> Option<u64> {
        let now = self.current();
        if now == made {
            return Some(made);
        }
        // Every change up to `now` finished its insert under this lock.
        let c = lock(&self.changes);
        if made < c.floor || c.by_label.get(label).is_some_and(|&at| at > made) {
            None
        } else {
            Some(now)
        }
    }
}

struct Copy {
    handle: ObjectHandle,
    /// Epoch up to which this copy is known to match its token object.
    good_to: u64,
    last_used: u64,
}

#[derive(Default)]
struct ThreadCopies {
    by_label: HashMap<String, Copy>,
    tick: u64,
}

thread_local! {
    /// This thread's copies, per HSM instance (almost always one).
    static COPIES: RefCell<Vec<(u64, ThreadCopies)>> = const { RefCell::new(Vec::new()) };
}

/// The handle of this thread's copy of `label`, made from the token object
/// `original()` returns when there is none (or it is stale).
pub(crate) fn get_or_copy(
    instance: u64,
    epochs: &KeyEpochs,
    session: &Session,
    label: &str,
    original: impl FnOnce() -> CallResult<ObjectHandle>,
) -> CallResult<ObjectHandle> {
    let cached = with_copies(instance, |c| {
        c.tick += 1;
        let tick = c.tick;
        let copy = c.by_label.get_mut(label)?;
        copy.last_used = tick;
        Some((copy.handle, copy.good_to))
    });
    let stale = match cached {
        Some((handle, made)) => match epochs.still_good(label, made) {
            Some(good_to) => {
                with_copies(instance, |c| {
                    if let Some(copy) = c.by_label.get_mut(label) {
                        copy.good_to = good_to;
                    }
                });
                return Ok(handle);
            }
            None => Some(handle),
        },
        None => None,
    };
    if let Some(old) = stale {
        forget_one(instance, label);
        // The object may already be gone with its key; either way it is
        // no longer used.
        let _ = session.destroy_object(old);
    }
    // Read the epoch before looking at the token: a change racing this copy
    // is then newer than the copy, which is thrown away at its next use.
    let made = epochs.current();
    let token_object = original()?;
    let handle = session.copy_object(token_object, &[Attribute::Token(false)])?;
    let evicted = with_copies(instance, |c| {
        let tick = c.tick;
        c.by_label.insert(
            label.to_owned(),
            Copy {
                handle,
                good_to: made,
                last_used: tick,
            },
        );
        if c.by_label.len() <= MAX_COPIES {
            return Vec::new();
        }
        let mut ages: Vec<(u64, String)> = c
            .by_label
            .iter()
            .map(|(l, copy)| (copy.last_used, l.clone()))
            .collect();
        ages.sort_unstable();
        ages.truncate(MAX_COPIES / 4);
        ages.into_iter()
            .filter_map(|(_, l)| c.by_label.remove(&l).map(|copy| copy.handle))
            .collect()
    });
    for old in evicted {
        let _ = session.destroy_object(old);
    }
    Ok(handle)
}

/// Drops this thread's copy of `label` (its handle went stale) and destroys
/// it if it still exists.
pub(crate) fn evict(instance: u64, session: &Session, label: &str) {
    if let Some(handle) = forget_one(instance, label) {
        let _ = session.destroy_object(handle);
    }
}

fn forget_one(instance: u64, label: &str) -> Option<ObjectHandle> {
    with_copies(instance, |c| {
        c.by_label.remove(label).map(|copy| copy.handle)
    })
}

/// Forgets every copy of this thread for `instance`: its session is gone,
/// and the copies with it.
pub(crate) fn forget_thread(instance: u64) {
    // `try_with`: during thread teardown the thread-local may be gone.
    let _ = COPIES.try_with(|cell| {
        if let Ok(mut all) = cell.try_borrow_mut() {
            all.retain(|(id, _)| *id != instance);
        }
    });
}

fn with_copies<T>(instance: u64, f: impl FnOnce(&mut ThreadCopies) -> T) -> T {
    COPIES.with(|cell| {
        let mut all = cell.borrow_mut();
        let idx = match all.iter().position(|(id, _)| *id == instance) {
            Some(i) => i,
            None => {
                all.push((instance, ThreadCopies::default()));
                all.len() - 1
            }
        };
        f(&mut all[idx].1)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves a consistent map (single inserts).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_made_before_a_change_of_its_label_is_stale() {
        let e = KeyEpochs::default();
        let made = e.current();
        assert_eq!(e.still_good("nt.a", made), Some(made));
        e.changed("nt.b");
        // Another label changed: still good, now known good to the new epoch.
        let good_to = e.still_good("nt.a", made).expect("unrelated change");
        assert!(good_to > made);
        e.changed("nt.a");
        assert_eq!(e.still_good("nt.a", made), None);
        assert_eq!(e.still_good("nt.a", good_to), None);
        // A copy made after the change is good.
        let after = e.current();
        assert_eq!(e.still_good("nt.a", after), Some(after));
    }

    #[test]
    fn the_change_record_stays_bounded() {
        let e = KeyEpochs::default();
        let made = e.current();
        for i in 0..MAX_CHANGES + 1 {
            e.changed(&format!("nt.{i}"));
        }
        assert!(lock(&e.changes).by_label.len() <= MAX_CHANGES);
        // The reset floor still catches copies older than the reset.
        assert_eq!(e.still_good("nt.unrelated", made), None);
    }
}
