//! One logged-in PKCS#11 session per thread and per [`super::Pkcs11Hsm`]
//! (a `Session` is `Send` but not `Sync`), opened lazily and dropped when a
//! call reports that the session or its login is gone.
//!
//! Every call runs inside the module's gate (see `module`): a session, an
//! object handle or a key copy of an older module generation (before a
//! re-initialisation) is never used, and a stale session is never closed,
//! since its handle number may now name another thread's session.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::errors::{CallError, CallResult, kills_session, to_hsm_error};
use super::handles::HandleCache;
use super::locks::lock;
use super::module::{Lane, Module, StandbyPreparer};
use crate::HsmResult;

thread_local! {
    /// This thread's sessions, keyed by HSM instance id. Almost always one
    /// entry, so a Vec beats a map.
    static SESSIONS: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

/// A session of one instance and module generation. Dropping it closes the
/// session only if its generation is still current; otherwise the handle is
/// dead already and may have been handed out again.
struct Held {
    instance: u64,
    generation: u64,
    module: Arc<Module>,
    /// `None` only once taken out by [`Held::into_session`].
    session: Option<Session>,
}

impl Held {
    fn into_session(mut self) -> Option<Session> {
        self.session.take()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Hold the gate so no re-initialisation runs between the check and
        // the close; at thread exit the gate's thread-local may be gone.
        let entered = self.module.enter().ok();
        if entered.is_some() && self.module.generation() == self.generation {
            drop(session);
        } else {
            // A dead handle: leak the few bytes rather than close a handle
            // number that may now be another session's.
            std::mem::forget(session);
        }
    }
}

/// What a thread needs to open and log in a session of one HSM instance.
pub(crate) struct SessionSource {
    pub(crate) instance: u64,
    pub(crate) module: Arc<Module>,
    pub(crate) slot: Slot,
    pub(crate) pin: AuthPin,
    /// Key handles by label (token objects).
    pub(crate) handles: HandleCache,
    /// Session-object copies of keys in use (see `copies`).
    pub(crate) copies: super::copies::KeyCopies,
    /// Network token keys unwrapped into session objects (see `token_keys`).
    pub(crate) token_keys: super::token_keys::TokenKeyCache,
    /// The session that makes every key copy and unwrapped token key (see [`SessionSource::copy_key`]).
    copy_owner: std::sync::Mutex<Option<Held>>,
    /// The module generation `handles` and `copies` belong to.
    generation: AtomicU64,
    /// Held while they are emptied for a new generation.
    resync: std::sync::Mutex<()>,
    /// What the standby copy prepared for the generation after the switch.
    prepared: std::sync::Mutex<Option<Prepared>>,
}

/// One instance's state for a standby copy of the module, made before the
/// switch to it (see `module`): its key handles, the key copies in use
/// made again, and the session that owns them.
pub(crate) struct Prepared {
    generation: u64,
    /// The module's lane (copy) it was made on.
    lane: usize,
    handles: HandleCache,
    copies: Vec<(String, ObjectHandle)>,
    /// The copies' epoch (see `copies`): read before the token was looked at.
    epoch: u64,
    /// The session that made the copies (a bare `Session`, not a `Held`:
    /// discarding it must not enter the gate, which the discarding thread
    /// may hold exclusively).
    owner: Session,
}

impl SessionSource {
    /// Runs `op` with this thread's session, opening and logging one in if
    /// needed. `what` names the operation in errors.
    ///
    /// The session is taken out of the thread-local for the duration of `op`
    /// (so `op` may itself call `with_session` without a RefCell panic) and
    /// put back afterwards unless the error says it is dead.
    pub(crate) fn with_session<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&Session) -> CallResult<T>,
    ) -> HsmResult<T> {
        let started = std::time::Instant::now();
        let entered = self.module.enter()?;
        let result = self.with_session_entered(entered.generation(), what, op);
        entered.leave();
        // `what` names the call ("seal", "cryptogram_mac", ...): a literal,
        // never data.
        metrics::histogram!("vaultd_hsm_call_duration_seconds", "op" => what)
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn with_session_entered<T>(
        &self,
        generation: u64,
        what: &str,
        op: impl FnOnce(&Session) -> CallResult<T>,
    ) -> HsmResult<T> {
        self.resync(generation);
        let session = match self.take(generation) {
            Some(s) => s,
            None => self.open().map_err(|e| to_hsm_error(e, what))?,
        };
        match op(&session) {
            Ok(v) => {
                self.put_back(session, generation);
                Ok(v)
            }
            Err(e) => {
                if kills_session(&e) {
                    self.session_died(what, session);
                } else {
                    self.put_back(session, generation);
                }
                Err(to_hsm_error(e, what))
            }
        }
    }

    pub(crate) fn new(module: Arc<Module>, instance: u64, slot: Slot, pin: AuthPin) -> Arc<Self> {
        let source = Arc::new(SessionSource {
            instance,
            generation: AtomicU64::new(module.generation()),
            slot,
            pin,
            handles: HandleCache::new(module.is_softhsm()),
            copies: super::copies::KeyCopies::default(),
            token_keys: super::token_keys::TokenKeyCache::default(),
            copy_owner: std::sync::Mutex::new(None),
            resync: std::sync::Mutex::new(()),
            prepared: std::sync::Mutex::new(None),
            module: Arc::clone(&module),
        });
        let weak: std::sync::Weak<dyn StandbyPreparer> = Arc::downgrade(&source) as _;
        module.register(weak);
        source
    }

    /// Forgets the handles and key copies of an older module generation
    /// before any call of `generation` may use them, or installs what the
    /// standby copy prepared for `generation`.
    fn resync(&self, generation: u64) {
        if self.generation.load(Ordering::Acquire) == generation {
            return;
        }
        let _one = lock(&self.resync);
        if self.generation.load(Ordering::Acquire) != generation {
            match lock(&self.prepared).take() {
                Some(p) if p.generation == generation && p.lane == self.module.lane_index() => {
                    // Token keys are unwrapped again at their next use.
                    self.token_keys.forget_all();
                    self.handles.install(p.handles);
                    self.copies.install(p.copies, p.epoch);
                    *lock(&self.copy_owner) = Some(self.hold(p.owner, generation));
                }
                other => {
                    // Made for a switch that did not happen: its copy of
                    // the module is finalised without it.
                    if let Some(p) = other {
                        std::mem::forget(p.owner);
                    }
                    self.handles.clear();
                    self.copies.forget_all();
                    self.token_keys.forget_all();
                }
            }
            self.generation.store(generation, Ordering::Release);
        }
    }

    /// Copies `key` into a session object (same attributes, `CKA_TOKEN`
    /// false) made by this instance's copy-owner session, which lives as long
    /// as the module generation: a session object dies with the session that
    /// made it, and copies are shared by every thread, so one made by a
    /// request thread's session would vanish (under other threads' calls,
    /// which SoftHSM2 may then answer with errors other than a stale handle)
    /// when that thread exits. Call inside the gate.
    pub(crate) fn copy_key(
        &self,
        key: ObjectHandle,
        template: &[Attribute],
    ) -> CallResult<ObjectHandle> {
        self.make_on_owner(|s| s.copy_object(key, template))
    }

    /// Makes a session object with `make` on this instance's owner session
    /// (see [`SessionSource::copy_key`]), opened if there is none; an owner
    /// that outlived an HSM restart is replaced once. Call inside the gate.
    pub(crate) fn make_on_owner(
        &self,
        make: impl Fn(&Session) -> Result<ObjectHandle, Error>,
    ) -> CallResult<ObjectHandle> {
        let generation = self.module.generation();
        let mut owner = lock(&self.copy_owner);
        if owner.as_ref().is_some_and(|h| h.generation != generation) {
            // A dead session of an older generation: `Held` forgets it.
            owner.take();
        }
        let reused = owner.is_some();
        match self.make_by_owner(&mut owner, generation, &make) {
            Err(e) if reused && kills_session(&e) => {
                self.make_by_owner(&mut owner, generation, &make)
            }
            result => result,
        }
    }

    /// One call of `make` on the owner session, opened if there is none; a
    /// dead owner is discarded with the objects it made.
    fn make_by_owner(
        &self,
        owner: &mut Option<Held>,
        generation: u64,
        make: &impl Fn(&Session) -> Result<ObjectHandle, Error>,
    ) -> CallResult<ObjectHandle> {
        let held = match owner {
            Some(h) => h,
            None => owner.insert(self.hold(self.open()?, generation)),
        };
        let Some(session) = held.session.as_ref() else {
            unreachable!("a held session is only taken out by `into_session`");
        };
        let e = match make(session) {
            Ok(h) => return Ok(h),
            Err(e) => CallError::from(e),
        };
        // SoftHSM2 answers a failed unwrap (a blob under another KEK) with
        // CKR_GENERAL_ERROR: the session is dead only if it stops answering.
        if kills_session(&e)
            && session.get_session_info().is_err()
            && let Some(dead) = owner.take().and_then(Held::into_session)
        {
            self.session_died("make a session object", dead);
        }
        Err(e)
    }

    /// A session the HSM no longer knows (device error, restart): its
    /// session-object key copies died with it.
    fn session_died(&self, what: &str, session: Session) {
        tracing::warn!(operation = what, "HSM session lost; it will be re-opened");
        self.copies.forget_all();
        self.token_keys.forget_all();
        // `close` rather than drop: cryptoki's drop logs an error when the
        // token has already closed the session.
        let _ = session.close();
    }

    /// Opens a read-write session and logs the user in. `UserAlreadyLoggedIn`
    /// is fine: PKCS#11 login state is per application, not per session.
    pub(crate) fn open(&self) -> CallResult<Session> {
        self.open_on(self.module.ctx())
    }

    /// [`SessionSource::open`] on the copy of the module `ctx` (the one in
    /// use, or the standby being prepared).
    fn open_on(&self, ctx: &Pkcs11) -> CallResult<Session> {
        let session = ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(CallError::Pkcs11(e)),
        }
    }

    /// This thread's session of this instance, if it has one of `generation`
    /// (one of an older generation is dropped without closing it).
    fn take(&self, generation: u64) -> Option<Session> {
        let held = SESSIONS.with(|cell| {
            let mut sessions = cell.borrow_mut();
            let idx = sessions.iter().position(|h| h.instance == self.instance)?;
            Some(sessions.swap_remove(idx))
        })?;
        if held.generation == generation {
            held.into_session()
        } else {
            drop(held);
            None
        }
    }

    fn put_back(&self, session: Session, generation: u64) {
        let held = self.hold(session, generation);
        SESSIONS.with(|cell| cell.borrow_mut().push(held));
    }

    fn hold(&self, session: Session, generation: u64) -> Held {
        Held {
            instance: self.instance,
            generation,
            module: Arc::clone(&self.module),
            session: Some(session),
        }
    }

    /// Opens and logs in this thread's session at start-up, reporting a
    /// failed login as the PKCS#11 error (for a start-up message).
    pub(crate) fn first_login(&self) -> Result<(), CallError> {
        let entered = self.module.enter()?;
        let generation = entered.generation();
        let session = self.open()?;
        self.put_back(session, generation);
        drop(entered);
        Ok(())
    }

    /// Closes this thread's session of this instance (others close when their
    /// thread exits).
    pub(crate) fn forget_on_this_thread(&self) {
        super::random::forget_thread(self.instance);
        // `try_with`: during thread teardown the thread-local may be gone.
        let _ = SESSIONS.try_with(|cell| {
            if let Ok(mut sessions) = cell.try_borrow_mut() {
                sessions.retain(|h| h.instance != self.instance);
            }
        });
    }
}

/// Fails with `CKR_USER_NOT_LOGGED_IN` (which drops the session) when the
/// token has logged this process out, e.g. after an HSM restart: private
/// objects are then invisible, and a search would wrongly report keys as
/// missing.
pub(crate) fn ensure_logged_in(session: &Session) -> CallResult<()> {
    match session.get_session_info()?.session_state() {
        SessionState::RoUser | SessionState::RwUser => Ok(()),
        _ => Err(CallError::Pkcs11(Error::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::GetSessionInfo,
        ))),
    }
}

impl StandbyPreparer for SessionSource {
    /// Makes this instance ready for the standby copy `lane`, which becomes
    /// `generation` (see `module`): logs in, learns every key handle in one
    /// pass, and copies the keys now in use. Returns how many copies it
    /// made (session objects of `lane`).
    fn prepare(&self, lane: &Lane, lane_index: usize, generation: u64) -> Result<u64, String> {
        let what = |e: CallError| to_hsm_error(e, "prepare the standby HSM copy").to_string();
        let session = self.open_on(&lane.ctx).map_err(what)?;
        let handles = HandleCache::prepared(&session).map_err(what)?;
        let epoch = self.copies.epochs.current();
        let mut copies = Vec::new();
        for label in self.copies.labels() {
            let Some(key) = handles.known(&label) else {
                continue;
            };
            match session.copy_object(key, &[Attribute::Token(false)]) {
                Ok(copy) => copies.push((label, copy)),
                Err(e) => return Err(what(e.into())),
            }
        }
        let made = copies.len() as u64;
        *lock(&self.prepared) = Some(Prepared {
            generation,
            lane: lane_index,
            handles,
            copies,
            epoch,
            owner: session,
        });
        Ok(made)
    }

    /// Drops what [`StandbyPreparer::prepare`] made (the standby was not
    /// used): its session is closed on the standby copy, which nothing
    /// else uses. Does not enter the gate.
    fn discard_prepared(&self) {
        if let Some(p) = lock(&self.prepared).take() {
            let _ = p.owner.close();
        }
    }
}
