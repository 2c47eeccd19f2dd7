//! `health` (every client) and `stats` (admin): readiness, counts and the
//! upkeep of keys, logs and the HSM.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub ready: bool,
    pub version: String,
    pub hsm: String,
    pub store: String,
    pub uptime_ms: u64,
}

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
