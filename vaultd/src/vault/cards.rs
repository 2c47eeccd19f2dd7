//! Card facts that need no key: scheme routing by BIN, expiry checks,
//! calendar arithmetic, and the shapes merchants see.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (year, month) of a Unix-ms instant, UTC.
pub fn year_month(ms: u64) -> (u16, u8) {
    // Howard Hinnant's civil_from_days.
    let days = (ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u16, month as u8)
}

/// `exp_month` 1..12, a four-digit `exp_year`, and not before this month.
pub fn expiry_valid(month: u8, year: u16, now_ms: u64) -> Result<(), &'static str> {
    if !(1..=12).contains(&month) {
        return Err("exp_month must be 1 to 12");
    }
    if !(1000..=9999).contains(&year) {
        return Err("exp_year must have four digits");
    }
    let (y, m) = year_month(now_ms);
    if (year, month) < (y, m) {
        return Err("the card has expired");
    }
    Ok(())
}

/// Transaction ids: 1..64 of `[A-Za-z0-9_-]`.
pub fn valid_transaction_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Aliases: exactly 32 of `[A-Za-z0-9]`.
pub fn valid_alias(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// In ASCII order, so that aliases sort like the numbers they start with.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of an alias that encode its creation time.
const TIME_CHARS: usize = 8;

/// A new alias: 8 characters of creation time (milliseconds, base 62, so
/// aliases of one moment sort together and B-tree inserts land at the
/// right edge of the tree instead of on a random page each) followed by 24
/// random characters (143 bits) drawn from `bytes` by rejection sampling
/// (no modulo bias). Nothing in it derives from the PAN. Returns `None`
/// when the bytes ran out before 24 random characters.
pub fn alias_from_random(now_ms: u64, bytes: &[u8]) -> Option<String> {
    let mut out = vec![b'0'; TIME_CHARS];
    let mut t = now_ms;
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(t % 62) as usize];
        t /= 62;
    }
    for &b in bytes {
        if b < 248 {
            out.push(ALPHABET[usize::from(b % 62)]);
            if out.len() == 32 {
                return String::from_utf8(out).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(year_month(0), (1970, 1));
        // 2026-11-25T00:00:00Z
        assert_eq!(year_month(1_795_564_800_000), (2026, 11));
        // 2000-02-29
        assert_eq!(year_month(951_782_400_000), (2000, 2));
    }

    #[test]
    fn expiry() {
        let now = 1_795_564_800_000; // 2026-11
        assert!(expiry_valid(11, 2026, now).is_ok());
        assert!(expiry_valid(10, 2026, now).is_err());
        assert!(expiry_valid(13, 2030, now).is_err());
        assert!(expiry_valid(0, 2030, now).is_err());
        assert!(expiry_valid(1, 30, now).is_err());
    }

    #[test]
    fn schemes() {}

    #[test]
    fn aliases() {
        let a = alias_from_random(1_795_564_800_000, &[0u8; 32]).unwrap();
        assert!(valid_alias(&a));
        assert!(alias_from_random(0, &[250u8; 64]).is_none());
        // Later aliases sort after earlier ones, whatever the random part.
        let b = alias_from_random(1_795_564_800_001, &[1u8; 32]).unwrap();
        let c = alias_from_random(1_795_564_900_000, &[0u8; 32]).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_ne!(&a[8..], &b[8..]);
    }
}
