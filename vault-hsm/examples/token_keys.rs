//! How token-key installation scales with the number of token keys in a
//! SoftHSM2 token: imports N keys and times each hundred.
//!
//! `cargo run --release -p vault-hsm --example token_keys -- [n]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vault_hsm::keys::{import_token_key_for_test, init_keys};
use vault_hsm::{Hsm, HsmConfig, Pkcs11Hsm, load_pin};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm/create-token.sh");
    let out = Command::new("sh").arg(script).arg(dir.path()).output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("SOFTHSM2_CONF", dir.path().join("softhsm2.conf")) };
    let cfg = HsmConfig {
        module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
        token_label: "vaultd".to_owned(),
        pin: load_pin(Some(&dir.path().join("hsm.pin")))?,
    };
    init_keys(&Pkcs11Hsm::open_admin(&cfg)?)?;
    let hsm = Pkcs11Hsm::open(&cfg)?;
    let mut t = Instant::now();
    for i in 0..n {
        import_token_key_for_test(&hsm, &format!("ref{i}"), &[7u8; 16])?;
        if (i + 1) % 100 == 0 {
            let mac_start = Instant::now();
            hsm.cryptogram_mac(&format!("ref{i}"), None, 1, b"data")?;
            println!(
                "{:>6} keys: {:>8.2} ms per import, cryptogram_mac {:>6.1} µs",
                i + 1,
                t.elapsed().as_secs_f64() * 10.0,
                mac_start.elapsed().as_secs_f64() * 1e6
            );
            t = Instant::now();
        }
    }
    // Steady state: no object created meanwhile.
    let start = Instant::now();
    for i in 0..2000 {
        hsm.cryptogram_mac(&format!("ref{}", i % n), None, 1, b"data")?;
    }
    println!(
        "steady state with {n} keys: cryptogram_mac {:.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
    let start = Instant::now();
    for i in 0..200 {
        hsm.destroy_token_key(&format!("ref{i}"))?;
    }
    println!(
        "destroy_token_key {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3 / 200.0
    );
    Ok(())
}
