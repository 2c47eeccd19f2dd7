//! Rough rates of the tokenize path's HSM calls (random + seal + fingerprint)
//! against a throwaway SoftHSM2 token.
//!
//! `cargo run --release -p vault-hsm --example hsm_rate -- [ops] [threads]`

use std::sync::Arc;
use std::time::Instant;

use vault_hsm::{Hsm, Pkcs11Hsm};
use vault_proto::Pan;
use vault_testkit::Token;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ops: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let threads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);

    let dir = tempfile::tempdir()?;
    let token = Token::create(dir.path(), "vaultd");
    // SAFETY: single-threaded at this point.
    unsafe { token.export_conf() };
    token.init_vault_keys();
    let hsm = Arc::new(Pkcs11Hsm::open(&token.hsm_config())?);
    let pan = Pan::new("4111111111111111".to_owned());

    let time = |name: &str, f: &(dyn Fn(&Pkcs11Hsm) + Sync)| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..ops / threads {
                        f(&hsm);
                    }
                });
            }
        });
        let per_op = start.elapsed() / ops as u32;
        println!(
            "{name:<28} {:>8.2} µs/op  {:>9.0} ops/s ({threads} thread(s))",
            per_op.as_secs_f64() * 1e6,
            1.0 / per_op.as_secs_f64()
        );
    };
    time("random(16)", &|h| {
        let mut b = [0u8; 16];
        h.random(&mut b).expect("random");
    });
    time("seal(16 bytes)", &|h| {
        h.seal("al_0123456789abcdef", "pan", b"4111111111111111")
            .expect("seal");
    });
    time("fingerprint", &|h| {
        h.fingerprint("m-1001", &pan).expect("fingerprint");
    });
    time("random + seal + fingerprint", &|h| {
        let mut b = [0u8; 16];
        h.random(&mut b).expect("random");
        h.seal("al_0123456789abcdef", "pan", b"4111111111111111")
            .expect("seal");
        h.fingerprint("m-1001", &pan).expect("fingerprint");
    });
    Ok(())
}
