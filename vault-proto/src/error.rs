//! Error codes of PROTOCOL.md, one flat enum, and the error object on the wire.

use serde::{Deserialize, Serialize};

/// Every error code of PROTOCOL.md. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    UnknownOp,
    FrameTooLarge,
    Unauthenticated,
    Forbidden,
    InvalidPan,
    InvalidExpiry,
    AliasNotFound,
    TransactionNotFound,
    PanRequired,
    NoUsableCredential,
    NetworkTokenRequired,
    RateLimited,
    Overloaded,
    Unavailable,
    ShuttingDown,
    Internal,
}

impl ErrorCode {
    /// Every code, in PROTOCOL.md's order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOp,
        ErrorCode::FrameTooLarge,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::InvalidPan,
        ErrorCode::InvalidExpiry,
        ErrorCode::AliasNotFound,
        ErrorCode::TransactionNotFound,
        ErrorCode::PanRequired,
        ErrorCode::NoUsableCredential,
        ErrorCode::NetworkTokenRequired,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// Whether a client may retry the same request later (PROTOCOL.md table).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::Overloaded
                | ErrorCode::Unavailable
                | ErrorCode::ShuttingDown
        )
    }

    /// The wire name, e.g. `"alias_not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidPan => "invalid_pan",
            ErrorCode::InvalidExpiry => "invalid_expiry",
            ErrorCode::AliasNotFound => "alias_not_found",
            ErrorCode::TransactionNotFound => "transaction_not_found",
            ErrorCode::PanRequired => "pan_required",
            ErrorCode::NoUsableCredential => "no_usable_credential",
            ErrorCode::NetworkTokenRequired => "network_token_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed response. Its message never holds card data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }
}
