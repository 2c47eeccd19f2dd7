//! Whoever holds the PIN cannot unwrap a stored token-key blob into a key
//! they can read: every scheme KEK carries an unwrap template (sensitive,
//! non-extractable, derive-only) that SoftHSM2 enforces, and cannot be
//! changed; a KEK an earlier release made gets the template at start-up.

mod common;

use common::{shared_hsm, wrap, write_component, xor};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use vault_hsm::keys::import_kek;
use vault_hsm::{Hsm, Pkcs11Hsm};

fn random<const N: usize>(hsm: &Pkcs11Hsm) -> [u8; N] {
    let mut out = [0u8; N];
    hsm.random(&mut out).expect("random");
    out
}

/// The attributes vaultd unwraps a token key with, `extractable` and
/// `sensitive` as given.
fn token_key_template(extractable: bool, sensitive: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(extractable),
        Attribute::Derive(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

fn find(s: &Session, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("find");
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

/// `C_UnwrapKey` of `blob` under `label` with `template`; the new key is
/// destroyed again. The module's answer.
fn try_unwrap(
    hsm: &Pkcs11Hsm,
    label: &str,
    blob: &[u8],
    template: &[Attribute],
) -> Result<(), RvError> {
    let label = label.to_owned();
    let blob = blob.to_vec();
    let template = template.to_vec();
    hsm.with_session_for_test(move |s| {
        let kek = find(s, &label);
        Ok(
            match s.unwrap_key(&Mechanism::AesKeyWrap, kek, &blob, &template) {
                Ok(h) => {
                    s.destroy_object(h)?;
                    Ok(())
                }
                Err(Error::Pkcs11(rv, _)) => Err(rv),
                Err(e) => return Err(e),
            },
        )
    })
    .expect("session")
}

fn assert_refuses_readable_unwraps(hsm: &Pkcs11Hsm, label: &str, kek: &[u8; 32]) {
    let blob = wrap(kek, &random::<16>(hsm));
    // The vault's own template unwraps: the blob and the KEK are right.
    assert_eq!(
        try_unwrap(hsm, label, &blob, &token_key_template(false, true)),
        Ok(())
    );
    // Extractable, not sensitive, or silent about either: refused.
    for template in [
        token_key_template(true, true),
        token_key_template(false, false),
        token_key_template(true, false),
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
        ],
    ] {
        assert_eq!(
            try_unwrap(hsm, label, &blob, &template),
            Err(RvError::TemplateInconsistent),
            "{template:?}"
        );
    }
}

#[test]
fn a_kek_refuses_to_unwrap_a_readable_key_and_keeps_its_template() {
    let (_token, hsm) = shared_hsm("templates-test");
    let dir = tempfile::tempdir().expect("dir");
    let (c1, c2) = (random::<32>(hsm), random::<32>(hsm));
    let p1 = write_component(dir.path(), "mc.c1", &c1);
    let p2 = write_component(dir.path(), "mc.c2", &c2);
    let made = import_kek(hsm, "mastercard", &[&p1, &p2]).expect("import");
    assert!(made.created);
    assert_refuses_readable_unwraps(hsm, &made.label, &xor(&c1, &c2));

    // The template cannot be taken off: the KEK is not modifiable.
    let label = made.label.clone();
    let changed = hsm
        .with_session_for_test(move |s| {
            let kek = find(s, &label);
            Ok(s.update_attributes(kek, &[Attribute::Label(b"tsp.mastercard.kek.x".to_vec())]))
        })
        .expect("session");
    assert!(
        matches!(
            changed,
            Err(Error::Pkcs11(
                RvError::AttributeReadOnly | RvError::ActionProhibited,
                _
            ))
        ),
        "{changed:?}"
    );
}

#[test]
fn the_import_ceremony_again_remakes_an_old_kek_with_a_template() {
    let (_token, hsm) = shared_hsm("templates-test");
    // A discover KEK as releases before 2026-12 made it: no unwrap template.
    let dir = tempfile::tempdir().expect("dir");
    let (c1, c2) = (random::<32>(hsm), random::<32>(hsm));
    let kek = xor(&c1, &c2);
    let value = kek.to_vec();
    hsm.with_session_for_test(move |s| {
        s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(b"tsp.discover.kek".to_vec()),
            Attribute::Value(value),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
        ])?;
        Ok(())
    })
    .expect("old KEK");
    // It lets a readable key out (the test would prove nothing otherwise).
    let blob = wrap(&kek, &random::<16>(hsm));
    assert_eq!(
        try_unwrap(
            hsm,
            "tsp.discover.kek",
            &blob,
            &token_key_template(true, false)
        ),
        Ok(())
    );

    let p1 = write_component(dir.path(), "d.c1", &c1);
    let p2 = write_component(dir.path(), "d.c2", &c2);
    let again = import_kek(hsm, "discover", &[&p1, &p2]).expect("import again");
    assert_eq!(
        (
            again.version,
            again.created,
            again.upgraded,
            again.label.as_str()
        ),
        (1, false, true, "tsp.discover.kek")
    );
    // One object under the label (the `find` in try_unwrap checks), the same
    // key (the blob still unwraps), now with the template.
    assert_refuses_readable_unwraps(hsm, "tsp.discover.kek", &kek);
    assert_eq!(
        try_unwrap(
            hsm,
            "tsp.discover.kek",
            &blob,
            &token_key_template(false, true)
        ),
        Ok(())
    );
    // A third run changes nothing.
    let third = import_kek(hsm, "discover", &[&p1, &p2]).expect("third");
    assert_eq!((third.created, third.upgraded), (false, false));
}
