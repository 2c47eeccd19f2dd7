//! The four card schemes: which one a card number routes to, and the shape
//! of the token numbers, token references and PARs each one issues.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vault_proto::pan::{luhn_check_digit, luhn_valid};

use rand::Rng;

/// A card scheme the simulator plays the token service of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Visa,
    Mastercard,
    Amex,
    Discover,
}

/// Token BINs per scheme. Two each, so that a card whose own BIN is the
/// first one still gets a token under a BIN distinct from its own.
const TOKEN_BINS: [(Scheme, [&str; 2]); 4] = [
    (Scheme::Visa, ["489537", "440066"]),
    (Scheme::Mastercard, ["520473", "530060"]),
    (Scheme::Amex, ["374295", "374296"]),
    (Scheme::Discover, ["601190", "650099"]),
];

impl Scheme {
    pub const ALL: [Scheme; 4] = [
        Scheme::Visa,
        Scheme::Mastercard,
        Scheme::Amex,
        Scheme::Discover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Visa => "visa",
            Scheme::Mastercard => "mastercard",
            Scheme::Amex => "amex",
            Scheme::Discover => "discover",
        }
    }

    /// Position in [`Scheme::ALL`], for per-scheme arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The scheme a card number belongs to by its leading digits, if any.
    pub fn route(digits: &str) -> Option<Scheme> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        if digits.starts_with('4') {
            return Some(Scheme::Visa);
        }
        if matches!(prefix(2), Some(51..=55)) || matches!(prefix(4), Some(2221..=2720)) {
            return Some(Scheme::Mastercard);
        }
        if matches!(prefix(2), Some(34 | 37)) {
            return Some(Scheme::Amex);
        }
        if prefix(4) == Some(6011) || matches!(prefix(3), Some(644..=649)) || prefix(2) == Some(65)
        {
            return Some(Scheme::Discover);
        }
        None
    }

    /// Length of the token numbers this scheme issues.
    pub fn token_len(self) -> usize {
        match self {
            Scheme::Amex => 15,
            _ => 16,
        }
    }

    /// A fresh random Luhn-valid token number under a token BIN that differs
    /// from the card's own BIN. Uniqueness is the caller's to check.
    pub fn new_token_number(self, pan: &str) -> String {
        let bins = TOKEN_BINS[self.index()].1;
        let bin = bins
            .iter()
            .find(|b| !pan.starts_with(*b))
            .unwrap_or(&bins[0]);
        let mut digits = String::with_capacity(self.token_len());
        digits.push_str(bin);
        let mut rng = rand::rng();
        while digits.len() < self.token_len() - 1 {
            digits.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        let check = luhn_check_digit(digits.as_bytes());
        digits.push(char::from(check));
        debug_assert!(luhn_valid(digits.as_bytes()));
        digits
    }

    /// A fresh token reference: scheme code and 24 random hex digits.
    pub fn new_token_ref(self) -> String {
        let code = match self {
            Scheme::Visa => "VI",
            Scheme::Mastercard => "MC",
            Scheme::Amex => "AX",
            Scheme::Discover => "DI",
        };
        let rnd: [u8; 12] = rand::rng().random();
        format!("DM4M{code}{}", hex::encode(rnd))
    }

    /// First four characters of this scheme's PARs.
    pub fn par_prefix(self) -> &'static str {
        match self {
            Scheme::Visa => "V001",
            Scheme::Mastercard => "M001",
            Scheme::Amex => "A001",
            Scheme::Discover => "D001",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of the four schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownScheme;

impl FromStr for Scheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheme::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or(UnknownScheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_bin() {
        let cases = [
            ("4111111111111111", Some(Scheme::Visa)),
            ("5105105105105100", Some(Scheme::Mastercard)),
            ("5599000000000000", Some(Scheme::Mastercard)),
            ("2221000000000009", Some(Scheme::Mastercard)),
            ("2720990000000000", Some(Scheme::Mastercard)),
            ("2220990000000000", None),
            ("2721000000000000", None),
            ("5000000000000000", None),
            ("5600000000000000", None),
            ("378282246310005", Some(Scheme::Amex)),
            ("341111111111111", Some(Scheme::Amex)),
            ("351111111111111", None),
            ("6011111111111117", Some(Scheme::Discover)),
            ("6445000000000000", Some(Scheme::Discover)),
            ("6495000000000000", Some(Scheme::Discover)),
            ("6435000000000000", None),
            ("6500000000000000", Some(Scheme::Discover)),
            ("6012000000000000", None),
            ("", None),
        ];
        for (pan, want) in cases {
            assert_eq!(
                Scheme::route(pan),
                want,
                "{}",
                vault_proto::pan::mask_digits(pan)
            );
        }
    }

    #[test]
    fn token_numbers_are_luhn_valid_in_range_and_off_the_card_bin() {
        for scheme in Scheme::ALL {
            let t = scheme.new_token_number("4111111111111111");
            assert_eq!(t.len(), scheme.token_len());
            assert!(luhn_valid(t.as_bytes()));
            assert_eq!(Scheme::route(&t), Some(scheme));
            let own_bin = TOKEN_BINS[scheme.index()].1[0];
            let card = format!("{own_bin}0000000000");
            let t2 = scheme.new_token_number(&card);
            assert!(!t2.starts_with(own_bin));
            assert_eq!(Scheme::route(&t2), Some(scheme));
        }
    }

    #[test]
    fn parses_names() {
        for s in Scheme::ALL {
            assert_eq!(s.name().parse::<Scheme>(), Ok(s));
        }
        assert_eq!("jcb".parse::<Scheme>(), Err(UnknownScheme));
    }
}
