//! Key administration for `vaultd keys ...`: creating the vault's keys,
//! importing a scheme's transport key from two or more components, rotating
//! and destroying PAN keys, and reading key attributes for diagnostics.

use std::path::Path;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use crate::pkcs11::CallError;
pub use crate::pkcs11::rotation::{destroy_pan_key, rotate_audit_key, rotate_pan_key};
use crate::pkcs11::rotation::{generate_hmac_key, generate_pan_key};
use crate::pkcs11::{
    AUDIT_LABEL, FP_LABEL, Pkcs11Hsm, find_all, kek_label, kek_version_label, pan_label, templates,
    token_key_label, zeroize_template,
};
use crate::{Hsm, HsmError, HsmResult};

/// What a key looks like from outside the HSM (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub label: String,
    /// `"AES"`, `"GENERIC_SECRET"`, ...
    pub key_type: String,
    /// Key length in bytes, when the token says.
    pub value_len: Option<u64>,
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub sign: bool,
    pub verify: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub derive: bool,
}

/// Creates `vault.pan.v1`, `vault.fp` and `vault.audit` where missing.
/// Returns each label with `true` if this call created it. Idempotent.
pub fn init_keys(hsm: &Pkcs11Hsm) -> Result<Vec<(String, bool)>, HsmError> {
    let mut report = Vec::new();
    let pan_version = hsm.refresh_pan_version()?;
    if pan_version == 0 {
        generate_pan_key(hsm, 1)?;
        hsm.set_pan_version(1);
        report.push((pan_label(1), true));
    } else {
        report.push((pan_label(pan_version), false));
    }
    for label in [FP_LABEL, AUDIT_LABEL] {
        let created = hsm.session("init keys", |s| {
            if !find_all(s, label)?.is_empty() {
                return Ok(false);
            }
            generate_hmac_key(s, label)?;
            Ok(true)
        })?;
        report.push((label.to_owned(), created));
    }
    hsm.refresh_audit_version()?;
    Ok(report)
}

/// What [`import_kek`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekImport {
    /// The KEK version that holds the components' key.
    pub version: u32,
    /// Its label (`tsp.<scheme>.kek` for version 1, `.v<N>` after).
    pub label: String,
    /// Key check value: first 3 bytes of AES-ECB(KEK, 0¹²⁸), hex.
    pub kcv: String,
    /// False when that version already held this key.
    pub created: bool,
    /// That version held this key without an unwrap template (made by a
    /// release before 2026-12); it was made again with one.
    pub upgraded: bool,
    /// Each component's check value (AES-ECB of zeros under the component,
    /// first 3 bytes, hex), in the order given: each custodian confirms
    /// theirs against the one written on their component's envelope.
    pub component_kcvs: Vec<String>,
}

/// Imports a token service KEK from two or more component files (dual
/// control: each holder brings one, each distinct and non-zero; the KEK is
/// their XOR and exists whole only inside the HSM).
///
/// KEKs are versioned: the first import for a scheme makes version 1
/// (`tsp.<scheme>.kek`); importing a different key later makes the next
/// version (`tsp.<scheme>.kek.v<N>`) and keeps the older ones, which token
/// keys stored under them still need (`vaultd keys retire-kek` removes one
/// once nothing uses it). Importing the key of an existing version again
/// changes nothing.
pub fn import_kek(
    hsm: &Pkcs11Hsm,
    scheme: &str,
    components: &[&Path],
) -> Result<KekImport, HsmError> {
    kek_label(scheme)?;
    if components.len() < 2 {
        return Err(HsmError::Other(format!(
            "a KEK needs at least two components (dual control), got {}",
            components.len()
        )));
    }
    let mut kek = Zeroizing::new([0u8; 32]);
    let mut seen: Vec<Zeroizing<[u8; 32]>> = Vec::new();
    for path in components {
        let component = read_component(path)?;
        if component.iter().all(|b| *b == 0) {
            return Err(HsmError::Other(format!(
                "component {} is all zeros",
                path.display()
            )));
        }
        if seen.iter().any(|c| c[..] == component[..]) {
            return Err(HsmError::Other(format!(
                "component {} repeats another component: dual control needs distinct components",
                path.display()
            )));
        }
        for (k, c) in kek.iter_mut().zip(component.iter()) {
            *k ^= c;
        }
        seen.push(component);
    }
    if kek.iter().all(|b| *b == 0) {
        return Err(HsmError::Other("the components XOR to zero".to_owned()));
    }
    let versions = hsm.kek_versions(scheme)?;
    let result = hsm.session("import kek", |s| {
        let kcv = kcv_in_hsm(s, &kek)?;
        let component_kcvs = seen
            .iter()
            .map(|c| kcv_in_hsm(s, c).map(|k| hex(&k)))
            .collect::<Result<Vec<_>, _>>()?;
        for &v in &versions {
            let label = kek_version_label(scheme, v)?;
            let Some(&handle) = find_all(s, &label)?.first() else {
                continue;
            };
            if check_value(s, handle)?.as_deref() == Some(&kcv[..]) {
                // The same key, made by a release before 2026-12 without an
                // unwrap template (which no module lets vaultd add later):
                // made again with one, under the same label, and the old
                // object destroyed.
                let raw = hsm.oneshot();
                let mut upgraded = false;
                if matches!(templates::unwrap_template_len(raw, s, handle), Ok(0)) {
                    upgraded = create_kek_object(hsm, s, &label, &kek, &kcv)?;
                    crate::pkcs11::creating_token_object(|| s.destroy_object(handle))?;
                }
                return Ok(KekImport {
                    version: v,
                    label,
                    kcv: hex(&kcv),
                    created: false,
                    upgraded,
                    component_kcvs,
                });
            }
        }
        let version = versions.last().map_or(1, |v| v + 1);
        let label = kek_version_label(scheme, version)?;
        create_kek_object(hsm, s, &label, &kek, &kcv)?;
        Ok(KekImport {
            version,
            label,
            kcv: hex(&kcv),
            created: true,
            upgraded: false,
            component_kcvs,
        })
    })?;
    hsm.handles().evict_named(&result.label);
    hsm.kek_versions(scheme)?;
    Ok(result)
}

/// Creates the KEK token object `label` holding `kek`, with the token-key
/// unwrap template and not modifiable (`pkcs11::templates`): whether it
/// carries the template. A module that does not take the template gets the
/// key without it, and a warning.
fn create_kek_object(
    hsm: &Pkcs11Hsm,
    s: &Session,
    label: &str,
    kek: &[u8; 32],
    kcv: &[u8; 3],
) -> Result<bool, CallError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(kek.to_vec()),
        Attribute::CheckValue(kcv.to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    let raw = hsm.oneshot();
    let created = crate::pkcs11::creating_token_object(|| {
        match templates::create_kek(raw, s, &template) {
            Err(cryptoki::error::Error::Pkcs11(
                RvError::AttributeTypeInvalid | RvError::AttributeValueInvalid,
                _,
            )) => {
                tracing::warn!(
                    kek = %label,
                    "the PKCS#11 module does not take CKA_UNWRAP_TEMPLATE: the KEK is made without one, so whoever holds the PIN can unwrap a token key as extractable"
                );
                s.create_object(&template).map(|_| false)
            }
            made => made.map(|_| true),
        }
    });
    zeroize_template(&mut template);
    Ok(created?)
}

/// Destroys `scheme`'s KEK `version` (never its newest): whether it
/// existed. The caller first makes sure no stored token key is wrapped
/// under it (`vaultd keys retire-kek` reads the database's counts).
pub fn destroy_kek(hsm: &Pkcs11Hsm, scheme: &str, version: u32) -> Result<bool, HsmError> {
    let versions = hsm.kek_versions(scheme)?;
    if versions.last() == Some(&version) {
        return Err(HsmError::Other(format!(
            "{} is the newest KEK of {scheme}; import a new one first",
            kek_version_label(scheme, version)?
        )));
    }
    let label = kek_version_label(scheme, version)?;
    let destroyed = hsm.session("retire kek", |s| {
        let found = find_all(s, &label)?;
        for &h in &found {
            crate::pkcs11::creating_token_object(|| s.destroy_object(h))?;
        }
        Ok(!found.is_empty())
    })?;
    hsm.handles().evict_named(&label);
    hsm.kek_versions(scheme)?;
    Ok(destroyed)
}

/// KCV computed inside the HSM with a temporary session key that may encrypt.
fn kcv_in_hsm(s: &Session, kek: &[u8; 32]) -> Result<[u8; 3], CallError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(kek.to_vec()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
    ];
    let temp = s.create_object(&template);
    zeroize_template(&mut template);
    let temp = temp?;
    let block = s.encrypt(&Mechanism::AesEcb, temp, &[0u8; 16]);
    let destroyed = s.destroy_object(temp);
    let block = block?;
    destroyed?;
    let mut kcv = [0u8; 3];
    kcv.copy_from_slice(&block[..3]);
    Ok(kcv)
}

fn check_value(s: &Session, handle: ObjectHandle) -> Result<Option<Vec<u8>>, CallError> {
    let attrs = s.get_attributes(handle, &[AttributeType::CheckValue])?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::CheckValue(v) if !v.is_empty() => Some(v),
        _ => None,
    }))
}

/// One component file: 64 hex characters (32 bytes) and a newline.
fn read_component(path: &Path) -> HsmResult<Zeroizing<[u8; 32]>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        HsmError::Other(format!(
            "cannot read key component {} ({})",
            path.display(),
            e.kind()
        ))
    })?);
    let digits = text.trim();
    let bad = || {
        HsmError::Other(format!(
            "key component {} must be 64 hex characters (32 bytes)",
            path.display()
        ))
    };
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or_else(bad)?;
        let lo = hex_digit(pair[1]).ok_or_else(bad)?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every secret key in the token, for `vaultd keys list` and tests.
pub fn list_keys(hsm: &Pkcs11Hsm) -> Result<Vec<KeyInfo>, HsmError> {
    hsm.session("list keys", |s| {
        let handles = crate::pkcs11::searching_token(|| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
            ])
        })?;
        let mut keys = Vec::with_capacity(handles.len());
        for handle in handles {
            match key_info(s, handle) {
                Ok(info) => keys.push(info),
                // Destroyed since the search (a token key of a deleted
                // alias): not in the list.
                Err(e) if crate::pkcs11::stale_handle(&e) => {}
                Err(e) => return Err(e),
            }
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    })
}

/// The attributes of the key labelled `label`, if it exists.
pub fn key_attributes(hsm: &Pkcs11Hsm, label: &str) -> Result<Option<KeyInfo>, HsmError> {
    hsm.session("key attributes", |s| match find_all(s, label)?.first() {
        Some(&handle) => Ok(Some(key_info(s, handle)?)),
        None => Ok(None),
    })
}

fn key_info(s: &Session, handle: ObjectHandle) -> Result<KeyInfo, CallError> {
    let attrs = s.get_attributes(
        handle,
        &[
            AttributeType::Label,
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Sign,
            AttributeType::Verify,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Derive,
        ],
    )?;
    let mut info = KeyInfo {
        label: String::new(),
        key_type: String::new(),
        value_len: None,
        token: false,
        private: false,
        sensitive: false,
        extractable: false,
        encrypt: false,
        decrypt: false,
        sign: false,
        verify: false,
        wrap: false,
        unwrap: false,
        derive: false,
    };
    for attr in attrs {
        match attr {
            Attribute::Label(l) => info.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::KeyType(t) => info.key_type = key_type_name(t),
            Attribute::ValueLen(l) => info.value_len = Some(u64::from(l)),
            Attribute::Token(b) => info.token = b,
            Attribute::Private(b) => info.private = b,
            Attribute::Sensitive(b) => info.sensitive = b,
            Attribute::Extractable(b) => info.extractable = b,
            Attribute::Encrypt(b) => info.encrypt = b,
            Attribute::Decrypt(b) => info.decrypt = b,
            Attribute::Sign(b) => info.sign = b,
            Attribute::Verify(b) => info.verify = b,
            Attribute::Wrap(b) => info.wrap = b,
            Attribute::Unwrap(b) => info.unwrap = b,
            Attribute::Derive(b) => info.derive = b,
            _ => {}
        }
    }
    Ok(info)
}

fn key_type_name(t: KeyType) -> String {
    if t == KeyType::AES {
        "AES".to_owned()
    } else if t == KeyType::GENERIC_SECRET {
        "GENERIC_SECRET".to_owned()
    } else {
        format!("{t}")
    }
}

/// Creates `nt.<token_ref>` with a known value (derive only, like an
/// unwrapped token key) so tests can check cryptograms against a published
/// vector. Never used by the daemon.
#[doc(hidden)]
pub fn import_token_key_for_test(
    hsm: &Pkcs11Hsm,
    token_ref: &str,
    key: &[u8; 16],
) -> Result<(), HsmError> {
    hsm.destroy_token_key(token_ref)?;
    create_token_key_object(hsm, token_ref, key, true)
}

/// Creates one more object labelled `nt.<token_ref>` next to the existing
/// one, as a provisioning replayed after a crash did before vaultd replaced
/// existing objects on unwrap. Never used by the daemon.
#[doc(hidden)]
pub fn add_duplicate_token_key_for_test(
    hsm: &Pkcs11Hsm,
    token_ref: &str,
    key: &[u8; 16],
) -> Result<(), HsmError> {
    create_token_key_object(hsm, token_ref, key, false)
}

fn create_token_key_object(
    hsm: &Pkcs11Hsm,
    token_ref: &str,
    key: &[u8; 16],
    remember: bool,
) -> Result<(), HsmError> {
    let label = token_key_label(token_ref)?;
    hsm.session("import test token key", |s| {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(key.to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
        ];
        let created = crate::pkcs11::creating_token_object(|| s.create_object(&template));
        zeroize_template(&mut template);
        let handle = created?;
        if remember {
            hsm.handles().insert_named(&label, handle);
        }
        Ok(())
    })
}
