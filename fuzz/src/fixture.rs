//! An in-process vault for the request-path target: a SoftHSM2 token made
//! in a temp dir by vault-testkit (its own `SOFTHSM2_CONF`), the vault keys, a redb file, and
//! the daemon's own `Vault` and `Dispatcher`, built as `daemon::run` builds
//! them. One per fuzzing process; state persists across inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_hsm::{HsmPool, Pkcs11Hsm};
use vault_proto::Pan;
use vault_proto::frame;
use vault_proto::ops::{self, op};
use vaultd::config::Config;
use vaultd::dispatch::{ClientTable, Dispatcher, Peer};
use vaultd::store::{RedbStore, Store};
use vaultd::vault::Vault;
use vault_testkit::{Token, softhsm_module};

use crate::{ALIAS_PLACEHOLDER, SEED_PAN};

const LABEL: &str = "vaultd-fuzz";

pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub dispatcher: Arc<Dispatcher<RedbStore, Pkcs11Hsm>>,
    pub store: Arc<RedbStore>,
    /// A live alias of tenant `t-a` holding [`SEED_PAN`].
    pub alias: String,
    _dir: tempfile::TempDir,
}

/// The scratch dir, for [`remove_scratch`].
static SCRATCH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// libFuzzer ends the process with `exit()` once `-max_total_time` is up,
/// so the fixture (a static) is never dropped and its `TempDir` would stay
/// behind on /dev/shm, with its SoftHSM2 token, after every run. An
/// `atexit` handler removes it instead. (After a crash, which aborts, the
/// dir stays, beside the crash artifact.)
extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A temp dir on tmpfs when there is one: every commit fsyncs.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b = tempfile::Builder::new()
        .prefix("vaultd-fuzz-")
        .tempdir_in(if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        });
    b.expect("temp dir")
}

/// The fixture lives in a static that is never dropped, so its writer thread
/// is still running when libFuzzer calls `exit`. With the default seal
/// interval a quiet writer seals the audit tail by itself ~10 ms after the
/// last input, and if that lands after the exit handlers unloaded OpenSSL
/// (SoftHSM2's crypto) the HMAC faults (CI caught it: SEGV in the writer
/// after "Done N runs"). Sealing every commit leaves the writer nothing to
/// do between inputs.
fn config(dir: &Path) -> Config {
    let text = format!(
        r#"[server]
socket = "{sock}"
[storage]
path = "{db}"
max_batch = 64
audit_seal_interval = "0ms"
[hsm]
module = "{module}"
token_label = "{LABEL}"
threads = 1
[[tenant]]
id = "t-a"
[[tenant]]
id = "t-b"
pan_retention = "none"
[[client]]
name = "all-roles"
uid = 0
tenant = "t-a"
tenants = ["*"]
roles = ["merchant", "admin", "forwarder"]
pan_credentials_per_minute = 1000000
[[client]]
name = "fields-b"
uid = 1001
tenant = "t-b"
roles = ["collector"]
"#,
        sock = dir.join("unused.sock").display(),
        db = dir.join("vault.redb").display(),
        module = softhsm_module(),
    );
    Config::parse(&text).expect("fuzz config")
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = scratch();
        if SCRATCH.set(dir.path().to_path_buf()).is_ok() {
            // SAFETY: registers a plain function with no captured state; it
            // only reads a static that is set before registration.
            unsafe { libc::atexit(remove_scratch) };
        }
        let token = Token::create(dir.path(), LABEL);
        // SAFETY: set once, before the PKCS#11 module is loaded and before
        // any other thread of this process reads the environment.
        unsafe { token.export_conf() };
        let cfg = config(dir.path());
        token.init_vault_keys();
        let hsm = Arc::new(Pkcs11Hsm::open(&token.hsm_config()).expect("open HSM"));
        // No background thread for a standby copy of the module either (see
        // `config`): a re-initialisation, if fuzzing ever spends the budget,
        // runs in place on the calling thread.
        hsm.set_reinit_standby(false);
        let store = Arc::new(
            RedbStore::open(&cfg.storage.path, hsm.clone(), &cfg.storage.options())
                .expect("open store"),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dispatcher = rt.block_on(async {
            let pool = HsmPool::new(hsm.clone(), cfg.hsm.threads);
            let vault = Arc::new(Vault::new(&cfg, store.clone(), pool).expect("vault"));
            Arc::new(Dispatcher::new(vault, ClientTable::from_config(&cfg)))
        });
        let mut f = Fixture {
            rt,
            dispatcher,
            store,
            alias: String::new(),
            _dir: dir,
        };
        f.ensure_alias();
        f
    }

    /// Makes sure [`Fixture::alias`] exists (an input may have deleted it).
    pub fn ensure_alias(&mut self) {
        if !self.alias.is_empty() && matches!(self.store.alias(&self.alias), Ok(Some(_))) {
            return;
        }
        let body = frame::encode_request(
            1,
            op::TOKENIZE,
            &ops::TokenizeArgs {
                pan: Pan::new(SEED_PAN.into()),
                exp_month: 12,
                exp_year: 2035,
                transaction_id: None,
            },
        );
        let resp = self.handle(0, &body[frame::HEADER_LEN..]);
        let r: ops::TokenizeResult =
            vault_proto::client::decode_result(&resp[frame::HEADER_LEN..]).expect("seed tokenize");
        self.alias = r.record.alias;
    }

    /// One request body through the dispatcher, as the server would pass it.
    pub fn handle(&self, uid: u32, body: &[u8]) -> Vec<u8> {
        let peer = Peer {
            uid,
            gid: uid,
            pid: 4242,
        };
        self.rt.block_on(self.dispatcher.handle(peer, body))
    }

    /// `body` with every [`ALIAS_PLACEHOLDER`] replaced by the live alias
    /// (same length, so MessagePack string headers stay valid).
    pub fn with_alias(&self, body: &[u8]) -> Vec<u8> {
        let needle = ALIAS_PLACEHOLDER.as_bytes();
        let mut out = body.to_vec();
        if self.alias.len() != needle.len() {
            return out;
        }
        let mut i = 0;
        while i + needle.len() <= out.len() {
            if &out[i..i + needle.len()] == needle {
                out[i..i + needle.len()].copy_from_slice(self.alias.as_bytes());
                i += needle.len();
            } else {
                i += 1;
            }
        }
        out
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}
