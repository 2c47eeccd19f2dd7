//! Where the daemon's log goes: structured records to journald when systemd
//! connected stderr to the journal (`JOURNAL_STREAM` names stderr's
//! device and inode), human-readable lines on stderr otherwise. The filter
//! is `[log].level`, overridden by `RUST_LOG`.
//!
//! Nothing here redacts: card data never reaches a log call in the first
//! place (`Pan` prints masked, errors carry no PAN, token or key).
//!
//! Every committed audit record and every audit seal is logged too
//! ([`AuditLog`], target `vaultd::audit`, always at least `info`): the copy
//! of the trail outside the database that shows what the database alone
//! cannot (records and seals removed after the newest seal the audit head
//! names, see `store::audit`).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::store::audit::{Seal, hex};
use crate::store::records::AuditRec;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where [`init`] sent the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Journal,
    Stderr,
}

/// Installs the global subscriber. `level` is `[log].level`; a valid
/// `RUST_LOG` wins; an invalid one falls back to `level`, then to `info`.
pub fn init(level: &str) -> Destination {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = with_audit(filter, level);

    let mut journal_error = None;
    let journald = if connected_to_journal() {
        match tracing_journald::layer() {
            // Our fields become VAULTD_CLIENT=, VAULTD_OP=…: easy to query
            // (`journalctl VAULTD_CLIENT=shop`) and never clash with the
            // journal's own fields.
            Ok(l) => Some(
                l.with_syslog_identifier("vaultd".into())
                    .with_field_prefix(Some("VAULTD".into())),
            ),
            Err(e) => {
                journal_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let destination = if journald.is_some() {
        Destination::Journal
    } else {
        Destination::Stderr
    };
    // The journal stamps time and unit itself; stderr lines need both.
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .init();
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "stderr is the journal but journald is unreachable; logging to stderr");
    }
    destination
}

/// The audit records and seals are logged at `info` whatever the level,
/// unless the filter names their target itself.
fn with_audit(filter: EnvFilter, level: &str) -> EnvFilter {
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(AUDIT_TARGET))
        || level.contains(AUDIT_TARGET);
    match format!("{AUDIT_TARGET}=info").parse() {
        Ok(d) if !named => filter.add_directive(d),
        _ => filter,
    }
}

/// The log target of audit records and seals.
pub const AUDIT_TARGET: &str = "vaultd::audit";

/// Batches of log lines the audit log thread may be behind by; past it,
/// records are left out of the log (the database keeps them) and a
/// warning names them, rather than holding up commits.
const AUDIT_LOG_BACKLOG: usize = 256;

enum AuditLine {
    Records(Vec<(u64, AuditRec)>),
    Seal(u64, Seal),
    Dropped(u64, u64),
}

/// Logs committed audit records and seals from a thread of its own, in
/// commit order, so that formatting and writing them never delays a
/// commit. Fields: `seq`, `op`, `client`, `uid`, `pid`, `alias`, `outcome`
/// for a record (never card data: records hold none); `seq`, `mac` (hex),
/// `key_version`, `prev_seal` and `kind` for a seal. Dropping it logs what
/// is queued and joins the thread.
pub struct AuditLog {
    tx: Option<SyncSender<AuditLine>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Records left out of the log (first and last seq) not reported yet.
    dropped: Option<(u64, u64)>,
}

impl AuditLog {
    pub fn start() -> std::io::Result<AuditLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel(AUDIT_LOG_BACKLOG);
        let thread = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || log_audit(rx))?;
        Ok(AuditLog {
            tx: Some(tx),
            thread: Some(thread),
            dropped: None,
        })
    }

    /// Committed records.
    pub fn records(&mut self, recs: Vec<(u64, AuditRec)>) {
        let (Some(first), Some(last)) = (recs.first().map(|r| r.0), recs.last().map(|r| r.0))
        else {
            return;
        };
        self.send(AuditLine::Records(recs), Some((first, last)));
    }

    /// A committed seal at `seq`.
    pub fn seal(&mut self, seq: u64, seal: &Seal) {
        self.send(AuditLine::Seal(seq, *seal), None);
    }

    fn send(&mut self, line: AuditLine, range: Option<(u64, u64)>) {
        let Some(tx) = &self.tx else { return };
        if let Some((a, b)) = self.dropped
            && tx.try_send(AuditLine::Dropped(a, b)).is_ok()
        {
            self.dropped = None;
        }
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some((a, b)) = range {
                    self.dropped = Some(match self.dropped {
                        Some((x, _)) => (x, b),
                        None => (a, b),
                    });
                }
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let (Some(tx), Some((a, b))) = (&self.tx, self.dropped) {
            let _ = tx.send(AuditLine::Dropped(a, b));
        }
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn log_audit(rx: Receiver<AuditLine>) {
    for line in rx {
        match line {
            AuditLine::Records(recs) => {
                for (seq, r) in recs {
                    tracing::info!(
                        target: AUDIT_TARGET,
                        seq,
                        op = %r.op,
                        client = %r.client,
                        uid = r.uid,
                        pid = r.pid,
                        alias = r.alias.as_deref().unwrap_or("-"),
                        outcome = %r.outcome,
                        "audit record"
                    );
                }
            }
            AuditLine::Seal(seq, s) => {
                let (prev, kind) = s
                    .link
                    .map_or((None, "unchained"), |l| (Some(l.prev_seq), l.kind.name()));
                tracing::info!(
                    target: AUDIT_TARGET,
                    seq,
                    mac = %hex(s.tag()),
                    key_version = s.version,
                    prev_seal = prev,
                    kind,
                    "audit seal"
                );
            }
            AuditLine::Dropped(first, last) => tracing::warn!(
                target: AUDIT_TARGET,
                first,
                last,
                "audit records {first} to {last} were not logged (the log fell behind); the database holds them"
            ),
        }
    }
}

/// Whether stderr is the journal stream systemd set up for this service.
/// `JOURNAL_STREAM` alone is not enough: it is inherited by children whose
/// stderr was redirected elsewhere, so it must name stderr itself.
pub fn connected_to_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(var) = var.to_str() else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    journal_stream_is(var, meta.dev(), meta.ino())
}

/// Parses `JOURNAL_STREAM` (`<device>:<inode>`, both decimal) and compares.
fn journal_stream_is(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        assert!(!journal_stream_is("8", 8, 12345));
        assert!(!journal_stream_is("8:x", 8, 12345));
        assert!(!journal_stream_is("", 0, 0));
        assert!(!journal_stream_is(":", 0, 0));
    }
}
