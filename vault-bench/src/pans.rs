//! Synthetic, Luhn-valid card numbers that are unique per request and per
//! run (a random run tag sits between the scheme prefix and the counter), so
//! "new PAN" scenarios really create a new alias every time.

use vault_proto::pan::luhn_check_digit;
use vault_proto::{Pan, Scheme};

/// The prefix the bench's cards of `scheme` start with (one its BIN range
/// routes, `Scheme::route`) and their length. Counters wrap after 10^9
/// (visa), 10^8 (mastercard, discover) and 10^7 (amex) cards per run.
fn card_shape(scheme: Scheme) -> (&'static str, usize) {
    match scheme {
        Scheme::Visa => ("4", 16),
        Scheme::Mastercard => ("51", 16),
        Scheme::Amex => ("37", 15),
        Scheme::Discover => ("65", 16),
    }
}

/// The scheme of the bench's card `n` in [`PanGen::any_scheme`].
fn scheme_of_card(n: u64) -> Scheme {
    Scheme::ALL[(n % Scheme::COUNT as u64) as usize]
}

/// Digits of the run tag.
const TAG_DIGITS: usize = 5;

pub struct PanGen {
    tag: u32,
}

impl PanGen {
    /// A generator with a random run tag.
    pub fn new() -> Result<PanGen, getrandom::Error> {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b)?;
        Ok(PanGen {
            tag: u32::from_le_bytes(b) % 100_000,
        })
    }

    /// Card `n` of this run, in the visa range.
    pub fn visa(&self, n: u64) -> Pan {
        self.make(Scheme::Visa, n)
    }

    /// Card `n` of this run, of scheme `n % Scheme::COUNT` (in
    /// `Scheme::ALL` order) so that provisioning spreads over every scheme. Draw `n`
    /// from the same counter as [`PanGen::visa`]: no card repeats.
    pub fn any_scheme(&self, n: u64) -> Pan {
        self.make(scheme_of_card(n), n)
    }

    fn make(&self, scheme: Scheme, n: u64) -> Pan {
        let (prefix, len) = card_shape(scheme);
        let counter_digits = len - 1 - prefix.len() - TAG_DIGITS;
        let modulus = 10u64.pow(counter_digits as u32);
        let mut body = format!(
            "{prefix}{tag:0tw$}{c:0cw$}",
            tag = self.tag,
            tw = TAG_DIGITS,
            c = n % modulus,
            cw = counter_digits
        );
        body.push(char::from(luhn_check_digit(body.as_bytes())));
        Pan::new(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_are_valid_distinct_and_routed() {
        let g = PanGen::new().expect("rng");
        let mut seen = std::collections::HashSet::new();
        for n in 0..2_000 {
            let p = g.visa(n);
            assert_eq!(p.check(), Ok(()));
            assert_eq!(p.len(), 16);
            assert!(p.expose().starts_with('4'));
            assert!(seen.insert(p.expose().to_owned()), "duplicate card");
        }
        let mut mixed = std::collections::HashSet::new();
        for n in 0..400 {
            let p = g.any_scheme(n);
            assert_eq!(p.check(), Ok(()));
            let (prefix, len) = card_shape(scheme_of_card(n));
            assert!(p.expose().starts_with(prefix));
            assert_eq!(Scheme::route(p.expose()), Some(scheme_of_card(n)));
            assert_eq!(p.len(), len);
            assert!(mixed.insert(p.expose().to_owned()), "duplicate card");
        }
        assert_eq!(g.any_scheme(2).len(), 15, "amex cards have 15 digits");
    }
}
