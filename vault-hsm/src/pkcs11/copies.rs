//! Session copies of the keys the hot path uses.
//!
//! Every use of a token object costs SoftHSM2 file checks (open, `fcntl`
//! lock, read of the object's generation, per attribute it reads) and a
//! decryption of the key value; a session object lives in memory only. So
//! a key in use is copied once into a session object (`C_CopyObject` with
//! `CKA_TOKEN` false: still sensitive, non-extractable, private, with the
//! same usage flags) and the copy is used from then on, by every thread (a
//! session object belongs to the application, not to one session).
//!
//! Bounds: at most `capacity` copies (SoftHSM2 spends about 8 KB of memory
//! per object; a hardware HSM limits session objects too), the least
//! recently used quarter destroyed when full; a key is copied on its second
//! use within the window, so a vault whose working set is larger than the
//! cache does not copy on every use.
//!
//! A copy must never outlive a change of its key: [`KeyEpochs`] records which
//! labels were destroyed or replaced, and when, and a copy made before the
//! change is thrown away at its next use. A copy dies with the session that
//! made it; when any session dies every copy is forgotten (a handle number
//! could otherwise be reused by the HSM for another object).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::errors::{CallResult, refuses_copy};
use super::locks::{lock, read, write};
use super::module::Module;

/// Default number of copies kept (see the module docs).
pub const DEFAULT_CAPACITY: usize = 16_384;
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

    pub(crate) fn current(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether a copy of `label` known good up to epoch `made` is still of
    /// the live object; if so, the epoch it is now known good up to.
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
    good_to: AtomicU64,
    last_used: AtomicU64,
}

/// The copies of one HSM instance.
pub(crate) struct KeyCopies {
    pub(crate) epochs: KeyEpochs,
    capacity: AtomicU64,
    copies: RwLock<HashMap<String, Copy>>,
    /// Labels used once since they were last evicted or the set was reset.
    seen: Mutex<HashSet<String>>,
    tick: AtomicU64,
    /// Copies made since start (diagnostics: a cache that thrashes, or
    /// copies that die early, show as a number that keeps climbing).
    made: AtomicU64,
}

impl Default for KeyCopies {
    fn default() -> Self {
        KeyCopies {
            epochs: KeyEpochs::default(),
            capacity: AtomicU64::new(DEFAULT_CAPACITY as u64),
            copies: RwLock::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
            tick: AtomicU64::new(0),
            made: AtomicU64::new(0),
        }
    }
}

impl KeyCopies {
    /// How many copies to keep; 0 turns copying off.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity as u64, Ordering::Relaxed);
    }

    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed) as usize
    }

    /// The handle to use for `label`: its copy, a new copy, or (first use
    /// in the window, or copying off) the token object `original()` names.
    pub(crate) fn get_or_copy(
        &self,
        session: &Session,
        module: &Module,
        label: &str,
        always: bool,
        original: impl FnOnce() -> CallResult<ObjectHandle>,
        copy: impl FnOnce(ObjectHandle, &[Attribute]) -> CallResult<ObjectHandle>,
    ) -> CallResult<ObjectHandle> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let stale = {
            let copies = read(&self.copies);
            match copies.get(label) {
                Some(copy) => {
                    copy.last_used.store(tick, Ordering::Relaxed);
                    match self
                        .epochs
                        .still_good(label, copy.good_to.load(Ordering::Acquire))
                    {
                        Some(good_to) => {
                            copy.good_to.store(good_to, Ordering::Release);
                            return Ok(copy.handle);
                        }
                        None => true,
                    }
                }
                None => false,
            }
        };
        if stale && let Some(old) = self.forget(label) {
            // The object may already be gone with its key; either way it is
            // no longer used.
            let _ = session.destroy_object(old);
        }
        let capacity = self.capacity();
        // Second use (or a key every request needs): copy. First use: the
        // token object, remembered.
        let admit = capacity > 0 && (always || self.seen_before(label, capacity));
        // Read the epoch before looking at the token: a change racing this
        // copy is then newer than the copy, which is dropped at its next use.
        let made = self.epochs.current();
        let token_object = original()?;
        if !admit {
            return Ok(token_object);
        }
        let handle = match copy(token_object, &[Attribute::Token(false)]) {
            Ok(h) => {
                module.made_session_objects(1);
                self.made.fetch_add(1, Ordering::Relaxed);
                h
            }
            Err(e) => {
                if !refuses_copy(&e) {
                    return Err(e);
                }
                // Policy (`CKA_COPYABLE` false) or no `C_CopyObject`: use
                // token objects from now on.
                tracing::warn!(
                    key = %label,
                    "the HSM refuses to copy keys into session objects; using token objects"
                );
                self.set_capacity(0);
                return Ok(token_object);
            }
        };
        let (used, evicted) = {
            let mut copies = write(&self.copies);
            let used = match copies.get(label) {
                // Another thread copied it meanwhile: keep one.
                Some(other) => other.handle,
                None => {
                    copies.insert(
                        label.to_owned(),
                        Copy {
                            handle,
                            good_to: AtomicU64::new(made),
                            last_used: AtomicU64::new(tick),
                        },
                    );
                    handle
                }
            };
            let evicted = if copies.len() > capacity {
                oldest_quarter(&mut copies)
            } else {
                Vec::new()
            };
            (used, evicted)
        };
        if used != handle {
            let _ = session.destroy_object(handle);
        }
        for old in evicted {
            let _ = session.destroy_object(old);
        }
        Ok(used)
    }

    /// Drops the copy of `label` whose handle went stale (`failed`; any copy
    /// of `label` if `None`) and destroys it if it still exists. A newer copy
    /// another thread made meanwhile stays: it may be in use.
    pub(crate) fn evict(&self, session: &Session, label: &str, failed: Option<ObjectHandle>) {
        let gone = {
            let mut copies = write(&self.copies);
            match (copies.get(label), failed) {
                (Some(c), Some(f)) if c.handle != f => None,
                (Some(_), _) => copies.remove(label).map(|c| c.handle),
                (None, _) => None,
            }
        };
        if let Some(handle) = gone {
            let _ = session.destroy_object(handle);
        }
    }

    /// The labels that have a copy now.
    pub(crate) fn labels(&self) -> Vec<String> {
        read(&self.copies).keys().cloned().collect()
    }

    /// Replaces every copy by `copies`, made (for a standby copy of the
    /// module) after `epoch` was read, so a key changed since is dropped at
    /// its next use.
    pub(crate) fn install(&self, copies: Vec<(String, ObjectHandle)>, epoch: u64) {
        let tick = self.tick.load(Ordering::Relaxed);
        self.made.fetch_add(copies.len() as u64, Ordering::Relaxed);
        *write(&self.copies) = copies
            .into_iter()
            .map(|(label, handle)| {
                let copy = Copy {
                    handle,
                    good_to: AtomicU64::new(epoch),
                    last_used: AtomicU64::new(tick),
                };
                (label, copy)
            })
            .collect();
    }

    /// A session died: the copies it made died with it, and which session
    /// made which copy is not recorded, so all are forgotten (those of live
    /// sessions stay in the HSM until their session closes).
    pub(crate) fn forget_all(&self) {
        write(&self.copies).clear();
    }

    fn forget(&self, label: &str) -> Option<ObjectHandle> {
        write(&self.copies).remove(label).map(|c| c.handle)
    }

    /// Whether `label` was used before in this window; remembers it if not.
    fn seen_before(&self, label: &str, capacity: usize) -> bool {
        let mut seen = lock(&self.seen);
        if seen.remove(label) {
            return true;
        }
        if seen.len() >= capacity {
            seen.clear();
        }
        seen.insert(label.to_owned());
        false
    }
}

/// Removes the least recently used quarter; returns their handles.
fn oldest_quarter(copies: &mut HashMap<String, Copy>) -> Vec<ObjectHandle> {
    let mut ages: Vec<(u64, String)> = copies
        .iter()
        .map(|(l, c)| (c.last_used.load(Ordering::Relaxed), l.clone()))
        .collect();
    ages.sort_unstable();
    ages.truncate(copies.len().div_ceil(4));
    ages.into_iter()
        .filter_map(|(_, l)| copies.remove(&l).map(|c| c.handle))
        .collect()
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

    #[test]
    fn keys_are_admitted_on_their_second_use() {
        let c = KeyCopies::default();
        assert!(!c.seen_before("nt.a", 4));
        assert!(c.seen_before("nt.a", 4));
        // Forgotten again once admitted.
        assert!(!c.seen_before("nt.a", 4));
        // The window is bounded by the capacity.
        for i in 0..10 {
            c.seen_before(&format!("nt.{i}"), 4);
        }
        assert!(lock(&c.seen).len() <= 4);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_quarter() {
        let mut m = HashMap::new();
        for i in 0..8u64 {
            m.insert(
                format!("k{i}"),
                Copy {
                    handle: unsafe_handle(i),
                    good_to: AtomicU64::new(0),
                    last_used: AtomicU64::new(100 - i),
                },
            );
        }
        let mut gone = oldest_quarter(&mut m);
        gone.sort_by_key(|h| h.handle());
        assert_eq!(gone, vec![unsafe_handle(6), unsafe_handle(7)]);
        assert_eq!(m.len(), 6);
    }

    fn unsafe_handle(n: u64) -> ObjectHandle {
        // SAFETY: test-only numbers that never reach an HSM.
        unsafe { ObjectHandle::new_from_raw(n as _) }
    }
}
