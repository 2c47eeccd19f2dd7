//! A hostile token service, for tests of what the vault accepts
//! (`POST /sim/hostile {scheme, kind, ...}`).
//!
//! Kinds that set a **mode** spoil every answer of that scheme's token
//! service until `{"kind": "off"}`:
//! - `bad_token_number {variant}`: the provisioned token number is
//!   `non_digit`, `multibyte`, `bad_luhn`, `too_long` or `too_short`;
//! - `bad_field {field}`: `exp_month` 13, `exp_year` 1999, `status`
//!   "frozen", `par` not a PAR, `par_with_pan` (a well-formed PAR that
//!   carries the card number), `wrapped_key` two hex digits short,
//!   `token_ref` not a reference, `token_ref_with_pan`;
//! - `echo_pan_in_error`: provisioning answers 422 with the card number
//!   as error code and in the message; token calls answer 409 with the
//!   token number;
//! - `redirect`: every call answers 307 to `/sim/redirect_sink`, which
//!   counts what reaches it;
//! - `huge_body {chunked}`: provisioning answers and feed pages padded to
//!   2 MiB (without a length when `chunked`);
//! - `too_many_events`: a feed page of one event more than asked for;
//! - `bad_cursor`: a feed page whose `next` jumps past its last event.
//!
//! Kinds that push **one event** into the scheme's feed (the token's state
//! at the simulator does not change):
//! - `cross_scheme_event {token_ref, event}`: `delete` or `suspend` of a
//!   token of another scheme;
//! - `unknown_event {token_ref, name}`: an event named `name`;
//! - `redigitize_bad_token_number {token_ref, variant}`: a new token
//!   number spoiled as above.
//!
//! The token is issued as usual whatever the mode, so a vault that asks
//! again once the mode is off gets the real answer for the same
//! idempotency key. `GET /sim/hostile` shows the redirect sink's count and
//! the token references whose answers were spoiled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use vault_proto::pan::luhn_check_digit;

use crate::error::{ApiError, parse_json};
use crate::scheme::Scheme;
use crate::state::{Event, EventKind, EventName, Sim, Status};

/// Size a `huge_body` answer is padded to.
const HUGE: usize = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberVariant {
    NonDigit,
    Multibyte,
    BadLuhn,
    TooLong,
    TooShort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    ExpMonth,
    ExpYear,
    Status,
    Par,
    ParWithPan,
    WrappedKey,
    TokenRef,
    TokenRefWithPan,
}

/// What `POST /sim/hostile` asks for (see the module documentation).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hostility {
    Off,
    BadTokenNumber {
        variant: NumberVariant,
    },
    BadField {
        field: Field,
    },
    EchoPanInError,
    Redirect,
    HugeBody {
        #[serde(default)]
        chunked: bool,
    },
    TooManyEvents,
    BadCursor,
    CrossSchemeEvent {
        token_ref: String,
        #[serde(default = "delete")]
        event: EventKind,
    },
    UnknownEvent {
        token_ref: String,
        name: String,
    },
    RedigitizeBadTokenNumber {
        token_ref: String,
        variant: NumberVariant,
    },
}

fn delete() -> EventKind {
    EventKind::Delete
}

#[derive(Deserialize)]
pub struct HostileRequest {
    pub scheme: Scheme,
    #[serde(flatten)]
    pub hostility: Hostility,
}

/// The modes in force and what they did.
#[derive(Default)]
pub struct Hostile {
    modes: RwLock<HashMap<Scheme, Hostility>>,
    redirect_sink_hits: AtomicU64,
    spoiled: Mutex<Vec<String>>,
}

impl Hostile {
    fn mode(&self, scheme: Scheme) -> Option<Hostility> {
        let modes = self.modes.read().unwrap_or_else(|p| p.into_inner());
        modes.get(&scheme).cloned()
    }

    fn spoiled(&self, token_ref: &str) {
        self.spoiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(token_ref.to_owned());
    }
}

/// A token number spoiled as `variant` says.
pub fn spoil_number(number: &str, variant: NumberVariant) -> String {
    let n = number.len();
    match variant {
        NumberVariant::NonDigit => format!("{}A{}", &number[..n / 2], &number[n / 2 + 1..]),
        // The fourth digit from the end becomes two bytes, so the last
        // four bytes start inside a character.
        NumberVariant::Multibyte => format!("{}é{}", &number[..n - 4], &number[n - 3..]),
        NumberVariant::BadLuhn => {
            let last = number.as_bytes()[n - 1] - b'0';
            format!("{}{}", &number[..n - 1], (last + 1) % 10)
        }
        NumberVariant::TooLong => with_check_digit(&format!("{number}000")[..19]),
        NumberVariant::TooShort => with_check_digit(&number[..10]),
    }
}

fn with_check_digit(body: &str) -> String {
    format!("{body}{}", char::from(luhn_check_digit(body.as_bytes())))
}

impl Sim {
    /// Sets or clears a mode, or pushes a hostile event into a feed.
    pub fn set_hostile(&self, req: HostileRequest) -> Result<(), ApiError> {
        let scheme = req.scheme;
        let event = |token_ref: &str, name: EventName, status: Option<Status>| {
            let mut book = self.book();
            let t = book.tokens.get(token_ref).ok_or(ApiError::NotFound)?;
            let own = t.scheme == scheme;
            let cross = matches!(req.hostility, Hostility::CrossSchemeEvent { .. });
            if own == cross {
                return Err(ApiError::BadRequest(if cross {
                    "cross_scheme_event needs a token of another scheme".into()
                } else {
                    "the token is not this scheme's".into()
                }));
            }
            let mut e = Event {
                seq: 0,
                token_ref: token_ref.to_owned(),
                event: name,
                status: status.unwrap_or(t.status),
                token: None,
                exp_month: None,
                exp_year: None,
                pan_exp_month: None,
                pan_exp_year: None,
            };
            if let Hostility::RedigitizeBadTokenNumber { variant, .. } = req.hostility {
                e.token = Some(spoil_number(&t.number, variant));
                e.exp_month = Some(t.expiry.month);
                e.exp_year = Some(t.expiry.year);
            }
            book.push_event(scheme, e);
            Ok(())
        };
        match &req.hostility {
            Hostility::CrossSchemeEvent {
                token_ref,
                event: k,
            } => {
                let status = match k {
                    EventKind::Delete => Status::Deleted,
                    EventKind::Suspend => Status::Suspended,
                    _ => {
                        return Err(ApiError::BadRequest(
                            "cross_scheme_event is a delete or a suspend".into(),
                        ));
                    }
                };
                event(token_ref, EventName::Kind(*k), Some(status))?;
            }
            Hostility::UnknownEvent { token_ref, name } => {
                event(token_ref, EventName::Other(name.clone()), None)?;
            }
            Hostility::RedigitizeBadTokenNumber { token_ref, .. } => {
                event(token_ref, EventName::Kind(EventKind::Redigitize), None)?;
            }
            Hostility::Off => {
                let mut modes = self
                    .hostile
                    .modes
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                modes.remove(&scheme);
            }
            mode => {
                let mut modes = self
                    .hostile
                    .modes
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                modes.insert(scheme, mode.clone());
            }
        }
        tracing::info!(%scheme, hostility = ?req.hostility, "hostile setting");
        Ok(())
    }
}

pub async fn hostile_handler(
    State(sim): State<Arc<Sim>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    sim.set_hostile(parse_json(&body)?)?;
    Ok(Json(json!({})))
}

pub async fn hostile_view(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let spoiled = sim
        .hostile
        .spoiled
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(json!({
        "redirect_sink_hits": sim.hostile.redirect_sink_hits.load(Ordering::Relaxed),
        "spoiled_token_refs": spoiled,
    }))
}

/// Where `redirect` points: counts whatever a client sends after it.
pub async fn redirect_sink(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.hostile
        .redirect_sink_hits
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!("a client followed a redirect");
    Json(json!({}))
}

/// Which token service route a request is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Provision,
    Feed,
    /// delete, suspend, resume
    Token,
    Key,
}

fn route(path: &str) -> Option<(Scheme, Route)> {
    // /tsp/{scheme}/v1/...
    let mut parts = path.split('/').skip(2);
    let scheme = parts.next()?.parse().ok()?;
    let rest: Vec<&str> = parts.skip(1).collect();
    let r = match rest.as_slice() {
        ["provision"] => Route::Provision,
        ["notifications"] => Route::Feed,
        ["tokens", _, "key"] => Route::Key,
        ["tokens", _, _] => Route::Token,
        _ => return None,
    };
    Some((scheme, r))
}

fn query_u64(query: Option<&str>, name: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// Digits in groups of four, as a careless service would print them.
fn spaced(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Middleware on every `/tsp/{scheme}/v1/...` route: applies the scheme's
/// mode, if any.
pub async fn layer(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let Some((scheme, r)) = route(req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(mode) = sim.hostile.mode(scheme) else {
        return next.run(req).await;
    };
    match (&mode, r) {
        (Hostility::Redirect, _) => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
                .to_owned();
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("http://{host}/sim/redirect_sink"))],
            )
                .into_response();
        }
        (Hostility::EchoPanInError, Route::Provision) => {
            let (_, pan) = pan_of(req).await;
            let message = format!("card {} is not eligible", spaced(&pan));
            return error(StatusCode::UNPROCESSABLE_ENTITY, &pan, message);
        }
        (Hostility::EchoPanInError, Route::Token | Route::Key) => {
            let token_ref = req.uri().path().split('/').nth(5).unwrap_or_default();
            let number = sim
                .book()
                .tokens
                .get(token_ref)
                .map(|t| t.number.clone())
                .unwrap_or_default();
            let message = format!("token {} is in the wrong state", spaced(&number));
            return error(StatusCode::CONFLICT, &number, message);
        }
        (Hostility::TooManyEvents, Route::Feed) => {
            let after = query_u64(req.uri().query(), "after").unwrap_or(0);
            let limit = query_u64(req.uri().query(), "limit").unwrap_or(100);
            let events: Vec<Value> = (after + 1..=after + limit + 1)
                .map(|seq| {
                    let rnd: [u8; 12] = rand::rng().random();
                    json!({
                        "seq": seq,
                        "token_ref": format!("DM4MZZ{}", hex::encode(rnd)),
                        "event": "suspend",
                        "status": "suspended",
                    })
                })
                .collect();
            let next = after + limit + 1;
            return Json(json!({"events": events, "next": next})).into_response();
        }
        _ => {}
    }
    // The card number of a provisioning request, for the `*_with_pan` fields.
    let (req, pan) = if r == Route::Provision {
        pan_of(req).await
    } else {
        (req, String::new())
    };
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return ApiError::BadRequest("answer unreadable".into()).into_response();
    };
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let token_ref = answer["token_ref"].as_str().map(str::to_owned);
    match (&mode, r) {
        (Hostility::BadTokenNumber { variant }, Route::Provision) => {
            let number = answer["token"].as_str().unwrap_or_default().to_owned();
            answer["token"] = json!(spoil_number(&number, *variant));
        }
        (Hostility::BadField { field }, Route::Provision | Route::Key) => {
            let f = &mut answer;
            match field {
                Field::ExpMonth => f["exp_month"] = json!(13),
                Field::ExpYear => f["exp_year"] = json!(1999),
                Field::Status => f["status"] = json!("frozen"),
                Field::Par => f["par"] = json!("<par>"),
                Field::ParWithPan => {
                    f["par"] = json!(format!("{:A<29}", format!("V001{pan}")));
                }
                Field::WrappedKey => {
                    let k = f["wrapped_key"].as_str().unwrap_or_default();
                    f["wrapped_key"] = json!(k[..k.len().saturating_sub(2)].to_owned());
                }
                Field::TokenRef => f["token_ref"] = json!("../../admin"),
                Field::TokenRefWithPan => {
                    f["token_ref"] = json!(format!("DM4M{pan}"));
                }
            }
        }
        (Hostility::HugeBody { chunked }, Route::Provision | Route::Feed) => {
            if let Some(r) = &token_ref {
                sim.hostile.spoiled(r);
            }
            answer["padding"] = json!("x".repeat(HUGE));
            let bytes = answer.to_string().into_bytes();
            let mut parts = parts;
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = if *chunked {
                // A stream has no length to declare: hyper sends it in chunks.
                Body::from_stream(Body::from(bytes).into_data_stream())
            } else {
                Body::from(bytes)
            };
            return Response::from_parts(parts, body);
        }
        (Hostility::BadCursor, Route::Feed) => {
            let has_events = answer["events"].as_array().is_some_and(|e| !e.is_empty());
            if has_events && let Some(next) = answer["next"].as_u64() {
                answer["next"] = json!(next + 1000);
            }
        }
        _ => return Response::from_parts(parts, Body::from(bytes)),
    }
    if let Some(r) = &token_ref {
        sim.hostile.spoiled(r);
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(answer.to_string()))
}

/// The card number a provisioning request carries, and the request
/// rebuilt around its body.
async fn pan_of(req: Request) -> (Request, String) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let pan = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["pan"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (Request::from_parts(parts, Body::from(bytes)), pan)
}

#[cfg(test)]
mod tests {
    use vault_proto::pan::luhn_valid;

    use super::{NumberVariant, spoil_number};

    #[test]
    fn spoiled_numbers_are_wrong_in_the_way_named() {
        let n = "4895370012345671";
        assert!(luhn_valid(n.as_bytes()));
        let non_digit = spoil_number(n, NumberVariant::NonDigit);
        assert_eq!(non_digit.len(), 16);
        assert_eq!(non_digit.bytes().filter(|b| !b.is_ascii_digit()).count(), 1);
        let multibyte = spoil_number(n, NumberVariant::Multibyte);
        // The last four bytes start inside a character.
        assert!(!multibyte.is_char_boundary(multibyte.len() - 4));
        let bad_luhn = spoil_number(n, NumberVariant::BadLuhn);
        assert!(bad_luhn.bytes().all(|b| b.is_ascii_digit()) && !luhn_valid(bad_luhn.as_bytes()));
        for (v, len) in [(NumberVariant::TooLong, 20), (NumberVariant::TooShort, 11)] {
            let s = spoil_number(n, v);
            assert_eq!(s.len(), len);
            assert!(luhn_valid(s.as_bytes()), "{v:?}: only the length is wrong");
        }
    }
}
