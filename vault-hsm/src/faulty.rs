//! Fault injection for tests (feature `fault-injection` or test builds):
//! [`FaultyHsm`] wraps another [`Hsm`] and makes its Nth call, and the
//! calls after it until healed, fail the way a real token fails (device
//! error, invalid session handle, PIN locked). Never compiled into a
//! production build.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vault_proto::Pan;
use zeroize::Zeroizing;

use crate::{Hsm, HsmError, HsmResult, WrappedTokenKey};

/// Which PKCS#11 failure a faulty call reports. All of them are
/// [`HsmError::Unavailable`], as the real layer maps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmFault {
    /// `CKR_DEVICE_ERROR`: the token stopped answering.
    Device,
    /// `CKR_SESSION_HANDLE_INVALID`: the session was closed under us.
    Session,
    /// `CKR_PIN_LOCKED`: too many wrong PINs; login impossible.
    PinLocked,
}

impl HsmFault {
    fn error(self) -> HsmError {
        HsmError::Unavailable(
            match self {
                HsmFault::Device => "CKR_DEVICE_ERROR (injected)",
                HsmFault::Session => "CKR_SESSION_HANDLE_INVALID (injected)",
                HsmFault::PinLocked => "CKR_PIN_LOCKED (injected)",
            }
            .to_owned(),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    fault: HsmFault,
    /// The call number (counted over the wrapper's lifetime) that fails first.
    first: u64,
    /// How many calls fail from `first` on (`u64::MAX`: until healed).
    count: u64,
}

/// The switchboard a test holds: arm a fault, heal it, count calls.
#[derive(Debug, Default)]
pub struct HsmFaults {
    calls: AtomicU64,
    failed: AtomicU64,
    plan: Mutex<Option<Plan>>,
}

impl HsmFaults {
    /// Calls made through the wrapper so far (including failed ones).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls that failed because of an injected fault.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// The `nth` call from now (1 = the next one) and the `count - 1` after
    /// it fail with `fault`. `count = u64::MAX` keeps failing until [`heal`].
    ///
    /// [`heal`]: HsmFaults::heal
    pub fn fail_nth(&self, nth: u64, count: u64, fault: HsmFault) {
        let first = self.calls() + nth.max(1);
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(Plan {
            fault,
            first,
            count,
        });
    }

    /// Every call from now on fails with `fault` until [`HsmFaults::heal`].
    pub fn fail_all(&self, fault: HsmFault) {
        self.fail_nth(1, u64::MAX, fault);
    }

    /// The HSM answers again.
    pub fn heal(&self) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn next(&self) -> HsmResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let plan = *self.plan.lock().unwrap_or_else(|p| p.into_inner());
        match plan {
            Some(p) if n >= p.first && n - p.first < p.count => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                Err(p.fault.error())
            }
            _ => Ok(()),
        }
    }
}

/// An [`Hsm`] that fails on demand; otherwise it is `inner`.
pub struct FaultyHsm<H: Hsm> {
    inner: H,
    faults: Arc<HsmFaults>,
}

impl<H: Hsm> FaultyHsm<H> {
    /// Wraps `inner`; the returned switchboard controls the faults.
    pub fn new(inner: H) -> (FaultyHsm<H>, Arc<HsmFaults>) {
        let faults = Arc::new(HsmFaults::default());
        (
            FaultyHsm {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl<H: Hsm> Hsm for FaultyHsm<H> {
    fn seal(&self, alias: &str, field: &str, plaintext: &[u8]) -> HsmResult<Vec<u8>> {
        self.faults.next()?;
        self.inner.seal(alias, field, plaintext)
    }

    fn open(&self, alias: &str, field: &str, sealed: &[u8]) -> HsmResult<Zeroizing<Vec<u8>>> {
        self.faults.next()?;
        self.inner.open(alias, field, sealed)
    }

    fn fingerprint(&self, tenant: &str, pan: &Pan) -> HsmResult<[u8; 32]> {
        self.faults.next()?;
        self.inner.fingerprint(tenant, pan)
    }

    fn audit_mac(&self, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]> {
        self.faults.next()?;
        self.inner.audit_mac(prev, record)
    }

    fn random(&self, out: &mut [u8]) -> HsmResult<()> {
        self.faults.next()?;
        self.inner.random(out)
    }

    fn accept_token_key(&self, scheme: &str, token_ref: &str, wrapped: &[u8]) -> HsmResult<u32> {
        self.faults.next()?;
        self.inner.accept_token_key(scheme, token_ref, wrapped)
    }

    fn kek_versions(&self, scheme: &str) -> HsmResult<Vec<u32>> {
        self.faults.next()?;
        self.inner.kek_versions(scheme)
    }

    fn destroy_token_key(&self, token_ref: &str) -> HsmResult<()> {
        self.faults.next()?;
        self.inner.destroy_token_key(token_ref)
    }

    fn cryptogram_mac(
        &self,
        token_ref: &str,
        key: Option<WrappedTokenKey<'_>>,
        atc: u16,
        data: &[u8],
    ) -> HsmResult<[u8; 16]> {
        self.faults.next()?;
        self.inner.cryptogram_mac(token_ref, key, atc, data)
    }

    fn audit_key_version(&self) -> u32 {
        self.inner.audit_key_version()
    }

    fn audit_mac_with(&self, version: u32, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]> {
        self.faults.next()?;
        self.inner.audit_mac_with(version, prev, record)
    }

    /// Not a PKCS#11 call (the version is read at start-up): never fails.
    fn pan_key_version(&self) -> u32 {
        self.inner.pan_key_version()
    }

    fn refresh_key_versions(&self) -> HsmResult<u32> {
        self.faults.next()?;
        self.inner.refresh_key_versions()
    }

    fn rotate_pan_key(&self) -> HsmResult<u32> {
        self.faults.next()?;
        self.inner.rotate_pan_key()
    }

    fn rotate_audit_key(&self) -> HsmResult<u32> {
        self.faults.next()?;
        self.inner.rotate_audit_key()
    }

    fn retire_pan_key(&self, version: u32) -> HsmResult<bool> {
        self.faults.next()?;
        self.inner.retire_pan_key(version)
    }

    fn check(&self) -> HsmResult<()> {
        self.faults.next()?;
        self.inner.check()
    }

    fn stats(&self) -> Option<vault_proto::ops::HsmStats> {
        self.inner.stats()
    }

    fn attach_background_hold(&self, hold: std::sync::Weak<dyn crate::pool::BackgroundHold>) {
        self.inner.attach_background_hold(hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HSM that always answers: enough to test the switchboard.
    struct Healthy;

    impl Hsm for Healthy {
        fn seal(&self, _: &str, _: &str, p: &[u8]) -> HsmResult<Vec<u8>> {
            Ok(p.to_vec())
        }
        fn open(&self, _: &str, _: &str, s: &[u8]) -> HsmResult<Zeroizing<Vec<u8>>> {
            Ok(Zeroizing::new(s.to_vec()))
        }
        fn fingerprint(&self, _: &str, _: &Pan) -> HsmResult<[u8; 32]> {
            Ok([1; 32])
        }
        fn audit_mac(&self, _: &[u8; 32], _: &[u8]) -> HsmResult<[u8; 32]> {
            Ok([2; 32])
        }
        fn random(&self, _: &mut [u8]) -> HsmResult<()> {
            Ok(())
        }
        fn accept_token_key(&self, _: &str, _: &str, _: &[u8]) -> HsmResult<u32> {
            Ok(1)
        }
        fn destroy_token_key(&self, _: &str) -> HsmResult<()> {
            Ok(())
        }
        fn cryptogram_mac(
            &self,
            _: &str,
            _: Option<WrappedTokenKey<'_>>,
            _: u16,
            _: &[u8],
        ) -> HsmResult<[u8; 16]> {
            Ok([3; 16])
        }
        fn pan_key_version(&self) -> u32 {
            1
        }
        fn check(&self) -> HsmResult<()> {
            Ok(())
        }
    }

    #[test]
    fn fails_exactly_the_planned_calls_then_heals() {
        let (hsm, faults) = FaultyHsm::new(Healthy);
        assert!(hsm.check().is_ok());
        faults.fail_nth(2, 2, HsmFault::Session);
        assert!(hsm.check().is_ok(), "call 1 from arming passes");
        for _ in 0..2 {
            match hsm.audit_mac(&[0; 32], b"r") {
                Err(HsmError::Unavailable(m)) => assert!(m.contains("SESSION_HANDLE")),
                other => panic!("expected an injected fault, got {other:?}"),
            }
        }
        assert!(hsm.check().is_ok(), "the fault covered two calls only");
        faults.fail_all(HsmFault::PinLocked);
        assert!(matches!(hsm.check(), Err(HsmError::Unavailable(_))));
        assert_eq!(hsm.pan_key_version(), 1, "not a PKCS#11 call");
        faults.heal();
        assert!(hsm.check().is_ok());
        assert_eq!(faults.failed(), 3);
        assert_eq!(faults.calls(), 7);
    }
}
