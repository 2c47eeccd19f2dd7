//! Network token keys at use: each token's key is stored in its record,
//! wrapped under its scheme's KEK (see [`crate::WrappedTokenKey`]), and
//! unwrapped into a session object (derive only, sensitive,
//! non-extractable; never a token object) the first time a cryptogram
//! needs it. This cache keeps those session objects, by token reference,
//! up to a bound; a miss costs one `C_UnwrapKey`.
//!
//! An entry remembers the blob it was unwrapped from: a token whose stored
//! key was replaced (key refresh) never meets its old key, even before the
//! old entry is dropped. Deleting a token destroys its entry at once
//! ([`TokenKeyCache::remove`]). Like key copies, the objects are made by
//! the instance's copy-owner session (they die with it), and every entry
//! is forgotten when a session dies or the module is re-initialised.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cryptoki::object::ObjectHandle;

use super::locks::lock;

/// Default number of token keys kept unwrapped. SoftHSM2 spends a few KB
/// of the process's memory per session object; a hardware HSM counts them
/// against its session-object limit.
pub const DEFAULT_CAPACITY: usize = 4_096;

struct Entry {
    kek_version: u32,
    wrapped: Vec<u8>,
    handle: ObjectHandle,
    last_used: u64,
}

/// The unwrapped token keys of one HSM instance.
pub(crate) struct TokenKeyCache {
    capacity: AtomicUsize,
    entries: Mutex<HashMap<String, Entry>>,
    tick: AtomicU64,
    /// Unwraps since start (diagnostics: a cache too small for the working
    /// set shows as a number that climbs with the payments).
    unwraps: AtomicU64,
}

impl Default for TokenKeyCache {
    fn default() -> Self {
        TokenKeyCache {
            capacity: AtomicUsize::new(DEFAULT_CAPACITY),
            entries: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            unwraps: AtomicU64::new(0),
        }
    }
}

impl TokenKeyCache {
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    pub(crate) fn unwraps(&self) -> u64 {
        self.unwraps.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// The session key of `token_ref` if it was unwrapped from this very blob.
    pub(crate) fn get(
        &self,
        token_ref: &str,
        kek_version: u32,
        wrapped: &[u8],
    ) -> Option<ObjectHandle> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        let e = entries.get_mut(token_ref)?;
        if e.kek_version != kek_version || e.wrapped != wrapped {
            return None;
        }
        e.last_used = tick;
        Some(e.handle)
    }

    /// Keeps `handle`, just unwrapped from the blob, for `token_ref`.
    /// Returns the handle to use (another thread's, if it won the race for
    /// the same blob) and the objects the caller must destroy: its own
    /// when it lost, the entry it replaced, and the least recently used
    /// quarter when the cache is full.
    pub(crate) fn insert(
        &self,
        token_ref: &str,
        kek_version: u32,
        wrapped: &[u8],
        handle: ObjectHandle,
    ) -> (ObjectHandle, Vec<ObjectHandle>) {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        let mut dead = Vec::new();
        if let Some(e) = entries.get_mut(token_ref) {
            if e.kek_version == kek_version && e.wrapped == wrapped {
                e.last_used = tick;
                return (e.handle, vec![handle]);
            }
            dead.push(e.handle);
            entries.remove(token_ref);
        }
        entries.insert(
            token_ref.to_owned(),
            Entry {
                kek_version,
                wrapped: wrapped.to_vec(),
                handle,
                last_used: tick,
            },
        );
        if entries.len() > capacity {
            dead.extend(oldest_quarter(&mut entries));
        }
        (handle, dead)
    }

    /// Drops `token_ref`'s entry; its handle, for the caller to destroy.
    pub(crate) fn remove(&self, token_ref: &str) -> Option<ObjectHandle> {
        lock(&self.entries).remove(token_ref).map(|e| e.handle)
    }

    /// Drops `token_ref`'s entry if it still holds `handle` (which went
    /// stale); a newer one another thread made stays.
    pub(crate) fn remove_if(&self, token_ref: &str, handle: ObjectHandle) -> bool {
        let mut entries = lock(&self.entries);
        if entries.get(token_ref).is_some_and(|e| e.handle == handle) {
            entries.remove(token_ref);
            true
        } else {
            false
        }
    }

    /// A session died or the module was re-initialised: every object died
    /// with it (and a handle number may name another object now).
    pub(crate) fn forget_all(&self) {
        lock(&self.entries).clear();
    }
}

fn oldest_quarter(entries: &mut HashMap<String, Entry>) -> Vec<ObjectHandle> {
    let mut ages: Vec<(u64, String)> = entries
        .iter()
        .map(|(r, e)| (e.last_used, r.clone()))
        .collect();
    ages.sort_unstable();
    ages.truncate(entries.len().div_ceil(4));
    ages.into_iter()
        .filter_map(|(_, r)| entries.remove(&r).map(|e| e.handle))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> ObjectHandle {
        // SAFETY: test-only numbers that never reach an HSM.
        unsafe { ObjectHandle::new_from_raw(n as _) }
    }

    #[test]
    fn an_entry_serves_only_the_blob_it_was_unwrapped_from() {
        let c = TokenKeyCache::default();
        assert_eq!(c.insert("t1", 1, b"blob-a", h(10)), (h(10), vec![]));
        assert_eq!(c.get("t1", 1, b"blob-a"), Some(h(10)));
        // A refreshed key (new blob) or another KEK version misses.
        assert_eq!(c.get("t1", 1, b"blob-b"), None);
        assert_eq!(c.get("t1", 2, b"blob-a"), None);
        // Its unwrap replaces the old entry, whose object must go.
        assert_eq!(c.insert("t1", 1, b"blob-b", h(11)), (h(11), vec![h(10)]));
        assert_eq!(c.get("t1", 1, b"blob-b"), Some(h(11)));
        // Two threads unwrapping the same blob: one object stays.
        assert_eq!(c.insert("t1", 1, b"blob-b", h(12)), (h(11), vec![h(12)]));
        assert_eq!(c.remove("t1"), Some(h(11)));
        assert_eq!(c.get("t1", 1, b"blob-b"), None);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let c = TokenKeyCache::default();
        c.set_capacity(4);
        for i in 0..4 {
            c.insert(&format!("t{i}"), 1, b"k", h(i));
        }
        // t0 used again: t1 is now the oldest.
        assert!(c.get("t0", 1, b"k").is_some());
        let (_, dead) = c.insert("t4", 1, b"k", h(4));
        assert_eq!(dead, vec![h(1), h(2)]);
        assert_eq!(c.len(), 3);
        assert!(c.get("t1", 1, b"k").is_none());
        assert!(c.get("t0", 1, b"k").is_some());
        assert!(!c.remove_if("t0", h(99)), "a newer handle stays");
        assert!(c.remove_if("t0", h(0)));
        c.forget_all();
        assert_eq!(c.len(), 0);
    }
}
