//! End-to-end test harness: real processes only. A [`TestEnv`] is a temp
//! directory holding a SoftHSM2 token (its own `SOFTHSM2_CONF`), the redb
//! file, the daemon's socket and logs; [`Vaultd`] and [`SchemeSim`] are the
//! real binaries started from the workspace's target directory. The token,
//! the binaries, the waits and uid switching come from `vault-testkit`
//! (re-exported here).

pub mod console;
pub mod pkcs11_faults;
pub mod sim;
pub mod systemd;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use sim::SchemeSim;
use vault_proto::BlockingClient;
pub use vault_testkit::wait::{
    CEILING, assert_took, ceiling_for, machine_load, wait_for, wait_for_async, wait_for_some,
    wait_for_state,
};
pub use vault_testkit::{
    Token, as_uid, bin_dir, build_package, first_line, remove_at_exit, softhsm_module,
};

/// Test PANs (Luhn-valid), one per scheme.
pub const VISA: &str = "4111111111111111";
pub const MASTERCARD: &str = "5555555555554444";
pub const AMEX: &str = "378282246310005";
pub const DISCOVER: &str = "6011111111111117";

/// A Luhn-valid 16-digit PAN with the given prefix and serial number.
pub fn pan(prefix: &str, n: u64) -> String {
    let mut body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    body.truncate(15);
    let d = vault_proto::pan::luhn_check_digit(body.as_bytes()) as char;
    body.push(d);
    body
}

/// Config of one tenant `t-a` whose merchant and admin is uid 0 (the test
/// process): for [`TestEnv::write_config`]'s `extra`.
pub const ROOT_MERCHANT_T_A: &str = r#"
[[tenant]]
id = "t-a"

[[client]]
name = "root-merchant"
uid = 0
tenant = "t-a"
roles = ["merchant", "admin"]
"#;

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

/// A vault wired to a running scheme-sim: KEKs imported, schemes
/// configured, tenant `t-a` with network tokens; the test process (uid 0)
/// is merchant of `t-a`, admin, and forwarder for every tenant.
pub struct TokenEnv {
    pub env: TestEnv,
    pub sim: SchemeSim,
    pub daemon: Option<Vaultd>,
}

/// Tunables for [`TokenEnv`].
pub struct TokenOpts {
    pub provisioning: &'static str,
    pub tenants: &'static str,
    pub clients: &'static str,
    /// Lines for the `[hsm]` table.
    pub hsm: &'static str,
    /// Lines for the `[storage]` table.
    pub storage: &'static str,
}

impl Default for TokenOpts {
    fn default() -> Self {
        TokenOpts {
            provisioning: "backoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\nmax_attempts = 30\npoll_interval = \"1s\"\nbreaker_threshold = 20\nbreaker_cooldown = \"500ms\"\n",
            tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\n",
            clients: "",
            hsm: "",
            storage: "",
        }
    }
}

impl TokenEnv {
    pub fn start(opts: TokenOpts) -> TokenEnv {
        let env = TestEnv::new();
        let sim = SchemeSim::start(&env);
        let extra = format!(
            "[provisioning]\n{}\n{}\n{}\n[[client]]\nname = \"root\"\nuid = 0\ntenant = \"t-a\"\ntenants = [\"*\"]\nroles = [\"merchant\", \"admin\", \"forwarder\"]\n{}",
            opts.provisioning,
            sim.schemes_config(),
            opts.tenants,
            opts.clients
        );
        env.write_config_full("", opts.storage, opts.hsm, &extra);
        env.vaultd_cmd(&["keys", "init"]);
        sim.import_keks(&env);
        let daemon = Some(Vaultd::spawn(&env));
        TokenEnv { env, sim, daemon }
    }

    pub fn client(&self) -> BlockingClient {
        self.env.client()
    }

    pub fn restart(&mut self) {
        self.daemon = None;
        self.daemon = Some(Vaultd::spawn(&self.env));
    }

    pub fn daemon(&mut self) -> &mut Vaultd {
        self.daemon.as_mut().expect("daemon running")
    }

    /// Polls `alias_status` until the token leaves `pending`; panics after
    /// `ceiling`.
    pub fn wait_status(
        &self,
        c: &mut BlockingClient,
        alias: &str,
        ceiling: Duration,
    ) -> vault_proto::ops::AliasRecord {
        wait_for_state(ceiling, "the token to leave pending", || {
            let r = c
                .op::<vault_proto::ops::AliasStatus>(&vault_proto::ops::AliasArgs {
                    alias: alias.to_owned(),
                })
                .expect("alias_status");
            let st = r.token_info.as_ref().map(|t| t.status);
            if st == Some(vault_proto::ops::TokenStatus::Pending) {
                Err(format!("{:?}", r.token_info))
            } else {
                Ok(r)
            }
        })
        .0
    }

    /// Waits until `stats` shows an empty queue (nothing due, scheduled or
    /// in flight); panics after `ceiling`.
    pub fn wait_queue_empty(
        &self,
        c: &mut BlockingClient,
        ceiling: Duration,
    ) -> vault_proto::ops::Stats {
        wait_for_state(ceiling, "an empty job queue", || {
            let s = c
                .op::<vault_proto::ops::StatsOp>(&vault_proto::ops::NoArgs {})
                .expect("stats");
            let q = &s.queue;
            if q.due + q.scheduled + q.in_flight == 0 {
                Ok(s)
            } else {
                Err(format!("{q:?}"))
            }
        })
        .0
    }
}

pub fn tokenize(
    c: &mut BlockingClient,
    pan: &str,
    m: u8,
    y: u16,
) -> vault_proto::ops::TokenizeResult {
    c.op::<vault_proto::ops::Tokenize>(&vault_proto::ops::TokenizeArgs {
        pan: vault_proto::Pan::new(pan.into()),
        exp_month: m,
        exp_year: y,
        transaction_id: None,
    })
    .expect("tokenize")
}

/// A customer-initiated payment with an alias's network token: the ATC
/// vaultd issued and what scheme-sim's `/v1/authorize` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub atc: Option<u16>,
    pub approved: bool,
    pub reason: String,
}

/// `credentials` for `alias` of tenant `t-a` (customer-initiated, network
/// token only, `amount_minor` in `currency`), authorized at scheme-sim;
/// `None` when vaultd gives no network token (an error, a fallback).
pub fn pay_with_token(
    t: &TokenEnv,
    c: &mut BlockingClient,
    alias: &str,
    amount_minor: u64,
    currency: &str,
) -> Option<Payment> {
    use vault_proto::ops::{
        CredentialKind, Credentials, CredentialsArgs, CredentialsOp, Initiator,
    };
    let Ok(Credentials::NetworkToken {
        network_token,
        exp_month,
        exp_year,
        cryptogram,
        eci,
        atc,
        ..
    }) = c.op::<CredentialsOp>(&CredentialsArgs {
        alias: alias.to_owned(),
        tenant: "t-a".into(),
        accept: vec![CredentialKind::NetworkToken],
        initiator: Initiator::Customer,
        amount_minor,
        currency: currency.to_owned(),
        authenticated_eci: None,
    })
    else {
        return None;
    };
    let r = t.sim.post(
        "/v1/authorize",
        &serde_json::json!({
            "network_token": network_token.expose(), "exp_month": exp_month,
            "exp_year": exp_year, "cryptogram": cryptogram, "eci": eci,
            "amount_minor": amount_minor, "currency": currency,
        }),
    );
    Some(Payment {
        atc,
        approved: r["approved"].as_bool().expect("approved"),
        reason: r["reason"].as_str().unwrap_or_default().to_owned(),
    })
}
