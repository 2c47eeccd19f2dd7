//! Helpers for the systemd tests: start vaultd the way systemd would (a
//! passed listening socket via `systemd-socket-activate`, `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, another uid) and listen to its notifications.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TestEnv, Vaultd, bin_dir};

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
        let mut d = Vaultd {
            child: Some(self.spawn_raw(env)),
            socket: env.socket(),
        };
        d.wait_ready(env);
        d
    }
}

/// Sends `signal` to a process.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Waits for a child to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Changes the owner of `path` and everything below it.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), uid, gid);
        }
    }
}

/// One datagram received on the notify socket.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
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
        let n = self.socket.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let note = Notification {
            at: Instant::now(),
            lines: text.lines().map(str::to_owned).collect(),
        };
        self.seen.push(note.clone());
        Some(note)
    }

    /// Receives until a datagram with `line` arrives; panics after `within`.
    pub fn wait_for(&mut self, line: &str, within: Duration) -> Notification {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line} within {within:?}; got {:?}",
                self.seen
            );
            if let Some(n) = self.recv(left)
                && n.has(line)
            {
                return n;
            }
        }
    }
}
