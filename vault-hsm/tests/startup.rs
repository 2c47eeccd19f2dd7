//! Start-up failures say which module, which token and what to run. One test
//! function on purpose: the wrong-PIN check must run before any successful
//! login in this process (PKCS#11 login state is per process), and the
//! environment is process-global.

mod common;

use std::path::PathBuf;

use common::create_token;
use vault_hsm::keys::init_keys;
use vault_hsm::pkcs11::PIN_ENV;
use vault_hsm::{Hsm, HsmConfig, HsmError, Pkcs11Hsm, load_pin};
use vault_testkit::softhsm_module;
use zeroize::Zeroizing;

fn unavailable(result: Result<Pkcs11Hsm, HsmError>) -> String {
    match result {
        Err(HsmError::Unavailable(msg)) => msg,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn start_up_errors_are_clear() {
    // SAFETY: the only test in this binary; no other thread reads the env.
    unsafe { std::env::remove_var(PIN_ENV) };

    // Missing module.
    let msg = unavailable(Pkcs11Hsm::open(&HsmConfig {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        token_label: "vaultd".to_owned(),
        pin: Zeroizing::new("1234".to_owned()),
    }));
    assert!(msg.contains("/nonexistent/libpkcs11.so"), "{msg}");
    assert!(
        msg.contains("softhsm2") && msg.contains("[hsm] module"),
        "{msg}"
    );

    let token = create_token("vaultd-startup");

    // Missing token: names the label wanted, the labels found, the fix.
    let mut cfg = token.hsm_config();
    cfg.token_label = "no-such-token".to_owned();
    let msg = unavailable(Pkcs11Hsm::open(&cfg));
    assert!(
        msg.contains("\"no-such-token\"") && msg.contains(&softhsm_module()),
        "{msg}"
    );
    assert!(msg.contains("\"vaultd-startup\""), "{msg}");
    assert!(
        msg.contains("softhsm2-util --init-token --free --label no-such-token"),
        "{msg}"
    );

    // Wrong PIN: says so, never prints it.
    let msg = unavailable(Pkcs11Hsm::open(
        &token.hsm_config_with_pin("wrong-pin-4711"),
    ));
    assert!(
        msg.contains("wrong user PIN") && msg.contains("vaultd-startup"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pin-4711"), "{msg}");

    // Right PIN, no keys yet: names every missing key and `vaultd keys init`.
    let pin = load_pin(Some(&token.dir.join("hsm.pin"))).expect("pin");
    match Pkcs11Hsm::open(&token.hsm_config()) {
        Err(err @ HsmError::KeyMissing(_)) => {
            let msg = err.to_string();
            for part in [
                "vault.pan.v1",
                "vault.fp",
                "vault.audit",
                "vaultd keys init",
            ] {
                assert!(msg.contains(part), "{msg}");
            }
            assert!(!msg.contains(pin.as_str()), "{msg}");
        }
        other => panic!("expected KeyMissing, got {other:?}"),
    }

    // Admin mode opens without keys; after `keys init` the daemon mode opens.
    let admin = Pkcs11Hsm::open_admin(&token.hsm_config()).expect("admin");
    assert_eq!(admin.pan_key_version(), 0);
    assert!(matches!(
        admin.seal("al", "pan", b"x"),
        Err(HsmError::KeyMissing(label)) if label == "vault.pan.v1"
    ));
    let created = init_keys(&admin).expect("init");
    assert!(created.iter().all(|(_, created)| *created), "{created:?}");
    let hsm = Pkcs11Hsm::open(&token.hsm_config()).expect("open");
    assert_eq!(hsm.pan_key_version(), 1);
    hsm.check().expect("check");
    // Two instances on one module share the initialised context.
    let sealed = hsm.seal("al", "pan", b"x").expect("seal");
    assert_eq!(&admin.open("al", "pan", &sealed).expect("open")[..], b"x");

    // PIN loading: the file's first line, trimmed; the env var wins; neither
    // is a clear error.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pin");
    std::fs::write(&file, "  s3cret \nsecond line\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    assert_eq!(load_pin(Some(&file)).expect("pin").as_str(), "s3cret");
    std::fs::write(&file, "\n").expect("write");
    assert!(load_pin(Some(&file)).is_err());
    let missing = load_pin(Some(&dir.path().join("absent"))).expect_err("absent");
    assert!(missing.to_string().contains("absent"), "{missing}");
    let neither = load_pin(None).expect_err("neither");
    assert!(neither.to_string().contains(PIN_ENV), "{neither}");
    // SAFETY: as above.
    unsafe { std::env::set_var(PIN_ENV, "from-env") };
    assert_eq!(load_pin(Some(&file)).expect("pin").as_str(), "from-env");
    assert_eq!(load_pin(None).expect("pin").as_str(), "from-env");
    unsafe { std::env::remove_var(PIN_ENV) };
}

/// A PIN file other users may read is refused, naming its mode (and never
/// the PIN); owner- and group-only files are read.
#[test]
fn a_pin_file_open_to_other_users_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pin");
    std::fs::write(&path, "1234-secret-pin\n").expect("write");
    for (mode, ok) in [(0o600, true), (0o440, true), (0o644, false), (0o602, false)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let r = load_pin(Some(&path));
        if ok {
            assert_eq!(r.expect("readable").as_str(), "1234-secret-pin");
        } else {
            let msg = r.expect_err("open to others").to_string();
            assert!(
                msg.contains("other users") && msg.contains(&format!("{mode:04o}")),
                "{msg}"
            );
            assert!(!msg.contains("1234-secret-pin"), "{msg}");
        }
    }
}
