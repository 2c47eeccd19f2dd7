//! The vault-facing token service API under `/tsp/{scheme}/v1`: provision
//! with an idempotency key, requestor-initiated lifecycle calls, key
//! refresh, and the lifecycle notification feed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use vault_proto::Pan;
use zeroize::Zeroizing;

use crate::date::YearMonth;
use crate::error::{ApiError, parse_json};
use crate::scheme::Scheme;
use crate::state::{Event, Replay, Sim, Stats, Status, Token};

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;
/// Years between issue and a new token's expiry.
const TOKEN_LIFETIME_YEARS: u16 = 3;
const DEFAULT_FEED_LIMIT: u32 = 100;
const MAX_FEED_LIMIT: u32 = 1000;

#[derive(Deserialize)]
pub struct ProvisionRequest {
    pub pan: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub token_requestor_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProvisionResponse {
    pub token_ref: String,
    pub token: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub par: String,
    pub status: Status,
    pub wrapped_key: String,
}

#[derive(Serialize)]
pub struct StatusResponse {
    pub token_ref: String,
    pub status: Status,
}

#[derive(Serialize)]
pub struct KeyResponse {
    pub token_ref: String,
    pub wrapped_key: String,
}

#[derive(Deserialize)]
pub struct FeedQuery {
    pub after: Option<u64>,
    pub limit: Option<u32>,
}

#[derive(Serialize)]
pub struct FeedResponse {
    pub events: Vec<Event>,
    pub next: u64,
}

/// What a requestor may do to its token.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Delete,
    Suspend,
    Resume,
}

impl Sim {
    /// Provisions a token for a card, or replays the answer the same
    /// idempotency key got before.
    pub fn provision(
        &self,
        scheme: Scheme,
        idempotency_key: &str,
        req: &ProvisionRequest,
    ) -> Result<ProvisionResponse, ApiError> {
        let kek = self.keks.get(scheme);
        let pan = req.pan.expose();
        let fingerprint = (
            kek.par(scheme, pan),
            req.exp_month,
            req.exp_year,
            req.token_requestor_id.clone(),
        );
        let mut book = self.book();
        if let Some(replay) = book.idempotency[scheme.index()].get(idempotency_key) {
            if replay.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyConflict);
            }
            let response = replay.response.clone();
            if let Some(token) = book.tokens.get_mut(&response.token_ref) {
                token.provision_calls += 1;
            }
            Stats::bump(&self.stats.idempotent_replays);
            return Ok(response);
        }

        check_card(scheme, req)?;
        if !book.participates(pan) {
            return Err(ApiError::NotEligible);
        }

        let number = book.fresh_token_number(scheme, pan);
        let token_ref = book.fresh_token_ref(scheme);
        let now = YearMonth::now();
        let expiry = YearMonth {
            year: now.year + TOKEN_LIFETIME_YEARS,
            month: now.month,
        };
        let key = Zeroizing::new(rand::random::<[u8; 16]>());
        let response = ProvisionResponse {
            token_ref: token_ref.clone(),
            token: number.clone(),
            exp_month: expiry.month,
            exp_year: expiry.year,
            par: fingerprint.0.clone(),
            status: Status::Active,
            wrapped_key: hex::encode(kek.wrap(&key)),
        };
        book.tokens.insert(
            token_ref.clone(),
            Token {
                token_ref: token_ref.clone(),
                scheme,
                status: Status::Active,
                number: number.clone(),
                expiry,
                par: fingerprint.0.clone(),
                card_bin: req.pan.bin().to_owned(),
                key,
                last_atc: 0,
                provision_calls: 1,
            },
        );
        book.by_number.insert(number, token_ref.clone());
        book.idempotency[scheme.index()].insert(
            idempotency_key.to_owned(),
            Replay {
                token_ref,
                fingerprint,
                response: response.clone(),
            },
        );
        Stats::bump(&self.stats.tokens_issued);
        Ok(response)
    }

    /// Delete, suspend or resume at the requestor's request. Not a feed event:
    /// the requestor already knows.
    pub fn requestor_action(
        &self,
        scheme: Scheme,
        token_ref: &str,
        action: Action,
    ) -> Result<StatusResponse, ApiError> {
        let mut book = self.book();
        let token = book
            .tokens
            .get_mut(token_ref)
            .filter(|t| t.scheme == scheme)
            .ok_or(ApiError::NotFound)?;
        token.status = match (action, token.status) {
            (Action::Delete, _) => Status::Deleted,
            (_, Status::Deleted) => return Err(ApiError::InvalidState),
            (Action::Suspend, _) => Status::Suspended,
            (Action::Resume, _) => Status::Active,
        };
        tracing::info!(%scheme, token_ref, ?action, "requestor lifecycle call");
        Ok(StatusResponse {
            token_ref: token_ref.to_owned(),
            status: token.status,
        })
    }

    /// A new token key (for ATC exhaustion): the ATC starts over.
    pub fn refresh_key(&self, scheme: Scheme, token_ref: &str) -> Result<KeyResponse, ApiError> {
        let mut book = self.book();
        let token = book
            .tokens
            .get_mut(token_ref)
            .filter(|t| t.scheme == scheme)
            .ok_or(ApiError::NotFound)?;
        if token.status == Status::Deleted {
            return Err(ApiError::InvalidState);
        }
        token.key = Zeroizing::new(rand::random::<[u8; 16]>());
        token.last_atc = 0;
        tracing::info!(%scheme, token_ref, "token key refreshed");
        Ok(KeyResponse {
            token_ref: token_ref.to_owned(),
            wrapped_key: hex::encode(self.keks.get(scheme).wrap(&token.key)),
        })
    }

    /// Events of `scheme`'s feed with seq > `after`, oldest first.
    pub fn notifications(&self, scheme: Scheme, after: u64, limit: u32) -> FeedResponse {
        let book = self.book();
        let feed = &book.feeds[scheme.index()];
        // seq n sits at index n - 1, so events after `after` start at index `after`.
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(feed.len());
        let events: Vec<Event> = feed[start..]
            .iter()
            .take(limit.min(MAX_FEED_LIMIT) as usize)
            .cloned()
            .collect();
        let next = events.last().map_or(after, |e| e.seq);
        FeedResponse { events, next }
    }
}

/// Card number, expiry and routing checks: all permanent refusals.
fn check_card(scheme: Scheme, req: &ProvisionRequest) -> Result<(), ApiError> {
    req.pan
        .check()
        .map_err(|_| ApiError::InvalidCard("the card number is not valid"))?;
    let expiry = YearMonth::new(req.exp_year, req.exp_month)
        .ok_or(ApiError::InvalidCard("the expiry is not a valid month"))?;
    if expiry < YearMonth::now() {
        return Err(ApiError::InvalidCard("the card has expired"));
    }
    if Scheme::route(req.pan.expose()) != Some(scheme) {
        return Err(ApiError::WrongScheme);
    }
    Ok(())
}

fn scheme_of(path: &str) -> Result<Scheme, ApiError> {
    path.parse().map_err(|_| ApiError::NotFound)
}

fn path_params(
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Scheme, String), ApiError> {
    let Path((scheme, token_ref)) = p.map_err(|_| ApiError::NotFound)?;
    Ok((scheme_of(&scheme)?, token_ref))
}

pub async fn provision_handler(
    State(sim): State<Arc<Sim>>,
    scheme: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ProvisionResponse>, ApiError> {
    let Path(scheme) = scheme.map_err(|_| ApiError::NotFound)?;
    let scheme = scheme_of(&scheme)?;
    Stats::bump(&sim.stats.provision_requests);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "an Idempotency-Key header of 1 to {MAX_IDEMPOTENCY_KEY} visible characters is required"
            ))
        })?;
    let req: ProvisionRequest = parse_json(&body)?;
    sim.provision(scheme, key, &req).map(Json)
}

/// Requestor-initiated delete, suspend or resume (the route names the action).
pub async fn action_handler(
    action: Action,
    State(sim): State<Arc<Sim>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<StatusResponse>, ApiError> {
    let (scheme, token_ref) = path_params(p)?;
    sim.requestor_action(scheme, &token_ref, action).map(Json)
}

pub async fn key_handler(
    State(sim): State<Arc<Sim>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<KeyResponse>, ApiError> {
    let (scheme, token_ref) = path_params(p)?;
    sim.refresh_key(scheme, &token_ref).map(Json)
}

pub async fn notifications_handler(
    State(sim): State<Arc<Sim>>,
    scheme: Result<Path<String>, PathRejection>,
    q: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedResponse>, ApiError> {
    let Path(scheme) = scheme.map_err(|_| ApiError::NotFound)?;
    let scheme = scheme_of(&scheme)?;
    let Query(q) =
        q.map_err(|_| ApiError::BadRequest("after must be a u64 and limit a u32".into()))?;
    Ok(Json(sim.notifications(
        scheme,
        q.after.unwrap_or(0),
        q.limit.unwrap_or(DEFAULT_FEED_LIMIT),
    )))
}
