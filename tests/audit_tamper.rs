//! The audit trail against someone who edits the database while vaultd is
//! stopped (issue 23): records and seals cut after some seal, records
//! rewritten with every seal deleted, a record rewritten under the seals
//! that cover it. Each is found at the next start (the daemon serves on,
//! `health` and `audit` say the chain is broken, new seals never vouch
//! for the broken range, until `vaultd audit acknowledge`) and by the
//! offline verifier (`vaultd audit verify`: non-zero exit, the first bad
//! record named). An untouched vault verifies clean, offline and after
//! restarts. Real vaultd processes, SoftHSM2, the redb file edited on disk
//! with the `redb` crate.

use std::process::{Command, Output};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use vault_e2e::{ROOT_MERCHANT_T_A, TestEnv, Vaultd, bin_dir, pan, tokenize};
use vault_proto::BlockingClient;
use vault_proto::ops::{self, NoArgs, PageArgs};
use vaultd::store::audit::{Seal, SealKind, chain, split};
use vaultd::store::records::{AuditRec, decode, encode};

/// vaultd's tables (`vaultd/src/store/mod.rs`): seq → record ‖ chain hash,
/// and seq → seal.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const SEALS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_seals");

fn env() -> TestEnv {
    let env = TestEnv::new();
    env.write_config("", ROOT_MERCHANT_T_A);
    env
}

/// `n` new cards tokenized (numbers `from..from + n`), then the trail read
/// (which seals it): each round ends on a seal of its own.
fn round(c: &mut BlockingClient, from: u64, n: u64) -> Vec<String> {
    let pans: Vec<String> = (from..from + n).map(|i| pan("4111", i)).collect();
    for p in &pans {
        assert!(tokenize(c, p, 12, 2031).created);
    }
    audit(c);
    pans
}

/// The newest page of the trail (at most 1000 records).
fn audit(c: &mut BlockingClient) -> ops::Audit {
    c.op::<ops::AuditOp>(&PageArgs {
        after: None,
        limit: 1000,
    })
    .expect("audit")
}

fn health(c: &mut BlockingClient) -> ops::Health {
    c.op::<ops::HealthOp>(&NoArgs {}).expect("health")
}

/// `vaultd <args>`, whatever its exit status.
fn vaultd(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(bin_dir().join("vaultd"))
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .env("SOFTHSM2_CONF", env.softhsm_conf())
        .output()
        .expect("run vaultd")
}

/// `vaultd audit verify`: Ok(stdout) when it passes, Err(stdout, stderr)
/// when it does not.
fn verify(env: &TestEnv) -> Result<String, (String, String)> {
    let out = vaultd(env, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err((stdout, stderr))
    }
}

/// Asserts that the offline verifier fails and names `first_bad`.
fn assert_verify_names(env: &TestEnv, first_bad: u64) {
    match verify(env) {
        Ok(out) => panic!("the offline verifier passed a tampered trail:\n{out}"),
        Err((out, err)) => assert!(
            err.contains(&format!("first bad record {first_bad}\n")),
            "the verifier named another record (want {first_bad}):\n{out}\n{err}"
        ),
    }
}

fn acknowledge(env: &TestEnv, reason: &str) -> String {
    env.vaultd_cmd(&["audit", "acknowledge", "--reason", reason])
}

/// Every record (seq, body, stored hash) and every seal (seq, seal).
type Trail = (Vec<(u64, Vec<u8>, [u8; 32])>, Vec<(u64, Seal)>);

fn read_trail(env: &TestEnv) -> Trail {
    let db = redb::Database::open(env.db()).expect("open the stopped vault's database");
    let r = db.begin_read().unwrap();
    let records = r
        .open_table(AUDIT)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            let (body, h) = split(v.value()).unwrap();
            (k.value(), body.to_vec(), h)
        })
        .collect();
    let seals = r
        .open_table(SEALS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (k.value(), Seal::decode(v.value()).unwrap())
        })
        .collect();
    (records, seals)
}

/// Runs `f` in one write transaction on the stopped vault's database.
fn edit(env: &TestEnv, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(env.db()).expect("open the stopped vault's database");
    let w = db.begin_write().unwrap();
    f(&w);
    w.commit().unwrap();
}

/// Rewrites record `seq` with `change` and recomputes every chain hash from
/// it on, as someone who knows the layout would (the seals they cannot
/// recompute).
fn rewrite_record(env: &TestEnv, seq: u64, change: impl FnOnce(&mut AuditRec)) {
    let (records, _) = read_trail(env);
    let mut change = Some(change);
    edit(env, |w| {
        let mut t = w.open_table(AUDIT).unwrap();
        let mut h = records
            .iter()
            .find(|r| r.0 == seq - 1)
            .map_or([0u8; 32], |r| r.2);
        for (s, body, _) in records.iter().filter(|r| r.0 >= seq) {
            let body = if *s == seq {
                let mut rec: AuditRec = decode("audit", body).unwrap();
                (change.take().expect("one record"))(&mut rec);
                encode(&rec).unwrap()
            } else {
                body.clone()
            };
            h = chain(&h, &body);
            let mut stored = body;
            stored.extend_from_slice(&h);
            t.insert(*s, stored.as_slice()).unwrap();
        }
    });
}

/// While the break is not acknowledged: the daemon serves, `health` and
/// `audit` report it, and every seal it makes is a `Broken` one that does
/// not vouch for `from..=to`.
fn assert_reported_broken(env: &TestEnv, c: &mut BlockingClient, from: u64) {
    let h = health(c);
    assert!(
        h.store
            .contains(&format!("audit chain broken from record {from} ")),
        "health does not report the broken chain: {h:?}"
    );
    assert!(h.ready, "the vault serves on with a broken chain: {h:?}");
    assert!(!audit(c).chain_ok, "audit reports a broken chain as intact");
    assert!(
        env.log().contains("AUDIT CHAIN BROKEN"),
        "no loud error in the log"
    );
}

/// The seals made since `after` are `Broken` ones starting at `from`.
fn assert_seals_broken_since(env: &TestEnv, after: u64, from: u64) {
    let (_, seals) = read_trail(env);
    let new: Vec<_> = seals.iter().filter(|(s, _)| *s > after).collect();
    assert!(!new.is_empty(), "no seal since {after}");
    for (s, seal) in new {
        match seal.link.map(|l| l.kind) {
            Some(SealKind::Broken { from: f, .. }) => assert_eq!(f, from, "seal at {s}"),
            other => panic!("the seal at {s} vouches for the broken range: {other:?}"),
        }
    }
}

/// After `vaultd audit acknowledge`: the offline check passes (the break
/// listed as acknowledged), and a start seals normally and reports an
/// intact chain for the newest records.
fn assert_acknowledged(env: &TestEnv, from: u64) {
    let out = acknowledge(env, "investigated in TICKET-23");
    assert!(
        out.contains(&format!("acknowledged records {from} to ")),
        "{out}"
    );
    let v = verify(env).unwrap_or_else(|(o, e)| panic!("after acknowledge: {o}\n{e}"));
    assert!(v.contains("acknowledged (seal at "), "{v}");
    assert!(v.contains("chain OK"), "{v}");
    let again = acknowledge(env, "twice");
    assert!(again.contains("nothing to acknowledge"), "{again}");

    let d = Vaultd::spawn(env);
    let mut c = env.client();
    let h = health(&mut c);
    assert_eq!(h.store, "ok", "{h:?}");
    // New cards (numbers no earlier round used).
    round(&mut c, 10_000 + from * 10, 3);
    // The acknowledgement and the records after it verify; a page that
    // includes records of the acknowledged range stays unverified.
    let ack_seq: u64 = out
        .split("in audit record ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record seq in {out}"));
    let a = c
        .op::<ops::AuditOp>(&PageArgs {
            after: Some(ack_seq - 1),
            limit: 1000,
        })
        .expect("audit");
    assert!(a.chain_ok, "the records from the acknowledgement on");
    let to: u64 = out
        .split(&format!("acknowledged records {from} to "))
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no range in {out}"));
    if from <= to {
        let broken = c
            .op::<ops::AuditOp>(&PageArgs {
                after: Some(from - 1),
                limit: 1000,
            })
            .expect("audit");
        assert!(!broken.chain_ok, "a page with records of the broken range");
    }
    assert!(
        a.records.iter().any(|r| r.op == "audit_acknowledge"
            && r.outcome.contains("reason: investigated in TICKET-23")),
        "the acknowledgement is in the trail: {:?}",
        a.records
    );
    drop(c);
    stop(d);
    let (_, seals) = read_trail(env);
    let (s, last) = seals.last().unwrap();
    assert_eq!(
        last.link.map(|l| l.kind),
        Some(SealKind::Normal),
        "the seal at {s} after the acknowledgement"
    );
}

fn stop(mut d: Vaultd) {
    assert!(d.terminate().success(), "vaultd did not stop cleanly");
}

#[test]
fn an_untouched_vault_verifies_offline_and_after_restarts() {
    let env = env();
    let d = env.start();
    let mut c = env.client();
    let mut pans = round(&mut c, 0, 30);
    // A refusal is a record too.
    assert!(
        c.op::<ops::Tokenize>(&ops::TokenizeArgs {
            pan: vault_proto::Pan::new("4111111111111112".into()),
            exp_month: 12,
            exp_year: 2031,
            transaction_id: None,
        })
        .is_err()
    );
    pans.extend(round(&mut c, 30, 30));
    let h = health(&mut c);
    assert_eq!(h.store, "ok");

    // The offline verifier refuses while vaultd runs.
    let out = vaultd(&env, &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(c);
    stop(d);
    let v = verify(&env).unwrap_or_else(|(o, e)| panic!("an untouched trail: {o}\n{e}"));
    assert!(v.contains("chain OK"), "{v}");
    assert!(!v.contains("BROKEN"), "{v}");

    // Every record and every seal went to the log too, without card data.
    let (records, seals) = read_trail(&env);
    let log = env.log();
    for (seq, body, _) in &records {
        let rec: AuditRec = decode("audit", body).unwrap();
        assert!(
            log.lines().any(|l| l.contains("audit record")
                && l.contains(&format!(" seq={seq} "))
                && l.contains(&format!("op={}", rec.op))),
            "record {seq} ({}) is not in the log",
            rec.op
        );
    }
    for (seq, seal) in &seals {
        let mac: String = seal.tag().iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            log.lines().any(|l| l.contains("audit seal")
                && l.contains(&format!(" seq={seq} "))
                && l.contains(&format!("mac={mac}"))
                && l.contains("key_version=1")),
            "seal {seq} is not in the log"
        );
    }
    let pan_refs: Vec<&str> = pans.iter().map(String::as_str).collect();
    env.assert_absent_everywhere(&pan_refs);

    // A restart: still intact; then a crash leaves an unsealed tail, which
    // the next start checks and seals.
    let mut d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_eq!(health(&mut c).store, "ok");
    assert!(audit(&mut c).chain_ok);
    for i in 100..105 {
        tokenize(&mut c, &pan("4111", i), 12, 2031);
    }
    drop(c);
    d.kill9();
    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_eq!(health(&mut c).store, "ok");
    let a = audit(&mut c);
    assert!(a.chain_ok);

    // `vaultctl audit` shows the newest records by default.
    let newest = a.records.last().unwrap().seq;
    assert!(
        newest > 60,
        "enough records for a default page not to hold them all"
    );
    let out = Command::new(bin_dir().join("vaultctl"))
        .arg("--socket")
        .arg(env.socket())
        .args(["--json", "audit"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown: ops::Audit = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown.chain_ok);
    assert_eq!(shown.records.len(), 50);
    assert!(
        shown.records.last().unwrap().seq >= newest,
        "vaultctl audit showed records up to {} of {newest}",
        shown.records.last().unwrap().seq
    );
    drop(c);
    stop(d);
    let v = verify(&env).unwrap_or_else(|(o, e)| panic!("after a crash and restart: {o}\n{e}"));
    assert!(v.contains("chain OK"), "{v}");
}

#[test]
fn records_and_seals_cut_after_a_seal_are_found_at_start_and_offline() {
    let env = env();
    let d = env.start();
    let mut c = env.client();
    for r in 0..4 {
        round(&mut c, r * 5, 5);
    }
    drop(c);
    stop(d);
    verify(&env).expect("intact before the cut");

    // Cut after the second-newest seal but one: records and seals after it go.
    let (records, seals) = read_trail(&env);
    assert!(seals.len() >= 4, "{} seals", seals.len());
    let cut = seals[seals.len() - 3].0;
    let removed_seal = seals.last().unwrap().0;
    let newest = records.last().unwrap().0;
    edit(&env, |w| {
        let mut a = w.open_table(AUDIT).unwrap();
        let mut s = w.open_table(SEALS).unwrap();
        for seq in cut + 1..=newest {
            a.remove(seq).unwrap();
            s.remove(seq).unwrap();
        }
    });
    // The database alone now looks like a vault stopped at `cut`; the log
    // still has the seals that went.
    assert!(
        env.log()
            .lines()
            .any(|l| l.contains("audit seal") && l.contains(&format!(" seq={removed_seal} "))),
        "the removed newest seal is in the log"
    );
    assert_verify_names(&env, cut + 1);

    // The daemon finds it at start, serves on, and reports it.
    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_reported_broken(&env, &mut c, cut + 1);
    tokenize(&mut c, &pan("4111", 500), 12, 2031);
    assert!(!audit(&mut c).chain_ok);
    drop(c);
    stop(d);
    assert_seals_broken_since(&env, cut, cut + 1);
    // The break is in the trail now, sealed: the offline check still names it.
    assert_verify_names(&env, cut + 1);

    // A restart does not forget it.
    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_reported_broken(&env, &mut c, cut + 1);
    drop(c);
    stop(d);

    assert_acknowledged(&env, cut + 1);
}

#[test]
fn records_rewritten_with_every_seal_deleted_are_found_at_start_and_offline() {
    let env = env();
    let d = env.start();
    let mut c = env.client();
    for r in 0..3 {
        round(&mut c, r * 5, 5);
    }
    drop(c);
    stop(d);

    // Someone rewrites who tokenized record 7, recomputes every hash after
    // it, and deletes every seal, which they cannot recompute.
    let (records, _) = read_trail(&env);
    let target = records
        .iter()
        .find(|(s, b, _)| {
            *s >= 7 && decode::<AuditRec>("audit", b).is_ok_and(|r| r.op == "tokenize")
        })
        .map(|r| r.0)
        .expect("a tokenize record");
    rewrite_record(&env, target, |r| {
        r.client = "someone-else".into();
        r.uid = 4242;
    });
    edit(&env, |w| {
        let mut s = w.open_table(SEALS).unwrap();
        let keys: Vec<u64> = s.iter().unwrap().map(|i| i.unwrap().0.value()).collect();
        for k in keys {
            s.remove(k).unwrap();
        }
    });
    // No seal is left to vouch for any record: the first bad one is 1.
    assert_verify_names(&env, 1);

    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_reported_broken(&env, &mut c, 1);
    drop(c);
    stop(d);
    assert_seals_broken_since(&env, 0, 1);
    assert_verify_names(&env, 1);
    assert_acknowledged(&env, 1);
}

#[test]
fn a_record_rewritten_under_its_seals_is_found_at_start_and_offline() {
    let env = env();
    let d = env.start();
    let mut c = env.client();
    for r in 0..4 {
        round(&mut c, r * 5, 5);
    }
    drop(c);
    stop(d);

    // An edit in the middle, every later hash recomputed, the seals left:
    // every seal after the edit fails, the one before it holds.
    let (records, seals) = read_trail(&env);
    let target = records[records.len() / 2].0;
    let before = seals
        .iter()
        .rev()
        .find(|(s, _)| *s < target)
        .map_or(0, |(s, _)| *s);
    rewrite_record(&env, target, |r| r.outcome = "nothing happened".into());
    assert_verify_names(&env, before + 1);

    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_reported_broken(&env, &mut c, before + 1);
    drop(c);
    stop(d);
    let newest_old_seal = seals.last().unwrap().0;
    assert_seals_broken_since(&env, newest_old_seal, before + 1);
    assert_verify_names(&env, before + 1);
    assert_acknowledged(&env, before + 1);
}

#[test]
fn a_seal_removed_between_two_others_or_a_deleted_head_is_a_break() {
    let env = env();
    let d = env.start();
    let mut c = env.client();
    for r in 0..4 {
        round(&mut c, r * 5, 5);
    }
    drop(c);
    stop(d);

    // A seal in the middle goes: the next one names it.
    let (_, seals) = read_trail(&env);
    let (gone, before) = (seals[2].0, seals[1].0);
    edit(&env, |w| {
        w.open_table(SEALS).unwrap().remove(gone).unwrap();
    });
    assert_verify_names(&env, before + 1);
    assert_acknowledged(&env, before + 1);

    // The audit head file deleted: the newest seals could have gone with it.
    let (_, seals) = read_trail(&env);
    let newest = seals.last().unwrap().0;
    std::fs::remove_file(vaultd::store::audit::head_path(&env.db())).unwrap();
    assert_verify_names(&env, newest + 1);
    let d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_reported_broken(&env, &mut c, newest + 1);
    drop(c);
    stop(d);
    assert_acknowledged(&env, newest + 1);
}
