//! The only code that talks to vaultd: a background task that polls the
//! admin ops about once a second, runs the actions the UI asks for, and
//! posts what it learns as [`Update`]s. It reconnects on its own; while the
//! daemon is away it posts [`Update::Disconnected`] on every attempt.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};
use vault_proto::Client;
use vault_proto::client::ClientError;
use vault_proto::ops::{
    AuditOp, EventsOp, HealthOp, JobArgs, NoArgs, Op, PageArgs, PurgeArgs, PurgeDue, QueueListOp,
    QueueRetry, RetentionOp, SchemeArgs, SchemePause, SchemeResume, StatsOp,
};

use crate::message::{Command, QueueQuery, Update};

/// Entries asked for per `events`/`audit` request.
pub const LOG_PAGE: u32 = 200;
/// Pages of a log fetched in one poll while catching up.
const LOG_PAGES_PER_POLL: usize = 5;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub socket: PathBuf,
    pub poll_every: Duration,
    /// A request not answered in this time counts as a dead connection.
    pub request_timeout: Duration,
    /// How often the audit log is read while the Audit tab is not on
    /// screen. vaultd audits every `audit` call (reading the trail is
    /// itself audited), so tailing it every poll would add a record a
    /// second to the very log the staff read.
    pub audit_idle_every: Duration,
}

impl WorkerConfig {
    pub fn new(socket: PathBuf) -> WorkerConfig {
        WorkerConfig {
            socket,
            poll_every: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            audit_idle_every: Duration::from_secs(30),
        }
    }
}

/// Starts the daemon task. Commands go in through the returned sender;
/// the task ends when that sender is dropped.
pub fn spawn(
    config: WorkerConfig,
    updates: UnboundedSender<Update>,
) -> (UnboundedSender<Command>, JoinHandle<()>) {
    let (tx, rx) = unbounded_channel();
    let worker = Worker {
        config,
        updates,
        client: None,
        query: QueueQuery::default(),
        events_after: None,
        audit_after: None,
        positioned: false,
        audit_live: false,
        audit_read_at: None,
        down_since: None,
    };
    (tx, tokio::spawn(worker.run(rx)))
}

/// Why a call gave nothing.
enum CallError {
    /// The connection is unusable (I/O, protocol, no answer in time).
    Broken(String),
    /// The daemon answered with an error; the connection is fine.
    Refused(String),
}

struct Worker {
    config: WorkerConfig,
    updates: UnboundedSender<Update>,
    client: Option<Client>,
    query: QueueQuery,
    events_after: Option<u64>,
    audit_after: Option<u64>,
    /// The cursors were moved to the logs' tails (see [`Worker::position`]).
    positioned: bool,
    /// The Audit tab is on screen: tail the log every poll.
    audit_live: bool,
    /// When the audit log was last read (`None`: not yet).
    audit_read_at: Option<Instant>,
    /// When the connection was lost (kept across failed reconnects).
    down_since: Option<u64>,
}

impl Worker {
    async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(self.config.poll_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.poll().await,
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
            }
        }
    }

    fn post(&self, update: Update) {
        // The UI has gone away only when the console is quitting.
        let _ = self.updates.send(update);
    }

    /// Connects if needed; `false` when the daemon cannot be reached.
    async fn ensure_connected(&mut self) -> bool {
        if self.client.is_some() {
            return true;
        }
        let connect = Client::connect(&self.config.socket);
        match timeout(self.config.request_timeout, connect).await {
            Ok(Ok(client)) => {
                self.client = Some(client);
                self.down_since = None;
                self.post(Update::Connected { at_ms: now_ms() });
                true
            }
            Ok(Err(e)) => {
                self.lost(format!(
                    "cannot connect to {}: {e}",
                    self.config.socket.display()
                ));
                false
            }
            Err(_) => {
                self.lost(format!(
                    "cannot connect to {}: timed out",
                    self.config.socket.display()
                ));
                false
            }
        }
    }

    fn lost(&mut self, error: String) {
        self.client = None;
        let since_ms = *self.down_since.get_or_insert_with(now_ms);
        self.post(Update::Disconnected { since_ms, error });
    }

    /// Handles a refused call (posted under `op`) or a broken connection
    /// (returns `false`: stop using it).
    fn check<T>(&mut self, op: &'static str, result: Result<T, CallError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(CallError::Refused(error)) => {
                self.post(Update::OpFailed { op, error });
                None
            }
            Err(CallError::Broken(error)) => {
                if self.client.is_some() {
                    self.lost(error);
                }
                None
            }
        }
    }

    fn audit_wanted(&self) -> bool {
        self.audit_live
            || self
                .audit_read_at
                .is_none_or(|at| at.elapsed() >= self.config.audit_idle_every)
    }

    async fn poll(&mut self) {
        if !self.ensure_connected().await {
            return;
        }
        if !self.positioned {
            self.position().await;
        }
        let read_audit = self.audit_wanted();
        let Some(client) = &self.client else { return };
        let t = self.config.request_timeout;
        let events_args = PageArgs {
            after: self.events_after,
            limit: LOG_PAGE,
        };
        let audit_args = PageArgs {
            after: self.audit_after,
            limit: LOG_PAGE,
        };
        let queue_query = self.query.clone();
        let queue_args = queue_query.args();
        let no_args = NoArgs {};
        // One round trip for all of them: the client pipelines.
        let (health, stats, retention, queue, events, audit) = tokio::join!(
            call::<HealthOp>(client, &no_args, t),
            call::<StatsOp>(client, &no_args, t),
            call::<RetentionOp>(client, &no_args, t),
            call::<QueueListOp>(client, &queue_args, t),
            call::<EventsOp>(client, &events_args, t),
            async {
                if read_audit {
                    Some(call::<AuditOp>(client, &audit_args, t).await)
                } else {
                    None
                }
            },
        );
        let at_ms = now_ms();
        if let Some(h) = self.check("health", health) {
            self.post(Update::Health(h));
        }
        if let Some(stats) = self.check("stats", stats) {
            self.post(Update::Stats { at_ms, stats });
        }
        if let Some(r) = self.check("retention", retention) {
            self.post(Update::Retention(r));
        }
        if let Some(list) = self.check("queue_list", queue) {
            self.post(Update::QueuePage {
                query: queue_query,
                list,
            });
        }
        let mut events_full = false;
        if let Some(page) = self.check("events", events) {
            events_full = page.events.len() >= LOG_PAGE as usize;
            self.take_events(page.events);
        }
        let mut audit_full = false;
        if audit.is_some() {
            self.audit_read_at = Some(Instant::now());
        }
        if let Some(page) = audit.and_then(|a| self.check("audit", a)) {
            audit_full = page.records.len() >= LOG_PAGE as usize;
            self.take_audit(page);
        }
        // Catching up on a long log: a few more pages now, the rest next poll.
        for _ in 1..LOG_PAGES_PER_POLL {
            if !(events_full || audit_full) {
                break;
            }
            if events_full {
                events_full = self.more_events().await;
            }
            if audit_full {
                audit_full = self.more_audit().await;
            }
        }
    }

    /// Starts the event and audit tails at the newest [`LOG_PAGE`] records
    /// rather than at the oldest: a vault that has run for months has
    /// millions of audit records, and paging from the first would keep the
    /// console hours behind. Needs `stats.logs` (vaultd's extension); an
    /// older daemon without it is tailed from the oldest record.
    async fn position(&mut self) {
        let Some(client) = &self.client else { return };
        let logs = match call::<StatsOp>(client, &NoArgs {}, self.config.request_timeout).await {
            Ok(stats) => stats.logs,
            // Refused (the poll's own stats call reports it): from the oldest.
            Err(CallError::Refused(_)) => None,
            Err(broken) => {
                let _ = self.check("stats", Err::<(), _>(broken));
                return;
            }
        };
        self.positioned = true;
        let Some(logs) = logs else { return };
        let start = |newest: u64| newest.checked_sub(u64::from(LOG_PAGE)).filter(|s| *s > 0);
        if self.events_after.is_none() {
            self.events_after = start(logs.events_seq);
        }
        if self.audit_after.is_none() {
            self.audit_after = start(logs.audit_seq);
        }
    }

    fn take_events(&mut self, events: Vec<vault_proto::ops::EventView>) {
        if let Some(last) = events.last() {
            self.events_after = Some(last.seq);
        }
        if !events.is_empty() {
            self.post(Update::Events(events));
        }
    }

    fn take_audit(&mut self, audit: vault_proto::ops::Audit) {
        if let Some(last) = audit.records.last() {
            self.audit_after = Some(last.seq);
        }
        // Posted even when empty: the chain verdict is news too.
        self.post(Update::Audit(audit));
    }

    async fn more_events(&mut self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let args = PageArgs {
            after: self.events_after,
            limit: LOG_PAGE,
        };
        let result = call::<EventsOp>(client, &args, self.config.request_timeout).await;
        match self.check("events", result) {
            Some(page) => {
                let full = page.events.len() >= LOG_PAGE as usize;
                self.take_events(page.events);
                full
            }
            None => false,
        }
    }

    async fn more_audit(&mut self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let args = PageArgs {
            after: self.audit_after,
            limit: LOG_PAGE,
        };
        let result = call::<AuditOp>(client, &args, self.config.request_timeout).await;
        match self.check("audit", result) {
            Some(page) => {
                let full = page.records.len() >= LOG_PAGE as usize;
                self.take_audit(page);
                full
            }
            None => false,
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::ShowQueue(query) => {
                self.query = query;
                self.refresh_queue().await;
                return;
            }
            Command::AuditLive(live) => {
                self.audit_live = live;
                // The tab just opened: show what happened since, now.
                if live && self.ensure_connected().await {
                    self.more_audit().await;
                    self.audit_read_at = Some(Instant::now());
                }
                return;
            }
            _ => {}
        }
        if !self.ensure_connected().await {
            self.post(Update::ActionDone {
                ok: false,
                text: "not connected to vaultd: nothing was sent".to_owned(),
            });
            return;
        }
        let Some(client) = &self.client else { return };
        let t = self.config.request_timeout;
        let outcome = match &command {
            Command::RetryJob { job_id } => {
                let args = JobArgs {
                    job_id: job_id.clone(),
                };
                call::<QueueRetry>(client, &args, t)
                    .await
                    .map(|r| format!("job {} is now {}", r.job_id, r.state.as_str()))
            }
            Command::PauseScheme { scheme } => {
                let args = SchemeArgs {
                    scheme: scheme.clone(),
                };
                call::<SchemePause>(client, &args, t)
                    .await
                    .map(|r| paused_text(&r.scheme, r.paused))
            }
            Command::ResumeScheme { scheme } => {
                let args = SchemeArgs {
                    scheme: scheme.clone(),
                };
                call::<SchemeResume>(client, &args, t)
                    .await
                    .map(|r| paused_text(&r.scheme, r.paused))
            }
            Command::PurgeDue { tenant } => {
                let args = PurgeArgs {
                    tenant: tenant.clone(),
                };
                let whose = tenant
                    .as_deref()
                    .map_or_else(|| "all tenants".to_owned(), |t| format!("tenant {t}"));
                call::<PurgeDue>(client, &args, t)
                    .await
                    .map(|r| format!("purged {} PAN(s) of {whose}", r.purged))
            }
            Command::ShowQueue(_) | Command::AuditLive(_) => return,
        };
        let (ok, text) = match outcome {
            Ok(text) => (true, text),
            Err(CallError::Refused(e)) => {
                (false, format!("{} refused: {e}", action_name(&command)))
            }
            Err(CallError::Broken(e)) => {
                let text = format!(
                    "{} not confirmed, connection lost: {e}",
                    action_name(&command)
                );
                self.lost(e);
                (false, text)
            }
        };
        self.post(Update::ActionDone { ok, text });
        // Show the action's effect now rather than at the next tick.
        self.poll().await;
    }

    async fn refresh_queue(&mut self) {
        if !self.ensure_connected().await {
            return;
        }
        let Some(client) = &self.client else { return };
        let query = self.query.clone();
        let result = call::<QueueListOp>(client, &query.args(), self.config.request_timeout).await;
        if let Some(list) = self.check("queue_list", result) {
            self.post(Update::QueuePage { query, list });
        }
    }
}

fn paused_text(scheme: &str, paused: bool) -> String {
    if paused {
        format!("{scheme} is paused")
    } else {
        format!("{scheme} is running")
    }
}

fn action_name(command: &Command) -> &'static str {
    match command {
        Command::ShowQueue(_) => "queue_list",
        Command::AuditLive(_) => "audit",
        Command::RetryJob { .. } => "queue_retry",
        Command::PauseScheme { .. } => "scheme_pause",
        Command::ResumeScheme { .. } => "scheme_resume",
        Command::PurgeDue { .. } => "purge_due",
    }
}

async fn call<O: Op>(client: &Client, args: &O::Args, t: Duration) -> Result<O::Result, CallError> {
    match timeout(t, client.op::<O>(args)).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(ClientError::Server(e))) => Err(CallError::Refused(e.to_string())),
        Ok(Err(e)) => Err(CallError::Broken(e.to_string())),
        Err(_) => Err(CallError::Broken(format!(
            "{} not answered within {} s",
            O::NAME,
            t.as_secs()
        ))),
    }
}

/// Wall clock in Unix ms (the daemon task stamps samples with it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
