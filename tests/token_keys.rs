//! Network token keys stored wrapped in their records (issue 20): real
//! vaultd, SoftHSM2 and scheme-sim. The HSM holds the same fixed handful of
//! objects whatever the number of tokens; every stored key makes cryptograms
//! the scheme approves; a deleted token's key is unusable at once; a vault
//! of the previous release (keys as `nt.*` HSM objects) is migrated while it
//! serves; a backup restored beside a copy of the token brings every token
//! back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use vault_e2e::{TokenEnv, TokenOpts, contains, pan, tokenize};
use vault_proto::BlockingClient;
use vault_proto::ops::{
    self, CredentialKind, Credentials, CredentialsArgs, CredentialsOp, Initiator, NoArgs,
    TokenStatus,
};

/// A ceiling that only ends a hung test.
const LONG: Duration = Duration::from_secs(180);

const SCHEMES: [(&str, &str); 4] = [
    ("visa", "4"),
    ("mastercard", "51"),
    ("amex", "37"),
    ("discover", "6011"),
];

/// The token objects in the HSM (`vaultd keys list`, PKCS#11 attributes).
fn hsm_objects(t: &TokenEnv) -> BTreeSet<String> {
    t.env
        .vaultd_cmd(&["keys", "list"])
        .lines()
        .filter(|l| l.starts_with("vault.") || l.starts_with("tsp.") || l.starts_with("nt."))
        .map(str::to_owned)
        .collect()
}

fn cit(alias: &str, tenant: &str) -> CredentialsArgs {
    CredentialsArgs {
        alias: alias.to_owned(),
        tenant: tenant.to_owned(),
        accept: vec![CredentialKind::NetworkToken],
        initiator: Initiator::Customer,
        amount_minor: 1250,
        currency: "CHF".into(),
        authenticated_eci: None,
    }
}

/// A customer-initiated payment with the alias's network token, authorized
/// at scheme-sim: `(approved, reason)`; `None` when vaultd gave no token.
fn pay(t: &TokenEnv, c: &mut BlockingClient, alias: &str) -> Option<(bool, String)> {
    vault_e2e::pay_with_token(t, c, alias, 1250, "CHF").map(|p| (p.approved, p.reason))
}

fn stats(c: &mut BlockingClient) -> ops::Stats {
    c.op::<ops::StatsOp>(&NoArgs {}).expect("stats")
}

/// Per (scheme, KEK version) the stored keys `stats.keys` counts.
fn kek_use(c: &mut BlockingClient) -> Vec<(String, u32, u64)> {
    stats(c)
        .keys
        .expect("stats.keys")
        .keks
        .into_iter()
        .map(|k| (k.scheme, k.version, k.tokens))
        .collect()
}

/// Polls `check` until it holds; the ceiling only ends a hung test.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {LONG:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tokenizes `n` cards per scheme and waits until every token is active.
fn provision(t: &TokenEnv, c: &mut BlockingClient, n: u64, base: u64) -> Vec<(String, String)> {
    let mut aliases = Vec::new();
    for (_, prefix) in SCHEMES {
        for i in 0..n {
            let r = tokenize(c, &pan(prefix, base + i), 12, 2031);
            aliases.push(r.record.alias);
        }
    }
    let s = t.wait_queue_empty(c, LONG);
    assert_eq!(s.queue.due + s.queue.scheduled + s.queue.in_flight, 0);
    aliases
        .into_iter()
        .map(|a| {
            let r = c
                .op::<ops::AliasStatus>(&ops::AliasArgs { alias: a.clone() })
                .expect("status");
            let ti = r.token_info.expect("token_info");
            assert_eq!(ti.status, TokenStatus::Active, "{:?}", ti.last_error);
            (a, ti.token_ref.expect("token_ref"))
        })
        .collect()
}

/// 2,000 tokens across the four schemes leave the HSM's objects as they
/// were; every token's cryptogram is approved by the scheme; no token
/// object is extractable; `stats.keys` counts the stored keys per KEK.
#[test]
fn two_thousand_tokens_add_no_hsm_object_and_all_pay() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let before = hsm_objects(&t);
    assert!(!before.is_empty());
    let tokens = provision(&t, &mut c, 500, 0);
    assert_eq!(tokens.len(), 2_000);
    let after = hsm_objects(&t);
    assert_eq!(before, after, "provisioning changed the HSM's objects");
    for line in &after {
        assert!(
            line.contains("sensitive=true extractable=false"),
            "an HSM object is extractable: {line}"
        );
    }
    let mut uses = kek_use(&mut c);
    uses.sort();
    let want: Vec<(String, u32, u64)> = {
        let mut w: Vec<_> = SCHEMES
            .iter()
            .map(|(s, _)| (s.to_string(), 1, 500))
            .collect();
        w.sort();
        w
    };
    assert_eq!(uses, want);
    let mut refused = Vec::new();
    for (alias, token_ref) in &tokens {
        match pay(&t, &mut c, alias) {
            Some((true, _)) => {}
            other => refused.push(format!("{token_ref}: {other:?}")),
        }
    }
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    // The cryptograms are made from keys unwrapped into session objects:
    // still no new token object.
    assert_eq!(hsm_objects(&t), before);
}

/// A token the scheme deletes: its next cryptogram fails at once (the
/// cached session key is gone with the stored key), and its record no
/// longer holds the key.
#[test]
fn a_deleted_tokens_key_is_unusable_at_once_and_leaves_its_record() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let tokens = provision(&t, &mut c, 2, 100);
    let (alias, token_ref) = tokens[0].clone();
    let (other, _) = tokens[1].clone();
    assert_eq!(pay(&t, &mut c, &alias), Some((true, "approved".into())));
    // The stored key as the token service delivered it: the RFC 3394 blob
    // of the token's key under the visa KEK (deterministic).
    let key = t.sim.get(&format!("/sim/tokens/{token_ref}"));
    let key_hex = key["token_key_hex"].as_str().expect("key").to_owned();
    let clear: Vec<u8> = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).expect("hex"))
        .collect();
    let keks = scheme_sim::kek::Keks::load_or_generate(&t.sim.kek_dir).expect("sim keks");
    let blob = keks
        .get(scheme_sim::scheme::Scheme::Visa)
        .wrap(&clear.clone().try_into().expect("16 bytes"));
    let file = std::fs::read(t.env.db()).expect("read the database file");
    assert!(
        contains(&file, &blob),
        "the stored blob is not in the file: the scan is blind"
    );
    let cached = |c: &mut BlockingClient| stats(c).hsm.expect("stats.hsm").token_keys_cached;
    let cached_before = cached(&mut c);
    assert!(cached_before >= 2, "{cached_before} token keys cached");
    t.sim.post(
        &format!("/sim/tokens/{token_ref}/events"),
        &json!({"event": "delete"}),
    );
    wait_for("the delete reaches the vault", || {
        let r = c
            .op::<ops::AliasStatus>(&ops::AliasArgs {
                alias: alias.clone(),
            })
            .expect("status");
        r.token_info.map(|ti| ti.status) == Some(TokenStatus::Deleted)
    });
    // Immediately: no cryptogram for it (token only: no usable credential).
    let err = c
        .op::<CredentialsOp>(&cit(&alias, "t-a"))
        .expect_err("a deleted token must not pay");
    assert_eq!(err.code(), Some(vault_proto::ErrorCode::NoUsableCredential));
    // Its session key was destroyed with the delete, before any other
    // HSM work on token keys.
    assert_eq!(
        cached(&mut c),
        cached_before - 1,
        "the deleted token's key stays cached"
    );
    // Others pay on.
    assert_eq!(pay(&t, &mut c, &other), Some((true, "approved".into())));
    // A backup (a fresh file of the live records) holds no trace of it.
    let backup = t.env.path().join("after-delete.redb");
    c.op::<ops::BackupOp>(&ops::BackupArgs {
        path: backup.to_string_lossy().into_owned(),
    })
    .expect("backup");
    let copy = std::fs::read(&backup).expect("read the backup");
    assert!(
        contains(&file, &blob) && !contains(&copy, &blob),
        "the deleted token's blob is in the live records"
    );
    let uses = kek_use(&mut c);
    let visa = uses
        .iter()
        .find(|(s, v, _)| s == "visa" && *v == 1)
        .map(|u| u.2);
    assert_eq!(
        visa,
        Some(1),
        "the deleted token's key is still counted: {uses:?}"
    );
    // The record no longer holds the key: read the token table of the
    // stopped daemon's file.
    t.daemon = None;
    let db = redb::Database::open(t.env.db()).expect("open the database");
    let rtx = redb::ReadableDatabase::begin_read(&db).expect("read");
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tokens");
    let tokens_table = rtx.open_table(table).expect("tokens");
    let raw = redb::ReadableTable::get(&tokens_table, token_ref.as_str())
        .expect("get")
        .expect("the deleted token's record stays");
    let rec: vaultd::store::records::TokenRec =
        vaultd::store::records::decode("token", raw.value()).expect("decode");
    assert_eq!(rec.status, TokenStatus::Deleted);
    assert!(
        rec.key.is_none(),
        "the deleted token's record keeps its key"
    );
    assert!(rec.token_ct.is_empty());
    drop(raw);
    drop(tokens_table);
    drop(rtx);
    drop(db);
    // The key's clear value never was in the file, nor in the log. (The
    // live file may still hold the deleted record's old page, blob included,
    // until redb reuses it: wrapped under the KEK, which never leaves the
    // HSM. The backup above shows the live records hold none.)
    let file = std::fs::read(t.env.db()).expect("read the database file");
    assert!(
        !contains(&file, &clear),
        "a token key in clear in the database"
    );
    t.env.assert_absent_everywhere(&[&key_hex]);
}

/// A backup is the whole vault apart from the HSM's fixed keys: the host
/// is lost (database and HSM token gone), the token directory comes back
/// from a copy taken before any card was tokenized (the vault keys and
/// KEKs only, as an operator restores a real HSM from its own key backup),
/// the database from the backup. Every token is back, active; its next
/// payment waits for a fresh key (a restored database never issues an ATC
/// twice under one key) and is then approved.
#[test]
fn a_backup_and_the_hsms_fixed_keys_restore_every_token() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let fixed_keys = t.env.path().join("tokens-fixed-keys");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .expect("cp");
        assert!(st.success());
    };
    copy(&t.env.path().join("tokens"), &fixed_keys);
    let mut c = t.client();
    let tokens = provision(&t, &mut c, 3, 200);
    for (alias, _) in &tokens {
        assert_eq!(pay(&t, &mut c, alias), Some((true, "approved".into())));
    }
    let backup = t.env.path().join("backup.redb");
    c.op::<ops::BackupOp>(&ops::BackupArgs {
        path: backup.to_string_lossy().into_owned(),
    })
    .expect("backup");
    drop(c);
    assert!(t.daemon().terminate().success());
    t.daemon = None;

    // The host is lost.
    std::fs::remove_file(t.env.db()).expect("remove the database");
    std::fs::remove_dir_all(t.env.path().join("tokens")).expect("remove the HSM token");
    copy(&fixed_keys, &t.env.path().join("tokens"));
    let out = t
        .env
        .vaultd_cmd(&["restore", "--from", backup.to_str().expect("utf-8")]);
    assert!(out.contains("restored"), "{out}");
    t.restart();
    let mut c = t.client();
    for (alias, token_ref) in &tokens {
        let r = c
            .op::<ops::AliasStatus>(&ops::AliasArgs {
                alias: alias.clone(),
            })
            .expect("status");
        let ti = r.token_info.expect("token_info");
        assert_eq!(ti.status, TokenStatus::Active);
        assert_eq!(ti.token_ref.as_deref(), Some(token_ref.as_str()));
    }
    for (alias, token_ref) in &tokens {
        wait_for(&format!("{token_ref} pays again"), || {
            match pay(&t, &mut c, alias) {
                None => false,
                Some(r) => {
                    assert_eq!(r, (true, "approved".into()), "{token_ref}");
                    true
                }
            }
        });
    }
    let mut uses = kek_use(&mut c);
    uses.sort();
    let mut want: Vec<_> = SCHEMES.iter().map(|(s, _)| (s.to_string(), 1, 3)).collect();
    want.sort();
    assert_eq!(uses, want);
}

/// KEK rotation's second half: `kek_refresh` queues a key refresh for the
/// tokens whose stored key is under a KEK version (once each, however
/// often it is asked), their next payments use the fresh key from ATC 1,
/// and the version is not retired while stored keys use it.
#[test]
fn kek_refresh_gives_a_versions_tokens_fresh_keys_and_retire_waits_for_it() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let tokens = provision(&t, &mut c, 2, 400);
    for (alias, _) in &tokens {
        assert_eq!(pay(&t, &mut c, alias), Some((true, "approved".into())));
    }
    let refresh = |c: &mut BlockingClient, scheme: &str, version| {
        c.op::<ops::KekRefresh>(&ops::KekRefreshArgs {
            scheme: scheme.into(),
            version,
        })
    };
    c.op::<ops::SchemePause>(&ops::SchemeArgs {
        scheme: "visa".into(),
    })
    .expect("pause");
    assert_eq!(refresh(&mut c, "visa", 1).expect("refresh").queued, 2);
    assert_eq!(
        refresh(&mut c, "visa", 1).expect("again").queued,
        0,
        "queued once"
    );
    assert_eq!(refresh(&mut c, "visa", 7).expect("no such").queued, 0);
    let err = refresh(&mut c, "diners", 1).expect_err("unknown scheme");
    assert_eq!(err.code(), Some(vault_proto::ErrorCode::BadRequest));
    c.op::<ops::SchemeResume>(&ops::SchemeArgs {
        scheme: "visa".into(),
    })
    .expect("resume");
    t.wait_queue_empty(&mut c, LONG);
    let atc = |c: &mut BlockingClient, alias: &str| match c
        .op::<CredentialsOp>(&cit(alias, "t-a"))
        .expect("credentials")
    {
        Credentials::NetworkToken { atc, .. } => atc.expect("atc"),
        other => panic!("expected a token, got {other:?}"),
    };
    // visa's two tokens start again with their fresh keys; the others go on.
    let atcs: Vec<u16> = tokens.iter().map(|(a, _)| atc(&mut c, a)).collect();
    assert_eq!(&atcs[..2], &[1, 1], "{atcs:?}");
    assert!(atcs[2..].iter().all(|a| *a == 2), "{atcs:?}");
    for (alias, _) in &tokens {
        assert_eq!(pay(&t, &mut c, alias), Some((true, "approved".into())));
    }
    // The trail names the refresh and its count.
    let audit = c
        .op::<ops::AuditOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.op == "kek_refresh" && r.outcome.contains("2 key refreshes queued")),
        "no kek_refresh audit record"
    );
    drop(c);
    // The KEK version its keys are under is not retired.
    t.daemon = None;
    let out = std::process::Command::new(vault_e2e::bin_dir().join("vaultd"))
        .arg("--config")
        .arg(t.env.config_path())
        .args(["keys", "retire-kek", "--scheme", "visa", "--version", "1"])
        .env("SOFTHSM2_CONF", t.env.softhsm_conf())
        .output()
        .expect("vaultd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 stored token keys") && err.contains("kek-refresh"),
        "{err}"
    );
}

/// Idempotency keys are unique per provisioning (issue 23): after a
/// restore the job counter goes back, yet a new card provisions (with the
/// job id as key it reused an earlier card's key: the scheme refused it
/// for good); and a card deleted and tokenized again by a tenant that
/// keeps no PAN gets a new token, not the deleted one with its spent ATCs.
#[test]
fn idempotency_keys_never_repeat_across_a_restore_or_a_new_tokenize() {
    let mut t = TokenEnv::start(TokenOpts {
        tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\n\
                  [[tenant]]\nid = \"t-none\"\nnetwork_tokens = true\npan_retention = \"none\"\n",
        clients: "[[client]]\nname = \"shop-none\"\nuid = 1306\ntenant = \"t-none\"\nroles = [\"merchant\"]\n",
        ..TokenOpts::default()
    });
    let mut c = t.client();
    let first = provision(&t, &mut c, 1, 500);
    let backup = t.env.path().join("idem-backup.redb");
    c.op::<ops::BackupOp>(&ops::BackupArgs {
        path: backup.to_string_lossy().into_owned(),
    })
    .expect("backup");
    // Jobs after the backup: their ids come again after the restore.
    let later = provision(&t, &mut c, 1, 600);
    drop(c);
    assert!(t.daemon().terminate().success());
    t.daemon = None;
    t.env
        .vaultd_cmd(&["restore", "--from", backup.to_str().expect("utf-8")]);
    t.restart();
    let mut c = t.client();
    let again = provision(&t, &mut c, 1, 700);
    let refs: BTreeSet<&str> = first
        .iter()
        .chain(&later)
        .chain(&again)
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(refs.len(), 12, "every card its own token");

    // A tenant that keeps no PAN: delete and tokenize again.
    let sock = t.env.socket();
    let as_shop = |f: Box<dyn FnOnce(&mut BlockingClient) -> ops::TokenizeResult + Send>| {
        let sock = sock.clone();
        vault_e2e::as_uid(1306, move || {
            let mut c = BlockingClient::connect(sock).expect("connect");
            f(&mut c)
        })
    };
    let card = pan("4", 800);
    let p = card.clone();
    let r1 = as_shop(Box::new(move |c| tokenize(c, &p, 12, 2031)));
    let ti1 = r1.record.token_info.clone().expect("token_info");
    assert_eq!(ti1.status, TokenStatus::Active);
    let alias1 = r1.record.alias.clone();
    as_shop(Box::new(move |c| {
        c.op::<ops::DeleteAlias>(&ops::AliasArgs { alias: alias1 })
            .expect("delete");
        r1
    }));
    let p = card.clone();
    let r2 = as_shop(Box::new(move |c| tokenize(c, &p, 12, 2031)));
    let ti2 = r2.record.token_info.expect("token_info");
    assert_eq!(ti2.status, TokenStatus::Active);
    assert_ne!(
        ti2.token_ref, ti1.token_ref,
        "the deleted card's token came back"
    );
}
