//! Opening the HSM: loading the PKCS#11 module once per process, finding the
//! token by label, checking the PIN. Every failure says which module, which
//! token and what to run to fix it (the most common PKCS#11 complaint is a
//! bare `CKR_...` at start-up).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::slot::Slot;

use crate::{HsmError, HsmResult};

/// Modules loaded and initialised by this process. `C_Initialize` is
/// process-wide, so a second `Pkcs11Hsm` on the same module must share the
/// context instead of initialising again.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// The initialised context of `module`, loading it on first use.
pub(crate) fn load_module(module: &Path) -> HsmResult<Pkcs11> {
    let mut loaded = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ctx)) = loaded.iter().find(|(path, _)| path == module) {
        return Ok(ctx.clone());
    }
    if !module.exists() {
        return Err(HsmError::Unavailable(format!(
            "PKCS#11 module {} not found: install SoftHSM2 (`apt-get install softhsm2`) \
             or set [hsm] module to your HSM's PKCS#11 library",
            module.display()
        )));
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        HsmError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {e}; set [hsm] module to a PKCS#11 library",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another library) initialised it.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            let conf = std::env::var("SOFTHSM2_CONF").unwrap_or_else(|_| "unset".to_owned());
            return Err(HsmError::Unavailable(format!(
                "C_Initialize failed for PKCS#11 module {}: {}; for SoftHSM2 check that \
                 SOFTHSM2_CONF (now: {conf}) names a readable softhsm2.conf whose tokendir exists \
                 (`softhsm/create-token.sh DIR` writes both)",
                module.display(),
                short(&e)
            )));
        }
    }
    loaded.push((module.to_owned(), ctx.clone()));
    Ok(ctx)
}

/// Calls `C_Finalize` on `module` if this process loaded it. Call once at
/// process exit, after every `Pkcs11Hsm` and `HsmPool` on it is dropped:
/// finalising releases every session of every instance on that module.
pub fn finalize_module(module: &Path) -> HsmResult<()> {
    let ctx = {
        let mut loaded = MODULES.lock().unwrap_or_else(|p| p.into_inner());
        match loaded.iter().position(|(path, _)| path == module) {
            Some(idx) => loaded.swap_remove(idx).1,
            None => return Ok(()),
        }
    };
    ctx.finalize()
        .map_err(|e| HsmError::Other(format!("C_Finalize on {}: {}", module.display(), short(&e))))
}

/// The slot holding the token labelled `label`. Never by slot number: slot
/// numbers change when tokens are added.
pub(crate) fn find_slot(ctx: &Pkcs11, module: &Path, label: &str) -> HsmResult<Slot> {
    let slots = ctx.get_slots_with_token().map_err(|e| {
        HsmError::Unavailable(format!(
            "cannot list slots of PKCS#11 module {}: {}",
            module.display(),
            short(&e)
        ))
    })?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let found = info.label().trim_end();
        if found == label {
            return Ok(slot);
        }
        if info.token_initialized() {
            seen.push(format!("{found:?}"));
        }
    }
    let seen = if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    };
    Err(HsmError::Unavailable(format!(
        "no token labelled {label:?} in PKCS#11 module {} (tokens found: {seen}); create it with \
         `softhsm2-util --init-token --free --label {label}` or `softhsm/create-token.sh DIR {label}`, \
         or set [hsm] token_label",
        module.display()
    )))
}

/// Turns a failed first login into a start-up message. Never includes the PIN.
pub(crate) fn login_error(e: Error, module: &Path, label: &str) -> HsmError {
    let m = module.display();
    match e {
        Error::Pkcs11(RvError::PinIncorrect, _) => HsmError::Unavailable(format!(
            "wrong user PIN for token {label:?} (module {m}): check [hsm] pin_file or \
             VAULTD_HSM_PIN"
        )),
        Error::Pkcs11(RvError::PinLocked, _) => HsmError::Unavailable(format!(
            "user PIN of token {label:?} (module {m}) is locked: the security officer must reset \
             it (`pkcs11-tool --module {m} --token-label {label} --login --login-type so --init-pin`)"
        )),
        Error::Pkcs11(RvError::UserPinNotInitialized, _) => HsmError::Unavailable(format!(
            "token {label:?} (module {m}) has no user PIN yet: initialise it \
             (`softhsm2-util --init-token --free --label {label}` sets one)"
        )),
        Error::Pkcs11(RvError::PinExpired, _) => HsmError::Unavailable(format!(
            "user PIN of token {label:?} (module {m}) has expired: change it with the token's tools"
        )),
        other => HsmError::Unavailable(format!(
            "cannot log in to token {label:?} (module {m}): {}",
            short(&other)
        )),
    }
}

/// `C_Function: RvName`, without cryptoki's paragraph-long descriptions.
pub(crate) fn short(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, function) => format!("{function} returned {rv:?}"),
        other => other.to_string(),
    }
}
