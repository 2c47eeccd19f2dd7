//! The machinery behind the op list in `ops/mod.rs`: the roles, the
//! [`Op`] trait, the traits a server implements ([`Backend`], [`Handle`])
//! and the `registry!` macro that turns the list into name constants,
//! markers, [`Opcode`](super::Opcode), [`Request`](super::Request) and
//! [`HandleEveryOp`](super::HandleEveryOp).

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Opcode;
use crate::WireError;

/// What a configured client may do (PROTOCOL.md, "Identity and roles").
/// Which ops each role may call is part of each op's declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Collector,
    Merchant,
    Forwarder,
    Admin,
}

impl Role {
    /// The name in configuration files and PROTOCOL.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Merchant => "merchant",
            Role::Forwarder => "forwarder",
            Role::Admin => "admin",
        }
    }
}

/// Ties an op name to its argument and result types, so that clients can
/// offer one typed call for every op (`client.op::<Tokenize>(&args)`) and
/// a server one typed handler ([`Handle`]).
pub trait Op {
    const NAME: &'static str;
    const OPCODE: Opcode;
    type Args: Serialize + DeserializeOwned + Send + 'static;
    type Result: Serialize + DeserializeOwned + Send;
}

/// Something that works on every op's types: [`Opcode::visit`] calls
/// `visit::<O>()` with the op's marker, so generic code (tests, fuzz
/// seeds, tools) can go from an op name to its types.
pub trait OpVisitor {
    type Output;
    fn visit<O: Op>(self) -> Self::Output;
}

/// A server of the protocol: who calls (`Caller`) and how it refuses
/// (`Error`; argument and encoding errors arrive as a [`WireError`]).
pub trait Backend: Sync {
    type Caller: Sync;
    type Error: From<WireError> + Send;
}

/// The handler of op `O`: typed arguments in, typed result out.
/// [`Request::serve`](super::Request::serve) needs one for every op.
pub trait Handle<O: Op>: Backend {
    fn handle(
        &self,
        caller: &Self::Caller,
        args: O::Args,
    ) -> impl Future<Output = Result<O::Result, Self::Error>> + Send;
}

/// Declares every op (see its one use in `ops/mod.rs`).
macro_rules! registry {
    ($(
        $(#[$doc:meta])*
        $variant:ident($marker:ident) $konst:ident = $name:literal:
            $args:ty => $res:ty, [$($role:ident),+ $(,)?];
    )+) => {
        /// Op names, as on the wire.
        pub mod op {
            $(
                $(#[$doc])*
                pub const $konst: &str = $name;
            )+
        }

        $(
            $(#[$doc])*
            pub enum $marker {}
            impl Op for $marker {
                const NAME: &'static str = $name;
                const OPCODE: Opcode = Opcode::$variant;
                type Args = $args;
                type Result = $res;
            }
        )+

        /// Every op as a value (Parsec's `Opcode`): its name and the roles
        /// that may call it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Opcode {
            $(
                $(#[$doc])*
                $variant,
            )+
        }

        impl Opcode {
            /// Every op, in declaration order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$variant),+];

            /// The name on the wire.
            pub fn name(self) -> &'static str {
                match self {
                    $(Opcode::$variant => $name,)+
                }
            }

            /// The op of a wire name; `None`: no such op.
            pub fn from_name(name: &str) -> Option<Opcode> {
                match name {
                    $($name => Some(Opcode::$variant),)+
                    _ => None,
                }
            }

            /// The roles that may call this op.
            pub fn roles(self) -> &'static [Role] {
                match self {
                    $(Opcode::$variant => &[$(Role::$role),+],)+
                }
            }

            /// Whether a client with `role` may call this op.
            pub fn allows(self, role: Role) -> bool {
                self.roles().contains(&role)
            }

            /// Calls `v.visit::<O>()` with this op's marker type.
            pub fn visit<V: OpVisitor>(self, v: V) -> V::Output {
                match self {
                    $(Opcode::$variant => v.visit::<$marker>(),)+
                }
            }
        }

        /// A request's arguments, decoded once into its op's type.
        #[derive(Debug)]
        pub enum Request {
            $($variant($args),)+
        }

        impl Request {
            pub fn opcode(&self) -> Opcode {
                match self {
                    $(Request::$variant(_) => Opcode::$variant,)+
                }
            }

            /// Decodes raw `args` (absent: none) into `opcode`'s argument
            /// type; the error is what [`frame::decode_args`](crate::frame::decode_args) says.
            pub fn decode(opcode: Opcode, args: Option<&[u8]>) -> Result<Request, crate::WireError> {
                match opcode {
                    $(Opcode::$variant => crate::frame::decode_args(args).map(Request::$variant),)+
                }
            }

            /// Runs the op's handler and encodes its result as the answer
            /// to request `id`.
            pub async fn serve<B: HandleEveryOp>(
                self,
                backend: &B,
                caller: &B::Caller,
                id: u64,
            ) -> Result<Vec<u8>, B::Error> {
                match self {
                    $(Request::$variant(args) => {
                        let result = <B as Handle<$marker>>::handle(backend, caller, args).await?;
                        crate::frame::encode_ok(Some(id), &result).map_err(B::Error::from)
                    })+
                }
            }
        }

        /// A [`Backend`] with a [`Handle`] for every op: what
        /// [`Request::serve`] needs. Implemented by itself for any type
        /// that has them all.
        pub trait HandleEveryOp: Backend $(+ Handle<$marker>)+ {}

        impl<B: Backend $(+ Handle<$marker>)+> HandleEveryOp for B {}
    };
}

pub(crate) use registry;
