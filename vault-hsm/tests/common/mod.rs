//! Test helper: a fresh SoftHSM2 token in a temp dir, made with
//! softhsm/create-token.sh by vault-testkit. `SOFTHSM2_CONF` is
//! process-global and read once when the module initialises, so each test
//! binary makes one token and every test in it shares that token.

#![allow(dead_code)]

pub mod reinit;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use aes_kw::KwAes256;
use cmac::{Cmac, Mac};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use vault_hsm::Hsm;

use vault_hsm::Pkcs11Hsm;

pub use vault_testkit::Token;

/// Creates the token and points `SOFTHSM2_CONF` at it, once per binary
/// (the kit's [`vault_testkit::process_token`]), before any HSM is opened.
pub fn create_token(label: &str) -> Token {
    vault_testkit::process_token(label).clone()
}

/// A token with the vault keys, opened in daemon mode; shared by the tests
/// of one binary.
pub fn shared_hsm(label: &'static str) -> &'static (Token, Arc<Pkcs11Hsm>) {
    static SHARED: OnceLock<(Token, Arc<Pkcs11Hsm>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let token = create_token(label);
        token.init_vault_keys();
        let hsm = Pkcs11Hsm::open(&token.hsm_config()).expect("open");
        (token, Arc::new(hsm))
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Writes a key component file (64 hex characters and a newline).
pub fn write_component(dir: &Path, name: &str, bytes: &[u8; 32]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", hex(bytes))).expect("write component");
    path
}

/// `SK = AES-128-ECB(TK, ATC ‖ 0xF0 ‖ 0x00×13)`, then AES-CMAC(SK, data).
pub fn software_cryptogram_mac(tk: &[u8; 16], atc: u16, data: &[u8]) -> [u8; 16] {
    let mut block = Array::from([0u8; 16]);
    block[..2].copy_from_slice(&atc.to_be_bytes());
    block[2] = 0xF0;
    Aes128::new(&Array::from(*tk)).encrypt_block(&mut block);
    let sk: [u8; 16] = block.into();
    let mut mac = <Cmac<Aes128> as KeyInit>::new(&Array::from(sk));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// Imports `tsp.visa.kek` from two random components written to `dir`
/// once per test binary, and returns the combined key (for wrapping test
/// token keys). Once: tests of a binary run at once on one token, and a
/// second import would make a newer KEK version under another test's feet
/// (the legacy unwrap uses the newest).
pub fn import_visa_kek(hsm: &Pkcs11Hsm, dir: &Path) -> [u8; 32] {
    static KEK: OnceLock<[u8; 32]> = OnceLock::new();
    *KEK.get_or_init(|| {
        let (mut c1, mut c2) = ([0u8; 32], [0u8; 32]);
        hsm.random(&mut c1).expect("random");
        hsm.random(&mut c2).expect("random");
        let p1 = write_component(dir, "visa.c1", &c1);
        let p2 = write_component(dir, "visa.c2", &c2);
        vault_hsm::keys::import_kek(hsm, "visa", &[&p1, &p2]).expect("import visa kek");
        xor(&c1, &c2)
    })
}

/// RFC 3394 wrap of a token key under a KEK, in software.
pub fn wrap(kek: &[u8; 32], tk: &[u8; 16]) -> Vec<u8> {
    let kw = KwAes256::new(&Array::from(*kek));
    let mut wrapped = [0u8; 24];
    kw.wrap_key(tk, &mut wrapped).expect("wrap");
    wrapped.to_vec()
}
