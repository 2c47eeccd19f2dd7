//! Key handles cached by label, so the hot path (seal, fingerprint) never
//! searches the token. Object handles are per application in PKCS#11, so one
//! cache serves every thread's session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::errors::CallResult;
use super::locks::{lock, read, write};
use crate::HsmError;

/// Above this many cached `nt.*` handles the token-key part is emptied: a
/// vault with millions of tokens must not grow this map without bound.
const MAX_TOKEN_KEYS: usize = 65_536;

#[derive(Default)]
pub(crate) struct HandleCache {
    /// `vault.pan.v<N>` by N.
    pan: RwLock<HashMap<u32, ObjectHandle>>,
    /// Every other label (`vault.fp`, `vault.audit`, `tsp.*`, `nt.*`).
    named: RwLock<HashMap<String, ObjectHandle>>,
    /// Fill the `nt.*` handles in one pass at the first miss (see
    /// [`HandleCache::index_token_keys`]).
    bulk_index: bool,
    /// The pass (since the last [`HandleCache::clear`]).
    index: Mutex<Index>,
    /// `named` holds every token key of the token: the pass ran and found
    /// no more than the bound, and no `nt.*` entry was evicted since.
    /// Changed only under `named`'s write lock.
    complete: AtomicBool,
}

#[derive(Default)]
struct Index {
    ran: bool,
    /// Labels the pass found on more than one object (a provisioning
    /// replayed after a crash, by an older version): searched, not trusted.
    duplicated: HashSet<String>,
}

/// What the cache knows about a token key's objects.
pub(crate) enum TokenKey {
    /// No object has the label.
    Absent,
    /// Exactly this object has it.
    Present(ObjectHandle),
    /// Ask the token (a search by label).
    Unknown,
}

/// Label of the PAN key of version `version`.
pub fn pan_label(version: u32) -> String {
    format!("vault.pan.v{version}")
}

impl HandleCache {
    /// `bulk_index`: on a module whose label search reads every object
    /// anyway (SoftHSM2), learn every token key's handle in one pass.
    pub(crate) fn new(bulk_index: bool) -> Self {
        HandleCache {
            bulk_index,
            ..HandleCache::default()
        }
    }

    pub(crate) fn pan(&self, session: &Session, version: u32) -> CallResult<ObjectHandle> {
        if let Some(h) = read(&self.pan).get(&version) {
            return Ok(*h);
        }
        let h = find_one(session, &pan_label(version))?;
        write(&self.pan).insert(version, h);
        Ok(h)
    }

    pub(crate) fn named(&self, session: &Session, label: &str) -> CallResult<ObjectHandle> {
        if let Some(h) = read(&self.named).get(label) {
            return Ok(*h);
        }
        if self.bulk_index
            && label.starts_with("nt.")
            && self.index_token_keys(session)?
            && let Some(h) = read(&self.named).get(label)
        {
            return Ok(*h);
        }
        let h = find_one(session, label)?;
        self.insert_named(label, h);
        Ok(h)
    }

    /// The objects labelled `label` (a token key's), from the cache where
    /// it is known to hold every token key, without a search.
    pub(crate) fn token_key(&self, session: &Session, label: &str) -> CallResult<TokenKey> {
        if !self.bulk_index {
            return Ok(TokenKey::Unknown);
        }
        self.index_token_keys(session)?;
        let duplicated = lock(&self.index).duplicated.contains(label);
        let named = read(&self.named);
        if duplicated || !self.complete.load(Ordering::Acquire) {
            return Ok(TokenKey::Unknown);
        }
        Ok(match named.get(label) {
            Some(h) => TokenKey::Present(*h),
            None => TokenKey::Absent,
        })
    }

    /// Every object of `label` was destroyed: it is no longer duplicated.
    pub(crate) fn token_key_gone(&self, label: &str) {
        lock(&self.index).duplicated.remove(label);
        self.evict_named(label);
    }

    /// Learns the handles of the token keys (`nt.*`, up to the cache's
    /// bound) in one pass, once per module generation. SoftHSM2 answers a
    /// search by label by reading every object of the token, so after a
    /// restart or a re-initialisation, looking up 10,000 token keys one by
    /// one would read 10,000 × 10,000 object files; one pass reads each once.
    /// Whether this call ran the pass (a miss after it searches by label:
    /// the key may be newer than the pass).
    fn index_token_keys(&self, session: &Session) -> CallResult<bool> {
        let mut index = lock(&self.index);
        if index.ran {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let found = labelled_secret_keys(
            session,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                Attribute::KeyType(KeyType::AES),
                Attribute::Derive(true),
            ],
        )?;
        let token_keys = found.into_iter().filter(|(l, _)| l.starts_with("nt."));
        self.fill_token_keys(&mut index, token_keys, started);
        Ok(true)
    }

    /// A cache for a freshly initialised copy of the module (see
    /// `module`): every secret key of the token learnt in one pass.
    pub(crate) fn prepared(session: &Session) -> CallResult<HandleCache> {
        let cache = HandleCache::new(true);
        let started = std::time::Instant::now();
        let found = labelled_secret_keys(
            session,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
            ],
        )?;
        let (token_keys, vault_keys): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|(l, _)| l.starts_with("nt."));
        let mut seen = HashSet::new();
        let mut shared = HashSet::new();
        for (label, _) in &vault_keys {
            if !seen.insert(label.as_str()) {
                shared.insert(label.clone());
            }
        }
        for (label, handle) in vault_keys {
            // A label on several objects is left to a search, which warns.
            if shared.contains(&label) {
                continue;
            }
            match super::parse_pan_label(&label) {
                Some(version) => {
                    write(&cache.pan).insert(version, handle);
                }
                None => {
                    write(&cache.named).insert(label, handle);
                }
            }
        }
        let mut index = lock(&cache.index);
        cache.fill_token_keys(&mut index, token_keys.into_iter(), started);
        drop(index);
        Ok(cache)
    }

    /// Takes over `other`'s handles (a prepared cache, see
    /// [`HandleCache::prepared`]).
    pub(crate) fn install(&self, other: HandleCache) {
        let HandleCache {
            pan,
            named,
            index,
            complete,
            ..
        } = other;
        *write(&self.pan) = pan.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut mine = write(&self.named);
        *mine = named.into_inner().unwrap_or_else(|p| p.into_inner());
        self.complete
            .store(complete.into_inner(), Ordering::Release);
        drop(mine);
        *lock(&self.index) = index.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    /// The cached handle of `label`, if any (no search).
    pub(crate) fn known(&self, label: &str) -> Option<ObjectHandle> {
        match super::parse_pan_label(label) {
            Some(version) => read(&self.pan).get(&version).copied(),
            None => read(&self.named).get(label).copied(),
        }
    }

    /// Records the token keys `found` by one pass (see
    /// [`HandleCache::index_token_keys`]).
    fn fill_token_keys(
        &self,
        index: &mut Index,
        found: impl Iterator<Item = (String, ObjectHandle)>,
        started: std::time::Instant,
    ) {
        let mut named = write(&self.named);
        let mut complete = true;
        let mut duplicated = HashSet::new();
        for (label, handle) in found {
            if named.len() >= MAX_TOKEN_KEYS {
                complete = false;
                break;
            }
            match named.get(&label) {
                // Known already: this process made it (or a racing lookup
                // found it); the same object.
                Some(h) if *h == handle => {}
                Some(_) => {
                    duplicated.insert(label);
                }
                None => {
                    named.insert(label, handle);
                }
            }
        }
        if !duplicated.is_empty() {
            tracing::warn!(
                count = duplicated.len(),
                "token keys with more than one HSM object (a provisioning replayed after a crash); \
                 the extra objects are destroyed when the key is replaced or deleted"
            );
        }
        tracing::info!(
            token_keys = named.len(),
            complete,
            took_ms = started.elapsed().as_millis() as u64,
            "indexed the token keys' HSM handles"
        );
        self.complete.store(complete, Ordering::Release);
        drop(named);
        index.duplicated = duplicated;
        index.ran = true;
    }

    pub(crate) fn insert_named(&self, label: &str, handle: ObjectHandle) {
        let mut named = write(&self.named);
        if named.len() >= MAX_TOKEN_KEYS && !named.contains_key(label) {
            self.complete.store(false, Ordering::Release);
            named.retain(|l, _| !l.starts_with("nt."));
        }
        named.insert(label.to_owned(), handle);
    }

    /// Forgets every handle (the module was re-initialised).
    pub(crate) fn clear(&self) {
        write(&self.pan).clear();
        let mut named = write(&self.named);
        named.clear();
        self.complete.store(false, Ordering::Release);
        drop(named);
        *lock(&self.index) = Index::default();
    }

    pub(crate) fn evict_pan(&self, version: u32) {
        write(&self.pan).remove(&version);
    }

    pub(crate) fn evict_named(&self, label: &str) {
        write(&self.named).remove(label);
    }
}

/// The labelled secret-key objects matching `template`, with their labels,
/// in one search: up to the cache's bound for token keys plus room for the
/// vault's own keys, so a token with more token keys than the bound is
/// seen as such (the pass is then marked incomplete).
fn labelled_secret_keys(
    session: &Session,
    template: &[Attribute],
) -> CallResult<Vec<(String, ObjectHandle)>> {
    super::searching_token(|| {
        let handles = session.find_objects(template)?;
        let mut found = Vec::new();
        for handle in handles.into_iter().take(MAX_TOKEN_KEYS + 64) {
            if let Some(label) = super::label_of(session, handle)? {
                found.push((label, handle));
            }
        }
        Ok(found)
    })
}

/// The token's secret-key objects labelled `label` (normally one).
/// Searches run under the same lock as object changes: SoftHSM2 answers a
/// search racing a creation with errors such as CKR_TEMPLATE_INCONSISTENT.
pub(crate) fn find_all(session: &Session, label: &str) -> CallResult<Vec<ObjectHandle>> {
    super::searching_token(|| {
        Ok(session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?)
    })
}

fn find_one(session: &Session, label: &str) -> CallResult<ObjectHandle> {
    let found = find_all(session, label)?;
    match found.first() {
        Some(h) => {
            if found.len() > 1 {
                tracing::warn!(
                    label,
                    count = found.len(),
                    "several HSM keys share a label; using the first"
                );
            }
            Ok(*h)
        }
        None => Err(HsmError::KeyMissing(label.to_owned()).into()),
    }
}
