//! Opening the HSM: loading the PKCS#11 module once per process, finding the
//! token by label, checking the PIN. Every failure says which module, which
//! token and what to run to fix it (the most common PKCS#11 complaint is a
//! bare `CKR_...` at start-up).

use std::path::Path;
use std::sync::{Arc, Mutex};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::slot::Slot;

pub(crate) use super::errors::short;
use super::locks::lock;
use super::module::Module;
use crate::{HsmError, HsmResult};

/// Modules loaded and initialised by this process. `C_Initialize` is
/// process-wide, so a second `Pkcs11Hsm` on the same module must share the
/// context (and its re-initialisation gate) instead of initialising again.
static MODULES: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

/// The initialised module at `path`, loading it on first use.
pub(crate) fn load_module(path: &Path) -> HsmResult<Arc<Module>> {
    let mut loaded = lock(&MODULES);
    if let Some(module) = loaded.iter().find(|m| m.path == path) {
        return Ok(Arc::clone(module));
    }
    let module = Module::load(path)?;
    loaded.push(Arc::clone(&module));
    Ok(module)
}

/// Call before the process exits: every loaded module stops starting
/// re-initialisations, and a standby preparation under way is waited for
/// (see `Module::quiesce`). HSM calls still work, on the copy in use.
pub fn quiesce_modules() {
    let loaded: Vec<Arc<Module>> = lock(&MODULES).clone();
    for module in loaded {
        module.quiesce();
    }
}

/// Calls `C_Finalize` on `module` if this process loaded it. Call once at
/// process exit, after every `Pkcs11Hsm` and `HsmPool` on it is dropped:
/// finalising releases every session of every instance on that module.
pub fn finalize_module(module: &Path) -> HsmResult<()> {
    let found = {
        let mut loaded = lock(&MODULES);
        match loaded.iter().position(|m| m.path == module) {
            Some(idx) => loaded.swap_remove(idx),
            None => return Ok(()),
        }
    };
    found
        .finalize_all()
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

/// The mechanisms vaultd uses, each with what it is for.
pub const REQUIRED_MECHANISMS: &[(cryptoki::mechanism::MechanismType, &str, &str)] = {
    use cryptoki::mechanism::MechanismType as M;
    &[
        (M::AES_GCM, "CKM_AES_GCM", "sealing PANs and token numbers"),
        (
            M::SHA256_HMAC,
            "CKM_SHA256_HMAC",
            "fingerprints and the audit chain",
        ),
        (
            M::AES_KEY_WRAP,
            "CKM_AES_KEY_WRAP",
            "unwrapping network token keys",
        ),
        (
            M::AES_CBC_ENCRYPT_DATA,
            "CKM_AES_CBC_ENCRYPT_DATA",
            "deriving cryptogram session keys",
        ),
        (M::AES_CMAC, "CKM_AES_CMAC", "cryptogram MACs"),
    ]
};

/// Refuses a module that lacks a mechanism vaultd needs, naming it, before
/// any request could fail on it with `internal`. Asked mechanism by
/// mechanism (`C_GetMechanismInfo`): cryptoki's `C_GetMechanismList`
/// logs an ERROR line for every mechanism of the module it has no name
/// for (30 of them for SoftHSM2, at every start).
pub(crate) fn check_mechanisms(ctx: &Pkcs11, slot: Slot, module: &Path) -> HsmResult<()> {
    let mut missing = Vec::new();
    for (m, name, why) in REQUIRED_MECHANISMS {
        match ctx.get_mechanism_info(slot, *m) {
            Ok(_) => {}
            Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => {
                missing.push(format!("{name} ({why})"));
            }
            Err(e) => {
                return Err(HsmError::Unavailable(format!(
                    "C_GetMechanismInfo({name}) on {}: {}",
                    module.display(),
                    short(&e)
                )));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HsmError::Other(format!(
            "the PKCS#11 module {} does not offer {}: vaultd cannot run on it",
            module.display(),
            missing.join(", ")
        )))
    }
}
