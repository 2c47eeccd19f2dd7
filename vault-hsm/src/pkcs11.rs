//! [`Pkcs11Hsm`]: the [`Hsm`] trait over cryptoki. One `Pkcs11` context per
//! module, one logged-in session per thread, key handles cached by label.

mod copies;
mod errors;
mod handles;
pub(crate) mod locks;
mod module;
mod oneshot;
mod random;
pub(crate) mod rotation;
mod session;
mod startup;
pub(crate) mod templates;
mod token_keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::AuthPin;
use vault_proto::Pan;
use zeroize::{Zeroize, Zeroizing};

use crate::{Hsm, HsmError, HsmResult, SEALED_OVERHEAD, WrappedTokenKey};
pub(crate) use errors::CallError;
use errors::CallResult;
pub(crate) use errors::stale_handle;
pub(crate) use handles::find_all;
pub use handles::pan_label;
use handles::{HandleCache, TokenKey};
pub use module::SOFTHSM_REINIT_AFTER_OBJECTS;
use oneshot::Op;
use session::{SessionSource, ensure_logged_in};
pub use startup::{REQUIRED_MECHANISMS, finalize_module, quiesce_modules};

/// Default number of keys kept as session-object copies
/// ([`Pkcs11Hsm::set_key_cache`]).
pub const DEFAULT_KEY_CACHE: usize = copies::DEFAULT_CAPACITY;
/// Default number of network token keys kept unwrapped
/// ([`Pkcs11Hsm::set_token_key_cache`]).
pub const DEFAULT_TOKEN_KEY_CACHE: usize = token_keys::DEFAULT_CAPACITY;

/// Environment variable holding the user PIN; wins over `[hsm] pin_file`.
pub const PIN_ENV: &str = "VAULTD_HSM_PIN";

/// Label of the fingerprint key.
pub const FP_LABEL: &str = "vault.fp";
/// Label of the audit-chain key (version 1; later versions are
/// `vault.audit.v<N>`, see [`audit_label`]).
pub const AUDIT_LABEL: &str = "vault.audit";

/// Label of audit key version `version`: `vault.audit` for 1 (the label
/// vaults made before audit key rotation use), `vault.audit.v<N>` after.
pub fn audit_label(version: u32) -> String {
    if version <= 1 {
        AUDIT_LABEL.to_owned()
    } else {
        format!("{AUDIT_LABEL}.v{version}")
    }
}

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// Where the HSM is and how to log in (`[hsm]` in vaultd.toml).
#[derive(Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token holding the vault's keys.
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// The PIN taken out of the environment by [`take_pin_from_env`].
static PIN_FROM_ENV: std::sync::Mutex<Option<Zeroizing<String>>> = std::sync::Mutex::new(None);

/// Moves `VAULTD_HSM_PIN` out of the process environment into memory only
/// [`load_pin`] reads: the variable is removed and its bytes in the
/// environment block are overwritten, so neither a child process nor
/// `/proc/<pid>/environ` shows the PIN. Call first thing in `main`.
///
/// # Safety
/// No other thread may exist yet (it changes the environment).
pub unsafe fn take_pin_from_env() {
    let Ok(name) = std::ffi::CString::new(PIN_ENV) else {
        return;
    };
    // SAFETY: single-threaded (the caller's contract); getenv returns a
    // pointer into the environment block or null.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return;
    }
    // SAFETY: a NUL-terminated string in the environment block, writable
    // memory that no one else reads while single-threaded.
    let bytes = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
    let pin = Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
    let len = bytes.len();
    // SAFETY: as above; overwrite the value in place, keep its terminator.
    unsafe { std::ptr::write_bytes(value, 0, len) };
    // SAFETY: single-threaded (the caller's contract).
    unsafe { std::env::remove_var(PIN_ENV) };
    if !pin.is_empty() {
        *locks::lock(&PIN_FROM_ENV) = Some(pin);
    }
}

/// The user PIN: `VAULTD_HSM_PIN` if set and non-empty (also once taken by
/// [`take_pin_from_env`]), else the first line of `pin_file`, trimmed. A
/// PIN file that other users may read (or write) is refused.
pub fn load_pin(pin_file: Option<&Path>) -> Result<Zeroizing<String>, HsmError> {
    if let Some(pin) = locks::lock(&PIN_FROM_ENV).as_ref() {
        return Ok(pin.clone());
    }
    if let Ok(pin) = std::env::var(PIN_ENV) {
        let pin = Zeroizing::new(pin);
        if !pin.is_empty() {
            return Ok(pin);
        }
    }
    let Some(path) = pin_file else {
        return Err(HsmError::Unavailable(format!(
            "no HSM PIN: set [hsm] pin_file or the {PIN_ENV} environment variable"
        )));
    };
    let unreadable = |e: std::io::Error| {
        HsmError::Unavailable(format!(
            "cannot read HSM PIN file {} ({}): check [hsm] pin_file and its permissions, or set {PIN_ENV}",
            path.display(),
            e.kind()
        ))
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        file.metadata().map_err(unreadable)?.permissions().mode()
    };
    if mode & 0o007 != 0 {
        return Err(HsmError::Unavailable(format!(
            "HSM PIN file {} is open to other users (mode {:04o}): chmod o-rwx it (root:vaultd 0440 is the usual)",
            path.display(),
            mode & 0o7777
        )));
    }
    let mut content = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut file, &mut content).map_err(unreadable)?;
    let pin = content.lines().next().unwrap_or("").trim();
    if pin.is_empty() {
        return Err(HsmError::Unavailable(format!(
            "HSM PIN file {} is empty: its first line must be the user PIN",
            path.display()
        )));
    }
    Ok(Zeroizing::new(pin.to_owned()))
}

/// Distinguishes instances in the per-thread session table.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// The vault's HSM over PKCS#11. `Send + Sync`: share it in an `Arc`; every
/// thread that calls it gets its own logged-in session.
pub struct Pkcs11Hsm {
    source: Arc<SessionSource>,
    module: PathBuf,
    token_label: String,
    /// Newest `vault.pan.v<N>`; 0 when none exists (admin mode only).
    pan_version: AtomicU32,
    /// Newest audit key version (see [`audit_label`]); 0 when none exists.
    audit_version: AtomicU32,
    /// The `vault.pan.v<N>` versions the last scan found.
    pan_present: std::sync::Mutex<Vec<u32>>,
    /// Per scheme, the KEK versions the last scan found (oldest first).
    kek_versions: std::sync::Mutex<std::collections::HashMap<String, Vec<u32>>>,
    /// Whether the module takes `CKA_DERIVE_TEMPLATE` in an unwrap
    /// template: [`DERIVE_TEMPLATE_UNKNOWN`], `_YES` or `_NO`.
    derive_template: AtomicU8,
}

const DERIVE_TEMPLATE_UNKNOWN: u8 = 0;
const DERIVE_TEMPLATE_YES: u8 = 1;
const DERIVE_TEMPLATE_NO: u8 = 2;

impl std::fmt::Debug for Pkcs11Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Hsm")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pan_version", &self.pan_key_version())
            .finish_non_exhaustive()
    }
}

impl Pkcs11Hsm {
    /// Opens the token for the daemon: also checks that the newest
    /// `vault.pan.v<N>`, `vault.fp` and `vault.audit` exist.
    pub fn open(cfg: &HsmConfig) -> Result<Pkcs11Hsm, HsmError> {
        let hsm = Self::open_admin(cfg)?;
        startup::check_mechanisms(hsm.source.module.ctx(), hsm.source.slot, &cfg.module)?;
        let missing = hsm.missing_vault_keys()?;
        if !missing.is_empty() {
            return Err(HsmError::KeyMissing(format!(
                "{} in token {:?} (module {})",
                missing.join(", "),
                hsm.token_label,
                hsm.module.display()
            )));
        }
        hsm.check_kek_templates()?;
        Ok(hsm)
    }

    /// Warns about every scheme KEK without an unwrap template (made by a
    /// release before 2026-12; see `templates`): no module lets a template
    /// be added to an existing key, so the warning names the fix, the
    /// import ceremony again with the same components.
    fn check_kek_templates(&self) -> HsmResult<()> {
        for scheme in vault_proto::Scheme::ALL.map(vault_proto::Scheme::name) {
            for version in self.scan_kek_versions(scheme)? {
                let label = kek_version_label(scheme, version)?;
                self.session("check KEK unwrap template", |s| {
                    for handle in find_all(s, &label)? {
                        if let Ok(0) = templates::unwrap_template_len(self.oneshot(), s, handle) {
                            tracing::warn!(
                                kek = %label,
                                "the KEK has no unwrap template: whoever holds the HSM PIN can unwrap a stored token key as extractable; run `vaultd keys import-kek` again with the same components to remake it with one"
                            );
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Opens the token without requiring the vault's keys: for the
    /// `vaultd keys ...` commands that create them.
    pub fn open_admin(cfg: &HsmConfig) -> Result<Pkcs11Hsm, HsmError> {
        let module = startup::load_module(&cfg.module)?;
        let slot = startup::find_slot(module.ctx(), &cfg.module, &cfg.token_label)?;
        let hsm = Pkcs11Hsm {
            source: SessionSource::new(
                module,
                NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                slot,
                AuthPin::new(cfg.pin.as_str().into()),
            ),
            module: cfg.module.clone(),
            token_label: cfg.token_label.clone(),
            pan_version: AtomicU32::new(0),
            audit_version: AtomicU32::new(0),
            pan_present: std::sync::Mutex::new(Vec::new()),
            kek_versions: std::sync::Mutex::new(std::collections::HashMap::new()),
            derive_template: AtomicU8::new(DERIVE_TEMPLATE_UNKNOWN),
        };
        // First login on this thread, so a wrong PIN is reported at start-up
        // with a message that says what to do. (If this process is already
        // logged in to the token through another instance, PKCS#11 answers
        // USER_ALREADY_LOGGED_IN without checking the PIN.)
        hsm.source.first_login().map_err(|e| match e {
            CallError::Pkcs11(e) => startup::login_error(e, &cfg.module, &cfg.token_label),
            CallError::Hsm(e) => e,
        })?;
        hsm.refresh_pan_version()?;
        hsm.refresh_audit_version()?;
        Ok(hsm)
    }

    /// The module path this instance was opened with.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The token label this instance was opened with.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// Rescans the token for `vault.pan.v<N>` and makes the newest N the one
    /// [`Hsm::seal`] uses. Returns it (0 if none).
    pub fn refresh_pan_version(&self) -> HsmResult<u32> {
        let present = self.session("scan pan keys", |s| {
            searching_token(|| {
                // Only AES keys that may encrypt: the PAN keys, not the KEKs
                // or the derive-only `nt.*` keys of an earlier release.
                let candidates = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Encrypt(true),
                ])?;
                let mut present = Vec::new();
                for handle in candidates {
                    if let Some(v) = label_of(s, handle)?.as_deref().and_then(parse_pan_label) {
                        present.push(v);
                    }
                }
                Ok(present)
            })
        })?;
        // A version that is gone (retired, maybe by another process) must
        // not live on in a session copy.
        {
            let mut known = locks::lock(&self.pan_present);
            for gone in known.iter().filter(|v| !present.contains(v)) {
                self.key_changed(&pan_label(*gone));
            }
            known.clone_from(&present);
        }
        let newest = present.into_iter().max().unwrap_or(0);
        self.pan_version.store(newest, Ordering::Release);
        Ok(newest)
    }

    /// Rescans the token for audit keys and makes the newest version the
    /// one [`Hsm::audit_mac`] uses. Returns it (0 if none).
    pub fn refresh_audit_version(&self) -> HsmResult<u32> {
        let newest = self.session("scan audit keys", |s| {
            searching_token(|| {
                let candidates = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Sign(true),
                ])?;
                let mut newest = 0;
                for handle in candidates {
                    if let Some(v) = label_of(s, handle)?.as_deref().and_then(parse_audit_label) {
                        newest = newest.max(v);
                    }
                }
                Ok(newest)
            })
        })?;
        self.audit_version.store(newest, Ordering::Release);
        Ok(newest)
    }

    pub(crate) fn set_audit_version(&self, version: u32) {
        self.audit_version.store(version, Ordering::Release);
    }

    /// The vault keys `open` requires that are not in the token.
    fn missing_vault_keys(&self) -> HsmResult<Vec<String>> {
        let version = self.pan_key_version();
        self.session("check vault keys", |s| {
            let mut missing = Vec::new();
            if version == 0 {
                missing.push(pan_label(1));
            }
            if find_all(s, FP_LABEL)?.is_empty() {
                missing.push(FP_LABEL.to_owned());
            }
            if self.audit_version.load(Ordering::Acquire) == 0 {
                missing.push(AUDIT_LABEL.to_owned());
            }
            Ok(missing)
        })
    }

    /// Runs `op` on this thread's session (admin and diagnostics).
    pub(crate) fn session<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&Session) -> CallResult<T>,
    ) -> HsmResult<T> {
        self.source.with_session(what, |s| {
            ensure_logged_in(s)?;
            op(s)
        })
    }

    /// Single-part calls without a length query (see `oneshot`).
    pub(crate) fn oneshot(&self) -> &oneshot::OneShot {
        &self.source.module.lane().oneshot
    }

    pub(crate) fn handles(&self) -> &HandleCache {
        &self.source.handles
    }

    pub(crate) fn set_pan_version(&self, version: u32) {
        self.pan_version.store(version, Ordering::Release);
    }

    /// Runs `op` with the handle of `key`, looking it up once more if the
    /// cached handle went stale (key destroyed and re-created elsewhere).
    fn with_key<T>(
        &self,
        what: &'static str,
        key: KeyRef<'_>,
        op: impl Fn(&Session, ObjectHandle) -> CallResult<T>,
    ) -> HsmResult<T> {
        self.source.with_session(what, |s| {
            // The error, and the handle it came from (none: the lookup failed).
            let attempt = || -> Result<T, (CallError, Option<ObjectHandle>)> {
                let handle = self.lookup(s, key).map_err(|e| (e, None))?;
                op(s, handle).map_err(|e| (gone_under_us(s, handle, e), Some(handle)))
            };
            let retried = match attempt() {
                Err((e, handle)) if stale_handle(&e) => {
                    self.evict(s, key, handle);
                    attempt()
                }
                other => other,
            };
            match retried {
                Ok(v) => Ok(v),
                Err((e, handle)) if stale_handle(&e) || is_key_missing(&e) => {
                    // A logged-out session sees no private keys: that is an
                    // unavailable HSM, not a missing key.
                    ensure_logged_in(s)?;
                    if stale_handle(&e) {
                        self.evict(s, key, handle);
                        Err(HsmError::KeyMissing(key.label().into_owned()).into())
                    } else {
                        Err(e)
                    }
                }
                Err((e, _)) => Err(e),
            }
        })
    }

    /// The handle to use for `key`: its session copy where the key may be
    /// copied (see `copies`), else the token object.
    fn lookup(&self, s: &Session, key: KeyRef<'_>) -> CallResult<ObjectHandle> {
        if !key.copyable() {
            return self.lookup_token(s, key);
        }
        let label = key.label();
        // The vault's own keys serve every request: copy at first use.
        let always = matches!(key, KeyRef::Pan(_)) || label.starts_with("vault.");
        self.source.copies.get_or_copy(
            s,
            &self.source.module,
            &label,
            always,
            || self.lookup_token(s, key),
            |object, template| self.source.copy_key(object, template),
        )
    }

    fn lookup_token(&self, s: &Session, key: KeyRef<'_>) -> CallResult<ObjectHandle> {
        match key {
            KeyRef::Pan(0) => Err(HsmError::KeyMissing(pan_label(1)).into()),
            KeyRef::Pan(v) => self.source.handles.pan(s, v),
            KeyRef::Named(label) => self.source.handles.named(s, label),
        }
    }

    /// Forgets `key`'s cached handles after `failed` (the handle a call
    /// failed with, if any) went stale. A copy is only dropped if it is the
    /// one that failed: another thread may have made a new one meanwhile.
    fn evict(&self, s: &Session, key: KeyRef<'_>, failed: Option<ObjectHandle>) {
        if key.copyable() {
            self.source.copies.evict(s, &key.label(), failed);
        }
        match key {
            KeyRef::Pan(v) => self.source.handles.evict_pan(v),
            KeyRef::Named(label) => self.source.handles.evict_named(label),
        }
    }

    /// Records that `label`'s token object was destroyed or replaced (call
    /// after the change): session copies of the old key are dropped.
    pub(crate) fn key_changed(&self, label: &str) {
        self.source.copies.epochs.changed(label);
    }

    /// Key copies made since this instance opened (see `copies`).
    pub fn key_copies_made(&self) -> u64 {
        self.source.copies.made()
    }

    /// How many keys may be kept as session-object copies (default
    /// 16,384; 0 turns copying off). A copy costs SoftHSM2 about 8 KB of
    /// the process's memory; a hardware HSM counts them against its
    /// session-object limit.
    pub fn set_key_cache(&self, copies: usize) {
        self.source.copies.set_capacity(copies);
    }

    /// How many network token keys may be kept unwrapped in session objects
    /// (default [`DEFAULT_TOKEN_KEY_CACHE`], at least 1); a cryptogram for a
    /// token not among them costs one `C_UnwrapKey`.
    pub fn set_token_key_cache(&self, keys: usize) {
        self.source.token_keys.set_capacity(keys);
    }

    /// Token keys unwrapped since this instance opened, and how many are
    /// cached now.
    pub fn token_key_unwraps(&self) -> (u64, usize) {
        let c = &self.source.token_keys;
        (c.unwraps(), c.len())
    }

    /// Scans the token for `scheme`'s KEK versions (oldest first) and
    /// remembers them.
    fn scan_kek_versions(&self, scheme: &str) -> HsmResult<Vec<u32>> {
        kek_label(scheme)?;
        let mut versions = self.session("scan KEKs", |s| {
            searching_token(|| {
                let candidates = s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Token(true),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Unwrap(true),
                ])?;
                let mut found = Vec::new();
                for handle in candidates {
                    if let Some(v) = label_of(s, handle)?
                        .as_deref()
                        .and_then(|l| parse_kek_label(scheme, l))
                    {
                        found.push(v);
                    }
                }
                Ok(found)
            })
        })?;
        versions.sort_unstable();
        versions.dedup();
        locks::lock(&self.kek_versions).insert(scheme.to_owned(), versions.clone());
        Ok(versions)
    }

    /// Unwraps `wrapped` under `scheme`'s KEK `version` into a session
    /// object and keeps it for `token_ref`. `Integrity` when the blob is not
    /// wrapped under that KEK.
    fn unwrap_token_session_key(
        &self,
        scheme: &str,
        version: u32,
        token_ref: &str,
        wrapped: &[u8],
    ) -> HsmResult<()> {
        let kek = kek_version_label(scheme, version)?;
        self.with_key("unwrap token key", KeyRef::Named(&kek), |s, kek| {
            let handle = self.unwrap_on_owner(s, kek, wrapped)?;
            self.keep_token_key(s, token_ref, version, wrapped, handle);
            Ok(())
        })
    }

    /// `C_UnwrapKey` of a token key into a session object of the owner
    /// session (it must outlive this thread's session).
    fn unwrap_on_owner(
        &self,
        s: &Session,
        kek: ObjectHandle,
        wrapped: &[u8],
    ) -> CallResult<ObjectHandle> {
        let template = token_key_template(None, false);
        let unwrap = |owner: &Session, derive_template| {
            templates::unwrap_key(
                self.oneshot(),
                owner,
                &Mechanism::AesKeyWrap,
                kek,
                wrapped,
                &template,
                derive_template,
            )
        };
        let made = match self.derive_template.load(Ordering::Relaxed) {
            DERIVE_TEMPLATE_YES => self.source.make_on_owner(|o| unwrap(o, true)),
            DERIVE_TEMPLATE_NO => self.source.make_on_owner(|o| unwrap(o, false)),
            _ => {
                let first = self.source.make_on_owner(|o| unwrap(o, true));
                if matches!(
                    first,
                    Err(CallError::Pkcs11(Error::Pkcs11(
                        RvError::AttributeTypeInvalid,
                        _
                    )))
                ) {
                    self.derive_template
                        .store(DERIVE_TEMPLATE_NO, Ordering::Relaxed);
                    tracing::info!(
                        "the PKCS#11 module does not take CKA_DERIVE_TEMPLATE on a secret key: token keys are unwrapped without one (keys derived from them are still made sensitive and non-extractable by vaultd)"
                    );
                    self.source.make_on_owner(|o| unwrap(o, false))
                } else {
                    if first.is_ok() {
                        self.derive_template
                            .store(DERIVE_TEMPLATE_YES, Ordering::Relaxed);
                    }
                    first
                }
            }
        };
        let handle = match made {
            Ok(h) => h,
            Err(CallError::Pkcs11(e)) => return Err(authentication_failed(s, e)),
            Err(e) => return Err(e),
        };
        self.source.module.made_session_objects(1);
        Ok(handle)
    }

    /// Caches `handle` for `token_ref` and destroys what the cache let go.
    fn keep_token_key(
        &self,
        s: &Session,
        token_ref: &str,
        version: u32,
        wrapped: &[u8],
        handle: ObjectHandle,
    ) -> ObjectHandle {
        let (used, dead) = self
            .source
            .token_keys
            .insert(token_ref, version, wrapped, handle);
        for h in dead {
            // Possibly already gone with its session; either way unused.
            let _ = s.destroy_object(h);
        }
        used
    }

    /// Puts a token key of known value into the token-key cache as a
    /// session object (derive only, sensitive, non-extractable) for
    /// `token_ref`, as if unwrapped from `blob` under KEK version
    /// `kek_version`: benchmarks and tests measure and check the cryptogram
    /// path without a token service. Never used by the daemon.
    #[doc(hidden)]
    pub fn cache_token_key_for_test(
        &self,
        token_ref: &str,
        kek_version: u32,
        blob: &[u8],
        key: &[u8; 16],
    ) -> HsmResult<()> {
        self.session("cache test token key", |s| {
            let mut template = token_key_template(None, false);
            template.push(Attribute::Value(key.to_vec()));
            let made = self.source.make_on_owner(|o| o.create_object(&template));
            zeroize_template(&mut template);
            let handle = made?;
            self.keep_token_key(s, token_ref, kek_version, blob, handle);
            Ok(())
        })
    }

    /// Runs `f` on this thread's logged-in session: tests act as whoever
    /// holds the PIN, with any PKCS#11 call. Never used by the daemon.
    #[doc(hidden)]
    pub fn with_session_for_test<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, Error>,
    ) -> HsmResult<T> {
        self.session("test session", |s| Ok(f(s)?))
    }

    /// Makes `nt.<token_ref>` a token object holding the unwrapped key, as
    /// releases before 2026-12 did for every provisioned token. vaultd no
    /// longer does; kept for tests that build a vault of such a release.
    #[doc(hidden)]
    pub fn legacy_unwrap_token_object(
        &self,
        scheme: &str,
        token_ref: &str,
        wrapped: &[u8],
    ) -> HsmResult<()> {
        let newest = self.scan_kek_versions(scheme)?.last().copied().unwrap_or(1);
        let kek = kek_version_label(scheme, newest)?;
        let label = token_key_label(token_ref)?;
        check_wrapped_len(wrapped)?;
        self.with_key("unwrap_token_key", KeyRef::Named(&kek), |s, kek| {
            ensure_logged_in(s)?;
            if self.destroy_token_key_objects(s, &label)? {
                self.key_changed(&label);
            }
            let template = token_key_template(Some(&label), true);
            let handle = creating_token_object(|| {
                s.unwrap_key(&Mechanism::AesKeyWrap, kek, wrapped, &template)
            })
            .map_err(|e| authentication_failed(s, e))?;
            self.source.handles.insert_named(&label, handle);
            Ok(())
        })
    }

    /// The cryptogram MAC with the token key `nt.<token_ref>`, a token
    /// object an earlier release made.
    fn legacy_cryptogram_mac(&self, token_ref: &str, atc: u16, data: &[u8]) -> HsmResult<[u8; 16]> {
        let label = token_key_label(token_ref)?;
        self.with_key("cryptogram_mac", KeyRef::Named(&label), |s, tk| {
            self.derive_and_mac(s, tk, atc, data)
        })
    }

    /// `SK = AES-ECB(TK, ATC ‖ 0xF0 ‖ 0x00×13)` derived in the HSM,
    /// `AES-CMAC(SK, data)`, SK destroyed.
    fn derive_and_mac(
        &self,
        s: &Session,
        tk: ObjectHandle,
        atc: u16,
        data: &[u8],
    ) -> CallResult<[u8; 16]> {
        let mut block = [0u8; 16];
        block[..2].copy_from_slice(&atc.to_be_bytes());
        block[2] = 0xF0;
        // AES-CBC-ENCRYPT-DATA with a zero IV over one block equals
        // AES-ECB-ENCRYPT-DATA, and cryptoki 0.12 has a type only for CBC.
        let params = AesCbcDeriveParams::new([0u8; 16], &block);
        let sk = s.derive_key(
            &Mechanism::AesCbcEncryptData(params),
            tk,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(16.into()),
                Attribute::Token(false),
                // A session object of this session, destroyed below:
                // CKA_PRIVATE only hides objects from sessions that are
                // not logged in, and SoftHSM2 would encrypt a private
                // value in memory and decrypt it again for the CMAC.
                // Sensitive and non-extractable keep it inside the HSM.
                Attribute::Private(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
            ],
        )?;
        self.source.module.made_session_objects(1);
        let mut mac = [0u8; 16];
        let signed = self
            .oneshot()
            .call(Op::Sign, s, &Mechanism::AesCMac, sk, data, &mut mac);
        // Always destroy SK; it would also vanish with the session.
        if let Err(e) = s.destroy_object(sk) {
            tracing::warn!(error = %startup::short(&e), "could not destroy a cryptogram session key");
        }
        Ok(to_array(&mac[..signed?], "cryptogram_mac")?)
    }

    /// Re-initialise the PKCS#11 module after this many session objects
    /// (cryptogram session keys, key copies), to make SoftHSM2 free the
    /// destroyed ones it keeps until `C_Finalize`; 0 never does. The default
    /// is [`SOFTHSM_REINIT_AFTER_OBJECTS`] for SoftHSM2 and 0 for any other
    /// module. The setting is per module (every instance on it shares it).
    pub fn set_reinit_after_objects(&self, objects: u64) {
        self.source.module.set_reinit_after(objects);
    }

    /// The module's re-initialisation budget (see
    /// [`Pkcs11Hsm::set_reinit_after_objects`]).
    pub fn reinit_after_objects(&self) -> u64 {
        self.source.module.reinit_after()
    }

    /// How many times this process re-initialised the module.
    pub fn reinitializations(&self) -> u64 {
        self.source.module.reinits()
    }

    /// Re-initialise SoftHSM2 through a standby copy of the library (the
    /// default; see `module`), or in place (`false`). Per module; ignored
    /// for other modules.
    pub fn set_reinit_standby(&self, on: bool) {
        self.source.module.set_use_standby(on);
    }

    /// Of [`Pkcs11Hsm::reinitializations`], those that switched to the
    /// standby copy.
    pub fn standby_switches(&self) -> u64 {
        self.source.module.switches()
    }

    /// Destroys every object labelled `label` (a token key's); whether
    /// there was one. On SoftHSM2 the handle cache knows every token key
    /// (one pass, see `handles`), so no search reads every object file per
    /// provisioning or deletion; other HSMs search by label. A handle that
    /// turns out stale is settled by a search.
    fn destroy_token_key_objects(&self, s: &Session, label: &str) -> CallResult<bool> {
        let (mut targets, mut searched) = match self.source.handles.token_key(s, label)? {
            TokenKey::Absent => (Vec::new(), false),
            TokenKey::Present(h) => (vec![h], false),
            TokenKey::Unknown => (find_all(s, label)?, true),
        };
        let mut destroyed = false;
        loop {
            let mut stale = false;
            for h in targets {
                match creating_token_object(|| s.destroy_object(h)).map_err(CallError::from) {
                    Ok(()) => destroyed = true,
                    Err(e) if stale_handle(&e) => stale = true,
                    Err(e) => return Err(e),
                }
            }
            if !stale || searched {
                break;
            }
            searched = true;
            targets = find_all(s, label)?;
        }
        self.source.handles.token_key_gone(label);
        Ok(destroyed)
    }

    /// HMAC-SHA-256 under the generic-secret key `label`.
    fn hmac(&self, what: &'static str, label: &str, data: &[u8]) -> HsmResult<[u8; 32]> {
        self.with_key(what, KeyRef::Named(label), |s, key| {
            let mut mac = [0u8; 32];
            let n =
                self.oneshot()
                    .call(Op::Sign, s, &Mechanism::Sha256Hmac, key, data, &mut mac)?;
            Ok(to_array(&mac[..n], what)?)
        })
    }
}

impl Drop for Pkcs11Hsm {
    fn drop(&mut self) {
        // Sessions of other threads close when those threads exit.
        self.source.forget_on_this_thread();
    }
}

#[derive(Clone, Copy)]
enum KeyRef<'a> {
    Pan(u32),
    Named(&'a str),
}

impl<'a> KeyRef<'a> {
    /// Scheme KEKs are not copied: an operator may retire a version from
    /// another process (`keys retire-kek`), and unwraps are rare.
    fn copyable(self) -> bool {
        match self {
            KeyRef::Pan(v) => v > 0,
            KeyRef::Named(label) => !label.starts_with("tsp."),
        }
    }

    fn label(self) -> std::borrow::Cow<'a, str> {
        match self {
            KeyRef::Pan(v) => pan_label(v).into(),
            KeyRef::Named(l) => l.into(),
        }
    }
}

impl Hsm for Pkcs11Hsm {
    fn seal(&self, alias: &str, field: &str, plaintext: &[u8]) -> HsmResult<Vec<u8>> {
        let version = self.pan_key_version();
        let aad = Aad::new(alias, field, version);
        self.with_key("seal", KeyRef::Pan(version), |s, key| {
            let mut iv = [0u8; IV_LEN];
            random::fill(self.source.instance, s, &mut iv)?;
            let mut out = vec![0u8; SEALED_OVERHEAD + plaintext.len()];
            let (header, ct) = out.split_at_mut(4 + IV_LEN);
            header[..4].copy_from_slice(&version.to_be_bytes());
            header[4..].copy_from_slice(&iv);
            let params = GcmParams::new(&mut iv, aad.bytes(), TAG_BITS.into())?;
            let n = self.oneshot().call(
                Op::Encrypt,
                s,
                &Mechanism::AesGcm(params),
                key,
                plaintext,
                ct,
            )?;
            if n != ct.len() {
                return Err(HsmError::Other(format!(
                    "AES-GCM sealed {} bytes into {n}; expected {}",
                    plaintext.len(),
                    ct.len()
                ))
                .into());
            }
            Ok(out)
        })
    }

    fn open(&self, alias: &str, field: &str, sealed: &[u8]) -> HsmResult<Zeroizing<Vec<u8>>> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(HsmError::Integrity);
        }
        let (version, rest) = sealed.split_at(4);
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        if version == 0 {
            return Err(HsmError::KeyMissing(pan_label(0)));
        }
        let (iv, ct) = rest.split_at(IV_LEN);
        let aad = Aad::new(alias, field, version);
        self.with_key("open", KeyRef::Pan(version), |s, key| {
            let mut iv_buf = [0u8; IV_LEN];
            iv_buf.copy_from_slice(iv);
            let params = GcmParams::new(&mut iv_buf, aad.bytes(), TAG_BITS.into())?;
            // SoftHSM2 asks for a buffer as long as the ciphertext.
            let mut plain = Zeroizing::new(vec![0u8; ct.len()]);
            let n = self
                .oneshot()
                .call(
                    Op::Decrypt,
                    s,
                    &Mechanism::AesGcm(params),
                    key,
                    ct,
                    &mut plain,
                )
                .map_err(|e| authentication_failed(s, e))?;
            plain.truncate(n);
            Ok(plain)
        })
    }

    fn fingerprint(&self, tenant: &str, pan: &Pan) -> HsmResult<[u8; 32]> {
        let pan = pan.expose().as_bytes();
        let len = tenant.len() + 1 + pan.len();
        // Stack buffer for the usual sizes; zeroized because it holds the PAN.
        let mut stack = Zeroizing::new([0u8; 128]);
        let mut heap = Zeroizing::new(Vec::new());
        let data: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap[..]
        };
        data[..tenant.len()].copy_from_slice(tenant.as_bytes());
        data[tenant.len()] = 0;
        data[tenant.len() + 1..].copy_from_slice(pan);
        self.hmac("fingerprint", FP_LABEL, data)
    }

    fn audit_mac(&self, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]> {
        self.audit_mac_with(self.audit_key_version(), prev, record)
    }

    fn audit_key_version(&self) -> u32 {
        // An admin instance may run before `keys init`: version 1 then
        // names the (missing) `vault.audit`.
        self.audit_version.load(Ordering::Acquire).max(1)
    }

    fn audit_mac_with(&self, version: u32, prev: &[u8; 32], record: &[u8]) -> HsmResult<[u8; 32]> {
        let mut data = Vec::with_capacity(32 + record.len());
        data.extend_from_slice(prev);
        data.extend_from_slice(record);
        self.hmac("audit_mac", &audit_label(version), &data)
    }

    fn random(&self, out: &mut [u8]) -> HsmResult<()> {
        let instance = self.source.instance;
        self.source
            .with_session("random", |s| random::fill(instance, s, out))
    }

    fn accept_token_key(&self, scheme: &str, token_ref: &str, wrapped: &[u8]) -> HsmResult<u32> {
        token_key_label(token_ref)?;
        check_wrapped_len(wrapped)?;
        let known = locks::lock(&self.kek_versions).get(scheme).cloned();
        let mut tried = Vec::new();
        // The versions known, newest first; then, if none fits, a rescan
        // for one imported since (by `vaultd keys import-kek`).
        for rescan in [false, true] {
            let versions = match (&known, rescan) {
                (Some(v), false) => v.clone(),
                (None, false) => continue,
                (_, true) => self.scan_kek_versions(scheme)?,
            };
            for &v in versions.iter().rev() {
                if tried.contains(&v) {
                    continue;
                }
                tried.push(v);
                match self.unwrap_token_session_key(scheme, v, token_ref, wrapped) {
                    Ok(()) => return Ok(v),
                    Err(HsmError::Integrity) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if tried.is_empty() {
            return Err(HsmError::KeyMissing(kek_label(scheme)?));
        }
        // Wrapped under no KEK the vault holds (or tampered with).
        Err(HsmError::Integrity)
    }

    fn kek_versions(&self, scheme: &str) -> HsmResult<Vec<u32>> {
        self.scan_kek_versions(scheme)
    }

    fn destroy_token_key(&self, token_ref: &str) -> HsmResult<()> {
        let label = token_key_label(token_ref)?;
        let destroyed = self.session("destroy_token_key", |s| {
            if let Some(h) = self.source.token_keys.remove(token_ref) {
                // Gone already if its session died: fine.
                let _ = s.destroy_object(h);
            }
            self.destroy_token_key_objects(s, &label).map(|_| ())
        });
        // Also after a failure: part of the objects may be gone.
        self.key_changed(&label);
        destroyed
    }

    fn cryptogram_mac(
        &self,
        token_ref: &str,
        key: Option<WrappedTokenKey<'_>>,
        atc: u16,
        data: &[u8],
    ) -> HsmResult<[u8; 16]> {
        let Some(key) = key else {
            return self.legacy_cryptogram_mac(token_ref, atc, data);
        };
        let cache = &self.source.token_keys;
        // The usual case: the key is unwrapped already.
        let hit = self.source.with_session("cryptogram_mac", |s| {
            let Some(tk) = cache.get(token_ref, key.kek_version, key.wrapped) else {
                return Ok(None);
            };
            match self.derive_and_mac(s, tk, atc, data) {
                Ok(mac) => Ok(Some(mac)),
                Err(e) => {
                    let e = gone_under_us(s, tk, e);
                    if !stale_handle(&e) {
                        return Err(e);
                    }
                    // Evicted or dead under us: unwrapped afresh below.
                    cache.remove_if(token_ref, tk);
                    Ok(None)
                }
            }
        })?;
        if let Some(mac) = hit {
            return Ok(mac);
        }
        let kek = kek_version_label(key.scheme, key.kek_version)?;
        self.with_key("cryptogram_mac", KeyRef::Named(&kek), |s, kek| {
            let tk = match cache.get(token_ref, key.kek_version, key.wrapped) {
                Some(tk) => tk,
                None => {
                    let tk = self.unwrap_on_owner(s, kek, key.wrapped)?;
                    self.keep_token_key(s, token_ref, key.kek_version, key.wrapped, tk)
                }
            };
            self.derive_and_mac(s, tk, atc, data).map_err(|e| {
                let e = gone_under_us(s, tk, e);
                if stale_handle(&e) {
                    // Evicted or dead under us: `with_key` calls again,
                    // which unwraps afresh.
                    cache.remove_if(token_ref, tk);
                }
                e
            })
        })
    }

    fn pan_key_version(&self) -> u32 {
        self.pan_version.load(Ordering::Acquire)
    }

    fn refresh_key_versions(&self) -> HsmResult<u32> {
        self.refresh_audit_version()?;
        self.refresh_pan_version()
    }

    fn rotate_pan_key(&self) -> HsmResult<u32> {
        rotation::rotate_pan_key(self)
    }

    fn rotate_audit_key(&self) -> HsmResult<u32> {
        rotation::rotate_audit_key(self)
    }

    fn retire_pan_key(&self, version: u32) -> HsmResult<bool> {
        rotation::destroy_pan_key(self, version)
    }

    fn check(&self) -> HsmResult<()> {
        // `session` already asks C_GetSessionInfo whether we are logged in.
        self.session("check", |_| Ok(()))
    }

    fn attach_background_hold(&self, hold: std::sync::Weak<dyn crate::pool::BackgroundHold>) {
        self.source.module.attach_background_hold(hold);
    }

    fn stats(&self) -> Option<vault_proto::ops::HsmStats> {
        let module = &self.source.module;
        Some(vault_proto::ops::HsmStats {
            reinit_after_objects: module.reinit_after(),
            session_objects: module.session_objects(),
            reinitializations: module.reinits(),
            last_reinit_pause_ms: module.last_pause_ms(),
            standby_switches: module.switches(),
            key_copies_made: self.key_copies_made(),
            // The pool's figures (`HsmPool::stats` fills them in).
            background_queued: 0,
            background_done: 0,
            token_key_unwraps: self.token_key_unwraps().0,
            token_keys_cached: self.token_key_unwraps().1 as u64,
        })
    }
}

/// `alias ‖ 0x00 ‖ field ‖ 0x00 ‖ version (u32 BE)`: never empty, binds a
/// ciphertext to its record, field and key version.
struct Aad {
    stack: [u8; 128],
    heap: Vec<u8>,
    len: usize,
}

impl Aad {
    fn new(alias: &str, field: &str, version: u32) -> Self {
        let len = alias.len() + 1 + field.len() + 1 + 4;
        let mut aad = Aad {
            stack: [0u8; 128],
            heap: Vec::new(),
            len,
        };
        let buf: &mut [u8] = if len <= aad.stack.len() {
            &mut aad.stack[..len]
        } else {
            aad.heap.resize(len, 0);
            &mut aad.heap[..]
        };
        let (a, rest) = buf.split_at_mut(alias.len());
        a.copy_from_slice(alias.as_bytes());
        rest[0] = 0;
        let (f, rest) = rest[1..].split_at_mut(field.len());
        f.copy_from_slice(field.as_bytes());
        rest[0] = 0;
        rest[1..].copy_from_slice(&version.to_be_bytes());
        aad
    }

    fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// `e`, or a stale-handle error when `handle` no longer exists: an object
/// destroyed while a call used it (a key copy evicted by another thread, or
/// one whose session closed) makes SoftHSM2 answer with whatever check it
/// was at (`CKR_KEY_TYPE_INCONSISTENT`, `CKR_KEY_FUNCTION_NOT_PERMITTED`)
/// instead of `CKR_OBJECT_HANDLE_INVALID`; such a call is retried with a
/// fresh handle like any stale one.
fn gone_under_us(s: &Session, handle: ObjectHandle, e: CallError) -> CallError {
    // Already stale, or the session itself is gone: nothing to ask.
    if stale_handle(&e) || errors::kills_session(&e) {
        return e;
    }
    match s.get_attributes(handle, &[AttributeType::Class]) {
        Err(
            gone @ cryptoki::error::Error::Pkcs11(
                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                _,
            ),
        ) => {
            tracing::debug!(error = ?errors::rv(&e), "a key was destroyed during a call; retrying with a fresh handle");
            gone.into()
        }
        _ => e,
    }
}

/// Token objects are created, destroyed and searched one at a time in this
/// process: SoftHSM2's file backend answers CKR_GENERAL_ERROR (or
/// CKR_TEMPLATE_INCONSISTENT) when sessions change or search the token's
/// objects at the same moment. Changes are rare (key
/// ceremony, one token key per provisioned or deleted token), so the lock
/// costs nothing on the hot path.
pub(crate) fn creating_token_object<T>(f: impl FnOnce() -> T) -> T {
    let _guard = locks::lock(&TOKEN_OBJECTS);
    module::token_object_changing();
    f()
}

/// Runs a search of the token's objects under the same lock as
/// [`creating_token_object`], without counting it as a change.
pub(crate) fn searching_token<T>(f: impl FnOnce() -> T) -> T {
    let _guard = locks::lock(&TOKEN_OBJECTS);
    f()
}

/// Serialises token-object changes and searches in this process.
static TOKEN_OBJECTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `tsp.<scheme>.kek`, for a known scheme only.
pub fn kek_label(scheme: &str) -> HsmResult<String> {
    match scheme.parse::<vault_proto::Scheme>() {
        Ok(s) => Ok(format!("tsp.{s}.kek")),
        Err(_) => Err(HsmError::Other(format!(
            "unknown scheme {scheme:?} (expected one of {})",
            vault_proto::Scheme::names()
        ))),
    }
}

/// Label of `scheme`'s KEK `version`: `tsp.<scheme>.kek` for 1 (the label
/// every vault had before KEK versions), `tsp.<scheme>.kek.v<N>` after.
pub fn kek_version_label(scheme: &str, version: u32) -> HsmResult<String> {
    let base = kek_label(scheme)?;
    Ok(if version <= 1 {
        base
    } else {
        format!("{base}.v{version}")
    })
}

/// The KEK version a label names for `scheme`, if it is one of its KEKs.
pub fn parse_kek_label(scheme: &str, label: &str) -> Option<u32> {
    let rest = label
        .strip_prefix("tsp.")?
        .strip_prefix(scheme)?
        .strip_prefix(".kek")?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix(".v")?.parse().ok().filter(|v| *v > 1)
}

/// DESIGN.md: token keys are AES-128, and RFC 3394 of 16 bytes is 24.
/// Checked here because SoftHSM2 neither accepts CKA_VALUE_LEN in an
/// unwrap template nor reports it afterwards.
fn check_wrapped_len(wrapped: &[u8]) -> HsmResult<()> {
    if wrapped.len() == 24 {
        Ok(())
    } else {
        Err(HsmError::Other(format!(
            "wrapped token key is {} bytes; an RFC 3394-wrapped AES-128 key is 24",
            wrapped.len()
        )))
    }
}

/// The attributes of an unwrapped token key: derive only, sensitive,
/// non-extractable; a token object (`label`) only on the legacy path.
fn token_key_template(label: Option<&str>, token: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ];
    if let Some(l) = label {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    t
}

/// `nt.<token_ref>`; token references are printable ASCII without spaces,
/// at most 64 characters, so labels stay unambiguous.
pub fn token_key_label(token_ref: &str) -> HsmResult<String> {
    let ok = !token_ref.is_empty()
        && token_ref.len() <= 64
        && token_ref.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(format!("nt.{token_ref}"))
    } else {
        Err(HsmError::Other(
            "invalid token reference (1-64 printable ASCII characters)".to_owned(),
        ))
    }
}

fn parse_audit_label(label: &str) -> Option<u32> {
    if label == AUDIT_LABEL {
        return Some(1);
    }
    label
        .strip_prefix("vault.audit.v")?
        .parse()
        .ok()
        .filter(|v| *v > 1)
}

pub(crate) fn parse_pan_label(label: &str) -> Option<u32> {
    label
        .strip_prefix("vault.pan.v")?
        .parse()
        .ok()
        .filter(|v| *v > 0)
}

pub(crate) fn label_of(s: &Session, handle: ObjectHandle) -> CallResult<Option<String>> {
    let attrs = s.get_attributes(handle, &[AttributeType::Label])?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Label(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        _ => None,
    }))
}

/// The error of a call that authenticates its input (GCM decrypt, RFC 3394
/// unwrap). SoftHSM2 reports a failed check as CKR_GENERAL_ERROR (real HSMs
/// say CKR_ENCRYPTED_DATA_INVALID or CKR_WRAPPED_KEY_INVALID, which map to
/// `Integrity` anyway): tell it from a sick device by asking whether the
/// session still answers.
fn authentication_failed(s: &Session, e: Error) -> CallError {
    match e {
        Error::Pkcs11(RvError::GeneralError, Function::Decrypt | Function::UnwrapKey)
            if s.get_session_info().is_ok() =>
        {
            HsmError::Integrity.into()
        }
        e => e.into(),
    }
}

fn is_key_missing(e: &CallError) -> bool {
    matches!(e, CallError::Hsm(HsmError::KeyMissing(_)))
}

fn to_array<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], HsmError> {
    bytes.try_into().map_err(|_| {
        HsmError::Other(format!(
            "{what}: HSM returned {} bytes, expected {N}",
            bytes.len()
        ))
    })
}

/// Zeroizes the values of a key template after use.
pub(crate) fn zeroize_template(template: &mut [Attribute]) {
    for attr in template {
        if let Attribute::Value(v) = attr {
            v.zeroize();
        }
    }
}
