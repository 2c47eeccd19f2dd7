//! The soak's verdicts: the daemon's RSS after the warm-up against the
//! tolerance, and the end-of-run check that every acknowledged write is
//! still (or, deleted, no longer) in the vault.

use serde::Serialize;

use crate::load::RssSample;

/// RSS after the warm-up, compared with its value at the warm-up's end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RssVerdict {
    pub warmup_end_kb: u64,
    pub min_kb: u64,
    pub max_kb: u64,
    /// The largest |sample − warm-up value| in % of the warm-up value.
    pub max_deviation_pct: f64,
    pub tolerance_pct: f64,
    /// Samples after the warm-up's end (the warm-up value itself excluded).
    pub samples: usize,
    pub within: bool,
}

impl RssVerdict {
    /// The reference is the first sample at or after `warmup_secs`; `None`
    /// when there is none or nothing follows it (no verdict possible).
    pub fn judge(samples: &[RssSample], warmup_secs: f64, tolerance_pct: f64) -> Option<Self> {
        let at = samples.iter().position(|s| s.secs >= warmup_secs)?;
        let reference = samples[at].rss_kb;
        let after = &samples[at + 1..];
        let min_kb = after.iter().map(|s| s.rss_kb).min()?;
        let max_kb = after.iter().map(|s| s.rss_kb).max()?;
        if reference == 0 {
            return None;
        }
        let dev = |kb: u64| (kb as f64 - reference as f64).abs() / reference as f64 * 100.0;
        let max_deviation_pct = dev(min_kb).max(dev(max_kb));
        Some(RssVerdict {
            warmup_end_kb: reference,
            min_kb,
            max_kb,
            max_deviation_pct,
            tolerance_pct,
            samples: after.len(),
            within: max_deviation_pct <= tolerance_pct,
        })
    }

    pub fn describe(&self) -> String {
        let mb = |kb: u64| kb as f64 / 1024.0;
        format!(
            "RSS at the end of the warm-up {:.1} MB; after it min {:.1} MB, max {:.1} MB over {} \
             samples; max deviation {:.1}% (tolerance ±{:.0}%): {}",
            mb(self.warmup_end_kb),
            mb(self.min_kb),
            mb(self.max_kb),
            self.samples,
            self.max_deviation_pct,
            self.tolerance_pct,
            if self.within { "within" } else { "EXCEEDED" }
        )
    }
}

/// The end-of-run check of every acknowledged tokenize and delete_alias.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Acknowledged tokenizes (each one alias to check).
    pub acknowledged: u64,
    /// Live aliases answered with the card's last4.
    pub verified: u64,
    /// Live aliases answered `alias_not_found`: lost.
    pub missing: u64,
    /// Live aliases answered with another card's last4 (or another alias).
    pub wrong_last4: u64,
    /// Acknowledged deletes answered `alias_not_found`, as they should be.
    pub deleted_gone: u64,
    /// Acknowledged deletes whose alias still answers.
    pub deleted_present: u64,
    /// Deletes without a clear answer (connection lost in flight): either
    /// state is accepted, so these are only counted.
    pub uncertain: u64,
    /// Aliases the daemon answered that are not 32 × [A-Za-z0-9]; never
    /// checked, so they fail the run.
    pub malformed: u64,
    /// Checks that got an error instead of an answer, or never ran.
    pub unchecked: u64,
}

impl Verification {
    /// Why the run fails, if it does.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut bad = |n: u64, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        bad(self.missing, "acknowledged aliases missing");
        bad(self.wrong_last4, "aliases answered with the wrong card");
        bad(self.deleted_present, "deleted aliases still present");
        bad(self.malformed, "malformed aliases in tokenize answers");
        bad(self.unchecked, "aliases could not be checked");
        out
    }

    pub fn describe(&self) -> String {
        format!(
            "{} acknowledged: verified {}, missing {}, wrong last4 {}; deletes confirmed {}, \
             deleted-but-present {}; uncertain {}, malformed {}, unchecked {}",
            self.acknowledged,
            self.verified,
            self.missing,
            self.wrong_last4,
            self.deleted_gone,
            self.deleted_present,
            self.uncertain,
            self.malformed,
            self.unchecked
        )
    }
}

/// What the soak adds to its scenario report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub window: usize,
    /// Soak-created aliases live when the load stopped.
    pub live_at_end: u64,
    pub verification: Verification,
    pub verification_secs: f64,
    /// `None` when no verdict was possible (daemon pid unknown, or no
    /// sample after the warm-up); the run then fails.
    pub rss: Option<RssVerdict>,
    /// Every RSS sample (seconds from the start, kB).
    pub rss_samples: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(v: &[(f64, u64)]) -> Vec<RssSample> {
        v.iter()
            .map(|&(secs, rss_kb)| RssSample { secs, rss_kb })
            .collect()
    }

    #[test]
    fn rss_deviation_is_measured_from_the_warmup_end() {
        // Growth during the warm-up does not count; afterwards 90..112% of 100.
        let s = samples(&[
            (15.0, 40),
            (30.0, 100),
            (45.0, 112),
            (60.0, 90),
            (75.0, 105),
        ]);
        let v = RssVerdict::judge(&s, 30.0, 15.0).expect("a verdict");
        assert_eq!((v.warmup_end_kb, v.min_kb, v.max_kb), (100, 90, 112));
        assert!((v.max_deviation_pct - 12.0).abs() < 1e-9, "{v:?}");
        assert_eq!(v.samples, 3);
        assert!(v.within);
        let strict = RssVerdict::judge(&s, 30.0, 10.0).expect("a verdict");
        assert!(!strict.within);
    }

    #[test]
    fn rss_shrinking_past_the_tolerance_fails_too() {
        let s = samples(&[(10.0, 200), (20.0, 160)]);
        let v = RssVerdict::judge(&s, 10.0, 15.0).expect("a verdict");
        assert!((v.max_deviation_pct - 20.0).abs() < 1e-9);
        assert!(!v.within);
    }

    #[test]
    fn reference_is_the_first_sample_at_or_after_the_warmup() {
        // The warm-up ended between ticks: the next sample is the reference.
        let s = samples(&[(0.2, 50), (31.0, 100), (46.0, 114)]);
        let v = RssVerdict::judge(&s, 30.0, 15.0).expect("a verdict");
        assert_eq!(v.warmup_end_kb, 100);
        assert!(v.within);
    }

    #[test]
    fn no_verdict_without_a_sample_after_the_warmup() {
        assert_eq!(RssVerdict::judge(&[], 0.0, 15.0), None);
        let only_reference = samples(&[(5.0, 10), (30.0, 100)]);
        assert_eq!(RssVerdict::judge(&only_reference, 30.0, 15.0), None);
        let warmup_longer_than_run = samples(&[(5.0, 10), (10.0, 100)]);
        assert_eq!(RssVerdict::judge(&warmup_longer_than_run, 30.0, 15.0), None);
    }

    #[test]
    fn verification_problems_name_every_kind_of_loss() {
        let clean = Verification {
            acknowledged: 10,
            verified: 7,
            deleted_gone: 2,
            uncertain: 1,
            ..Verification::default()
        };
        assert!(clean.problems().is_empty());
        let lossy = Verification {
            missing: 1,
            wrong_last4: 2,
            deleted_present: 3,
            unchecked: 4,
            ..clean
        };
        let p = lossy.problems();
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].starts_with("1 ") && p[0].contains("missing"));
        assert!(p[2].starts_with("3 ") && p[2].contains("deleted"));
    }
}
