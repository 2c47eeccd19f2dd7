//! Key copies (session objects shared by every thread) must not die with
//! the thread whose call made them: a session object belongs to the session
//! that created it, and a thread's session closes when the thread exits.
//! Before copies had an owner session of their own, other threads then used
//! a destroyed object, and SoftHSM2 answered some of those calls with
//! `CKR_KEY_TYPE_INCONSISTENT` or `CKR_KEY_FUNCTION_NOT_PERMITTED` (seen in
//! `reinit.rs` under CPU load).

mod common;

use std::sync::Arc;

use common::{shared_hsm, software_cryptogram_mac};
use vault_hsm::keys::import_token_key_for_test;
use vault_hsm::{Hsm, Pkcs11Hsm};
use vault_proto::Pan;

fn hsm() -> &'static Arc<Pkcs11Hsm> {
    &shared_hsm("vaultd-copy-owner").1
}

// One test per binary: it counts the instance's copies.
#[test]
fn copies_outlive_the_threads_that_made_them() {
    let tk = [0x3c; 16];
    import_token_key_for_test(hsm(), "tr-owner", &tk).expect("import token key");
    let pan = Pan::new("4111111111111111".to_owned());

    // A thread uses the keys (a token key is copied at its second use, the
    // vault's own keys at their first), then exits and its session closes.
    let fingerprint = std::thread::spawn(move || {
        let h = hsm();
        for atc in 1..=3u16 {
            assert_eq!(
                h.cryptogram_mac("tr-owner", None, atc, b"d").expect("mac"),
                software_cryptogram_mac(&tk, atc, b"d")
            );
        }
        h.fingerprint("t1", &Pan::new("4111111111111111".to_owned()))
            .expect("fingerprint")
    })
    .join()
    .expect("thread");
    let made = hsm().key_copies_made();
    assert!(made >= 2, "the thread made the copies ({made})");

    // Other threads go on with the same copies: none is made again, and
    // every answer is right.
    for t in 0..2u16 {
        std::thread::spawn(move || {
            let h = hsm();
            for atc in 10..20u16 {
                let atc = atc + t * 10;
                assert_eq!(
                    h.cryptogram_mac("tr-owner", None, atc, b"d").expect("mac"),
                    software_cryptogram_mac(&tk, atc, b"d")
                );
            }
        })
        .join()
        .expect("thread");
    }
    assert_eq!(hsm().fingerprint("t1", &pan).expect("fp"), fingerprint);
    assert_eq!(
        hsm().key_copies_made(),
        made,
        "a copy died with the thread that made it"
    );
}
