//! Raw rates measured beside the vault, in the same run, so its throughput
//! can be read as a ratio: one SoftHSM session doing AES-GCM seal + HMAC
//! fingerprint (the tokenize path's crypto), one and two doing derive + CMAC
//! (the cryptogram, with the token key an unwrapped session object as vaultd
//! keeps it), and redb single-insert durable commits (what the vault would
//! be bound to without group commit). Each runs blocking, on one thread
//! unless it says otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use serde::Serialize;
use vault_hsm::{Hsm, HsmConfig, HsmError, Pkcs11Hsm, WrappedTokenKey, load_pin};
use vault_proto::Pan;

/// Which token to open (normally the daemon's own).
#[derive(Debug, Clone)]
pub struct HsmTarget {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: Option<PathBuf>,
}

/// One baseline: a rate, or why it could not be measured.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: &'static str,
    pub what: &'static str,
    pub ops: u64,
    pub secs: f64,
    pub per_sec: Option<f64>,
    pub error: Option<String>,
}

impl Baseline {
    fn measured(name: &'static str, what: &'static str, ops: u64, took: Duration) -> Self {
        let secs = took.as_secs_f64();
        Baseline {
            name,
            what,
            ops,
            secs,
            per_sec: (secs > 0.0).then(|| ops as f64 / secs),
            error: None,
        }
    }

    fn failed(name: &'static str, what: &'static str, error: String) -> Self {
        Baseline {
            name,
            what,
            ops: 0,
            secs: 0.0,
            per_sec: None,
            error: Some(error),
        }
    }
}

pub const HSM_SEAL_FP: &str = "hsm_seal_fingerprint";
pub const HSM_DERIVE_CMAC: &str = "hsm_derive_cmac";
pub const HSM_DERIVE_CMAC_2T: &str = "hsm_derive_cmac_2t";
pub const REDB_COMMIT: &str = "redb_commit";
pub const REDB_COMMIT_1PC: &str = "redb_commit_1pc";

const SEAL_FP_WHAT: &str = "SoftHSM, 1 session: AES-256-GCM seal (16 B) + HMAC-SHA-256 fingerprint";
const DERIVE_CMAC_WHAT: &str = "SoftHSM, 1 session: derive session key (AES-ECB) from a cached \
     token key + AES-CMAC (46 B) + destroy it";
const DERIVE_CMAC_2T_WHAT: &str = "SoftHSM, 2 threads with a session each: derive + AES-CMAC + \
     destroy from cached token keys, total (how the HSM scales)";

/// The scheme and KEK version the baseline's cached token keys claim. The
/// cache answers by token reference, version and blob, so neither is looked
/// up; were an entry evicted, the cryptogram would look for
/// `tsp.visa.kek.v1` and fail rather than measure something else.
const BASELINE_SCHEME: &str = vault_proto::Scheme::Visa.name();
const BASELINE_KEK_VERSION: u32 = 1;

/// Runs `op` repeatedly for `time`; returns how many ran and how long it took.
fn for_time<E>(
    time: Duration,
    mut op: impl FnMut(u64) -> Result<(), E>,
) -> Result<(u64, Duration), E> {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < time {
        // Check the clock every 64 ops; one op is microseconds.
        for _ in 0..64 {
            op(n)?;
            n += 1;
        }
    }
    Ok((n, start.elapsed()))
}

/// The two HSM baselines on one session of the target token.
pub fn hsm(target: &HsmTarget, time: Duration) -> Vec<Baseline> {
    let opened = load_pin(target.pin_file.as_deref()).and_then(|pin| {
        Pkcs11Hsm::open(&HsmConfig {
            module: target.module.clone(),
            token_label: target.token_label.clone(),
            pin,
        })
    });
    let hsm = match opened {
        Ok(h) => h,
        Err(e) => {
            let why = format!("cannot open the HSM: {e}");
            return vec![
                Baseline::failed(HSM_SEAL_FP, SEAL_FP_WHAT, why.clone()),
                Baseline::failed(HSM_DERIVE_CMAC, DERIVE_CMAC_WHAT, why.clone()),
                Baseline::failed(HSM_DERIVE_CMAC_2T, DERIVE_CMAC_2T_WHAT, why),
            ];
        }
    };
    vec![
        seal_fingerprint(&hsm, time),
        derive_cmac(&hsm, time, 1),
        derive_cmac(&hsm, time, 2),
    ]
}

fn seal_fingerprint(hsm: &Pkcs11Hsm, time: Duration) -> Baseline {
    // The public test card: the benchmark never handles real card data.
    let pan = Pan::new("4111111111111111".to_owned());
    let run = for_time(time, |_| -> Result<(), HsmError> {
        hsm.seal(
            "bench0000000000000000000000000000",
            "pan",
            pan.expose().as_bytes(),
        )?;
        hsm.fingerprint("bench", &pan)?;
        Ok(())
    });
    match run {
        Ok((n, took)) => Baseline::measured(HSM_SEAL_FP, SEAL_FP_WHAT, n, took),
        Err(e) => Baseline::failed(HSM_SEAL_FP, SEAL_FP_WHAT, e.to_string()),
    }
}

/// Derive + CMAC on `threads` threads at once (each with its own session,
/// as vaultd's HSM threads have), counted together.
fn derive_cmac(hsm: &Pkcs11Hsm, time: Duration, threads: usize) -> Baseline {
    let (name, what) = if threads == 1 {
        (HSM_DERIVE_CMAC, DERIVE_CMAC_WHAT)
    } else {
        (HSM_DERIVE_CMAC_2T, DERIVE_CMAC_2T_WHAT)
    };
    // One token key per thread (payments for different cards use different
    // keys), as vaultd keeps them after the first cryptogram: a session
    // object in the token-key cache, found by the token reference and the
    // stored blob. The key has a fixed value and the blob is a dummy (it is
    // never unwrapped: the cache holds the key); the references are ones
    // no scheme issues. No token object is made. Forgotten afterwards.
    let refs: Vec<String> = (0..threads)
        .map(|t| format!("vault-bench-baseline-{}-{threads}-{t}", std::process::id()))
        .collect();
    let key = [0x5a_u8; 16];
    let blob = [0xa5_u8; 24];
    for token_ref in &refs {
        if let Err(e) = hsm.cache_token_key_for_test(token_ref, BASELINE_KEK_VERSION, &blob, &key) {
            for r in &refs {
                let _ = hsm.destroy_token_key(r);
            }
            return Baseline::failed(name, what, format!("cannot cache a test token key: {e}"));
        }
    }
    // Putting a key in the cache counts as an unwrap; any more would be a
    // miss.
    let (cached_unwraps, _) = hsm.token_key_unwraps();
    // D of DESIGN.md "Cryptograms" for a 16-digit token: 46 bytes.
    let mut data = Vec::with_capacity(46);
    data.push(0x01);
    data.push(16);
    data.extend_from_slice(b"4895370012345678");
    data.extend_from_slice(b"2911");
    data.extend_from_slice(&1250u64.to_be_bytes());
    data.extend_from_slice(b"CHF");
    data.extend_from_slice(&7u16.to_be_bytes());
    data.extend_from_slice(&[0xa1, 0xb2, 0xc3, 0xd4]);
    data.extend_from_slice(b"07");
    let runs: Vec<Result<(u64, Duration), HsmError>> = std::thread::scope(|s| {
        let workers: Vec<_> = refs
            .iter()
            .map(|token_ref| {
                let data = &data;
                let blob = &blob;
                s.spawn(move || {
                    let stored = WrappedTokenKey {
                        scheme: BASELINE_SCHEME,
                        kek_version: BASELINE_KEK_VERSION,
                        wrapped: blob,
                    };
                    for_time(time, |n| -> Result<(), HsmError> {
                        let atc = (n % 65_535) as u16 + 1;
                        hsm.cryptogram_mac(token_ref, Some(stored), atc, data)?;
                        Ok(())
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("baseline thread"))
            .collect()
    });
    let unwraps = hsm.token_key_unwraps().0 - cached_unwraps;
    for token_ref in &refs {
        let _ = hsm.destroy_token_key(token_ref);
    }
    if unwraps > 0 {
        return Baseline::failed(
            name,
            what,
            format!("{unwraps} token keys were unwrapped: the cache missed, not the path measured"),
        );
    }
    let mut total = 0;
    let mut took = Duration::ZERO;
    for run in runs {
        match run {
            Ok((n, t)) => {
                total += n;
                took = took.max(t);
            }
            Err(e) => return Baseline::failed(name, what, e.to_string()),
        }
    }
    Baseline::measured(name, what, total, took)
}

const BENCH_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("bench");

/// Single-insert `Durability::Immediate` commits into a fresh file in `dir`,
/// with and without redb's two-phase commit (vaultd's default is without).
pub fn redb(dir: &Path, time: Duration) -> Vec<Baseline> {
    [
        (
            REDB_COMMIT,
            "redb, 1 thread: one 64 B insert per Durability::Immediate commit, two-phase",
            true,
        ),
        (
            REDB_COMMIT_1PC,
            "redb, 1 thread: one 64 B insert per Durability::Immediate commit, one-phase (vaultd default)",
            false,
        ),
    ]
    .into_iter()
    .map(|(name, what, two_phase)| match redb_commits(dir, time, two_phase) {
        Ok((n, took)) => Baseline::measured(name, what, n, took),
        Err(e) => Baseline::failed(name, what, e),
    })
    .collect()
}

fn redb_commits(dir: &Path, time: Duration, two_phase: bool) -> Result<(u64, Duration), String> {
    let tmp = tempfile::Builder::new()
        .prefix("vault-bench-redb-")
        .tempdir_in(dir)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", dir.display()))?;
    let db = Database::create(tmp.path().join("bench.redb")).map_err(|e| e.to_string())?;
    let value = [0x42_u8; 64];
    for_time(time, |i| -> Result<(), redb::Error> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_two_phase_commit(two_phase);
        txn.open_table(BENCH_TABLE)?.insert(i, value.as_slice())?;
        txn.commit()?;
        Ok(())
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_baseline_commits_and_reports_a_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rates = redb(dir.path(), Duration::from_millis(100));
        assert_eq!(rates.len(), 2);
        for r in &rates {
            assert_eq!(r.error, None);
            assert!(r.ops >= 64, "at least one batch of commits");
            assert!(r.per_sec.is_some_and(|p| p > 0.0));
        }
    }

    /// The token objects in a SoftHSM2 token directory (one file each) and
    /// when a file was last made or removed there: a token object made and
    /// destroyed again still moves the time.
    fn token_objects(dir: &Path) -> (usize, Vec<std::time::SystemTime>) {
        let mut n = 0;
        let mut changed = Vec::new();
        for token in std::fs::read_dir(dir).expect("token dir").flatten() {
            if let Ok(files) = std::fs::read_dir(token.path()) {
                n += files
                    .flatten()
                    .filter(|f| f.path().extension().is_some_and(|e| e == "object"))
                    .count();
                let meta = std::fs::metadata(token.path()).expect("token dir metadata");
                changed.push(meta.modified().expect("mtime"));
            }
        }
        (n, changed)
    }

    /// The HSM baselines on a fresh SoftHSM2 token: the cryptogram ones run
    /// on cached session keys and leave the token's objects as they were.
    /// Skipped without SoftHSM2 (its module path as scripts/softhsm-module
    /// finds it first on Debian).
    #[test]
    fn hsm_baselines_measure_without_making_token_objects() {
        let module = PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
        if !module.exists() {
            eprintln!("skipped: no SoftHSM2 at {}", module.display());
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let token = vault_testkit::Token::create(dir.path(), "bench-test");
        // SAFETY: the only test of this binary that loads a PKCS#11 module
        // (the other one names a missing file), and it sets the variable
        // before loading it; Rust's env calls are serialised.
        unsafe { token.export_conf() };
        let target = HsmTarget {
            module: module.clone(),
            token_label: token.label.clone(),
            pin_file: Some(token.pin_file()),
        };
        let pin = load_pin(target.pin_file.as_deref()).expect("pin");
        let admin = Pkcs11Hsm::open_admin(&HsmConfig {
            module,
            token_label: target.token_label.clone(),
            pin,
        })
        .expect("open admin");
        vault_hsm::keys::init_keys(&admin).expect("init keys");
        drop(admin);
        let tokens = dir.path().join("tokens");
        let objects = token_objects(&tokens);
        assert!(objects.0 >= 3, "the vault's keys are token objects");
        // The file system's clock is coarse (a tick of some ms): a change
        // during the run must show as a later time.
        std::thread::sleep(Duration::from_millis(20));

        let rates = hsm(&target, Duration::from_millis(50));
        assert_eq!(
            token_objects(&tokens),
            objects,
            "no token object made, not even for a while"
        );
        let names: Vec<_> = rates.iter().map(|r| r.name).collect();
        assert_eq!(names, [HSM_SEAL_FP, HSM_DERIVE_CMAC, HSM_DERIVE_CMAC_2T]);
        for r in &rates {
            assert_eq!(r.error, None, "{}", r.name);
            assert!(r.ops >= 64, "{}: at least one batch", r.name);
        }
    }

    #[test]
    fn a_missing_module_is_reported_not_fatal() {
        let rates = hsm(
            &HsmTarget {
                module: PathBuf::from("/nonexistent/libpkcs11.so"),
                token_label: "none".to_owned(),
                pin_file: None,
            },
            Duration::from_millis(10),
        );
        assert_eq!(rates.len(), 3, "one session, two threads, seal+fingerprint");
        assert!(
            rates
                .iter()
                .all(|r| r.error.is_some() && r.per_sec.is_none())
        );
    }
}
