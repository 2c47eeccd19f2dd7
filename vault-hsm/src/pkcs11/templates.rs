//! Array attributes, which cryptoki 0.12 has no type for: the KEKs'
//! `CKA_UNWRAP_TEMPLATE`, and the token keys' `CKA_DERIVE_TEMPLATE` where
//! the module knows it.
//!
//! A KEK carries an unwrap template naming what every key unwrapped under
//! it must be: a derive-only, sensitive, non-extractable token key
//! ([`TOKEN_KEY_POLICY`]). The module refuses a `C_UnwrapKey` whose
//! template disagrees (`CKR_TEMPLATE_INCONSISTENT`), so whoever holds the
//! PIN cannot unwrap a stored token-key blob into a key they can read.
//! KEKs are created with `CKA_MODIFIABLE` false, so nothing about them can
//! change. The template can be given only when a key is made (PKCS#11 lists
//! it as not modifiable): a KEK made by an earlier release is made again
//! with it when its import ceremony is run again (`keys::import_kek`), and
//! the daemon warns at start about each KEK still without one.
//!
//! Token keys are unwrapped with a derive template (sensitive,
//! non-extractable) where the module accepts one; SoftHSM2 2.6 does not
//! know `CKA_DERIVE_TEMPLATE` on secret keys, and says so
//! (`CKR_ATTRIBUTE_TYPE_INVALID`), so there the attribute is left off (see
//! docs/operations.md, "HSM").
//!
//! The calls go through the module's own function list (see `oneshot`).

use cryptoki::context::Function;
use cryptoki::error::{Error, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_ATTRIBUTE_TYPE, CK_BBOOL, CK_FALSE, CK_MECHANISM, CK_OBJECT_HANDLE, CK_TRUE,
    CK_ULONG, CKA_DECRYPT, CKA_DERIVE, CKA_DERIVE_TEMPLATE, CKA_ENCRYPT, CKA_EXTRACTABLE,
    CKA_SENSITIVE, CKA_SIGN, CKA_UNWRAP, CKA_UNWRAP_TEMPLATE, CKA_VERIFY, CKA_WRAP,
};

use super::oneshot::OneShot;

/// What a key unwrapped under a KEK must be: the boolean attributes of
/// `token_key_template` (every unwrap in tests/hsm.rs fails if they
/// disagree).
pub(crate) const TOKEN_KEY_POLICY: [(CK_ATTRIBUTE_TYPE, bool); 9] = [
    (CKA_SENSITIVE, true),
    (CKA_EXTRACTABLE, false),
    (CKA_DERIVE, true),
    (CKA_ENCRYPT, false),
    (CKA_DECRYPT, false),
    (CKA_SIGN, false),
    (CKA_VERIFY, false),
    (CKA_WRAP, false),
    (CKA_UNWRAP, false),
];

/// What a key derived from a token key must be (the cryptogram session
/// key is sensitive and non-extractable).
const DERIVED_KEY_POLICY: [(CK_ATTRIBUTE_TYPE, bool); 2] =
    [(CKA_SENSITIVE, true), (CKA_EXTRACTABLE, false)];

const TRUE: CK_BBOOL = CK_TRUE as CK_BBOOL;
const FALSE: CK_BBOOL = CK_FALSE as CK_BBOOL;

/// `CK_ATTRIBUTE`s of boolean `policy` entries; the pointers refer to two
/// statics.
fn bool_attributes(policy: &[(CK_ATTRIBUTE_TYPE, bool)]) -> Vec<CK_ATTRIBUTE> {
    static T: CK_BBOOL = TRUE;
    static F: CK_BBOOL = FALSE;
    policy
        .iter()
        .map(|&(type_, value)| CK_ATTRIBUTE {
            type_,
            pValue: (if value { &T } else { &F } as *const CK_BBOOL)
                .cast_mut()
                .cast(),
            ulValueLen: 1,
        })
        .collect()
}

/// An array attribute over `inner` (which must outlive its use).
fn array_attribute(type_: CK_ATTRIBUTE_TYPE, inner: &mut [CK_ATTRIBUTE]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_,
        pValue: inner.as_mut_ptr().cast(),
        ulValueLen: std::mem::size_of_val(inner) as CK_ULONG,
    }
}

/// `C_CreateObject` of `template` plus the token-key unwrap template and
/// `CKA_MODIFIABLE` false: a KEK.
pub(crate) fn create_kek(
    raw: &OneShot,
    session: &Session,
    template: &[Attribute],
) -> Result<ObjectHandle, Error> {
    let create = raw
        .functions()
        .C_CreateObject
        .ok_or(Error::NullFunctionPointer)?;
    let mut inner = bool_attributes(&TOKEN_KEY_POLICY);
    let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
    attrs.push(array_attribute(CKA_UNWRAP_TEMPLATE, &mut inner));
    attrs.extend(bool_attributes(&[(cryptoki_sys::CKA_MODIFIABLE, false)]));
    let mut handle: CK_OBJECT_HANDLE = 0;
    // SAFETY: a live session; every attribute points into `template`,
    // `inner` or a static, all alive for the call; the module writes the
    // new handle.
    let rv = unsafe {
        create(
            session.handle(),
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut handle,
        )
    };
    Rv::from(rv).into_result(Function::CreateObject)?;
    // SAFETY: the handle the module just returned.
    Ok(unsafe { ObjectHandle::new_from_raw(handle) })
}

/// The number of attributes in `key`'s unwrap template (0: none).
pub(crate) fn unwrap_template_len(
    raw: &OneShot,
    session: &Session,
    key: ObjectHandle,
) -> Result<usize, Error> {
    let get = raw
        .functions()
        .C_GetAttributeValue
        .ok_or(Error::NullFunctionPointer)?;
    let mut query = [CK_ATTRIBUTE {
        type_: CKA_UNWRAP_TEMPLATE,
        pValue: std::ptr::null_mut(),
        ulValueLen: 0,
    }];
    // SAFETY: a length query (null value pointer): the module writes only
    // `ulValueLen`.
    let rv = unsafe { get(session.handle(), key.handle(), query.as_mut_ptr(), 1) };
    Rv::from(rv).into_result(Function::GetAttributeValue)?;
    if query[0].ulValueLen == cryptoki_sys::CK_UNAVAILABLE_INFORMATION {
        return Ok(0);
    }
    Ok(usize::try_from(query[0].ulValueLen)? / std::mem::size_of::<CK_ATTRIBUTE>())
}

/// `C_UnwrapKey` of `wrapped` under `kek` with `template`, plus a derive
/// template when `derive_template` is set.
pub(crate) fn unwrap_key(
    raw: &OneShot,
    session: &Session,
    mechanism: &Mechanism<'_>,
    kek: ObjectHandle,
    wrapped: &[u8],
    template: &[Attribute],
    derive_template: bool,
) -> Result<ObjectHandle, Error> {
    let unwrap = raw
        .functions()
        .C_UnwrapKey
        .ok_or(Error::NullFunctionPointer)?;
    let mut mechanism: CK_MECHANISM = mechanism.into();
    let mut inner = bool_attributes(&DERIVED_KEY_POLICY);
    let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
    if derive_template {
        attrs.push(array_attribute(CKA_DERIVE_TEMPLATE, &mut inner));
    }
    let mut handle: CK_OBJECT_HANDLE = 0;
    // SAFETY: a live session and KEK; the module reads `wrapped` (declared
    // non-const, never written) and the attributes, all alive for the call,
    // and writes the new handle.
    let rv = unsafe {
        unwrap(
            session.handle(),
            &mut mechanism,
            kek.handle(),
            wrapped.as_ptr().cast_mut(),
            CK_ULONG::try_from(wrapped.len())?,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut handle,
        )
    };
    Rv::from(rv).into_result(Function::UnwrapKey)?;
    // SAFETY: the handle the module just returned.
    Ok(unsafe { ObjectHandle::new_from_raw(handle) })
}
