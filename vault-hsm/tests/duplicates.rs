//! Token keys never end up as two HSM objects under one label: unwrapping
//! replaces whatever object has the label (a provisioning replayed after a
//! crash, by a process that never saw the first object), and deleting or
//! replacing a key removes every object of its label, duplicates left by
//! older versions included.

mod common;

use std::sync::Arc;

use common::{import_visa_kek, shared_hsm, software_cryptogram_mac, wrap};
use vault_hsm::keys::{add_duplicate_token_key_for_test, import_token_key_for_test, list_keys};
use vault_hsm::{Hsm, Pkcs11Hsm};

fn hsm() -> &'static Arc<Pkcs11Hsm> {
    &shared_hsm("vaultd-dups").1
}

/// A second instance with its own handle cache: a restarted daemon.
fn restarted() -> Pkcs11Hsm {
    Pkcs11Hsm::open(&shared_hsm("vaultd-dups").0.hsm_config()).expect("open")
}

fn objects(label: &str) -> usize {
    list_keys(hsm())
        .expect("list")
        .iter()
        .filter(|k| k.label == label)
        .count()
}

#[test]
fn unwrap_and_destroy_leave_one_object_or_none() {
    let dir = tempfile::tempdir().expect("dir");
    let kek = import_visa_kek(hsm(), dir.path());
    let (k1, k2, k3) = ([0x11u8; 16], [0x22u8; 16], [0x33u8; 16]);

    // A replay after a restart: the key is in the token, the new process
    // has never seen it, and unwraps the token's key again.
    hsm()
        .legacy_unwrap_token_object("visa", "tr-replay", &wrap(&kek, &k1))
        .expect("unwrap");
    let after_restart = restarted();
    after_restart
        .legacy_unwrap_token_object("visa", "tr-replay", &wrap(&kek, &k2))
        .expect("unwrap again");
    assert_eq!(
        objects("nt.tr-replay"),
        1,
        "the replay left a second object"
    );
    assert_eq!(
        after_restart
            .cryptogram_mac("tr-replay", None, 5, b"x")
            .expect("mac"),
        software_cryptogram_mac(&k2, 5, b"x")
    );

    // Duplicates an older version left: replaced by an unwrap ...
    import_token_key_for_test(hsm(), "tr-dup", &k1).expect("import");
    add_duplicate_token_key_for_test(hsm(), "tr-dup", &k1).expect("duplicate");
    assert_eq!(objects("nt.tr-dup"), 2);
    let fresh = restarted();
    fresh
        .legacy_unwrap_token_object("visa", "tr-dup", &wrap(&kek, &k3))
        .expect("unwrap over duplicates");
    assert_eq!(objects("nt.tr-dup"), 1);
    assert_eq!(
        fresh.cryptogram_mac("tr-dup", None, 9, b"y").expect("mac"),
        software_cryptogram_mac(&k3, 9, b"y")
    );

    // ... and all destroyed by a delete.
    import_token_key_for_test(hsm(), "tr-dup-del", &k1).expect("import");
    add_duplicate_token_key_for_test(hsm(), "tr-dup-del", &k1).expect("duplicate");
    let fresh = restarted();
    fresh.destroy_token_key("tr-dup-del").expect("destroy");
    assert_eq!(objects("nt.tr-dup-del"), 0);

    // A key unknown to a restarted process is destroyed too (no search on
    // SoftHSM2: the one-pass index knows it).
    import_token_key_for_test(hsm(), "tr-old", &k1).expect("import");
    restarted().destroy_token_key("tr-old").expect("destroy");
    assert_eq!(objects("nt.tr-old"), 0);
}
