//! The `Hsm` operations against a real SoftHSM2 token.

mod common;

use std::sync::{Arc, Barrier};

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use common::{
    hex, import_visa_kek, shared_hsm, software_cryptogram_mac, unhex, wrap, write_component, xor,
};
use vault_hsm::keys::{
    import_kek, import_token_key_for_test, init_keys, key_attributes, list_keys,
};
use vault_hsm::{Hsm, HsmError, HsmPool, Pkcs11Hsm, SEALED_OVERHEAD};
use vault_proto::Pan;

fn hsm() -> &'static Arc<Pkcs11Hsm> {
    &shared_hsm("vaultd-test").1
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    hsm().random(&mut out).expect("random");
    out
}

#[test]
fn init_keys_is_idempotent_and_keys_stay_inside() {
    let again = init_keys(hsm()).expect("init keys");
    assert_eq!(
        again,
        vec![
            ("vault.pan.v1".to_owned(), false),
            ("vault.fp".to_owned(), false),
            ("vault.audit".to_owned(), false)
        ]
    );
    let keys = list_keys(hsm()).expect("list");
    let pan = keys
        .iter()
        .find(|k| k.label == "vault.pan.v1")
        .expect("pan key");
    assert_eq!(pan.key_type, "AES");
    assert_eq!(pan.value_len, Some(32));
    assert!(pan.token && pan.private && pan.sensitive && !pan.extractable);
    assert!(pan.encrypt && pan.decrypt && !pan.sign && !pan.derive && !pan.unwrap);
    for label in ["vault.fp", "vault.audit"] {
        let k = keys.iter().find(|k| k.label == label).expect(label);
        assert_eq!(k.key_type, "GENERIC_SECRET");
        assert_eq!(k.value_len, Some(32));
        assert!(k.token && k.private && k.sensitive && !k.extractable);
        assert!(k.sign && k.verify && !k.encrypt && !k.decrypt && !k.derive);
    }
    assert_eq!(hsm().pan_key_version(), 1);
    hsm().check().expect("check");
}

#[test]
fn seal_open_round_trip() {
    let sealed = hsm()
        .seal("al_1", "pan", b"4111111111111111")
        .expect("seal");
    assert_eq!(sealed.len(), SEALED_OVERHEAD + 16);
    assert_eq!(&sealed[..4], &1u32.to_be_bytes());
    assert!(!sealed.windows(16).any(|w| w == b"4111111111111111"));
    let opened = hsm().open("al_1", "pan", &sealed).expect("open");
    assert_eq!(&opened[..], b"4111111111111111");
}

#[test]
fn ciphertext_is_bound_to_alias_and_field() {
    let sealed = hsm()
        .seal("al_2", "pan", b"5555555555554444")
        .expect("seal");
    assert!(matches!(
        hsm().open("al_3", "pan", &sealed),
        Err(HsmError::Integrity)
    ));
    assert!(matches!(
        hsm().open("al_2", "token", &sealed),
        Err(HsmError::Integrity)
    ));
    // The separator matters: ("al_2p", "an") must not equal ("al_2", "pan").
    assert!(matches!(
        hsm().open("al_2p", "an", &sealed),
        Err(HsmError::Integrity)
    ));
    assert!(hsm().open("al_2", "pan", &sealed).is_ok());
}

#[test]
fn tampered_ciphertext_fails() {
    let sealed = hsm()
        .seal("al_4", "pan", b"4000056655665556")
        .expect("seal");
    // IV, ciphertext and tag bytes.
    for idx in [4, 15, 16, 20, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[idx] ^= 0x01;
        assert!(
            matches!(hsm().open("al_4", "pan", &bad), Err(HsmError::Integrity)),
            "byte {idx}"
        );
    }
    assert!(matches!(
        hsm().open("al_4", "pan", &sealed[..SEALED_OVERHEAD - 1]),
        Err(HsmError::Integrity)
    ));
    let mut unknown_version = sealed.clone();
    unknown_version[..4].copy_from_slice(&999u32.to_be_bytes());
    match hsm().open("al_4", "pan", &unknown_version) {
        Err(HsmError::KeyMissing(label)) => assert_eq!(label, "vault.pan.v999"),
        other => panic!("expected KeyMissing, got {other:?}"),
    }
    // The session survives a tag failure.
    assert!(hsm().open("al_4", "pan", &sealed).is_ok());
}

#[test]
fn every_seal_has_a_fresh_iv() {
    let a = hsm()
        .seal("al_5", "pan", b"4111111111111111")
        .expect("seal");
    let b = hsm()
        .seal("al_5", "pan", b"4111111111111111")
        .expect("seal");
    assert_ne!(&a[4..16], &b[4..16]);
    assert_ne!(a, b);
}

#[test]
fn long_alias_uses_the_heap_aad_path() {
    let alias = "a".repeat(300);
    let sealed = hsm().seal(&alias, "pan", b"x").expect("seal");
    assert_eq!(&hsm().open(&alias, "pan", &sealed).expect("open")[..], b"x");
    assert!(matches!(
        hsm().open(&"a".repeat(299), "pan", &sealed),
        Err(HsmError::Integrity)
    ));
}

#[test]
fn fingerprint_is_deterministic_per_tenant() {
    let pan = Pan::new("4111111111111111".to_owned());
    let other = Pan::new("4111111111111129".to_owned());
    let a1 = hsm().fingerprint("m-1001", &pan).expect("fp");
    let a2 = hsm().fingerprint("m-1001", &pan).expect("fp");
    let b = hsm().fingerprint("m-1002", &pan).expect("fp");
    let c = hsm().fingerprint("m-1001", &other).expect("fp");
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    assert_ne!(a1, c);
    // Tenant and PAN are separated: ("m-10011", "411…") differs from ("m-1001", "1411…").
    let shifted = Pan::new("14111111111111111".to_owned());
    assert_ne!(
        hsm()
            .fingerprint("m-10011", &Pan::new("4111111111111111".to_owned()))
            .expect("fp"),
        hsm().fingerprint("m-1001", &shifted).expect("fp")
    );
    // A long tenant takes the heap path and still works.
    let long = "t".repeat(200);
    assert_eq!(
        hsm().fingerprint(&long, &pan).expect("fp"),
        hsm().fingerprint(&long, &pan).expect("fp")
    );
}

#[test]
fn audit_mac_chains() {
    let genesis = [0u8; 32];
    let m1 = hsm().audit_mac(&genesis, b"record 1").expect("mac");
    let m2 = hsm().audit_mac(&m1, b"record 2").expect("mac");
    assert_eq!(m1, hsm().audit_mac(&genesis, b"record 1").expect("mac"));
    assert_eq!(m2, hsm().audit_mac(&m1, b"record 2").expect("mac"));
    // Editing record 1 changes every later MAC.
    let m1_edited = hsm().audit_mac(&genesis, b"record X").expect("mac");
    assert_ne!(m1, m1_edited);
    assert_ne!(m2, hsm().audit_mac(&m1_edited, b"record 2").expect("mac"));
    // The audit key is not the fingerprint key.
    let fp = hsm()
        .fingerprint("t", &Pan::new("4111111111111111".to_owned()))
        .expect("fp");
    let mut prev = [0u8; 32];
    prev[..1].copy_from_slice(b"t");
    assert_ne!(
        fp,
        hsm().audit_mac(&prev, b"4111111111111111").expect("mac")
    );
}

#[test]
fn random_fills_the_buffer() {
    let a: [u8; 32] = random();
    let b: [u8; 32] = random();
    assert_ne!(a, b);
    assert_ne!(a, [0u8; 32]);
}

fn software_kcv(kek: &[u8; 32]) -> String {
    let cipher = Aes256::new(&Array::from(*kek));
    let mut block = Array::from([0u8; 16]);
    cipher.encrypt_block(&mut block);
    hex(&block[..3])
}

#[test]
fn import_kek_checks_kcv_is_idempotent_and_versions_new_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let (c1, c2) = (random::<32>(), random::<32>());
    let p1 = write_component(dir.path(), "amex.c1", &c1);
    let p2 = write_component(dir.path(), "amex.c2", &c2);
    let first = import_kek(hsm(), "amex", &[&p1, &p2]).expect("import");
    assert_eq!(first.kcv, software_kcv(&xor(&c1, &c2)));
    assert_eq!(first.kcv.len(), 6);
    assert_eq!((first.version, first.label.as_str()), (1, "tsp.amex.kek"));
    assert!(first.created);
    // Each custodian's component check value.
    assert_eq!(
        first.component_kcvs,
        vec![software_kcv(&c1), software_kcv(&c2)]
    );

    // Same components again: no change.
    let again = import_kek(hsm(), "amex", &[&p1, &p2]).expect("again");
    assert_eq!((again.version, again.created), (1, false));
    assert_eq!(again.kcv, first.kcv);
    let keks: Vec<_> = list_keys(hsm())
        .expect("list")
        .into_iter()
        .filter(|k| k.label.starts_with("tsp.amex.kek"))
        .collect();
    assert_eq!(keks.len(), 1);
    let kek = &keks[0];
    assert_eq!((kek.key_type.as_str(), kek.value_len), ("AES", Some(32)));
    assert!(kek.sensitive && !kek.extractable && kek.unwrap);
    assert!(!kek.encrypt && !kek.decrypt && !kek.wrap && !kek.sign && !kek.derive);

    // Different components: the next version, the first one kept.
    let c3 = random::<32>();
    let p3 = write_component(dir.path(), "amex.c3", &c3);
    let second = import_kek(hsm(), "amex", &[&p1, &p3]).expect("next version");
    assert_eq!(
        (second.version, second.label.as_str()),
        (2, "tsp.amex.kek.v2")
    );
    assert_eq!(second.kcv, software_kcv(&xor(&c1, &c3)));
    assert_eq!(hsm().kek_versions("amex").expect("versions"), vec![1, 2]);
    // The first one's components again: that version, nothing new.
    let back = import_kek(hsm(), "amex", &[&p2, &p1]).expect("old again");
    assert_eq!((back.version, back.created), (1, false));
    // The newest cannot be retired; an older one can.
    assert!(vault_hsm::keys::destroy_kek(hsm(), "amex", 2).is_err());
    assert!(vault_hsm::keys::destroy_kek(hsm(), "amex", 1).expect("retire v1"));
    assert_eq!(hsm().kek_versions("amex").expect("versions"), vec![2]);

    // Three components XOR together too.
    let kcv3 = import_kek(hsm(), "amex", &[&p1, &p2, &p3]).expect("three");
    assert_eq!(kcv3.kcv, software_kcv(&xor(&xor(&c1, &c2), &c3)));
    assert_eq!(kcv3.version, 3);

    // Bad input: unknown scheme, one component, a repeated or zero
    // component (no dual control), bad files.
    assert!(import_kek(hsm(), "diners", &[&p1, &p2]).is_err());
    assert!(import_kek(hsm(), "amex", &[&p1]).is_err());
    let same = import_kek(hsm(), "amex", &[&p1, &p1]).expect_err("repeated component");
    assert!(same.to_string().contains("distinct"), "{same}");
    let zero = write_component(dir.path(), "zero", &[0u8; 32]);
    assert!(import_kek(hsm(), "amex", &[&p1, &zero]).is_err());
    let short = dir.path().join("short");
    std::fs::write(&short, "abcd\n").expect("write");
    assert!(import_kek(hsm(), "amex", &[&p1, &short]).is_err());
    let not_hex = dir.path().join("nothex");
    std::fs::write(&not_hex, format!("{}\n", "zz".repeat(32))).expect("write");
    assert!(import_kek(hsm(), "amex", &[&p1, &not_hex]).is_err());
    assert_eq!(hsm().kek_versions("amex").expect("versions"), vec![2, 3]);
}

fn key(blob: &[u8], version: u32) -> Option<vault_hsm::WrappedTokenKey<'_>> {
    Some(vault_hsm::WrappedTokenKey {
        scheme: "discover",
        kek_version: version,
        wrapped: blob,
    })
}

/// A stored (wrapped) token key: unwrapped under the KEK version that
/// wraps it into a session object, never a token object; its cryptograms
/// match the software ones; a refreshed blob never meets the old key; a
/// destroyed one is gone at once; a blob under no KEK is refused.
#[test]
fn stored_token_keys_are_unwrapped_into_session_objects_per_kek_version() {
    let dir = tempfile::tempdir().expect("dir");
    let (c1, c2) = (random::<32>(), random::<32>());
    let p1 = write_component(dir.path(), "ds.c1", &c1);
    let p2 = write_component(dir.path(), "ds.c2", &c2);
    let v1 = import_kek(hsm(), "discover", &[&p1, &p2]).expect("kek v1");
    let kek1 = xor(&c1, &c2);
    let tk1 = random::<16>();
    let blob1 = wrap(&kek1, &tk1);
    let version = hsm()
        .accept_token_key("discover", "tr-stored", &blob1)
        .expect("accept");
    assert_eq!(version, v1.version);
    for atc in [1u16, 2, 700] {
        assert_eq!(
            hsm()
                .cryptogram_mac("tr-stored", key(&blob1, version), atc, b"d")
                .expect("mac"),
            software_cryptogram_mac(&tk1, atc, b"d")
        );
    }
    // From another thread (another session) too.
    let b = blob1.clone();
    let other =
        std::thread::spawn(move || hsm().cryptogram_mac("tr-stored", key(&b, version), 3, b"d"))
            .join()
            .expect("thread")
            .expect("mac");
    assert_eq!(other, software_cryptogram_mac(&tk1, 3, b"d"));

    // A new KEK version; a key wrapped under it is found by a rescan.
    let c3 = random::<32>();
    let p3 = write_component(dir.path(), "ds.c3", &c3);
    let v2 = import_kek(hsm(), "discover", &[&p1, &p3]).expect("kek v2");
    let tk2 = random::<16>();
    let blob2 = wrap(&xor(&c1, &c3), &tk2);
    let version2 = hsm()
        .accept_token_key("discover", "tr-stored", &blob2)
        .expect("accept v2");
    assert_eq!(version2, v2.version);
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-stored", key(&blob2, version2), 9, b"d")
            .expect("mac"),
        software_cryptogram_mac(&tk2, 9, b"d")
    );
    // The old blob still works under its own version (a record not yet
    // refreshed), and never hands out the new key, nor the new the old.
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-stored", key(&blob1, version), 10, b"d")
            .expect("mac"),
        software_cryptogram_mac(&tk1, 10, b"d")
    );
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-stored", key(&blob2, version2), 11, b"d")
            .expect("mac"),
        software_cryptogram_mac(&tk2, 11, b"d")
    );

    // A blob under a KEK the vault does not hold, or tampered with.
    let foreign = wrap(&random::<32>(), &tk1);
    assert!(matches!(
        hsm().accept_token_key("discover", "tr-foreign", &foreign),
        Err(HsmError::Integrity)
    ));
    let mut tampered = blob1.clone();
    tampered[5] ^= 1;
    assert!(matches!(
        hsm().cryptogram_mac("tr-bad", key(&tampered, version), 1, b"d"),
        Err(HsmError::Integrity)
    ));
    assert!(
        hsm()
            .accept_token_key("discover", "tr-x", &blob1[..16])
            .is_err()
    );

    // Nothing of this became a token object; the session keys are
    // sensitive and non-extractable.
    let after = list_keys(hsm()).expect("list");
    let mc: Vec<&str> = after
        .iter()
        .map(|k| k.label.as_str())
        .filter(|l| l.contains("discover") || l.contains("tr-stored"))
        .collect();
    assert_eq!(mc, ["tsp.discover.kek", "tsp.discover.kek.v2"]);
    let (unwraps, cached) = hsm().token_key_unwraps();
    assert!(
        unwraps >= 3 && cached >= 1,
        "{unwraps} unwraps, {cached} cached"
    );

    hsm().destroy_token_key("tr-stored").expect("destroy");
    assert!(hsm().destroy_token_key("tr-stored").is_ok(), "idempotent");
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-stored", key(&blob2, version2), 12, b"d")
            .expect("unwrapped again from the record"),
        software_cryptogram_mac(&tk2, 12, b"d")
    );
}

#[test]
fn unwrapped_token_key_makes_the_software_cryptogram_mac() {
    let dir = tempfile::tempdir().expect("dir");
    let kek = import_visa_kek(hsm(), dir.path());
    let tk = random::<16>();
    hsm()
        .legacy_unwrap_token_object("visa", "tr-unwrap", &wrap(&kek, &tk))
        .expect("unwrap");

    let info = key_attributes(hsm(), "nt.tr-unwrap")
        .expect("attrs")
        .expect("exists");
    // (SoftHSM2 reports CKA_VALUE_LEN 0 for unwrapped keys; the MACs below
    // prove the value.)
    assert_eq!(info.key_type, "AES");
    assert!(info.token && info.sensitive && !info.extractable && info.derive);
    assert!(
        !info.encrypt && !info.decrypt && !info.sign && !info.verify && !info.wrap && !info.unwrap
    );

    for (atc, data) in [
        (1u16, &b"short"[..]),
        (42, &[7u8; 47][..]),
        (65535, &[][..]),
    ] {
        assert_eq!(
            hsm()
                .cryptogram_mac("tr-unwrap", None, atc, data)
                .expect("mac"),
            software_cryptogram_mac(&tk, atc, data),
            "atc {atc}"
        );
    }

    // Unwrapping again replaces the key (one object, new value).
    let tk2 = random::<16>();
    hsm()
        .legacy_unwrap_token_object("visa", "tr-unwrap", &wrap(&kek, &tk2))
        .expect("re-unwrap");
    let count = list_keys(hsm())
        .expect("list")
        .iter()
        .filter(|k| k.label == "nt.tr-unwrap")
        .count();
    assert_eq!(count, 1);
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-unwrap", None, 9, b"d")
            .expect("mac"),
        software_cryptogram_mac(&tk2, 9, b"d")
    );

    // A key wrapped under another KEK fails RFC 3394's integrity check.
    let mut tampered = wrap(&kek, &tk);
    tampered[5] ^= 1;
    assert!(matches!(
        hsm().legacy_unwrap_token_object("visa", "tr-bad", &tampered),
        Err(HsmError::Integrity)
    ));
    assert!(key_attributes(hsm(), "nt.tr-bad").expect("attrs").is_none());
    // No KEK for the scheme.
    assert!(matches!(
        hsm().legacy_unwrap_token_object("mastercard", "tr-x", &wrap(&kek, &tk)),
        Err(HsmError::KeyMissing(label)) if label == "tsp.mastercard.kek"
    ));
}

#[test]
fn design_test_vector_through_softhsm() {
    let tk: [u8; 16] = unhex("000102030405060708090a0b0c0d0e0f")
        .try_into()
        .expect("tk");
    import_token_key_for_test(hsm(), "tr-vector", &tk).expect("import tk");
    let (token, expiry, amount, currency, atc) = ("4895370012345678", "2911", 1250u64, "CHF", 7u16);
    let un = unhex("a1b2c3d4");
    let mut d = vec![0x01, token.len() as u8];
    d.extend_from_slice(token.as_bytes());
    d.extend_from_slice(expiry.as_bytes());
    d.extend_from_slice(&amount.to_be_bytes());
    d.extend_from_slice(currency.as_bytes());
    d.extend_from_slice(&atc.to_be_bytes());
    d.extend_from_slice(&un);
    d.extend_from_slice(b"07");

    let mac = hsm()
        .cryptogram_mac("tr-vector", None, atc, &d)
        .expect("mac");
    assert_eq!(mac, software_cryptogram_mac(&tk, atc, &d));
    let mut cryptogram = vec![0x01];
    cryptogram.extend_from_slice(&atc.to_be_bytes());
    cryptogram.extend_from_slice(&un);
    cryptogram.extend_from_slice(&mac[..13]);
    assert_eq!(hex(&cryptogram), "010007a1b2c3d4204e311037a9e8d60a6e3fb512");
}

#[test]
fn destroy_token_key_removes_it_and_is_idempotent() {
    import_token_key_for_test(hsm(), "tr-destroy", &[9u8; 16]).expect("import");
    // Caches the handle.
    hsm()
        .cryptogram_mac("tr-destroy", None, 1, b"x")
        .expect("mac");
    hsm().destroy_token_key("tr-destroy").expect("destroy");
    assert!(
        key_attributes(hsm(), "nt.tr-destroy")
            .expect("attrs")
            .is_none()
    );
    assert!(matches!(
        hsm().cryptogram_mac("tr-destroy", None, 2, b"x"),
        Err(HsmError::KeyMissing(label)) if label == "nt.tr-destroy"
    ));
    hsm()
        .destroy_token_key("tr-destroy")
        .expect("destroy again");
    assert!(hsm().destroy_token_key("bad ref").is_err());
}

/// Replacing or destroying a token key on one thread must reach every other
/// thread (their cached handles and any session copies).
#[test]
fn other_threads_never_use_a_replaced_or_destroyed_token_key() {
    let dir = tempfile::tempdir().expect("dir");
    let kek = import_visa_kek(hsm(), dir.path());
    let tk1 = random::<16>();
    hsm()
        .legacy_unwrap_token_object("visa", "tr-threads", &wrap(&kek, &tk1))
        .expect("unwrap");
    let (to_worker, jobs) = std::sync::mpsc::channel::<u16>();
    let (answer, answers) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for atc in jobs {
            answer
                .send(hsm().cryptogram_mac("tr-threads", None, atc, b"data"))
                .expect("send");
        }
    });
    let ask = |atc: u16| {
        to_worker.send(atc).expect("send");
        answers.recv().expect("answer")
    };
    // The worker now holds a copy of tk1.
    assert_eq!(
        ask(1).expect("mac"),
        software_cryptogram_mac(&tk1, 1, b"data")
    );
    assert_eq!(
        ask(2).expect("mac"),
        software_cryptogram_mac(&tk1, 2, b"data")
    );

    // Key refresh on this thread: destroy, then unwrap the new key.
    let tk2 = random::<16>();
    hsm().destroy_token_key("tr-threads").expect("destroy");
    hsm()
        .legacy_unwrap_token_object("visa", "tr-threads", &wrap(&kek, &tk2))
        .expect("unwrap new key");
    assert_eq!(
        ask(3).expect("mac"),
        software_cryptogram_mac(&tk2, 3, b"data")
    );

    // A replay of provisioning unwraps over the key this process knows.
    let tk3 = random::<16>();
    hsm()
        .legacy_unwrap_token_object("visa", "tr-threads", &wrap(&kek, &tk3))
        .expect("unwrap over");
    assert_eq!(
        ask(4).expect("mac"),
        software_cryptogram_mac(&tk3, 4, b"data")
    );

    // Deleted: no thread can make a MAC with it any more.
    hsm().destroy_token_key("tr-threads").expect("destroy");
    assert!(matches!(
        ask(5),
        Err(HsmError::KeyMissing(label)) if label == "nt.tr-threads"
    ));
    drop(to_worker);
    worker.join().expect("worker");
    // Session copies are never token objects.
    assert!(
        list_keys(hsm())
            .expect("list")
            .iter()
            .all(|k| k.token && k.label != "nt.tr-threads")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_runs_closures_on_several_threads() {
    let pool = HsmPool::new(Arc::clone(hsm()), 2);
    assert_eq!(pool.threads(), 2);
    // Both jobs wait on a barrier of two: they can only finish if two pool
    // threads run them at the same time.
    let barrier = Arc::new(Barrier::new(2));
    let job = |barrier: Arc<Barrier>| {
        move |hsm: &Pkcs11Hsm| {
            barrier.wait();
            let sealed = hsm
                .seal("al_pool", "pan", b"4111111111111111")
                .expect("seal");
            let name = std::thread::current().name().map(str::to_owned);
            (name, sealed)
        }
    };
    let (a, b) = tokio::join!(
        pool.run(job(Arc::clone(&barrier))),
        pool.run(job(Arc::clone(&barrier)))
    );
    let ((name_a, sealed_a), (name_b, sealed_b)) = (a.expect("a"), b.expect("b"));
    let mut names = [name_a.expect("named"), name_b.expect("named")];
    names.sort();
    assert_eq!(names, ["hsm-0".to_owned(), "hsm-1".to_owned()]);
    // Sessions on both threads work against the same keys.
    let opened = pool
        .run(move |hsm| hsm.open("al_pool", "pan", &sealed_a).map(|p| p.to_vec()))
        .await
        .expect("run")
        .expect("open");
    assert_eq!(opened, b"4111111111111111");
    assert!(hsm().open("al_pool", "pan", &sealed_b).is_ok());

    // A panicking job is an error for its caller, and the pool goes on.
    assert!(pool.run(|_| -> u8 { panic!("job panics") }).await.is_err());
    assert_eq!(pool.run(|hsm| hsm.pan_key_version()).await.expect("run"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_jobs_run_one_at_a_time_and_never_hold_up_foreground_calls() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// Only ends a hung test (or a background job held at a gate that a
    /// failed test never opens).
    const CEILING: Duration = Duration::from_secs(60);

    let pool = Arc::new(HsmPool::new(Arc::clone(hsm()), 2));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // 40 background jobs that wait at a gate, shut until the foreground
    // calls below are done: the background queue stays full for as long
    // as they take, however slow the machine (jobs that slept for a while
    // could all be done before a loaded test got to its calls).
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let background: Vec<_> = (0..40)
        .map(|_| {
            let (pool, running, most, gate) = (
                Arc::clone(&pool),
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&gate),
            );
            tokio::spawn(async move {
                pool.run_background(move |hsm: &Pkcs11Hsm| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let (open, opened) = &*gate;
                    let open = opened
                        .wait_timeout_while(open.lock().expect("gate"), CEILING, |o| !*o)
                        .expect("gate")
                        .0;
                    assert!(*open, "the gate was never opened");
                    drop(open);
                    running.fetch_sub(1, Ordering::SeqCst);
                    hsm.pan_key_version()
                })
                .await
            })
        })
        .collect();
    // Once background work is under way:
    let started = Instant::now();
    while running.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < CEILING, "no background job started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Foreground calls meanwhile are served by the other thread, without
    // waiting for the background queue: in a first-come pool each would
    // wait for the 40 jobs queued before it, held at the gate: forever.
    let foreground = async {
        for _ in 0..20 {
            let sealed = pool
                .run(|hsm: &Pkcs11Hsm| hsm.seal("al_lanes", "pan", b"4111111111111111"))
                .await
                .expect("run")
                .expect("seal");
            assert!(!sealed.is_empty());
        }
    };
    tokio::time::timeout(CEILING, foreground)
        .await
        .expect("the foreground calls waited for the background queue");
    assert_eq!(
        pool.background_done(),
        0,
        "a background job passed the shut gate"
    );
    {
        let (open, opened) = &*gate;
        *open.lock().expect("gate") = true;
        opened.notify_all();
    }
    for job in background {
        assert_eq!(job.await.expect("task").expect("run"), 1);
    }
    // A job's answer leaves before its thread counts it done.
    let answered = Instant::now();
    while pool.background_done() < 40 {
        assert!(
            answered.elapsed() < CEILING,
            "no background job is starved: {} done",
            pool.background_done()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "background jobs overlapped");
}

/// The benchmarks' hook: a known key in the token-key cache makes the
/// software cryptogram, and a record whose blob differs does not reach it.
#[test]
fn a_cached_test_token_key_makes_the_software_cryptogram() {
    let tk = random::<16>();
    let blob = [7u8; 24];
    hsm()
        .cache_token_key_for_test("tr-cached", 9, &blob, &tk)
        .expect("cache");
    let key = vault_hsm::WrappedTokenKey {
        scheme: "visa",
        kek_version: 9,
        wrapped: &blob,
    };
    assert_eq!(
        hsm()
            .cryptogram_mac("tr-cached", Some(key), 4, b"d")
            .expect("mac"),
        software_cryptogram_mac(&tk, 4, b"d")
    );
    let other = vault_hsm::WrappedTokenKey {
        wrapped: &[8u8; 24],
        ..key
    };
    assert!(
        hsm()
            .cryptogram_mac("tr-cached", Some(other), 5, b"d")
            .is_err()
    );
    hsm().destroy_token_key("tr-cached").expect("destroy");
}
