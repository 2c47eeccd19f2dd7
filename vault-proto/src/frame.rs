//! Framing (4-byte big-endian length, then one MessagePack value) and the
//! request/response envelopes.
//!
//! Envelopes are walked field by field over the frame's bytes instead of
//! being decoded into a generic value tree: `args` and `result` are then
//! deserialized straight into their typed structs, so a card number is
//! copied exactly once, into a zeroizing [`crate::Pan`], and the caller can
//! wipe the frame buffer afterwards.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::{ErrorCode, PROTOCOL_VERSION, WireError};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// What reading one frame produced.
#[derive(Debug)]
pub enum FrameRead {
    /// One body of `1 ..= max_frame` bytes.
    Frame(Vec<u8>),
    /// The peer announced a body over the limit; nothing was allocated.
    TooLarge(u32),
    /// The peer sent a zero length: it wants the connection closed.
    Close,
    /// Clean end of stream between frames.
    Eof,
}

/// Reads one frame, checking the declared length against `max_frame` before
/// allocating.
pub async fn read_frame<R>(r: &mut R, max_frame: usize) -> std::io::Result<FrameRead>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(FrameRead::Eof);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    if len == 0 {
        return Ok(FrameRead::Close);
    }
    if len as usize > max_frame {
        return Ok(FrameRead::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(FrameRead::Frame(body))
}

/// Blocking twin of [`read_frame`].
pub fn read_frame_blocking<R: std::io::Read>(
    r: &mut R,
    max_frame: usize,
) -> std::io::Result<FrameRead> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(FrameRead::Eof);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    if len == 0 {
        return Ok(FrameRead::Close);
    }
    if len as usize > max_frame {
        return Ok(FrameRead::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(FrameRead::Frame(body))
}

/// Prefixes `body` with its length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The fields of one top-level MessagePack map, each value left as its raw
/// bytes. Fails unless `body` is exactly one map with string keys.
pub fn map_fields(body: &[u8]) -> Result<Vec<(&str, &[u8])>, &'static str> {
    let mut rd: &[u8] = body;
    let n = rmp::decode::read_map_len(&mut rd).map_err(|_| "body is not a MessagePack map")?;
    // Each entry takes at least two bytes: refuse counts the body cannot hold
    // before reserving anything.
    if n as usize > rd.len() / 2 {
        return Err("body is not a MessagePack map");
    }
    let mut fields = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let key = read_str_field(&mut rd)?;
        let start = body.len() - rd.len();
        skip_value(&mut rd, MAX_NESTING)?;
        let end = body.len() - rd.len();
        fields.push((key, &body[start..end]));
    }
    if !rd.is_empty() {
        return Err("trailing bytes after the MessagePack value");
    }
    Ok(fields)
}

/// How deeply values may nest inside an envelope; no op needs more than 3.
const MAX_NESTING: u32 = 32;

fn read_str_field<'a>(rd: &mut &'a [u8]) -> Result<&'a str, &'static str> {
    let len = rmp::decode::read_str_len(rd).map_err(|_| "map keys must be strings")? as usize;
    if rd.len() < len {
        return Err("body is not valid MessagePack");
    }
    let (s, rest) = rd.split_at(len);
    *rd = rest;
    std::str::from_utf8(s).map_err(|_| "map key is not UTF-8")
}

fn take(rd: &mut &[u8], n: usize) -> Result<(), &'static str> {
    if rd.len() < n {
        return Err("body is not valid MessagePack");
    }
    *rd = &rd[n..];
    Ok(())
}

/// Steps over one MessagePack value without allocating, refusing nesting
/// deeper than `depth`.
fn skip_value(rd: &mut &[u8], depth: u32) -> Result<(), &'static str> {
    use rmp::Marker as M;
    const BAD: &str = "body is not valid MessagePack";
    let depth = depth.checked_sub(1).ok_or("values nest too deeply")?;
    let marker = rmp::decode::read_marker(rd).map_err(|_| BAD)?;
    let be = |rd: &mut &[u8], n: usize| -> Result<usize, &'static str> {
        if rd.len() < n {
            return Err(BAD);
        }
        let mut v = 0usize;
        for b in &rd[..n] {
            v = (v << 8) | usize::from(*b);
        }
        *rd = &rd[n..];
        Ok(v)
    };
    let (items, bytes) = match marker {
        M::Null | M::True | M::False | M::FixPos(_) | M::FixNeg(_) => (0, 0),
        M::U8 | M::I8 => (0, 1),
        M::U16 | M::I16 => (0, 2),
        M::U32 | M::I32 | M::F32 => (0, 4),
        M::U64 | M::I64 | M::F64 => (0, 8),
        M::FixStr(n) => (0, usize::from(n)),
        M::Str8 | M::Bin8 => (0, be(rd, 1)?),
        M::Str16 | M::Bin16 => (0, be(rd, 2)?),
        M::Str32 | M::Bin32 => (0, be(rd, 4)?),
        M::FixArray(n) => (usize::from(n), 0),
        M::Array16 => (be(rd, 2)?, 0),
        M::Array32 => (be(rd, 4)?, 0),
        M::FixMap(n) => (usize::from(n) * 2, 0),
        M::Map16 => (be(rd, 2)? * 2, 0),
        M::Map32 => (be(rd, 4)? * 2, 0),
        M::FixExt1 => (0, 2),
        M::FixExt2 => (0, 3),
        M::FixExt4 => (0, 5),
        M::FixExt8 => (0, 9),
        M::FixExt16 => (0, 17),
        M::Ext8 => (0, be(rd, 1)? + 1),
        M::Ext16 => (0, be(rd, 2)? + 1),
        M::Ext32 => (0, be(rd, 4)? + 1),
        M::Reserved => return Err(BAD),
    };
    take(rd, bytes)?;
    // Every item takes at least one byte: a count the rest cannot hold is bad.
    if items > rd.len() {
        return Err(BAD);
    }
    for _ in 0..items {
        skip_value(rd, depth)?;
    }
    Ok(())
}

fn is_nil(raw: &[u8]) -> bool {
    raw == [0xc0]
}

fn read_u64(raw: &[u8]) -> Option<u64> {
    let mut rd = raw;
    rmp::decode::read_int::<u64, _>(&mut rd).ok()
}

fn read_str(raw: &[u8]) -> Option<&str> {
    let mut rd = raw;
    read_str_field(&mut rd).ok().filter(|_| rd.is_empty())
}

/// A request envelope whose `args` are still raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub id: u64,
    pub op: &'a str,
    pub args: Option<&'a [u8]>,
}

/// Why a request envelope was refused: the error to answer and the id to
/// answer it under (`None` when no id could be read).
#[derive(Debug, Clone)]
pub struct EnvelopeError {
    pub id: Option<u64>,
    pub error: WireError,
}

/// Reads `{v, id, op, args}` from a request body.
pub fn decode_request(body: &[u8]) -> Result<RequestHead<'_>, EnvelopeError> {
    let bad = |id, msg: &str| EnvelopeError {
        id,
        error: WireError::new(ErrorCode::BadRequest, msg),
    };
    let fields = map_fields(body).map_err(|m| bad(None, m))?;
    let mut v = None;
    let mut id = None;
    let mut op = None;
    let mut args = None;
    let mut unknown = None;
    let mut id_invalid = false;
    for (k, raw) in &fields {
        match *k {
            "v" => v = Some(read_u64(raw)),
            "id" => {
                id = read_u64(raw);
                id_invalid = id.is_none();
            }
            "op" => op = Some(read_str(raw)),
            "args" => args = (!is_nil(raw)).then_some(*raw),
            other => unknown = Some(other),
        }
    }
    if id_invalid {
        return Err(bad(None, "`id` must be an unsigned integer"));
    }
    let Some(id) = id else {
        return Err(bad(None, "missing `id`"));
    };
    match v {
        None => return Err(bad(Some(id), "missing `v`")),
        Some(Some(PROTOCOL_VERSION)) => {}
        Some(_) => {
            return Err(EnvelopeError {
                id: Some(id),
                error: WireError::new(
                    ErrorCode::UnsupportedVersion,
                    "this server speaks protocol version 1",
                ),
            });
        }
    }
    if let Some(k) = unknown {
        return Err(bad(
            Some(id),
            &format!("unknown key {} in request", safe_key(k)),
        ));
    }
    let op = match op {
        None => return Err(bad(Some(id), "missing `op`")),
        Some(None) => return Err(bad(Some(id), "`op` must be a string")),
        Some(Some(op)) => op,
    };
    Ok(RequestHead { id, op, args })
}

/// A key as it may appear in an error message: identifiers of up to 32
/// letters, digits, `_` and `-` with fewer than 6 digits (`cvc2`,
/// `cardNumber`) are echoed; anything else (it could be card data: a PAN
/// sent as a key has 12 digits or more) is not.
pub fn safe_key(k: &str) -> String {
    let digits = k.bytes().filter(u8::is_ascii_digit).count();
    if !k.is_empty()
        && k.len() <= 32
        && digits < 6
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        format!("`{k}`")
    } else {
        "(not shown)".to_owned()
    }
}

/// Deserializes only from a map whose keys are all strings, reading past
/// the values without keeping anything.
struct StrKeyedMap;

impl<'de> Deserialize<'de> for StrKeyedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = StrKeyedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map with string keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<StrKeyedMap, A::Error> {
                while m.next_key::<&'de str>()?.is_some() {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(StrKeyedMap)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An empty MessagePack map, what absent `args` mean.
const EMPTY_MAP: [u8; 1] = [0x80];

/// Deserializes raw `args` into `T`. The error message names the offending
/// key but never echoes a value (serde's own messages quote values, which
/// could be card data).
pub fn decode_args<T: DeserializeOwned>(args: Option<&[u8]>) -> Result<T, WireError> {
    let raw = args.unwrap_or(&EMPTY_MAP);
    // A map with string keys, as PROTOCOL.md says; rmp-serde alone would
    // also take an array (fields by position) or integer keys.
    if rmp_serde::from_slice::<StrKeyedMap>(raw).is_err() {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "`args` must be a map with string keys",
        ));
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(raw);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        // `raw` is exactly one value: `map_fields` cut it out.
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let msg = if let Some(rest) = inner.strip_prefix("unknown field `") {
                let key = rest.split('`').next().unwrap_or("");
                format!("unknown key {} in `args`", safe_key(key))
            } else if let Some(rest) = inner.strip_prefix("missing field `") {
                let key = rest.split('`').next().unwrap_or("");
                format!("missing key {} in `args`", safe_key(key))
            } else if path == "." || path.is_empty() {
                "`args` must be a map of the op's arguments".to_owned()
            } else {
                let safe_path: String = path
                    .split('.')
                    .map(|p| {
                        if p.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'_' || b == b'[' || b == b']'
                        }) {
                            p.to_owned()
                        } else {
                            "?".to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                format!("invalid value for `{safe_path}`")
            };
            Err(WireError::new(ErrorCode::BadRequest, msg))
        }
    }
}

#[derive(Serialize)]
struct Req<'a, A: Serialize> {
    v: u64,
    id: u64,
    op: &'a str,
    args: &'a A,
}

/// Encodes a framed request.
pub fn encode_request<A: Serialize>(id: u64, op: &str, args: &A) -> Vec<u8> {
    let req = Req {
        v: PROTOCOL_VERSION,
        id,
        op,
        args,
    };
    // Serializing our own request types cannot fail.
    encode_framed(&req).unwrap_or_else(|_| frame(&[]))
}

/// `value` as MessagePack behind its length header, written once into a
/// buffer that leaves no copy behind: requests and answers carry card data
/// (a PAN, a network token, a cryptogram), and a `Vec` that grows frees
/// its old block with the bytes still in it. [`WipingBuf`] wipes the block
/// it outgrows.
fn encode_framed<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = WipingBuf(Vec::with_capacity(256));
    out.0.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = rmp_serde::encode::write_named(&mut out, value) {
        out.0.zeroize();
        return Err(e);
    }
    let len = (out.0.len() - HEADER_LEN) as u32;
    out.0[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(out.0)
}

/// A `Vec<u8>` writer that, when it must grow, copies into a block twice
/// the size and wipes the old one.
struct WipingBuf(Vec<u8>);

impl std::io::Write for WipingBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len() + data.len();
        if need > self.0.capacity() {
            let mut bigger = Vec::with_capacity(need.max(self.0.capacity() * 2));
            bigger.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Serialize)]
struct OkResp<'a, T: Serialize> {
    id: Option<u64>,
    ok: bool,
    result: &'a T,
}

#[derive(Serialize)]
struct ErrResp<'a> {
    id: Option<u64>,
    ok: bool,
    error: &'a WireError,
}

/// Encodes a framed success response.
pub fn encode_ok<T: Serialize>(id: Option<u64>, result: &T) -> Result<Vec<u8>, WireError> {
    encode_framed(&OkResp {
        id,
        ok: true,
        result,
    })
    .map_err(|_| WireError::new(ErrorCode::Internal, "could not encode the result"))
}

/// Encodes a framed error response.
pub fn encode_err(id: Option<u64>, error: &WireError) -> Vec<u8> {
    encode_framed(&ErrResp {
        id,
        ok: false,
        error,
    })
    .unwrap_or_else(|_| frame(&[]))
}

/// A response envelope whose `result` is still raw bytes.
#[derive(Debug)]
pub struct ResponseHead<'a> {
    pub id: Option<u64>,
    pub outcome: Result<&'a [u8], WireError>,
}

/// Reads `{id, ok, result | error}` from a response body.
pub fn decode_response(body: &[u8]) -> Result<ResponseHead<'_>, String> {
    let fields = map_fields(body).map_err(str::to_owned)?;
    let mut id = None;
    let mut ok = None;
    let mut result = None;
    let mut error = None;
    for (k, raw) in fields {
        match k {
            "id" => id = read_u64(raw),
            "ok" => ok = rmp::decode::read_bool(&mut &raw[..]).ok(),
            "result" => result = Some(raw),
            "error" => {
                error = Some(
                    rmp_serde::from_slice::<WireError>(raw)
                        .map_err(|e| format!("bad error object: {e}"))?,
                )
            }
            _ => {}
        }
    }
    let outcome = match (ok, result, error) {
        (Some(true), Some(r), _) => Ok(r),
        (Some(false), _, Some(e)) => Err(e),
        _ => return Err("response is neither ok with a result nor an error".into()),
    };
    Ok(ResponseHead { id, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::TokenizeArgs;

    fn body<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn framed_encoding_is_the_plain_one_at_every_size() {
        // From well under the first block (256 bytes) to several growths.
        for n in [0usize, 10, 250, 251, 300, 5_000, 100_000] {
            let v = vec!["x".repeat(7); n / 8];
            let framed = encode_ok(Some(3), &v).unwrap();
            let plain = frame(&body(&OkResp {
                id: Some(3),
                ok: true,
                result: &v,
            }));
            assert_eq!(framed, plain, "{n}");
        }
        let e = WireError::new(ErrorCode::BadRequest, "no");
        let plain = frame(&body(&ErrResp {
            id: None,
            ok: false,
            error: &e,
        }));
        assert_eq!(encode_err(None, &e), plain);
    }

    #[test]
    fn request_round_trip() {
        let args = TokenizeArgs {
            pan: crate::Pan::new("4111111111111111".into()),
            exp_month: 12,
            exp_year: 2030,
            transaction_id: None,
        };
        let framed = encode_request(7, "tokenize", &args);
        let head = decode_request(&framed[4..]).unwrap();
        assert_eq!(head.id, 7);
        assert_eq!(head.op, "tokenize");
        let back: TokenizeArgs = decode_args(head.args).unwrap();
        assert_eq!(back.pan.expose(), "4111111111111111");
    }

    #[test]
    fn unknown_arg_key_is_named_and_values_never_echoed() {
        #[derive(Serialize)]
        struct Bad<'a> {
            pan: &'a str,
            exp_month: u8,
            exp_year: u16,
            cvc: &'a str,
        }
        let framed = encode_request(
            1,
            "tokenize",
            &Bad {
                pan: "4111111111111111",
                exp_month: 1,
                exp_year: 2030,
                cvc: "123",
            },
        );
        let head = decode_request(&framed[4..]).unwrap();
        let err = decode_args::<TokenizeArgs>(head.args).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(err.message.contains("`cvc`"), "{}", err.message);

        #[derive(Serialize)]
        struct WrongType<'a> {
            pan: &'a str,
            exp_month: &'a str,
            exp_year: u16,
        }
        let framed = encode_request(
            1,
            "tokenize",
            &WrongType {
                pan: "4111111111111111",
                exp_month: "4111111111111111",
                exp_year: 2030,
            },
        );
        let head = decode_request(&framed[4..]).unwrap();
        let err = decode_args::<TokenizeArgs>(head.args).unwrap_err();
        assert!(err.message.contains("exp_month"), "{}", err.message);
        assert!(!err.message.contains("4111"), "{}", err.message);
    }

    #[test]
    fn args_are_a_map_with_string_keys_and_enums_are_strings() {
        use crate::ops::{CredentialKind, CredentialsArgs, Initiator, JobState, QueueListArgs};
        use rmpv::Value;
        let raw = |v: Value| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        let s = |x: &str| Value::from(x);
        let credentials = |initiator: Value, accept: Value| {
            raw(Value::Map(vec![
                (s("alias"), s("a")),
                (s("tenant"), s("t")),
                (s("accept"), accept),
                (s("initiator"), initiator),
                (s("amount_minor"), Value::from(1250)),
                (s("currency"), s("CHF")),
            ]))
        };
        // The well-formed request.
        let ok: CredentialsArgs = decode_args(Some(&credentials(
            s("merchant"),
            Value::Array(vec![s("pan"), s("network_token")]),
        )))
        .unwrap();
        assert_eq!(ok.initiator, Initiator::Merchant);
        assert_eq!(
            ok.accept,
            vec![CredentialKind::Pan, CredentialKind::NetworkToken]
        );
        let q: QueueListArgs =
            decode_args(Some(&raw(Value::Map(vec![(s("state"), s("in_flight"))])))).unwrap();
        assert_eq!(q.state, Some(JobState::InFlight));

        let refused = |bytes: Vec<u8>| {
            let e = decode_args::<CredentialsArgs>(Some(&bytes)).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(!e.message.contains("4111"), "{}", e.message);
            e.message
        };
        // Variant indices instead of names.
        let m = refused(credentials(Value::from(1), Value::Array(vec![s("pan")])));
        assert!(m.contains("initiator"), "{m}");
        let m = refused(credentials(
            s("customer"),
            Value::Array(vec![Value::from(0)]),
        ));
        assert!(m.contains("accept"), "{m}");
        refused(credentials(s("Customer"), Value::Array(vec![s("pan")])));
        // Fields by position, and integer keys.
        let m = refused(raw(Value::Array(vec![
            s("4111111111111111"),
            Value::from(12),
            Value::from(2030),
        ])));
        assert!(m.contains("must be a map"), "{m}");
        let m = refused(raw(Value::Map(vec![
            (Value::from(0), s("4111111111111111")),
            (Value::from(1), Value::from(12)),
        ])));
        assert!(m.contains("must be a map"), "{m}");
        let e = decode_args::<QueueListArgs>(Some(&raw(Value::Map(vec![(
            s("state"),
            Value::from(2),
        )]))))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn keys_are_named_unless_they_could_be_card_data() {
        for k in [
            "cvc",
            "cvc2",
            "CVV2",
            "cardNumber",
            "card-number",
            "exp_month",
        ] {
            assert_eq!(safe_key(k), format!("`{k}`"));
        }
        for k in [
            "4111111111111111",
            "card4111111111111111",
            "411111",
            "a b",
            "k\u{e9}y",
            "",
            "abcdefghijklmnopqrstuvwxyzabcdefg",
        ] {
            assert_eq!(safe_key(k), "(not shown)", "{k}");
        }
    }

    #[test]
    fn envelope_errors() {
        assert!(decode_request(b"\xff\x00").unwrap_err().id.is_none());
        #[derive(Serialize)]
        struct Env {
            v: u64,
            id: u64,
            op: &'static str,
        }
        let e = decode_request(&body(&Env {
            v: 2,
            id: 9,
            op: "health",
        }))
        .unwrap_err();
        assert_eq!(e.id, Some(9));
        assert_eq!(e.error.code, ErrorCode::UnsupportedVersion);
        let b = body(&Env {
            v: 1,
            id: 9,
            op: "health",
        });
        let ok = decode_request(&b).unwrap();
        assert!(ok.args.is_none());
        // An array instead of a map.
        let e = decode_request(&body(&(1u8, 2u8))).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn response_round_trip() {
        let framed = encode_ok(Some(3), &crate::ops::DeleteResult { deleted: true }).unwrap();
        let head = decode_response(&framed[4..]).unwrap();
        assert_eq!(head.id, Some(3));
        let r: crate::ops::DeleteResult = rmp_serde::from_slice(head.outcome.unwrap()).unwrap();
        assert!(r.deleted);
        let framed = encode_err(None, &WireError::new(ErrorCode::Overloaded, "busy"));
        let head = decode_response(&framed[4..]).unwrap();
        let e = head.outcome.unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(e.retryable);
    }
}
