//! `credentials` (forwarder): what the receiver accepts, and the network
//! token or PAN it gets.

use serde::{Deserialize, Serialize};

use crate::Pan;

wire_enum! {
    pub enum CredentialKind {
        NetworkToken = "network_token",
        Pan = "pan",
    }
}

wire_enum! {
    pub enum Initiator {
        Customer = "customer",
        Merchant = "merchant",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsArgs {
    pub alias: String,
    pub tenant: String,
    pub accept: Vec<CredentialKind>,
    pub initiator: Initiator,
    pub amount_minor: u64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated_eci: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    ReceiverPanOnly,
    NoToken,
    TokenNotActive,
}

/// `credentials` result: tagged by `kind`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    NetworkToken {
        scheme: String,
        network_token: Pan,
        exp_month: u8,
        exp_year: u16,
        cryptogram: Option<String>,
        eci: Option<String>,
        atc: Option<u16>,
        par: Option<String>,
        token_ref: String,
    },
    Pan {
        scheme: String,
        pan: Pan,
        exp_month: u8,
        exp_year: u16,
        fallback_reason: FallbackReason,
    },
}

impl std::fmt::Debug for Credentials {
    // Never prints the token number, PAN or cryptogram.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::NetworkToken {
                scheme,
                network_token,
                eci,
                atc,
                token_ref,
                ..
            } => f
                .debug_struct("NetworkToken")
                .field("scheme", scheme)
                .field("network_token", network_token)
                .field("eci", eci)
                .field("atc", atc)
                .field("token_ref", token_ref)
                .finish_non_exhaustive(),
            Credentials::Pan {
                scheme,
                pan,
                fallback_reason,
                ..
            } => f
                .debug_struct("Pan")
                .field("scheme", scheme)
                .field("pan", pan)
                .field("fallback_reason", fallback_reason)
                .finish_non_exhaustive(),
        }
    }
}
