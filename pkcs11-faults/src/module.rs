//! Loading the real module (`PKCS11_FAULTS_MODULE`) and the exported
//! `C_GetFunctionList`, which hands out a copy of the real function list with
//! the intercepted entries replaced.

use std::ptr;
use std::sync::OnceLock;

use cryptoki_sys::{CK_FUNCTION_LIST, CK_RV, CKR_ARGUMENTS_BAD, CKR_GENERAL_ERROR, CKR_OK};

use crate::calls;

/// Environment variable naming the real PKCS#11 module.
pub const MODULE_ENV: &str = "PKCS11_FAULTS_MODULE";

struct Loaded {
    /// Kept loaded for the life of the process: `real` points into it.
    _library: libloading::Library,
    real: CK_FUNCTION_LIST,
    shim: CK_FUNCTION_LIST,
}

/// `None` when loading failed; a failure is final for this process.
static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();

type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;

fn load() -> Option<Loaded> {
    let path = std::env::var_os(MODULE_ENV)?;
    // SAFETY: loading runs the module's initialisers; the test names a
    // trusted PKCS#11 module (SoftHSM2) and nothing else.
    let library = unsafe { libloading::Library::new(&path) }.ok()?;
    // SAFETY: every PKCS#11 module exports C_GetFunctionList with this
    // signature (PKCS#11 2.40, section 5.2).
    let get: GetFunctionList = unsafe { library.get::<GetFunctionList>(b"C_GetFunctionList\0") }
        .ok()
        .map(|symbol| *symbol)?;
    let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: `list` is a valid place for the out-pointer.
    let rv = unsafe { get(&mut list) };
    if rv != CKR_OK || list.is_null() {
        return None;
    }
    // SAFETY: the module returned a non-null pointer to its static function
    // list, valid while the library stays loaded (it does, in `Loaded`).
    let real = unsafe { *list };
    let mut shim = calls::intercept(real);
    shim.C_GetFunctionList = Some(C_GetFunctionList);
    Some(Loaded {
        _library: library,
        real,
        shim,
    })
}

/// The real module's function list, once a caller has asked for ours.
pub(crate) fn real() -> Option<&'static CK_FUNCTION_LIST> {
    LOADED.get()?.as_ref().map(|l| &l.real)
}

/// The PKCS#11 entry point: loads the real module on first use.
///
/// # Safety
/// `list` must be null or valid for writing one pointer (PKCS#11 contract).
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let Some(loaded) = LOADED.get_or_init(load) else {
        return CKR_GENERAL_ERROR;
    };
    // PKCS#11 hands out `CK_FUNCTION_LIST_PTR` (mutable by type); callers only
    // read it.
    let shim = ptr::from_ref(&loaded.shim).cast_mut();
    // SAFETY: `list` is non-null and, per the contract, valid for a write.
    unsafe { list.write(shim) };
    CKR_OK
}
