//! Calendar month arithmetic for expiry dates, in UTC, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// A card or token expiry: the last valid month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

impl YearMonth {
    /// `None` unless `month` is 1–12 and `year` has four digits.
    pub fn new(year: u16, month: u8) -> Option<YearMonth> {
        ((1..=12).contains(&month) && (1000..=9999).contains(&year))
            .then_some(YearMonth { year, month })
    }

    /// The current month in UTC.
    pub fn now() -> YearMonth {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (year, month) = civil_from_days((secs / 86_400) as i64);
        YearMonth {
            year: year as u16,
            month: month as u8,
        }
    }

    /// `"YYMM"`, as the cryptogram data carries it.
    pub fn yymm(self) -> String {
        format!("{:02}{:02}", self.year % 100, self.month)
    }
}

/// Year and month of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1));
        assert_eq!(civil_from_days(31), (1970, 2));
        // 2000-02-29 and 2000-03-01
        assert_eq!(civil_from_days(11_016), (2000, 2));
        assert_eq!(civil_from_days(11_017), (2000, 3));
        // 2026-11-25
        assert_eq!(civil_from_days(20_782), (2026, 11));
        assert_eq!(civil_from_days(20_818), (2026, 12));
        assert_eq!(civil_from_days(20_819), (2027, 1));
    }

    #[test]
    fn validates_and_formats() {
        assert_eq!(YearMonth::new(2029, 13), None);
        assert_eq!(YearMonth::new(2029, 0), None);
        assert_eq!(YearMonth::new(29, 11), None);
        assert_eq!(
            YearMonth::new(2029, 11).map(YearMonth::yymm).as_deref(),
            Some("2911")
        );
        assert!(YearMonth::new(2029, 1) > YearMonth::new(2028, 12));
    }
}
