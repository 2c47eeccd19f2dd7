//! A per-scheme circuit breaker: after `threshold` consecutive transient
//! failures the scheme is left alone for `cooldown`; then one probe job
//! decides whether it closes again or stays open.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open(Instant),
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    failures: u32,
    threshold: u32,
    cooldown: Duration,
}

/// What [`Breaker::admits`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    All,
    /// Half-open: one probe.
    One,
    None,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: State::Closed,
            failures: 0,
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// May a job for this scheme start now? In half-open state only one may.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.admits(now) {
            Admits::All => true,
            Admits::One => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            Admits::None => false,
        }
    }

    /// How many jobs [`Breaker::try_acquire`] would let through now,
    /// without changing anything.
    pub fn admits(&self, now: Instant) -> Admits {
        match self.state {
            State::Closed => Admits::All,
            State::Open(until) if now < until => Admits::None,
            State::Open(_) | State::HalfOpen { probing: false } => Admits::One,
            State::HalfOpen { probing: true } => Admits::None,
        }
    }

    /// A job that was let through gave up its slot without a verdict.
    pub fn release(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.state = State::Closed;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let trip = matches!(self.state, State::HalfOpen { .. }) || self.failures >= self.threshold;
        if trip {
            self.state = State::Open(now + self.cooldown);
        }
    }

    pub fn describe(&self, now: Instant) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open(until) if now < until => "open",
            State::Open(_) | State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert!(b.try_acquire(t0));
            b.failure(t0);
        }
        assert_eq!(b.describe(t0), "closed");
        b.failure(t0);
        assert_eq!(b.describe(t0), "open");
        assert!(!b.try_acquire(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(6);
        assert!(b.try_acquire(later), "one probe after the cooldown");
        assert!(!b.try_acquire(later), "only one");
        b.failure(later);
        assert_eq!(b.describe(later), "open");
        let later2 = later + Duration::from_secs(6);
        assert!(b.try_acquire(later2));
        b.success();
        assert_eq!(b.describe(later2), "closed");
        assert!(b.try_acquire(later2) && b.try_acquire(later2));
    }
}
