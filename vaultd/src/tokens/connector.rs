//! One token service (TSP) per scheme, spoken to over HTTP/JSON in the shape
//! scheme-sim serves (modelled on MDES/VTS): provision with an idempotency
//! key, delete/suspend/resume by the requestor, key refresh, and the
//! lifecycle notification feed. Answers are classified here once, so the
//! worker only sees "done", "refused for good" or "try again later".

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vault_proto::Pan;
use zeroize::Zeroizing;

/// What a TSP call can end in.
#[derive(Debug, thiserror::Error)]
pub enum TspError {
    /// The TSP refused for good (issuer not participating, card not eligible).
    #[error("not eligible: {0}")]
    NotEligible(String),
    /// A refusal that retrying will not change (bad request, unknown token).
    #[error("refused: {0}")]
    Refused(String),
    /// Timeout, connection refused, 5xx: retry later, not before `retry_after`.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

#[derive(Serialize)]
struct ProvisionBody<'a> {
    pan: &'a Pan,
    exp_month: u8,
    exp_year: u16,
    token_requestor_id: &'a str,
}

/// A provisioned token as the TSP returns it. Drop wipes the number and key.
#[derive(Deserialize)]
pub struct Provisioned {
    pub token_ref: String,
    pub token: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub par: Option<String>,
    pub status: String,
    /// RFC 3394 wrap of the token key under the scheme's KEK, hex.
    pub wrapped_key: Zeroizing<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
pub struct KeyRefresh {
    pub token_ref: String,
    pub wrapped_key: Zeroizing<String>,
}

/// A lifecycle notification from the feed.
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub seq: u64,
    pub token_ref: String,
    pub event: String,
    pub status: String,
    #[serde(default)]
    pub token: Option<Pan>,
    #[serde(default)]
    pub exp_month: Option<u8>,
    #[serde(default)]
    pub exp_year: Option<u16>,
    #[serde(default)]
    pub pan_exp_month: Option<u8>,
    #[serde(default)]
    pub pan_exp_year: Option<u16>,
}

#[derive(Deserialize)]
pub struct Feed {
    pub events: Vec<Notification>,
    pub next: u64,
}

/// The token service of one scheme.
#[derive(Clone)]
pub struct Connector {
    pub scheme: String,
    base: String,
    pub token_requestor_id: String,
    http: reqwest::Client,
}

impl Connector {
    pub fn new(
        scheme: &str,
        url: &str,
        trid: &str,
        timeout: Duration,
    ) -> Result<Connector, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| format!("HTTP client for {scheme}: {e}"))?;
        Ok(Connector {
            scheme: scheme.to_owned(),
            base: format!("{}/tsp/{scheme}/v1", url.trim_end_matches('/')),
            token_requestor_id: trid.to_owned(),
            http,
        })
    }

    /// Requests a token. `idempotency_key` makes a retry return the same
    /// token instead of a second one.
    pub async fn provision(
        &self,
        pan: &Pan,
        exp_month: u8,
        exp_year: u16,
        idempotency_key: &str,
    ) -> Result<Provisioned, TspError> {
        let body = ProvisionBody {
            pan,
            exp_month,
            exp_year,
            token_requestor_id: &self.token_requestor_id,
        };
        let resp = self
            .http
            .post(format!("{}/provision", self.base))
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await;
        parse(resp).await
    }

    /// Asks the TSP to delete a token (requestor-initiated). Deleting an
    /// unknown or already deleted token counts as done.
    pub async fn delete(&self, token_ref: &str) -> Result<(), TspError> {
        self.action(token_ref, "delete").await
    }

    pub async fn suspend(&self, token_ref: &str) -> Result<(), TspError> {
        self.action(token_ref, "suspend").await
    }

    pub async fn resume(&self, token_ref: &str) -> Result<(), TspError> {
        self.action(token_ref, "resume").await
    }

    async fn action(&self, token_ref: &str, what: &str) -> Result<(), TspError> {
        let resp = self
            .http
            .post(format!("{}/tokens/{token_ref}/{what}", self.base))
            .send()
            .await;
        match parse::<serde_json::Value>(resp).await {
            Ok(_) => Ok(()),
            Err(TspError::Refused(m)) if what == "delete" && m.starts_with("not_found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A new token key (ATC exhaustion).
    pub async fn refresh_key(&self, token_ref: &str) -> Result<KeyRefresh, TspError> {
        let resp = self
            .http
            .post(format!("{}/tokens/{token_ref}/key", self.base))
            .send()
            .await;
        parse(resp).await
    }

    /// Notifications after `cursor`.
    pub async fn notifications(&self, cursor: u64, limit: u32) -> Result<Feed, TspError> {
        let resp = self
            .http
            .get(format!(
                "{}/notifications?after={cursor}&limit={limit}",
                self.base
            ))
            .send()
            .await;
        parse(resp).await
    }
}

async fn parse<T: serde::de::DeserializeOwned>(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, TspError> {
    let resp = resp.map_err(|e| TspError::Transient {
        message: if e.is_timeout() {
            "timeout".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else {
            "request failed".into()
        },
        retry_after: None,
    })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_success() {
        return resp.json::<T>().await.map_err(|_| TspError::Transient {
            message: "undecodable answer".into(),
            retry_after: None,
        });
    }
    let body: Option<ErrorBody> = resp.json().await.ok();
    let code = body
        .as_ref()
        .and_then(|b| b.error.clone())
        .unwrap_or_default();
    // Messages from the TSP are kept short and never echo card data; keep
    // only the code and a bounded, digit-free message.
    let msg = body
        .and_then(|b| b.message)
        .map(|m| sanitize(&m))
        .unwrap_or_default();
    let text = if msg.is_empty() {
        format!("{code} (HTTP {})", status.as_u16())
    } else {
        format!("{code}: {msg}")
    };
    Err(refusal(status.as_u16(), &code, text, retry_after))
}

/// What an unsuccessful answer means for the job. Server errors, 408 and
/// 429 are tried again. A refusal of the card itself is `NotEligible`:
/// the issuer does not take part (`not_eligible`), or the card cannot be
/// tokenized (`invalid_card`: a bad number or an expired card; the PAN
/// stays the credential, and `provision` may try again once the card is
/// updated). Any other refusal (the vault's credentials, a request the
/// service does not accept) is the vault's to fix: `Refused`, kept as a
/// failed job an admin can retry.
fn refusal(status: u16, code: &str, text: String, retry_after: Option<Duration>) -> TspError {
    if status >= 500 || status == 429 || status == 408 {
        return TspError::Transient {
            message: format!("HTTP {status}"),
            retry_after,
        };
    }
    match code {
        "not_eligible" | "invalid_card" => TspError::NotEligible(text),
        _ => TspError::Refused(text),
    }
}

/// A TSP message fit for logs and `last_error`: at most 120 characters,
/// digit runs longer than 4 replaced.
pub fn sanitize(m: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for ch in m.chars().take(120) {
        if ch.is_ascii_digit() {
            run.push(ch);
            continue;
        }
        if !run.is_empty() {
            out.push_str(if run.len() > 4 { "…" } else { &run });
            run.clear();
        }
        out.push(ch);
    }
    if !run.is_empty() {
        out.push_str(if run.len() > 4 { "…" } else { &run });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{TspError, refusal};

    #[test]
    fn card_refusals_are_not_eligible_and_the_rest_is_the_vaults() {
        let kind = |status, code| match refusal(status, code, "x".into(), None) {
            TspError::NotEligible(_) => "not_eligible",
            TspError::Refused(_) => "refused",
            TspError::Transient { .. } => "transient",
        };
        assert_eq!(kind(422, "not_eligible"), "not_eligible");
        assert_eq!(kind(422, "invalid_card"), "not_eligible");
        assert_eq!(kind(422, "wrong_scheme"), "refused");
        assert_eq!(kind(401, "unauthorized"), "refused");
        assert_eq!(kind(400, ""), "refused");
        for status in [500, 503, 504, 429, 408] {
            assert_eq!(kind(status, "not_eligible"), "transient", "{status}");
        }
    }

    #[test]
    fn sanitize_drops_long_digit_runs() {
        assert_eq!(
            super::sanitize("card 4111111111111111 refused"),
            "card … refused"
        );
        assert_eq!(super::sanitize("retry in 30 s"), "retry in 30 s");
    }
}
