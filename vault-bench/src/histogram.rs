//! A small log-linear latency histogram (nanoseconds, ~3% relative error),
//! cheap enough to keep one per load task and merge at the end.

use std::time::Duration;

/// Values below this are counted exactly.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above `LINEAR` (2^5 = 32: ≤ 3.1% error).
const SUB_BITS: u32 = 5;
const SUBS: usize = 1 << SUB_BITS;
/// 64-bit values: exponents 6..=63 above the linear range.
const BUCKETS: usize = LINEAR as usize + (64 - 6) * SUBS;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ 6
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUBS - 1);
    LINEAR as usize + (exp as usize - 6) * SUBS + sub
}

/// The middle of bucket `i` (its representative value).
fn value_of(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUBS) as u32 + 6;
    let sub = (k % SUBS) as u64;
    let low = (1u64 << exp) | (sub << (exp - SUB_BITS));
    let width = 1u64 << (exp - SUB_BITS);
    low + width / 2
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Duration::from_nanos(self.max_ns);
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(value_of(i).min(self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum_ns / u128::from(self.total)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            123_456,
            10_000_000,
            u64::MAX / 2,
        ] {
            let i = index(v);
            assert!(i >= last, "index must not decrease");
            last = i;
            let rep = value_of(i) as f64;
            let err = (rep - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.032, "value {v} represented as {rep}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_follow_the_data() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.035, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.035, "p99 {p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.count(), 1000);

        let mut other = Histogram::default();
        other.record(Duration::from_secs(1));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.quantile(1.0), Duration::from_secs(1));
    }
}
