//! Single-part sign, encrypt and decrypt into a caller's buffer, in two
//! module calls (`C_*Init`, then the operation) where cryptoki's `sign`,
//! `encrypt` and `decrypt` make three: they first ask the module for the
//! output length with a null buffer. vaultd knows its output sizes (an HMAC
//! is 32 bytes, a CMAC 16, AES-GCM adds a 16-byte tag), and SoftHSM2 takes
//! its session and object locks on every call, so the length query is a
//! measurable part of a payment's HSM time (BENCHMARKS.md, session 7).
//!
//! The calls go through the module's own function list
//! (`C_GetFunctionList`, on a second handle of the library cryptoki loaded)
//! with the raw handles cryptoki exposes; errors come back as cryptoki's.

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::{Error, Rv, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_BYTE_PTR, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_RV,
    CK_SESSION_HANDLE, CK_ULONG, CK_ULONG_PTR,
};

type Init = unsafe extern "C" fn(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) -> CK_RV;
type Run = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    CK_BYTE_PTR,
    CK_ULONG,
    CK_BYTE_PTR,
    CK_ULONG_PTR,
) -> CK_RV;

/// The module's single-part entry points.
pub(crate) struct OneShot {
    /// Keeps the library mapped as long as the pointers below are used.
    _lib: cryptoki_sys::Pkcs11,
    sign_init: Init,
    sign: Run,
    encrypt_init: Init,
    encrypt: Run,
    decrypt_init: Init,
    decrypt: Run,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneShot")
    }
}

impl OneShot {
    /// Reads the function list of the module at `path` (already loaded by
    /// cryptoki, so this maps no second copy).
    pub(crate) fn load(path: &Path) -> Result<OneShot, String> {
        // SAFETY: loading a PKCS#11 library runs its initialisers; cryptoki
        // has loaded the same file already, so the loader only counts a
        // second reference.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| e.to_string())?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to the module's static
        // function list, valid while the library stays loaded (`_lib`).
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        if rv != cryptoki_sys::CKR_OK || list.is_null() {
            return Err(format!("C_GetFunctionList returned {rv:#x}"));
        }
        // SAFETY: non-null and valid as above; the list is copied.
        let list = unsafe { *list };
        let missing = |name: &str| format!("the module's function list has no {name}");
        Ok(OneShot {
            sign_init: list.C_SignInit.ok_or_else(|| missing("C_SignInit"))?,
            sign: list.C_Sign.ok_or_else(|| missing("C_Sign"))?,
            encrypt_init: list.C_EncryptInit.ok_or_else(|| missing("C_EncryptInit"))?,
            encrypt: list.C_Encrypt.ok_or_else(|| missing("C_Encrypt"))?,
            decrypt_init: list.C_DecryptInit.ok_or_else(|| missing("C_DecryptInit"))?,
            decrypt: list.C_Decrypt.ok_or_else(|| missing("C_Decrypt"))?,
            _lib: lib,
        })
    }

    /// `C_SignInit` + `C_Sign` into `out`; the signature's length.
    pub(crate) fn sign(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let ops = (
            self.sign_init,
            self.sign,
            Function::SignInit,
            Function::Sign,
        );
        run(ops, session, mechanism, key, data, out)
    }

    /// `C_EncryptInit` + `C_Encrypt` into `out`; the ciphertext's length.
    pub(crate) fn encrypt(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let ops = (
            self.encrypt_init,
            self.encrypt,
            Function::EncryptInit,
            Function::Encrypt,
        );
        run(ops, session, mechanism, key, data, out)
    }

    /// `C_DecryptInit` + `C_Decrypt` into `out`; the plaintext's length.
    pub(crate) fn decrypt(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let ops = (
            self.decrypt_init,
            self.decrypt,
            Function::DecryptInit,
            Function::Decrypt,
        );
        run(ops, session, mechanism, key, data, out)
    }
}

/// The init call, then the operation into `out`. A module that wants a
/// larger buffer answers `CKR_BUFFER_TOO_SMALL` and keeps the operation
/// active (PKCS#11 5.2); that is returned as the error after the operation
/// is ended by a length query and a call into a buffer of the right size,
/// so the session is left clean.
fn run(
    (init, op, init_fn, op_fn): (Init, Run, Function, Function),
    session: &Session,
    mechanism: &Mechanism<'_>,
    key: ObjectHandle,
    data: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let mut mechanism: CK_MECHANISM = mechanism.into();
    let data_len = CK_ULONG::try_from(data.len())?;
    let mut out_len = CK_ULONG::try_from(out.len())?;
    // SAFETY: a live session handle and key handle; the mechanism (and the
    // parameters it points to) outlives the call.
    let rv = unsafe { init(session.handle(), &mut mechanism, key.handle()) };
    Rv::from(rv).into_result(init_fn)?;
    // SAFETY: the module reads `data_len` bytes of `data` (PKCS#11 declares
    // it non-const but does not write it) and writes at most `out_len`
    // bytes into `out`, updating `out_len`.
    let rv = unsafe {
        op(
            session.handle(),
            data.as_ptr().cast_mut(),
            data_len,
            out.as_mut_ptr(),
            &mut out_len,
        )
    };
    match Rv::from(rv) {
        Rv::Ok => Ok(usize::try_from(out_len)?),
        Rv::Error(RvError::BufferTooSmall) => {
            let mut end = vec![0u8; usize::try_from(out_len)?];
            // SAFETY: as above, into a buffer of the length the module asked
            // for; its contents are dropped unread (zeroed: it may hold a
            // plaintext).
            let _ = unsafe {
                op(
                    session.handle(),
                    data.as_ptr().cast_mut(),
                    data_len,
                    end.as_mut_ptr(),
                    &mut out_len,
                )
            };
            zeroize::Zeroize::zeroize(&mut end);
            Err(Error::Pkcs11(RvError::BufferTooSmall, op_fn))
        }
        Rv::Error(e) => Err(Error::Pkcs11(e, op_fn)),
    }
}
