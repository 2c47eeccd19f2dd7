//! The card ops (`tokenize`, `transaction_tokens`, `alias_status`,
//! `provision`, `remove_pan`, `delete_alias`): their arguments, the alias
//! record and the network token as merchants see it.

use serde::{Deserialize, Serialize};

use crate::Pan;

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
