//! systemd integration: the listening socket systemd may pass (socket
//! activation), the `READY=1` / `RELOADING=1` / `STOPPING=1` / `STATUS=`
//! notifications and the watchdog timer. Outside systemd every call here is
//! a no-op: `NOTIFY_SOCKET`, `LISTEN_FDS` and `WATCHDOG_USEC` are unset.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::net::UnixListener;
use tokio::time::{Interval, MissedTickBehavior};

/// Why the socket systemd passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("bad socket activation environment (LISTEN_PID/LISTEN_FDS): {0}")]
    Environment(std::io::Error),
    #[error(
        "systemd passed {0} sockets; vaultd serves exactly one: vaultd.socket must have a single ListenStream="
    )]
    TooMany(usize),
    #[error("the socket systemd passed (fd {fd}) is not a listening Unix stream socket: {why}")]
    NotAUnixListener { fd: RawFd, why: String },
    #[error("cannot adopt the socket systemd passed: {0}")]
    Adopt(std::io::Error),
}

/// The listening socket systemd passed, if any: none → `Ok(None)` (vaultd
/// binds its own), one → adopted, more → an error (which socket would be
/// the vault's is not ours to guess). Must run inside the tokio runtime.
pub fn activated_listener() -> Result<Option<UnixListener>, ActivationError> {
    let fds: Vec<RawFd> = sd_notify::listen_fds()
        .map_err(ActivationError::Environment)?
        .collect();
    let fd = match fds[..] {
        [] => return Ok(None),
        [fd] => fd,
        _ => return Err(ActivationError::TooMany(fds.len())),
    };
    check_unix_listener(fd)?;
    // SAFETY: systemd hands us this descriptor for our exclusive use
    // (sd_listen_fds(3)); nothing else in the process owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let std_listener = std::os::unix::net::UnixListener::from(owned);
    std_listener
        .set_nonblocking(true)
        .map_err(ActivationError::Adopt)?;
    UnixListener::from_std(std_listener)
        .map(Some)
        .map_err(ActivationError::Adopt)
}

/// Refuses a passed descriptor that is not `AF_UNIX`, `SOCK_STREAM` and
/// listening, so a wrong `ListenDatagram=` or `ListenStream=0.0.0.0:…`
/// stops start-up with a clear line instead of failing on the first accept.
fn check_unix_listener(fd: RawFd) -> Result<(), ActivationError> {
    let bad = |why: String| ActivationError::NotAUnixListener { fd, why };
    let opt = |name: libc::c_int| -> Result<libc::c_int, ActivationError> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, which
        // is a properly aligned c_int that outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(bad(std::io::Error::last_os_error().to_string()))
        }
    };
    if opt(libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(bad("not a Unix socket (use ListenStream=/path)".into()));
    }
    if opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(bad("not a stream socket (use ListenStream=)".into()));
    }
    if opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(bad("not listening".into()));
    }
    Ok(())
}

fn notify(states: &[NotifyState<'_>]) {
    // A failed notification is logged, never fatal: outside systemd there is
    // nobody to tell, and inside it the unit's timeouts will say the rest.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The socket is bound (or adopted) and the HSM and store are open.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) has begun; [`ready`] ends it, whatever its outcome.
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun: in-flight requests are being finished.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is alive.
pub fn watchdog_ping() {
    notify(&[NotifyState::Watchdog]);
}

/// The watchdog timer: ticks at half of `WatchdogSec=` so one late tick
/// does not get a healthy daemon killed.
pub struct Watchdog {
    timeout: Duration,
    ticker: Interval,
}

impl Watchdog {
    /// `None` when systemd has not enabled the watchdog for this process.
    pub fn from_env() -> Option<Watchdog> {
        let timeout = sd_notify::watchdog_enabled()?;
        if timeout.is_zero() {
            return None;
        }
        let mut ticker = tokio::time::interval(timeout / 2);
        // After a stall, tick once, not once per missed period.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(Watchdog { timeout, ticker })
    }

    /// `WatchdogSec=` as systemd set it.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the daemon pings.
    pub fn interval(&self) -> Duration {
        self.ticker.period()
    }
}

/// The next watchdog tick; never, when there is no watchdog. Lets a
/// `select!` loop keep one arm whether or not the watchdog is on.
pub async fn next_tick(watchdog: &mut Option<Watchdog>) {
    match watchdog {
        Some(w) => {
            w.ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
