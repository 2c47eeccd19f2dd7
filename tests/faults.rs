//! Disk and HSM faults, in-process: the daemon's own `Vault` and
//! `Dispatcher` over a redb store on a fault-injecting `StorageBackend`
//! (vaultd `store::faulty`) and over an HSM that fails on demand
//! (vault-hsm `faulty`), with a real SoftHSM2 token behind it.
//!
//! What must hold: no request is acknowledged whose commit failed; after a
//! disk fault (also one during the recovery at the next open) the database
//! passes `check_integrity()` and holds every acknowledged write and nothing
//! written after the fault; an HSM fault answers `unavailable`, writes
//! nothing, shows in `health`, and passes once the HSM answers again.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use vault_e2e::{pan, softhsm_module};
use vault_hsm::faulty::{FaultyHsm, HsmFault};
use vault_hsm::{Hsm, HsmConfig, HsmPool, Pkcs11Hsm};
use vault_proto::client::{ClientError, decode_result};
use vault_proto::ops::{self, NoArgs, op};
use vault_proto::{ErrorCode, Pan, frame};
use vault_testkit::process_token;
use vaultd::config::Config;
use vaultd::dispatch::{ClientTable, Dispatcher, Peer};
use vaultd::store::faulty::{DiskOp, FaultyBackend};
use vaultd::store::{RedbStore, slot_path};
use vaultd::vault::Vault;

const LABEL: &str = "vaultd-faults";

/// One SoftHSM2 token with the vault keys for the whole binary:
/// `SOFTHSM2_CONF` is process-global and read when the module loads.
fn hsm_config() -> &'static HsmConfig {
    static CFG: OnceLock<HsmConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        let token = process_token(LABEL);
        token.init_vault_keys();
        token.hsm_config()
    })
}

fn open_hsm() -> Pkcs11Hsm {
    Pkcs11Hsm::open(hsm_config()).expect("open HSM")
}

fn config(dir: &Path) -> Config {
    Config::parse(&format!(
        r#"[server]
socket = "{dir}/unused.sock"
[storage]
path = "{dir}/vault.redb"
[hsm]
module = "{module}"
token_label = "{LABEL}"
[[tenant]]
id = "t-a"
[[client]]
name = "root"
uid = 0
tenant = "t-a"
roles = ["merchant", "admin"]
"#,
        dir = dir.display(),
        module = softhsm_module(),
    ))
    .expect("config")
}

const ROOT: Peer = Peer {
    uid: 0,
    gid: 0,
    pid: 1,
};

/// The daemon's request path without the socket.
struct InProc<H: Hsm> {
    dispatcher: Dispatcher<RedbStore, H>,
}

impl<H: Hsm> InProc<H> {
    fn new(cfg: &Config, store: RedbStore, hsm: Arc<H>) -> Self {
        let vault = Vault::new(cfg, Arc::new(store), HsmPool::new(hsm, 2)).expect("vault");
        let clients = ClientTable::from_config(cfg);
        InProc {
            dispatcher: Dispatcher::new(Arc::new(vault), clients),
        }
    }

    async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        op_name: &str,
        args: &A,
    ) -> Result<R, ClientError> {
        let body = frame::encode_request(7, op_name, args);
        let resp = self
            .dispatcher
            .handle(ROOT, &body[frame::HEADER_LEN..])
            .await;
        decode_result(&resp[frame::HEADER_LEN..])
    }

    async fn tokenize(&self, pan: &str) -> Result<ops::TokenizeResult, ClientError> {
        self.call(
            op::TOKENIZE,
            &ops::TokenizeArgs {
                pan: Pan::new(pan.into()),
                exp_month: 12,
                exp_year: 2035,
                transaction_id: None,
            },
        )
        .await
    }

    async fn aliases(&self) -> u64 {
        let s: ops::Stats = self.call(op::STATS, &NoArgs {}).await.expect("stats");
        s.aliases
    }

    async fn health(&self) -> ops::Health {
        self.call(op::HEALTH, &NoArgs {}).await.expect("health")
    }

    async fn audit_ok(&self) -> bool {
        self.audit().await.chain_ok
    }

    async fn audit(&self) -> ops::Audit {
        self.call(
            op::AUDIT,
            &ops::PageArgs {
                after: None,
                limit: 100_000,
            },
        )
        .await
        .expect("audit")
    }

    /// Stops the background tasks and drops everything holding the store,
    /// so its writer drains and the database closes.
    async fn close(self) {
        self.dispatcher.vault.shutdown().await;
    }
}

fn unavailable(r: &Result<impl std::fmt::Debug, ClientError>) -> bool {
    matches!(r, Err(e) if e.code() == Some(ErrorCode::Unavailable))
}

fn open_normal(cfg: &Config) -> RedbStore {
    RedbStore::open(&cfg.storage.path, open_hsm_dyn(), &cfg.storage.options()).expect("reopen")
}

fn open_hsm_dyn() -> Arc<dyn Hsm> {
    Arc::new(open_hsm())
}

fn faulty_store(
    cfg: &Config,
) -> (
    Result<RedbStore, vaultd::store::StoreError>,
    Arc<vaultd::store::faulty::DiskFaults>,
) {
    faulty_store_armed(cfg, None)
}

fn faulty_store_armed(
    cfg: &Config,
    arm: Option<(DiskOp, u64)>,
) -> (
    Result<RedbStore, vaultd::store::StoreError>,
    Arc<vaultd::store::faulty::DiskFaults>,
) {
    let path = &cfg.storage.path;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("db file");
    let inner = redb::backends::FileBackend::new(file).expect("file backend");
    let (backend, faults) = FaultyBackend::new(inner);
    if let Some((op, nth)) = arm {
        faults.fail_nth(op, nth, false);
    }
    let store = RedbStore::open_with_backend(
        backend,
        &slot_path(path),
        open_hsm_dyn(),
        &cfg.storage.options(),
    );
    (store, faults)
}

/// The database file passes redb's full integrity check.
fn assert_integrity(path: &Path) {
    let mut db = redb::Database::create(path).expect("open for the integrity check");
    assert!(
        db.check_integrity().expect("integrity check"),
        "the database needed repair"
    );
}

/// What a run acknowledged, failed, and left in doubt. A commit whose
/// write or fsync failed is in doubt: the client was told `unavailable`,
/// yet its pages may have reached the disk (with one-phase commit the
/// header that publishes it is written before the one fsync). After a
/// reopen it must be all there or all absent, never half.
struct Outcome {
    acked: Vec<(String, String)>,
    in_doubt: Vec<String>,
    refused: Vec<String>,
}

/// Tokenizes cards one by one (one commit each) until the disk fault has
/// tripped and a few more after it. Every answer is either an ack or
/// `unavailable`; once one fails, none after it is acknowledged.
async fn write_until_fault(v: &InProc<Pkcs11Hsm>, first: u64) -> Outcome {
    let mut out = Outcome {
        acked: Vec::new(),
        in_doubt: Vec::new(),
        refused: Vec::new(),
    };
    for i in 0..40 {
        let card = pan("400000", first + i);
        let r = v.tokenize(&card).await;
        match r {
            Ok(t) => {
                assert!(
                    out.in_doubt.is_empty(),
                    "a write was acknowledged after a failed commit"
                );
                assert!(t.created);
                out.acked.push((card, t.record.alias));
            }
            Err(ref e) => {
                assert!(
                    unavailable(&r),
                    "a disk fault must answer unavailable, got {e}"
                );
                if out.in_doubt.is_empty() {
                    out.in_doubt.push(card);
                } else {
                    out.refused.push(card);
                }
                if out.refused.len() >= 3 {
                    break;
                }
            }
        }
    }
    out
}

/// After reopening normally: every acknowledged card is there, under its
/// alias; every card refused after the fault is absent; the one whose
/// commit failed is all there or absent; the audit chain holds.
async fn assert_acknowledged_state(cfg: &Config, baseline: u64, o: &Outcome) {
    assert_integrity(&cfg.storage.path);
    let v = InProc::new(cfg, open_normal(cfg), Arc::new(open_hsm()));
    let stored = v.aliases().await;
    assert!(v.audit_ok().await, "the audit chain is broken");
    let mut present = 0;
    for (card, alias) in &o.acked {
        let again = v.tokenize(card).await.expect("tokenize after reopen");
        assert!(!again.created, "an acknowledged card was lost");
        assert_eq!(&again.record.alias, alias);
        present += 1;
    }
    let mut doubt_present = 0;
    for card in &o.in_doubt {
        let r = v.tokenize(card).await.expect("tokenize after reopen");
        if !r.created {
            // Present: then whole, PAN and all.
            let status: ops::AliasRecord = v
                .call(
                    op::ALIAS_STATUS,
                    &ops::AliasArgs {
                        alias: r.record.alias.clone(),
                    },
                )
                .await
                .expect("alias_status");
            assert!(!status.card.pan_removed);
            assert_eq!(status.card.last4, card[card.len() - 4..]);
            doubt_present += 1;
        }
        let again = v.tokenize(card).await.expect("tokenize after reopen");
        assert!(!again.created && again.record.alias == r.record.alias);
    }
    for card in &o.refused {
        let r = v.tokenize(card).await.expect("tokenize after reopen");
        assert!(r.created, "a card refused after the fault was stored");
    }
    assert_eq!(stored, baseline + present + doubt_present);
    v.close().await;
}

async fn disk_case(op_kind: DiskOp, nth: u64, torn: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (store, faults) = faulty_store(&cfg);
    let v = InProc::new(&cfg, store.expect("open"), Arc::new(open_hsm()));
    // A durable baseline, then the fault.
    let mut baseline = Vec::new();
    for i in 0..3 {
        let card = pan("499999", i);
        baseline.push(v.tokenize(&card).await.expect("baseline"));
    }
    faults.fail_nth(op_kind, nth, torn);
    let o = write_until_fault(&v, nth * 100).await;
    assert!(faults.tripped(), "the fault never tripped");
    assert_eq!(o.in_doubt.len(), 1, "no write failed");
    // Reads still answer and show the acknowledged state; writes stay
    // refused until the store is reopened.
    assert_eq!(v.aliases().await, 3 + o.acked.len() as u64);
    v.close().await;
    assert_acknowledged_state(&cfg, 3, &o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_never_acknowledged_and_reopen_holds_the_acknowledged_state() {
    for nth in [1, 2, 3, 5, 8, 13, 21] {
        for torn in [false, true] {
            disk_case(DiskOp::Write, nth, torn).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_syncs_are_never_acknowledged_and_reopen_holds_the_acknowledged_state() {
    for nth in [1, 2, 3, 4, 7] {
        disk_case(DiskOp::Sync, nth, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_recovery_is_itself_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (store, faults) = faulty_store(&cfg);
    let v = InProc::new(&cfg, store.expect("open"), Arc::new(open_hsm()));
    for i in 0..3 {
        v.tokenize(&pan("499999", i)).await.expect("baseline");
    }
    // Crash mid-commit: the file is left needing recovery.
    faults.fail_nth(DiskOp::Sync, 2, false);
    let mut o = write_until_fault(&v, 500).await;
    assert!(faults.tripped());
    v.close().await;

    // Each reopen fails at its Nth write (then its Nth sync): a crash during
    // recovery. Every failed open must leave a file a later open recovers.
    let mut failed_opens = 0;
    for op_kind in [DiskOp::Write, DiskOp::Sync] {
        for nth in 1..=12 {
            let (store, faults) = faulty_store_armed(&cfg, Some((op_kind, nth)));
            match store {
                Err(e) => {
                    assert!(faults.tripped(), "open failed without a fault: {e}");
                    failed_opens += 1;
                }
                Ok(s) => {
                    // The fault lies beyond what the open does: close
                    // cleanly, and the next case starts from a clean file
                    // again, so crash it once more.
                    let v = InProc::new(&cfg, s, Arc::new(open_hsm()));
                    faults.fail_nth(DiskOp::Sync, 1, false);
                    let card = pan("488888", nth);
                    let r = v.tokenize(&card).await;
                    assert!(unavailable(&r), "a write on a failed disk was acknowledged");
                    o.in_doubt.push(card);
                    v.close().await;
                    break;
                }
            }
        }
    }
    assert!(failed_opens > 0, "no fault hit the recovery");
    assert_acknowledged_state(&cfg, 3, &o).await;
}

/// Opens the vault on a fault-injecting HSM (the store's audit MAC too).
fn faulty_hsm_vault(
    cfg: &Config,
) -> (
    InProc<FaultyHsm<Pkcs11Hsm>>,
    Arc<vault_hsm::faulty::HsmFaults>,
) {
    let (hsm, faults) = FaultyHsm::new(open_hsm());
    let hsm = Arc::new(hsm);
    let store = RedbStore::open(
        &cfg.storage.path,
        hsm.clone() as Arc<dyn Hsm>,
        &cfg.storage.options(),
    )
    .expect("open store");
    (InProc::new(cfg, store, hsm), faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_faults_answer_unavailable_write_nothing_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Every commit seals its own audit records, so the HSM calls counted
    // below are the request's own, in its order. With the default 10 ms
    // interval a commit soon after another leaves its records to the
    // writer's timer, whose audit MAC then lands among the next request's
    // calls whenever the machine's scheduling puts it there, and takes the
    // failure meant for one of them (seen under load: "only 1 calls could
    // fail").
    cfg.storage.audit_seal_interval = vaultd::config::Dur(std::time::Duration::ZERO);
    let (v, faults) = faulty_hsm_vault(&cfg);
    let kept = v.tokenize(&pan("411111", 1)).await.expect("baseline");

    let mut card = 100;
    for fault in [HsmFault::Device, HsmFault::Session, HsmFault::PinLocked] {
        // Fail each HSM call a tokenize makes, one at a time: fingerprint,
        // sealing, the alias's randomness, the audit MAC in the commit.
        let mut failures = 0;
        for nth in 1..=10 {
            card += 1;
            let p = pan("411111", card);
            let before = v.aliases().await;
            faults.fail_nth(nth, 1, fault);
            let r = v.tokenize(&p).await;
            faults.heal();
            match r {
                Ok(t) => {
                    // The fault fell after this request's HSM calls.
                    assert!(t.created);
                    break;
                }
                Err(ref e) => {
                    assert!(unavailable(&r), "{fault:?} at call {nth}: {e}");
                    failures += 1;
                    assert_eq!(v.aliases().await, before, "a failed request wrote");
                    let again = v.tokenize(&p).await.expect("recovered");
                    assert!(again.created, "the failed tokenize left a record behind");
                }
            }
        }
        assert!(failures >= 2, "{fault:?}: only {failures} calls could fail");

        // A dead HSM for a while: health says so, writes refuse, reads that
        // need no key still answer. Refusals are written one by one from
        // here (coalescing, which the dispatcher's tests and hostile_limits
        // cover, would count this test's burst into one record).
        v.dispatcher.flush_refusals().await;
        let audited_before = v.audit().await.records.len();
        faults.fail_all(fault);
        let h = v.health().await;
        assert!(!h.ready, "health ready while the HSM fails");
        assert!(h.hsm.contains("unavailable"), "health.hsm = {}", h.hsm);
        assert_eq!(h.store, "ok");
        for _ in 0..5 {
            card += 1;
            assert!(unavailable(&v.tokenize(&pan("411111", card)).await));
        }
        let status: ops::AliasRecord = v
            .call(
                op::ALIAS_STATUS,
                &ops::AliasArgs {
                    alias: kept.record.alias.clone(),
                },
            )
            .await
            .expect("alias_status needs no HSM");
        assert_eq!(status.alias, kept.record.alias);

        // The HSM answers again: so does the vault, with nothing in between.
        faults.heal();
        let h = v.health().await;
        assert!(h.ready, "health after recovery: {h:?}");
        // The refusals are on the audit trail although the HSM could not
        // seal it then: chained and committed, and sealed by the first
        // commit with the HSM back (here the one `audit` makes before it
        // reads; an unsealed tail does not verify, `store::audit`'s tests).
        let after = v.audit().await;
        let refused = after.records[audited_before..]
            .iter()
            .filter(|r| r.op == "tokenize" && r.outcome.contains("unavailable"))
            .count();
        assert_eq!(
            refused, 5,
            "{fault:?}: refusals during the outage were not audited"
        );
        assert!(
            after.chain_ok,
            "{fault:?}: the records of the outage were not sealed afterwards"
        );
        card += 1;
        assert!(
            v.tokenize(&pan("411111", card))
                .await
                .expect("after heal")
                .created
        );
    }
    assert!(
        v.audit_ok().await,
        "the audit chain survived the HSM faults"
    );
    assert!(faults.failed() > 0);
    v.close().await;
}

// ------------------------------------------------ ATCs (store level)

fn audit_rec(op: &str) -> vaultd::store::records::AuditRec {
    vaultd::store::records::AuditRec {
        at: 1,
        client: "test".into(),
        uid: 0,
        pid: 1,
        op: op.into(),
        alias: None,
        outcome: String::new(),
    }
}

/// Stores alias `alias-<name>` of tenant `t-a` with token state `nt`, the
/// token's record if it has one, and a provisioning job if `provision`.
async fn store_alias(
    store: &RedbStore,
    name: &str,
    nt: vaultd::store::records::NtState,
    token: Option<(String, vaultd::store::records::TokenRec)>,
    provision: bool,
) -> String {
    store_alias_in(store, name, nt, token, provision, None).await
}

/// [`store_alias`] remembered under a transaction id until `expires_at`.
async fn store_alias_in(
    store: &RedbStore,
    name: &str,
    nt: vaultd::store::records::NtState,
    token: Option<(String, vaultd::store::records::TokenRec)>,
    provision: bool,
    transaction: Option<(String, u64)>,
) -> String {
    use vaultd::store::records::AliasRec;
    use vaultd::store::{NewAlias, Store, TokenizeOutcome, TokenizeWrite};
    let alias = format!("alias-{name}");
    let rec = AliasRec {
        tenant: "t-a".into(),
        fingerprint: name.as_bytes().to_vec(),
        bin: "400000".into(),
        last4: "0000".into(),
        pan_len: 16,
        exp_month: 12,
        exp_year: 2035,
        scheme: "visa".into(),
        created_at: 1,
        pan_removed: token.is_some(),
        pan_slot: None,
        nt: Some(nt),
    };
    let out = store
        .tokenize(TokenizeWrite {
            tenant: "t-a".into(),
            fingerprint: name.as_bytes().to_vec(),
            exp_month: 12,
            exp_year: 2035,
            new: Some(NewAlias {
                alias: alias.clone(),
                rec,
                pan_ct: None,
                provision,
                token,
            }),
            transaction,
            audit: audit_rec("tokenize"),
        })
        .await
        .expect("store the alias");
    assert!(matches!(out, TokenizeOutcome::Created(_)));
    alias
}

/// A token record of alias `alias` as the token service issued it.
fn issued_token(alias: &str, atc: u16) -> vaultd::store::records::TokenRec {
    vaultd::store::records::TokenRec {
        alias: alias.into(),
        tenant: "t-a".into(),
        scheme: "visa".into(),
        token_ct: vec![0u8; 48],
        token_last4: "0000".into(),
        exp_month: 12,
        exp_year: 2035,
        par: None,
        token_requestor_id: "40010030273".into(),
        status: ops::TokenStatus::Active,
        atc,
        updated_at: 1,
        refresh_pending: false,
        key: Some(vaultd::store::records::StoredKey {
            kek_version: 1,
            wrapped: vec![0u8; 24],
        }),
    }
}

/// Stores an alias whose token is active and has issued ATCs up to `atc`.
async fn alias_with_token(store: &RedbStore, token_ref: &str, atc: u16) {
    use vaultd::store::records::NtState;
    let nt = NtState {
        status: ops::TokenStatus::Active,
        token_ref: Some(token_ref.into()),
        updated_at: 1,
        last_error: None,
        active_since: Some(1),
        job: None,
    };
    let token = issued_token(&format!("alias-{token_ref}"), atc);
    store_alias(store, token_ref, nt, Some((token_ref.into(), token)), false).await;
}

/// Stores an alias whose provisioning job is queued (token pending);
/// returns the job's id.
async fn alias_pending(store: &RedbStore, name: &str) -> u64 {
    use vaultd::store::Store;
    let alias = store_alias(store, name, pending_nt(), None, true).await;
    let v = store.alias(&alias).unwrap().expect("stored");
    v.rec.nt.and_then(|n| n.job).expect("a provisioning job")
}

/// DESIGN.md: lifecycle events are applied "once, in order, durably". The
/// feed can bring an event for a token between the token service's answer
/// and the commit that stores the token (an issuer suspending a token just
/// issued). Such events are parked and applied, in feed order, by that
/// commit; a delete among them has the finish ask for the key's
/// destruction. Nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_token_not_stored_yet_are_applied_when_it_is() {
    use vaultd::store::queue::{FinishOutcome, JobFinish};
    use vaultd::store::tokens::TokenStore;
    use vaultd::store::{Change, ChangeKind, LifecycleStore, QueueStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    let job_a = alias_pending(&store, "late-a").await;
    let job_b = alias_pending(&store, "late-b").await;
    let change = |seq, r: &str, kind| Change {
        seq,
        token_ref: r.into(),
        kind,
    };
    let deleted = store
        .apply_changes(
            "visa",
            vec![
                change(1, "tr-late-a", ChangeKind::Suspend),
                change(2, "tr-late-b", ChangeKind::Suspend),
                change(
                    3,
                    "tr-late-a",
                    ChangeKind::Redigitize {
                        token_ct: None,
                        token_last4: None,
                        exp: Some((7, 2036)),
                    },
                ),
                change(4, "tr-late-b", ChangeKind::Delete),
            ],
            4,
        )
        .await
        .unwrap();
    assert!(deleted.is_empty());
    // The job of alias-<name> ends with token tr-<name> issued.
    let provisioned = async |job_id, name: &str| {
        store
            .finish_job(JobFinish::Provisioned {
                job_id,
                token_ref: format!("tr-{name}"),
                token: Box::new(issued_token(&format!("alias-{name}"), 0)),
            })
            .await
            .unwrap()
    };
    let out = provisioned(job_a, "late-a").await;
    assert!(matches!(out, FinishOutcome::Ok));
    let t = store.token("tr-late-a").unwrap().unwrap();
    assert_eq!(
        t.status,
        ops::TokenStatus::Suspended,
        "parked suspend applied"
    );
    assert_eq!((t.exp_month, t.exp_year), (7, 2036), "then the new expiry");
    let v = store.alias("alias-late-a").unwrap().unwrap();
    assert_eq!(v.rec.nt.unwrap().status, ops::TokenStatus::Suspended);

    let out = provisioned(job_b, "late-b").await;
    assert!(
        matches!(&out, FinishOutcome::DeletedMeanwhile { token_ref } if token_ref == "tr-late-b")
    );
    assert_eq!(
        store.token("tr-late-b").unwrap().unwrap().status,
        ops::TokenStatus::Deleted
    );
    let kinds: Vec<String> = store
        .events_page(0, 100)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "notification_parked").count(),
        4,
        "{kinds:?}"
    );
    for k in ["token_suspended", "token_redigitized", "token_deleted"] {
        assert!(kinds.iter().any(|x| x == k), "no {k}: {kinds:?}");
    }
    // A token stored by tokenize itself (synchronous provisioning, no PAN
    // kept): its parked events are applied by the tokenize commit.
    store
        .apply_changes("visa", vec![change(5, "tr-sync", ChangeKind::Suspend)], 5)
        .await
        .unwrap();
    alias_with_token(&store, "tr-sync", 0).await;
    assert_eq!(
        store.token("tr-sync").unwrap().unwrap().status,
        ops::TokenStatus::Suspended
    );
    let v = store.alias("alias-tr-sync").unwrap().unwrap();
    assert_eq!(v.rec.nt.unwrap().status, ops::TokenStatus::Suspended);

    // Applied once: a later resume through the feed is the only change.
    store
        .apply_changes("visa", vec![change(6, "tr-late-a", ChangeKind::Resume)], 6)
        .await
        .unwrap();
    assert_eq!(
        store.token("tr-late-a").unwrap().unwrap().status,
        ops::TokenStatus::Active
    );
    drop(store);
    {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        const PARKED: redb::TableDefinition<(&str, u64), &[u8]> =
            redb::TableDefinition::new("parked_events");
        let db = redb::Database::open(&cfg.storage.path).unwrap();
        let n = db
            .begin_read()
            .unwrap()
            .open_table(PARKED)
            .unwrap()
            .len()
            .unwrap();
        assert_eq!(n, 0, "nothing left parked");
    }
    assert_integrity(&cfg.storage.path);
}

/// The next ATC, acknowledged only once its commit is durable.
async fn next_atc(store: &RedbStore, token_ref: &str) -> Option<u16> {
    use vaultd::store::tokens::{AtcOutcome, TokenStore};
    let (out, committed) = store
        .next_atc(token_ref, audit_rec("credentials"))
        .await
        .expect("next_atc");
    committed.wait().await.expect("commit");
    match out {
        AtcOutcome::Issued { atc, .. } => Some(atc),
        AtcOutcome::Exhausted => None,
        AtcOutcome::NotActive => panic!("the token is active"),
    }
}

/// Each ATC is committed before it is handed out: issued once, in order,
/// also across a reopen; the last ATC (65,535) is issued, then the token is
/// exhausted and exactly one key refresh is queued however often it is
/// asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atcs_continue_across_reopen_and_exhaust_into_one_refresh() {
    use vaultd::store::QueueStore;
    use vaultd::store::records::JobKind;
    use vaultd::store::tokens::TokenStore;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());

    let store = open_normal(&cfg);
    alias_with_token(&store, "tr-blocks", 100).await;
    let mut issued = Vec::new();
    for _ in 0..5 {
        issued.push(next_atc(&store, "tr-blocks").await.expect("issued"));
    }
    assert_eq!(issued, vec![101, 102, 103, 104, 105]);
    // The record's `atc` lags: the ATCs are in the journal (store::atc),
    // replayed at the reopen below.
    assert_eq!(store.token("tr-blocks").unwrap().unwrap().atc, 100);
    drop(store);

    // Reopened: the next ATC continues above every one issued.
    let store = open_normal(&cfg);
    let after = next_atc(&store, "tr-blocks").await.expect("issued");
    assert_eq!(after, 106);
    issued.push(after);
    for _ in 0..40 {
        issued.push(next_atc(&store, "tr-blocks").await.expect("issued"));
    }
    assert!(
        issued.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {issued:?}"
    );

    // The top of the range: 65,534 and 65,535 are issued, then none.
    alias_with_token(&store, "tr-top", u16::MAX - 2).await;
    assert_eq!(next_atc(&store, "tr-top").await, Some(u16::MAX - 1));
    assert_eq!(next_atc(&store, "tr-top").await, Some(u16::MAX));
    for _ in 0..3 {
        assert_eq!(next_atc(&store, "tr-top").await, None, "exhausted");
    }
    assert!(store.token("tr-top").unwrap().unwrap().refresh_pending);
    let refreshes = store
        .jobs_page(0, 1000, &|j| {
            j.kind == JobKind::KeyRefresh && j.token_ref.as_deref() == Some("tr-top")
        })
        .unwrap()
        .jobs;
    assert_eq!(refreshes.len(), 1, "one key refresh, however often asked");
    drop(store);
    assert_integrity(&cfg.storage.path);
}

/// A backup copies the ATC journal as it is, and is marked as holding ATCs
/// the schemes may have passed. The first start on a restored file (a
/// backup, or a cold copy restored with `restore`) retires every token's
/// key (ATC 65,535): no restored ATC is counted on from, a token's next
/// cryptogram queues one key refresh instead, and the trail says so once.
/// A database of schema version 1 (no journal, the record's ATC is the ATC)
/// is upgraded in place and its ATCs go on; a version this build does not
/// know is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_retires_every_atc_and_a_version_1_database_is_upgraded() {
    use redb::{ReadableDatabase, ReadableTable};
    use vaultd::store::backup::restore;
    use vaultd::store::records::{JobKind, decode};
    use vaultd::store::{BackupStore, QueueStore, Store};
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    const ATC_LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("atc_log");
    let set_version = |path: &Path, v: u32, drop_journal: bool| {
        let db = redb::Database::open(path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert("schema_version", v.to_be_bytes().as_slice())
            .unwrap();
        if drop_journal {
            w.delete_table(ATC_LOG).unwrap();
        }
        w.commit().unwrap();
    };
    let version = |path: &Path| {
        let db = redb::Database::open(path).unwrap();
        let r = db.begin_read().unwrap();
        let m = r.open_table(META).unwrap();
        let v = m.get("schema_version").unwrap().unwrap();
        u32::from_be_bytes(v.value().try_into().unwrap())
    };
    let marked = |db: &redb::Database| {
        let r = db.begin_read().unwrap();
        r.open_table(META)
            .unwrap()
            .get("atcs_unknown")
            .unwrap()
            .is_some()
    };
    let refreshes = |store: &RedbStore, token_ref: &str| {
        store
            .jobs_page(0, 1000, &|j| {
                j.kind == JobKind::KeyRefresh && j.token_ref.as_deref() == Some(token_ref)
            })
            .unwrap()
            .jobs
            .len()
    };
    let restore_records = |store: &RedbStore| {
        let page = store.audit_page(0, 1000, u64::MAX).unwrap();
        page.records
            .into_iter()
            .filter(|(_, rec, ..)| rec.op == "restore")
            .map(|(_, rec, ..)| rec.outcome)
            .collect::<Vec<_>>()
    };

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    alias_with_token(&store, "tr-bk", 0).await;
    alias_with_token(&store, "tr-rec", 30).await;
    for want in 1..=5 {
        assert_eq!(next_atc(&store, "tr-bk").await, Some(want));
    }
    let backup = dir.path().join("backup.redb");
    store.backup(&backup).expect("backup");
    // The copy holds the journal as it was, and the mark; the live
    // database has no mark and counts on.
    {
        let db = redb::Database::open(&backup).unwrap();
        assert!(marked(&db), "the backup is marked");
        let r = db.begin_read().unwrap();
        let log = r.open_table(ATC_LOG).unwrap();
        let journaled: Vec<(String, u16)> = log
            .iter()
            .unwrap()
            .flat_map(|row| {
                decode::<Vec<(String, u16)>>("atc journal", row.unwrap().1.value()).unwrap()
            })
            .collect();
        assert!(journaled.contains(&("tr-bk".into(), 5)), "{journaled:?}");
    }
    assert!(!marked(store.db()), "the live database is not marked");
    assert_eq!(
        next_atc(&store, "tr-bk").await,
        Some(6),
        "the live vault counts on"
    );
    drop(store);

    let other = tempfile::tempdir().unwrap();
    let cfg2 = config(other.path());
    restore(&backup, &cfg2.storage.path).expect("restore");
    let store = open_normal(&cfg2);
    assert!(!marked(store.db()), "the first start clears the mark");
    assert_eq!(
        restore_records(&store),
        vec![
            "started on a restored backup: the ATCs of 2 network tokens may be behind the schemes', so each one's next cryptogram waits for a key refresh"
                .to_owned()
        ]
    );
    for r in ["tr-bk", "tr-rec"] {
        assert_eq!(refreshes(&store, r), 0, "{r}: refreshed only when used");
        assert_eq!(
            next_atc(&store, r).await,
            None,
            "{r}: no restored ATC is counted on from"
        );
        assert_eq!(next_atc(&store, r).await, None, "{r}");
        assert_eq!(refreshes(&store, r), 1, "{r}: one key refresh");
    }
    drop(store);
    let store = open_normal(&cfg2);
    assert_eq!(restore_records(&store).len(), 1, "handled once");
    assert_eq!(next_atc(&store, "tr-bk").await, None);
    assert_eq!(refreshes(&store, "tr-bk"), 1);
    drop(store);

    // A cold copy (the daemon stopped, no mark) restored the same way.
    let cold = tempfile::tempdir().unwrap();
    let cfg4 = config(cold.path());
    restore(&cfg.storage.path, &cfg4.storage.path).expect("restore a cold copy");
    let store = open_normal(&cfg4);
    assert_eq!(next_atc(&store, "tr-bk").await, None, "cold copy restored");
    assert_eq!(restore_records(&store).len(), 1);
    drop(store);
    // The source of that restore was not touched.
    let store = open_normal(&cfg);
    assert_eq!(next_atc(&store, "tr-bk").await, Some(7));
    assert!(restore_records(&store).is_empty());
    drop(store);

    // Version 1: what an earlier build wrote (ATC 40 in the record).
    let v1 = tempfile::tempdir().unwrap();
    let cfg3 = config(v1.path());
    let store = open_normal(&cfg3);
    alias_with_token(&store, "tr-v1", 40).await;
    drop(store);
    set_version(&cfg3.storage.path, 1, true);
    let store = open_normal(&cfg3);
    assert_eq!(next_atc(&store, "tr-v1").await, Some(41));
    drop(store);
    assert_eq!(
        version(&cfg3.storage.path),
        vaultd::store::SCHEMA_VERSION,
        "upgraded"
    );
    let store = open_normal(&cfg3);
    assert_eq!(
        next_atc(&store, "tr-v1").await,
        Some(42),
        "journal replayed"
    );
    drop(store);

    // A later version: neither opened nor restored.
    let later = vaultd::store::SCHEMA_VERSION + 1;
    set_version(&cfg3.storage.path, later, false);
    let err = RedbStore::open(&cfg3.storage.path, open_hsm_dyn(), &cfg3.storage.options())
        .err()
        .expect("a later version refused");
    assert!(
        err.to_string().contains(&format!("schema version {later}")),
        "{err}"
    );
    let err = restore(&cfg3.storage.path, &v1.path().join("again.redb"))
        .expect_err("restore of a later version refused");
    assert!(err.to_string().contains("schema version"), "{err}");
}

/// Different writes submitted together (new aliases with tokens, ATCs,
/// audit records, events, deletes) land in shared group commits: every one
/// commits, the counts add up, and the audit chain they wrote verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_writes_in_shared_batches_all_commit() {
    use std::sync::atomic::Ordering::Relaxed;
    use vaultd::store::Store;
    use vaultd::store::records::EventRec;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = Arc::new(open_normal(&cfg));
    for i in 0..60 {
        alias_with_token(&store, &format!("tr-mix-{i}"), 0).await;
    }
    let (commits0, mutations0) = (
        store.stats.commits.load(Relaxed),
        store.stats.mutations.load(Relaxed),
    );

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let s = store.clone();
        tasks.spawn(async move {
            assert_eq!(next_atc(&s, &format!("tr-mix-{i}")).await, Some(1));
        });
        let s = store.clone();
        tasks.spawn(async move { alias_with_token(&s, &format!("tr-new-{i}"), 0).await });
        let s = store.clone();
        tasks.spawn(async move {
            s.add_event(EventRec {
                at: 1,
                alias: None,
                scheme: None,
                kind: "test".into(),
                detail: format!("event {i}"),
            })
            .await
            .expect("event");
        });
        let s = store.clone();
        tasks.spawn(async move { s.audit(audit_rec("refused")).await.expect("audit") });
        if i < 10 {
            let s = store.clone();
            tasks.spawn(async move {
                let alias = format!("alias-tr-mix-{}", 50 + i);
                assert!(
                    s.delete_alias("t-a", &alias, audit_rec("delete_alias"))
                        .await
                        .expect("delete")
                );
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("every write commits");
    }
    let commits = store.stats.commits.load(Relaxed) - commits0;
    let mutations = store.stats.mutations.load(Relaxed) - mutations0;
    assert_eq!(mutations, 210);
    assert!(
        commits < mutations / 2,
        "{mutations} writes in {commits} commits: they were batched"
    );

    let store = Arc::try_unwrap(store).ok().expect("the only handle");
    let v = InProc::new(&cfg, store, Arc::new(open_hsm()));
    assert_eq!(v.aliases().await, 100);
    assert!(v.audit_ok().await, "the audit chain verifies");
    v.close().await;
    assert_integrity(&cfg.storage.path);
}

// ------------------------------------------------ audit seals (store level)

/// vaultd's `audit_seals` table, read and edited on disk by these tests.
const SEALS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit_seals");

/// The newest sealed audit record and the newest audit record.
fn seal_and_head(store: &RedbStore) -> (u64, u64) {
    use redb::{ReadableDatabase, ReadableTable};
    use vaultd::store::Store;
    let r = store.db().begin_read().unwrap();
    let sealed = r
        .open_table(SEALS)
        .unwrap()
        .last()
        .unwrap()
        .map_or(0, |(k, _)| k.value());
    (sealed, store.log_heads().unwrap().audit_seq)
}

/// `[storage] audit_seal_interval`: a commit inside the interval leaves its
/// records chained but unsealed; a quiet writer seals them within the
/// interval on its own; `audit` seals before it reads; a stop seals the
/// tail; and a tail a crash left unsealed is sealed at the next start
/// behind a record that names it. The chain verifies throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_seals_lag_at_most_the_interval_and_cover_every_record() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};
    use vaultd::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Set here directly (a config file allows at most 1 s): three seconds,
    // hundreds of times what two small commits take on an idle machine.
    let interval = Duration::from_secs(3);
    cfg.storage.audit_seal_interval = vaultd::config::Dur(interval);

    let store = open_normal(&cfg);
    store.audit(audit_rec("first")).await.unwrap();
    let sealed_at = Instant::now();
    assert_eq!(
        seal_and_head(&store),
        (1, 1),
        "nothing sealed lately: at once"
    );
    store.audit(audit_rec("second")).await.unwrap();
    store.audit(audit_rec("third")).await.unwrap();
    let committed_after = sealed_at.elapsed();
    assert_eq!(
        seal_and_head(&store),
        (1, 3),
        "inside the interval: unsealed (records 2 and 3 committed {committed_after:?} after the \
         seal, the interval is {interval:?}; {})",
        vault_e2e::machine_load()
    );

    // No more writes: the writer seals the tail by itself, within the
    // interval on an idle machine; the bound is ten intervals, the wait's
    // ceiling twenty.
    let (commits, mutations) = (
        store.stats.commits.load(Relaxed),
        store.stats.mutations.load(Relaxed),
    );
    // The writer counts a commit just after it returned, so a reader can
    // see the seal a moment before the count: wait for both.
    let took = vault_e2e::wait_for_async(interval * 20, "the quiet writer's seal", || {
        seal_and_head(&store).0 >= 3 && store.stats.commits.load(Relaxed) > commits
    })
    .await;
    vault_e2e::assert_took(took, interval * 10, "the quiet writer's seal");
    assert_eq!(store.stats.commits.load(Relaxed), commits + 1);
    assert_eq!(store.stats.mutations.load(Relaxed), mutations);

    // Asked for (what `audit` does before reading): sealed at once.
    store.audit(audit_rec("fourth")).await.unwrap();
    assert_eq!(seal_and_head(&store), (3, 4));
    assert_eq!(store.seal_audit().await.unwrap(), 4);
    assert_eq!(seal_and_head(&store), (4, 4));

    // A stop seals what is left.
    store.audit(audit_rec("fifth")).await.unwrap();
    assert_eq!(seal_and_head(&store), (4, 5));
    drop(store);
    let store = open_normal(&cfg);
    assert_eq!(seal_and_head(&store), (5, 5), "sealed at the stop");
    drop(store);

    // A stop while the HSM refuses the seal (as a crash between a commit
    // and the seal after it): the tail is committed unsealed. (A seal
    // removed from the file instead is a break: the audit head names it,
    // see tests/audit_tamper.rs.)
    {
        let (hsm, faults) = FaultyHsm::new(open_hsm());
        let store = RedbStore::open(&cfg.storage.path, Arc::new(hsm), &cfg.storage.options())
            .expect("open");
        store.audit(audit_rec("sixth")).await.unwrap();
        store.audit(audit_rec("seventh")).await.unwrap();
        assert_eq!(seal_and_head(&store), (6, 7));
        faults.fail_all(HsmFault::Device);
        drop(store);
    }
    let store = open_normal(&cfg);
    assert_eq!(seal_and_head(&store), (8, 8), "sealed at start-up");
    let v = InProc::new(&cfg, store, Arc::new(open_hsm()));
    let a = v.audit().await;
    assert!(a.chain_ok, "the chain verifies across every kind of seal");
    let last = a.records.last().expect("records");
    assert_eq!((last.seq, last.op.as_str()), (8, "audit_seal"));
    assert_eq!(
        last.outcome,
        "sealed records 7 to 7, committed without a seal before this start \
         (a crash, a restored backup or an HSM outage)"
    );
    v.close().await;
    assert_integrity(&cfg.storage.path);
}

/// `audit_seal_interval = "0ms"`: every commit seals its own records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_seal_interval_seals_every_commit() {
    use vaultd::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.storage.audit_seal_interval = vaultd::config::Dur(std::time::Duration::ZERO);
    let store = open_normal(&cfg);
    for n in 1..=5 {
        store.audit(audit_rec("each")).await.unwrap();
        assert_eq!(seal_and_head(&store), (n, n));
    }
}

/// `audit` while tokenizations keep committing: every page it answers
/// verifies (it seals first; the page stops at what that seal covers, see
/// the next test), the trail only grows, and every tokenize has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verifies_while_writes_go_on() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let v = Arc::new(InProc::new(&cfg, open_normal(&cfg), Arc::new(open_hsm())));
    let stop = Arc::new(AtomicBool::new(false));
    let written_so_far = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4u64 {
        let (v, stop, written_so_far) = (v.clone(), stop.clone(), written_so_far.clone());
        writers.spawn(async move {
            let mut n = 0;
            while !stop.load(Relaxed) {
                n += 1;
                let created = v.tokenize(&pan("4111", w * 100_000 + n)).await;
                assert!(created.expect("tokenize").created);
                written_so_far.fetch_add(1, Relaxed);
            }
            n
        });
    }
    // At least 25 audits, and on until the writers have committed 100
    // tokenizations while they ran (the ceiling only ends a hung test).
    let (mut seen, mut audits) = (0, 0);
    let started = std::time::Instant::now();
    while audits < 25 || written_so_far.load(Relaxed) < 100 {
        assert!(
            started.elapsed() < vault_e2e::CEILING,
            "{} tokenizations in {audits} audits after {:?} ({})",
            written_so_far.load(Relaxed),
            started.elapsed(),
            vault_e2e::machine_load()
        );
        let a = v.audit().await;
        assert!(a.chain_ok, "a page read under load does not verify");
        assert!(a.records.len() >= seen, "the trail shrank");
        seen = a.records.len();
        audits += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, Relaxed);
    let mut written = 0;
    while let Some(n) = writers.join_next().await {
        written += n.expect("writer");
    }
    assert!(
        written > 25,
        "the writes did not overlap the reads ({written})"
    );
    let v = Arc::try_unwrap(v).ok().expect("the only handle");
    let a = v.audit().await;
    assert!(a.chain_ok);
    let tokenized = a.records.iter().filter(|r| r.op == "tokenize").count();
    assert_eq!(tokenized as u64, written, "one record per tokenize");
    v.close().await;
}

/// What makes `audit` verify under load: it reads up to the record its own
/// seal covered. A page that runs past the newest seal does not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_page_up_to_the_seal_verifies_and_one_past_it_does_not() {
    use vaultd::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Three seconds: hundreds of times what the two commits "after" take on
    // an idle machine, so they stay inside the interval at any load.
    cfg.storage.audit_seal_interval = vaultd::config::Dur(std::time::Duration::from_secs(3));
    let store = open_normal(&cfg);
    for _ in 0..3 {
        store.audit(audit_rec("before")).await.unwrap();
    }
    let upto = store.seal_audit().await.unwrap();
    assert_eq!(upto, 3);
    // Committed after the seal, inside the interval: chained, not sealed.
    for _ in 0..2 {
        store.audit(audit_rec("after")).await.unwrap();
    }
    assert_eq!(seal_and_head(&store), (3, 5));
    let hsm = open_hsm();
    let verify = |upto: u64| {
        let page = store.audit_page(0, 100, upto).unwrap();
        let ok = page
            .verify(0, |v, prev, data| hsm.audit_mac_with(v, prev, data))
            .unwrap();
        (page.records.len(), ok)
    };
    assert_eq!(verify(upto), (3, true), "up to the seal");
    assert_eq!(verify(u64::MAX), (5, false), "past the newest seal");
}

/// A token service that answers one card's provisioning with a token the
/// vault holds for another card (a replayed idempotency key, a bug, an
/// attack) never overwrites that token: the job fails, the other alias
/// keeps its token, key and ATCs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_alias_is_never_overwritten() {
    use vaultd::store::queue::{FinishOutcome, JobFinish};
    use vaultd::store::tokens::TokenStore;
    use vaultd::store::{QueueStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    let job_a = alias_pending(&store, "own-a").await;
    let job_b = alias_pending(&store, "own-b").await;
    let out = store
        .finish_job(JobFinish::Provisioned {
            job_id: job_a,
            token_ref: "tr-shared".into(),
            token: Box::new(issued_token("alias-own-a", 0)),
        })
        .await
        .unwrap();
    assert!(matches!(out, FinishOutcome::Ok));
    assert_eq!(next_atc(&store, "tr-shared").await, Some(1));
    let out = store
        .finish_job(JobFinish::Provisioned {
            job_id: job_b,
            token_ref: "tr-shared".into(),
            token: Box::new(issued_token("alias-own-b", 0)),
        })
        .await
        .unwrap();
    assert!(matches!(out, FinishOutcome::Ok));
    let t = store.token("tr-shared").unwrap().unwrap();
    assert_eq!(
        t.alias, "alias-own-a",
        "another card's token was taken over"
    );
    assert_eq!(
        next_atc(&store, "tr-shared").await,
        Some(2),
        "its ATCs go on"
    );
    let b = store.alias("alias-own-b").unwrap().unwrap();
    let nt = b.rec.nt.expect("nt");
    assert_eq!(nt.status, ops::TokenStatus::Failed);
    assert!(nt.token_ref.is_none());
    assert!(
        nt.last_error
            .as_deref()
            .unwrap_or("")
            .contains("another card"),
        "{:?}",
        nt.last_error
    );
    let failed = store.queue_counts(u64::MAX / 2).unwrap().failed;
    assert_eq!(failed, 1, "the job is failed, for an operator to retry");
}

/// A token state still waiting for its provisioning.
fn pending_nt() -> vaultd::store::records::NtState {
    vaultd::store::records::NtState {
        status: ops::TokenStatus::Pending,
        token_ref: None,
        updated_at: 1,
        last_error: None,
        active_since: None,
        job: None,
    }
}

fn table_len<K: redb::Key + 'static, V: redb::Value + 'static>(
    path: &Path,
    t: redb::TableDefinition<K, V>,
) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = redb::Database::open(path).unwrap();
    let r = db.begin_read().unwrap();
    r.open_table(t).unwrap().len().unwrap()
}

/// Issue 22: transaction ids are deleted once expired, in commits of a
/// bounded number of rows, oldest first; a live one stays; the table
/// shrinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_transaction_ids_are_purged_in_bounded_commits() {
    use vaultd::store::Store;
    const TRANSACTIONS: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("transactions");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    for i in 0..25u64 {
        // 20 expire at 1,000..1,019, 5 at 10^12.
        let expires = if i < 20 { 1_000 + i } else { 1_000_000_000_000 };
        let txid = format!("txn-{i:04}");
        store_alias_in(
            &store,
            &format!("tx{i}"),
            pending_nt(),
            None,
            false,
            Some((txid, expires)),
        )
        .await;
    }
    assert_eq!(
        store.transaction("t-a", "txn-0000", 0).unwrap().as_deref(),
        Some("alias-tx0")
    );
    // Not expired yet at 999: nothing goes.
    assert_eq!(store.purge_expired(999, 8).await.unwrap(), 0);
    // At 2,000 the 20 expired go, 8 a commit, oldest first.
    assert_eq!(store.purge_expired(2_000, 8).await.unwrap(), 8);
    assert_eq!(store.transaction("t-a", "txn-0007", 0).unwrap(), None);
    assert_eq!(
        store.transaction("t-a", "txn-0008", 0).unwrap().as_deref(),
        Some("alias-tx8")
    );
    assert_eq!(store.purge_expired(2_000, 8).await.unwrap(), 8);
    assert_eq!(store.purge_expired(2_000, 8).await.unwrap(), 4);
    assert_eq!(store.purge_expired(2_000, 8).await.unwrap(), 0);
    for i in 20..25 {
        assert_eq!(
            store.transaction("t-a", &format!("txn-{i:04}"), 0).unwrap(),
            Some(format!("alias-tx{i}")),
            "a live transaction id was purged"
        );
    }
    drop(store);
    assert_eq!(table_len(&cfg.storage.path, TRANSACTIONS), 5);
}

/// Issue 22: a schema 3 database (one job queue for every scheme, no
/// expiry indexes) is upgraded in place: its queued jobs are found under
/// their scheme and run, its expired transaction ids are purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_queue_is_rekeyed_by_scheme_at_the_upgrade() {
    use redb::{ReadableDatabase, ReadableTable};
    use vaultd::store::{QueueStore, Store};
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    const OLD_QUEUE: redb::TableDefinition<(u64, u64), ()> =
        redb::TableDefinition::new("job_queue");
    const QUEUE: redb::TableDefinition<(&str, u64, u64), ()> =
        redb::TableDefinition::new("job_queue_by_scheme");
    const TXN_EXPIRY: redb::TableDefinition<(u64, &[u8]), ()> =
        redb::TableDefinition::new("transactions_by_expiry");
    const PARKED_EXPIRY: redb::TableDefinition<(u64, &str, u64), ()> =
        redb::TableDefinition::new("parked_events_by_expiry");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(alias_pending(&store, &format!("old{i}")).await);
    }
    store_alias_in(
        &store,
        "oldtx",
        pending_nt(),
        None,
        false,
        Some(("txn-old".into(), 5)),
    )
    .await;
    drop(store);
    // The database as schema 3 left it.
    {
        let db = redb::Database::open(&cfg.storage.path).unwrap();
        let w = db.begin_write().unwrap();
        let keys: Vec<(String, u64, u64)> = w
            .open_table(QUEUE)
            .unwrap()
            .iter()
            .unwrap()
            .map(|i| {
                let (k, _) = i.unwrap();
                let (s, at, id) = k.value();
                (s.to_owned(), at, id)
            })
            .collect();
        assert_eq!(keys.len(), 3);
        let mut old = w.open_table(OLD_QUEUE).unwrap();
        for (_, at, id) in &keys {
            old.insert((*at, *id), ()).unwrap();
        }
        drop(old);
        w.delete_table(QUEUE).unwrap();
        w.delete_table(TXN_EXPIRY).unwrap();
        w.delete_table(PARKED_EXPIRY).unwrap();
        w.open_table(META)
            .unwrap()
            .insert("schema_version", 3u32.to_be_bytes().as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let store = open_normal(&cfg);
    let due = store.due_jobs("visa", u64::MAX, 10, &|_| false).unwrap();
    let mut ids: Vec<u64> = due.iter().map(|j| j.id).collect();
    ids.sort();
    jobs.sort();
    assert_eq!(ids, jobs, "the queued jobs under their scheme");
    assert!(
        store
            .due_jobs("amex", u64::MAX, 10, &|_| false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.queued_schemes().unwrap(), vec!["visa".to_owned()]);
    // Skipped ids are not returned, and the limit holds.
    let some = store
        .due_jobs("visa", u64::MAX, 1, &|id| id == jobs[0])
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_ne!(some[0].id, jobs[0]);
    assert_eq!(store.queue_counts(u64::MAX / 2).unwrap().due, 3);
    assert_eq!(store.purge_expired(10, 100).await.unwrap(), 1);
    assert_eq!(store.transaction("t-a", "txn-old", 0).unwrap(), None);
    drop(store);
    let db = redb::Database::open(&cfg.storage.path).unwrap();
    let r = db.begin_read().unwrap();
    assert!(
        r.open_table(OLD_QUEUE).is_err(),
        "the old queue table is gone"
    );
    let v = r
        .open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(v, vaultd::store::SCHEMA_VERSION.to_be_bytes());
}

/// Issue 22: an event parked for a token the vault never stores is dropped
/// after its day's wait by the background purge; one applied when its
/// token arrived leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_past_their_wait_are_purged() {
    use vaultd::store::{Change, ChangeKind, LifecycleStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = open_normal(&cfg);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    store
        .apply_changes(
            "visa",
            vec![
                Change {
                    seq: 1,
                    token_ref: "tr-never".into(),
                    kind: ChangeKind::Suspend,
                },
                Change {
                    seq: 2,
                    token_ref: "tr-never-2".into(),
                    kind: ChangeKind::Resume,
                },
            ],
            2,
        )
        .await
        .unwrap();
    // Within the day they wait.
    assert_eq!(store.purge_expired(now + 3_600_000, 100).await.unwrap(), 0);
    let day_after = now + 25 * 3_600_000;
    assert_eq!(store.purge_expired(day_after, 1).await.unwrap(), 1);
    assert_eq!(store.purge_expired(day_after, 100).await.unwrap(), 1);
    assert_eq!(store.purge_expired(day_after, 100).await.unwrap(), 0);
    drop(store);
    let parked: redb::TableDefinition<(&str, u64), &[u8]> =
        redb::TableDefinition::new("parked_events");
    assert_eq!(table_len(&cfg.storage.path, parked), 0);
}
