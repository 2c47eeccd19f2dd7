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

/// A single-part operation.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    Sign = 0,
    Encrypt = 1,
    Decrypt = 2,
}

/// One operation's entry points and the names errors carry.
#[derive(Clone, Copy)]
struct Entry {
    init: Init,
    run: Run,
    init_fn: Function,
    run_fn: Function,
}

/// The module's single-part entry points, by [`Op`].
pub(crate) struct OneShot {
    /// Keeps the library mapped as long as the pointers below are used.
    _lib: cryptoki_sys::Pkcs11,
    entries: [Entry; 3],
    /// The whole function list, for the attribute calls cryptoki 0.12 has
    /// no types for (`templates`).
    list: CK_FUNCTION_LIST,
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
        let entry = |init: Option<Init>, run: Option<Run>, init_fn, run_fn| {
            Ok::<Entry, String>(Entry {
                init: init.ok_or_else(|| format!("the module has no {init_fn}"))?,
                run: run.ok_or_else(|| format!("the module has no {run_fn}"))?,
                init_fn,
                run_fn,
            })
        };
        let entries = [
            entry(
                list.C_SignInit,
                list.C_Sign,
                Function::SignInit,
                Function::Sign,
            )?,
            entry(
                list.C_EncryptInit,
                list.C_Encrypt,
                Function::EncryptInit,
                Function::Encrypt,
            )?,
            entry(
                list.C_DecryptInit,
                list.C_Decrypt,
                Function::DecryptInit,
                Function::Decrypt,
            )?,
        ];
        Ok(OneShot {
            _lib: lib,
            entries,
            list,
        })
    }

    /// The module's function list (valid while `self` lives).
    pub(crate) fn functions(&self) -> &CK_FUNCTION_LIST {
        &self.list
    }

    /// `C_<op>Init`, then `C_<op>` into `out`; the output's length. A
    /// module that wants a larger buffer answers `CKR_BUFFER_TOO_SMALL` and
    /// keeps the operation active (PKCS#11 5.2): the operation is then
    /// ended by one more call into a buffer of the length it asked for
    /// (wiped unread), so the session is left clean, and that error is
    /// returned.
    pub(crate) fn call(
        &self,
        op: Op,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let Entry {
            init,
            run,
            init_fn,
            run_fn,
        } = self.entries[op as usize];
        let mut mechanism: CK_MECHANISM = mechanism.into();
        let data_len = CK_ULONG::try_from(data.len())?;
        // SAFETY: a live session handle and key handle; the mechanism (and the
        // parameters it points to) outlives the call.
        let rv = unsafe { init(session.handle(), &mut mechanism, key.handle()) };
        Rv::from(rv).into_result(init_fn)?;
        // The operation into `buf`: its return value, and the output length
        // the module reported.
        let run_into = |buf: &mut [u8]| -> Result<(Rv, CK_ULONG), Error> {
            let mut len = CK_ULONG::try_from(buf.len())?;
            // SAFETY: the module reads `data_len` bytes of `data` (PKCS#11
            // declares it non-const but does not write it) and writes at
            // most `len` bytes into `buf`, updating `len`.
            let rv = unsafe {
                run(
                    session.handle(),
                    data.as_ptr().cast_mut(),
                    data_len,
                    buf.as_mut_ptr(),
                    &mut len,
                )
            };
            Ok((Rv::from(rv), len))
        };
        match run_into(out)? {
            (Rv::Ok, len) => Ok(usize::try_from(len)?),
            (Rv::Error(RvError::BufferTooSmall), wanted) => {
                // Ends the operation into a buffer of the length the module
                // asked for; dropped unread, zeroed (it may hold a plaintext).
                let mut end = vec![0u8; usize::try_from(wanted)?];
                let _ = run_into(&mut end);
                zeroize::Zeroize::zeroize(&mut end);
                Err(Error::Pkcs11(RvError::BufferTooSmall, run_fn))
            }
            (Rv::Error(e), _) => Err(Error::Pkcs11(e, run_fn)),
        }
    }
}
