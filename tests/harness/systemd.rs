//! Helpers for the systemd tests: start vaultd the way systemd would (a
//! passed listening socket via `systemd-socket-activate`, `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, another uid) and listen to its notifications.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use vault_testkit::uid::chown_tree;

use crate::{TestEnv, Vaultd, bin_dir, wait_for_some};

/// How to start vaultd.
#[derive(Default)]
pub struct Launch {
    /// Socket paths `systemd-socket-activate` listens on and passes.
    pub activate: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Run as this uid and gid (and without `--allow-root`).
    pub user: Option<(u32, u32)>,
}

impl Launch {
    pub fn new() -> Launch {
        Launch::default()
    }

    pub fn activate(mut self, socket: impl Into<PathBuf>) -> Launch {
        self.activate.push(socket.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Launch {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn user(mut self, uid: u32, gid: u32) -> Launch {
        self.user = Some((uid, gid));
        self
    }

    /// The command line, stdout and stderr appended to the env's log.
    pub fn command(&self, env: &TestEnv) -> Command {
        let vaultd = bin_dir().join("vaultd");
        let mut cmd = if self.activate.is_empty() {
            Command::new(&vaultd)
        } else {
            let mut c = Command::new("systemd-socket-activate");
            for s in &self.activate {
                c.arg("-l").arg(s);
            }
            // It passes the program only the environment named with -E.
            c.arg("-E")
                .arg(format!("SOFTHSM2_CONF={}", env.softhsm_conf().display()));
            for (k, v) in &self.env {
                c.arg("-E").arg(format!("{k}={v}"));
            }
            c.arg(&vaultd);
            c
        };
        cmd.arg("--config").arg(env.config_path()).arg("run");
        match self.user {
            Some((uid, gid)) => {
                cmd.uid(uid).gid(gid);
            }
            None => {
                cmd.arg("--allow-root");
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.log_path())
            .expect("open the daemon log");
        cmd.env("SOFTHSM2_CONF", env.softhsm_conf())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        cmd
    }

    /// Starts the process without waiting for anything.
    pub fn spawn_raw(&self, env: &TestEnv) -> Child {
        self.command(env).spawn().expect("spawn vaultd")
    }

    /// Starts vaultd and waits until `health` answers on the env's socket
    /// (under socket activation, that first connection is what execs it).
    pub fn spawn(&self, env: &TestEnv) -> Vaultd {
        Vaultd::adopt(env, self.spawn_raw(env))
    }
}

/// Sends `signal` to a process.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Waits for a child to exit; panics after `ceiling`.
pub fn wait_exit(child: &mut Child, ceiling: Duration) -> std::process::ExitStatus {
    wait_for_some(ceiling, "the process to exit", || {
        child.try_wait().expect("try_wait")
    })
}

/// One datagram received on the notify socket.
#[derive(Debug, Clone)]
pub struct Notification {
    /// When the test read it.
    pub at: Instant,
    /// When the kernel queued it on the socket (`SO_TIMESTAMPNS`, since
    /// the epoch): when the daemon sent it, however late the test's own
    /// thread got round to reading it on a loaded machine.
    pub arrived: Duration,
    /// `KEY=value` lines.
    pub lines: Vec<String>,
}

impl Notification {
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// A `NOTIFY_SOCKET` of the test's own: a datagram socket in the temp dir.
pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
    /// Everything received so far, in order.
    pub seen: Vec<Notification>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) on our own socket with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_TIMESTAMPNS on the notify socket");
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    pub fn env_value(&self) -> String {
        self.path.display().to_string()
    }

    /// The next datagram, or `None` after `within`.
    pub fn recv(&mut self, within: Duration) -> Option<Notification> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .expect("set timeout");
        let mut buf = [0u8; 4096];
        // u64s: aligned for the cmsghdr inside.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at buffers that live across the call.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return None;
        }
        let mut arrived = None;
        // SAFETY: walks the control messages recvmsg(2) just filled in,
        // with the libc macros, inside `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    arrived = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]);
        let note = Notification {
            at: Instant::now(),
            arrived: arrived.expect("the kernel's receive timestamp"),
            lines: text.lines().map(str::to_owned).collect(),
        };
        self.seen.push(note.clone());
        Some(note)
    }

    /// Receives until a datagram with `line` arrives; panics after
    /// `ceiling`.
    pub fn wait_for(&mut self, line: &str, ceiling: Duration) -> Notification {
        let mut found = self.wait_for_n(line, 1, ceiling);
        found.pop().expect("one")
    }

    /// Receives until `n` datagrams with `line` have arrived (from now on)
    /// and returns them; panics after `ceiling`.
    pub fn wait_for_n(&mut self, line: &str, n: usize, ceiling: Duration) -> Vec<Notification> {
        let started = Instant::now();
        let mut found = Vec::with_capacity(n);
        while found.len() < n {
            let left = ceiling.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "gave up waiting for {n} {line} after {:?}, {} came (the ceiling only ends a \
                 hung test; {}); got {:?}",
                started.elapsed(),
                found.len(),
                crate::machine_load(),
                self.seen
            );
            if let Some(note) = self.recv(left)
                && note.has(line)
            {
                found.push(note);
            }
        }
        found
    }
}
