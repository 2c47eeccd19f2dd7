//! Does a cryptogram get slower with the number of token keys held
//! unwrapped (session objects in SoftHSM2)? Caches `n` token keys, then
//! measures derive + CMAC + destroy on two threads over two of them, for
//! each `n` given.
//!
//! `cargo run --release -p vault-hsm --example session_objects -- [n...]`

use std::time::{Duration, Instant};

use vault_hsm::{Hsm, Pkcs11Hsm, WrappedTokenKey};
use vault_testkit::{Token, disk_temp_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let ns = if ns.is_empty() {
        vec![0, 1_000, 4_000, 16_000]
    } else {
        ns
    };
    let dir = disk_temp_dir("session-objects-");
    let token = Token::create(dir.path(), "so");
    // SAFETY: before any thread or PKCS#11 module reads the environment.
    unsafe { token.export_conf() };
    token.init_vault_keys();
    let hsm = Pkcs11Hsm::open(&token.hsm_config())?;
    hsm.set_token_key_cache(1_000_000);
    hsm.set_reinit_after_objects(u64::MAX / 2);
    let blob = [0xa5_u8; 24];
    let data = [7u8; 46];
    let mut held = 0;
    for n in ns {
        while held < n {
            hsm.cache_token_key_for_test(&format!("filler{held}"), 1, &blob, &[held as u8; 16])?;
            held += 1;
        }
        for r in ["m0", "m1"] {
            hsm.cache_token_key_for_test(r, 1, &blob, &[1u8; 16])?;
        }
        let sealed = hsm.seal("alias", "token", b"4895370012345678")?;
        let t = Instant::now();
        let mut k = 0u64;
        let mut un = [0u8; 4];
        while t.elapsed() < Duration::from_secs(1) {
            hsm.random(&mut un)?;
            k += 1;
        }
        let t = Instant::now();
        let mut o = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            hsm.open("alias", "token", &sealed)?;
            o += 1;
        }
        let key = WrappedTokenKey {
            scheme: "visa",
            kek_version: 1,
            wrapped: &blob,
        };
        let t = Instant::now();
        let mut d = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            hsm.cryptogram_mac("m0", Some(key), (d % 60000) as u16 + 1, &data)?;
            d += 1;
        }
        println!("1 thread: random {k}/s, open {o}/s, derive+CMAC+destroy {d}/s");
        let time = Duration::from_secs(2);
        let (macs, opens) = std::thread::scope(|s| {
            let w: Vec<_> = ["m0", "m1"]
                .into_iter()
                .map(|r| {
                    let (hsm, data, blob, sealed) = (&hsm, &data, &blob, &sealed);
                    s.spawn(move || {
                        let key = WrappedTokenKey {
                            scheme: "visa",
                            kek_version: 1,
                            wrapped: blob,
                        };
                        let t = Instant::now();
                        let mut n = 0u64;
                        while t.elapsed() < time {
                            hsm.cryptogram_mac(r, Some(key), (n % 60000) as u16 + 1, data)
                                .unwrap();
                            n += 1;
                        }
                        let t = Instant::now();
                        let mut m = 0u64;
                        while t.elapsed() < time {
                            hsm.open("alias", "token", sealed).unwrap();
                            m += 1;
                        }
                        (n, m)
                    })
                })
                .collect();
            w.into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        println!(
            "{n:>7} keys held: derive+CMAC+destroy {:>7.0}/s, open {:>7.0}/s (2 threads)",
            macs as f64 / 2.0,
            opens as f64 / 2.0
        );
    }
    Ok(())
}
