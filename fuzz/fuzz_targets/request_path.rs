//! The whole request path, like Parsec's `fuzz_service`: bytes → the
//! dispatcher (authorization, decoding, the vault) → a real SoftHSM token
//! and a redb file. The first byte picks the peer ([`vaultd_fuzz::PEERS`]);
//! the rest is the request body. Every input must get exactly one
//! well-formed answer carrying its id, and no error may echo the card.

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vault_proto::frame;
use vaultd_fuzz::fixture::Fixture;
use vaultd_fuzz::{PEERS, SEED_PAN};

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(Fixture::new()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, body)) = data.split_first() else {
        return;
    };
    let mut f = fixture().lock().unwrap_or_else(|p| p.into_inner());
    f.ensure_alias();
    let body = f.with_alias(body);
    let uid = PEERS[who as usize % PEERS.len()];
    let resp = f.handle(uid, &body);

    let head = frame::decode_response(&resp[frame::HEADER_LEN..])
        .expect("every request gets a well-formed response");
    if let Ok(req) = frame::decode_request(&body) {
        assert_eq!(head.id, Some(req.id), "the answer carries the request's id");
    }
    if let Err(e) = head.outcome {
        assert!(
            !e.message.contains(SEED_PAN),
            "an error message echoes a PAN"
        );
    }
});
