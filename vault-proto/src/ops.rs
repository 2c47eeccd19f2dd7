//! Arguments and results of every v1 op, field for field as PROTOCOL.md
//! names them. Argument structs refuse unknown keys (so a `cvc` is never
//! accepted, let alone stored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Pan;

/// Op names, as on the wire.
pub mod op {
    pub const HEALTH: &str = "health";
    pub const TOKENIZE: &str = "tokenize";
    pub const TRANSACTION_TOKENS: &str = "transaction_tokens";
    pub const ALIAS_STATUS: &str = "alias_status";
    pub const PROVISION: &str = "provision";
    pub const REMOVE_PAN: &str = "remove_pan";
    pub const DELETE_ALIAS: &str = "delete_alias";
    pub const CREDENTIALS: &str = "credentials";
    pub const STATS: &str = "stats";
    pub const QUEUE_LIST: &str = "queue_list";
    pub const QUEUE_RETRY: &str = "queue_retry";
    pub const SCHEME_PAUSE: &str = "scheme_pause";
    pub const SCHEME_RESUME: &str = "scheme_resume";
    pub const RETENTION: &str = "retention";
    pub const PURGE_DUE: &str = "purge_due";
    pub const EVENTS: &str = "events";
    pub const AUDIT: &str = "audit";
    /// Extension (admin): rotate the PAN or the audit key through the daemon.
    pub const KEY_ROTATE: &str = "key_rotate";
    /// Extension (admin): destroy an old PAN key nothing uses any more.
    pub const KEY_RETIRE: &str = "key_retire";
    /// Extension (admin): write a consistent copy of the database.
    pub const BACKUP: &str = "backup";
    /// Extension (admin): queue a key refresh for every token whose stored
    /// key is wrapped under a scheme's KEK version (KEK rotation).
    pub const KEK_REFRESH: &str = "kek_refresh";
}

/// For ops that take no arguments: an empty map, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

// ---------------------------------------------------------------- health

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub ready: bool,
    pub version: String,
    pub hsm: String,
    pub store: String,
    pub uptime_ms: u64,
}

// ---------------------------------------------------------------- cards

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeArgs {
    pub pan: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasArgs {
    pub alias: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionArgs {
    pub transaction_id: String,
}

/// Token statuses: the schemes' lifecycle plus the vault's own states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Pending,
    Active,
    Inactive,
    Suspended,
    Deleted,
    NotEligible,
    Failed,
}

impl TokenStatus {
    pub const ALL: [TokenStatus; 7] = [
        TokenStatus::Pending,
        TokenStatus::Active,
        TokenStatus::Inactive,
        TokenStatus::Suspended,
        TokenStatus::Deleted,
        TokenStatus::NotEligible,
        TokenStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Pending => "pending",
            TokenStatus::Active => "active",
            TokenStatus::Inactive => "inactive",
            TokenStatus::Suspended => "suspended",
            TokenStatus::Deleted => "deleted",
            TokenStatus::NotEligible => "not_eligible",
            TokenStatus::Failed => "failed",
        }
    }
}

/// The network token as merchants see it (never the token number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub status: TokenStatus,
    pub scheme: String,
    pub token_ref: Option<String>,
    pub token_last4: Option<String>,
    pub exp_month: Option<u8>,
    pub exp_year: Option<u16>,
    pub par: Option<String>,
    pub token_requestor_id: Option<String>,
    pub updated_at: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub bin: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub scheme: String,
    pub pan_removed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub alias: String,
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub masked: String,
    pub created_at: u64,
    pub card: Card,
    pub token_info: Option<TokenInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResult {
    pub created: bool,
    #[serde(flatten)]
    pub record: AliasRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub deleted: bool,
}

// ---------------------------------------------------------------- credentials

/// Declares an enum that requests carry, with its wire names listed once:
/// `as_str`, `Serialize` and `Deserialize` all use them. The derived
/// `Deserialize` would also take a variant's index (`initiator: 1`); this
/// one reads a string (without allocating) and matches it, and its error
/// names the accepted values without echoing what was sent.
macro_rules! wire_enum {
    ($(#[$attr:meta])* pub enum $ty:ident { $($v:ident = $name:literal),+ $(,)? }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $ty {
            $($v),+
        }

        impl $ty {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $name),+
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("one of:", $(" \"", $name, "\""),+))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        match s {
                            $($name => Ok($ty::$v),)+
                            _ => Err(E::custom(concat!("must be one of:", $(" \"", $name, "\""),+))),
                        }
                    }
                }
                d.deserialize_str(Visit)
            }
        }
    };
}

wire_enum! {
    pub enum CredentialKind {
        NetworkToken = "network_token",
        Pan = "pan",
    }
}

wire_enum! {
    pub enum Initiator {
        Customer = "customer",
        Merchant = "merchant",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsArgs {
    pub alias: String,
    pub tenant: String,
    pub accept: Vec<CredentialKind>,
    pub initiator: Initiator,
    pub amount_minor: u64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated_eci: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    ReceiverPanOnly,
    NoToken,
    TokenNotActive,
}

/// `credentials` result: tagged by `kind`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    NetworkToken {
        scheme: String,
        network_token: Pan,
        exp_month: u8,
        exp_year: u16,
        cryptogram: Option<String>,
        eci: Option<String>,
        atc: Option<u16>,
        par: Option<String>,
        token_ref: String,
    },
    Pan {
        scheme: String,
        pan: Pan,
        exp_month: u8,
        exp_year: u16,
        fallback_reason: FallbackReason,
    },
}

impl std::fmt::Debug for Credentials {
    // Never prints the token number, PAN or cryptogram.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::NetworkToken {
                scheme,
                network_token,
                eci,
                atc,
                token_ref,
                ..
            } => f
                .debug_struct("NetworkToken")
                .field("scheme", scheme)
                .field("network_token", network_token)
                .field("eci", eci)
                .field("atc", atc)
                .field("token_ref", token_ref)
                .finish_non_exhaustive(),
            Credentials::Pan {
                scheme,
                pan,
                fallback_reason,
                ..
            } => f
                .debug_struct("Pan")
                .field("scheme", scheme)
                .field("pan", pan)
                .field("fallback_reason", fallback_reason)
                .finish_non_exhaustive(),
        }
    }
}

// ---------------------------------------------------------------- admin

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub due: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub failed: u64,
    /// Reads of due jobs by the provisioning worker since start (optional
    /// field): one per scheme that could take work when the worker looked,
    /// however many tokenize calls woke it meanwhile; the backlog of a
    /// paused or saturated scheme is never read.
    #[serde(default)]
    pub reads: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemeStats {
    pub provisioned: u64,
    pub not_eligible: u64,
    pub errors: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub paused: bool,
    /// Circuit breaker: "closed", "open" or "half_open" (optional field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub aliases: u64,
    pub pans_retained: u64,
    pub tokens: BTreeMap<String, u64>,
    pub queue: QueueCounts,
    pub schemes: BTreeMap<String, SchemeStats>,
    pub uptime_ms: u64,
    /// Key versions and re-encryption progress (optional field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyStats>,
    /// The newest `seq` of the audit log and of the event log (optional
    /// field): a console starts tailing there instead of paging through
    /// millions of records from the oldest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogHeads>,
    /// The PKCS#11 module's upkeep (optional field; see [`HsmStats`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<HsmStats>,
}

/// `stats.hsm`: the upkeep vaultd does on its PKCS#11 module. SoftHSM2
/// frees destroyed session objects (one per cryptogram) only when it is
/// finalised, so vaultd re-initialises it every `reinit_after_objects`
/// session objects, and HSM calls wait for that pause; 0 for other modules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmStats {
    /// Re-initialise after this many session objects; 0: never.
    pub reinit_after_objects: u64,
    /// Session objects made since the last (re-)initialisation.
    pub session_objects: u64,
    /// Re-initialisations since the daemon started.
    pub reinitializations: u64,
    /// How long the last one held HSM calls, in ms (0: none yet).
    pub last_reinit_pause_ms: u64,
    /// Re-initialisations that switched to a standby copy of the module
    /// prepared beside the one in use (SoftHSM2), holding calls only for
    /// the switch.
    #[serde(default)]
    pub standby_switches: u64,
    /// Session copies of keys made since start (a number that keeps
    /// climbing under a steady load means the key cache is too small).
    pub key_copies_made: u64,
    /// HSM calls of background work (provisioning, lifecycle, key
    /// destruction, re-encryption) waiting behind client calls now.
    #[serde(default)]
    pub background_queued: u64,
    /// Background HSM calls finished since start.
    #[serde(default)]
    pub background_done: u64,
    /// Network token keys unwrapped from their records into session
    /// objects since start (a number that climbs with the payments means
    /// `[hsm] token_key_cache` is smaller than the cards in use).
    #[serde(default)]
    pub token_key_unwraps: u64,
    /// Token keys held unwrapped now.
    #[serde(default)]
    pub token_keys_cached: u64,
}

/// `stats.logs`: the newest `seq` of each log, 0 when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeads {
    pub audit_seq: u64,
    pub events_seq: u64,
}

/// `stats.keys`: which key versions new writes use and how many
/// ciphertexts still wait for re-encryption under the newest PAN key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyStats {
    pub pan_key_version: u32,
    pub audit_key_version: u32,
    /// PAN and token-number ciphertexts under an older PAN key, as of the
    /// re-encryption job's last count.
    pub reencrypt_remaining: u64,
    /// Ciphertexts re-encrypted since the daemon started.
    pub reencrypted: u64,
    /// Per scheme KEK version, how many stored network token keys it
    /// wraps (`version` 0: tokens of a release before 2026-12 whose key is
    /// still an HSM object, waiting for their key refresh). A version
    /// absent here wraps none and may be retired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keks: Vec<KekUse>,
}

/// One entry of `stats.keys.keks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KekUse {
    pub scheme: String,
    pub version: u32,
    pub tokens: u64,
}

// ---------------------------------------------------------------- keys

/// `key_rotate` args: which key (`"pan"`, the default, or `"audit"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotateArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotateResult {
    pub key: String,
    /// The new newest version.
    pub version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRetireArgs {
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRetireResult {
    pub label: String,
    /// False when no such key was left in the HSM.
    pub destroyed: bool,
}

/// `kek_refresh` args: the scheme and the KEK version whose tokens get a
/// fresh key from the token service (0: tokens still on `nt.*` objects of
/// a release before 2026-12).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KekRefreshArgs {
    pub scheme: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KekRefreshResult {
    pub scheme: String,
    pub version: u32,
    /// Key refresh jobs queued now (tokens with one queued already are
    /// not counted again).
    pub queued: u64,
}

/// `backup` args: where the daemon writes the copy (absolute; the PAN
/// slots go to `path` + ".pans").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupArgs {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupResult {
    pub path: String,
    pub aliases: u64,
    pub pans: u64,
    /// Sequence number of the last audit record in the copy.
    pub audit_seq: u64,
}

wire_enum! {
    pub enum JobState {
        Due = "due",
        Scheduled = "scheduled",
        InFlight = "in_flight",
        Failed = "failed",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueListArgs {
    #[serde(default)]
    pub state: Option<JobState>,
    #[serde(default)]
    pub limit: u32,
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: String,
    pub alias: String,
    pub kind: String,
    pub scheme: String,
    pub state: JobState,
    pub attempts: u32,
    pub next_at: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueList {
    pub jobs: Vec<JobView>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRetryResult {
    pub job_id: String,
    pub state: JobState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeArgs {
    pub scheme: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemePaused {
    pub scheme: String,
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRetention {
    pub tenant: String,
    pub policy: String,
    pub pans_retained: u64,
    pub due_now: u64,
    pub due_7d: u64,
    pub due_30d: u64,
    pub purged_total: u64,
    pub oldest_retained_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    pub tenants: Vec<TenantRetention>,
    pub next_purge_at: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeArgs {
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeResult {
    pub purged: u64,
}

/// Arguments of the paged logs, `events` and `audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageArgs {
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    pub at: u64,
    pub alias: Option<String>,
    pub scheme: Option<String>,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditView {
    pub seq: u64,
    pub at: u64,
    pub client: String,
    pub uid: u32,
    pub pid: i32,
    pub op: String,
    pub alias: Option<String>,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    pub records: Vec<AuditView>,
    pub chain_ok: bool,
}

// ---------------------------------------------------------------- typed ops

/// Ties an op name to its argument and result types, so that clients can
/// offer one typed call for every op (`client.op::<Tokenize>(&args)`).
pub trait Op {
    const NAME: &'static str;
    type Args: Serialize;
    type Result: serde::de::DeserializeOwned;
}

macro_rules! ops {
    ($($(#[$m:meta])* $ty:ident = $name:expr, $args:ty => $res:ty;)*) => {
        $(
            $(#[$m])*
            pub enum $ty {}
            impl Op for $ty {
                const NAME: &'static str = $name;
                type Args = $args;
                type Result = $res;
            }
        )*
    };
}

ops! {
    HealthOp = op::HEALTH, NoArgs => Health;
    Tokenize = op::TOKENIZE, TokenizeArgs => TokenizeResult;
    TransactionTokens = op::TRANSACTION_TOKENS, TransactionArgs => AliasRecord;
    AliasStatus = op::ALIAS_STATUS, AliasArgs => AliasRecord;
    Provision = op::PROVISION, AliasArgs => AliasRecord;
    RemovePan = op::REMOVE_PAN, AliasArgs => AliasRecord;
    DeleteAlias = op::DELETE_ALIAS, AliasArgs => DeleteResult;
    CredentialsOp = op::CREDENTIALS, CredentialsArgs => Credentials;
    StatsOp = op::STATS, NoArgs => Stats;
    QueueListOp = op::QUEUE_LIST, QueueListArgs => QueueList;
    QueueRetry = op::QUEUE_RETRY, JobArgs => QueueRetryResult;
    SchemePause = op::SCHEME_PAUSE, SchemeArgs => SchemePaused;
    SchemeResume = op::SCHEME_RESUME, SchemeArgs => SchemePaused;
    RetentionOp = op::RETENTION, NoArgs => Retention;
    PurgeDue = op::PURGE_DUE, PurgeArgs => PurgeResult;
    EventsOp = op::EVENTS, PageArgs => Events;
    AuditOp = op::AUDIT, PageArgs => Audit;
    KeyRotate = op::KEY_ROTATE, KeyRotateArgs => KeyRotateResult;
    KeyRetire = op::KEY_RETIRE, KeyRetireArgs => KeyRetireResult;
    BackupOp = op::BACKUP, BackupArgs => BackupResult;
    KekRefresh = op::KEK_REFRESH, KekRefreshArgs => KekRefreshResult;
}
