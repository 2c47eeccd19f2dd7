//! The simulator's in-memory state: issued tokens, per-scheme idempotency
//! records and notification feeds, issuer participation, counters.
//!
//! One mutex guards the book. Every critical section is a few map look-ups
//! and at most one key wrap or CMAC, and none spans an `.await`, so the lock
//! stays far from being the bottleneck at thousands of calls per second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::date::YearMonth;
use crate::faults::Faults;
use crate::hostile::Hostile;
use crate::kek::Keks;
use crate::scheme::{Issuing, Scheme};
use crate::tsp::ProvisionResponse;

/// Token status as the schemes name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Suspended,
    Deleted,
}

/// A token the simulator issued, with its own copy of the token key.
pub struct Token {
    pub token_ref: String,
    pub scheme: Scheme,
    pub status: Status,
    pub number: String,
    pub expiry: YearMonth,
    pub par: String,
    /// The card's first six digits, to keep new token numbers off its BIN.
    pub card_bin: String,
    pub key: Zeroizing<[u8; 16]>,
    /// Last ATC `/v1/authorize` accepted; 0 before the first.
    pub last_atc: u16,
    /// Provision calls received with this token's idempotency key.
    pub provision_calls: u64,
}

/// What a provision call stored under its idempotency key.
pub struct Replay {
    pub token_ref: String,
    /// Identifies the original request (keyed PAR, expiry, requestor), to
    /// tell a retry from a key reused for another card.
    pub fingerprint: (String, u8, u16, String),
    pub response: ProvisionResponse,
}

/// A lifecycle event in a scheme's notification feed.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub seq: u64,
    pub token_ref: String,
    pub event: EventName,
    pub status: Status,
    pub token: Option<String>,
    pub exp_month: Option<u8>,
    pub exp_year: Option<u16>,
    pub pan_exp_month: Option<u8>,
    pub pan_exp_year: Option<u16>,
}

/// An event's name: one the simulator plays, or any text (a hostile feed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EventName {
    Kind(EventKind),
    Other(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Suspend,
    Resume,
    Delete,
    Redigitize,
    PanExpiry,
}

/// Everything behind the mutex.
#[derive(Default)]
pub struct Book {
    pub tokens: HashMap<String, Token>,
    /// Token number → token reference, for `/v1/authorize`.
    pub by_number: HashMap<String, String>,
    /// Per scheme: idempotency key → what the first call got.
    pub idempotency: [HashMap<String, Replay>; Scheme::COUNT],
    /// Per scheme: events in order; an event's seq is its index + 1.
    pub feeds: [Vec<Event>; Scheme::COUNT],
    /// BIN prefix → participating. The longest matching prefix decides.
    pub issuers: HashMap<String, bool>,
}

impl Book {
    /// A token number of `scheme` that no token has yet.
    pub fn fresh_token_number(&self, scheme: Scheme, pan: &str) -> String {
        loop {
            let n = scheme.new_token_number(pan);
            if !self.by_number.contains_key(&n) {
                return n;
            }
        }
    }

    /// A token reference no token has yet.
    pub fn fresh_token_ref(&self, scheme: Scheme) -> String {
        loop {
            let r = scheme.new_token_ref();
            if !self.tokens.contains_key(&r) {
                return r;
            }
        }
    }

    /// Whether cards under this number's BIN may be tokenized.
    pub fn participates(&self, pan: &str) -> bool {
        self.issuers
            .iter()
            .filter(|(prefix, _)| pan.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .is_none_or(|(_, participating)| *participating)
    }

    /// Appends an event to the token's scheme feed, numbering it.
    pub fn push_event(&mut self, scheme: Scheme, mut event: Event) {
        let feed = &mut self.feeds[scheme.index()];
        event.seq = feed.len() as u64 + 1;
        feed.push(event);
    }
}

/// Counters for `/sim/stats`.
#[derive(Default)]
pub struct Stats {
    pub provision_requests: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub idempotent_replays: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The whole simulator, shared by every request handler.
pub struct Sim {
    pub keks: Keks,
    pub faults: Faults,
    pub hostile: Hostile,
    pub stats: Stats,
    book: Mutex<Book>,
}

impl Sim {
    pub fn new(keks: Keks) -> Sim {
        Sim {
            keks,
            faults: Faults::default(),
            hostile: Hostile::default(),
            stats: Stats::default(),
            book: Mutex::new(Book::default()),
        }
    }

    /// The book. Only a bug can poison the lock; for a test simulator,
    /// serving on beats failing every later request.
    pub fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}
