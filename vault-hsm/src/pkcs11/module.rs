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
//!
//! **The standby copy** (SoftHSM2, `reinit_standby`, on by default): done in
//! place, the re-initialisation holds every call while SoftHSM2 loads its
//! token again, and then the first calls learn every key handle and make
//! the key copies again (1.2–2 s without an answer with 10,000 token keys).
//! Instead, a second copy of the library (its bytes in a `memfd`, so the
//! loader maps a second, independent SoftHSM2) is initialised beside the
//! one in use by a background thread, which also logs every instance in,
//! learns every key handle in one pass and makes the key copies in use
//! (see `StandbyPreparer::prepare` in `session`). Calls are held only for the switch; the
//! old copy is finalised after it, freeing its session objects, and is the
//! standby for the next round. Two copies of SoftHSM2 in one process do not
//! exclude each other's file accesses (POSIX record locks are per process),
//! so the standby's view of the token is used only if no token object was
//! created or destroyed while it loaded (see [`token_changes`]); otherwise
//! that round re-initialises in place, as without the standby. Token
//! objects are destroyed by the pools' background work (the `nt.*` objects
//! of tokens stored by an earlier release, after their key refresh), which
//! is held while the copy loads ([`crate::pool::BackgroundHold`]), so only
//! an admin key operation sends a round back to the in-place way.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, Weak};
use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use super::errors::short;
use super::locks::{lock, read, write};
use super::oneshot::OneShot;
use crate::pool::BackgroundHold;
use crate::{HsmError, HsmResult};

/// SoftHSM2's default: re-initialise after this many session objects
/// (about 144 MB of objects SoftHSM2 keeps after their destruction). Each
/// re-initialisation costs the standby copy's warm-up, about 2 s of one core
/// with 20,000 token keys (or, in place, a pause of ~60 µs per token
/// object), so the budget trades memory for that work: at 200,000, under
/// full payment load, the warm-ups every ~15 s cost 7–10% of the payments
/// (BENCHMARKS.md, session 8).
pub const SOFTHSM_REINIT_AFTER_OBJECTS: u64 = 600_000;

/// Background work held by [`Module::hold_background`]; released on drop.
struct HeldBackground(Vec<Arc<dyn BackgroundHold>>);

/// An instance on this module that readies itself on a standby copy before
/// the switch (`session::SessionSource`; a trait so that this module, which
/// the session layer is built on, does not depend on it).
pub(crate) trait StandbyPreparer: Send + Sync {
    /// Logs in on `lane`, learns the key handles and copies the keys in
    /// use, for generation `generation`; how many copies it made.
    fn prepare(&self, lane: &Lane, lane_index: usize, generation: u64) -> Result<u64, String>;
    /// Drops what `prepare` made (the standby was not used).
    fn discard_prepared(&self);
}

impl Drop for HeldBackground {
    fn drop(&mut self) {
        for h in &self.0 {
            h.release();
        }
    }
}

/// One loaded copy of the library.
pub(crate) struct Lane {
    pub(crate) ctx: Pkcs11,
    /// Its sign, encrypt and decrypt without a length query.
    pub(crate) oneshot: OneShot,
    /// The standby copy's bytes (a `memfd`), kept open while it is mapped.
    _image: Option<std::fs::File>,
}

/// Token objects created or destroyed in this process (see
/// [`super::creating_token_object`]).
static TOKEN_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Counts a token-object change; call with the token-object lock held,
/// before the change.
pub(crate) fn token_object_changing() {
    TOKEN_CHANGES.fetch_add(1, Ordering::AcqRel);
}

/// How many token-object changes began so far.
pub(crate) fn token_changes() -> u64 {
    TOKEN_CHANGES.load(Ordering::Acquire)
}

pub(crate) struct Module {
    pub(crate) path: PathBuf,
    /// The copy loaded from `path` (lane 0) and the standby copy (lane 1,
    /// loaded at the first re-initialisation that uses it; `None` if it
    /// could not be loaded).
    primary: Lane,
    standby: OnceLock<Option<Lane>>,
    /// The lane calls use; changed only under the gate's exclusive side.
    active: AtomicUsize,
    /// Re-initialise through the standby copy (SoftHSM2 only).
    use_standby: AtomicBool,
    /// Held by the thread preparing the standby (and by `finalize_all`).
    warming: Mutex<()>,
    /// A standby thread was started and has not finished.
    warm_pending: AtomicBool,
    /// The process is exiting ([`Module::quiesce`]): no re-initialisation
    /// starts any more.
    closing: AtomicBool,
    /// Every instance's session source, for the standby's preparation.
    sources: Mutex<Vec<Weak<dyn StandbyPreparer>>>,
    /// The background queues of the pools running calls on this module:
    /// held while the standby loads (see `reinitialize_through_standby`).
    background: Mutex<Vec<Weak<dyn BackgroundHold>>>,
    /// This module, for the standby thread.
    me: Weak<Module>,
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
    /// Of those, switches to the standby copy.
    switches: AtomicU64,
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
    pub(crate) fn load(path: &Path) -> HsmResult<Arc<Module>> {
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
        Ok(Arc::new_cyclic(|me| Module {
            path: path.to_owned(),
            primary: Lane {
                ctx,
                oneshot,
                _image: None,
            },
            standby: OnceLock::new(),
            active: AtomicUsize::new(0),
            use_standby: AtomicBool::new(softhsm),
            warming: Mutex::new(()),
            warm_pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            background: Mutex::new(Vec::new()),
            me: me.clone(),
            gate: RwLock::new(true),
            generation: AtomicU64::new(1),
            objects: AtomicU64::new(0),
            reinit_after: AtomicU64::new(if softhsm {
                SOFTHSM_REINIT_AFTER_OBJECTS
            } else {
                0
            }),
            reinits: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            last_pause_ms: AtomicU64::new(0),
            softhsm,
        }))
    }

    /// The lane calls use now (stable inside the gate).
    pub(crate) fn lane(&self) -> &Lane {
        self.lane_at(self.lane_index())
    }

    fn lane_at(&self, idx: usize) -> &Lane {
        match (idx, self.standby.get()) {
            (1, Some(Some(lane))) => lane,
            _ => &self.primary,
        }
    }

    /// Which copy calls use now: 0 the one loaded from `path`, 1 the
    /// standby (stable inside the gate).
    pub(crate) fn lane_index(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The context calls use now (stable inside the gate).
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.lane().ctx
    }

    /// Remembers an instance, for the standby's preparation.
    pub(crate) fn register(&self, source: Weak<dyn StandbyPreparer>) {
        let mut sources = lock(&self.sources);
        sources.retain(|s| s.strong_count() > 0);
        sources.push(source);
    }

    /// Remembers a pool's background queue, to hold while the standby loads.
    pub(crate) fn attach_background_hold(&self, hold: Weak<dyn BackgroundHold>) {
        let mut holds = lock(&self.background);
        holds.retain(|h| h.strong_count() > 0);
        holds.push(hold);
    }

    /// Holds every attached pool's background work until the guard drops.
    fn hold_background(&self) -> HeldBackground {
        let holds: Vec<Arc<dyn BackgroundHold>> = lock(&self.background)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for h in &holds {
            h.hold();
        }
        HeldBackground(holds)
    }

    /// Re-initialise through a standby copy (SoftHSM2; on by default) or in
    /// place.
    pub(crate) fn set_use_standby(&self, on: bool) {
        self.use_standby
            .store(on && self.softhsm, Ordering::Relaxed);
    }

    /// Re-initialisations that switched to the standby copy.
    pub(crate) fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// For process exit: no re-initialisation starts any more, and this
    /// returns once the standby preparation under way (a detached thread
    /// inside the module's libraries) has finished. Exiting under it runs
    /// the libraries' static destructors beneath that thread (SIGSEGV).
    pub(crate) fn quiesce(&self) {
        self.closing.store(true, Ordering::Release);
        drop(lock(&self.warming));
    }

    /// `C_Finalize` on the copy in use (process exit), after any standby
    /// preparation has finished: outside one, the standby is never left
    /// initialised.
    pub(crate) fn finalize_all(&self) -> Result<(), Error> {
        let _warming = lock(&self.warming);
        let _gate = write(&self.gate);
        self.ctx().clone().finalize()
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
                initialize(self.ctx()).map_err(|e| {
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

    fn budget_spent(&self) -> bool {
        let budget = self.reinit_after();
        budget != 0 && self.objects.load(Ordering::Relaxed) >= budget
    }

    /// Re-initialises the module when its session-object budget is spent:
    /// through the standby copy on a background thread where it is on,
    /// else in place. Call outside the gate.
    fn maybe_reinitialize(&self) {
        if !self.budget_spent() || self.closing.load(Ordering::Acquire) {
            return;
        }
        if self.use_standby.load(Ordering::Relaxed)
            && let Some(me) = self.me.upgrade()
        {
            // One preparation at a time; calls go on meanwhile.
            if self.warm_pending.swap(true, Ordering::AcqRel) {
                return;
            }
            let spawned = std::thread::Builder::new()
                .name("hsm-standby".to_owned())
                .spawn(move || {
                    me.reinitialize_through_standby();
                    me.warm_pending.store(false, Ordering::Release);
                });
            if spawned.is_ok() {
                return;
            }
            self.warm_pending.store(false, Ordering::Release);
        }
        self.fall_back_in_place();
    }

    /// Prepares the standby copy beside the active one and switches to it
    /// (see the module docs); falls back to [`Module::reinitialize_in_place`]
    /// where the standby cannot be used this time.
    fn reinitialize_through_standby(&self) {
        let _warming = lock(&self.warming);
        // `quiesce` sets `closing` before it takes `warming`.
        if !self.budget_spent() || self.closing.load(Ordering::Acquire) {
            return;
        }
        let from = self.lane_index();
        let to = 1 - from;
        let Some(lane) = self.standby_lane(to) else {
            self.use_standby.store(false, Ordering::Relaxed);
            return self.fall_back_in_place();
        };
        let started = Instant::now();
        // Token objects are destroyed by background work (legacy `nt.*`
        // objects after their token's key refresh): held while the copy
        // loads, so a change does not send this round back to the in-place
        // way. An admin key operation still does.
        let _held = self.hold_background();
        let changes = super::searching_token(token_changes);
        let generation = self.generation();
        let sources: Vec<Arc<dyn StandbyPreparer>> = lock(&self.sources)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let prepared = initialize(&lane.ctx).map_err(|e| short(&e)).and_then(|()| {
            let mut copies = 0;
            for source in &sources {
                copies += source.prepare(lane, to, generation + 1)?;
            }
            Ok(copies)
        });
        let warm_ms = started.elapsed().as_millis() as u64;
        let discard = |why: &str| {
            for source in &sources {
                source.discard_prepared();
            }
            if let Err(e) = lane.ctx.clone().finalize() {
                tracing::debug!(error = %short(&e), "C_Finalize of the standby copy failed");
            }
            tracing::info!(
                reason = why,
                "the standby copy of the PKCS#11 module was not used"
            );
        };
        let copies = match prepared {
            Ok(copies) => copies,
            Err(e) => {
                tracing::warn!(error = %e, "could not prepare the standby copy of the PKCS#11 module");
                discard("preparation failed");
                return self.fall_back_in_place();
            }
        };
        let mut initialized = write(&self.gate);
        let switch_started = Instant::now();
        if !*initialized || self.generation() != generation || token_changes() != changes {
            discard("a token object changed, or the module was re-initialised, while it loaded");
            return self.reinitialize_in_place(&mut initialized);
        }
        let objects = self.objects.swap(copies, Ordering::Relaxed);
        self.active.store(to, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reinits.fetch_add(1, Ordering::Relaxed);
        self.switches.fetch_add(1, Ordering::Relaxed);
        let pause_ms = switch_started.elapsed().as_millis() as u64;
        self.last_pause_ms.store(pause_ms, Ordering::Relaxed);
        drop(initialized);
        // Every call that used the old copy has left the gate, and none
        // enters it again: its sessions, handles and copies belong to an
        // older generation.
        let finalize_started = Instant::now();
        if let Err(e) = self.lane_at(from).ctx.clone().finalize() {
            tracing::warn!(error = %short(&e), "C_Finalize of the old copy of the PKCS#11 module failed");
        }
        tracing::info!(
            session_objects = objects,
            warm_ms,
            pause_ms,
            finalize_ms = finalize_started.elapsed().as_millis() as u64,
            "switched to the standby copy of the PKCS#11 module; the old copy released its session objects"
        );
    }

    /// [`Module::reinitialize_in_place`] under the gate, once calls in
    /// flight have left it.
    fn fall_back_in_place(&self) {
        self.reinitialize_in_place(&mut write(&self.gate));
    }

    /// The copy at `idx` for use as the standby: lane 1 is loaded at its
    /// first use, from the library's bytes in a `memfd` (the loader knows a
    /// library by its file, so this maps a second, independent copy).
    fn standby_lane(&self, idx: usize) -> Option<&Lane> {
        if idx == 0 {
            return Some(&self.primary);
        }
        self.standby
            .get_or_init(|| match load_copy(&self.path) {
                Ok(lane) => Some(lane),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot load a standby copy of the PKCS#11 module; it will be \
                         re-initialised in place (calls wait for it)"
                    );
                    None
                }
            })
            .as_ref()
    }

    /// Finalises and initialises the active copy; call with the gate held
    /// exclusively. Does nothing when the module is not initialised or the
    /// budget is no longer spent (another thread did it while this one
    /// waited for the gate).
    fn reinitialize_in_place(&self, initialized: &mut bool) {
        if !*initialized || !self.budget_spent() {
            return;
        }
        let started = Instant::now();
        let objects = self.objects.swap(0, Ordering::Relaxed);
        if let Err(e) = self.ctx().clone().finalize() {
            tracing::warn!(error = %short(&e), "C_Finalize before re-initialising the HSM module failed");
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reinits.fetch_add(1, Ordering::Relaxed);
        let result = initialize(self.ctx());
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

/// A second, independent copy of the library at `path` (see
/// [`Module::standby_lane`]), not initialised.
fn load_copy(path: &Path) -> Result<Lane, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    // SAFETY: a name and flags; the returned descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"pkcs11-standby".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut image = unsafe { std::fs::File::from_raw_fd(fd) };
    image
        .write_all(&bytes)
        .map_err(|e| format!("writing the copy: {e}"))?;
    let copy = PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()));
    let ctx = Pkcs11::new(&copy).map_err(|e| format!("loading the copy: {e}"))?;
    let oneshot = OneShot::load(&copy)?;
    Ok(Lane {
        ctx,
        oneshot,
        _image: Some(image),
    })
}

fn initialize(ctx: &Pkcs11) -> Result<(), Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another library) initialised it.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}
