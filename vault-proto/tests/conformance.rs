//! Language-neutral conformance vectors (`vault-proto/conformance/*.json`,
//! schema in `conformance/README.md`).
//!
//! The vectors are generated here with vault-proto's own types and encoders,
//! so their bytes are what vaultd and the Rust clients put on the wire. This
//! test
//!
//! - regenerates every file in memory and fails if a checked-in file differs
//!   (`UPDATE_CONFORMANCE=1 cargo test -p vault-proto --test conformance`
//!   rewrites them);
//! - decodes every frame with vault-proto (envelope, then the op's typed
//!   arguments or result) and re-encodes it byte for byte;
//! - checks that each frame's `value` is its body read as MessagePack;
//! - counts: every op of the registry (`src/ops/mod.rs`) and every error code (and, when
//!   `../shared/PROTOCOL.md` is there, every code of its table) has a vector.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rmpv::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vault_proto::frame::{self, FrameRead};
use vault_proto::ops::*;
use vault_proto::pan::PanProblem;
use vault_proto::{DEFAULT_MAX_FRAME, ErrorCode, Pan, WireError};

// ------------------------------------------------------------ test data
//
// Only well-known test PANs, and only where a request (or the PAN answer of
// `credentials` for that request) carries one. Everything else is
// obviously synthetic.

const TEST_PAN: &str = "4111111111111111";
const TEST_PAN_MC: &str = "5555555555554444";
/// Synthetic network token number (not a card).
const SYNTH_TOKEN: &str = "4999000000000001";
/// Synthetic cryptogram: 0x01, ATC 7, zero unpredictable number and MAC.
const SYNTH_CRYPTOGRAM: &str = "AQAHAAAAAAAAAAAAAAAAAAAAAAA=";
const ALIAS: &str = "Exmp1e000000000AliasAAAAAAAAAA01";
const ALIAS_2: &str = "Exmp1e000000000AliasAAAAAAAAAA02";
const FINGERPRINT: &str = "c3ludGhldGljLWZpbmdlcnByaW50LWV4YW1wbGUtMDE";
const TOKEN_REF: &str = "tref-synthetic-0001";
const PAR: &str = "Q0000000000000000000000000001";
const TRID: &str = "40010030273";
const T0: u64 = 1_780_000_000_000;

fn alias(n: u8) -> String {
    let a = if n == 1 { ALIAS } else { ALIAS_2 };
    assert_eq!(a.len(), 32);
    a.to_owned()
}

fn card(pan_removed: bool) -> Card {
    Card {
        bin: "411111".into(),
        last4: "1111".into(),
        exp_month: 12,
        exp_year: 2030,
        scheme: "visa".into(),
        pan_removed,
    }
}

fn token_info(status: TokenStatus) -> TokenInfo {
    let live = !matches!(
        status,
        TokenStatus::Pending | TokenStatus::NotEligible | TokenStatus::Failed
    );
    TokenInfo {
        status,
        scheme: "visa".into(),
        token_ref: live.then(|| TOKEN_REF.into()),
        token_last4: live.then(|| "0001".into()),
        exp_month: live.then_some(11),
        exp_year: live.then_some(2031),
        par: live.then(|| PAR.into()),
        token_requestor_id: Some(TRID.into()),
        updated_at: T0 + 850,
        last_error: match status {
            TokenStatus::Failed => Some("token service refused the request (synthetic)".into()),
            _ => None,
        },
    }
}

fn record(n: u8, status: Option<TokenStatus>, pan_removed: bool) -> AliasRecord {
    AliasRecord {
        alias: alias(n),
        fingerprint: FINGERPRINT.into(),
        kind: "card".into(),
        masked: "411111xxxxxx1111".into(),
        created_at: T0,
        card: card(pan_removed),
        token_info: status.map(token_info),
    }
}

fn alias_args(n: u8) -> AliasArgs {
    AliasArgs { alias: alias(n) }
}

fn tokenize_args(pan: &str, month: u8, year: u16, txn: Option<&str>) -> TokenizeArgs {
    TokenizeArgs {
        pan: Pan::new(pan.into()),
        exp_month: month,
        exp_year: year,
        transaction_id: txn.map(str::to_owned),
    }
}

fn credentials_args(
    accept: &[CredentialKind],
    init: Initiator,
    eci: Option<&str>,
) -> CredentialsArgs {
    CredentialsArgs {
        alias: alias(1),
        tenant: "t-a".into(),
        accept: accept.to_vec(),
        initiator: init,
        amount_minor: 1250,
        currency: "CHF".into(),
        authenticated_eci: eci.map(str::to_owned),
    }
}

// ------------------------------------------------------------ JSON output

/// A JSON document built in order (keys keep their insertion order).
#[derive(Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i128),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn obj(fields: Vec<(&str, J)>) -> J {
    J::Obj(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn s(v: &str) -> J {
    J::Str(v.to_owned())
}

fn opt_s(v: Option<&str>) -> J {
    v.map(s).unwrap_or(J::Null)
}

fn esc(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Small values (no nested objects or arrays, short) go on one line.
fn is_flat(v: &J) -> bool {
    match v {
        J::Arr(a) => a.iter().all(|x| !matches!(x, J::Arr(_) | J::Obj(_))) && a.len() <= 8,
        J::Obj(_) => false,
        _ => true,
    }
}

fn write_json(out: &mut String, v: &J, indent: usize) {
    let pad = |out: &mut String, n: usize| out.push_str(&"  ".repeat(n));
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Int(i) => out.push_str(&i.to_string()),
        J::Str(x) => esc(out, x),
        J::Arr(a) if a.is_empty() => out.push_str("[]"),
        J::Arr(a) if is_flat(v) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, x, indent);
            }
            out.push(']');
        }
        J::Arr(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                pad(out, indent + 1);
                write_json(out, x, indent + 1);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        J::Obj(o) if o.is_empty() => out.push_str("{}"),
        J::Obj(o) => {
            out.push_str("{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                pad(out, indent + 1);
                esc(out, k);
                out.push_str(": ");
                write_json(out, x, indent + 1);
                out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

/// A MessagePack value as JSON, keys in wire order. The protocol uses no
/// floats, binaries or extensions: meeting one is a bug in a vector.
fn to_json(v: &Value) -> J {
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => J::Int(
            i.as_u64()
                .map(i128::from)
                .or(i.as_i64().map(i128::from))
                .unwrap(),
        ),
        Value::String(x) => J::Str(x.as_str().expect("UTF-8 string").to_owned()),
        Value::Array(a) => J::Arr(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Obj(
            m.iter()
                .map(|(k, v)| (k.as_str().expect("string key").to_owned(), to_json(v)))
                .collect(),
        ),
        other => panic!("no such value in the protocol: {other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `{frame, value}`: the frame as hex (length header included) and its
/// body read as MessagePack (`null` when the body is not one value).
fn frame_json(framed: &[u8]) -> J {
    let body = &framed[frame::HEADER_LEN.min(framed.len())..];
    let value = read_value(body).map(|v| to_json(&v)).unwrap_or(J::Null);
    obj(vec![("frame", J::Str(hex(framed))), ("value", value)])
}

fn read_value(body: &[u8]) -> Option<Value> {
    let mut rd = body;
    let v = rmpv::decode::read_value(&mut rd).ok()?;
    rd.is_empty().then_some(v)
}

// ------------------------------------------------------------ vectors

/// One request and its answer.
struct Exchange {
    name: String,
    op: Option<&'static str>,
    note: &'static str,
    request: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    /// `open` or `closed` after the response.
    connection: &'static str,
}

impl Exchange {
    fn json(&self) -> J {
        let error = self.response.as_ref().and_then(|r| {
            frame::decode_response(&r[4..])
                .ok()
                .and_then(|h| h.outcome.err())
                .map(|e| s(e.code.as_str()))
        });
        obj(vec![
            ("name", s(&self.name)),
            ("kind", s("exchange")),
            ("op", opt_s(self.op)),
            ("note", s(self.note)),
            (
                "request",
                self.request.as_deref().map(frame_json).unwrap_or(J::Null),
            ),
            (
                "response",
                self.response.as_deref().map(frame_json).unwrap_or(J::Null),
            ),
            ("error", error.unwrap_or(J::Null)),
            ("connection", s(self.connection)),
        ])
    }
}

fn ok<O: Op>(
    name: &str,
    note: &'static str,
    id: u64,
    args: &O::Args,
    result: &O::Result,
) -> Exchange
where
    O::Result: Serialize,
{
    Exchange {
        name: name.to_owned(),
        op: Some(O::NAME),
        note,
        request: Some(frame::encode_request(id, O::NAME, args)),
        response: Some(frame::encode_ok(Some(id), result).unwrap()),
        connection: "open",
    }
}

fn err<A: Serialize>(
    name: &str,
    op: &'static str,
    note: &'static str,
    id: u64,
    args: &A,
    code: ErrorCode,
    message: &str,
) -> Exchange {
    Exchange {
        name: name.to_owned(),
        op: Some(op),
        note,
        request: Some(frame::encode_request(id, op, args)),
        response: Some(frame::encode_err(Some(id), &WireError::new(code, message))),
        connection: "open",
    }
}

fn stats_full() -> Stats {
    let mut tokens = BTreeMap::new();
    tokens.insert("active".into(), 2);
    tokens.insert("pending".into(), 1);
    let mut schemes = BTreeMap::new();
    schemes.insert(
        "mastercard".into(),
        SchemeStats {
            provisioned: 0,
            not_eligible: 0,
            errors: 0,
            p50_ms: 0,
            p99_ms: 0,
            paused: true,
            breaker: Some("closed".into()),
        },
    );
    schemes.insert(
        "visa".into(),
        SchemeStats {
            provisioned: 2,
            not_eligible: 0,
            errors: 1,
            p50_ms: 12,
            p99_ms: 340,
            paused: false,
            breaker: Some("half_open".into()),
        },
    );
    Stats {
        aliases: 3,
        pans_retained: 3,
        tokens,
        queue: QueueCounts {
            due: 1,
            scheduled: 0,
            in_flight: 0,
            failed: 0,
            reads: 4,
        },
        schemes,
        uptime_ms: 3_600_000,
        keys: Some(KeyStats {
            pan_key_version: 2,
            audit_key_version: 1,
            reencrypt_remaining: 0,
            reencrypted: 3,
            keks: vec![KekUse {
                scheme: "visa".into(),
                version: 1,
                tokens: 2,
            }],
        }),
        logs: Some(LogHeads {
            audit_seq: 70_000,
            events_seq: 300,
        }),
        hsm: Some(HsmStats {
            reinit_after_objects: 100_000,
            session_objects: 12,
            reinitializations: 0,
            last_reinit_pause_ms: 0,
            standby_switches: 0,
            key_copies_made: 4,
            background_queued: 0,
            background_done: 9,
            token_key_unwraps: 2,
            token_keys_cached: 2,
        }),
    }
}

fn ops_vectors() -> Vec<Exchange> {
    let mut v = Vec::new();
    let health = Health {
        ready: true,
        version: "0.1.0".into(),
        hsm: "ok".into(),
        store: "ok".into(),
        uptime_ms: 1234,
    };
    v.push(ok::<HealthOp>(
        "health",
        "args is an empty map",
        1,
        &NoArgs {},
        &health,
    ));
    v.push(ok::<HealthOp>(
        "health/not_ready",
        "hsm and store carry a reason when not \"ok\"",
        2,
        &NoArgs {},
        &Health {
            ready: false,
            version: "0.1.0".into(),
            hsm: "reinitializing".into(),
            store: "ok".into(),
            uptime_ms: 70_000,
        },
    ));
    v.push(ok::<HealthOp>(
        "health/id_u64_max",
        "ids are u64: the largest one (uint 64 on the wire)",
        u64::MAX,
        &NoArgs {},
        &health,
    ));
    v.push(ok::<HealthOp>(
        "health/id_2_pow_32",
        "an id past u32 (uint 64 on the wire)",
        1 << 32,
        &NoArgs {},
        &health,
    ));
    v.push(ok::<Tokenize>(
        "tokenize/created",
        "a new alias; its token is pending",
        3,
        &tokenize_args(TEST_PAN, 12, 2030, None),
        &TokenizeResult {
            created: true,
            record: record(1, Some(TokenStatus::Pending), false),
        },
    ));
    v.push(ok::<Tokenize>(
        "tokenize/existing_with_transaction_id",
        "the same PAN again (created false), remembered under a transaction id",
        4,
        &tokenize_args(TEST_PAN, 12, 2030, Some("txn-0001_A")),
        &TokenizeResult {
            created: false,
            record: record(1, Some(TokenStatus::Active), false),
        },
    ));
    v.push(ok::<Tokenize>(
        "tokenize/no_network_tokens",
        "a tenant without network tokens: token_info is nil",
        5,
        &tokenize_args(TEST_PAN, 1, 2031, None),
        &TokenizeResult {
            created: true,
            record: AliasRecord {
                card: Card {
                    exp_month: 1,
                    exp_year: 2031,
                    ..card(false)
                },
                ..record(2, None, false)
            },
        },
    ));
    v.push(ok::<TransactionTokens>(
        "transaction_tokens",
        "",
        6,
        &TransactionArgs {
            transaction_id: "txn-0001_A".into(),
        },
        &record(1, Some(TokenStatus::Active), false),
    ));
    v.push(ok::<AliasStatus>(
        "alias_status/active",
        "",
        7,
        &alias_args(1),
        &record(1, Some(TokenStatus::Active), false),
    ));
    v.push(ok::<AliasStatus>(
        "alias_status/failed",
        "last_error says why, never with card data",
        8,
        &alias_args(1),
        &record(1, Some(TokenStatus::Failed), false),
    ));
    v.push(ok::<Provision>(
        "provision",
        "",
        9,
        &alias_args(1),
        &record(1, Some(TokenStatus::Pending), false),
    ));
    v.push(ok::<RemovePan>(
        "remove_pan",
        "",
        10,
        &alias_args(1),
        &record(1, Some(TokenStatus::Active), true),
    ));
    v.push(ok::<DeleteAlias>(
        "delete_alias",
        "",
        11,
        &alias_args(2),
        &DeleteResult { deleted: true },
    ));
    let both = [CredentialKind::NetworkToken, CredentialKind::Pan];
    v.push(ok::<CredentialsOp>(
        "credentials/network_token_cit",
        "customer-initiated: a cryptogram, an ECI and the ATC (synthetic token and cryptogram)",
        12,
        &credentials_args(&both, Initiator::Customer, None),
        &Credentials::NetworkToken {
            scheme: "visa".into(),
            network_token: Pan::new(SYNTH_TOKEN.into()),
            exp_month: 11,
            exp_year: 2031,
            cryptogram: Some(SYNTH_CRYPTOGRAM.into()),
            eci: Some("07".into()),
            atc: Some(7),
            par: Some(PAR.into()),
            token_ref: TOKEN_REF.into(),
        },
    ));
    v.push(ok::<CredentialsOp>(
        "credentials/network_token_3ds",
        "authenticated_eci is passed through as the eci",
        13,
        &credentials_args(&both, Initiator::Customer, Some("05")),
        &Credentials::NetworkToken {
            scheme: "visa".into(),
            network_token: Pan::new(SYNTH_TOKEN.into()),
            exp_month: 11,
            exp_year: 2031,
            cryptogram: Some(SYNTH_CRYPTOGRAM.into()),
            eci: Some("05".into()),
            atc: Some(8),
            par: Some(PAR.into()),
            token_ref: TOKEN_REF.into(),
        },
    ));
    v.push(ok::<CredentialsOp>(
        "credentials/network_token_mit",
        "merchant-initiated: no cryptogram, no ECI, no ATC",
        14,
        &credentials_args(&[CredentialKind::NetworkToken], Initiator::Merchant, None),
        &Credentials::NetworkToken {
            scheme: "visa".into(),
            network_token: Pan::new(SYNTH_TOKEN.into()),
            exp_month: 11,
            exp_year: 2031,
            cryptogram: None,
            eci: None,
            atc: None,
            par: None,
            token_ref: TOKEN_REF.into(),
        },
    ));
    v.push(ok::<CredentialsOp>(
        "credentials/pan",
        "the receiver takes PANs only: the test PAN of the tokenize vectors comes back",
        15,
        &credentials_args(&[CredentialKind::Pan], Initiator::Customer, None),
        &Credentials::Pan {
            scheme: "visa".into(),
            pan: Pan::new(TEST_PAN.into()),
            exp_month: 12,
            exp_year: 2030,
            fallback_reason: FallbackReason::ReceiverPanOnly,
        },
    ));
    v.push(ok::<StatsOp>(
        "stats/v1",
        "the fields PROTOCOL.md names (queue.reads is an optional field vaultd always sends)",
        16,
        &NoArgs {},
        &Stats {
            aliases: 1,
            pans_retained: 1,
            tokens: [("pending".to_owned(), 1)].into_iter().collect(),
            queue: QueueCounts {
                due: 1,
                ..QueueCounts::default()
            },
            schemes: [(
                "visa".to_owned(),
                SchemeStats {
                    provisioned: 0,
                    not_eligible: 0,
                    errors: 0,
                    p50_ms: 0,
                    p99_ms: 0,
                    paused: false,
                    breaker: None,
                },
            )]
            .into_iter()
            .collect(),
            uptime_ms: 5000,
            keys: None,
            logs: None,
            hsm: None,
        },
    ));
    v.push(ok::<StatsOp>(
        "stats/extended",
        "with the optional extension fields (README: extensions beyond PROTOCOL.md v1)",
        17,
        &NoArgs {},
        &stats_full(),
    ));
    v.push(ok::<QueueListOp>(
        "queue_list",
        "nil state and after are sent as nil",
        18,
        &QueueListArgs {
            state: None,
            limit: 2,
            after: None,
        },
        &QueueList {
            jobs: vec![
                JobView {
                    job_id: "job-synthetic-0001".into(),
                    alias: alias(1),
                    kind: "provision".into(),
                    scheme: "visa".into(),
                    state: JobState::Due,
                    attempts: 0,
                    next_at: T0,
                    last_error: None,
                },
                JobView {
                    job_id: "job-synthetic-0002".into(),
                    alias: alias(2),
                    kind: "provision".into(),
                    scheme: "visa".into(),
                    state: JobState::Failed,
                    attempts: 30,
                    next_at: T0 + 60_000,
                    last_error: Some("token service unreachable (synthetic)".into()),
                },
            ],
            next: Some("job-synthetic-0002".into()),
        },
    ));
    v.push(ok::<QueueListOp>(
        "queue_list/state_after",
        "",
        19,
        &QueueListArgs {
            state: Some(JobState::InFlight),
            limit: 100,
            after: Some("job-synthetic-0002".into()),
        },
        &QueueList {
            jobs: vec![],
            next: None,
        },
    ));
    v.push(ok::<QueueRetry>(
        "queue_retry",
        "",
        20,
        &JobArgs {
            job_id: "job-synthetic-0002".into(),
        },
        &QueueRetryResult {
            job_id: "job-synthetic-0002".into(),
            state: JobState::Due,
        },
    ));
    v.push(ok::<SchemePause>(
        "scheme_pause",
        "",
        21,
        &SchemeArgs {
            scheme: "mastercard".into(),
        },
        &SchemePaused {
            scheme: "mastercard".into(),
            paused: true,
        },
    ));
    v.push(ok::<SchemeResume>(
        "scheme_resume",
        "",
        22,
        &SchemeArgs {
            scheme: "mastercard".into(),
        },
        &SchemePaused {
            scheme: "mastercard".into(),
            paused: false,
        },
    ));
    v.push(ok::<RetentionOp>(
        "retention",
        "",
        23,
        &NoArgs {},
        &Retention {
            tenants: vec![
                TenantRetention {
                    tenant: "t-a".into(),
                    policy: "days:30".into(),
                    pans_retained: 3,
                    due_now: 0,
                    due_7d: 1,
                    due_30d: 3,
                    purged_total: 12,
                    oldest_retained_at: Some(T0),
                },
                TenantRetention {
                    tenant: "t-b".into(),
                    policy: "forever".into(),
                    pans_retained: 0,
                    due_now: 0,
                    due_7d: 0,
                    due_30d: 0,
                    purged_total: 0,
                    oldest_retained_at: None,
                },
            ],
            next_purge_at: Some(T0 + 86_400_000),
        },
    ));
    v.push(ok::<PurgeDue>(
        "purge_due",
        "",
        24,
        &PurgeArgs {
            tenant: Some("t-a".into()),
        },
        &PurgeResult { purged: 2 },
    ));
    v.push(ok::<PurgeDue>(
        "purge_due/all_tenants",
        "tenant nil: every tenant",
        25,
        &PurgeArgs { tenant: None },
        &PurgeResult { purged: 0 },
    ));
    v.push(ok::<EventsOp>(
        "events",
        "",
        26,
        &PageArgs {
            after: Some(10),
            limit: 2,
        },
        &Events {
            events: vec![
                EventView {
                    seq: 11,
                    at: T0 + 900,
                    alias: Some(alias(1)),
                    scheme: Some("visa".into()),
                    kind: "provisioned".into(),
                    detail: "status active".into(),
                },
                EventView {
                    seq: 12,
                    at: T0 + 5000,
                    alias: None,
                    scheme: Some("mastercard".into()),
                    kind: "scheme_paused".into(),
                    detail: "by admin".into(),
                },
            ],
        },
    ));
    v.push(ok::<AuditOp>(
        "audit",
        "after nil: from the oldest record",
        27,
        &PageArgs {
            after: None,
            limit: 0,
        },
        &Audit {
            records: vec![
                AuditView {
                    seq: 1,
                    at: T0,
                    client: "shop-a".into(),
                    uid: 1201,
                    pid: 4242,
                    op: "tokenize".into(),
                    alias: Some(alias(1)),
                    outcome: "ok".into(),
                },
                AuditView {
                    seq: 2,
                    at: T0 + 10,
                    client: "(unknown)".into(),
                    uid: 65534,
                    pid: 77,
                    op: "health".into(),
                    alias: None,
                    outcome: "unauthenticated".into(),
                },
            ],
            chain_ok: true,
        },
    ));
    v.push(ok::<KeyRotate>(
        "key_rotate",
        "extension (admin)",
        28,
        &KeyRotateArgs {
            key: Some("pan".into()),
        },
        &KeyRotateResult {
            key: "pan".into(),
            version: 3,
        },
    ));
    v.push(ok::<KeyRotate>(
        "key_rotate/default",
        "extension (admin): key omitted means \"pan\"",
        29,
        &KeyRotateArgs { key: None },
        &KeyRotateResult {
            key: "pan".into(),
            version: 4,
        },
    ));
    v.push(ok::<KeyRetire>(
        "key_retire",
        "extension (admin)",
        30,
        &KeyRetireArgs { version: 1 },
        &KeyRetireResult {
            label: "vault.pan.v1".into(),
            destroyed: true,
        },
    ));
    v.push(ok::<BackupOp>(
        "backup",
        "extension (admin)",
        31,
        &BackupArgs {
            path: "/var/backups/vaultd/vault-example.redb".into(),
        },
        &BackupResult {
            path: "/var/backups/vaultd/vault-example.redb".into(),
            aliases: 3,
            pans: 3,
            audit_seq: 70_000,
        },
    ));
    v.push(ok::<KekRefresh>(
        "kek_refresh",
        "extension (admin)",
        32,
        &KekRefreshArgs {
            scheme: "visa".into(),
            version: 1,
        },
        &KekRefreshResult {
            scheme: "visa".into(),
            version: 1,
            queued: 2,
        },
    ));
    v
}

/// The args of a request that vault-proto's own types cannot express.
#[derive(Serialize)]
struct TokenizeWithCvc<'a> {
    pan: &'a str,
    exp_month: u8,
    exp_year: u16,
    cvc: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u64,
    id: u64,
    op: &'a str,
}

fn framed_value<T: Serialize>(v: &T) -> Vec<u8> {
    frame::frame(&rmp_serde::to_vec_named(v).unwrap())
}

fn envelope_error(body: &[u8]) -> (Option<u64>, WireError) {
    let e = frame::decode_request(body).unwrap_err();
    (e.id, e.error)
}

fn errors_vectors() -> Vec<Exchange> {
    let mut v = Vec::new();
    // bad_request: an unknown key in args, message as vault-proto makes it.
    let cvc = TokenizeWithCvc {
        pan: TEST_PAN,
        exp_month: 12,
        exp_year: 2030,
        cvc: "123",
    };
    let req = frame::encode_request(101, op::TOKENIZE, &cvc);
    let head = frame::decode_request(&req[4..]).unwrap();
    let e = frame::decode_args::<TokenizeArgs>(head.args).unwrap_err();
    v.push(Exchange {
        name: "bad_request/unknown_arg_key".into(),
        op: Some(op::TOKENIZE),
        note: "an unknown key in args is named (never its value)",
        request: Some(req),
        response: Some(frame::encode_err(Some(101), &e)),
        connection: "open",
    });
    // bad_request: a wrong type.
    #[derive(Serialize)]
    struct WrongType<'a> {
        pan: &'a str,
        exp_month: &'a str,
        exp_year: u16,
    }
    let req = frame::encode_request(
        102,
        op::TOKENIZE,
        &WrongType {
            pan: TEST_PAN,
            exp_month: "12",
            exp_year: 2030,
        },
    );
    let head = frame::decode_request(&req[4..]).unwrap();
    let e = frame::decode_args::<TokenizeArgs>(head.args).unwrap_err();
    v.push(Exchange {
        name: "bad_request/wrong_type".into(),
        op: Some(op::TOKENIZE),
        note: "exp_month as a string",
        request: Some(req),
        response: Some(frame::encode_err(Some(102), &e)),
        connection: "open",
    });
    // bad_request: missing v.
    #[derive(Serialize)]
    struct NoV<'a> {
        id: u64,
        op: &'a str,
    }
    let req = framed_value(&NoV {
        id: 103,
        op: op::HEALTH,
    });
    let (id, e) = envelope_error(&req[4..]);
    v.push(Exchange {
        name: "bad_request/missing_v".into(),
        op: Some(op::HEALTH),
        note: "a request without v",
        request: Some(req),
        response: Some(frame::encode_err(id, &e)),
        connection: "open",
    });
    // bad_request: not MessagePack at all (id nil).
    let req = frame::frame(&[0xc1]);
    let (id, e) = envelope_error(&req[4..]);
    v.push(Exchange {
        name: "bad_request/not_msgpack".into(),
        op: None,
        note: "0xc1 is never used in MessagePack: answered with id nil, the connection stays open",
        request: Some(req),
        response: Some(frame::encode_err(id, &e)),
        connection: "open",
    });
    // bad_request: an array instead of a map (id nil).
    let req = framed_value(&(1u8, 7u8, op::HEALTH));
    let (id, e) = envelope_error(&req[4..]);
    v.push(Exchange {
        name: "bad_request/not_a_map".into(),
        op: None,
        note: "the envelope as an array: answered with id nil",
        request: Some(req),
        response: Some(frame::encode_err(id, &e)),
        connection: "open",
    });
    // unsupported_version.
    let req = framed_value(&Envelope {
        v: 2,
        id: 104,
        op: op::HEALTH,
    });
    let (id, e) = envelope_error(&req[4..]);
    v.push(Exchange {
        name: "unsupported_version".into(),
        op: Some(op::HEALTH),
        note: "v 2",
        request: Some(req),
        response: Some(frame::encode_err(id, &e)),
        connection: "open",
    });
    v.push(err(
        "unknown_op",
        "frobnicate",
        "",
        105,
        &NoArgs {},
        ErrorCode::UnknownOp,
        "no such op",
    ));
    v.push(Exchange {
        name: "frame_too_large".into(),
        op: None,
        note: "a header announcing max_frame + 1 (default max_frame, 1 MiB): answered with id nil before the body is read, then the connection is closed",
        request: Some(((DEFAULT_MAX_FRAME + 1) as u32).to_be_bytes().to_vec()),
        response: Some(frame::encode_err(
            None,
            &WireError::new(
                ErrorCode::FrameTooLarge,
                format!("frame longer than max_frame ({DEFAULT_MAX_FRAME} bytes)"),
            ),
        )),
        connection: "closed",
    });
    v.push(err(
        "unauthenticated",
        op::HEALTH,
        "a peer uid no [[client]] names",
        106,
        &NoArgs {},
        ErrorCode::Unauthenticated,
        "this uid is not a configured client",
    ));
    v.push(err(
        "forbidden",
        op::STATS,
        "a merchant calling an admin op",
        107,
        &NoArgs {},
        ErrorCode::Forbidden,
        "op stats is not allowed for this client's roles",
    ));
    v.push(err(
        "invalid_pan/luhn",
        op::TOKENIZE,
        "the test PAN with its last digit changed",
        108,
        &tokenize_args("4111111111111112", 12, 2030, None),
        ErrorCode::InvalidPan,
        &PanProblem::Luhn.to_string(),
    ));
    v.push(err(
        "invalid_pan/spaces",
        op::TOKENIZE,
        "spaces are not accepted",
        109,
        &tokenize_args("4111 1111 1111 1111", 12, 2030, None),
        ErrorCode::InvalidPan,
        &PanProblem::NotDigits.to_string(),
    ));
    v.push(err(
        "invalid_expiry",
        op::TOKENIZE,
        "exp_month 13 fits a u8 but is no month",
        110,
        &tokenize_args(TEST_PAN, 13, 2030, None),
        ErrorCode::InvalidExpiry,
        "exp_month must be 1 to 12",
    ));
    v.push(err(
        "alias_not_found",
        op::ALIAS_STATUS,
        "unknown, or another tenant's",
        111,
        &alias_args(2),
        ErrorCode::AliasNotFound,
        "no such alias",
    ));
    v.push(err(
        "transaction_not_found",
        op::TRANSACTION_TOKENS,
        "",
        112,
        &TransactionArgs {
            transaction_id: "txn-unknown".into(),
        },
        ErrorCode::TransactionNotFound,
        "no such transaction id, or it expired",
    ));
    v.push(err(
        "pan_required",
        op::REMOVE_PAN,
        "the token is still pending",
        113,
        &alias_args(1),
        ErrorCode::PanRequired,
        "the alias has no active network token; its PAN is its only credential",
    ));
    v.push(err(
        "no_usable_credential",
        op::CREDENTIALS,
        "PAN removed and the receiver takes PANs only",
        114,
        &credentials_args(&[CredentialKind::Pan], Initiator::Customer, None),
        ErrorCode::NoUsableCredential,
        "nothing this receiver accepts is available for the alias",
    ));
    v.push(err(
        "network_token_required",
        op::TOKENIZE,
        "a tenant with pan_retention none, a card that cannot get a token",
        115,
        &tokenize_args(TEST_PAN_MC, 12, 2030, None),
        ErrorCode::NetworkTokenRequired,
        "the card cannot get a network token and this tenant stores no PANs",
    ));
    v.push(err(
        "rate_limited",
        op::CREDENTIALS,
        "retryable",
        116,
        &credentials_args(&[CredentialKind::Pan], Initiator::Merchant, None),
        ErrorCode::RateLimited,
        "too many PAN answers for this client; retry later",
    ));
    v.push(Exchange {
        name: "overloaded/connection".into(),
        op: None,
        note: "a connection beyond max_connections: answered at once with id nil (no request), then closed; retryable",
        request: None,
        response: Some(frame::encode_err(
            None,
            &WireError::new(
                ErrorCode::Overloaded,
                "too many connections; try again later",
            ),
        )),
        connection: "closed",
    });
    v.push(err(
        "unavailable",
        op::TOKENIZE,
        "retryable; nothing was written",
        117,
        &tokenize_args(TEST_PAN, 12, 2030, None),
        ErrorCode::Unavailable,
        "HSM temporarily unavailable; nothing was written",
    ));
    v.push(err(
        "shutting_down",
        op::ALIAS_STATUS,
        "retryable",
        118,
        &alias_args(1),
        ErrorCode::ShuttingDown,
        "the server is stopping; retry elsewhere or later",
    ));
    v.push(err(
        "internal",
        op::STATS,
        "details only in the server's log",
        119,
        &NoArgs {},
        ErrorCode::Internal,
        "internal error; see the server log",
    ));
    v
}

/// `{name, kind: "pipeline", requests, request_stream, responses,
/// response_stream}`.
fn pipeline_vectors() -> Vec<J> {
    let health = Health {
        ready: true,
        version: "0.1.0".into(),
        hsm: "ok".into(),
        store: "ok".into(),
        uptime_ms: 99,
    };
    let requests: Vec<Vec<u8>> = vec![
        frame::encode_request(1, op::TOKENIZE, &tokenize_args(TEST_PAN, 12, 2030, None)),
        frame::encode_request(2, op::ALIAS_STATUS, &alias_args(2)),
        frame::frame(&[0xc1]),
        frame::encode_request(3, op::HEALTH, &NoArgs {}),
        frame::encode_request(4, op::ALIAS_STATUS, &alias_args(1)),
    ];
    let (nil_id, nil_err) = envelope_error(&[0xc1]);
    let responses: Vec<Vec<u8>> = vec![
        frame::encode_ok(Some(3), &health).unwrap(),
        frame::encode_err(nil_id, &nil_err),
        frame::encode_err(
            Some(2),
            &WireError::new(ErrorCode::AliasNotFound, "no such alias"),
        ),
        frame::encode_ok(
            Some(1),
            &TokenizeResult {
                created: true,
                record: record(1, Some(TokenStatus::Pending), false),
            },
        )
        .unwrap(),
        frame::encode_ok(Some(4), &record(1, Some(TokenStatus::Pending), false)).unwrap(),
    ];
    let pipe = |name: &str, note: &str, reqs: &[Vec<u8>], resps: &[Vec<u8>]| {
        obj(vec![
            ("name", s(name)),
            ("kind", s("pipeline")),
            ("note", s(note)),
            (
                "requests",
                J::Arr(reqs.iter().map(|r| frame_json(r)).collect()),
            ),
            ("request_stream", J::Str(hex(&reqs.concat()))),
            (
                "responses",
                J::Arr(resps.iter().map(|r| frame_json(r)).collect()),
            ),
            ("response_stream", J::Str(hex(&resps.concat()))),
        ])
    };
    vec![
        pipe(
            "pipeline/out_of_order",
            "five frames written back to back before reading; the answers come in another order and are matched by id. The undecodable third frame is answered with id nil and the connection stays open. Request 4 reads the alias request 1 creates: requests in flight together are handled concurrently, so a client that needs an order waits for the first answer (here 4 happened to run after 1).",
            &requests,
            &responses,
        ),
        pipe(
            "pipeline/same_op",
            "three requests of one op; answers in reverse order",
            &[
                frame::encode_request(10, op::HEALTH, &NoArgs {}),
                frame::encode_request(11, op::HEALTH, &NoArgs {}),
                frame::encode_request(12, op::HEALTH, &NoArgs {}),
            ],
            &[
                frame::encode_ok(Some(12), &health).unwrap(),
                frame::encode_ok(Some(11), &health).unwrap(),
                frame::encode_ok(Some(10), &health).unwrap(),
            ],
        ),
    ]
}

/// How a reader with `max_frame` sees a byte stream.
fn read_all(bytes: &[u8], max_frame: usize) -> Vec<String> {
    let mut rd = bytes;
    let mut out = Vec::new();
    loop {
        match frame::read_frame_blocking(&mut rd, max_frame) {
            Ok(FrameRead::Frame(b)) => out.push(format!("frame:{}", b.len())),
            Ok(FrameRead::TooLarge(n)) => {
                out.push(format!("too_large:{n}"));
                break;
            }
            Ok(FrameRead::Close) => {
                out.push("close".into());
                break;
            }
            Ok(FrameRead::Eof) => {
                out.push("eof".into());
                break;
            }
            Err(_) => {
                out.push("truncated".into());
                break;
            }
        }
    }
    out
}

/// `{name, kind: "framing", note, max_frame, bytes, reads, response, connection}`.
fn framing_vectors() -> Vec<J> {
    let health = frame::encode_request(1, op::HEALTH, &NoArgs {});
    let too_large = |max: usize| {
        frame::encode_err(
            None,
            &WireError::new(
                ErrorCode::FrameTooLarge,
                format!("frame longer than max_frame ({max} bytes)"),
            ),
        )
    };
    let max = DEFAULT_MAX_FRAME;
    let mut out = Vec::new();
    let mut push = |name: &str,
                    note: &str,
                    max_frame: usize,
                    bytes: Vec<u8>,
                    response: Option<Vec<u8>>,
                    connection: &str| {
        let reads = read_all(&bytes, max_frame);
        out.push(obj(vec![
            ("name", s(name)),
            ("kind", s("framing")),
            ("note", s(note)),
            ("max_frame", J::Int(max_frame as i128)),
            ("bytes", J::Str(hex(&bytes))),
            ("reads", J::Arr(reads.iter().map(|r| s(r)).collect())),
            (
                "response",
                response.as_deref().map(frame_json).unwrap_or(J::Null),
            ),
            ("connection", s(connection)),
        ]));
    };
    push(
        "length_is_big_endian",
        "one health request: the 4-byte length is big-endian, then exactly that many bytes",
        max,
        health.clone(),
        None,
        "open",
    );
    push(
        "two_frames_back_to_back",
        "frames need no separator; a reader takes exactly length bytes each time",
        max,
        [
            health.clone(),
            frame::encode_request(2, op::HEALTH, &NoArgs {}),
        ]
        .concat(),
        None,
        "open",
    );
    push(
        "max_frame_exact_header",
        "a header announcing exactly max_frame bytes is accepted (the body follows; not shown)",
        max,
        (max as u32).to_be_bytes().to_vec(),
        None,
        "open",
    );
    push(
        "max_frame_plus_one",
        "one byte over max_frame: frame_too_large with id nil, answered before any body is read, then the server closes",
        max,
        ((max + 1) as u32).to_be_bytes().to_vec(),
        Some(too_large(max)),
        "closed",
    );
    push(
        "length_u32_max",
        "the largest length a header can hold: frame_too_large, nothing allocated",
        max,
        vec![0xff, 0xff, 0xff, 0xff],
        Some(too_large(max)),
        "closed",
    );
    push(
        "small_max_frame",
        "with max_frame 64 (configurable), a 65-byte frame is too large; a 64-byte one would not be",
        64,
        [65u32.to_be_bytes().to_vec(), vec![0u8; 65]].concat(),
        Some(too_large(64)),
        "closed",
    );
    push(
        "zero_length",
        "a length of 0 asks the server to close the connection; it sends nothing",
        max,
        vec![0, 0, 0, 0],
        None,
        "closed",
    );
    push(
        "zero_length_after_a_frame",
        "a request, then length 0: the request is still answered (response not shown), then the connection closes",
        max,
        [health.clone(), vec![0, 0, 0, 0]].concat(),
        None,
        "closed",
    );
    push(
        "truncated_header",
        "the stream ends inside a header: the connection is dropped without an answer",
        max,
        vec![0, 0],
        None,
        "closed",
    );
    push(
        "truncated_body",
        "the stream ends inside a body: the connection is dropped without an answer",
        max,
        health[..health.len() - 3].to_vec(),
        None,
        "closed",
    );
    push(
        "length_longer_than_body",
        "a length larger than the body that follows: the reader waits for the rest (here the stream ends), and the server closes a frame not whole within frame_timeout (10 s)",
        max,
        [
            ((health.len() - 4 + 5) as u32).to_be_bytes().to_vec(),
            health[4..].to_vec(),
        ]
        .concat(),
        None,
        "closed",
    );
    let mut trailing = health[4..].to_vec();
    trailing.push(0xc0);
    let (id, e) = envelope_error(&trailing);
    push(
        "length_shorter_than_value",
        "a request whose length and body are one byte short: the body is not a whole MessagePack value, so bad_request with id nil; the connection stays open",
        max,
        [
            ((health.len() - 4 - 1) as u32).to_be_bytes().to_vec(),
            health[4..health.len() - 1].to_vec(),
        ]
        .concat(),
        Some(frame::encode_err(
            envelope_error(&health[4..health.len() - 1]).0,
            &envelope_error(&health[4..health.len() - 1]).1,
        )),
        "open",
    );
    push(
        "trailing_bytes_in_body",
        "a body with a second value after the request map: bad_request with id nil, the connection stays open",
        max,
        frame::frame(&trailing),
        Some(frame::encode_err(id, &e)),
        "open",
    );
    out
}

// ------------------------------------------------------------ files

fn file(name: &str, description: &str, vectors: Vec<J>) -> (String, String) {
    let doc = obj(vec![
        ("schema", s("vaultd-conformance/1")),
        ("protocol_version", J::Int(1)),
        ("description", s(description)),
        ("vectors", J::Arr(vectors)),
    ]);
    let mut text = String::new();
    write_json(&mut text, &doc, 0);
    text.push('\n');
    (name.to_owned(), text)
}

fn generate() -> (Vec<(String, String)>, Vec<Exchange>, Vec<Exchange>) {
    let ops = ops_vectors();
    let errors = errors_vectors();
    let files = vec![
        file(
            "ops.json",
            "One or more exchanges for every op of vault-proto/src/ops.rs, successful.",
            ops.iter().map(Exchange::json).collect(),
        ),
        file(
            "errors.json",
            "At least one exchange for every error code of PROTOCOL.md.",
            errors.iter().map(Exchange::json).collect(),
        ),
        file(
            "pipeline.json",
            "Pipelined exchanges: several requests written before any answer is read, answers out of order.",
            pipeline_vectors(),
        ),
        file(
            "framing.json",
            "Framing edge cases: lengths, limits, truncation, zero length.",
            framing_vectors(),
        ),
    ];
    (files, ops, errors)
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

#[test]
fn checked_in_vectors_are_current() {
    let (files, _, _) = generate();
    let update = std::env::var_os("UPDATE_CONFORMANCE").is_some_and(|v| v != "0");
    let mut stale = Vec::new();
    for (name, text) in &files {
        let path = dir().join(name);
        if update {
            std::fs::write(&path, text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(t) if &t == text => {}
            _ => stale.push(name.clone()),
        }
    }
    assert!(
        stale.is_empty(),
        "conformance vectors are stale or missing: {stale:?}; regenerate with \
         UPDATE_CONFORMANCE=1 cargo test -p vault-proto --test conformance"
    );
}

// ------------------------------------------------------------ round trips

/// Decodes a request frame into `O`'s typed arguments and re-encodes it.
fn request_round_trip<O: Op>(framed: &[u8]) -> Result<Vec<u8>, String>
where
    O::Args: DeserializeOwned,
{
    let head = frame::decode_request(&framed[4..]).map_err(|e| e.error.to_string())?;
    assert_eq!(head.op, O::NAME);
    let args: O::Args = frame::decode_args(head.args).map_err(|e| e.to_string())?;
    Ok(frame::encode_request(head.id, head.op, &args))
}

/// Decodes a successful response's result into `O::Result` and re-encodes it.
fn result_round_trip<O: Op>(id: Option<u64>, raw: &[u8]) -> Vec<u8>
where
    O::Result: Serialize,
{
    let r: O::Result = rmp_serde::from_slice(raw).expect("typed result");
    frame::encode_ok(id, &r).unwrap()
}

type ReqFn = fn(&[u8]) -> Result<Vec<u8>, String>;
type ResFn = fn(Option<u64>, &[u8]) -> Vec<u8>;

/// The typed round trips of an op, from the op registry.
struct Codec;

impl OpVisitor for Codec {
    type Output = (ReqFn, ResFn);
    fn visit<O: Op>(self) -> (ReqFn, ResFn) {
        (request_round_trip::<O>, result_round_trip::<O>)
    }
}

fn codec(op: &str) -> Option<(ReqFn, ResFn)> {
    Some(Opcode::from_name(op)?.visit(Codec))
}

/// Every op of the registry (`src/ops/mod.rs`).
fn registered_op_names() -> BTreeSet<String> {
    Opcode::ALL.iter().map(|o| o.name().to_owned()).collect()
}

fn check_value(framed: &[u8], what: &str) {
    let v = read_value(&framed[4..]).unwrap_or_else(|| panic!("{what}: body is not one value"));
    // Re-encoding the generic value gives the same bytes: the smallest
    // integer and string forms, keys in order.
    let mut again = Vec::new();
    rmpv::encode::write_value(&mut again, &v).unwrap();
    assert_eq!(again, &framed[4..], "{what}: not the canonical encoding");
}

fn check_exchange(x: &Exchange) {
    let what = &x.name;
    if let Some(req) = &x.request {
        if req.len() > 4 {
            let len = u32::from_be_bytes(req[..4].try_into().unwrap()) as usize;
            assert_eq!(len, req.len() - 4, "{what}: request length header");
        }
        let answer = x
            .response
            .as_ref()
            .map(|r| frame::decode_response(&r[4..]).unwrap());
        let answered_err = answer
            .as_ref()
            .and_then(|h| h.outcome.as_ref().err().cloned());
        match frame::decode_request(req.get(4..).unwrap_or(&[])) {
            Ok(head) => {
                assert_eq!(Some(head.op), x.op, "{what}: op");
                check_value(req, what);
                if let Some((req_fn, _)) = codec(head.op) {
                    match req_fn(req) {
                        Ok(again) => assert_eq!(&again, req, "{what}: request re-encoding"),
                        Err(e) => {
                            // Only a bad_request vector may have args the
                            // op's types refuse, with this very message.
                            let want = answered_err.clone().expect("an error answer");
                            assert_eq!(want.code, ErrorCode::BadRequest, "{what}");
                            assert_eq!(e, want.to_string(), "{what}");
                        }
                    }
                } else {
                    assert_eq!(
                        answered_err.as_ref().map(|e| e.code),
                        Some(ErrorCode::UnknownOp),
                        "{what}: an op vault-proto does not know"
                    );
                }
            }
            Err(e) if req.len() > 4 => {
                // A refused envelope: the answer is the error decode_request gives.
                let h = answer.expect("an answer");
                assert_eq!(h.id, e.id, "{what}: answer id");
                assert_eq!(h.outcome.unwrap_err(), e.error, "{what}");
            }
            Err(_) => {}
        }
    }
    if let Some(resp) = &x.response {
        check_value(resp, what);
        let len = u32::from_be_bytes(resp[..4].try_into().unwrap()) as usize;
        assert_eq!(len, resp.len() - 4, "{what}: response length header");
        let head = frame::decode_response(&resp[4..]).unwrap();
        match head.outcome {
            Ok(raw) => {
                let (_, res_fn) = codec(x.op.expect("op")).expect("known op");
                assert_eq!(&res_fn(head.id, raw), resp, "{what}: response re-encoding");
            }
            Err(e) => {
                assert_eq!(e.retryable, e.code.retryable(), "{what}: retryable");
                assert_eq!(
                    &frame::encode_err(head.id, &e),
                    resp,
                    "{what}: error re-encoding"
                );
            }
        }
    }
}

#[test]
fn every_exchange_decodes_and_reencodes_byte_for_byte() {
    let (_, ops, errors) = generate();
    for x in ops.iter().chain(&errors) {
        check_exchange(x);
    }
}

#[test]
fn every_op_and_every_error_code_has_a_vector() {
    let (_, ops, errors) = generate();
    let source_ops = registered_op_names();
    assert_eq!(source_ops.len(), 21, "ops in the registry");
    let covered: BTreeSet<String> = ops.iter().filter_map(|x| x.op.map(str::to_owned)).collect();
    assert_eq!(
        covered, source_ops,
        "ops.json must cover every op of the registry"
    );
    for op in &source_ops {
        assert!(codec(op).is_some(), "no typed codec for {op}");
    }
    assert!(ops.iter().all(|x| {
        x.response
            .as_ref()
            .is_some_and(|r| frame::decode_response(&r[4..]).unwrap().outcome.is_ok())
    }));

    let codes: BTreeSet<&str> = errors
        .iter()
        .filter_map(|x| {
            let r = x.response.as_ref()?;
            frame::decode_response(&r[4..])
                .ok()?
                .outcome
                .err()
                .map(|e| e.code.as_str())
        })
        .collect();
    let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, all, "errors.json must cover every error code");

    // PROTOCOL.md's own table, when the shared folder is beside the repository.
    let protocol = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/PROTOCOL.md");
    if let Ok(text) = std::fs::read_to_string(&protocol) {
        let table = &text[text.find("## Error codes").expect("error table")..];
        let named: BTreeSet<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        assert_eq!(named, all, "PROTOCOL.md's error table and ErrorCode::ALL");
    }
}

#[test]
fn framing_and_pipeline_vectors_read_as_they_say() {
    // Pipelines: the request stream splits into exactly the request frames,
    // the response stream into the responses, and every request id is
    // answered once (the nil-id answer goes to the undecodable frame).
    for p in pipeline_vectors() {
        let J::Obj(fields) = p else { unreachable!() };
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let frames = |v: J| -> Vec<Vec<u8>> {
            let J::Arr(a) = v else { unreachable!() };
            a.into_iter()
                .map(|f| {
                    let J::Obj(f) = f else { unreachable!() };
                    let J::Str(h) = &f[0].1 else { unreachable!() };
                    unhex(h)
                })
                .collect()
        };
        let stream = |v: J| {
            let J::Str(h) = v else { unreachable!() };
            unhex(&h)
        };
        for (list, whole) in [
            ("requests", "request_stream"),
            ("responses", "response_stream"),
        ] {
            let fs = frames(get(list));
            let bytes = stream(get(whole));
            let mut rd = &bytes[..];
            for f in &fs {
                match frame::read_frame_blocking(&mut rd, DEFAULT_MAX_FRAME).unwrap() {
                    FrameRead::Frame(b) => assert_eq!(b, f[4..]),
                    other => panic!("{other:?}"),
                }
            }
            assert!(rd.is_empty());
        }
        let mut asked: Vec<Option<u64>> = frames(get("requests"))
            .iter()
            .map(|r| match frame::decode_request(&r[4..]) {
                Ok(h) => Some(h.id),
                Err(e) => e.id,
            })
            .collect();
        let mut answered: Vec<Option<u64>> = frames(get("responses"))
            .iter()
            .map(|r| frame::decode_response(&r[4..]).unwrap().id)
            .collect();
        assert_ne!(asked, answered, "answers out of order");
        asked.sort();
        answered.sort();
        assert_eq!(asked, answered);
    }
    // Each framing vector's reads are what vault-proto's reader sees.
    let names: BTreeSet<String> = framing_vectors()
        .into_iter()
        .map(|f| {
            let J::Obj(f) = f else { unreachable!() };
            let J::Str(n) = &f[0].1 else { unreachable!() };
            n.clone()
        })
        .collect();
    for want in [
        "max_frame_plus_one",
        "zero_length",
        "truncated_header",
        "max_frame_exact_header",
    ] {
        assert!(names.contains(want), "{want}");
    }
    let too_large = read_all(
        &((DEFAULT_MAX_FRAME + 1) as u32).to_be_bytes(),
        DEFAULT_MAX_FRAME,
    );
    assert_eq!(too_large, [format!("too_large:{}", DEFAULT_MAX_FRAME + 1)]);
    assert_eq!(read_all(&[0, 0, 0, 0], DEFAULT_MAX_FRAME), ["close"]);
    assert_eq!(read_all(&[0, 0], DEFAULT_MAX_FRAME), ["truncated"]);
    assert_eq!(
        read_all(&(DEFAULT_MAX_FRAME as u32).to_be_bytes(), DEFAULT_MAX_FRAME),
        ["truncated"],
        "an exact-max header is accepted: the reader goes on to the body"
    );
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn vectors_hold_no_card_data_but_the_test_pans() {
    let (files, _, _) = generate();
    // Digit runs of 12 or more that pass Luhn must be a well-known test PAN
    // (the synthetic token number is built to fail Luhn).
    let allowed = [TEST_PAN, TEST_PAN_MC];
    for (name, text) in &files {
        // Every JSON string made of 12 to 19 digits (hex frames hold digit
        // runs too, but mixed with letters or too short to matter here).
        for token in text.split('"') {
            if (12..=19).contains(&token.len())
                && token.bytes().all(|b| b.is_ascii_digit())
                && vault_proto::pan::luhn_valid(token.as_bytes())
                && !allowed.contains(&token)
            {
                panic!("{name}: a Luhn-valid number that is not a test PAN");
            }
        }
    }
    assert!(!vault_proto::pan::luhn_valid(SYNTH_TOKEN.as_bytes()));
}
