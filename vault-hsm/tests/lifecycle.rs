//! PAN key rotation and destruction, and session recovery after the token
//! logs the process out. Sequential in one test: both change state that
//! every other call in the process would see.

mod common;

use common::shared_hsm;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use vault_hsm::keys::{destroy_pan_key, rotate_audit_key, rotate_pan_key};
use vault_hsm::{Hsm, HsmError};
use vault_testkit::softhsm_module;

#[test]
fn rotation_destruction_and_recovery() {
    let (token, hsm) = shared_hsm("vaultd-lifecycle");

    // Rotation: new seals use v2, v1 ciphertexts still open.
    let old = hsm
        .seal("al_1", "pan", b"4111111111111111")
        .expect("seal v1");
    assert_eq!(rotate_pan_key(hsm).expect("rotate"), 2);
    assert_eq!(hsm.pan_key_version(), 2);
    let new = hsm
        .seal("al_1", "pan", b"4111111111111111")
        .expect("seal v2");
    assert_eq!(&new[..4], &2u32.to_be_bytes());
    assert_eq!(
        &hsm.open("al_1", "pan", &old).expect("open v1")[..],
        b"4111111111111111"
    );
    assert_eq!(
        &hsm.open("al_1", "pan", &new).expect("open v2")[..],
        b"4111111111111111"
    );
    // A ciphertext cannot be moved to another key version: the version is in the AAD.
    let mut relabelled = old.clone();
    relabelled[..4].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        hsm.open("al_1", "pan", &relabelled),
        Err(HsmError::Integrity)
    ));

    // Another thread holds its own session copy of v1 (made on first use).
    let (ask, jobs) = std::sync::mpsc::channel::<Vec<u8>>();
    let (answer, answers) = std::sync::mpsc::channel();
    let worker = std::thread::scope(|scope| {
        scope.spawn(|| {
            for sealed in jobs {
                let opened = hsm.open("al_1", "pan", &sealed).map(|p| p.to_vec());
                answer.send(opened).expect("send");
            }
        });
        ask.send(old.clone()).expect("send");
        assert!(answers.recv().expect("answer").is_ok(), "worker opens v1");

        // Destroying: never the newest; v1 goes, its ciphertexts with it, on
        // every thread (no session copy outlives its key).
        assert!(destroy_pan_key(hsm, 2).is_err());
        assert!(destroy_pan_key(hsm, 1).expect("destroy v1"));
        ask.send(old.clone()).expect("send");
        let after = answers.recv().expect("answer");
        drop(ask);
        after
    });
    assert!(
        matches!(&worker, Err(HsmError::KeyMissing(label)) if label == "vault.pan.v1"),
        "a thread still opened v1 after it was destroyed: {:?}",
        worker.as_ref().map(|_| "opened")
    );
    assert!(!destroy_pan_key(hsm, 1).expect("destroy v1 again"));
    assert!(matches!(
        hsm.open("al_1", "pan", &old),
        Err(HsmError::KeyMissing(label)) if label == "vault.pan.v1"
    ));
    // A fresh open finds v2 as the newest.
    let reopened = vault_hsm::Pkcs11Hsm::open(&token.hsm_config()).expect("reopen");
    assert_eq!(reopened.pan_key_version(), 2);

    // Audit key rotation: new MACs use v2, v1 MACs can still be checked,
    // and the two keys differ.
    let prev = [5u8; 32];
    assert_eq!(hsm.audit_key_version(), 1);
    let mac_v1 = hsm.audit_mac(&prev, b"seal").expect("mac v1");
    assert_eq!(rotate_audit_key(hsm).expect("rotate audit"), 2);
    assert_eq!(hsm.audit_key_version(), 2);
    let mac_v2 = hsm.audit_mac(&prev, b"seal").expect("mac v2");
    assert_ne!(mac_v1, mac_v2);
    assert_eq!(hsm.audit_mac_with(1, &prev, b"seal").expect("v1"), mac_v1);
    assert_eq!(hsm.audit_mac_with(2, &prev, b"seal").expect("v2"), mac_v2);
    assert!(matches!(
        hsm.audit_mac_with(3, &prev, b"seal"),
        Err(HsmError::KeyMissing(label)) if label == "vault.audit.v3"
    ));
    // Another process's rotation is seen after a refresh.
    assert_eq!(reopened.audit_key_version(), 1);
    assert_eq!(reopened.refresh_key_versions().expect("refresh"), 2);
    assert_eq!(reopened.audit_key_version(), 2);

    // Recovery: log the whole process out behind the HSM's back (PKCS#11
    // login state is per process). The next call fails as Unavailable and
    // drops this thread's session; the one after re-opens and logs in.
    hsm.check().expect("session open");
    let ctx = Pkcs11::new(softhsm_module()).expect("module");
    // Already initialised by the vault in this process.
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label() == token.label)
                .unwrap_or(false)
        })
        .expect("slot");
    let session = ctx.open_ro_session(slot).expect("session");
    session.logout().expect("logout");
    drop(session);
    match hsm.seal("al_2", "pan", b"4111111111111111") {
        Err(HsmError::Unavailable(msg)) => assert!(msg.contains("UserNotLoggedIn"), "{msg}"),
        other => panic!("expected Unavailable after logout, got {other:?}"),
    }
    let sealed = hsm
        .seal("al_2", "pan", b"4111111111111111")
        .expect("recovered");
    assert_eq!(
        &hsm.open("al_2", "pan", &sealed).expect("open")[..],
        b"4111111111111111"
    );
}
