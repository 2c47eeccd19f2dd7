//! Writes the seed corpus: `seeds/frame_decoder/` (request bodies of every
//! op and sample responses) and `seeds/request_path/` (the same requests,
//! each prefixed with the peer byte). Run from `fuzz/`:
//! `cargo run --example gen_corpus`.

use std::path::Path;

use vault_proto::frame;
use vault_proto::{ErrorCode, WireError};
use vaultd_fuzz::seed_requests;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let decoder = root.join("frame_decoder");
    let path = root.join("request_path");
    for (name, body) in seed_requests() {
        write(&decoder, &format!("req-{name}"), &body);
        for (peer, who) in [(0u8, "all-roles"), (1u8, "collector"), (2u8, "unknown")] {
            // Unknown peers only need one seed: every op ends the same way.
            if peer == 2 && name != "health" {
                continue;
            }
            let mut input = vec![peer];
            input.extend_from_slice(&body);
            write(&path, &format!("{who}-{name}"), &input);
        }
    }
    let ok = frame::encode_ok(Some(7), &vault_proto::ops::DeleteResult { deleted: true })
        .expect("encode");
    write(&decoder, "resp-ok", &ok[frame::HEADER_LEN..]);
    let err = frame::encode_err(
        None,
        &WireError::new(ErrorCode::Overloaded, "too many connections"),
    );
    write(&decoder, "resp-err", &err[frame::HEADER_LEN..]);
    println!("seeds written to {}", root.display());
}
