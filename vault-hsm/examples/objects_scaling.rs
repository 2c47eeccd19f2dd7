//! Why token keys are used through session copies: SoftHSM2's file
//! backend touches every token object on each object operation, so a
//! derive from a token object gets slower with every token key stored.
//! Measures derive+CMAC from a token object and from a session copy.
//!
//! `cargo run --release -p vault-hsm --example objects_scaling -- [n]`

use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use vault_testkit::{Token, softhsm_module};

fn derive_mac(s: &Session, tk: ObjectHandle) -> Result<(), cryptoki::error::Error> {
    let block = [0u8, 1, 0xF0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let sk = s.derive_key(
        &Mechanism::AesCbcEncryptData(AesCbcDeriveParams::new([0u8; 16], &block)),
        tk,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(16.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
        ],
    )?;
    s.sign(&Mechanism::AesCMac, sk, b"payment data")?;
    s.destroy_object(sk)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let dir = tempfile::tempdir()?;
    let token = Token::create(dir.path(), "vaultd");
    // SAFETY: single-threaded at this point.
    unsafe { token.export_conf() };
    let pin = token.pin();
    let p = Pkcs11::new(softhsm_module())?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = p.get_slots_with_token()?[0];
    let s = p.open_rw_session(slot)?;
    s.login(UserType::User, Some(&AuthPin::new(pin.into())))?;
    let mut keys = Vec::new();
    for i in 0..n {
        keys.push(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(format!("nt.k{i}").into_bytes()),
            Attribute::Value(vec![7u8; 16]),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
        ])?);
    }
    let rounds = 1000;
    let t = Instant::now();
    for i in 0..rounds {
        derive_mac(&s, keys[i % n])?;
    }
    println!(
        "{n} token keys: derive+CMAC from the token object  {:>9.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    let t = Instant::now();
    let copies: Vec<ObjectHandle> = keys
        .iter()
        .map(|k| s.copy_object(*k, &[Attribute::Token(false)]))
        .collect::<Result<_, _>>()?;
    println!(
        "{n} token keys: copy to session objects            {:>9.1} µs each",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for i in 0..rounds {
        derive_mac(&s, copies[i % n])?;
    }
    println!(
        "{n} token keys: derive+CMAC from a session copy    {:>9.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    Ok(())
}
