//! vault-tui under tmux for the console end-to-end test: builds the
//! binary, runs it on a private tmux server (`-L`, one per test, killed on
//! drop, also after a panic) and reads the screen with `capture-pane`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::build_package;

/// Builds `vault-tui` (once per test binary) the way [`crate::bin_dir`]
/// builds the daemon binaries, and returns its path.
pub fn vault_tui_bin() -> PathBuf {
    build_package("vault-tui").join("vault-tui")
}

/// One tmux server of our own running one session (one window, one pane).
pub struct Tmux {
    server: String,
    session: String,
    /// The server's socket file, removed on drop (tmux leaves it behind).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Starts `shell_cmd` in a detached `width`×`height` session.
    pub fn start(shell_cmd: &str, width: u16, height: u16) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut t = Tmux {
            server: format!("vault-e2e-{}-{n}", std::process::id()),
            session: "console".to_owned(),
            socket_path: None,
        };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            shell_cmd,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = t.tmux(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        t.socket_path = (out.status.success() && !path.is_empty()).then(|| path.into());
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.server, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The pane as plain text, or `None` once the session has ended.
    pub fn capture(&self) -> Option<String> {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sends tmux key names (`"3"`, `"j"`, `"Enter"`, …), one key each.
    pub fn send_keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.tmux(&["send-keys", "-t", &self.session, k]);
            assert!(
                out.status.success(),
                "tmux send-keys {k}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", &self.session])
            .status
            .success()
    }

    /// Captures every `every` until `done` holds; every capture goes to
    /// `seen` first (so the caller can check all of them). Returns the
    /// matching screen, or `Err(last screen)` after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        every: Duration,
        seen: &mut dyn FnMut(&str),
        done: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(screen) = self.capture() {
                seen(&screen);
                if done(&screen) {
                    return Ok(screen);
                }
                last = screen;
            }
            if Instant::now() > deadline {
                return Err(last);
            }
            std::thread::sleep(every);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the console too; fails harmlessly if the server is gone.
        let _ = self.tmux(&["kill-server"]);
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
