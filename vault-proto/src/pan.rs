//! The card number type. It zeroizes its digits on drop and only ever prints
//! its masked form (`411111xxxxxx1111`); reading the digits takes an explicit
//! call to [`Pan::expose`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// A primary account number (or a network token number, which has the same
/// shape and the same secrecy). Not validated on construction: the vault
/// checks it with [`Pan::check`] so that a malformed one gets `invalid_pan`,
/// not `bad_request`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pan(Zeroizing<String>);

/// Why a PAN was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanProblem {
    Length,
    NotDigits,
    Luhn,
}

impl std::fmt::Display for PanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PanProblem::Length => "card number must have 12 to 19 digits",
            PanProblem::NotDigits => "card number must be ASCII digits only",
            PanProblem::Luhn => "card number fails the Luhn check",
        })
    }
}

impl Pan {
    /// Takes ownership of `digits`; the string is zeroized when the `Pan` drops.
    pub fn new(digits: String) -> Self {
        Pan(Zeroizing::new(digits))
    }

    /// From bytes (e.g. a decrypted buffer); the caller zeroizes its copy.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes)
            .ok()
            .map(|s| Pan::new(s.to_owned()))
    }

    /// The digits themselves. Every call site is a place where card data
    /// leaves the type: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// 12 to 19 ASCII digits with a valid Luhn check digit.
    pub fn check(&self) -> Result<(), PanProblem> {
        let s = self.0.as_bytes();
        if !s.iter().all(u8::is_ascii_digit) {
            return Err(PanProblem::NotDigits);
        }
        if !(12..=19).contains(&s.len()) {
            return Err(PanProblem::Length);
        }
        if !luhn_valid(s) {
            return Err(PanProblem::Luhn);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First six digits (the BIN as PROTOCOL.md's `card.bin` uses it).
    pub fn bin(&self) -> &str {
        &self.0[..6.min(self.0.len())]
    }

    /// Last four digits.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }

    /// First six and last four kept, every other digit `x`.
    pub fn masked(&self) -> String {
        mask_digits(&self.0)
    }
}

/// Masks a digit string the PROTOCOL.md way; strings of 10 or fewer
/// characters are masked completely.
pub fn mask_digits(digits: &str) -> String {
    let n = digits.len();
    if n <= 10 || !digits.is_ascii() {
        return "x".repeat(n.min(19));
    }
    let mut out = String::with_capacity(n);
    out.push_str(&digits[..6]);
    out.extend(std::iter::repeat_n('x', n - 10));
    out.push_str(&digits[n - 4..]);
    out
}

/// Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The check digit that makes `body ‖ digit` pass Luhn.
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, d) in body.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    b'0' + ((10 - (sum % 10)) % 10) as u8
}

impl std::fmt::Debug for Pan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl std::fmt::Display for Pan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Pan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pan;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a card number string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Pan, E> {
                Ok(Pan::new(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, mut v: String) -> Result<Pan, E> {
                let p = Pan::new(v.clone());
                v.zeroize();
                Ok(p)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_never_prints_digits() {
        let p = Pan::new("4111111111111111".into());
        assert_eq!(p.masked(), "411111xxxxxx1111");
        assert_eq!(format!("{p}"), "411111xxxxxx1111");
        assert_eq!(format!("{p:?}"), "Pan(411111xxxxxx1111)");
        assert_eq!(p.bin(), "411111");
        assert_eq!(p.last4(), "1111");
    }

    #[test]
    fn checks_length_digits_and_luhn() {
        assert_eq!(Pan::new("4111111111111111".into()).check(), Ok(()));
        assert_eq!(
            Pan::new("4111111111111112".into()).check(),
            Err(PanProblem::Luhn)
        );
        assert_eq!(
            Pan::new("4111 1111 1111 1111".into()).check(),
            Err(PanProblem::NotDigits)
        );
        assert_eq!(Pan::new("42".into()).check(), Err(PanProblem::Length));
        assert_eq!(Pan::new("".into()).check(), Err(PanProblem::Length));
        assert_eq!(
            Pan::new("41111111111111111111".into()).check(),
            Err(PanProblem::Length)
        );
    }

    #[test]
    fn check_digit_completes_luhn() {
        for body in ["411111111111111", "555555555555444", "37828224631000"] {
            let mut s = body.as_bytes().to_vec();
            s.push(luhn_check_digit(body.as_bytes()));
            assert!(luhn_valid(&s), "{body}");
        }
    }
}
