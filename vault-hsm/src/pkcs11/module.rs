//! The loaded PKCS#11 module, shared by every [`super::Pkcs11Hsm`] on it, and
//! its periodic re-initialisation.
//!
//! Why re-initialise: SoftHSM2 never frees a destroyed session object. Its
//! `SessionObjectStore` keeps every object it ever made (about 240 bytes
//! each once destroyed) until `C_Finalize`, and the normative cryptogram
//! derives one session key per payment, so the daemon's memory would grow
//! with every payment. After `reinit_after_objects` session objects,
//! [`Module::maybe_reinitialize`] waits for the calls in flight, calls
//! `C_Finalize` and `C_Initialize`, and lets calls go on: every thread then
//! opens and logs in a new session, and every cached object handle and key
//! copy of the old generation is forgotten (a handle number may name another
//! object after a re-initialisation, so none may be used again).
//!
//! Every call into the module runs inside [`Module::enter`] (shared;
//! re-entrant per thread), the re-initialisation under the exclusive side of
//! the same lock.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use super::locks::{read, write};
use super::oneshot::OneShot;
use super::startup::short;
use crate::{HsmError, HsmResult};

/// SoftHSM2's default: re-initialise after this many session objects
/// (about 48 MB of objects SoftHSM2 keeps after their destruction). Each
/// re-initialisation pauses HSM calls for as long as SoftHSM2 takes to load
/// the token again, about 60 µs per token object (0.6 s with 10,000 token
/// keys on tmpfs), so the budget trades memory for pauses.
pub const SOFTHSM_REINIT_AFTER_OBJECTS: u64 = 200_000;

pub(crate) struct Module {
    pub(crate) path: PathBuf,
    pub(crate) ctx: Pkcs11,
    /// Its sign, encrypt and decrypt without a length query.
    pub(crate) oneshot: OneShot,
    /// Shared by every call (outermost per thread), exclusive while the
    /// module is re-initialised. The flag: `C_Initialize` succeeded.
    gate: RwLock<bool>,
    /// Bumped by every re-initialisation: sessions, handles and copies of
    /// an older generation are dead.
    generation: AtomicU64,
    /// Session objects created since the last (re-)initialisation.
    objects: AtomicU64,
    /// Re-initialise after this many session objects; 0: never.
    reinit_after: AtomicU64,
    /// Re-initialisations done (for tests and diagnostics).
    reinits: AtomicU64,
    /// How long the last one held calls, in ms.
    last_pause_ms: AtomicU64,
    /// The module is SoftHSM2 (`C_GetInfo`'s manufacturer).
    softhsm: bool,
}

thread_local! {
    /// Modules whose gate this thread holds (calls nest: an operation may
    /// call another through the same session layer).
    static ENTERED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Proof that this thread is inside the module's gate; see [`Module::enter`].
pub(crate) struct Entered<'a> {
    module: &'a Module,
    guard: Option<RwLockReadGuard<'a, bool>>,
    generation: u64,
}

impl Entered<'_> {
    /// The generation the calls made under this guard belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Leaves the gate; the outermost guard then re-initialises the module
    /// if its object budget is spent.
    pub(crate) fn leave(self) {
        let outermost = self.guard.is_some();
        let module = self.module;
        drop(self);
        if outermost {
            module.maybe_reinitialize();
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            let id = self.module.id();
            let _ = ENTERED.try_with(|e| e.borrow_mut().retain(|m| *m != id));
        }
    }
}

impl Module {
    /// Loads and initialises the module at `path`.
    pub(crate) fn load(path: &Path) -> HsmResult<Module> {
        if !path.exists() {
            return Err(HsmError::Unavailable(format!(
                "PKCS#11 module {} not found: install SoftHSM2 (`apt-get install softhsm2`) \
                 or set [hsm] module to your HSM's PKCS#11 library",
                path.display()
            )));
        }
        let ctx = Pkcs11::new(path).map_err(|e| {
            HsmError::Unavailable(format!(
                "cannot load PKCS#11 module {}: {e}; set [hsm] module to a PKCS#11 library",
                path.display()
            ))
        })?;
        let oneshot = OneShot::load(path).map_err(|e| {
            HsmError::Unavailable(format!(
                "cannot read the function list of PKCS#11 module {}: {e}",
                path.display()
            ))
        })?;
        initialize(&ctx).map_err(|e| {
            let conf = std::env::var("SOFTHSM2_CONF").unwrap_or_else(|_| "unset".to_owned());
            HsmError::Unavailable(format!(
                "C_Initialize failed for PKCS#11 module {}: {}; for SoftHSM2 check that \
                 SOFTHSM2_CONF (now: {conf}) names a readable softhsm2.conf whose tokendir exists \
                 (`softhsm/create-token.sh DIR` writes both)",
                path.display(),
                short(&e)
            ))
        })?;
        let softhsm = ctx
            .get_library_info()
            .is_ok_and(|info| info.manufacturer_id().contains("SoftHSM"));
        Ok(Module {
            path: path.to_owned(),
            ctx,
            oneshot,
            gate: RwLock::new(true),
            generation: AtomicU64::new(1),
            objects: AtomicU64::new(0),
            reinit_after: AtomicU64::new(if softhsm {
                SOFTHSM_REINIT_AFTER_OBJECTS
            } else {
                0
            }),
            reinits: AtomicU64::new(0),
            last_pause_ms: AtomicU64::new(0),
            softhsm,
        })
    }

    pub(crate) fn is_softhsm(&self) -> bool {
        self.softhsm
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Enters the gate for one call (re-entrant on this thread). Fails when
    /// the module could not be initialised again after a re-initialisation.
    pub(crate) fn enter(&self) -> HsmResult<Entered<'_>> {
        let id = self.id();
        let nested = ENTERED
            .try_with(|e| e.borrow().contains(&id))
            .unwrap_or(false);
        if nested {
            return Ok(Entered {
                module: self,
                guard: None,
                generation: self.generation(),
            });
        }
        loop {
            let guard = read(&self.gate);
            if *guard {
                let _ = ENTERED.try_with(|e| e.borrow_mut().push(id));
                return Ok(Entered {
                    module: self,
                    generation: self.generation(),
                    guard: Some(guard),
                });
            }
            drop(guard);
            // The last re-initialisation left the module uninitialised: try
            // again, once per caller, until it works.
            let mut initialized = write(&self.gate);
            if !*initialized {
                initialize(&self.ctx).map_err(|e| {
                    HsmError::Unavailable(format!(
                        "PKCS#11 module {} is not initialised: {}",
                        self.path.display(),
                        short(&e)
                    ))
                })?;
                self.generation.fetch_add(1, Ordering::AcqRel);
                *initialized = true;
            }
        }
    }

    /// The current generation (see the module docs).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts `n` session objects made (derived keys, key copies).
    pub(crate) fn made_session_objects(&self, n: u64) {
        self.objects.fetch_add(n, Ordering::Relaxed);
    }

    /// Re-initialise after this many session objects; 0: never.
    pub(crate) fn set_reinit_after(&self, objects: u64) {
        self.reinit_after.store(objects, Ordering::Relaxed);
    }

    pub(crate) fn reinit_after(&self) -> u64 {
        self.reinit_after.load(Ordering::Relaxed)
    }

    pub(crate) fn reinits(&self) -> u64 {
        self.reinits.load(Ordering::Relaxed)
    }

    /// Session objects made since the last (re-)initialisation.
    pub(crate) fn session_objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    pub(crate) fn last_pause_ms(&self) -> u64 {
        self.last_pause_ms.load(Ordering::Relaxed)
    }

    /// Re-initialises the module when its session-object budget is spent.
    /// Call outside the gate.
    fn maybe_reinitialize(&self) {
        let budget = self.reinit_after();
        if budget == 0 || self.objects.load(Ordering::Relaxed) < budget {
            return;
        }
        let mut initialized = write(&self.gate);
        // Another thread may have done it while this one waited.
        if !*initialized || self.objects.load(Ordering::Relaxed) < budget {
            return;
        }
        let started = Instant::now();
        let objects = self.objects.swap(0, Ordering::Relaxed);
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(error = %short(&e), "C_Finalize before re-initialising the HSM module failed");
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reinits.fetch_add(1, Ordering::Relaxed);
        let result = initialize(&self.ctx);
        let pause_ms = started.elapsed().as_millis() as u64;
        self.last_pause_ms.store(pause_ms, Ordering::Relaxed);
        match result {
            Ok(()) => tracing::info!(
                session_objects = objects,
                pause_ms,
                "re-initialised the PKCS#11 module to release the session objects it keeps"
            ),
            Err(e) => {
                *initialized = false;
                tracing::error!(
                    error = %short(&e),
                    "C_Initialize after a re-initialisation failed; HSM calls fail until it works"
                );
            }
        }
    }
}

fn initialize(ctx: &Pkcs11) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another library) initialised it.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}
