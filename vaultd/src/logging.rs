//! Where the daemon's log goes: structured records to journald when systemd
//! connected stderr to the journal (`JOURNAL_STREAM` names stderr's
//! device and inode), human-readable lines on stderr otherwise. The filter
//! is `[log].level`, overridden by `RUST_LOG`.
//!
//! Nothing here redacts: card data never reaches a log call in the first
//! place (`Pan` prints masked, errors carry no PAN, token or key).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

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
