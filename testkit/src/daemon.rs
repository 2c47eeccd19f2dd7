//! A temp vaultd: a [`TestEnv`] is a temp directory holding a SoftHSM2
//! token (its own `SOFTHSM2_CONF`, passed to every child), the redb file,
//! the daemon's socket, config and log; [`Vaultd`] is the real binary
//! started from the workspace's target directory on that socket.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vault_proto::BlockingClient;

use crate::wait::{CEILING, wait_for_some, wait_for_state};
use crate::{Token, bin_dir, softhsm_module};

/// A temp directory with a SoftHSM token and room for a daemon.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub pin: String,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("vault-e2e-")
            .tempdir()
            .expect("tempdir");
        // Other uids (test clients) must reach the socket inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // create-token.sh writes hsm.pin 0600: vaultd refuses a PIN file
        // open to other users.
        let token = Token::create(dir.path(), "vaultd-test");
        let pin = token.pin();
        TestEnv { dir, pin }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn softhsm_conf(&self) -> PathBuf {
        self.path().join("softhsm2.conf")
    }
    pub fn socket(&self) -> PathBuf {
        self.path().join("vaultd.sock")
    }
    pub fn db(&self) -> PathBuf {
        self.path().join("vault.redb")
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("vaultd.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.path().join("vaultd.log")
    }

    /// Writes the daemon's configuration: `extra` is appended (tenants,
    /// clients, schemes, overrides).
    pub fn write_config(&self, server_extra: &str, extra: &str) {
        self.write_config_with_hsm(server_extra, "", extra);
    }

    /// [`TestEnv::write_config`] with `hsm_extra` in the `[hsm]` table.
    pub fn write_config_with_hsm(&self, server_extra: &str, hsm_extra: &str, extra: &str) {
        self.write_config_full(server_extra, "", hsm_extra, extra);
    }

    /// [`TestEnv::write_config_with_hsm`] with `storage_extra` in the
    /// `[storage]` table.
    pub fn write_config_full(
        &self,
        server_extra: &str,
        storage_extra: &str,
        hsm_extra: &str,
        extra: &str,
    ) {
        let cfg = format!(
            r#"[server]
socket = "{sock}"
{server_extra}
[storage]
path = "{db}"
{storage_extra}
[hsm]
module = "{module}"
token_label = "vaultd-test"
pin_file = "{pin}"
{hsm_extra}
[log]
level = "info,vaultd=debug"
{extra}
"#,
            sock = self.socket().display(),
            db = self.db().display(),
            module = softhsm_module(),
            pin = self.path().join("hsm.pin").display(),
        );
        std::fs::write(self.config_path(), cfg).unwrap();
    }

    /// Runs `vaultd <args>` against this env's config and returns stdout.
    pub fn vaultd_cmd(&self, args: &[&str]) -> String {
        let out = Command::new(bin_dir().join("vaultd"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .output()
            .expect("run vaultd");
        assert!(
            out.status.success(),
            "vaultd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the daemon (running `keys init` first).
    pub fn start(&self) -> Vaultd {
        self.vaultd_cmd(&["keys", "init"]);
        Vaultd::spawn(self)
    }

    pub fn client(&self) -> BlockingClient {
        BlockingClient::connect(self.socket()).expect("connect to vaultd")
    }

    /// `n` connections the daemon serves (each has had `health` answered).
    /// Connections closed just before (a `vaultctl`, start-up's readiness
    /// check) hold their slot until the daemon has reaped them: those
    /// refused meanwhile are retried until the daemon has room.
    pub fn served_clients(&self, n: usize) -> Vec<BlockingClient> {
        let mut held = Vec::with_capacity(n);
        wait_for_state(CEILING, format_args!("{n} connections served"), || {
            while held.len() < n {
                let mut c = self.client();
                c.op::<vault_proto::ops::HealthOp>(&vault_proto::ops::NoArgs {})
                    .map_err(|e| format!("{} served, then {e}", held.len()))?;
                held.push(c);
            }
            Ok(())
        });
        held
    }

    /// One connection the daemon serves (see [`TestEnv::served_clients`]).
    pub fn served_client(&self) -> BlockingClient {
        self.served_clients(1).pop().expect("one client")
    }

    /// `what`, displayed with everything the daemon logged (read when the
    /// message is shown): for waits whose failure the log explains.
    pub fn with_log<'a>(&'a self, what: &'a str) -> WithLog<'a> {
        WithLog { env: self, what }
    }

    /// Calls an op as another uid through `vaultctl call` (root may setuid
    /// its children); gid 0 so the 0660 root-owned socket is reachable.
    pub fn call_as(
        &self,
        uid: u32,
        op: &str,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, (String, String)> {
        let mut child = Command::new(bin_dir().join("vaultctl"))
            .args(["--socket"])
            .arg(self.socket())
            .args(["call", op])
            .uid(uid)
            .gid(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(args.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("vaultctl prints JSON"))
        } else {
            // "vaultctl: <code>: <message>"
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            let rest = err.strip_prefix("vaultctl: ").unwrap_or(&err);
            let (code, msg) = rest.split_once(": ").unwrap_or((rest, ""));
            Err((code.to_owned(), msg.to_owned()))
        }
    }

    /// Everything the daemon logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Asserts that none of `needles` occurs in the redb file or the log.
    pub fn assert_absent_everywhere(&self, needles: &[&str]) {
        let db = std::fs::read(self.db()).unwrap_or_default();
        let log = self.log();
        for n in needles {
            assert!(
                !contains(&db, n.as_bytes()),
                "a secret appears in clear in the redb file"
            );
            assert!(!log.contains(n), "a secret appears in the daemon log");
        }
    }
}

/// See [`TestEnv::with_log`].
pub struct WithLog<'a> {
    env: &'a TestEnv,
    what: &'a str,
}

impl std::fmt::Display for WithLog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (daemon log:\n{})", self.what, self.env.log())
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A running vaultd process.
pub struct Vaultd {
    child: Option<Child>,
    socket: PathBuf,
}

impl Vaultd {
    pub fn spawn(env: &TestEnv) -> Vaultd {
        Vaultd::spawn_with_env(env, &[])
    }

    /// [`Vaultd::spawn`] with extra environment variables for the daemon.
    pub fn spawn_with_env(env: &TestEnv, vars: &[(&str, &std::ffi::OsStr)]) -> Vaultd {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.log_path())
            .unwrap();
        let child = Command::new(bin_dir().join("vaultd"))
            .arg("--config")
            .arg(env.config_path())
            .args(["run", "--allow-root"])
            .env("SOFTHSM2_CONF", env.softhsm_conf())
            .envs(vars.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn vaultd");
        Vaultd::adopt(env, child)
    }

    /// A vaultd started some other way (under systemd's launcher, as another
    /// uid), once `health` answers on the env's socket.
    pub fn adopt(env: &TestEnv, child: Child) -> Vaultd {
        let mut d = Vaultd {
            child: Some(child),
            socket: env.socket(),
        };
        d.wait_ready(env);
        d
    }

    fn wait_ready(&mut self, env: &TestEnv) {
        let socket = self.socket.clone();
        let child = &mut self.child;
        wait_for_state(CEILING, env.with_log("vaultd to answer health"), || {
            if let Some(c) = child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("vaultd exited during start-up ({st}): {}", env.log());
            }
            let mut c = BlockingClient::connect(&socket).map_err(|e| e.to_string())?;
            c.op::<vault_proto::ops::HealthOp>(&vault_proto::ops::NoArgs {})
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        // Still ours while we wait: a panic here kills it on drop.
        let st = wait_for_some(CEILING, "vaultd to stop on SIGTERM", || {
            c.try_wait().ok().flatten()
        });
        self.child = None;
        st
    }
}

impl Drop for Vaultd {
    fn drop(&mut self) {
        self.kill9();
    }
}
