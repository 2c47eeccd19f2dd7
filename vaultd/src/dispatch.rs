//! Request → authorization (role, tenant) → the vault → response. Every
//! refusal and every state change is audited; nothing here knows sockets.
//! Refusals are coalesced per uid and error code (`refusals`), so no
//! client, configured or not, can flood the audit trail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::time::Instant;
use vault_hsm::Hsm;
use vault_proto::frame::{self, RequestHead};
use vault_proto::ops::{Opcode, Request};
use vault_proto::{ErrorCode, WireError};

use crate::config::{Config, Role};
use crate::store::Store;
use crate::store::records::AuditRec;
use crate::vault::{Caller, Vault, VaultError};

/// The peer of a connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// A configured client.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub name: String,
    pub roles: Vec<Role>,
    pub tenant: Option<String>,
    /// Tenants a forwarder may serve; `None` means every tenant.
    pub tenants: Option<Vec<String>>,
    pub pan_credentials_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    by_uid: HashMap<u32, Arc<ClientEntry>>,
}

impl ClientTable {
    pub fn from_config(cfg: &Config) -> ClientTable {
        ClientTable {
            by_uid: cfg
                .clients
                .iter()
                .map(|c| {
                    let tenants = if c.tenants.iter().any(|t| t == "*") {
                        None
                    } else {
                        Some(c.tenants.clone())
                    };
                    (
                        c.uid,
                        Arc::new(ClientEntry {
                            name: c.name.clone(),
                            roles: c.roles.clone(),
                            tenant: c.tenant.clone(),
                            tenants,
                            pan_credentials_per_minute: c.pan_credentials_per_minute,
                        }),
                    )
                })
                .collect(),
        }
    }

    pub fn get(&self, uid: u32) -> Option<Arc<ClientEntry>> {
        self.by_uid.get(&uid).cloned()
    }
}

pub struct Dispatcher<S: Store, H: Hsm> {
    pub vault: Arc<Vault<S, H>>,
    clients: RwLock<Arc<ClientTable>>,
    refusals: Arc<Mutex<refusals::Refusals>>,
    /// Wakes the task that writes the counts of ended intervals, and
    /// tells it when to stop.
    flusher: Arc<tokio::sync::Notify>,
    flusher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<S: Store, H: Hsm> Dispatcher<S, H> {
    pub fn new(vault: Arc<Vault<S, H>>, clients: ClientTable) -> Self {
        Dispatcher {
            vault,
            clients: RwLock::new(Arc::new(clients)),
            refusals: Arc::new(Mutex::new(refusals::Refusals::new(refusals::INTERVAL))),
            flusher: Arc::new(tokio::sync::Notify::new()),
            flusher_task: Mutex::new(None),
        }
    }

    pub fn clients(&self) -> Arc<ClientTable> {
        self.clients
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_clients(&self, t: ClientTable) {
        match self.clients.write() {
            Ok(mut g) => *g = Arc::new(t),
            Err(p) => *p.into_inner() = Arc::new(t),
        }
    }

    /// Answers one request body with one framed response.
    pub async fn handle(&self, peer: Peer, body: &[u8]) -> Vec<u8> {
        let started = Instant::now();
        let (op, code, answer) = self.answer(peer, body).await;
        let op = if op == MALFORMED {
            MALFORMED
        } else {
            op_label(op)
        };
        crate::metrics::request(op, code, started.elapsed());
        answer
    }

    /// [`Dispatcher::handle`] without the metrics: the op name as sent (or
    /// `(malformed)`), the answer's code (`ok` or an error code) and the
    /// answer.
    async fn answer<'b>(&self, peer: Peer, body: &'b [u8]) -> (&'b str, &'static str, Vec<u8>) {
        let client = self.clients().get(peer.uid);
        let caller = |c: &ClientEntry| Caller {
            client: c.name.clone(),
            uid: peer.uid,
            pid: peer.pid,
            tenant: c.tenant.clone(),
            tenants: c.tenants.clone(),
            pan_per_minute: c.pan_credentials_per_minute,
        };
        let unknown = || Caller {
            client: "(unknown)".into(),
            uid: peer.uid,
            pid: peer.pid,
            tenant: None,
            tenants: Some(Vec::new()),
            pan_per_minute: None,
        };
        let not_a_client = || {
            WireError::new(
                ErrorCode::Unauthenticated,
                "this uid is not a configured client",
            )
        };
        let head = match frame::decode_request(body) {
            Ok(h) => h,
            Err(e) => {
                // An unknown uid gets `unauthenticated` for every request
                // (PROTOCOL.md), a malformed one too.
                let (who, error) = match client.as_deref() {
                    Some(c) => (caller(c), e.error),
                    None => (unknown(), not_a_client()),
                };
                self.refused(&who, MALFORMED, None, &error).await;
                return (
                    MALFORMED,
                    error.code.as_str(),
                    frame::encode_err(e.id, &error),
                );
            }
        };
        let Some(client) = client else {
            let e = not_a_client();
            self.refused(&unknown(), head.op, None, &e).await;
            return (
                head.op,
                e.code.as_str(),
                frame::encode_err(Some(head.id), &e),
            );
        };
        let who = caller(&client);
        let outcome = self.route(&client, &who, head).await;
        match outcome {
            Ok(bytes) => (head.op, "ok", bytes),
            Err(e) => {
                let e = e.into_wire();
                self.refused(&who, head.op, alias_arg(head), &e).await;
                (
                    head.op,
                    e.code.as_str(),
                    frame::encode_err(Some(head.id), &e),
                )
            }
        }
    }

    /// Audits a refusal: the first of a burst (per uid and error code) at
    /// once, the others as one count per interval (`refusals`).
    async fn refused(&self, who: &Caller, op_name: &str, alias: Option<String>, e: &WireError) {
        let op_name = op_label(op_name);
        // Without a tokio runtime no task can write the counts later:
        // then every refusal is written (only embedders without one).
        let runtime = tokio::runtime::Handle::try_current().ok();
        let noted = {
            let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if runtime.is_some() {
                r.note(who, e.code, op_name, Instant::now())
            } else {
                refusals::Noted::Write {
                    start_flusher: false,
                }
            }
        };
        match noted {
            refusals::Noted::Counted => {
                tracing::debug!(client = %who.client, uid = who.uid, op = op_name, code = %e.code, "refused (counted)");
            }
            refusals::Noted::Write { start_flusher } => {
                if start_flusher && let Some(rt) = runtime {
                    self.start_flusher(&rt);
                }
                let rec = who.audit(op_name, alias, e.code.as_str());
                if let Err(err) = self.vault.store.audit(rec).await {
                    tracing::error!(error = %err, "could not audit a refusal");
                }
                tracing::info!(client = %who.client, uid = who.uid, op = op_name, code = %e.code, "refused");
            }
        }
    }

    /// Starts the task that writes each interval's counts when it ends. It
    /// ends itself once no burst is left (`Refusals::due` says so under
    /// the same lock a new burst takes, so none is left without it). It
    /// holds the vault weakly: a dispatcher dropped without
    /// [`Dispatcher::flush_refusals`] does not keep the store open.
    fn start_flusher(&self, rt: &tokio::runtime::Handle) {
        let refusals = self.refusals.clone();
        let wake = self.flusher.clone();
        let vault = Arc::downgrade(&self.vault);
        let task = rt.spawn(async move {
            loop {
                let next = {
                    let r = refusals.lock().unwrap_or_else(|p| p.into_inner());
                    if r.closed() {
                        return;
                    }
                    r.next_due()
                };
                if let Some(at) = next {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = wake.notified() => continue,
                    }
                }
                let (counts, more) = {
                    let mut r = refusals.lock().unwrap_or_else(|p| p.into_inner());
                    if r.closed() {
                        return;
                    }
                    r.due(Instant::now())
                };
                let Some(vault) = vault.upgrade() else {
                    if !counts.is_empty() {
                        tracing::warn!(
                            records = counts.len(),
                            "coalesced refusal counts not written: the vault was dropped before flush_refusals"
                        );
                    }
                    return;
                };
                write_counts(&vault, counts).await;
                drop(vault);
                if !more {
                    return;
                }
            }
        });
        let mut slot = self.flusher_task.lock().unwrap_or_else(|p| p.into_inner());
        // A previous task has ended or is about to (it said so under the lock).
        *slot = Some(task);
    }

    /// Writes the counts of every interval still open, ended or not, and
    /// stops coalescing: refusals after this are written one by one. The
    /// server calls it when it has stopped serving.
    pub async fn flush_refusals(&self) {
        let counts = {
            let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            r.close()
        };
        self.flusher.notify_one();
        let task = self
            .flusher_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            // It stops at its next look at the lock; a write it began ends first.
            let _ = t.await;
        }
        write_counts(&self.vault, counts).await;
    }

    /// Unknown op, then the client's roles, then the arguments, in that
    /// order (each answer names the first that fails); then the op's
    /// handler in the vault (`vault_proto::ops::Handle`).
    async fn route(
        &self,
        client: &ClientEntry,
        who: &Caller,
        head: RequestHead<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let Some(opcode) = Opcode::from_name(head.op) else {
            return Err(VaultError::refuse(ErrorCode::UnknownOp, "no such op"));
        };
        if !client.roles.iter().any(|r| opcode.allows(*r)) {
            return Err(VaultError::refuse(
                ErrorCode::Forbidden,
                format!("op {} is not allowed for this client's roles", head.op),
            ));
        }
        let request = Request::decode(opcode, head.args)?;
        request.serve(&*self.vault, who, head.id).await
    }
}

/// Writes coalesced refusal counts to the audit trail (and so the log).
async fn write_counts<S: Store, H: Hsm>(vault: &Vault<S, H>, counts: Vec<AuditRec>) {
    for rec in counts {
        tracing::info!(
            client = %rec.client,
            uid = rec.uid,
            op = %rec.op,
            outcome = %rec.outcome,
            "refusals coalesced"
        );
        if let Err(err) = vault.store.audit(rec).await {
            tracing::error!(error = %err, "could not audit coalesced refusals");
        }
    }
}

/// The alias named in a request's args, for the audit record of a refusal.
fn alias_arg(head: RequestHead<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyAlias {
        alias: Option<String>,
    }
    let raw = head.args?;
    let a: OnlyAlias = rmp_serde::from_slice(raw).ok()?;
    a.alias.filter(|a| crate::vault::cards::valid_alias(a))
}

/// Refusal audits, coalesced. The first refusal of a burst (per uid and
/// error code) is written at once, with its op and alias; the ones after
/// it are counted, and each interval that counted any ends in one record
/// with the count. An interval without refusals ends the burst. So a uid
/// flooding one error costs the trail one record when it starts and one
/// per interval after, and every refusal is in a record: the counts still
/// open are written when the server stops ([`Refusals::close`]).
/// The op name refusal audits and metrics carry: a known op's own name,
/// or `(unknown op)` for anything a client sent that is not one (a closed
/// set, never the client's bytes).
fn op_label(name: &str) -> &'static str {
    Opcode::from_name(name).map_or("(unknown op)", Opcode::name)
}

/// What stands for the op of a request whose envelope did not decode.
const MALFORMED: &str = "(malformed)";

mod refusals {
    use std::collections::HashMap;
    use std::time::Duration;

    use tokio::time::Instant;
    use vault_proto::ErrorCode;

    use crate::store::records::AuditRec;
    use crate::vault::Caller;
    use crate::vault::cards::now_ms;

    /// One record per uid and error code per interval, at most, after
    /// the first. Ten seconds: a flood then costs the trail some 8,640
    /// records a day per uid and code, and an operator still sees when.
    pub(super) const INTERVAL: Duration = Duration::from_secs(10);

    /// What the op of a count says when its refusals named several.
    pub(super) const VARIOUS_OPS: &str = "(various)";

    /// One burst's current interval.
    struct Window {
        /// When the interval ends.
        ends: Instant,
        /// Wall-clock start of the interval, for the record.
        since_ms: u64,
        count: u64,
        client: String,
        /// The latest refusal's pid.
        pid: i32,
        /// The op of every counted refusal, or [`VARIOUS_OPS`].
        op: Option<String>,
    }

    pub(super) enum Noted {
        /// Write this refusal's own record now (the first of a burst);
        /// `start_flusher`: no task is running to end the interval.
        Write { start_flusher: bool },
        /// Counted in the open interval.
        Counted,
    }

    pub(super) struct Refusals {
        interval: Duration,
        open: HashMap<(u32, ErrorCode), Window>,
        /// A task is running that will end every open interval.
        flusher: bool,
        closed: bool,
    }

    impl Refusals {
        pub(super) fn new(interval: Duration) -> Refusals {
            Refusals {
                interval,
                open: HashMap::new(),
                flusher: false,
                closed: false,
            }
        }

        pub(super) fn note(
            &mut self,
            who: &Caller,
            code: ErrorCode,
            op: &str,
            now: Instant,
        ) -> Noted {
            if self.closed {
                return Noted::Write {
                    start_flusher: false,
                };
            }
            if let Some(w) = self.open.get_mut(&(who.uid, code)) {
                w.count += 1;
                w.pid = who.pid;
                // A reload may rename the client behind a uid.
                if w.client != who.client {
                    w.client.clone_from(&who.client);
                }
                match &w.op {
                    None => w.op = Some(op.to_owned()),
                    Some(o) if o != op => w.op = Some(VARIOUS_OPS.to_owned()),
                    Some(_) => {}
                }
                return Noted::Counted;
            }
            self.open.insert(
                (who.uid, code),
                Window {
                    ends: now + self.interval,
                    since_ms: now_ms(),
                    count: 0,
                    client: who.client.clone(),
                    pid: who.pid,
                    op: None,
                },
            );
            let start_flusher = !self.flusher;
            self.flusher = true;
            Noted::Write { start_flusher }
        }

        /// When the next open interval ends.
        pub(super) fn next_due(&self) -> Option<Instant> {
            self.open.values().map(|w| w.ends).min()
        }

        /// Ends the intervals due at `now`: one record for each that
        /// counted refusals (its burst goes on, for another interval); an
        /// interval that counted none ends its burst. The flag says
        /// whether intervals remain open; when not, the caller (the
        /// flusher) stops, and the next refusal starts another.
        pub(super) fn due(&mut self, now: Instant) -> (Vec<AuditRec>, bool) {
            let mut out = Vec::new();
            let interval = self.interval;
            self.open.retain(|&(uid, code), w| {
                if w.ends > now {
                    return true;
                }
                if w.count == 0 {
                    return false;
                }
                out.push(record(uid, code, w));
                w.count = 0;
                w.op = None;
                w.since_ms = now_ms();
                w.ends = now + interval;
                true
            });
            self.flusher = !self.open.is_empty();
            (out, self.flusher)
        }

        /// Every count not yet written, and no more coalescing.
        pub(super) fn close(&mut self) -> Vec<AuditRec> {
            self.closed = true;
            self.flusher = false;
            let mut out: Vec<AuditRec> = self
                .open
                .drain()
                .filter(|(_, w)| w.count > 0)
                .map(|((uid, code), w)| record(uid, code, &w))
                .collect();
            out.sort_by_key(|r| (r.uid, r.outcome.clone()));
            out
        }

        pub(super) fn closed(&self) -> bool {
            self.closed
        }
    }

    /// `outcome`: "<code> x<count> (coalesced since <unix ms>)".
    fn record(uid: u32, code: ErrorCode, w: &Window) -> AuditRec {
        AuditRec {
            at: now_ms(),
            client: w.client.clone(),
            uid,
            pid: w.pid,
            op: w.op.clone().unwrap_or_else(|| VARIOUS_OPS.to_owned()),
            alias: None,
            outcome: format!(
                "{} x{} (coalesced since {})",
                code.as_str(),
                w.count,
                w.since_ms
            ),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn caller(uid: u32, pid: i32) -> Caller {
            Caller {
                client: format!("c{uid}"),
                uid,
                pid,
                tenant: None,
                tenants: None,
                pan_per_minute: None,
            }
        }

        fn writes(n: &Noted) -> bool {
            matches!(n, Noted::Write { .. })
        }

        #[test]
        fn the_first_of_a_burst_is_written_the_rest_counted_per_interval() {
            let sec = Duration::from_secs(1);
            let mut r = Refusals::new(sec);
            let t0 = Instant::now();
            let a = caller(7, 100);
            let first = r.note(&a, ErrorCode::Forbidden, "stats", t0);
            assert!(matches!(
                first,
                Noted::Write {
                    start_flusher: true
                }
            ));
            // Another code and another uid are bursts of their own.
            let other_code = r.note(&a, ErrorCode::BadRequest, "stats", t0);
            assert!(matches!(
                other_code,
                Noted::Write {
                    start_flusher: false
                }
            ));
            assert!(writes(&r.note(
                &caller(8, 1),
                ErrorCode::Forbidden,
                "stats",
                t0
            )));
            for i in 0..1000 {
                let op = if i == 999 { "events" } else { "stats" };
                let n = r.note(&caller(7, 100 + i), ErrorCode::Forbidden, op, t0);
                assert!(matches!(n, Noted::Counted));
            }
            assert_eq!(r.next_due(), Some(t0 + sec));
            let (none, more) = r.due(t0 + sec / 2);
            assert!(
                none.is_empty() && more,
                "nothing is due before the interval ends"
            );

            let (recs, more) = r.due(t0 + sec);
            assert!(more, "the burst of uid 7 goes on");
            assert_eq!(
                recs.len(),
                1,
                "only (7, forbidden) counted anything: {recs:?}"
            );
            let rec = &recs[0];
            assert_eq!((rec.uid, rec.pid, rec.client.as_str()), (7, 1099, "c7"));
            assert_eq!(rec.op, VARIOUS_OPS, "stats and events");
            assert!(
                rec.outcome.starts_with("forbidden x1000 (coalesced since "),
                "{}",
                rec.outcome
            );
            // The intervals that counted nothing ended their bursts...
            assert!(writes(&r.note(
                &caller(8, 1),
                ErrorCode::Forbidden,
                "stats",
                t0 + sec
            )));
            // ... the one that counted runs another interval.
            let n = r.note(&a, ErrorCode::Forbidden, "stats", t0 + sec);
            assert!(matches!(n, Noted::Counted));
            let (recs, _) = r.due(t0 + 2 * sec);
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0].op, "stats");
            assert!(
                recs[0].outcome.starts_with("forbidden x1 "),
                "{:?}",
                recs[0]
            );
            // Quiet: every burst ends, the flusher may stop.
            let (recs, more) = r.due(t0 + 3 * sec);
            assert!(recs.is_empty() && !more);
            assert_eq!(r.next_due(), None);
            let again = r.note(&a, ErrorCode::Forbidden, "stats", t0 + 3 * sec);
            assert!(matches!(
                again,
                Noted::Write {
                    start_flusher: true
                }
            ));
        }

        #[test]
        fn closing_writes_every_open_count_and_stops_coalescing() {
            let mut r = Refusals::new(Duration::from_secs(3600));
            let t0 = Instant::now();
            for uid in [1, 2] {
                for _ in 0..5 {
                    r.note(
                        &caller(uid, 1),
                        ErrorCode::Unauthenticated,
                        "(malformed)",
                        t0,
                    );
                }
            }
            r.note(&caller(3, 1), ErrorCode::Unauthenticated, "health", t0);
            let recs = r.close();
            let got: Vec<(u32, String)> = recs
                .iter()
                .map(|r| (r.uid, r.outcome.split(" (").next().unwrap().to_owned()))
                .collect();
            assert_eq!(
                got,
                [
                    (1, "unauthenticated x4".into()),
                    (2, "unauthenticated x4".into())
                ],
                "uid 3's only refusal was written when it happened"
            );
            assert!(r.closed());
            assert!(writes(&r.note(
                &caller(1, 1),
                ErrorCode::Unauthenticated,
                "x",
                t0
            )));
            assert!(writes(&r.note(
                &caller(1, 1),
                ErrorCode::Unauthenticated,
                "x",
                t0
            )));
            assert!(r.close().is_empty());
        }
    }
}
