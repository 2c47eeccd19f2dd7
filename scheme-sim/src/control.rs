//! The `/sim/...` control endpoints tests drive: issuer participation,
//! faults, a token's inside view, injected lifecycle events, counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::date::YearMonth;
use crate::error::{ApiError, parse_json};
use crate::faults::FaultSetting;
use crate::scheme::Scheme;
use crate::state::{Event, EventKind, EventName, Sim, Status};

#[derive(Deserialize)]
pub struct IssuerRequest {
    pub bin_prefix: String,
    pub participating: bool,
}

#[derive(Serialize)]
pub struct TokenView {
    pub token_ref: String,
    pub scheme: Scheme,
    pub status: Status,
    pub token: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub par: String,
    pub token_key_hex: String,
    pub last_atc: u16,
    pub provision_calls: u64,
}

#[derive(Deserialize)]
pub struct EventRequest {
    pub event: EventKind,
    pub exp_month: Option<u8>,
    pub exp_year: Option<u16>,
    #[serde(default)]
    pub new_token_number: bool,
}

#[derive(Serialize)]
pub struct StatsView {
    pub provision_requests: u64,
    pub tokens_issued: u64,
    pub idempotent_replays: u64,
}

impl Sim {
    pub fn set_issuer(&self, req: &IssuerRequest) -> Result<(), ApiError> {
        let p = &req.bin_prefix;
        if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadRequest(
                "bin_prefix must be 1 to 19 digits".into(),
            ));
        }
        self.book().issuers.insert(p.clone(), req.participating);
        tracing::info!(
            prefix_len = p.len(),
            participating = req.participating,
            "issuer participation set"
        );
        Ok(())
    }

    pub fn token_view(&self, token_ref: &str) -> Result<TokenView, ApiError> {
        let book = self.book();
        let t = book.tokens.get(token_ref).ok_or(ApiError::NotFound)?;
        Ok(TokenView {
            token_ref: t.token_ref.clone(),
            scheme: t.scheme,
            status: t.status,
            token: t.number.clone(),
            exp_month: t.expiry.month,
            exp_year: t.expiry.year,
            par: t.par.clone(),
            token_key_hex: hex::encode(*t.key),
            last_atc: t.last_atc,
            provision_calls: t.provision_calls,
        })
    }

    /// Applies an issuer- or scheme-side change to a token and appends it to
    /// the scheme's feed, where the vault learns of it.
    pub fn inject_event(&self, token_ref: &str, req: &EventRequest) -> Result<(), ApiError> {
        let new_expiry = match (req.exp_month, req.exp_year) {
            (None, None) => None,
            (Some(m), Some(y)) => Some(YearMonth::new(y, m).ok_or_else(|| {
                ApiError::BadRequest("exp_month/exp_year is not a valid month".into())
            })?),
            _ => {
                return Err(ApiError::BadRequest(
                    "give both exp_month and exp_year, or neither".into(),
                ));
            }
        };
        if req.event == EventKind::PanExpiry && new_expiry.is_none() {
            return Err(ApiError::BadRequest(
                "pan_expiry needs exp_month and exp_year".into(),
            ));
        }

        let mut book = self.book();
        let (scheme, old_number, card_bin) = {
            let t = book.tokens.get(token_ref).ok_or(ApiError::NotFound)?;
            if t.status == Status::Deleted {
                return Err(ApiError::InvalidState);
            }
            (t.scheme, t.number.clone(), t.card_bin.clone())
        };
        let new_number = (req.event == EventKind::Redigitize && req.new_token_number)
            .then(|| book.fresh_token_number(scheme, &card_bin));
        if let Some(n) = &new_number {
            book.by_number.remove(&old_number);
            book.by_number.insert(n.clone(), token_ref.to_owned());
        }
        let t = book.tokens.get_mut(token_ref).ok_or(ApiError::NotFound)?;
        let mut event = Event {
            seq: 0,
            token_ref: token_ref.to_owned(),
            event: EventName::Kind(req.event),
            status: t.status,
            token: None,
            exp_month: None,
            exp_year: None,
            pan_exp_month: None,
            pan_exp_year: None,
        };
        match req.event {
            EventKind::Suspend => t.status = Status::Suspended,
            EventKind::Resume => t.status = Status::Active,
            EventKind::Delete => t.status = Status::Deleted,
            EventKind::Redigitize => {
                if let Some(n) = new_number {
                    t.number = n;
                }
                if let Some(e) = new_expiry {
                    t.expiry = e;
                }
                // The vault gets the token's full new state, changed or not.
                event.token = Some(t.number.clone());
                event.exp_month = Some(t.expiry.month);
                event.exp_year = Some(t.expiry.year);
            }
            EventKind::PanExpiry => {
                event.pan_exp_month = new_expiry.map(|e| e.month);
                event.pan_exp_year = new_expiry.map(|e| e.year);
            }
        }
        event.status = t.status;
        tracing::info!(%scheme, token_ref, event = ?req.event, "lifecycle event injected");
        book.push_event(scheme, event);
        Ok(())
    }

    pub fn stats_view(&self) -> StatsView {
        let s = &self.stats;
        StatsView {
            provision_requests: s.provision_requests.load(Ordering::Relaxed),
            tokens_issued: s.tokens_issued.load(Ordering::Relaxed),
            idempotent_replays: s.idempotent_replays.load(Ordering::Relaxed),
        }
    }
}

pub async fn issuers_handler(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    sim.set_issuer(&parse_json(&body)?)?;
    Ok(Json(json!({})))
}

pub async fn faults_handler(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let setting: FaultSetting = parse_json(&body)?;
    setting.validate()?;
    sim.faults.set(setting);
    tracing::info!(?setting, "faults set");
    Ok(Json(json!({})))
}

pub async fn token_handler(
    State(sim): State<Arc<Sim>>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<TokenView>, ApiError> {
    let Path(token_ref) = p.map_err(|_| ApiError::NotFound)?;
    sim.token_view(&token_ref).map(Json)
}

pub async fn event_handler(
    State(sim): State<Arc<Sim>>,
    p: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Path(token_ref) = p.map_err(|_| ApiError::NotFound)?;
    sim.inject_event(&token_ref, &parse_json(&body)?)?;
    Ok(Json(json!({})))
}

pub async fn stats_handler(State(sim): State<Arc<Sim>>) -> Json<StatsView> {
    Json(sim.stats_view())
}
