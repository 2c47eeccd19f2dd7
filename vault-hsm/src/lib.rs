//! vault-hsm: the HSM layer of vaultd. Every key the vault uses lives in a PKCS#11 token and never
//! leaves it in clear. The vault talks to it only through [`Hsm`], whose
//! methods are blocking: callers run them on the [`pool::HsmPool`] threads
//! (each with its own logged-in session) or on the store's writer thread,
//! never on a tokio worker.
//!
//! Key labels (DESIGN.md "Keys"): `vault.pan.v<N>` (AES-256, GCM),
//! `vault.fp` and `vault.audit` (HMAC-SHA-256), `tsp.<scheme>.kek` and
//! `tsp.<scheme>.kek.v<N>` (AES-256, unwrap only). That is all the token
//! holds, whatever the number of cards: a network token's key is stored in
//! its record wrapped under its scheme's KEK ([`WrappedTokenKey`]) and
//! unwrapped into a session object at use. (Releases before 2026-12 made
//! each token key a token object, `nt.<token_ref>`; such objects are still
//! used until their token's key is refreshed, and then destroyed.)
//!
//! - [`pkcs11::Pkcs11Hsm`]: the implementation (open with
//!   [`pkcs11::Pkcs11Hsm::open`] in the daemon, `open_admin` for key commands).
//! - [`pool::HsmPool`]: runs HSM calls for async code on named threads.
//! - [`keys`]: `vaultd keys ...`: init, import-kek, rotate, retire,
//!   rotate-audit, list.
//!
//! At process exit, after every instance and pool is dropped,
//! [`pkcs11::finalize_module`] calls `C_Finalize`.

#[cfg(any(test, feature = "fault-injection"))]
pub mod faulty;
pub mod keys;
pub mod pkcs11;
pub mod pool;

use vault_proto::Pan;
use zeroize::Zeroizing;

pub use pkcs11::{HsmConfig, Pkcs11Hsm, SOFTHSM_REINIT_AFTER_OBJECTS, load_pin};
pub use pool::{BackgroundHold, HsmPool, Lane};

/// Why an HSM call failed. Messages name keys and PKCS#11 return values,
/// never key material or card data.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The device, the session or the login is not usable right now
    /// (device error, session handle invalid, PIN locked, ...). Requests fail
    /// with `unavailable`; the layer re-opens sessions by itself.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
    /// A key the vault needs is not in the token (or a sealed value names a
    /// key version the token does not have).
    #[error(
        "HSM key {0} not found (`vaultd keys init` creates the vault.* keys, \
         `vaultd keys import-kek` a scheme's tsp.*.kek)"
    )]
    KeyMissing(String),
    /// A ciphertext failed authentication (tag mismatch, wrong AAD, corrupt).
    #[error("ciphertext failed authentication")]
    Integrity,
    /// Anything else: a bug or an unsupported mechanism.
    #[error("HSM error: {0}")]
    Other(String),
}

pub type HsmResult<T> = Result<T, HsmError>;

/// A network token's key as stored in its record: the token service's
/// RFC 3394 blob and the version of `tsp.<scheme>.kek` it is wrapped under.
#[derive(Clone, Copy)]
pub struct WrappedTokenKey<'a> {
    pub scheme: &'a str,
    pub kek_version: u32,
    pub wrapped: &'a [u8],
}

/// Stored form of an AES-GCM ciphertext: `version (u32 BE) ‖ iv (12) ‖ ct ‖ tag (16)`.
pub const SEALED_OVERHEAD: usize = 4 + 12 + 16;

/// The vault's view of the HSM. Implementations must be usable from many
/// threads at once (`Pkcs11Hsm` keeps one session per thread).
pub trait Hsm: Send + Sync + 'static {
    /// AES-256-GCM under the newest `vault.pan.v<N>`, fresh 12-byte IV,
    /// AAD = `alias ‖ 0x00 ‖ field ‖ 0x00 ‖ N (u32 BE)`. Returns the stored form.
    fn seal(&self, alias: &str, field: &str, plaintext: &[u8]) -> HsmResult<Vec<u8>>;

    /// Opens a stored form made by [`Hsm::seal`] for the same alias and field,
    /// under whichever key version it names.
    fn open(&self, alias: &str, field: &str, sealed: &[u8]) -> HsmResult<Zeroizing<Vec<u8>>>;

    /// HMAC-SHA-256 under `vault.fp` of `tenant ‖ 0x00 ‖ PAN`.
    fn fingerprint(&self, tenant: &str, pan: &Pan) -> HsmResult<[u8; 32]>;

    /// HMAC-SHA-256 under `vault.audit` of `prev ‖ record`: the audit chain.
    fn audit_mac(&self, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]>;

    /// The newest audit key version: 1 is `vault.audit`, N > 1 is
    /// `vault.audit.v<N>` (made by `vaultd keys rotate-audit`).
    fn audit_key_version(&self) -> u32 {
        1
    }

    /// [`Hsm::audit_mac`] under audit key `version`: seals record which key
    /// made them, so a chain stays verifiable across audit key rotations.
    fn audit_mac_with(&self, version: u32, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]> {
        if version == 1 {
            self.audit_mac(prev, record)
        } else {
            Err(HsmError::KeyMissing(format!("vault.audit.v{version}")))
        }
    }

    /// Random bytes from the HSM's RNG.
    fn random(&self, out: &mut [u8]) -> HsmResult<()>;

    /// Checks a token key as a token service delivered it (RFC 3394,
    /// `CKM_AES_KEY_WRAP`, an AES-128 key wrapped under `tsp.<scheme>.kek`):
    /// unwraps it under the scheme's KEK versions, newest first, into a
    /// session object (derive only, sensitive, non-extractable) kept for
    /// `token_ref`'s next cryptogram, and returns the KEK version that
    /// unwrapped it, which the caller stores beside the blob. Nothing is
    /// written to the token.
    fn accept_token_key(&self, scheme: &str, token_ref: &str, wrapped: &[u8]) -> HsmResult<u32>;

    /// Forgets `token_ref`'s key: destroys its cached session object at
    /// once, and its token object `nt.<token_ref>` where an earlier release
    /// made one. Call after the commit that deleted or replaced the token's
    /// stored key. Succeeds when there is nothing to destroy.
    fn destroy_token_key(&self, token_ref: &str) -> HsmResult<()>;

    /// The cryptogram MAC of DESIGN.md: derives
    /// `SK = AES-ECB(TK, ATC ‖ 0xF0 ‖ 0x00×13)` from the token key inside
    /// the HSM, returns `AES-CMAC(SK, data)` (16 bytes) and destroys SK.
    /// `key` is the token's stored key (unwrapped at a cache miss); `None`
    /// for a token of an earlier release whose key is the token object
    /// `nt.<token_ref>`.
    fn cryptogram_mac(
        &self,
        token_ref: &str,
        key: Option<WrappedTokenKey<'_>>,
        atc: u16,
        data: &[u8],
    ) -> HsmResult<[u8; 16]>;

    /// The KEK versions of `scheme` in the token, oldest first (rescanned:
    /// `vaultd keys import-kek` may have added one from another process).
    fn kek_versions(&self, scheme: &str) -> HsmResult<Vec<u32>> {
        let _ = scheme;
        Ok(Vec::new())
    }

    /// The newest `vault.pan` key version.
    fn pan_key_version(&self) -> u32;

    /// Rescans the token for the newest PAN and audit key versions (another
    /// process may have rotated them) and returns the newest PAN version.
    fn refresh_key_versions(&self) -> HsmResult<u32> {
        Ok(self.pan_key_version())
    }

    /// Creates `vault.pan.v<newest+1>` and seals with it from now on.
    fn rotate_pan_key(&self) -> HsmResult<u32> {
        Err(HsmError::Other("this HSM cannot rotate keys".to_owned()))
    }

    /// Destroys `vault.pan.v<version>` (never the newest); whether it existed.
    /// The caller first makes sure nothing is sealed under it any more.
    fn retire_pan_key(&self, version: u32) -> HsmResult<bool> {
        let _ = version;
        Err(HsmError::Other("this HSM cannot retire keys".to_owned()))
    }

    /// Creates the next audit key version and seals with it from now on.
    fn rotate_audit_key(&self) -> HsmResult<u32> {
        Err(HsmError::Other("this HSM cannot rotate keys".to_owned()))
    }

    /// A cheap liveness check (e.g. `C_GetSessionInfo` on this thread's session).
    fn check(&self) -> HsmResult<()>;

    /// The module's upkeep figures, where this HSM has any.
    fn stats(&self) -> Option<vault_proto::ops::HsmStats> {
        None
    }

    /// A pool running this HSM's calls hands over its background queue, so
    /// the HSM can hold background work while it must not see token-object
    /// changes (SoftHSM2's standby re-initialisation).
    fn attach_background_hold(&self, hold: std::sync::Weak<dyn pool::BackgroundHold>) {
        let _ = hold;
    }
}
