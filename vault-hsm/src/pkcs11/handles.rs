//! Key handles cached by label, so the hot path (seal, fingerprint) never
//! searches the token. Object handles are per application in PKCS#11, so one
//! cache serves every thread's session.

use std::collections::HashMap;
use std::sync::RwLock;

use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::errors::CallResult;
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
}

/// Label of the PAN key of version `version`.
pub fn pan_label(version: u32) -> String {
    format!("vault.pan.v{version}")
}

impl HandleCache {
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
        let h = find_one(session, label)?;
        let mut named = write(&self.named);
        if named.len() >= MAX_TOKEN_KEYS {
            named.retain(|l, _| !l.starts_with("nt."));
        }
        named.insert(label.to_owned(), h);
        Ok(h)
    }

    /// The cached handle of `label`, without asking the token.
    pub(crate) fn cached_named(&self, label: &str) -> Option<ObjectHandle> {
        read(&self.named).get(label).copied()
    }

    pub(crate) fn insert_named(&self, label: &str, handle: ObjectHandle) {
        write(&self.named).insert(label.to_owned(), handle);
    }

    pub(crate) fn evict_pan(&self, version: u32) {
        write(&self.pan).remove(&version);
    }

    pub(crate) fn evict_named(&self, label: &str) {
        write(&self.named).remove(label);
    }
}

/// The token's secret-key objects labelled `label` (normally one).
/// Searches run under the same lock as object changes: SoftHSM2 answers a
/// search racing a creation with errors such as CKR_TEMPLATE_INCONSISTENT.
pub(crate) fn find_all(session: &Session, label: &str) -> CallResult<Vec<ObjectHandle>> {
    super::creating_token_object(|| {
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

// A poisoned lock only means another thread panicked while holding it; the
// map of handles is still consistent (inserts and removes are atomic).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
