//! Messages between the UI and the daemon task: [`Update`]s flow from the
//! daemon task to the UI, [`Command`]s from the UI to the daemon task.

use vault_proto::ops::{
    Audit, EventView, Health, JobState, QueueList, QueueListArgs, Retention, Stats,
};

/// Jobs per `queue_list` request. The queue can hold 100,000 jobs; the
/// console only ever holds one page of them.
pub const QUEUE_PAGE: u32 = 100;

/// Which page of the provisioning queue the UI is looking at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueQuery {
    pub state: Option<JobState>,
    /// The server's cursor of the page before this one (`None`: first page).
    pub after: Option<String>,
}

impl QueueQuery {
    /// The `queue_list` arguments for this page.
    pub fn args(&self) -> QueueListArgs {
        QueueListArgs {
            state: self.state,
            limit: QUEUE_PAGE,
            after: self.after.clone(),
        }
    }
}

/// What the daemon task learnt.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Connected {
        at_ms: u64,
    },
    /// The connection is gone (or never came up); `since_ms` is when it was
    /// first lost, `error` the latest reason.
    Disconnected {
        since_ms: u64,
        error: String,
    },
    Health(Health),
    Stats {
        at_ms: u64,
        stats: Stats,
    },
    Retention(Retention),
    QueuePage {
        query: QueueQuery,
        list: QueueList,
    },
    /// New events, oldest first.
    Events(Vec<EventView>),
    /// New audit records, oldest first, and the chain verdict.
    Audit(Audit),
    /// The daemon refused one poll op (e.g. an op it does not have yet).
    OpFailed {
        op: &'static str,
        error: String,
    },
    /// Outcome of an admin action, for the status line.
    ActionDone {
        ok: bool,
        text: String,
    },
}

/// What the UI asks the daemon task to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Show (and keep refreshing) this page of the queue.
    ShowQueue(QueueQuery),
    /// Whether the Audit tab is on screen (its log is tailed every poll
    /// only then).
    AuditLive(bool),
    RetryJob {
        job_id: String,
    },
    PauseScheme {
        scheme: String,
    },
    ResumeScheme {
        scheme: String,
    },
    /// `None`: every tenant.
    PurgeDue {
        tenant: Option<String>,
    },
}
