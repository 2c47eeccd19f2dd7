//! How long an in-place SoftHSM2 re-initialisation holds client calls now
//! that the token holds only the vault's fixed keys (issue 20): a token on
//! disk with the vault keys and one KEK, `n` network tokens (their keys
//! wrapped as a token service delivers them; default 100,000), the token
//! key cache full, three threads making cryptograms over every token while
//! the module is re-initialised in place again and again.
//!
//! `cargo run --release -p vault-hsm --example reinit_pause -- [n] [rounds] [budget] [standby]`
//!
//! `standby`: re-initialise through the standby copy of the library, as
//! vaultd does by default (`[hsm] reinit_standby`); without it, in place.
//!
//! `budget`: re-initialise after this many session objects, as vaultd does
//! (default 600,000, SoftHSM2's: the pause then includes freeing that many
//! destroyed objects); 0: at once, each round.
//!
//! Prints each round's pause (calls held: `C_Finalize`, `C_Initialize`,
//! the token loaded again) and the slowest client call around it, which
//! also pays the new session, login, key copies and token-key unwraps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aes::cipher::{Array, KeyInit};
use aes_kw::KwAes256;
use vault_hsm::keys::{import_kek, init_keys};
use vault_hsm::{Hsm, Pkcs11Hsm, WrappedTokenKey};
use vault_testkit::{Token, disk_temp_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let budget: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(vault_hsm::SOFTHSM_REINIT_AFTER_OBJECTS);
    // A token on the ordinary disk (beside the workspace), as deployed.
    let dir = disk_temp_dir("reinit-pause-");
    let token = Token::create(dir.path(), "reinit");
    // SAFETY: before any thread or PKCS#11 module reads the environment.
    unsafe { token.export_conf() };
    let cfg = token.hsm_config();
    let admin = Pkcs11Hsm::open_admin(&cfg)?;
    init_keys(&admin)?;
    let (mut c1, mut c2) = ([0u8; 32], [0u8; 32]);
    admin.random(&mut c1)?;
    admin.random(&mut c2)?;
    for (name, c) in [("c1", &c1), ("c2", &c2)] {
        let hex: String = c.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.path().join(name), format!("{hex}\n"))?;
    }
    import_kek(
        &admin,
        "visa",
        &[&dir.path().join("c1"), &dir.path().join("c2")],
    )?;
    drop(admin);
    let kek: [u8; 32] = std::array::from_fn(|i| c1[i] ^ c2[i]);
    let kw = KwAes256::new(&Array::from(kek));
    let blobs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut tk = [0u8; 16];
            tk[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut w = [0u8; 24];
            kw.wrap_key(&tk, &mut w).expect("wrap");
            w.to_vec()
        })
        .collect();
    let blobs = Arc::new(blobs);

    let standby = args.next().is_some_and(|a| a == "standby");
    let hsm = Arc::new(Pkcs11Hsm::open(&cfg)?);
    hsm.set_reinit_standby(standby);
    hsm.set_reinit_after_objects(0);
    let objects = vault_hsm::keys::list_keys(&hsm)?.len();
    // Fill the token key cache.
    let t = Instant::now();
    for (i, b) in blobs
        .iter()
        .enumerate()
        .take(vault_hsm::pkcs11::DEFAULT_TOKEN_KEY_CACHE)
    {
        hsm.accept_token_key("visa", &format!("tr{i}"), b)?;
    }
    println!(
        "{n} tokens, {objects} token objects in the HSM; {} keys unwrapped in {:.0} ms",
        vault_hsm::pkcs11::DEFAULT_TOKEN_KEY_CACHE,
        t.elapsed().as_secs_f64() * 1e3
    );
    let stop = Arc::new(AtomicBool::new(false));
    let worst_us = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..3)
        .map(|th| {
            let (hsm, blobs, stop, worst, calls) = (
                hsm.clone(),
                blobs.clone(),
                stop.clone(),
                worst_us.clone(),
                calls.clone(),
            );
            std::thread::spawn(move || {
                let mut i = th * 7919;
                while !stop.load(Ordering::Relaxed) {
                    // 90% of calls on the cached tokens, 10% anywhere.
                    let idx = if i % 10 == 0 { i % n } else { i % 4_000 };
                    let key = WrappedTokenKey {
                        scheme: "visa",
                        kek_version: 1,
                        wrapped: &blobs[idx],
                    };
                    let t = Instant::now();
                    hsm.cryptogram_mac(&format!("tr{idx}"), Some(key), 1, b"payment")
                        .expect("mac");
                    worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut last_pause = hsm.stats().expect("stats").last_reinit_pause_ms;
    for round in 0..rounds {
        worst_us.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let steady = worst_us.swap(0, Ordering::Relaxed);
        let before = hsm.reinitializations();
        let t = Instant::now();
        // Budget 0 here: the next session object crosses it.
        hsm.set_reinit_after_objects(budget.max(1));
        while hsm.reinitializations() == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        let made_in = t.elapsed();
        hsm.set_reinit_after_objects(0);
        // Until this round's pause is recorded (it may outlast any fixed
        // wait), then 300 ms of calls after it.
        let seen = Instant::now();
        let stats = loop {
            let s = hsm.stats().expect("stats");
            if s.last_reinit_pause_ms != last_pause || seen.elapsed() > Duration::from_secs(10) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        last_pause = stats.last_reinit_pause_ms;
        std::thread::sleep(Duration::from_millis(300));
        println!(
            "round {round}: {:.1} s to the budget; pause {} ms; slowest call {:.1} ms until 300 ms after it, {:.1} ms in 300 ms before",
            made_in.as_secs_f64(),
            stats.last_reinit_pause_ms,
            worst_us.load(Ordering::Relaxed) as f64 / 1e3,
            steady as f64 / 1e3
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread");
    }
    println!(
        "{} cryptograms; {} re-initialisations, {} through the standby copy",
        calls.load(Ordering::Relaxed),
        hsm.reinitializations(),
        hsm.standby_switches()
    );
    Ok(())
}
