//! The re-initialisation tests' shared load (in place and through the
//! standby copy): threads whose calls race re-initialisations, checked
//! against software computations.

use std::sync::Arc;

use vault_hsm::keys::import_token_key_for_test;
use vault_hsm::{Hsm, HsmError, Pkcs11Hsm};
use vault_proto::Pan;

use super::software_cryptogram_mac;

pub type Key = (String, [u8; 16]);

/// Eight token keys with known values, named `<prefix>-<i>`.
pub fn import_keys(hsm: &Pkcs11Hsm, prefix: &str) -> Vec<Key> {
    let keys: Vec<Key> = (0..8u8)
        .map(|i| (format!("{prefix}-{i}"), [i.wrapping_mul(37) ^ 0x5a; 16]))
        .collect();
    for (token_ref, tk) in &keys {
        import_token_key_for_test(hsm, token_ref, tk).expect("import token key");
    }
    keys
}

/// Three threads make `calls` cryptograms each (one derived key each, plus
/// key copies), and every tenth call opens a value sealed before, seals and
/// opens a new one, and fingerprints: every answer is checked.
pub fn cryptograms_under_load(hsm: &'static Arc<Pkcs11Hsm>, keys: &[Key], calls: u16) {
    let sealed = hsm
        .seal("alias-before", "pan", b"4111111111111111")
        .expect("seal");
    let pan = Pan::new("4111111111111111".to_owned());
    let fingerprint = hsm.fingerprint("t1", &pan).expect("fingerprint");
    let threads: Vec<_> = (0..3u16)
        .map(|t| {
            let keys = keys.to_vec();
            let sealed = sealed.clone();
            std::thread::spawn(move || {
                let pan = Pan::new("4111111111111111".to_owned());
                for i in 0..calls {
                    let (token_ref, tk) = &keys[usize::from(i + t) % keys.len()];
                    let atc = i.wrapping_mul(3).wrapping_add(t);
                    let data = [t as u8, i as u8, 0xAB];
                    assert_eq!(
                        hsm.cryptogram_mac(token_ref, None, atc, &data)
                            .expect("mac"),
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
}

/// A token key destroyed after re-initialisations is gone for every
/// thread (no copy or handle of it survives).
pub fn destroyed_key_is_gone_everywhere(hsm: &'static Arc<Pkcs11Hsm>, token_ref: &str) {
    hsm.destroy_token_key(token_ref).expect("destroy");
    assert!(matches!(
        hsm.cryptogram_mac(token_ref, None, 1, b"d"),
        Err(HsmError::KeyMissing(_))
    ));
    let gone = token_ref.to_owned();
    let elsewhere = std::thread::spawn(move || hsm.cryptogram_mac(&gone, None, 2, b"d"))
        .join()
        .expect("thread");
    assert!(matches!(elsewhere, Err(HsmError::KeyMissing(_))));
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Without re-initialisation SoftHSM2 keeps ~240 B per cryptogram (60,000
/// of them: ~14 MB). With a budget of 5,000 objects memory stays flat once
/// warm.
pub fn memory_stays_flat(hsm: &Pkcs11Hsm, (token_ref, tk): &Key) {
    hsm.set_reinit_after_objects(5_000);
    let run = |n: u16| {
        for atc in 0..n {
            let mac = hsm.cryptogram_mac(token_ref, None, atc, b"m").expect("mac");
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
