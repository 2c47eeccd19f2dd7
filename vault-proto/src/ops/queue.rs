//! The provisioning queue and the schemes (admin): `queue_list`,
//! `queue_retry`, `scheme_pause`, `scheme_resume`.

use serde::{Deserialize, Serialize};

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
