//! Shared by the fuzz targets and the corpus generator: the requests of
//! every op as real clients send them ([`seed_requests`]) and an in-process
//! vault on a real SoftHSM token and a temp redb file ([`Fixture`]).

pub mod fixture;

use vault_proto::Pan;
use vault_proto::frame::{self, encode_request};
use vault_proto::ops::{self, Opcode};

/// A 32-character alias the request-path target replaces with a live alias
/// of the fixture before dispatching, so seeds reach past `alias_not_found`.
pub const ALIAS_PLACEHOLDER: &str = "FuzzAliasFuzzAliasFuzzAliasFuzzA";

/// The card the fixture keeps stored (a public test number).
pub const SEED_PAN: &str = "4111111111111111";

/// The first byte of a request-path input picks the peer: 0 the all-roles
/// client (merchant, admin, forwarder of `t-a`), 1 a collector of `t-b`,
/// 2 an unconfigured uid.
pub const PEERS: [u32; 3] = [0, 1001, 4242];

/// Named request bodies for every op of the registry
/// (`vault_proto::ops::Opcode::ALL`), as `vaultctl` and the client
/// libraries encode them: the match names every op, so a new op gets a
/// seed here (or a reason for none) before this compiles.
pub fn seed_requests() -> Vec<(String, Vec<u8>)> {
    let alias = || ops::AliasArgs {
        alias: ALIAS_PLACEHOLDER.to_owned(),
    };
    let scheme = || ops::SchemeArgs {
        scheme: "visa".into(),
    };
    let page = || ops::PageArgs {
        after: Some(0),
        limit: 5,
    };
    let mut out = Vec::new();
    // encode_request frames its body; the targets take bare bodies.
    let mut add = |name: &str, framed: Vec<u8>| {
        out.push((name.to_owned(), framed[frame::HEADER_LEN..].to_vec()))
    };
    for &opcode in Opcode::ALL {
        let op = opcode.name();
        match opcode {
            Opcode::Health => add(op, encode_request(1, op, &ops::NoArgs {})),
            Opcode::Tokenize => {
                add(
                    op,
                    encode_request(
                        2,
                        op,
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
                        op,
                        &ops::TokenizeArgs {
                            pan: Pan::new("5555555555554444".into()),
                            exp_month: 1,
                            exp_year: 2036,
                            transaction_id: Some("order-1".into()),
                        },
                    ),
                );
            }
            Opcode::TransactionTokens => add(
                op,
                encode_request(
                    4,
                    op,
                    &ops::TransactionArgs {
                        transaction_id: "order-1".into(),
                    },
                ),
            ),
            Opcode::AliasStatus => add(op, encode_request(5, op, &alias())),
            Opcode::Provision => add(op, encode_request(6, op, &alias())),
            Opcode::RemovePan => add(op, encode_request(7, op, &alias())),
            Opcode::DeleteAlias => add(op, encode_request(8, op, &alias())),
            Opcode::Credentials => {
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
                            op,
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
            }
            Opcode::Stats => add(op, encode_request(10, op, &ops::NoArgs {})),
            Opcode::QueueList => add(
                op,
                encode_request(
                    11,
                    op,
                    &ops::QueueListArgs {
                        state: Some(ops::JobState::Due),
                        limit: 10,
                        after: None,
                    },
                ),
            ),
            Opcode::QueueRetry => add(
                op,
                encode_request(
                    12,
                    op,
                    &ops::JobArgs {
                        job_id: "0000000000000001".into(),
                    },
                ),
            ),
            Opcode::SchemePause => add(op, encode_request(13, op, &scheme())),
            Opcode::SchemeResume => add(op, encode_request(14, op, &scheme())),
            Opcode::Retention => add(op, encode_request(15, op, &ops::NoArgs {})),
            Opcode::PurgeDue => add(
                op,
                encode_request(
                    16,
                    op,
                    &ops::PurgeArgs {
                        tenant: Some("t-a".into()),
                    },
                ),
            ),
            Opcode::Events => add(op, encode_request(17, op, &page())),
            Opcode::Audit => add(op, encode_request(18, op, &page())),
            // No seeds: each run of the request-path target would rotate
            // or destroy the fixture's HSM keys, write backup files, or
            // queue a refresh of every token; the mutator still reaches
            // them from the other seeds' envelopes.
            Opcode::KeyRotate | Opcode::KeyRetire | Opcode::Backup | Opcode::KekRefresh => {}
        }
    }
    out
}
