//! Provisioning throughput, derived from successive `stats` samples (the
//! daemon reports only running totals).

use std::collections::VecDeque;

use vault_proto::ops::Stats;

/// Rates kept for the sparkline (about two minutes at one poll a second).
const KEEP: usize = 120;

#[derive(Debug, Clone, Default)]
pub struct Throughput {
    last: Option<(u64, u64)>,
    /// Tokens provisioned per minute between successive samples, oldest first.
    rates: VecDeque<u64>,
}

impl Throughput {
    /// Adds a sample taken at `at_ms`.
    pub fn sample(&mut self, at_ms: u64, stats: &Stats) {
        let total: u64 = stats.schemes.values().map(|s| s.provisioned).sum();
        if let Some((prev_at, prev_total)) = self.last
            && at_ms > prev_at
        {
            // A smaller total means the daemon restarted: no rate for that gap.
            let delta = total.saturating_sub(prev_total);
            let rate = delta.saturating_mul(60_000) / (at_ms - prev_at);
            self.rates.push_back(rate);
            if self.rates.len() > KEEP {
                self.rates.pop_front();
            }
        }
        self.last = Some((at_ms, total));
    }

    pub fn rates(&self) -> Vec<u64> {
        self.rates.iter().copied().collect()
    }

    pub fn latest(&self) -> Option<u64> {
        self.rates.back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_proto::ops::SchemeStats;

    fn stats(visa: u64, mc: u64) -> Stats {
        let mut s = Stats::default();
        for (name, n) in [("visa", visa), ("mastercard", mc)] {
            s.schemes.insert(
                name.into(),
                SchemeStats {
                    provisioned: n,
                    ..SchemeStats::default()
                },
            );
        }
        s
    }

    #[test]
    fn rate_is_per_minute_over_all_schemes() {
        let mut t = Throughput::default();
        t.sample(1_000, &stats(10, 5));
        assert_eq!(t.latest(), None);
        t.sample(3_000, &stats(12, 7)); // +4 in 2 s
        assert_eq!(t.latest(), Some(120));
        t.sample(4_000, &stats(0, 0)); // daemon restarted
        assert_eq!(t.rates(), [120, 0]);
    }
}
