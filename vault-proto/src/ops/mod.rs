//! Every op of the protocol, declared once ([`registry!`](registry) below):
//! its wire name, argument and result types and the roles that may call
//! it. From that one list come the `op::*` name constants, the typed
//! [`Op`] markers clients call with, [`Opcode`] (every op as a value),
//! [`Request`] (a request's arguments decoded once into the op's type) and
//! [`HandleEveryOp`], which a server implements one [`Handle`] per op: a
//! server that lacks a handler, or gives one the wrong argument or result
//! type, does not compile.
//!
//! The argument and result types are field for field as PROTOCOL.md names
//! them, in one file per family of ops. Argument structs refuse unknown
//! keys (so a `cvc` is never accepted, let alone stored).

use serde::{Deserialize, Serialize};

/// Declares an enum that requests carry, with its wire names listed once:
/// `as_str`, `Serialize` and `Deserialize` all use them. The derived
/// `Deserialize` would also take a variant's index (`initiator: 1`); this
/// one reads a string (without allocating) and matches it, and its error
/// names the accepted values without echoing what was sent.
macro_rules! wire_enum {
    ($(#[$attr:meta])* pub enum $ty:ident { $($v:ident = $name:literal),+ $(,)? }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $ty {
            $($v),+
        }

        impl $ty {
            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $name),+
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("one of:", $(" \"", $name, "\""),+))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        match s {
                            $($name => Ok($ty::$v),)+
                            _ => Err(E::custom(concat!("must be one of:", $(" \"", $name, "\""),+))),
                        }
                    }
                }
                d.deserialize_str(Visit)
            }
        }
    };
}

mod cards;
mod credentials;
mod keys;
mod logs;
mod queue;
mod registry;
mod retention;
mod stats;

pub use cards::*;
pub use credentials::*;
pub use keys::*;
pub use logs::*;
pub use queue::*;
pub use registry::{Backend, Handle, Op, OpVisitor, Role};
pub use retention::*;
pub use stats::*;

/// For ops that take no arguments: an empty map, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

// Each line: `Variant(Marker) NAME_CONST = "wire_name": Args => Result,
// [roles that may call it];`. Adding an op is one line here, its types
// in the family's file (unless it reuses some), and its `Handle` impl in
// vaultd; the compiler then finds every place that must know it.
registry::registry! {
    // ------------------------------------------------ stats.rs
    /// Readiness and versions (every authenticated client).
    Health(HealthOp) HEALTH = "health":
        NoArgs => Health, [Collector, Merchant, Forwarder, Admin];

    // ------------------------------------------------ cards.rs
    Tokenize(Tokenize) TOKENIZE = "tokenize":
        TokenizeArgs => TokenizeResult, [Collector, Merchant];
    TransactionTokens(TransactionTokens) TRANSACTION_TOKENS = "transaction_tokens":
        TransactionArgs => AliasRecord, [Merchant];
    AliasStatus(AliasStatus) ALIAS_STATUS = "alias_status":
        AliasArgs => AliasRecord, [Merchant];
    Provision(Provision) PROVISION = "provision":
        AliasArgs => AliasRecord, [Merchant];
    RemovePan(RemovePan) REMOVE_PAN = "remove_pan":
        AliasArgs => AliasRecord, [Merchant];
    DeleteAlias(DeleteAlias) DELETE_ALIAS = "delete_alias":
        AliasArgs => DeleteResult, [Merchant];

    // ------------------------------------------------ credentials.rs
    Credentials(CredentialsOp) CREDENTIALS = "credentials":
        CredentialsArgs => Credentials, [Forwarder];

    // ------------------------------------------------ admin: stats.rs, queue.rs
    Stats(StatsOp) STATS = "stats":
        NoArgs => Stats, [Admin];
    QueueList(QueueListOp) QUEUE_LIST = "queue_list":
        QueueListArgs => QueueList, [Admin];
    QueueRetry(QueueRetry) QUEUE_RETRY = "queue_retry":
        JobArgs => QueueRetryResult, [Admin];
    SchemePause(SchemePause) SCHEME_PAUSE = "scheme_pause":
        SchemeArgs => SchemePaused, [Admin];
    SchemeResume(SchemeResume) SCHEME_RESUME = "scheme_resume":
        SchemeArgs => SchemePaused, [Admin];

    // ------------------------------------------------ admin: retention.rs
    Retention(RetentionOp) RETENTION = "retention":
        NoArgs => Retention, [Admin];
    PurgeDue(PurgeDue) PURGE_DUE = "purge_due":
        PurgeArgs => PurgeResult, [Admin];

    // ------------------------------------------------ admin: logs.rs
    Events(EventsOp) EVENTS = "events":
        PageArgs => Events, [Admin];
    Audit(AuditOp) AUDIT = "audit":
        PageArgs => Audit, [Admin];

    // ------------------------------------------------ admin extensions: keys.rs
    /// Extension (admin): rotate the PAN or the audit key through the daemon.
    KeyRotate(KeyRotate) KEY_ROTATE = "key_rotate":
        KeyRotateArgs => KeyRotateResult, [Admin];
    /// Extension (admin): destroy an old PAN key nothing uses any more.
    KeyRetire(KeyRetire) KEY_RETIRE = "key_retire":
        KeyRetireArgs => KeyRetireResult, [Admin];
    /// Extension (admin): write a consistent copy of the database.
    Backup(BackupOp) BACKUP = "backup":
        BackupArgs => BackupResult, [Admin];
    /// Extension (admin): queue a key refresh for every token whose stored
    /// key is wrapped under a scheme's KEK version (KEK rotation).
    KekRefresh(KekRefresh) KEK_REFRESH = "kek_refresh":
        KekRefreshArgs => KekRefreshResult, [Admin];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers(r: Role) -> Vec<&'static str> {
        Opcode::ALL
            .iter()
            .filter(|o| o.allows(r))
            .map(|o| o.name())
            .collect()
    }

    #[test]
    fn names_are_unique_and_found_again() {
        for &o in Opcode::ALL {
            assert_eq!(Opcode::from_name(o.name()), Some(o));
        }
        assert_eq!(Opcode::from_name("no_such_op"), None);
        assert_eq!(<Tokenize as Op>::NAME, op::TOKENIZE);
        assert_eq!(<Tokenize as Op>::OPCODE, Opcode::Tokenize);
    }

    #[test]
    fn roles_are_protocol_md_s_table() {
        use Role::*;
        assert_eq!(callers(Collector), ["health", "tokenize"]);
        assert_eq!(
            callers(Merchant),
            [
                "health",
                "tokenize",
                "transaction_tokens",
                "alias_status",
                "provision",
                "remove_pan",
                "delete_alias"
            ]
        );
        assert_eq!(callers(Forwarder), ["health", "credentials"]);
        // Admin: health and every op nobody else has.
        for &o in Opcode::ALL {
            let others = [Collector, Merchant, Forwarder]
                .iter()
                .any(|r| o.allows(*r));
            assert_eq!(o.allows(Admin), o == Opcode::Health || !others, "{o:?}");
        }
    }
}
