//! The authorization network: `POST /v1/authorize` checks a payment made
//! with a network token, recomputing its cryptogram from the simulator's
//! own copy of the token key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::cryptogram;
use crate::date::YearMonth;
use crate::error::{ApiError, parse_json};
use crate::state::{Sim, Status};

#[derive(Deserialize)]
pub struct AuthorizeRequest {
    pub network_token: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cryptogram: Option<String>,
    pub eci: Option<String>,
    pub amount_minor: u64,
    pub currency: String,
}

#[derive(Serialize)]
pub struct AuthorizeResponse {
    pub approved: bool,
    pub reason: &'static str,
}

/// Why a payment was approved or declined, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    TokenUnknown,
    TokenNotActive,
    ExpiryMismatch,
    TokenExpired,
    CryptogramMalformed,
    CryptogramInvalid,
    Replay,
    Approved,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenUnknown => "token_unknown",
            Reason::TokenNotActive => "token_not_active",
            Reason::ExpiryMismatch => "expiry_mismatch",
            Reason::TokenExpired => "token_expired",
            Reason::CryptogramMalformed => "cryptogram_malformed",
            Reason::CryptogramInvalid => "cryptogram_invalid",
            Reason::Replay => "replay",
            Reason::Approved => "approved",
        }
    }
}

impl Sim {
    /// Decides one authorization; on approval with a cryptogram, records its
    /// ATC as the last accepted.
    pub fn authorize(&self, req: &AuthorizeRequest) -> Reason {
        let mut book = self.book();
        let Some(token_ref) = book.by_number.get(&req.network_token).cloned() else {
            return Reason::TokenUnknown;
        };
        let Some(token) = book.tokens.get_mut(&token_ref) else {
            return Reason::TokenUnknown;
        };
        let reason = decide(token, req);
        if let (Reason::Approved, Some(atc)) = (reason, cryptogram_atc(req)) {
            token.last_atc = atc;
        }
        tracing::info!(
            scheme = %token.scheme,
            token_ref,
            reason = reason.as_str(),
            merchant_initiated = req.cryptogram.is_none(),
            "authorization"
        );
        reason
    }
}

/// All checks but the look-up, in DESIGN.md's order.
fn decide(token: &crate::state::Token, req: &AuthorizeRequest) -> Reason {
    if token.status != Status::Active {
        return Reason::TokenNotActive;
    }
    if (req.exp_month, req.exp_year) != (token.expiry.month, token.expiry.year) {
        return Reason::ExpiryMismatch;
    }
    if token.expiry < YearMonth::now() {
        return Reason::TokenExpired;
    }
    let Some(c) = &req.cryptogram else {
        // Merchant-initiated: no cryptogram to check.
        return Reason::Approved;
    };
    let Some(parsed) = cryptogram::parse(c) else {
        return Reason::CryptogramMalformed;
    };
    let Some(eci) = req.eci.as_deref().filter(|e| valid_eci(e)) else {
        return Reason::CryptogramMalformed;
    };
    let currency_ok =
        req.currency.len() == 3 && req.currency.bytes().all(|b| b.is_ascii_alphabetic());
    if !currency_ok
        || !parsed.verify(
            &token.key,
            &token.number,
            &token.expiry.yymm(),
            req.amount_minor,
            &req.currency,
            eci,
        )
    {
        return Reason::CryptogramInvalid;
    }
    if parsed.atc <= token.last_atc {
        return Reason::Replay;
    }
    Reason::Approved
}

/// The ATC a request's cryptogram carries, if it has a well-formed one.
fn cryptogram_atc(req: &AuthorizeRequest) -> Option<u16> {
    req.cryptogram
        .as_deref()
        .and_then(cryptogram::parse)
        .map(|p| p.atc)
}

fn valid_eci(eci: &str) -> bool {
    eci.len() == 2 && eci.bytes().all(|b| b.is_ascii_digit())
}

pub async fn authorize_handler(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<AuthorizeResponse>, ApiError> {
    let req: AuthorizeRequest = parse_json(&body)?;
    let reason = sim.authorize(&req);
    Ok(Json(AuthorizeResponse {
        approved: reason == Reason::Approved,
        reason: reason.as_str(),
    }))
}
