//! One token service (TSP) per scheme, spoken to over HTTP/JSON in the shape
//! scheme-sim serves (modelled on MDES/VTS): provision with an idempotency
//! key, delete/suspend/resume by the requestor, key refresh, and the
//! lifecycle notification feed. Answers are classified here once, so the
//! worker only sees "done", "refused for good" or "try again later".
//!
//! Nothing a token service sends is trusted. Redirects are not followed;
//! bodies are read up to a cap, piece by piece; every field of an answer is
//! checked before the worker sees it, and a malformed answer is refused
//! (as a transient failure, so a service fixed meanwhile gets another
//! chance) with a message that names the field, never its value. What a
//! service says in its own words (error codes, event names) reaches
//! records and logs only through an allow-list.

use std::time::Duration;

use serde::de::{IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use vault_proto::Pan;
use vault_proto::pan::PanProblem;
use zeroize::Zeroizing;

/// Largest answer read from a provisioning, lifecycle or key call.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Largest notification feed page read.
pub const MAX_FEED_PAGE: usize = 1024 * 1024;
/// Most events a feed page may carry, whatever was asked for (the worker
/// asks for fewer, and refuses a page with more than it asked for).
pub const MAX_FEED_EVENTS: usize = 1000;
/// Largest error body read: only its code is kept.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// An RFC 3394 wrap of an AES-128 token key (24 bytes), in hex.
const WRAPPED_KEY_HEX: usize = 48;
/// Token expiry years accepted (the cryptogram carries the year as YY).
const EXPIRY_YEARS: std::ops::RangeInclusive<u16> = 2000..=2099;
/// Length of a payment account reference (EMVCo).
const PAR_LEN: usize = 29;
/// What replaces an error code or event name that is not a plain name.
pub const UNRECOGNISED: &str = "unrecognised";

/// What a TSP call can end in.
#[derive(Debug, thiserror::Error)]
pub enum TspError {
    /// The TSP refused for good (issuer not participating, card not eligible).
    #[error("not eligible: {0}")]
    NotEligible(String),
    /// A refusal that retrying will not change (bad request, unknown token).
    #[error("refused: {0}")]
    Refused(String),
    /// Timeout, connection refused, 5xx, a malformed answer: retry later,
    /// not before `retry_after`.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl TspError {
    /// An answer the vault refuses; `why` names what is wrong, never a value.
    fn invalid(why: &str) -> TspError {
        TspError::Transient {
            message: format!("invalid answer from the token service: {why}"),
            retry_after: None,
        }
    }
}

#[derive(Serialize)]
struct ProvisionBody<'a> {
    pan: &'a Pan,
    exp_month: u8,
    exp_year: u16,
    token_requestor_id: &'a str,
}

/// A provisioned token as the TSP returns it, every field checked
/// ([`check_provisioned`]). Drop wipes the number and key.
#[derive(Deserialize)]
pub struct Provisioned {
    pub token_ref: String,
    pub token: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub par: Option<String>,
    /// `active`, `inactive` or `suspended`.
    pub status: String,
    /// RFC 3394 wrap of the token key under the scheme's KEK, hex.
    pub wrapped_key: Zeroizing<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: serde_json::Value,
}

/// A new token key, checked: `token_ref` is the one asked for and the key
/// has the length of a wrapped AES-128 key.
#[derive(Deserialize)]
pub struct KeyRefresh {
    pub token_ref: String,
    pub wrapped_key: Zeroizing<String>,
}

/// A lifecycle notification from the feed, checked field by field. An
/// event with a malformed field is kept (as [`FeedEvent::Invalid`]) so the
/// feed moves past it and the vault records it as ignored.
#[derive(Debug)]
pub struct Notification {
    pub seq: u64,
    /// `None`: the service sent no usable token reference.
    pub token_ref: Option<String>,
    pub event: FeedEvent,
}

/// What a notification asks for.
#[derive(Debug)]
pub enum FeedEvent {
    Suspend,
    Resume,
    Delete,
    /// A new token number (checked like a provisioned one) and/or expiry.
    Redigitize {
        token: Option<Pan>,
        exp: Option<(u8, u16)>,
    },
    /// The card's expiry changed.
    PanExpiry {
        exp_month: u8,
        exp_year: u16,
    },
    /// An event this vault does not know: its name if it is a plain name,
    /// else [`UNRECOGNISED`].
    Unknown(String),
    /// A known event with a field that failed its check.
    Invalid(&'static str),
}

/// A feed page, checked: no more events than asked for, in increasing
/// order after the cursor, and a `next` cursor that is the last event's.
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
        // No redirects: a provisioning request carries a PAN, and the
        // service's address is configured, not discovered.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
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
        // The body holds the PAN in clear: written once into a block large
        // enough for it, and wiped when the HTTP client drops its last
        // reference (reqwest's `json` would leave its buffer behind).
        let mut json = Zeroizing::new(Vec::with_capacity(512));
        serde_json::to_writer(&mut *json, &body).map_err(|_| TspError::Transient {
            message: "cannot encode the provisioning request".into(),
            retry_after: None,
        })?;
        let resp = self
            .http
            .post(format!("{}/provision", self.base))
            .header("Idempotency-Key", idempotency_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::from(bytes::Bytes::from_owner(json)))
            .send()
            .await;
        let p: Provisioned = parse(resp, MAX_ANSWER).await?;
        check_provisioned(&p, pan).map_err(TspError::invalid)?;
        Ok(p)
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
        match parse::<IgnoredAny>(resp, MAX_ANSWER).await {
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
        let k: KeyRefresh = parse(resp, MAX_ANSWER).await?;
        if k.token_ref != token_ref {
            return Err(TspError::invalid("the key is for another token_ref"));
        }
        if !valid_wrapped_key(&k.wrapped_key) {
            return Err(TspError::invalid("wrapped_key is not 48 hex digits"));
        }
        Ok(k)
    }

    /// At most `limit` notifications after `cursor`.
    pub async fn notifications(&self, cursor: u64, limit: u32) -> Result<Feed, TspError> {
        let resp = self
            .http
            .get(format!(
                "{}/notifications?after={cursor}&limit={limit}",
                self.base
            ))
            .send()
            .await;
        let raw: RawFeed = parse(resp, MAX_FEED_PAGE).await?;
        check_feed(raw, cursor, limit).map_err(TspError::invalid)
    }
}

async fn parse<T: serde::de::DeserializeOwned>(
    resp: Result<reqwest::Response, reqwest::Error>,
    cap: usize,
) -> Result<T, TspError> {
    let resp = resp.map_err(|e| transport(&e))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_success() {
        let body = read_capped(resp, cap).await?;
        return decode(&body);
    }
    if status.is_redirection() {
        return Err(TspError::Transient {
            message: format!(
                "the token service answered with a redirect (HTTP {}), which is not followed",
                status.as_u16()
            ),
            retry_after: None,
        });
    }
    // Only the error code is kept, and only if it is a plain code: a
    // service's free text may echo what it was sent.
    let code = match read_capped(resp, MAX_ERROR_BODY).await {
        Ok(body) => serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| match b.error {
                serde_json::Value::String(c) => allowed_name(&c),
                serde_json::Value::Null => String::new(),
                _ => UNRECOGNISED.to_owned(),
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    let text = if code.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("{code} (HTTP {})", status.as_u16())
    };
    Err(refusal(status.as_u16(), &code, text, retry_after))
}

/// A failed request, by kind only (the error's text may carry a URL).
fn transport(e: &reqwest::Error) -> TspError {
    TspError::Transient {
        message: if e.is_timeout() {
            "timeout".into()
        } else if e.is_connect() {
            "connection failed".into()
        } else if e.is_body() || e.is_decode() {
            "answer not read".into()
        } else {
            "request failed".into()
        },
        retry_after: None,
    }
}

/// Reads a body piece by piece and gives up as soon as it passes `cap`
/// (a declared length past `cap` is refused before reading).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Zeroizing<Vec<u8>>, TspError> {
    let too_large = || TspError::invalid(&format!("the answer is larger than {} KiB", cap / 1024));
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    // Sized up front where the length is known, so the buffer that is
    // wiped is the only copy.
    let mut body = Zeroizing::new(Vec::with_capacity(
        declared.map_or(8 * 1024, |n| n as usize).min(cap),
    ));
    while let Some(piece) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + piece.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// Decodes an answer; an error names the field at fault (when its path is
/// made of plain names) but never a value.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TspError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        if e.inner().to_string().starts_with(TOO_MANY_EVENTS) {
            return TspError::invalid(&format!(
                "a feed page with more than {MAX_FEED_EVENTS} events"
            ));
        }
        let path = e.path().to_string();
        if plain_path(&path) {
            TspError::invalid(&format!("field `{path}` is missing or malformed"))
        } else {
            TspError::invalid("not the expected JSON")
        }
    })
}

/// A path such as `events[3].token`: plain names and indices only (a map
/// key in a path could be anything the service sent).
fn plain_path(path: &str) -> bool {
    path != "."
        && path.len() <= 64
        && path.split('.').all(|seg| {
            let (name, index) = seg.split_once('[').unwrap_or((seg, ""));
            let name_ok = name.is_empty() || allowed_name(name) == name;
            let index_ok = index.is_empty()
                || index.strip_suffix(']').is_some_and(|i| {
                    (1..=6).contains(&i.len()) && i.bytes().all(|b| b.is_ascii_digit())
                });
            name_ok && index_ok && !(name.is_empty() && index.is_empty())
        })
}

/// An error code or event name as the service sent it if it is a plain
/// name (`[a-z_]{1,32}`), else [`UNRECOGNISED`].
pub fn allowed_name(s: &str) -> String {
    if (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s.to_owned()
    } else {
        UNRECOGNISED.to_owned()
    }
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

/// Why a token number is refused (the number itself is never named).
fn check_token_number(token: &Pan) -> Result<(), &'static str> {
    token.check().map_err(|p| match p {
        PanProblem::NotDigits => "the token number is not ASCII digits",
        PanProblem::Length => "the token number is not 12 to 19 digits long",
        PanProblem::Luhn => "the token number fails the Luhn check",
    })
}

fn valid_expiry(month: u64, year: u64) -> Option<(u8, u16)> {
    let m = u8::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
    let y = u16::try_from(year)
        .ok()
        .filter(|y| EXPIRY_YEARS.contains(y))?;
    Some((m, y))
}

/// A payment account reference: 29 upper-case letters and digits.
fn valid_par(par: &str) -> bool {
    par.len() == PAR_LEN
        && par
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn valid_wrapped_key(hex: &str) -> bool {
    hex.len() == WRAPPED_KEY_HEX && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every field of a provisioning answer. `token_ref` and the PAR are
/// stored and shown in clear, so neither may carry the card's or the
/// token's number.
fn check_provisioned(p: &Provisioned, pan: &Pan) -> Result<(), &'static str> {
    if !super::valid_ref(&p.token_ref) {
        return Err("malformed token_ref");
    }
    check_token_number(&p.token)?;
    if p.token.expose() == pan.expose() {
        return Err("the token number is the card number");
    }
    if valid_expiry(p.exp_month.into(), p.exp_year.into()).is_none() {
        return Err("the token expiry is not a valid month");
    }
    if p.par.as_deref().is_some_and(|par| !valid_par(par)) {
        return Err("par is not 29 upper-case letters and digits");
    }
    if !matches!(p.status.as_str(), "active" | "inactive" | "suspended") {
        return Err("status is not one of active, inactive, suspended");
    }
    if !valid_wrapped_key(&p.wrapped_key) {
        return Err("wrapped_key is not 48 hex digits");
    }
    let in_clear = [Some(p.token_ref.as_str()), p.par.as_deref()];
    if in_clear
        .into_iter()
        .flatten()
        .any(|f| f.contains(pan.expose()) || f.contains(p.token.expose()))
    {
        return Err("token_ref or par carries a card number");
    }
    Ok(())
}

/// The start of the error a feed page with too many events stops at.
const TOO_MANY_EVENTS: &str = "too many events";

#[derive(Deserialize)]
struct RawFeed {
    #[serde(deserialize_with = "at_most_max_events")]
    events: Vec<RawNotification>,
    next: u64,
}

/// Stops reading a feed page at its [`MAX_FEED_EVENTS`]+1st event.
fn at_most_max_events<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawNotification>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<RawNotification>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of events")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut events = Vec::new();
            while let Some(e) = seq.next_element()? {
                if events.len() == MAX_FEED_EVENTS {
                    return Err(serde::de::Error::custom(TOO_MANY_EVENTS));
                }
                events.push(e);
            }
            Ok(events)
        }
    }
    d.deserialize_seq(Bounded)
}

/// A notification as sent. Only `seq` must be well-formed for the page to
/// be read: a bad field elsewhere makes the event invalid, not the page,
/// so one bad event cannot stop the feed.
#[derive(Deserialize)]
struct RawNotification {
    seq: u64,
    #[serde(default)]
    token_ref: serde_json::Value,
    #[serde(default)]
    event: serde_json::Value,
    #[serde(default)]
    status: serde_json::Value,
    #[serde(default)]
    token: Option<TokenField>,
    #[serde(default)]
    exp_month: serde_json::Value,
    #[serde(default)]
    exp_year: serde_json::Value,
    #[serde(default)]
    pan_exp_month: serde_json::Value,
    #[serde(default)]
    pan_exp_year: serde_json::Value,
}

/// A token number field as sent: text (kept in a wiped [`Pan`]) or not.
enum TokenField {
    Text(Pan),
    NotText,
}

impl<'de> Deserialize<'de> for TokenField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TokenField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TokenField, E> {
                Ok(TokenField::Text(Pan::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TokenField, E> {
                Ok(TokenField::Text(Pan::new(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TokenField, E> {
                Ok(TokenField::NotText)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TokenField, E> {
                Ok(TokenField::NotText)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TokenField, E> {
                Ok(TokenField::NotText)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TokenField, E> {
                Ok(TokenField::NotText)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TokenField, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TokenField::NotText)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TokenField, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TokenField::NotText)
            }
        }
        d.deserialize_any(V)
    }
}

/// An expiry pair: absent (both null), valid, or `Err`.
fn optional_expiry(m: &serde_json::Value, y: &serde_json::Value) -> Result<Option<(u8, u16)>, ()> {
    match (m, y) {
        (serde_json::Value::Null, serde_json::Value::Null) => Ok(None),
        _ => match (m.as_u64(), y.as_u64()) {
            (Some(m), Some(y)) => valid_expiry(m, y).map(Some).ok_or(()),
            _ => Err(()),
        },
    }
}

impl RawNotification {
    fn check(self) -> Notification {
        let RawNotification {
            seq,
            token_ref,
            event,
            status,
            token,
            exp_month,
            exp_year,
            pan_exp_month,
            pan_exp_year,
        } = self;
        let token_ref = token_ref
            .as_str()
            .filter(|r| super::valid_ref(r))
            .map(str::to_owned);
        let event = (|| {
            let Some(name) = event.as_str() else {
                return FeedEvent::Invalid("the event name is missing or not text");
            };
            if !matches!(
                name,
                "suspend" | "resume" | "delete" | "redigitize" | "pan_expiry"
            ) {
                return FeedEvent::Unknown(allowed_name(name));
            }
            if token_ref.is_none() {
                return FeedEvent::Invalid("the token_ref is missing or malformed");
            }
            if !matches!(
                status.as_str(),
                Some("active" | "inactive" | "suspended" | "deleted")
            ) {
                return FeedEvent::Invalid(
                    "the status is not one of active, inactive, suspended, deleted",
                );
            }
            match name {
                "suspend" => FeedEvent::Suspend,
                "resume" => FeedEvent::Resume,
                "delete" => FeedEvent::Delete,
                "pan_expiry" => match optional_expiry(&pan_exp_month, &pan_exp_year) {
                    Ok(Some((exp_month, exp_year))) => FeedEvent::PanExpiry {
                        exp_month,
                        exp_year,
                    },
                    _ => FeedEvent::Invalid("pan_expiry without a valid card expiry"),
                },
                _ => {
                    let Ok(exp) = optional_expiry(&exp_month, &exp_year) else {
                        return FeedEvent::Invalid("redigitize with an invalid token expiry");
                    };
                    let token = match token {
                        None => None,
                        Some(TokenField::NotText) => {
                            return FeedEvent::Invalid("the token number is not text");
                        }
                        Some(TokenField::Text(t)) => match check_token_number(&t) {
                            Ok(()) => Some(t),
                            Err(why) => return FeedEvent::Invalid(why),
                        },
                    };
                    if token.is_none() && exp.is_none() {
                        return FeedEvent::Invalid("redigitize without a token number or expiry");
                    }
                    FeedEvent::Redigitize { token, exp }
                }
            }
        })();
        Notification {
            seq,
            token_ref,
            event,
        }
    }
}

/// The page as a whole: a page that breaks these rules is refused and
/// read again at the next poll; the cursor does not move.
fn check_feed(raw: RawFeed, cursor: u64, limit: u32) -> Result<Feed, &'static str> {
    if raw.events.len() > limit as usize {
        return Err("a feed page with more events than asked for");
    }
    let mut last = cursor;
    for e in &raw.events {
        if e.seq <= last {
            return Err("feed events out of order or not after the cursor");
        }
        last = e.seq;
    }
    if raw.events.is_empty() {
        return Ok(Feed {
            events: Vec::new(),
            next: cursor,
        });
    }
    if raw.next != last {
        return Err("the feed's next cursor is not its last event");
    }
    Ok(Feed {
        events: raw.events.into_iter().map(RawNotification::check).collect(),
        next: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(kind(422, UNRECOGNISED), "refused");
        for status in [500, 503, 504, 429, 408] {
            assert_eq!(kind(status, "not_eligible"), "transient", "{status}");
        }
    }

    #[test]
    fn only_plain_names_pass_the_allow_list() {
        assert_eq!(allowed_name("not_eligible"), "not_eligible");
        assert_eq!(allowed_name(&"a".repeat(32)), "a".repeat(32));
        for bad in [
            "",
            "4111111111111111",
            "card_4111111111111111",
            "Not_Eligible",
            "not eligible",
            "é",
            &"a".repeat(33),
        ] {
            assert_eq!(allowed_name(bad), UNRECOGNISED);
        }
    }

    #[test]
    fn error_paths_are_named_only_when_plain() {
        assert!(plain_path("token"));
        assert!(plain_path("events[3].token"));
        assert!(!plain_path("."));
        assert!(!plain_path("events[0].token_ref.4111111111111111"));
        assert!(!plain_path("events[x]"));
        assert!(!plain_path("Token"));
    }

    fn good() -> Provisioned {
        Provisioned {
            token_ref: "DM4MVI0123456789abcdef01234567".into(),
            token: Pan::new("4895370012345671".into()),
            exp_month: 11,
            exp_year: 2029,
            par: Some("V001ABCDEFGHIJKLMNOPQRSTU2345".into()),
            status: "active".into(),
            wrapped_key: Zeroizing::new("0a".repeat(24)),
        }
    }

    /// Makes one field of a good answer bad.
    type Spoil = fn(&mut Provisioned);

    #[test]
    fn every_field_of_a_provisioning_answer_is_checked() {
        let card = Pan::new("4111111111111111".into());
        assert_eq!(check_provisioned(&good(), &card), Ok(()));
        let bad: [(&str, Spoil); 19] = [
            ("ref", |p| p.token_ref = "../x".into()),
            ("non-digit", |p| {
                p.token = Pan::new("48953700123A5678".into())
            }),
            ("multibyte", |p| {
                p.token = Pan::new("489537001234é678".into())
            }),
            ("luhn", |p| p.token = Pan::new("4895370012345679".into())),
            ("long", |p| {
                p.token = Pan::new("48953700123456789012".into())
            }),
            ("short", |p| p.token = Pan::new("48953700123".into())),
            ("the pan", |p| p.token = Pan::new("4111111111111111".into())),
            ("month", |p| p.exp_month = 13),
            ("month 0", |p| p.exp_month = 0),
            ("year", |p| p.exp_year = 1999),
            ("year", |p| p.exp_year = 2100),
            ("par", |p| p.par = Some("V001abc".into())),
            ("par pan", |p| {
                p.par = Some("V0014111111111111111ABCDEFGHI".into())
            }),
            ("ref pan", |p| p.token_ref = "DM4MVI4111111111111111".into()),
            ("ref token", |p| p.token_ref = "X4895370012345671".into()),
            ("status", |p| p.status = "frozen".into()),
            ("status", |p| p.status = "deleted".into()),
            ("key", |p| p.wrapped_key = Zeroizing::new("0a".repeat(32))),
            ("key", |p| p.wrapped_key = Zeroizing::new("zz".repeat(24))),
        ];
        for (what, spoil) in bad {
            let mut p = good();
            spoil(&mut p);
            let why = check_provisioned(&p, &card).expect_err(what);
            assert!(!why.contains("4895") && !why.contains("4111"), "{why}");
        }
    }

    fn page(events: &str, next: u64) -> RawFeed {
        serde_json::from_str(&format!(r#"{{"events": {events}, "next": {next}}}"#)).unwrap()
    }

    fn one(event: &str) -> FeedEvent {
        let raw = page(&format!("[{event}]"), 1);
        let mut f = check_feed(raw, 0, 10).unwrap();
        f.events.remove(0).event
    }

    #[test]
    fn feed_pages_are_checked_as_a_whole() {
        let ev = |seq: u64| {
            format!(
                r#"{{"seq": {seq}, "token_ref": "R1", "event": "suspend", "status": "suspended"}}"#
            )
        };
        let two = format!("[{}, {}]", ev(5), ev(6));
        assert_eq!(check_feed(page(&two, 6), 4, 10).unwrap().next, 6);
        assert!(
            check_feed(page(&two, 6), 4, 1).is_err(),
            "more than asked for"
        );
        assert!(
            check_feed(page(&two, 9), 4, 10).is_err(),
            "next jumps ahead"
        );
        assert!(
            check_feed(page(&two, 6), 5, 10).is_err(),
            "not after the cursor"
        );
        let back = format!("[{}, {}]", ev(6), ev(5));
        assert!(check_feed(page(&back, 5), 4, 10).is_err(), "out of order");
        assert_eq!(check_feed(page("[]", 99), 4, 10).unwrap().next, 4);
        let many = format!(
            "[{}]",
            (1..=MAX_FEED_EVENTS as u64 + 1)
                .map(ev)
                .collect::<Vec<_>>()
                .join(",")
        );
        let body = format!(r#"{{"events": {many}, "next": 1001}}"#);
        match decode::<RawFeed>(body.as_bytes()) {
            Err(TspError::Transient { message, .. }) => {
                assert!(message.contains("more than"), "{message}")
            }
            _ => panic!("a page past the cap was read"),
        }
    }

    #[test]
    fn a_bad_event_is_invalid_on_its_own() {
        let base = |extra: &str| {
            format!(
                r#"{{"seq": 1, "token_ref": "R1", "event": "redigitize", "status": "active", {extra}}}"#
            )
        };
        for token in [
            r#""489537001234é678""#,
            r#""48953700123A5678""#,
            r#""4895370012345679""#,
            r#""48953700123456789012""#,
            "4895370012345678",
            r#"["4895370012345678"]"#,
        ] {
            let e = one(&base(&format!(r#""token": {token}"#)));
            assert!(matches!(e, FeedEvent::Invalid(_)), "{token}: {e:?}");
        }
        assert!(matches!(
            one(&base(
                r#""token": "4895370012345671", "exp_month": 13, "exp_year": 2030"#
            )),
            FeedEvent::Invalid(_)
        ));
        assert!(matches!(
            one(&base(
                r#""token": "4895370012345671", "exp_month": 7, "exp_year": 2033"#
            )),
            FeedEvent::Redigitize {
                token: Some(_),
                exp: Some((7, 2033))
            }
        ));
        let named = |name: &str| {
            one(&format!(
                r#"{{"seq": 1, "token_ref": "R1", "event": {name}, "status": "active"}}"#
            ))
        };
        assert!(
            matches!(named(r#""4111111111111111""#), FeedEvent::Unknown(n) if n == UNRECOGNISED)
        );
        assert!(matches!(named(r#""reissue""#), FeedEvent::Unknown(n) if n == "reissue"));
        assert!(matches!(named("42"), FeedEvent::Invalid(_)));
        assert!(matches!(named(r#""delete""#), FeedEvent::Delete));
        let status = one(r#"{"seq": 1, "token_ref": "R1", "event": "delete", "status": "gone"}"#);
        assert!(matches!(status, FeedEvent::Invalid(_)));
        let r =
            one(r#"{"seq": 1, "token_ref": "../../x", "event": "delete", "status": "deleted"}"#);
        assert!(matches!(r, FeedEvent::Invalid(_)));
    }
}
