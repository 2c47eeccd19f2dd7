//! The paged logs (admin): `events`, `audit`.

use serde::{Deserialize, Serialize};

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
