//! The card schemes: the one place that names them and holds what every
//! part knows of each (BIN routing, default ECI). vaultd, vault-hsm,
//! scheme-sim and vault-bench all use this type; adding a scheme is one
//! variant here plus its arms below (and its token-service adapter).
//!
//! On the wire and in stored records a scheme is its lowercase name
//! (`"visa"`), so this type serialises as that string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A card scheme vaultd can ask for network tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Visa,
    Mastercard,
    Amex,
    Discover,
}

impl Scheme {
    /// How many schemes there are (the length of per-scheme arrays).
    pub const COUNT: usize = 4;

    /// Every scheme, in [`Scheme::index`] order.
    pub const ALL: [Scheme; Scheme::COUNT] = [
        Scheme::Visa,
        Scheme::Mastercard,
        Scheme::Amex,
        Scheme::Discover,
    ];

    /// The lowercase name (configuration sections, key labels, the wire).
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Visa => "visa",
            Scheme::Mastercard => "mastercard",
            Scheme::Amex => "amex",
            Scheme::Discover => "discover",
        }
    }

    /// The names of all schemes, comma-separated, for error messages.
    pub fn names() -> String {
        Scheme::ALL.map(Scheme::name).join(", ")
    }

    /// Position in [`Scheme::ALL`], for per-scheme arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The scheme a card or token number belongs to by its leading digits
    /// (DESIGN.md's ranges), if any.
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

    /// The ECI of a customer-initiated payment without 3-D Secure.
    pub const fn default_eci(self) -> &'static str {
        match self {
            Scheme::Mastercard => "06",
            Scheme::Visa | Scheme::Amex | Scheme::Discover => "07",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of the schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownScheme;

impl fmt::Display for UnknownScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scheme (expected one of {})", Scheme::names())
    }
}

impl std::error::Error for UnknownScheme {}

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
            ("5555555555554444", Some(Scheme::Mastercard)),
            ("5599000000000000", Some(Scheme::Mastercard)),
            ("2221000000000009", Some(Scheme::Mastercard)),
            ("2223003122003222", Some(Scheme::Mastercard)),
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
            ("6445644564456445", Some(Scheme::Discover)),
            ("6495000000000000", Some(Scheme::Discover)),
            ("6435000000000000", None),
            ("6500000000000000", Some(Scheme::Discover)),
            ("6012000000000000", None),
            ("3530111333300000", None),
            ("", None),
        ];
        for (pan, want) in cases {
            assert_eq!(Scheme::route(pan), want, "{}", crate::pan::mask_digits(pan));
        }
    }

    #[test]
    fn names_parse_and_serialise_as_themselves() {
        for s in Scheme::ALL {
            assert_eq!(s.name().parse::<Scheme>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
            assert_eq!(Scheme::ALL[s.index()], s);
            let bytes = rmp_serde::to_vec(&s).expect("encode");
            assert_eq!(bytes, rmp_serde::to_vec(s.name()).expect("encode name"));
            assert_eq!(rmp_serde::from_slice::<Scheme>(&bytes).expect("decode"), s);
        }
        assert_eq!("Visa".parse::<Scheme>(), Err(UnknownScheme));
        assert_eq!("jcb".parse::<Scheme>(), Err(UnknownScheme));
        assert_eq!(
            UnknownScheme.to_string(),
            "unknown scheme (expected one of visa, mastercard, amex, discover)"
        );
    }

    #[test]
    fn default_ecis() {
        assert_eq!(Scheme::Mastercard.default_eci(), "06");
        for s in [Scheme::Visa, Scheme::Amex, Scheme::Discover] {
            assert_eq!(s.default_eci(), "07");
        }
    }
}
