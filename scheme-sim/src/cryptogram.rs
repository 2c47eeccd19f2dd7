//! The payment cryptogram of DESIGN.md "Cryptograms", in software: the
//! simulator's check, and the independent reference other tests compare the
//! HSM's output with.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cmac::{Cmac, Mac};
use zeroize::Zeroizing;

/// Length of a cryptogram in bytes (28 characters in base64).
pub const LEN: usize = 20;
/// Format byte every cryptogram starts with.
pub const FORMAT: u8 = 0x01;
/// How many MAC bytes the cryptogram carries.
const MAC_LEN: usize = 13;

/// The 20 cryptogram bytes `0x01 ‖ ATC ‖ UN ‖ MAC[0..13]` for one payment.
///
/// `currency` is upper-cased as DESIGN.md's data layout requires; the other
/// inputs are taken as given (token digits, "YYMM", two ECI digits).
#[allow(clippy::too_many_arguments)] // the signature mirrors DESIGN.md's inputs one for one
pub fn compute(
    tk: &[u8; 16],
    token: &str,
    exp_yymm: &str,
    amount_minor: u64,
    currency: &str,
    atc: u16,
    un: [u8; 4],
    eci: &str,
) -> [u8; LEN] {
    let input = Input {
        token,
        exp_yymm,
        amount_minor,
        currency,
        atc,
        un,
        eci,
    };
    let tag = input.mac(tk).finalize().into_bytes();
    let mut out = [0u8; LEN];
    out[0] = FORMAT;
    out[1..3].copy_from_slice(&atc.to_be_bytes());
    out[3..7].copy_from_slice(&un);
    out[7..].copy_from_slice(&tag[..MAC_LEN]);
    out
}

/// [`compute`] as the 28-character standard base64 string sent on the wire.
#[allow(clippy::too_many_arguments)]
pub fn compute_base64(
    tk: &[u8; 16],
    token: &str,
    exp_yymm: &str,
    amount_minor: u64,
    currency: &str,
    atc: u16,
    un: [u8; 4],
    eci: &str,
) -> String {
    STANDARD.encode(compute(
        tk,
        token,
        exp_yymm,
        amount_minor,
        currency,
        atc,
        un,
        eci,
    ))
}

/// A cryptogram taken apart; its MAC is still unchecked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub atc: u16,
    pub un: [u8; 4],
    mac: [u8; MAC_LEN],
}

/// Splits a base64 cryptogram, or `None` when it is not 28 characters of
/// padded standard base64 decoding to 20 bytes that start with 0x01.
pub fn parse(b64: &str) -> Option<Parsed> {
    if b64.len() != 28 {
        return None;
    }
    let bytes = STANDARD.decode(b64).ok()?;
    let bytes: [u8; LEN] = bytes.try_into().ok()?;
    if bytes[0] != FORMAT {
        return None;
    }
    let mut un = [0u8; 4];
    un.copy_from_slice(&bytes[3..7]);
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&bytes[7..]);
    Some(Parsed {
        atc: u16::from_be_bytes([bytes[1], bytes[2]]),
        un,
        mac,
    })
}

impl Parsed {
    /// Recomputes the MAC over this payment and compares it in constant time.
    pub fn verify(
        &self,
        tk: &[u8; 16],
        token: &str,
        exp_yymm: &str,
        amount_minor: u64,
        currency: &str,
        eci: &str,
    ) -> bool {
        let input = Input {
            token,
            exp_yymm,
            amount_minor,
            currency,
            atc: self.atc,
            un: self.un,
            eci,
        };
        input.mac(tk).verify_truncated_left(&self.mac).is_ok()
    }
}

/// Everything the MAC covers besides the key.
struct Input<'a> {
    token: &'a str,
    exp_yymm: &'a str,
    amount_minor: u64,
    currency: &'a str,
    atc: u16,
    un: [u8; 4],
    eci: &'a str,
}

impl Input<'_> {
    /// CMAC state under the session key, fed with the data `D`.
    fn mac(&self, tk: &[u8; 16]) -> Cmac<Aes128> {
        let sk = session_key(tk, self.atc);
        let mut mac = <Cmac<Aes128> as KeyInit>::new(&Array::from(*sk));
        // len(token) is one byte; token numbers are at most 19 digits.
        mac.update(&[FORMAT, self.token.len() as u8]);
        mac.update(self.token.as_bytes());
        mac.update(self.exp_yymm.as_bytes());
        mac.update(&self.amount_minor.to_be_bytes());
        mac.update(self.currency.to_ascii_uppercase().as_bytes());
        mac.update(&self.atc.to_be_bytes());
        mac.update(&self.un);
        mac.update(self.eci.as_bytes());
        mac
    }
}

/// `SK = AES-128-ECB(TK, ATC ‖ 0xF0 ‖ 0x00×13)`.
fn session_key(tk: &[u8; 16], atc: u16) -> Zeroizing<[u8; 16]> {
    let cipher = Aes128::new(&Array::from(*tk));
    let mut block = Array::from([0u8; 16]);
    block[..2].copy_from_slice(&atc.to_be_bytes());
    block[2] = 0xF0;
    cipher.encrypt_block(&mut block);
    Zeroizing::new(block.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TK: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];
    const UN: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

    #[test]
    fn design_test_vector() {
        let c = compute(&TK, "4895370012345678", "2911", 1250, "CHF", 7, UN, "07");
        assert_eq!(hex::encode(c), "010007a1b2c3d4204e311037a9e8d60a6e3fb512");
        let b64 = compute_base64(&TK, "4895370012345678", "2911", 1250, "CHF", 7, UN, "07");
        assert_eq!(b64, "AQAHobLD1CBOMRA3qejWCm4/tRI=");
    }

    #[test]
    fn parse_and_verify_round_trip() {
        let p = parse("AQAHobLD1CBOMRA3qejWCm4/tRI=").expect("well-formed");
        assert_eq!(p.atc, 7);
        assert_eq!(p.un, UN);
        assert!(p.verify(&TK, "4895370012345678", "2911", 1250, "CHF", "07"));
        assert!(p.verify(&TK, "4895370012345678", "2911", 1250, "chf", "07"));
        assert!(!p.verify(&TK, "4895370012345678", "2911", 1251, "CHF", "07"));
        assert!(!p.verify(&TK, "4895370012345678", "2911", 1250, "EUR", "07"));
        assert!(!p.verify(&TK, "4895370012345678", "2912", 1250, "CHF", "07"));
        assert!(!p.verify(&TK, "4895370012345679", "2911", 1250, "CHF", "07"));
        assert!(!p.verify(&TK, "4895370012345678", "2911", 1250, "CHF", "05"));
        let mut other = TK;
        other[0] ^= 1;
        assert!(!p.verify(&other, "4895370012345678", "2911", 1250, "CHF", "07"));
    }

    #[test]
    fn parse_refuses_malformed() {
        // Right length, wrong format byte (0x02).
        let mut bytes = compute(&TK, "4895370012345678", "2911", 1250, "CHF", 7, UN, "07");
        bytes[0] = 0x02;
        assert!(parse(&STANDARD.encode(bytes)).is_none());
        // Unpadded, URL-safe alphabet, too short, not base64.
        assert!(parse("AQAHobLD1CBOMRA3qejWCm4/tRI").is_none());
        assert!(parse("AQAHobLD1CBOMRA3qejWCm4_tRI=").is_none());
        assert!(parse("AQAHobLD").is_none());
        assert!(parse("****************************").is_none());
        // 21 bytes encode to 28 characters too.
        assert!(parse(&STANDARD.encode([1u8; 21])).is_none());
    }
}
