//! Maps every PKCS#11 return value to an [`HsmError`] on purpose (after
//! Parsec's `to_response_status`), and says which ones mean "this thread's
//! session is dead, open a new one".

use cryptoki::error::{Error, RvError};

use crate::HsmError;

/// An error inside one HSM call, before the session layer has decided whether
/// the session survives it.
#[derive(Debug)]
pub(crate) enum CallError {
    /// A PKCS#11 call failed.
    Pkcs11(Error),
    /// The operation already knows what to report (key missing, integrity, ...).
    Hsm(HsmError),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Pkcs11(e)
    }
}

impl From<HsmError> for CallError {
    fn from(e: HsmError) -> Self {
        CallError::Hsm(e)
    }
}

pub(crate) type CallResult<T> = Result<T, CallError>;

/// The return value of a failed PKCS#11 call, if it was one.
pub(crate) fn rv(e: &CallError) -> Option<RvError> {
    match e {
        CallError::Pkcs11(Error::Pkcs11(rv, _)) => Some(*rv),
        _ => None,
    }
}

/// True when the error means this thread's session (or its login) is gone:
/// the session is dropped and the next call opens and logs in a new one.
pub(crate) fn kills_session(e: &CallError) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError
        )
    )
}

/// True when the HSM will not copy a key into a session object (policy,
/// `CKA_COPYABLE` false, or no `C_CopyObject`): use the token object.
pub(crate) fn refuses_copy(e: &CallError) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::FunctionNotSupported
                | RvError::ActionProhibited
                | RvError::AttributeReadOnly
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
        )
    )
}

/// True when a cached object handle no longer names an object (destroyed,
/// or the token was reloaded): evict it and look the label up again.
pub(crate) fn stale_handle(e: &CallError) -> bool {
    matches!(
        rv(e),
        Some(
            RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::WrappingKeyHandleInvalid
                | RvError::UnwrappingKeyHandleInvalid
        )
    )
}

/// The [`HsmError`] for a failed call. `what` names the operation (never data).
pub(crate) fn to_hsm_error(e: CallError, what: &str) -> HsmError {
    let (rv, function) = match e {
        CallError::Hsm(h) => return h,
        CallError::Pkcs11(Error::Pkcs11(rv, function)) => (rv, function),
        CallError::Pkcs11(other) => return HsmError::Other(format!("{what}: {other}")),
    };
    let detail = format!("{what}: {function} returned {rv:?}");
    match rv {
        // The device, the session or the login: retry later; the session
        // layer re-opens by itself.
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::SessionCount
        | RvError::DeviceError
        | RvError::DeviceRemoved
        | RvError::DeviceMemory
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::UserNotLoggedIn
        | RvError::PinLocked
        | RvError::PinExpired
        | RvError::PinIncorrect
        | RvError::CryptokiNotInitialized
        | RvError::GeneralError
        | RvError::HostMemory
        | RvError::FunctionCanceled
        | RvError::Cancel
        | RvError::CantLock
        | RvError::FipsSelfTestFailed => HsmError::Unavailable(detail),
        // Data that fails authentication: a GCM tag, an RFC 3394 integrity
        // check, a MAC.
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::WrappedKeyInvalid
        | RvError::WrappedKeyLenRange
        | RvError::SignatureInvalid
        | RvError::SignatureLenRange => HsmError::Integrity,
        // Handles: the caller maps these to KeyMissing with the label when it
        // knows it; here we only know the call.
        RvError::KeyHandleInvalid
        | RvError::ObjectHandleInvalid
        | RvError::WrappingKeyHandleInvalid
        | RvError::UnwrappingKeyHandleInvalid => HsmError::KeyMissing(detail),
        // Everything else is a bug on our side, a key with the wrong
        // attributes, or a device that lacks a mechanism: not retryable.
        RvError::ArgumentsBad
        | RvError::AttributeReadOnly
        | RvError::AttributeSensitive
        | RvError::AttributeTypeInvalid
        | RvError::AttributeValueInvalid
        | RvError::ActionProhibited
        | RvError::DataInvalid
        | RvError::DataLenRange
        | RvError::FunctionFailed
        | RvError::FunctionNotParallel
        | RvError::FunctionNotSupported
        | RvError::CurveNotSupported
        | RvError::KeySizeRange
        | RvError::KeyTypeInconsistent
        | RvError::KeyNotNeeded
        | RvError::KeyChanged
        | RvError::KeyNeeded
        | RvError::KeyIndigestible
        | RvError::KeyFunctionNotPermitted
        | RvError::KeyNotWrappable
        | RvError::KeyUnextractable
        | RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::OperationActive
        | RvError::OperationNotInitialized
        | RvError::PinInvalid
        | RvError::PinLenRange
        | RvError::SessionParallelNotSupported
        | RvError::SessionReadOnly
        | RvError::SessionExists
        | RvError::SessionReadOnlyExists
        | RvError::SessionReadWriteSoExists
        | RvError::SlotIdInvalid
        | RvError::NoEvent
        | RvError::NeedToCreateThreads
        | RvError::TemplateIncomplete
        | RvError::TemplateInconsistent
        | RvError::TokenWriteProtected
        | RvError::UnwrappingKeySizeRange
        | RvError::UnwrappingKeyTypeInconsistent
        | RvError::UserAlreadyLoggedIn
        | RvError::UserPinNotInitialized
        | RvError::UserTypeInvalid
        | RvError::UserAnotherAlreadyLoggedIn
        | RvError::UserTooManyTypes
        | RvError::WrappingKeySizeRange
        | RvError::WrappingKeyTypeInconsistent
        | RvError::RandomSeedNotSupported
        | RvError::RandomNoRng
        | RvError::DomainParamsInvalid
        | RvError::BufferTooSmall
        | RvError::SavedStateInvalid
        | RvError::InformationSensitive
        | RvError::StateUnsaveable
        | RvError::CryptokiAlreadyInitialized
        | RvError::MutexBad
        | RvError::MutexNotLocked
        | RvError::NewPinMode
        | RvError::NextOtp
        | RvError::ExceededMaxIterations
        | RvError::LibraryLoadFailed
        | RvError::PinTooWeak
        | RvError::PublicKeyInvalid
        | RvError::FunctionRejected
        | RvError::VendorDefined(_)
        | RvError::UnknownErrorCode(_) => HsmError::Other(detail),
    }
}

/// `C_Function: RvName`, without cryptoki's paragraph-long descriptions.
pub(crate) fn short(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, function) => format!("{function} returned {rv:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    fn err(rv: RvError) -> CallError {
        CallError::Pkcs11(Error::Pkcs11(rv, Function::Decrypt))
    }

    #[test]
    fn session_errors_are_unavailable_and_drop_the_session() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::DeviceError,
            RvError::DeviceRemoved,
            RvError::UserNotLoggedIn,
            RvError::PinLocked,
        ] {
            assert!(kills_session(&err(rv)), "{rv:?}");
            assert!(matches!(
                to_hsm_error(err(rv), "t"),
                HsmError::Unavailable(_)
            ));
        }
    }

    #[test]
    fn tag_failure_is_integrity_and_keeps_the_session() {
        let e = err(RvError::EncryptedDataInvalid);
        assert!(!kills_session(&e));
        assert!(matches!(to_hsm_error(e, "t"), HsmError::Integrity));
    }

    #[test]
    fn stale_handles_are_recognised() {
        assert!(stale_handle(&err(RvError::KeyHandleInvalid)));
        assert!(stale_handle(&err(RvError::ObjectHandleInvalid)));
        assert!(!stale_handle(&err(RvError::MechanismInvalid)));
    }

    #[test]
    fn messages_name_the_call_not_the_data() {
        let msg = to_hsm_error(err(RvError::MechanismInvalid), "seal").to_string();
        assert!(
            msg.contains("seal") && msg.contains("MechanismInvalid"),
            "{msg}"
        );
    }
}
