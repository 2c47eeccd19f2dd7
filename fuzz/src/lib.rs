//! Shared by the fuzz targets and the corpus generator: the requests of
//! every op as real clients send them ([`seed_requests`]) and an in-process
//! vault on a real SoftHSM token and a temp redb file ([`Fixture`]).

pub mod fixture;

use vault_proto::Pan;
use vault_proto::frame::{self, encode_request};
use vault_proto::ops::{self, op};

/// A 32-character alias the request-path target replaces with a live alias
/// of the fixture before dispatching, so seeds reach past `alias_not_found`.
pub const ALIAS_PLACEHOLDER: &str = "FuzzAliasFuzzAliasFuzzAliasFuzzA";

/// The card the fixture keeps stored (a public test number).
pub const SEED_PAN: &str = "4111111111111111";

/// The first byte of a request-path input picks the peer: 0 the all-roles
/// client (merchant, admin, forwarder of `t-a`), 1 a collector of `t-b`,
/// 2 an unconfigured uid.
pub const PEERS: [u32; 3] = [0, 1001, 4242];

/// One named request body per op (and a few variants), as `vaultctl` and the
/// client libraries encode them.
pub fn seed_requests() -> Vec<(String, Vec<u8>)> {
    let alias = || ops::AliasArgs {
        alias: ALIAS_PLACEHOLDER.to_owned(),
    };
    let mut out = Vec::new();
    // encode_request frames its body; the targets take bare bodies.
    let mut add = |name: &str, framed: Vec<u8>| {
        out.push((name.to_owned(), framed[frame::HEADER_LEN..].to_vec()))
    };
    add("health", encode_request(1, op::HEALTH, &ops::NoArgs {}));
    add(
        "tokenize",
        encode_request(
            2,
            op::TOKENIZE,
            &ops::TokenizeArgs {
                pan: Pan::new(SEED_PAN.into()),
                exp_month: 12,
                exp_year: 2035,
                transaction_id: None,
            },
        ),
    );
    add(
        "tokenize_txn",
        encode_request(
            3,
            op::TOKENIZE,
            &ops::TokenizeArgs {
                pan: Pan::new("5555555555554444".into()),
                exp_month: 1,
                exp_year: 2036,
                transaction_id: Some("order-1".into()),
            },
        ),
    );
    add(
        "transaction_tokens",
        encode_request(
            4,
            op::TRANSACTION_TOKENS,
            &ops::TransactionArgs {
                transaction_id: "order-1".into(),
            },
        ),
    );
    add(
        "alias_status",
        encode_request(5, op::ALIAS_STATUS, &alias()),
    );
    add("provision", encode_request(6, op::PROVISION, &alias()));
    add("remove_pan", encode_request(7, op::REMOVE_PAN, &alias()));
    add(
        "delete_alias",
        encode_request(8, op::DELETE_ALIAS, &alias()),
    );
    for (name, accept) in [
        ("credentials_pan", vec![ops::CredentialKind::Pan]),
        (
            "credentials_any",
            vec![ops::CredentialKind::NetworkToken, ops::CredentialKind::Pan],
        ),
    ] {
        add(
            name,
            encode_request(
                9,
                op::CREDENTIALS,
                &ops::CredentialsArgs {
                    alias: ALIAS_PLACEHOLDER.to_owned(),
                    tenant: "t-a".into(),
                    accept,
                    initiator: ops::Initiator::Customer,
                    amount_minor: 1999,
                    currency: "EUR".into(),
                    authenticated_eci: Some("05".into()),
                },
            ),
        );
    }
    add("stats", encode_request(10, op::STATS, &ops::NoArgs {}));
    add(
        "queue_list",
        encode_request(
            11,
            op::QUEUE_LIST,
            &ops::QueueListArgs {
                state: Some(ops::JobState::Due),
                limit: 10,
                after: None,
            },
        ),
    );
    add(
        "queue_retry",
        encode_request(
            12,
            op::QUEUE_RETRY,
            &ops::JobArgs {
                job_id: "0000000000000001".into(),
            },
        ),
    );
    let scheme = ops::SchemeArgs {
        scheme: "visa".into(),
    };
    add(
        "scheme_pause",
        encode_request(13, op::SCHEME_PAUSE, &scheme),
    );
    add(
        "scheme_resume",
        encode_request(14, op::SCHEME_RESUME, &scheme),
    );
    add(
        "retention",
        encode_request(15, op::RETENTION, &ops::NoArgs {}),
    );
    add(
        "purge_due",
        encode_request(
            16,
            op::PURGE_DUE,
            &ops::PurgeArgs {
                tenant: Some("t-a".into()),
            },
        ),
    );
    let page = ops::PageArgs {
        after: Some(0),
        limit: 5,
    };
    add("events", encode_request(17, op::EVENTS, &page));
    add("audit", encode_request(18, op::AUDIT, &page));
    out
}
