//! The first start of this release on a vault of the previous one (issue 20):
//! tokens whose key is the HSM object `nt.<token_ref>` and whose record
//! holds no key. The fixture is made here, by the previous release's code
//! path: tokens provisioned by vaultd, then (daemon stopped) each key put
//! into the HSM as `nt.<token_ref>` the way that release unwrapped it
//! (`Pkcs11Hsm::legacy_unwrap_token_object`, kept for this) and taken out of
//! its record, the database marked schema version 2.
//!
//! Its own test binary: it opens the SoftHSM2 token in-process, and
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process.

use std::time::{Duration, Instant};

use vault_e2e::{TokenEnv, TokenOpts, pan, tokenize};
use vault_hsm::{HsmConfig, Pkcs11Hsm};
use vault_proto::BlockingClient;
use vault_proto::ops::{self, NoArgs, TokenStatus};
use vaultd::store::records::{TokenRec, decode, encode};

const LONG: Duration = Duration::from_secs(120);
const SCHEMES: [(&str, &str); 4] = [
    ("visa", "4"),
    ("mastercard", "51"),
    ("amex", "37"),
    ("discover", "6011"),
];
const TOKENS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tokens");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

/// A customer-initiated payment authorized at scheme-sim: `(approved, atc)`.
fn pay(t: &TokenEnv, c: &mut BlockingClient, alias: &str) -> (bool, u16) {
    let p = vault_e2e::pay_with_token(t, c, alias, 700, "EUR").expect("a network token");
    (p.approved, p.atc.expect("atc"))
}

fn nt_objects(t: &TokenEnv) -> Vec<String> {
    t.env
        .vaultd_cmd(&["keys", "list"])
        .lines()
        .filter(|l| l.starts_with("nt."))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

fn keks(c: &mut BlockingClient) -> Vec<(String, u32, u64)> {
    c.op::<ops::StatsOp>(&NoArgs {})
        .expect("stats")
        .keys
        .expect("stats.keys")
        .keks
        .into_iter()
        .map(|k| (k.scheme, k.version, k.tokens))
        .collect()
}

fn scheme_op<O: vault_proto::ops::Op<Args = ops::SchemeArgs>>(c: &mut BlockingClient, s: &str) {
    c.op::<O>(&ops::SchemeArgs { scheme: s.into() })
        .expect("scheme op");
}

/// Turns the stopped vault into one of the previous release: every stored
/// key becomes an `nt.*` object and leaves its record; schema version 2.
fn make_previous_release(t: &TokenEnv) -> usize {
    // SAFETY (of the process): no other test in this binary; set before the
    // module is loaded, which reads it once.
    unsafe { std::env::set_var("SOFTHSM2_CONF", t.env.softhsm_conf()) };
    let hsm = Pkcs11Hsm::open_admin(&HsmConfig {
        module: vault_e2e::softhsm_module().into(),
        token_label: "vaultd-test".into(),
        pin: zeroize::Zeroizing::new(t.env.pin.clone()),
    })
    .expect("open the token");
    let db = redb::Database::open(t.env.db()).expect("open the database");
    let w = db.begin_write().expect("write");
    let mut n = 0;
    {
        let mut tokens = w.open_table(TOKENS).expect("tokens");
        let all: Vec<(String, Vec<u8>)> = redb::ReadableTable::iter(&tokens)
            .expect("iter")
            .map(|i| {
                let (k, v) = i.expect("row");
                (k.value().to_owned(), v.value().to_vec())
            })
            .collect();
        for (r, raw) in all {
            let mut rec: TokenRec = decode("token", &raw).expect("decode");
            let key = rec.key.take().expect("a stored key");
            hsm.legacy_unwrap_token_object(&rec.scheme, &r, &key.wrapped)
                .expect("nt.* object");
            tokens
                .insert(r.as_str(), encode(&rec).expect("encode").as_slice())
                .expect("insert");
            n += 1;
        }
        let mut meta = w.open_table(META).expect("meta");
        meta.insert("schema_version", 2u32.to_be_bytes().as_slice())
            .expect("version");
        meta.remove("token_keys_migrated").expect("flag");
        for (s, _) in SCHEMES {
            meta.remove(format!("kek.{s}.v1").as_str())
                .expect("counter");
        }
    }
    w.commit().expect("commit");
    n
}

#[test]
fn a_vault_of_the_previous_release_moves_its_token_keys_out_of_the_hsm_while_serving() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let mut aliases = Vec::new();
    for (_, prefix) in SCHEMES {
        for i in 0..5 {
            aliases.push(
                tokenize(&mut c, &pan(prefix, 300 + i), 12, 2031)
                    .record
                    .alias,
            );
        }
    }
    t.wait_queue_empty(&mut c, LONG);
    for a in &aliases {
        let r = t.wait_status(&mut c, a, LONG);
        assert_eq!(r.token_info.expect("ti").status, TokenStatus::Active);
        assert_eq!(pay(&t, &mut c, a), (true, 1));
    }
    // Provisioning stays paused across the restart: the migration's
    // refreshes wait, so the payments below use the old objects.
    for (s, _) in SCHEMES {
        scheme_op::<ops::SchemePause>(&mut c, s);
    }
    drop(c);
    t.daemon = None;
    assert_eq!(make_previous_release(&t), 20);
    assert_eq!(nt_objects(&t).len(), 20, "the fixture's nt.* objects");

    t.restart();
    let mut c = t.client();
    let s = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    assert_eq!(
        s.queue.due, 20,
        "one key refresh per token of the old release"
    );
    let mut legacy = keks(&mut c);
    legacy.sort();
    let mut want: Vec<_> = SCHEMES.iter().map(|(s, _)| (s.to_string(), 0, 5)).collect();
    want.sort();
    assert_eq!(legacy, want, "stats.keys counts the tokens on nt.* objects");
    // Not migrated yet: payments go on through the nt.* objects, ATCs on.
    for a in &aliases {
        assert_eq!(pay(&t, &mut c, a), (true, 2), "before its refresh");
    }
    for (s, _) in SCHEMES {
        scheme_op::<ops::SchemeResume>(&mut c, s);
    }
    let deadline = Instant::now() + LONG;
    while !nt_objects(&t).is_empty() || keks(&mut c).iter().any(|k| k.1 == 0) {
        assert!(
            Instant::now() < deadline,
            "migration not finished: {:?}",
            keks(&mut c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut now = keks(&mut c);
    now.sort();
    let want: Vec<_> = want.into_iter().map(|(s, _, n)| (s, 1, n)).collect();
    assert_eq!(now, want, "every key stored under KEK v1");
    // The refreshed keys pay, their ATCs started again.
    for a in &aliases {
        assert_eq!(pay(&t, &mut c, a), (true, 1), "after its refresh");
    }
    // A second start has nothing to migrate.
    drop(c);
    t.restart();
    let mut c = t.client();
    let s = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    assert_eq!(s.queue.due + s.queue.scheduled, 0);
    assert_eq!(pay(&t, &mut c, &aliases[0]), (true, 2));
}
