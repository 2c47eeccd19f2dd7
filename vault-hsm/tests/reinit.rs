//! Re-initialising the PKCS#11 module under load (SoftHSM2 frees destroyed
//! session objects only at `C_Finalize`): calls racing the re-initialisation
//! keep giving right answers, no handle or key copy of the old module
//! generation is used, and the memory SoftHSM2 keeps per cryptogram stops
//! growing.

mod common;

use std::sync::Arc;

use common::{shared_hsm, software_cryptogram_mac};
use vault_hsm::keys::import_token_key_for_test;
use vault_hsm::{Hsm, HsmError, Pkcs11Hsm, SOFTHSM_REINIT_AFTER_OBJECTS};
use vault_proto::Pan;

fn hsm() -> &'static Arc<Pkcs11Hsm> {
    &shared_hsm("vaultd-reinit").1
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// One test per binary: the budget is per module and process-wide.
#[test]
fn reinitialisation_under_load_keeps_answers_right_and_memory_flat() {
    let hsm = hsm();
    assert_eq!(
        hsm.reinit_after_objects(),
        SOFTHSM_REINIT_AFTER_OBJECTS,
        "SoftHSM2 is re-initialised by default"
    );

    // Token keys with known values, and values sealed before any
    // re-initialisation.
    let keys: Vec<(String, [u8; 16])> = (0..8u8)
        .map(|i| (format!("tr-reinit-{i}"), [i.wrapping_mul(37) ^ 0x5a; 16]))
        .collect();
    for (token_ref, tk) in &keys {
        import_token_key_for_test(hsm, token_ref, tk).expect("import token key");
    }
    let sealed = hsm
        .seal("alias-before", "pan", b"4111111111111111")
        .expect("seal");
    let pan = Pan::new("4111111111111111".to_owned());
    let fingerprint = hsm.fingerprint("t1", &pan).expect("fingerprint");

    // A small budget: a re-initialisation every 40 session objects, while
    // three threads make cryptograms (one derived key each, plus key
    // copies), seal and open, and fingerprint.
    hsm.set_reinit_after_objects(40);
    let threads: Vec<_> = (0..3u16)
        .map(|t| {
            let keys = keys.clone();
            let sealed = sealed.clone();
            std::thread::spawn(move || {
                let hsm = self::hsm();
                let pan = Pan::new("4111111111111111".to_owned());
                for i in 0..400u16 {
                    let (token_ref, tk) = &keys[usize::from(i + t) % keys.len()];
                    let atc = i * 3 + t;
                    let data = [t as u8, i as u8, 0xAB];
                    assert_eq!(
                        hsm.cryptogram_mac(token_ref, atc, &data).expect("mac"),
                        software_cryptogram_mac(tk, atc, &data),
                        "thread {t} call {i}: a cryptogram used the wrong key"
                    );
                    if i % 10 == 0 {
                        let opened = hsm.open("alias-before", "pan", &sealed).expect("open");
                        assert_eq!(&opened[..], b"4111111111111111");
                        let again = hsm.seal("alias-x", "pan", b"x").expect("seal");
                        assert_eq!(&hsm.open("alias-x", "pan", &again).expect("open")[..], b"x");
                        assert_eq!(hsm.fingerprint("t1", &pan).expect("fp"), fingerprint);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    let reinits = hsm.reinitializations();
    assert!(reinits >= 20, "only {reinits} re-initialisations");

    // A token key destroyed after re-initialisations is gone for every
    // thread (no copy or handle of it survives), and one unwrapped anew
    // works.
    let (gone, _) = &keys[0];
    hsm.destroy_token_key(gone).expect("destroy");
    assert!(matches!(
        hsm.cryptogram_mac(gone, 1, b"d"),
        Err(HsmError::KeyMissing(_))
    ));
    assert!(matches!(
        std::thread::spawn({
            let gone = gone.clone();
            move || self::hsm().cryptogram_mac(&gone, 2, b"d")
        })
        .join()
        .expect("thread"),
        Err(HsmError::KeyMissing(_))
    ));

    // Memory: without re-initialisation SoftHSM2 keeps ~240 B per
    // cryptogram (60,000 of them: ~14 MB). With a budget of 5,000 objects
    // it stays flat once warm.
    hsm.set_reinit_after_objects(5_000);
    let (token_ref, tk) = &keys[1];
    let run = |n: u16| {
        for atc in 0..n {
            let mac = hsm.cryptogram_mac(token_ref, atc, b"m").expect("mac");
            if atc % 5_000 == 0 {
                assert_eq!(mac, software_cryptogram_mac(tk, atc, b"m"));
            }
        }
    };
    run(20_000);
    let warm = rss_kb();
    run(60_000);
    let grown = rss_kb().saturating_sub(warm);
    assert!(
        grown < 4_096,
        "RSS grew {grown} kB over 60,000 cryptograms with re-initialisation"
    );
}
