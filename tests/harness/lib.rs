//! End-to-end test harness: real processes only. A [`TestEnv`] is a temp
//! directory holding a SoftHSM2 token (its own `SOFTHSM2_CONF`), the redb
//! file, the daemon's socket and logs; [`Vaultd`] and [`SchemeSim`] are the
//! real binaries started from the workspace's target directory. Those, the
//! token, the waits and uid switching come from `vault-testkit` (re-exported
//! here); this crate adds what the end-to-end tests share on top: a vault
//! wired to scheme-sim ([`TokenEnv`]), test cards, payments, the console
//! under tmux, the PKCS#11 fault shim and systemd's ways of starting vaultd.

pub mod console;
pub mod pkcs11_faults;
pub mod systemd;

use std::time::Duration;

use vault_proto::BlockingClient;
pub use vault_testkit::daemon::{TestEnv, Vaultd, WithLog, contains};
pub use vault_testkit::sim::SchemeSim;
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

/// `vaultctl --socket <socket> --json <args>`: its exit code, standard
/// output as JSON (`Null` when empty) and standard error as JSON (`Null`
/// when empty).
pub fn vaultctl_json(
    socket: &std::path::Path,
    args: &[&str],
) -> (i32, serde_json::Value, serde_json::Value) {
    let out = std::process::Command::new(bin_dir().join("vaultctl"))
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .output()
        .expect("run vaultctl");
    let parse = |b: &[u8]| {
        if b.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(b).unwrap_or_else(|e| {
                panic!(
                    "vaultctl printed no JSON ({e}): {}",
                    String::from_utf8_lossy(b)
                )
            })
        }
    };
    (
        out.status.code().expect("vaultctl exited"),
        parse(&out.stdout),
        parse(&out.stderr),
    )
}
