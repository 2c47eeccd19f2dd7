//! The intercepted PKCS#11 entry points: each asks the control file what to
//! do, then forwards to the real module with the caller's arguments
//! unchanged, or fails the way a sick token would.

use cryptoki_sys::{
    CK_ATTRIBUTE, CK_BYTE, CK_FLAGS, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_INFO,
    CK_MECHANISM_TYPE, CK_NOTIFY, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SESSION_INFO,
    CK_SLOT_ID, CK_ULONG, CK_USER_TYPE, CK_UTF8CHAR, CKR_ARGUMENTS_BAD, CKR_BUFFER_TOO_SMALL,
    CKR_CRYPTOKI_NOT_INITIALIZED, CKR_FUNCTION_NOT_SUPPORTED, CKR_MECHANISM_INVALID, CKR_OK,
};

use crate::control;
use crate::module;
use crate::plan::{Action, Call};

/// Carries out `action` for a call on `session`; `Some(rv)` is the answer
/// when the call must not reach the real module.
fn apply(
    real: &CK_FUNCTION_LIST,
    action: Action,
    session: Option<CK_SESSION_HANDLE>,
) -> Option<CK_RV> {
    match action {
        Action::Forward => None,
        Action::Fail(rv) => Some(rv),
        Action::CloseSessionThenFail(rv) => {
            if let (Some(close), Some(h)) = (real.C_CloseSession, session) {
                // SAFETY: the real module's C_CloseSession on a handle the
                // caller gave us; a stale handle only yields an error code.
                let _ = unsafe { close(h) };
            }
            Some(rv)
        }
        Action::LogoutThenFail(rv) => {
            if let (Some(logout), Some(h)) = (real.C_Logout, session) {
                // SAFETY: as above, C_Logout on the caller's handle; "not
                // logged in" answers are expected and ignored.
                let _ = unsafe { logout(h) };
            }
            Some(rv)
        }
    }
}

/// Defines one interceptor per entry point whose first argument is the
/// session handle, and `intercept_session_calls` that installs them.
macro_rules! interceptors {
    ($($name:ident = $field:ident, $call:expr, ($($arg:ident: $ty:ty),*);)*) => {
        $(
            unsafe extern "C" fn $name(session: CK_SESSION_HANDLE $(, $arg: $ty)*) -> CK_RV {
                let Some(real) = module::real() else {
                    return CKR_CRYPTOKI_NOT_INITIALIZED;
                };
                if let Some(rv) = apply(real, control::decide($call), Some(session)) {
                    return rv;
                }
                match real.$field {
                    // SAFETY: the caller's arguments, unchanged, to the real
                    // module's entry point of the same signature.
                    Some(f) => unsafe { f(session $(, $arg)*) },
                    None => CKR_FUNCTION_NOT_SUPPORTED,
                }
            }
        )*

        fn intercept_session_calls(list: &mut CK_FUNCTION_LIST) {
            $(
                if list.$field.is_some() {
                    list.$field = Some($name);
                }
            )*
        }

        /// Names of the intercepted entry points (for the documentation and
        /// tests).
        pub const INTERCEPTED: &[&str] = &["C_OpenSession", $(stringify!($field)),*];
    };
}

interceptors! {
    login = C_Login, Call::Login, (user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG);
    session_info = C_GetSessionInfo, Call::SessionInfo, (info: *mut CK_SESSION_INFO);
    generate_random = C_GenerateRandom, Call::Random, (out: *mut CK_BYTE, len: CK_ULONG);
    encrypt_init = C_EncryptInit, Call::Object, (m: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    encrypt = C_Encrypt, Call::Object,
        (data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    decrypt_init = C_DecryptInit, Call::Object, (m: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    decrypt = C_Decrypt, Call::Object,
        (data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    sign_init = C_SignInit, Call::Object, (m: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    sign = C_Sign, Call::Object,
        (data: *mut CK_BYTE, len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    derive_key = C_DeriveKey, Call::Object, (m: *mut CK_MECHANISM, base: CK_OBJECT_HANDLE,
        template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    unwrap_key = C_UnwrapKey, Call::Object, (m: *mut CK_MECHANISM, unwrapping: CK_OBJECT_HANDLE,
        wrapped: *mut CK_BYTE, wrapped_len: CK_ULONG, template: *mut CK_ATTRIBUTE,
        count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    generate_key = C_GenerateKey, Call::Object, (m: *mut CK_MECHANISM,
        template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    create_object = C_CreateObject, Call::Object,
        (template: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE);
    destroy_object = C_DestroyObject, Call::Object, (object: CK_OBJECT_HANDLE);
    get_attribute_value = C_GetAttributeValue, Call::Object,
        (object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    find_objects_init = C_FindObjectsInit, Call::Object,
        (template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    find_objects = C_FindObjects, Call::Object,
        (found: *mut CK_OBJECT_HANDLE, max: CK_ULONG, count: *mut CK_ULONG);
}

/// C_OpenSession has no session handle yet, so only a device fault applies.
unsafe extern "C" fn open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    application: *mut std::os::raw::c_void,
    notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    let Some(real) = module::real() else {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    };
    if let Some(rv) = apply(real, control::decide(Call::OpenSession), None) {
        return rv;
    }
    match real.C_OpenSession {
        // SAFETY: the caller's arguments, unchanged, to the real module.
        Some(f) => unsafe { f(slot, flags, application, notify, session) },
        None => CKR_FUNCTION_NOT_SUPPORTED,
    }
}

/// Environment variable: mechanisms (hex, `0x…`, comma-separated) this
/// module pretends not to have: `C_GetMechanismList` leaves them out and
/// `C_GetMechanismInfo` answers `CKR_MECHANISM_INVALID` for them, as a
/// module without them would.
pub const HIDE_MECHANISMS_ENV: &str = "PKCS11_FAULTS_HIDE_MECHANISMS";

fn hidden() -> &'static [CK_MECHANISM_TYPE] {
    static HIDDEN: std::sync::OnceLock<Vec<CK_MECHANISM_TYPE>> = std::sync::OnceLock::new();
    HIDDEN.get_or_init(|| {
        std::env::var(HIDE_MECHANISMS_ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|m| {
                let m = m.trim();
                let hex = m.strip_prefix("0x").unwrap_or(m);
                CK_MECHANISM_TYPE::from_str_radix(hex, 16).ok()
            })
            .collect()
    })
}

unsafe extern "C" fn get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    let Some(real) = module::real() else {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    };
    let Some(f) = real.C_GetMechanismList else {
        return CKR_FUNCTION_NOT_SUPPORTED;
    };
    if count.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let mut n: CK_ULONG = 0;
    // SAFETY: the real module's length query with a valid out-pointer.
    let rv = unsafe { f(slot, std::ptr::null_mut(), &mut n) };
    if rv != CKR_OK {
        return rv;
    }
    let mut all = vec![0 as CK_MECHANISM_TYPE; n as usize];
    // SAFETY: `all` has room for the `n` mechanisms the module announced.
    let rv = unsafe { f(slot, all.as_mut_ptr(), &mut n) };
    if rv != CKR_OK {
        return rv;
    }
    all.truncate(n as usize);
    all.retain(|m| !hidden().contains(m));
    // SAFETY: `count` is non-null and, per the PKCS#11 contract, valid.
    let room = unsafe { *count };
    unsafe { *count = all.len() as CK_ULONG };
    if list.is_null() {
        return CKR_OK;
    }
    if (room as usize) < all.len() {
        return CKR_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's buffer holds `room` >= all.len() entries.
    unsafe { std::ptr::copy_nonoverlapping(all.as_ptr(), list, all.len()) };
    CKR_OK
}

unsafe extern "C" fn get_mechanism_info(
    slot: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    let Some(real) = module::real() else {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    };
    if hidden().contains(&mechanism) {
        return CKR_MECHANISM_INVALID;
    }
    match real.C_GetMechanismInfo {
        // SAFETY: the caller's arguments, unchanged, to the real module.
        Some(f) => unsafe { f(slot, mechanism, info) },
        None => CKR_FUNCTION_NOT_SUPPORTED,
    }
}

/// `real` with the intercepted entries replaced; every other entry is the
/// real module's own function pointer.
pub(crate) fn intercept(real: CK_FUNCTION_LIST) -> CK_FUNCTION_LIST {
    let mut list = real;
    intercept_session_calls(&mut list);
    if list.C_OpenSession.is_some() {
        list.C_OpenSession = Some(open_session);
    }
    if list.C_GetMechanismList.is_some() {
        list.C_GetMechanismList = Some(get_mechanism_list);
    }
    if list.C_GetMechanismInfo.is_some() {
        list.C_GetMechanismInfo = Some(get_mechanism_info);
    }
    list
}
