//! The built cdylib against a temp SoftHSM2 token, through cryptoki: each
//! fault behaves as a real token would (the session is really closed, the
//! application really logged out) and the token works again once healed.
//! One test function: the environment is process-wide and the module is
//! loaded once.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::types::AuthPin;
use vault_testkit::{Token, build_package, softhsm_module};

/// target/<profile>/libpkcs11_faults.so, built first: `cargo test` builds
/// the rlib for this test, not the cdylib.
fn shim_path() -> PathBuf {
    let so = build_package("pkcs11-faults").join("libpkcs11_faults.so");
    assert!(so.exists(), "{} not built", so.display());
    so
}

/// Writes the plan atomically and waits until the shim must have seen it.
fn set_plan(control: &Path, line: &str) {
    let tmp = control.with_extension("tmp");
    std::fs::write(&tmp, format!("{line}\n")).unwrap();
    std::fs::rename(&tmp, control).unwrap();
    wait_for_recheck();
}

/// Sleeps past the shim's re-read interval. Not a guess at the machine's
/// speed: the shim looks at the control file again on the first call at
/// least `RECHECK` after its last look, by its own monotonic clock, so
/// every call made after this pause sees a change made before it, however
/// loaded the machine.
fn wait_for_recheck() {
    std::thread::sleep(pkcs11_faults::RECHECK * 2);
}

fn injected(control: &Path) -> u64 {
    std::fs::read_to_string(pkcs11_faults::injected_path(control))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn login(s: &Session, pin: &str) {
    match s.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
}

fn aes_key(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Encrypt(true),
        ],
    )
    .expect("generate key")
}

fn encrypt(s: &Session, key: ObjectHandle) -> Result<Vec<u8>, Error> {
    s.encrypt(&Mechanism::AesEcb, key, &[0u8; 16])
}

#[test]
fn faults_behave_like_a_real_token_and_heal() {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::create(dir.path(), "shim-test");
    let pin = token.pin();
    let control = dir.path().join("faults");
    // SAFETY: the only test in this binary, before any module is loaded.
    unsafe {
        token.export_conf();
        std::env::set_var(pkcs11_faults::MODULE_ENV, softhsm_module());
        std::env::set_var(pkcs11_faults::FILE_ENV, &control);
    }

    assert_other_entries_forward_untouched();

    let ctx = Pkcs11::new(shim_path()).expect("load the shim");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize forwarded");
    let slot = ctx.get_slots_with_token().unwrap()[0];
    // A second session keeps the application's login when the shim closes
    // the first (closing a slot's last session logs out).
    let keeper = ctx.open_rw_session(slot).unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    login(&s, &pin);
    let key = aes_key(&s);
    encrypt(&s, key).expect("no plan: forwarded");

    // device: two failures without reaching the module, then forwarded.
    set_plan(&control, "fault=device after=1 count=2");
    assert!(
        s.generate_random_vec(8).is_ok(),
        "after=1: the first call passes"
    );
    assert_eq!(rv(s.generate_random_vec(8)), RvError::DeviceError);
    assert_eq!(rv(ctx.open_rw_session(slot)), RvError::DeviceError);
    encrypt(&s, key).expect("count used up");
    assert_eq!(injected(&control), 2);

    // session: the handle is really closed in SoftHSM.
    set_plan(&control, "fault=session after=0 count=1");
    assert_eq!(rv(encrypt(&s, key)), RvError::SessionHandleInvalid);
    assert_eq!(
        rv(s.get_session_info()),
        RvError::SessionHandleInvalid,
        "the real module no longer knows the session"
    );
    let s = ctx.open_rw_session(slot).unwrap();
    let key = aes_key(&s);
    encrypt(&s, key).expect("a new session works");
    assert_eq!(injected(&control), 3);

    // pin_locked: really logged out, login refused until healed.
    set_plan(&control, "fault=pin_locked after=0 count=max");
    assert_eq!(rv(encrypt(&s, key)), RvError::UserNotLoggedIn);
    assert_eq!(
        keeper.get_session_info().unwrap().session_state(),
        SessionState::RwPublic,
        "every session of the application dropped to public"
    );
    assert_eq!(
        rv(s.login(UserType::User, Some(&AuthPin::new(pin.clone().into())))),
        RvError::PinLocked
    );
    assert!(s.generate_random_vec(8).is_ok(), "random needs no login");
    set_plan(&control, "off");
    login(&s, &pin);
    let key = aes_key(&s);
    encrypt(&s, key).expect("healed");
    assert_eq!(injected(&control), 5);

    // A missing control file is off too.
    std::fs::remove_file(&control).unwrap();
    wait_for_recheck();
    encrypt(&s, key).expect("no control file: forwarded");
    assert_eq!(injected(&control), 5);
}

/// Entries the shim does not intercept are the real module's own pointers
/// (checked on the rlib copy of the shim, in-process).
fn assert_other_entries_forward_untouched() {
    let mut ours: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    let rv = unsafe { pkcs11_faults::C_GetFunctionList(&mut ours) };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
    // SAFETY: non-null on CKR_OK, pointing at the shim's static list.
    let ours = unsafe { *ours };
    // SAFETY: loading SoftHSM2 again returns the same mapped library.
    let lib = unsafe { libloading::Library::new(softhsm_module()) }.unwrap();
    type Get =
        unsafe extern "C" fn(*mut *mut cryptoki_sys::CK_FUNCTION_LIST) -> cryptoki_sys::CK_RV;
    // SAFETY: the standard PKCS#11 entry point signature.
    let get = unsafe { lib.get::<Get>(b"C_GetFunctionList\0") }.unwrap();
    let mut real: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { get(&mut real) }, cryptoki_sys::CKR_OK);
    // SAFETY: non-null on CKR_OK.
    let real = unsafe { *real };
    let same = |a: Option<usize>, b: Option<usize>| a.is_some() && a == b;
    assert!(same(
        ours.C_GetSlotList.map(|f| f as usize),
        real.C_GetSlotList.map(|f| f as usize)
    ));
    assert!(same(
        ours.C_CloseSession.map(|f| f as usize),
        real.C_CloseSession.map(|f| f as usize)
    ));
    assert!(same(
        ours.C_Logout.map(|f| f as usize),
        real.C_Logout.map(|f| f as usize)
    ));
    assert!(same(
        ours.C_Initialize.map(|f| f as usize),
        real.C_Initialize.map(|f| f as usize)
    ));
    assert_ne!(
        ours.C_Sign.map(|f| f as usize),
        real.C_Sign.map(|f| f as usize)
    );
    assert_ne!(
        ours.C_OpenSession.map(|f| f as usize),
        real.C_OpenSession.map(|f| f as usize)
    );
    assert!(pkcs11_faults::INTERCEPTED.contains(&"C_Sign"));
}
