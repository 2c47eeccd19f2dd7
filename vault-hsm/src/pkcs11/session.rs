//! One logged-in PKCS#11 session per thread and per [`super::Pkcs11Hsm`]
//! (a `Session` is `Send` but not `Sync`), opened lazily and dropped when a
//! call reports that the session or its login is gone.

use std::cell::RefCell;

use cryptoki::context::Function;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::errors::{CallError, CallResult, kills_session, to_hsm_error};
use crate::HsmResult;

thread_local! {
    /// This thread's sessions, keyed by HSM instance id. Almost always one
    /// entry, so a Vec beats a map.
    static SESSIONS: RefCell<Vec<(u64, Session)>> = const { RefCell::new(Vec::new()) };
}

/// What a thread needs to open and log in a session of one HSM instance.
pub(crate) struct SessionSource {
    pub(crate) instance: u64,
    pub(crate) ctx: Pkcs11,
    pub(crate) slot: Slot,
    pub(crate) pin: AuthPin,
    /// Session-object copies of keys in use (see `copies`).
    pub(crate) copies: super::copies::KeyCopies,
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
        what: &str,
        op: impl FnOnce(&Session) -> CallResult<T>,
    ) -> HsmResult<T> {
        let session = match self.take() {
            Some(s) => s,
            None => self.open().map_err(|e| to_hsm_error(e, what))?,
        };
        match op(&session) {
            Ok(v) => {
                self.put_back(session);
                Ok(v)
            }
            Err(e) => {
                if kills_session(&e) {
                    tracing::warn!(operation = what, "HSM session lost; it will be re-opened");
                    // Its session-object key copies died with it.
                    self.copies.forget_all();
                    // `close` rather than drop: cryptoki's drop logs an error
                    // when the token has already closed the session.
                    let _ = session.close();
                } else {
                    self.put_back(session);
                }
                Err(to_hsm_error(e, what))
            }
        }
    }

    /// Opens a read-write session and logs the user in. `UserAlreadyLoggedIn`
    /// is fine: PKCS#11 login state is per application, not per session.
    pub(crate) fn open(&self) -> CallResult<Session> {
        let session = self.ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(CallError::Pkcs11(e)),
        }
    }

    fn take(&self) -> Option<Session> {
        SESSIONS.with(|cell| {
            let mut sessions = cell.borrow_mut();
            let idx = sessions.iter().position(|(id, _)| *id == self.instance)?;
            Some(sessions.swap_remove(idx).1)
        })
    }

    pub(crate) fn put_back(&self, session: Session) {
        SESSIONS.with(|cell| cell.borrow_mut().push((self.instance, session)));
    }

    /// Closes this thread's session of this instance (others close when their
    /// thread exits).
    pub(crate) fn forget_on_this_thread(&self) {
        super::random::forget_thread(self.instance);
        // `try_with`: during thread teardown the thread-local may be gone.
        let _ = SESSIONS.try_with(|cell| {
            if let Ok(mut sessions) = cell.try_borrow_mut() {
                sessions.retain(|(id, _)| *id != self.instance);
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
