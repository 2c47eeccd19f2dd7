//! SoftHSM2 tokens in temp dirs, made with `softhsm/create-token.sh`: the
//! script operators run, so every test, example, fuzz run and bench makes
//! its token the way a deployment does. A token dir holds
//! `softhsm2.conf`, `tokens/` (0700), `hsm.pin` (the user PIN, 0600) and
//! `so.pin`.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when its module initialises, and
//! the variable is process-global: a process that loads the module itself
//! uses one token for its whole life ([`process_token`], or
//! [`Token::export_conf`] once). A process that only starts daemons passes
//! [`Token::conf`] in each child's environment and may make any number.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::remove_at_exit;

/// The PKCS#11 module of SoftHSM2 on this machine (the paths
/// `scripts/softhsm-module` looks at).
pub fn softhsm_module() -> String {
    for m in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(m).exists() {
            return m.to_owned();
        }
    }
    panic!("SoftHSM2 is not installed (apt-get install softhsm2)");
}

/// `softhsm/create-token.sh` of this workspace.
pub fn create_token_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm/create-token.sh")
}

/// A SoftHSM2 token in a directory of its own.
#[derive(Debug, Clone)]
pub struct Token {
    pub dir: PathBuf,
    pub label: String,
}

impl Token {
    /// Makes a token labelled `label` in `dir` (created if missing) with
    /// `softhsm/create-token.sh DIR LABEL`. Leaves the process's
    /// environment alone.
    pub fn create(dir: &Path, label: &str) -> Token {
        let out = Command::new("sh")
            .arg(create_token_script())
            .arg(dir)
            .arg(label)
            .output()
            .expect("run create-token.sh");
        assert!(
            out.status.success(),
            "create-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let conf = stdout
            .trim()
            .strip_prefix("export SOFTHSM2_CONF=")
            .expect("export line");
        let dir = Path::new(conf)
            .parent()
            .expect("the conf is in the token dir")
            .to_path_buf();
        assert_eq!(Path::new(conf), dir.join("softhsm2.conf"));
        Token {
            dir,
            label: label.to_owned(),
        }
    }

    /// The `SOFTHSM2_CONF` that names this token's directory.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The user PIN's file (mode 0600, as vaultd wants it).
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("hsm.pin")
    }

    /// The user PIN.
    pub fn pin(&self) -> String {
        let text = std::fs::read_to_string(self.pin_file()).expect("read the PIN file");
        text.lines().next().unwrap_or_default().trim().to_owned()
    }

    /// Points this process's `SOFTHSM2_CONF` at the token.
    ///
    /// # Safety
    ///
    /// As [`std::env::set_var`]: no other thread may read or write the
    /// environment meanwhile (a loaded PKCS#11 module, libc's `getenv`).
    /// Call it once per process, before a SoftHSM2 module is loaded: the
    /// module reads the variable once.
    pub unsafe fn export_conf(&self) {
        // SAFETY: the caller's contract above.
        unsafe { std::env::set_var("SOFTHSM2_CONF", self.conf()) };
    }

    /// How vault-hsm opens this token: SoftHSM2's module, the label, the
    /// PIN from the PIN file.
    #[cfg(feature = "hsm")]
    pub fn hsm_config(&self) -> vault_hsm::HsmConfig {
        vault_hsm::HsmConfig {
            module: PathBuf::from(softhsm_module()),
            token_label: self.label.clone(),
            pin: vault_hsm::load_pin(Some(&self.pin_file())).expect("pin file"),
        }
    }

    /// Makes the vault's keys on the token (what `vaultd keys init` does),
    /// in an admin session closed again before returning.
    #[cfg(feature = "hsm")]
    pub fn init_vault_keys(&self) {
        let admin = vault_hsm::Pkcs11Hsm::open_admin(&self.hsm_config()).expect("open admin");
        vault_hsm::keys::init_keys(&admin).expect("init keys");
    }

    /// [`Token::hsm_config`] with another PIN (a wrong one, for tests).
    #[cfg(feature = "hsm")]
    pub fn hsm_config_with_pin(&self, pin: &str) -> vault_hsm::HsmConfig {
        vault_hsm::HsmConfig {
            pin: zeroize::Zeroizing::new(pin.to_owned()),
            ..self.hsm_config()
        }
    }
}

/// A temp dir in the workspace's `target/`, on the ordinary disk (a
/// deployed token's file system, not tmpfs), removed on drop.
pub fn disk_temp_dir(prefix: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&base).expect("target dir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("temp dir")
}

/// The token of this process: made at the first call, in a new temp dir
/// (removed when the process exits), labelled `label`, with
/// `SOFTHSM2_CONF` pointed at it. Every later call returns the same token,
/// so every test of a binary shares it; a later call with another label
/// panics (SoftHSM2 would not see a second token's directory).
///
/// The first call must come before any SoftHSM2 module is loaded and while
/// no thread reads the environment outside Rust's `std::env` (whose calls
/// are serialised): tests call it before they open the HSM.
pub fn process_token(label: &str) -> &'static Token {
    static TOKEN: OnceLock<Token> = OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{label}-"))
            .tempdir()
            .expect("temp dir")
            .keep();
        remove_at_exit(dir.clone());
        let token = Token::create(&dir, label);
        // SAFETY: inside the OnceLock initialiser, once per process, before
        // a module is loaded (the contract above).
        unsafe { token.export_conf() };
        token
    });
    assert_eq!(
        token.label, label,
        "one SoftHSM2 token per process: SOFTHSM2_CONF is read once"
    );
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_token_sh_makes_a_token_with_a_private_pin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let token = Token::create(&dir.path().join("hsm"), "kit-test");
        assert_eq!(token.dir, dir.path().join("hsm"));
        assert!(token.conf().is_file());
        let mode = std::fs::metadata(token.pin_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(token.pin().len(), 32, "16 random bytes in hex");
        let slots = Command::new("softhsm2-util")
            .arg("--show-slots")
            .env("SOFTHSM2_CONF", token.conf())
            .output()
            .expect("softhsm2-util");
        assert!(String::from_utf8_lossy(&slots.stdout).contains("kit-test"));
    }
}
