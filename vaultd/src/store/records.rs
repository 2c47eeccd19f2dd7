//! Stored records: versioned MessagePack (rmp-serde, named fields). Every
//! stored value starts with one byte naming its record schema version, so a
//! future layout can be read beside the old one and migrated by copying.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vault_proto::ops::{JobState, TokenStatus};

use super::StoreError;

/// Version byte of every record written by this build.
pub const RECORD_VERSION: u8 = 1;

/// Records are stored positionally (MessagePack arrays, no field names):
/// about half the bytes of the named form, so fewer pages per commit. New
/// fields go at the end with `#[serde(default)]`; the decoder accepts the
/// named form too.
pub fn encode<T: Serialize>(rec: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![RECORD_VERSION];
    rmp_serde::encode::write(&mut out, rec)
        .map_err(|e| StoreError::Corrupt(format!("encode: {e}")))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => rmp_serde::from_slice(body)
            .map_err(|_| StoreError::Corrupt(format!("undecodable {what} record"))),
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "{what} record has unknown version {v}"
        ))),
        None => Err(StoreError::Corrupt(format!("empty {what} record"))),
    }
}

/// One alias: the card's non-secret facts and where its secrets are.
/// The encrypted PAN lives in its own table (`pans`) so that erasing it
/// touches one small record and "PANs retained" is that table's length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRec {
    pub tenant: String,
    pub fingerprint: Vec<u8>,
    pub bin: String,
    pub last4: String,
    pub pan_len: u8,
    pub exp_month: u8,
    pub exp_year: u16,
    pub scheme: String,
    pub created_at: u64,
    /// True once the encrypted PAN was erased (remove_pan, retention, or
    /// never stored under `pan_retention = "none"`).
    pub pan_removed: bool,
    /// Where the sealed PAN is in the slot file (`None` once erased).
    #[serde(default)]
    pub pan_slot: Option<u64>,
    /// Network token state as merchants see it; `None` when network tokens
    /// are off for the tenant or the scheme has no token service.
    pub nt: Option<NtState>,
}

/// The alias's view of its network token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NtState {
    pub status: TokenStatus,
    pub token_ref: Option<String>,
    pub updated_at: u64,
    pub last_error: Option<String>,
    /// When the token became active (drives `transition` retention).
    pub active_since: Option<u64>,
    /// The provisioning job in the queue for this alias, if any.
    #[serde(default)]
    pub job: Option<u64>,
}

/// A network token (table `tokens`, by token_ref).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRec {
    pub alias: String,
    pub tenant: String,
    pub scheme: String,
    /// The token number, sealed under `vault.pan.v<N>` with field "token".
    pub token_ct: Vec<u8>,
    pub token_last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub par: Option<String>,
    pub token_requestor_id: String,
    pub status: TokenStatus,
    /// Last ATC issued; the next cryptogram uses atc + 1.
    pub atc: u16,
    pub updated_at: u64,
    /// A key refresh is queued (ATC exhausted).
    #[serde(default)]
    pub refresh_pending: bool,
    /// The token key as the token service delivered it, wrapped under
    /// `tsp.<scheme>.kek` (DESIGN.md "Keys"). `None` for a token of a release
    /// before 2026-12, whose key is the HSM object `nt.<token_ref>` until
    /// its key refresh (the migration), and for a deleted token.
    #[serde(default)]
    pub key: Option<StoredKey>,
}

/// A network token's key in its record: RFC 3394 blob and KEK version.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredKey {
    pub kek_version: u32,
    #[serde(with = "serde_bytes")]
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Wrapped, so not secret; still nothing a log needs.
        write!(
            f,
            "StoredKey(kek v{}, {} bytes)",
            self.kek_version,
            self.wrapped.len()
        )
    }
}

impl StoredKey {
    pub fn as_hsm<'a>(&'a self, scheme: &'a str) -> vault_hsm::WrappedTokenKey<'a> {
        vault_hsm::WrappedTokenKey {
            scheme,
            kek_version: self.kek_version,
            wrapped: &self.wrapped,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Provision,
    Delete,
    KeyRefresh,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::Delete => "delete",
            JobKind::KeyRefresh => "key_refresh",
        }
    }
}

/// A durable job (table `jobs`, by id; due and scheduled jobs are also in
/// `job_queue` by (next_at, id)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRec {
    pub id: u64,
    pub kind: JobKind,
    pub alias: String,
    pub tenant: String,
    pub scheme: String,
    pub token_ref: Option<String>,
    pub state: JobState,
    pub attempts: u32,
    pub next_at: u64,
    pub last_error: Option<String>,
    pub created_at: u64,
    /// The idempotency key of this job's calls to the token service:
    /// random, 128 bits, made with the job, so a job id that repeats (a new
    /// database, a restored backup) never repeats a key. `None` for jobs
    /// queued by a release before 2026-12 (their key is the job id).
    #[serde(default)]
    pub idem: Option<String>,
}

impl JobRec {
    /// The idempotency key for the token service.
    pub fn idempotency_key(&self) -> String {
        self.idem.clone().unwrap_or_else(|| job_id_string(self.id))
    }
}

/// A fresh idempotency key: 128 random bits from the OS, 32 hex digits.
pub fn new_idempotency_key() -> String {
    let mut b = [0u8; 16];
    // The OS random source does not fail on Linux once booted; a zero key
    // would only cost idempotency, never correctness of other cards'
    // tokens (the vault refuses a token owned by another alias).
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Wire form of a job id: 16 hex digits, so ids sort as strings too.
pub fn job_id_string(id: u64) -> String {
    format!("{id:016x}")
}

pub fn parse_job_id(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// A transaction id remembered for `transaction_tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnRec {
    pub alias: String,
    pub expires_at: u64,
}

/// A lifecycle or provisioning event (table `events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRec {
    pub at: u64,
    pub alias: Option<String>,
    pub scheme: Option<String>,
    pub kind: String,
    pub detail: String,
}

/// One audit record. Stored as `encode(rec) ‖ h (32)`, `h` its chain hash
/// (see `store::audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRec {
    pub at: u64,
    pub client: String,
    pub uid: u32,
    pub pid: i32,
    pub op: String,
    pub alias: Option<String>,
    pub outcome: String,
}

impl AuditRec {
    /// A record of the daemon's own work, which no client asked for.
    pub fn by_daemon(op: &str, outcome: impl Into<String>) -> AuditRec {
        AuditRec {
            at: crate::vault::cards::now_ms(),
            client: "vaultd".into(),
            // SAFETY: getuid has no preconditions.
            uid: unsafe { libc::getuid() },
            pid: std::process::id() as i32,
            op: op.to_owned(),
            alias: None,
            outcome: outcome.into(),
        }
    }
}
