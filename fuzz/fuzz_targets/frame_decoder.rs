//! The frame and envelope decoders on arbitrary bytes: the length-prefixed
//! frame reader, the request envelope, every op's argument type and the
//! response envelope. None may panic, allocate past the declared limits, or
//! disagree with itself.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use vault_proto::frame::{self, FrameRead};
use vault_proto::ops;

/// Decodes `args` as every op's argument type; none may panic.
fn every_args_type(args: Option<&[u8]>) {
    let _ = frame::decode_args::<ops::NoArgs>(args);
    let _ = frame::decode_args::<ops::TokenizeArgs>(args);
    let _ = frame::decode_args::<ops::AliasArgs>(args);
    let _ = frame::decode_args::<ops::TransactionArgs>(args);
    let _ = frame::decode_args::<ops::CredentialsArgs>(args);
    let _ = frame::decode_args::<ops::QueueListArgs>(args);
    let _ = frame::decode_args::<ops::JobArgs>(args);
    let _ = frame::decode_args::<ops::SchemeArgs>(args);
    let _ = frame::decode_args::<ops::PurgeArgs>(args);
    let _ = frame::decode_args::<ops::PageArgs>(args);
}

const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // As a stream: the reader never allocates past the limit.
    match frame::read_frame_blocking(&mut Cursor::new(data), MAX_FRAME) {
        Ok(FrameRead::Frame(body)) => assert!(body.len() <= MAX_FRAME),
        Ok(FrameRead::TooLarge(n)) => assert!(n as usize > MAX_FRAME),
        _ => {}
    }
    // Framed, it reads back as itself.
    let framed = frame::frame(data);
    match frame::read_frame_blocking(&mut Cursor::new(&framed), usize::MAX) {
        Ok(FrameRead::Frame(body)) => assert_eq!(body, data),
        Ok(FrameRead::Close) => assert!(data.is_empty()),
        other => panic!("a framed body did not read back: {other:?}"),
    }

    let _ = frame::map_fields(data);
    match frame::decode_request(data) {
        Ok(head) => {
            every_args_type(head.args);
            // An accepted envelope's id and op survive a re-encoding.
            let again = frame::encode_request(head.id, head.op, &ops::NoArgs {});
            let h2 = frame::decode_request(&again[frame::HEADER_LEN..])
                .expect("re-encoded request decodes");
            assert_eq!((h2.id, h2.op), (head.id, head.op));
        }
        Err(e) => {
            // The error names no input bytes beyond a safe key.
            assert!(e.error.message.len() < 512);
        }
    }
    // Raw args as every type, without an envelope.
    every_args_type(Some(data));
    if let Ok(resp) = frame::decode_response(data)
        && let Err(e) = resp.outcome
    {
        assert!(!e.code.as_str().is_empty());
    }
});
