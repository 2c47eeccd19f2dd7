//! Scheme KEKs: two 32-byte components per scheme on disk (dual control),
//! XORed into the AES-256 key that wraps token keys for the vault (RFC 3394).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_kw::cipher::Array;
use aes_kw::cipher::consts::U16;
use aes_kw::{KeyInit, KwAes256};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::scheme::{Issuing, Scheme};

/// Why the key components could not be read or written. Names the file,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: a key component must be 64 hex characters and a newline")]
    Malformed { path: PathBuf },
    #[error("the operating system's random generator failed: {0}")]
    Random(getrandom::Error),
}

/// One scheme's key-encryption key.
pub struct Kek {
    key: Zeroizing<[u8; 32]>,
    /// HMAC keyed from the KEK for PARs, so a PAR can't be brute-forced back
    /// to the card number by anyone who lacks the components, yet stays the
    /// same across restarts with the same components.
    par_mac: Hmac<Sha256>,
}

/// The KEKs of all schemes, by [`Scheme::index`].
pub struct Keks([Kek; Scheme::COUNT]);

impl Keks {
    /// Reads every scheme's components from `dir`, first generating any that
    /// are missing (reported on stderr through the log).
    pub fn load_or_generate(dir: &Path) -> Result<Keks, KekError> {
        generate_missing(dir)?;
        let keks: Vec<Kek> = Scheme::ALL
            .into_iter()
            .map(|s| Kek::load(dir, s))
            .collect::<Result<_, _>>()?;
        Ok(Keks(
            keks.try_into()
                .unwrap_or_else(|_| unreachable!("one KEK per scheme")),
        ))
    }

    pub fn get(&self, scheme: Scheme) -> &Kek {
        &self.0[scheme.index()]
    }
}

impl Kek {
    fn load(dir: &Path, scheme: Scheme) -> Result<Kek, KekError> {
        let c1 = read_component(&component_path(dir, scheme, 1))?;
        let c2 = read_component(&component_path(dir, scheme, 2))?;
        let mut key = Zeroizing::new([0u8; 32]);
        for (k, (a, b)) in key.iter_mut().zip(c1.iter().zip(c2.iter())) {
            *k = a ^ b;
        }
        let malformed = || KekError::Malformed {
            path: component_path(dir, scheme, 1),
        };
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).map_err(|_| malformed())?;
        mac.update(b"scheme-sim par key");
        let par_key: Zeroizing<[u8; 32]> = Zeroizing::new(mac.finalize().into_bytes().into());
        let par_mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&par_key[..]).map_err(|_| malformed())?;
        Ok(Kek { key, par_mac })
    }

    /// RFC 3394 wrap of a 16-byte token key: 24 bytes.
    pub fn wrap(&self, token_key: &[u8; 16]) -> [u8; 24] {
        let kw = KwAes256::new(&Array::from(*self.key));
        kw.wrap_fixed_key::<U16>(&Array::from(*token_key)).into()
    }

    /// 29-character PAR for a card: the scheme's prefix and 25 base32
    /// characters of a keyed hash of the card number.
    pub fn par(&self, scheme: Scheme, pan: &str) -> String {
        let mut mac = self.par_mac.clone();
        mac.update(scheme.name().as_bytes());
        mac.update(&[0]);
        mac.update(pan.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut par = String::with_capacity(29);
        par.push_str(scheme.par_prefix());
        par.push_str(&base32(&digest)[..25]);
        par
    }
}

/// Writes a fresh random component for every one missing in `dir`
/// (creating `dir` with mode 0700); existing ones are left alone. Returns
/// the paths written.
pub fn generate_missing(dir: &Path) -> Result<Vec<PathBuf>, KekError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KekError::Io {
            path: dir.to_owned(),
            source,
        })?;
    let mut written = Vec::new();
    for scheme in Scheme::ALL {
        for n in [1, 2] {
            let path = component_path(dir, scheme, n);
            if path.exists() {
                continue;
            }
            let mut component = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut component[..]).map_err(KekError::Random)?;
            let mut text = Zeroizing::new(hex::encode(&component[..]));
            text.push('\n');
            // create_new: never overwrite a component another process just wrote.
            let io_err = |source| KekError::Io {
                path: path.clone(),
                source,
            };
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err)?;
            file.write_all(text.as_bytes()).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            tracing::warn!(scheme = %scheme, file = %path.display(), "generated a missing KEK component");
            written.push(path);
        }
    }
    Ok(written)
}

/// `DIR/<scheme>.c<n>`.
pub fn component_path(dir: &Path, scheme: Scheme, n: u8) -> PathBuf {
    dir.join(format!("{}.c{n}", scheme.name()))
}

fn read_component(path: &Path) -> Result<Zeroizing<[u8; 32]>, KekError> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| KekError::Io {
        path: path.to_owned(),
        source,
    })?);
    let malformed = || KekError::Malformed {
        path: path.to_owned(),
    };
    let hex_part = text.strip_suffix('\n').unwrap_or(&text);
    let hex_part = hex_part.strip_suffix('\r').unwrap_or(hex_part);
    if hex_part.len() != 64 {
        return Err(malformed());
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_part, &mut out[..]).map_err(|_| malformed())?;
    Ok(out)
}

/// RFC 4648 base32 without padding (upper case and digits 2–7 only).
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn generates_once_then_loads_the_xor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = generate_missing(dir.path()).expect("generate");
        assert_eq!(written.len(), 8);
        assert!(generate_missing(dir.path()).expect("again").is_empty());
        let mode = fs::metadata(component_path(dir.path(), Scheme::Visa, 1))
            .expect("meta")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);

        fs::write(
            component_path(dir.path(), Scheme::Amex, 1),
            format!("{}\n", "0f".repeat(32)),
        )
        .expect("write");
        fs::write(
            component_path(dir.path(), Scheme::Amex, 2),
            format!("{}\n", "f1".repeat(32)),
        )
        .expect("write");
        let keks = Keks::load_or_generate(dir.path()).expect("load");
        assert_eq!(*keks.get(Scheme::Amex).key, [0xfe; 32]);
        let par = keks.get(Scheme::Amex).par(Scheme::Amex, "378282246310005");
        assert_eq!(par.len(), 29);
        assert!(par.starts_with("A001"));
        assert!(
            par.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(
            par,
            keks.get(Scheme::Amex).par(Scheme::Amex, "378282246310005")
        );
        assert_ne!(
            par,
            keks.get(Scheme::Amex).par(Scheme::Amex, "371449635398431")
        );
    }

    #[test]
    fn refuses_a_malformed_component() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_missing(dir.path()).expect("generate");
        fs::write(component_path(dir.path(), Scheme::Visa, 2), "abc\n").expect("write");
        let err = Keks::load_or_generate(dir.path()).err().expect("must fail");
        assert!(matches!(err, KekError::Malformed { .. }));
    }
}
