//! The one error type of the HTTP layer: every refusal the simulator gives,
//! with its status code and its JSON body `{"error", "message"}`. Messages
//! never carry card data.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request itself is malformed.
    BadRequest(String),
    /// 404: unknown token reference (or scheme).
    NotFound,
    /// 409: the token's state does not allow the call (e.g. it is deleted).
    InvalidState,
    /// 409: an idempotency key came back with a different request.
    IdempotencyConflict,
    /// 422: the issuer does not take part in tokenization. Permanent.
    NotEligible,
    /// 422: the card does not belong to the scheme called. Permanent.
    WrongScheme,
    /// 422: the card number or expiry is invalid. Permanent.
    InvalidCard(&'static str),
    /// 503: injected fault.
    Unavailable { retry_after_s: Option<u32> },
    /// 504: injected fault, after holding the request.
    Timeout,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such token".into()),
            ApiError::InvalidState => (
                StatusCode::CONFLICT,
                "invalid_state",
                "the token's status does not allow this".into(),
            ),
            ApiError::IdempotencyConflict => (
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this idempotency key was used with a different request".into(),
            ),
            ApiError::NotEligible => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_eligible",
                "the issuer does not participate in tokenization".into(),
            ),
            ApiError::WrongScheme => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_scheme",
                "the card does not belong to this scheme".into(),
            ),
            ApiError::InvalidCard(m) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_card",
                (*m).into(),
            ),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "token service unavailable".into(),
            ),
            ApiError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "token service timed out".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut resp = (status, Json(json!({"error": code, "message": message}))).into_response();
        if let ApiError::Unavailable {
            retry_after_s: Some(s),
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Parses a JSON body. The error names the field at fault but never echoes
/// a value, since the value may be a card number.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let msg = if e.inner().is_data() {
            format!("invalid or missing field `{}`", e.path())
        } else {
            "the body is not a JSON object".to_owned()
        };
        ApiError::BadRequest(msg)
    })
}
