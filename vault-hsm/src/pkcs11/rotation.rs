//! Making and retiring the vault's own keys' versions: the audit key and
//! PAN key rotations and PAN key retirement, which the daemon calls through
//! the `Hsm` trait, and the key generation `keys::init_keys` shares.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;

use super::{AUDIT_LABEL, CallError, Pkcs11Hsm, audit_label, find_all, pan_label};
use crate::{HsmError, HsmResult};

/// Creates the next audit key (`vault.audit.v<newest+1>`) and makes it the
/// key new audit seals use. Older audit keys stay: every seal names the
/// version that made it, so the whole chain still verifies. Never destroys
/// an audit key. A running vaultd picks the new version up within
/// `[keys].refresh_interval`.
pub fn rotate_audit_key(hsm: &Pkcs11Hsm) -> Result<u32, HsmError> {
    let newest = hsm.refresh_audit_version()?;
    if newest == 0 {
        return Err(HsmError::KeyMissing(AUDIT_LABEL.to_owned()));
    }
    let next = newest
        .checked_add(1)
        .ok_or_else(|| HsmError::Other("audit key version overflow".to_owned()))?;
    let label = audit_label(next);
    hsm.session("rotate audit key", |s| generate_hmac_key(s, &label))?;
    hsm.set_audit_version(next);
    Ok(next)
}

/// A sensitive, non-extractable HMAC-SHA-256 key (sign and verify only).
pub(crate) fn generate_hmac_key(s: &Session, label: &str) -> Result<(), CallError> {
    crate::pkcs11::creating_token_object(|| {
        s.generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ],
        )
    })?;
    Ok(())
}

/// Creates `vault.pan.v<newest+1>` and makes it the key new seals use.
/// Ciphertexts under older versions still open. Another process holding the
/// token open picks the new version up on restart (or
/// [`Pkcs11Hsm::refresh_pan_version`]).
pub fn rotate_pan_key(hsm: &Pkcs11Hsm) -> Result<u32, HsmError> {
    let newest = hsm.refresh_pan_version()?;
    let next = newest
        .checked_add(1)
        .ok_or_else(|| HsmError::Other("pan key version overflow".to_owned()))?;
    generate_pan_key(hsm, next)?;
    hsm.set_pan_version(next);
    Ok(next)
}

/// Destroys `vault.pan.v<version>` once nothing is sealed under it any more.
/// Refuses the newest version. Returns whether a key was destroyed.
pub fn destroy_pan_key(hsm: &Pkcs11Hsm, version: u32) -> Result<bool, HsmError> {
    if version == hsm.refresh_pan_version()? {
        return Err(HsmError::Other(format!(
            "refusing to destroy {}: it is the newest pan key (rotate first)",
            pan_label(version)
        )));
    }
    let label = pan_label(version);
    hsm.handles().evict_pan(version);
    let destroyed = hsm.session("destroy pan key", |s| {
        let found = find_all(s, &label)?;
        for handle in &found {
            crate::pkcs11::creating_token_object(|| s.destroy_object(*handle))?;
        }
        Ok(!found.is_empty())
    });
    hsm.key_changed(&label);
    destroyed
}

pub(crate) fn generate_pan_key(hsm: &Pkcs11Hsm, version: u32) -> HsmResult<()> {
    let label = pan_label(version);
    hsm.session("generate pan key", |s| {
        crate::pkcs11::creating_token_object(|| {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                ],
            )
        })?;
        Ok(())
    })
}
