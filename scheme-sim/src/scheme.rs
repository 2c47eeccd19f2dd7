//! What the simulator adds to [`vault_proto::Scheme`]: the shape of the
//! token numbers, token references and PARs each scheme issues. The scheme
//! list and BIN routing are vault-proto's.

use vault_proto::pan::{luhn_check_digit, luhn_valid};
pub use vault_proto::scheme::{Scheme, UnknownScheme};

use rand::Rng;

/// Token BINs per scheme. Two each, so that a card whose own BIN is the
/// first one still gets a token under a BIN distinct from its own.
fn token_bins(scheme: Scheme) -> [&'static str; 2] {
    match scheme {
        Scheme::Visa => ["489537", "440066"],
        Scheme::Mastercard => ["520473", "530060"],
        Scheme::Amex => ["374295", "374296"],
        Scheme::Discover => ["601190", "650099"],
    }
}

/// The token service's view of a scheme.
pub trait Issuing {
    /// Length of the token numbers this scheme issues.
    fn token_len(self) -> usize;
    /// A fresh random Luhn-valid token number under a token BIN that differs
    /// from the card's own BIN. Uniqueness is the caller's to check.
    fn new_token_number(self, pan: &str) -> String;
    /// A fresh token reference: scheme code and 24 random hex digits.
    fn new_token_ref(self) -> String;
    /// First four characters of this scheme's PARs.
    fn par_prefix(self) -> &'static str;
}

impl Issuing for Scheme {
    fn token_len(self) -> usize {
        match self {
            Scheme::Amex => 15,
            _ => 16,
        }
    }

    fn new_token_number(self, pan: &str) -> String {
        let bins = token_bins(self);
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

    fn new_token_ref(self) -> String {
        let code = match self {
            Scheme::Visa => "VI",
            Scheme::Mastercard => "MC",
            Scheme::Amex => "AX",
            Scheme::Discover => "DI",
        };
        let rnd: [u8; 12] = rand::rng().random();
        format!("DM4M{code}{}", hex::encode(rnd))
    }

    fn par_prefix(self) -> &'static str {
        match self {
            Scheme::Visa => "V001",
            Scheme::Mastercard => "M001",
            Scheme::Amex => "A001",
            Scheme::Discover => "D001",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_numbers_are_luhn_valid_in_range_and_off_the_card_bin() {
        for scheme in Scheme::ALL {
            let t = scheme.new_token_number("4111111111111111");
            assert_eq!(t.len(), scheme.token_len());
            assert!(luhn_valid(t.as_bytes()));
            assert_eq!(Scheme::route(&t), Some(scheme));
            let own_bin = token_bins(scheme)[0];
            let card = format!("{own_bin}0000000000");
            let t2 = scheme.new_token_number(&card);
            assert!(!t2.starts_with(own_bin));
            assert_eq!(Scheme::route(&t2), Some(scheme));
        }
    }
}
