//! The soak's record of acknowledged writes: every alias a tokenize
//! returned (with the card's index, so its last4 can be recomputed) and
//! what became of it, plus the window that keeps the soak's population
//! bounded by deleting the oldest aliases first. 32 bytes per alias, so a
//! few million fit in a few hundred MB.

use std::collections::VecDeque;

/// Aliases are 32 characters of `[A-Za-z0-9]` (PROTOCOL.md)...
pub const ALIAS_LEN: usize = 32;
/// ...which pack into 6 bits each.
const PACKED_LEN: usize = ALIAS_LEN * 6 / 8;

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

fn from_sextet(v: u8) -> char {
    char::from(match v {
        0..=9 => b'0' + v,
        10..=35 => b'A' + v - 10,
        _ => b'a' + v - 36,
    })
}

fn pack(alias: &str) -> Option<[u8; PACKED_LEN]> {
    let bytes = alias.as_bytes();
    if bytes.len() != ALIAS_LEN {
        return None;
    }
    let mut out = [0u8; PACKED_LEN];
    for (quad, dst) in bytes.chunks(4).zip(out.chunks_mut(3)) {
        let mut bits = 0u32;
        for &c in quad {
            bits = bits << 6 | u32::from(sextet(c)?);
        }
        dst.copy_from_slice(&bits.to_be_bytes()[1..]);
    }
    Some(out)
}

fn unpack(packed: &[u8; PACKED_LEN]) -> String {
    let mut out = String::with_capacity(ALIAS_LEN);
    for tri in packed.chunks(3) {
        let bits = u32::from_be_bytes([0, tri[0], tri[1], tri[2]]);
        for shift in [18, 12, 6, 0] {
            out.push(from_sextet((bits >> shift & 0x3f) as u8));
        }
    }
    out
}

/// One acknowledged tokenize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    alias: [u8; PACKED_LEN],
    /// The card's index for [`crate::pans::PanGen::visa`].
    pub card: u64,
}

impl Entry {
    pub fn alias(&self) -> String {
        unpack(&self.alias)
    }
}

/// What the daemon should answer for an entry at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Present, with its card.
    Live,
    /// A delete is in flight.
    Deleting,
    /// The daemon acknowledged its delete: absent.
    Deleted,
    /// The delete's answer was lost: either is acceptable.
    Uncertain,
}

/// How a delete_alias ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// `{"deleted": true}`.
    Deleted,
    /// A retryable refusal (nothing was written): delete it again later.
    Refused,
    /// `alias_not_found` for an acknowledged alias: it was lost. It stays
    /// expected live so the verification counts it as missing.
    NotFound,
    /// No answer, or an answer that does not say what happened.
    Unknown,
}

pub struct Ledger {
    entries: Vec<Entry>,
    states: Vec<State>,
    /// Entries before this one were claimed for deletion, oldest first.
    cursor: usize,
    /// Claimed entries whose delete was refused: claimed again first.
    retry: VecDeque<usize>,
    /// Live entries a delete may still claim.
    deletable: usize,
    window: usize,
    malformed: u64,
}

impl Ledger {
    /// Deletes are handed out once more than `window` aliases are live.
    pub fn new(window: usize) -> Ledger {
        Ledger {
            entries: Vec::new(),
            states: Vec::new(),
            cursor: 0,
            retry: VecDeque::new(),
            deletable: 0,
            window,
            malformed: 0,
        }
    }

    /// Records an acknowledged tokenize of card `card`; an alias that is
    /// not 32 × `[A-Za-z0-9]` is only counted (and fails the run later).
    pub fn acknowledged(&mut self, alias: &str, card: u64) {
        match pack(alias) {
            Some(alias) => {
                self.entries.push(Entry { alias, card });
                self.states.push(State::Live);
                self.deletable += 1;
            }
            None => self.malformed += 1,
        }
    }

    /// Live aliases that no delete has claimed.
    pub fn live(&self) -> usize {
        self.deletable
    }

    /// The oldest live alias to delete, when more than the window are live.
    /// Only acknowledged aliases are ever in the ledger, so only those are
    /// ever deleted.
    pub fn claim_delete(&mut self) -> Option<(usize, String)> {
        if self.deletable <= self.window {
            return None;
        }
        let id = match self.retry.pop_front() {
            Some(id) => id,
            None => {
                let id = self.cursor;
                self.cursor += 1;
                id
            }
        };
        let entry = self.entries.get(id)?;
        self.states[id] = State::Deleting;
        self.deletable -= 1;
        Some((id, entry.alias()))
    }

    pub fn delete_done(&mut self, id: usize, outcome: DeleteOutcome) {
        let Some(state) = self.states.get_mut(id) else {
            return;
        };
        *state = match outcome {
            DeleteOutcome::Deleted => State::Deleted,
            DeleteOutcome::Refused => {
                self.retry.push_back(id);
                self.deletable += 1;
                State::Live
            }
            DeleteOutcome::NotFound => State::Live,
            DeleteOutcome::Unknown => State::Uncertain,
        };
    }

    /// Everything recorded, for the verification; a delete still marked in
    /// flight (none should be once the load has stopped) counts as uncertain.
    pub fn finish(self) -> (Vec<Entry>, Vec<State>, u64) {
        let mut states = self.states;
        for s in &mut states {
            if *s == State::Deleting {
                *s = State::Uncertain;
            }
        }
        (self.entries, states, self.malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

    fn alias(n: usize) -> String {
        format!("{:0>32}", format!("Zz{n}"))
    }

    #[test]
    fn aliases_pack_into_24_bytes_and_back() {
        for a in [A, "0123456789GHIJKLMNOPQRSTUVWXYZ09", &alias(7)] {
            let p = pack(a).expect("valid alias");
            assert_eq!(p.len(), 24);
            assert_eq!(unpack(&p), a);
        }
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(pack("short"), None);
        assert_eq!(pack("abcdefghijklmnopqrstuvwxyzABCDE-"), None);
    }

    #[test]
    fn deletes_start_only_above_the_window_and_take_the_oldest() {
        let mut l = Ledger::new(3);
        for i in 0..3 {
            l.acknowledged(&alias(i), i as u64);
        }
        assert_eq!(l.claim_delete(), None, "at the window: no delete");
        l.acknowledged(&alias(3), 3);
        assert_eq!(l.live(), 4);
        assert_eq!(l.claim_delete(), Some((0, alias(0))));
        assert_eq!(l.live(), 3);
        assert_eq!(l.claim_delete(), None, "back at the window");
        l.delete_done(0, DeleteOutcome::Deleted);
        l.acknowledged(&alias(4), 4);
        assert_eq!(l.claim_delete(), Some((1, alias(1))));
    }

    #[test]
    fn steady_state_holds_the_window() {
        // One tokenize then one delete slot, as the mix interleaves them.
        let mut l = Ledger::new(100);
        for i in 0..10_000u64 {
            l.acknowledged(&alias(i as usize), i);
            if let Some((id, _)) = l.claim_delete() {
                l.delete_done(id, DeleteOutcome::Deleted);
            }
            assert!(l.live() <= 100);
        }
        assert_eq!(l.live(), 100);
        let (entries, states, malformed) = l.finish();
        assert_eq!((entries.len(), malformed), (10_000, 0));
        let live = states.iter().filter(|s| **s == State::Live).count();
        assert_eq!(live, 100);
        assert!(states[..9_900].iter().all(|s| *s == State::Deleted));
    }

    #[test]
    fn refused_deletes_come_back_first_and_losses_stay_expected() {
        let mut l = Ledger::new(0);
        for i in 0..4 {
            l.acknowledged(&alias(i), i as u64);
        }
        let (a, _) = l.claim_delete().expect("above the window");
        let (b, _) = l.claim_delete().expect("above the window");
        let (c, _) = l.claim_delete().expect("above the window");
        l.delete_done(a, DeleteOutcome::Refused);
        l.delete_done(b, DeleteOutcome::NotFound);
        l.delete_done(c, DeleteOutcome::Unknown);
        assert_eq!(l.live(), 2, "the refused one and the unclaimed one");
        assert_eq!(l.claim_delete(), Some((a, alias(a))), "retried first");
        let (d, _) = l.claim_delete().expect("the last one");
        assert_eq!(d, 3);
        assert_eq!(l.claim_delete(), None, "nothing left to claim");
        l.acknowledged("not an alias", 9);
        let (_, states, malformed) = l.finish();
        assert_eq!(malformed, 1);
        // a and d are still in flight at the finish: uncertain.
        assert_eq!(
            states,
            vec![
                State::Uncertain,
                State::Live,
                State::Uncertain,
                State::Uncertain
            ]
        );
    }
}
