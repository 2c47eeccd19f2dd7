//! Running vaultd on the fault-injecting PKCS#11 shim (crate
//! `pkcs11-faults`) in front of SoftHSM2: building the shim, pointing a
//! [`TestEnv`]'s config at it, and arming faults through its control file.

use std::path::PathBuf;
use std::time::Duration;

use crate::{TestEnv, Vaultd, build_package, softhsm_module};

/// The shim's environment variables and counter file (see pkcs11-faults).
const MODULE_ENV: &str = "PKCS11_FAULTS_MODULE";
const FILE_ENV: &str = "PKCS11_FAULTS_FILE";
const INJECTED_SUFFIX: &str = ".injected";

/// Longer than the shim's re-read interval (`RECHECK` in pkcs11-faults,
/// 20 ms), with margin. Not a guess at how fast the machine is: the shim
/// looks at the file again on the first call at least `RECHECK` after its
/// last look, by its own monotonic clock, so every call that starts after
/// this pause sees a plan renamed into place before it, however loaded
/// the machine. (Load can only delay the calls, never make them see the
/// old plan.)
const PLAN_SETTLE: Duration = Duration::from_millis(60);

/// The built shim, `target/<profile>/libpkcs11_faults.so`, built once per
/// test binary with the same profile as the binaries.
pub fn shim_module() -> PathBuf {
    let so = build_package("pkcs11-faults").join("libpkcs11_faults.so");
    assert!(so.exists(), "{} was not built", so.display());
    so
}

/// The control file of `env`'s shim.
pub fn control_path(env: &TestEnv) -> PathBuf {
    env.path().join("pkcs11-faults.plan")
}

/// Rewrites `env`'s config (written by [`TestEnv::write_config`]) so the
/// daemon loads the shim instead of SoftHSM2. Run `keys init` before: that
/// uses the real module.
pub fn use_shim(env: &TestEnv) {
    let cfg = std::fs::read_to_string(env.config_path()).expect("config written");
    let real = format!("module = \"{}\"", softhsm_module());
    assert!(cfg.contains(&real), "config does not name SoftHSM2");
    let shim = format!("module = \"{}\"", shim_module().display());
    std::fs::write(env.config_path(), cfg.replace(&real, &shim)).unwrap();
}

/// Starts `vaultd run` on the shim (config from [`use_shim`]); the control
/// file starts as `off`.
pub fn spawn_on_shim(env: &TestEnv) -> Vaultd {
    set_plan(env, "off");
    let real = softhsm_module();
    let control = control_path(env);
    Vaultd::spawn_with_env(
        env,
        &[(MODULE_ENV, real.as_ref()), (FILE_ENV, control.as_os_str())],
    )
}

/// Arms a plan (`fault=device after=0 count=max`, `off`, ...): written
/// atomically, then waits until the shim must have seen it.
pub fn set_plan(env: &TestEnv, line: &str) {
    let path = control_path(env);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{line}\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::thread::sleep(PLAN_SETTLE);
}

/// Failures the shim has injected in the daemon so far.
pub fn injected(env: &TestEnv) -> u64 {
    let mut name = control_path(env).into_os_string();
    name.push(INJECTED_SUFFIX);
    std::fs::read_to_string(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
