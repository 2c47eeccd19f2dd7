//! Key lifecycle end to end: PAN key rotation under load with background
//! re-encryption and retirement, a SIGKILL in the middle of re-encryption,
//! backup under write load and restore, and the audit chain across audit
//! key rotations. Real vaultd processes on a SoftHSM2 token.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vault_e2e::{
    CEILING, TestEnv, Vaultd, bin_dir, ceiling_for, pan, tokenize, wait_for, wait_for_state,
};
use vault_proto::BlockingClient;
use vault_proto::ops::{
    self, AliasArgs, BackupArgs, CredentialKind, Credentials, CredentialsArgs, Initiator,
    KeyRetireArgs, KeyRotateArgs, NoArgs, PageArgs,
};

/// Tenant `t-a` keeps PANs; the test process (uid 0) is its merchant,
/// admin, and forwarder for every tenant.
fn env(keys: &str) -> TestEnv {
    let env = TestEnv::new();
    write_config(&env, keys);
    env
}

/// (Re)writes `env`'s config with `keys` in the `[keys]` table.
fn write_config(env: &TestEnv, keys: &str) {
    env.write_config(
        "",
        &format!(
            "[keys]\n{keys}\n[[tenant]]\nid = \"t-a\"\n\
             [[client]]\nname = \"root\"\nuid = 0\ntenant = \"t-a\"\ntenants = [\"*\"]\n\
             roles = [\"merchant\", \"admin\", \"forwarder\"]\n"
        ),
    );
}

/// Tokenizes `n` new cards (numbers `from..from + n`); alias → PAN.
fn fill(c: &mut BlockingClient, from: u64, n: u64) -> HashMap<String, String> {
    (from..from + n)
        .map(|i| {
            let p = pan("4111", i);
            let r = tokenize(c, &p, 12, 2031);
            assert!(r.created);
            (r.record.alias, p)
        })
        .collect()
}

fn pan_of(c: &mut BlockingClient, alias: &str) -> Result<String, String> {
    let r = c
        .op::<ops::CredentialsOp>(&CredentialsArgs {
            alias: alias.to_owned(),
            tenant: "t-a".into(),
            accept: vec![CredentialKind::Pan],
            initiator: Initiator::Merchant,
            amount_minor: 100,
            currency: "CHF".into(),
            authenticated_eci: None,
        })
        .map_err(|e| format!("{:?}", e.code()))?;
    match r {
        Credentials::Pan { pan, .. } => Ok(pan.expose().to_owned()),
        Credentials::NetworkToken { .. } => Err("network token instead of PAN".into()),
    }
}

/// Every alias answers `credentials` with its own PAN.
fn assert_all_pans(c: &mut BlockingClient, cards: &HashMap<String, String>) {
    for (alias, want) in cards {
        let got = pan_of(c, alias).unwrap_or_else(|e| panic!("credentials for an alias: {e}"));
        assert!(&got == want, "an alias answered with another PAN");
    }
}

fn key_stats(c: &mut BlockingClient) -> ops::KeyStats {
    c.op::<ops::StatsOp>(&NoArgs {})
        .expect("stats")
        .keys
        .expect("stats.keys")
}

fn retire(c: &mut BlockingClient, version: u32) -> Result<ops::KeyRetireResult, String> {
    c.op::<ops::KeyRetire>(&KeyRetireArgs { version })
        .map_err(|e| e.code().map(|c| c.as_str().to_owned()).unwrap_or_default())
}

/// Retires `version` once re-encryption let it (polling), or panics
/// after [`CEILING`].
fn retire_when_done(c: &mut BlockingClient, version: u32) {
    let r = wait_for_state(CEILING, "re-encryption to let the old key go", || {
        retire(c, version).map_err(|code| {
            assert_eq!(code, "bad_request", "only refused while in use");
            format!("{:?}", key_stats(c))
        })
    })
    .0;
    assert!(r.destroyed, "the key existed");
}

/// The PAN key version of every non-empty slot in the slot file.
fn slot_versions(env: &TestEnv) -> HashMap<u32, usize> {
    let bytes = std::fs::read(env.path().join("vault.redb.pans")).expect("slot file");
    let mut out = HashMap::new();
    for slot in bytes.chunks(64) {
        if slot[0] != 0 {
            let v = u32::from_be_bytes([slot[1], slot[2], slot[3], slot[4]]);
            *out.entry(v).or_insert(0) += 1;
        }
    }
    out
}

fn vaultd_raw(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("vaultd"))
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .env("SOFTHSM2_CONF", env.softhsm_conf())
        .output()
        .expect("run vaultd")
}

#[test]
fn rotation_under_load_loses_nothing_and_the_old_key_can_be_retired() {
    let env =
        env("reencrypt_batch = 100\nreencrypt_pause = \"10ms\"\nrefresh_interval = \"200ms\"");
    let _d = env.start();
    let mut c = env.client();
    let cards = Arc::new(fill(&mut c, 0, 400));
    assert_eq!(key_stats(&mut c).pan_key_version, 1);

    // Two writers and two readers: the key rotates once they are under
    // way, and they go on until the 400 cards are re-encrypted and they
    // have done as much again after the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (stop, done, cards, socket) = (stop.clone(), done.clone(), cards.clone(), env.socket());
        workers.push(std::thread::spawn(move || {
            let mut c = BlockingClient::connect(&socket).expect("connect");
            let aliases: Vec<&String> = cards.keys().collect();
            let (mut made, mut failures, mut i) = (HashMap::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if w < 2 {
                    let p = pan("4111", 100_000 * (w + 1) + i);
                    match c.op::<ops::Tokenize>(&ops::TokenizeArgs {
                        pan: vault_proto::Pan::new(p.clone()),
                        exp_month: 12,
                        exp_year: 2031,
                        transaction_id: None,
                    }) {
                        Ok(r) => {
                            made.insert(r.record.alias, p);
                        }
                        Err(_) => failures += 1,
                    }
                } else {
                    let alias = aliases[(i as usize * 7 + w as usize) % aliases.len()];
                    match pan_of(&mut c, alias) {
                        Ok(p) if &p == cards.get(alias).expect("known") => {}
                        _ => failures += 1,
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (made, failures)
        }));
    }
    let ops_done = || done.load(Ordering::Relaxed);
    wait_for(CEILING, "the load to get under way", || ops_done() >= 200);
    let r = c
        .op::<ops::KeyRotate>(&KeyRotateArgs { key: None })
        .expect("key_rotate");
    let at_rotation = ops_done();
    assert_eq!((r.key.as_str(), r.version), ("pan", 2));
    assert_eq!(
        key_stats(&mut c).pan_key_version,
        2,
        "new writes use v2 at once"
    );
    wait_for(CEILING, "the 400 cards re-encrypted under load", || {
        key_stats(&mut c).reencrypted >= 400
    });
    wait_for(CEILING, "as much load again after the rotation", || {
        ops_done() >= 2 * at_rotation
    });
    stop.store(true, Ordering::Relaxed);
    let mut all: HashMap<String, String> = (*cards).clone();
    for w in workers {
        let (made, failures) = w.join().expect("worker");
        assert_eq!(failures, 0, "a request failed during rotation");
        all.extend(made);
    }
    assert!(all.len() > 400, "the writers wrote");

    retire_when_done(&mut c, 1);
    let k = key_stats(&mut c);
    assert_eq!(k.reencrypt_remaining, 0);
    assert!(k.reencrypted >= 400, "re-encrypted {}", k.reencrypted);
    assert_all_pans(&mut c, &all);
    // Old ciphertexts were zeroed, not just unreferenced.
    let versions = slot_versions(&env);
    assert_eq!(
        versions.get(&1),
        None,
        "a v1 ciphertext is left in the slot file"
    );
    assert_eq!(versions.get(&2).copied(), Some(all.len()));
    let keys = env.vaultd_cmd(&["keys", "list"]);
    assert!(!keys.contains("vault.pan.v1 "), "{keys}");
    assert!(keys.contains("vault.pan.v2 "), "{keys}");
    // The newest key is never retired.
    assert_eq!(retire(&mut c, 2).err().as_deref(), Some("bad_request"));
    let audit = c
        .op::<ops::AuditOp>(&PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    assert!(audit.chain_ok);
}

#[test]
fn re_encryption_resumes_after_sigkill() {
    // Slow re-encryption before the kill (60 batches, at least 12 s), so
    // the kill lands in the middle however late the test gets to it; fast
    // after the restart.
    let env =
        env("reencrypt_batch = 20\nreencrypt_pause = \"200ms\"\nrefresh_interval = \"200ms\"");
    let mut d = env.start();
    let mut c = env.client();
    let cards = fill(&mut c, 0, 1200);
    c.op::<ops::KeyRotate>(&KeyRotateArgs { key: None })
        .expect("key_rotate");
    wait_for(CEILING, "re-encryption under way", || {
        key_stats(&mut c).reencrypted >= 20
    });
    assert_eq!(
        retire(&mut c, 1).err().as_deref(),
        Some("bad_request"),
        "v1 is still in use"
    );
    d.kill9();
    let versions = slot_versions(&env);
    assert!(
        versions.get(&1).copied().unwrap_or(0) > 0 && versions.get(&2).copied().unwrap_or(0) > 0,
        "killed in the middle: {versions:?}"
    );

    write_config(
        &env,
        "reencrypt_batch = 20\nreencrypt_pause = \"10ms\"\nrefresh_interval = \"200ms\"",
    );
    let _d = Vaultd::spawn(&env);
    let mut c = env.client();
    retire_when_done(&mut c, 1);
    assert_all_pans(&mut c, &cards);
    let s = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    assert_eq!(s.aliases, 1200);
    assert_eq!(s.pans_retained, 1200);
    assert_eq!(slot_versions(&env).get(&2).copied(), Some(1200));
}

#[test]
fn a_backup_under_write_load_restores_every_acknowledged_alias() {
    let env = env("");
    let mut d = env.start();
    let mut c = env.client();
    let kept = Arc::new(Mutex::new(fill(&mut c, 0, 300)));

    // A writer that keeps creating aliases and deleting others (freeing
    // PAN slots) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, kept, socket) = (stop.clone(), kept.clone(), env.socket());
        std::thread::spawn(move || {
            let mut c = BlockingClient::connect(&socket).expect("connect");
            let mut i = 1_000u64;
            while !stop.load(Ordering::Relaxed) {
                i += 2;
                let p = pan("5555", i);
                let r = tokenize(&mut c, &p, 11, 2030);
                kept.lock().expect("lock").insert(r.record.alias, p);
                let gone = tokenize(&mut c, &pan("5555", i + 1), 11, 2030);
                c.op::<ops::DeleteAlias>(&AliasArgs {
                    alias: gone.record.alias,
                })
                .expect("delete");
            }
        })
    };
    let written = || kept.lock().expect("lock").len();
    wait_for(CEILING, "the writer to get under way", || written() >= 320);
    let acknowledged = kept.lock().expect("lock").clone();
    let dir = env.path().join("backups");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.join("vault-backup.redb");
    let r = c
        .op::<ops::BackupOp>(&BackupArgs {
            path: path.to_string_lossy().into_owned(),
        })
        .expect("backup");
    assert!(r.aliases as usize >= acknowledged.len());
    assert_eq!(r.pans, r.aliases, "every alias keeps its PAN");
    // Writes went on after the backup too (not in it).
    let at_backup = r.aliases as usize;
    wait_for(CEILING, "writes after the backup", || {
        written() >= at_backup + 20
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    // A second backup to the same name is refused, not overwritten.
    let again = c.op::<ops::BackupOp>(&BackupArgs {
        path: path.to_string_lossy().into_owned(),
    });
    assert_eq!(
        again.err().and_then(|e| e.code()).map(|c| c.as_str()),
        Some("bad_request")
    );

    // Restore refuses while the daemon runs.
    let running = vaultd_raw(&env, &["restore", "--from", path.to_str().expect("utf-8")]);
    assert!(!running.status.success());
    assert!(d.terminate().success());
    let out = env.vaultd_cmd(&["restore", "--from", path.to_str().expect("utf-8")]);
    assert!(out.contains(&format!("{} aliases", r.aliases)), "{out}");

    let _d = Vaultd::spawn(&env);
    let mut c = env.client();
    let s = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    assert_eq!(s.aliases, r.aliases, "the restored vault is the backup");
    for alias in acknowledged.keys() {
        c.op::<ops::AliasStatus>(&AliasArgs {
            alias: alias.clone(),
        })
        .expect("an acknowledged alias is in the restored vault");
    }
    assert_all_pans(&mut c, &acknowledged);
    let audit = c
        .op::<ops::AuditOp>(&PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    assert!(audit.chain_ok, "the restored audit trail verifies");
}

fn audit_all(c: &mut BlockingClient) -> ops::Audit {
    let a = c
        .op::<ops::AuditOp>(&PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    assert!(a.records.len() < 1000, "one page holds the trail");
    a
}

#[test]
fn the_audit_chain_verifies_across_audit_key_rotations() {
    let env = env("refresh_interval = \"200ms\"");
    let mut d = env.start();
    let mut c = env.client();
    fill(&mut c, 0, 5);
    assert_eq!(key_stats(&mut c).audit_key_version, 1);

    // Rotated outside the daemon: picked up by a refresh (every 200 ms).
    let out = env.vaultd_cmd(&["keys", "rotate-audit"]);
    assert!(out.contains("vault.audit.v2"), "{out}");
    wait_for(
        ceiling_for(Duration::from_millis(200)),
        "the daemon to pick up audit key v2",
        || key_stats(&mut c).audit_key_version == 2,
    );
    fill(&mut c, 100, 5);
    // And through the daemon, at once.
    let r = c
        .op::<ops::KeyRotate>(&KeyRotateArgs {
            key: Some("audit".into()),
        })
        .expect("key_rotate audit");
    assert_eq!(r.version, 3);
    assert_eq!(key_stats(&mut c).audit_key_version, 3);
    fill(&mut c, 200, 5);

    let a = audit_all(&mut c);
    assert!(a.chain_ok, "chain over seals made by three audit keys");
    let tokenized = a.records.iter().filter(|r| r.op == "tokenize").count();
    assert_eq!(
        tokenized, 15,
        "records from before and after both rotations"
    );
    assert!(a.records.iter().any(|r| r.op == "key_rotate"));

    // A fresh process finds every audit key version and still verifies.
    assert!(d.terminate().success());
    let _d = Vaultd::spawn(&env);
    let mut c = env.client();
    assert_eq!(key_stats(&mut c).audit_key_version, 3);
    fill(&mut c, 300, 2);
    assert!(audit_all(&mut c).chain_ok);
    let keys = env.vaultd_cmd(&["keys", "list"]);
    for label in ["vault.audit ", "vault.audit.v2 ", "vault.audit.v3 "] {
        assert!(keys.contains(label), "{label} kept: {keys}");
    }
    // An unknown key kind is refused.
    let bad = c.op::<ops::KeyRotate>(&KeyRotateArgs {
        key: Some("fp".into()),
    });
    assert_eq!(
        bad.err().and_then(|e| e.code()).map(|c| c.as_str()),
        Some("bad_request")
    );
}

/// Once a pass found every ciphertext under the newest PAN key, a restart
/// does not read every alias again to find it out (that pass takes
/// seconds with a million aliases and held the stop until done); after a
/// rotation it does.
#[test]
fn a_clean_pass_is_remembered_across_restarts_until_the_next_rotation() {
    let env = env("refresh_interval = \"200ms\"");
    let mut d = env.start();
    let mut c = env.client();
    fill(&mut c, 0, 50);
    const PASS: &str = "every ciphertext is under the newest PAN key";
    const REMEMBERED: &str = "every ciphertext was under the newest PAN key at the last pass";
    wait_for(CEILING, "the first pass", || env.log().contains(PASS));
    d.terminate();
    let mut d = Vaultd::spawn(&env);
    wait_for(CEILING, "the remembered pass", || {
        env.log().contains(REMEMBERED)
    });
    assert_eq!(env.log().matches(PASS).count(), 1, "a second pass ran");
    // A rotation makes the next pass needed again.
    let mut c = env.client();
    c.op::<ops::KeyRotate>(&KeyRotateArgs { key: None })
        .expect("key_rotate");
    wait_for(CEILING, "the pass under version 2", || {
        env.log().matches(PASS).count() == 2
    });
    assert_eq!(key_stats(&mut c).reencrypt_remaining, 0);
    d.terminate();
}
