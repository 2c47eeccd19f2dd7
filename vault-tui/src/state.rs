//! Everything the console knows: the daemon's latest answers, the
//! connection, and what the user is looking at. Changed only by
//! [`App::apply`] (daemon updates) and [`crate::keys`] (key presses).

use std::collections::BTreeMap;

use vault_proto::ops::{AuditView, EventView, Health, Retention, Stats};

use crate::message::{Command, Update};
use crate::queue_view::QueueView;
use crate::redact::redact;
use crate::tail::LogTail;
use crate::throughput::Throughput;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Provisioning,
    Schemes,
    Retention,
    Events,
    Audit,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Overview,
        Tab::Provisioning,
        Tab::Schemes,
        Tab::Retention,
        Tab::Events,
        Tab::Audit,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Provisioning => "Provisioning",
            Tab::Schemes => "Schemes",
            Tab::Retention => "Retention",
            Tab::Events => "Events",
            Tab::Audit => "Audit",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    pub fn prev(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// Start-up: no answer yet either way.
    Connecting,
    Connected {
        since_ms: u64,
    },
    Disconnected {
        since_ms: u64,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusLine {
    pub ok: bool,
    pub text: String,
}

/// An admin action waiting for the user's confirmation.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingAction {
    RetryJob { job_id: String, alias: String },
    PauseScheme { scheme: String },
    ResumeScheme { scheme: String },
    PurgeTenant { tenant: String, due_now: u64 },
    PurgeAll { due_now: u64 },
}

impl PendingAction {
    pub fn title(&self) -> &'static str {
        match self {
            PendingAction::RetryJob { .. } => "Retry job",
            PendingAction::PauseScheme { .. } => "Pause scheme",
            PendingAction::ResumeScheme { .. } => "Resume scheme",
            PendingAction::PurgeTenant { .. } | PendingAction::PurgeAll { .. } => "Purge PANs",
        }
    }

    pub fn question(&self) -> String {
        match self {
            PendingAction::RetryJob { job_id, alias } => {
                format!("Retry failed job {job_id} (alias {alias}) now?")
            }
            PendingAction::PauseScheme { scheme } => {
                format!("Pause provisioning for {scheme}? Jobs stay queued until it is resumed.")
            }
            PendingAction::ResumeScheme { scheme } => format!("Resume provisioning for {scheme}?"),
            PendingAction::PurgeTenant { tenant, due_now } => format!(
                "Erase the {due_now} PAN(s) of tenant {tenant} that are due for purge? This cannot be undone."
            ),
            PendingAction::PurgeAll { due_now } => format!(
                "Erase the {due_now} PAN(s) due for purge across ALL tenants? This cannot be undone."
            ),
        }
    }

    pub fn command(&self) -> Command {
        match self {
            PendingAction::RetryJob { job_id, .. } => Command::RetryJob {
                job_id: job_id.clone(),
            },
            PendingAction::PauseScheme { scheme } => Command::PauseScheme {
                scheme: scheme.clone(),
            },
            PendingAction::ResumeScheme { scheme } => Command::ResumeScheme {
                scheme: scheme.clone(),
            },
            PendingAction::PurgeTenant { tenant, .. } => Command::PurgeDue {
                tenant: Some(tenant.clone()),
            },
            PendingAction::PurgeAll { .. } => Command::PurgeDue { tenant: None },
        }
    }
}

#[derive(Debug, Clone)]
pub struct App {
    /// The socket, for the connection line.
    pub socket: String,
    /// Unix ms used for every "ago"/"in" on screen; set by the run loop
    /// (tests set it to a fixed value).
    pub now_ms: u64,
    pub tab: Tab,
    pub show_help: bool,
    pub confirm: Option<PendingAction>,
    pub status: Option<StatusLine>,
    pub connection: Connection,
    pub health: Option<Health>,
    pub stats: Option<Stats>,
    pub retention: Option<Retention>,
    /// Poll ops the daemon refused, by op name (cleared by the next answer).
    pub op_errors: BTreeMap<&'static str, String>,
    pub throughput: Throughput,
    pub queue: QueueView,
    pub scheme_selected: usize,
    pub tenant_selected: usize,
    pub events: LogTail<EventView>,
    pub audit: LogTail<AuditView>,
    pub chain_ok: Option<bool>,
    pub should_quit: bool,
}

impl App {
    pub fn new(socket: impl Into<String>, now_ms: u64) -> App {
        App {
            socket: socket.into(),
            now_ms,
            tab: Tab::Overview,
            show_help: false,
            confirm: None,
            status: None,
            connection: Connection::Connecting,
            health: None,
            stats: None,
            retention: None,
            op_errors: BTreeMap::new(),
            throughput: Throughput::default(),
            queue: QueueView::default(),
            scheme_selected: 0,
            tenant_selected: 0,
            events: LogTail::default(),
            audit: LogTail::default(),
            chain_ok: None,
            should_quit: false,
        }
    }

    /// Scheme names as `stats` lists them (sorted).
    pub fn scheme_names(&self) -> Vec<String> {
        self.stats
            .as_ref()
            .map(|s| s.schemes.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.connection, Connection::Connected { .. })
    }

    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Connected { at_ms } => {
                self.connection = Connection::Connected { since_ms: at_ms };
            }
            Update::Disconnected { since_ms, error } => {
                self.connection = Connection::Disconnected {
                    since_ms,
                    error: redact(&error),
                };
            }
            Update::Health(health) => {
                self.op_errors.remove("health");
                self.health = Some(health);
            }
            Update::Stats { at_ms, stats } => {
                self.op_errors.remove("stats");
                self.throughput.sample(at_ms, &stats);
                self.scheme_selected = self
                    .scheme_selected
                    .min(stats.schemes.len().saturating_sub(1));
                self.stats = Some(stats);
            }
            Update::Retention(retention) => {
                self.op_errors.remove("retention");
                self.tenant_selected = self
                    .tenant_selected
                    .min(retention.tenants.len().saturating_sub(1));
                self.retention = Some(retention);
            }
            Update::QueuePage { query, list } => {
                if self.queue.apply_page(&query, list) {
                    self.op_errors.remove("queue_list");
                }
            }
            Update::Events(events) => {
                self.op_errors.remove("events");
                self.events.extend(events);
            }
            Update::Audit(audit) => {
                self.op_errors.remove("audit");
                self.chain_ok = Some(audit.chain_ok);
                self.audit.extend(audit.records);
            }
            Update::OpFailed { op, error } => {
                self.op_errors.insert(op, redact(&error));
            }
            Update::ActionDone { ok, text } => {
                self.status = Some(StatusLine {
                    ok,
                    text: redact(&text),
                });
            }
        }
    }
}
