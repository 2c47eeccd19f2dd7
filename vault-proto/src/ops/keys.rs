//! Admin extensions on keys and backups: `key_rotate`, `key_retire`,
//! `kek_refresh`, `backup`.

use serde::{Deserialize, Serialize};

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
