//! PAN retention (admin): `retention`, `purge_due`.

use serde::{Deserialize, Serialize};

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
