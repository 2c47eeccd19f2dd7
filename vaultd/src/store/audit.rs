//! The audit trail: every record is chained to the one before it by a
//! SHA-256 hash (`h_n = SHA-256(h_{n-1} ‖ record_n)`, stored with the
//! record), and every group commit seals the chain head with the HSM's
//! audit key (`seal = HMAC(vault.audit, h_n ‖ "seal" ‖ n)`, in
//! `audit_seals` under n). Editing, inserting or removing any record
//! changes every later hash and so breaks the next seal, which no one
//! without the HSM key can recompute; one HSM call per commit instead of
//! one per record keeps the audit trail off the tokenize hot path. Under
//! load the writer seals less often still, once per `audit_seal_interval`
//! (`store::writer`), and `audit` seals before it reads, so every record it
//! returns is covered by a seal.
//!
//! The audit key can be rotated (`vault.audit` is version 1,
//! `vault.audit.v<N>` later ones): a seal made under version 1 is stored as
//! the bare 32-byte MAC, one made under N > 1 as `N (u32 BE) ‖ MAC`, so the
//! chain verifies across rotations with each seal's own key.

use redb::ReadableDatabase;
use sha2::{Digest, Sha256};

use super::records::{AuditRec, decode};
use super::{AUDIT, AUDIT_SEALS, RedbStore, StoreError, StoreResult};

/// Chain hash of a record given the previous hash.
pub fn chain(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// What the audit key MACs to seal the chain at `seq`.
pub fn seal_input(seq: u64) -> [u8; 12] {
    let mut d = [0u8; 12];
    d[..4].copy_from_slice(b"seal");
    d[4..].copy_from_slice(&seq.to_be_bytes());
    d
}

/// The stored form of a seal made with audit key `version`.
pub fn encode_seal(version: u32, mac: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    if version > 1 {
        v.extend_from_slice(&version.to_be_bytes());
    }
    v.extend_from_slice(mac);
    v
}

/// A stored seal: the audit key version that made it and the MAC.
pub fn decode_seal(v: &[u8]) -> StoreResult<(u32, [u8; 32])> {
    let (version, mac) = match v.len() {
        32 => (1, v),
        36 => {
            let (ver, mac) = v.split_at(4);
            (u32::from_be_bytes([ver[0], ver[1], ver[2], ver[3]]), mac)
        }
        _ => return Err(StoreError::Corrupt("bad audit seal".into())),
    };
    let mut m = [0u8; 32];
    m.copy_from_slice(mac);
    Ok((version, m))
}

/// Splits a stored audit value into the record and its chain hash.
pub fn split(v: &[u8]) -> StoreResult<(&[u8], [u8; 32])> {
    if v.len() < 33 {
        return Err(StoreError::Corrupt("short audit record".into()));
    }
    let (body, h) = v.split_at(v.len() - 32);
    let mut out = [0u8; 32];
    out.copy_from_slice(h);
    Ok((body, out))
}

/// A page of the trail plus what is needed to verify it: the hash before
/// the page, the records after it up to the first seal at or past its end,
/// and the seals in that range.
pub struct AuditPage {
    pub prev_hash: [u8; 32],
    pub records: Vec<(u64, AuditRec, Vec<u8>, [u8; 32])>,
    /// Records after the page up to the sealing record (bodies and hashes).
    pub tail: Vec<(u64, Vec<u8>, [u8; 32])>,
    /// (seq, audit key version, MAC)
    pub seals: Vec<(u64, u32, [u8; 32])>,
}

impl AuditPage {
    /// Checks the page: consecutive sequence numbers from `after + 1`, every
    /// stored hash equal to the recomputed chain, every seal in range valid
    /// (`mac(version, prev, data)` computes the HSM MAC under the audit key
    /// version the seal names), and the page covered by a seal.
    pub fn verify<E>(
        &self,
        after: u64,
        mut mac: impl FnMut(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], E>,
    ) -> Result<bool, E> {
        let mut h = self.prev_hash;
        let mut hashes = std::collections::HashMap::new();
        let all = self
            .records
            .iter()
            .map(|(s, _, b, h)| (*s, b.as_slice(), *h))
            .chain(self.tail.iter().map(|(s, b, h)| (*s, b.as_slice(), *h)));
        for (expect, (seq, body, stored)) in (after + 1..).zip(all) {
            h = chain(&h, body);
            if seq != expect || h != stored {
                return Ok(false);
            }
            hashes.insert(seq, h);
        }
        let last = self.records.last().map(|r| r.0);
        let mut covered = last.is_none();
        for (seq, version, seal) in &self.seals {
            let Some(h) = hashes.get(seq) else {
                return Ok(false);
            };
            if mac(*version, h, &seal_input(*seq))? != *seal {
                return Ok(false);
            }
            if last.is_some_and(|l| *seq >= l) {
                covered = true;
            }
        }
        Ok(covered)
    }
}

impl RedbStore {
    pub(crate) fn read_audit_page(
        &self,
        after: u64,
        limit: usize,
        upto: u64,
    ) -> StoreResult<AuditPage> {
        let r = self.db().begin_read()?;
        let t = r.open_table(AUDIT)?;
        let seals_t = r.open_table(AUDIT_SEALS)?;
        let prev_hash = if after == 0 {
            [0u8; 32]
        } else {
            match t.get(after)? {
                Some(v) => split(v.value())?.1,
                None => [0u8; 32],
            }
        };
        let mut records = Vec::new();
        if after >= upto {
            return Ok(AuditPage {
                prev_hash,
                records: Vec::new(),
                tail: Vec::new(),
                seals: Vec::new(),
            });
        }
        for item in t.range(after + 1..=upto)?.take(limit) {
            let (k, v) = item?;
            let (body, h) = split(v.value())?;
            let rec: AuditRec = decode("audit", body)?;
            records.push((k.value(), rec, body.to_vec(), h));
        }
        let mut tail = Vec::new();
        let mut seals = Vec::new();
        if let Some(&(first, ..)) = records.first() {
            let last = records.last().map(|r| r.0).unwrap_or(first);
            // The first seal at or after the page's end, and every seal
            // inside the page.
            let end_seal = seals_t
                .range(last..)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value());
            let upto = end_seal.unwrap_or(last);
            for item in seals_t.range(first..=upto)? {
                let (k, v) = item?;
                let (version, m) = decode_seal(v.value())?;
                seals.push((k.value(), version, m));
            }
            if upto > last {
                for item in t.range(last + 1..=upto)? {
                    let (k, v) = item?;
                    let (body, h) = split(v.value())?;
                    tail.push((k.value(), body.to_vec(), h));
                }
            }
        }
        Ok(AuditPage {
            prev_hash,
            records,
            tail,
            seals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for the HSM's HMAC: keyed, and the key is not the attacker's.
    fn mac(version: u32, prev: &[u8; 32], data: &[u8]) -> Result<[u8; 32], ()> {
        Ok(chain(&chain(&[version as u8; 32], prev), data))
    }

    fn rec(i: u64) -> AuditRec {
        AuditRec {
            at: i,
            client: "c".into(),
            uid: 1,
            pid: 2,
            op: "tokenize".into(),
            alias: None,
            outcome: "ok".into(),
        }
    }

    /// Ten records in two commits (sealed at 4 and 10).
    fn trail() -> AuditPage {
        let mut h = [0u8; 32];
        let mut records = Vec::new();
        let mut seals = Vec::new();
        for i in 1..=10u64 {
            let body = super::super::records::encode(&rec(i)).unwrap();
            h = chain(&h, &body);
            records.push((i, rec(i), body, h));
            // The audit key was rotated between the two commits.
            if i == 4 || i == 10 {
                let version = if i == 4 { 1 } else { 2 };
                seals.push((i, version, mac(version, &h, &seal_input(i)).unwrap()));
            }
        }
        AuditPage {
            prev_hash: [0u8; 32],
            records,
            tail: Vec::new(),
            seals,
        }
    }

    #[test]
    fn an_intact_trail_verifies() {
        assert_eq!(trail().verify(0, mac), Ok(true));
    }

    #[test]
    fn editing_a_record_breaks_the_chain_even_with_hashes_recomputed() {
        let mut t = trail();
        t.records[5].2[3] ^= 1;
        assert_eq!(t.verify(0, mac), Ok(false), "stored hash no longer matches");
        // An attacker recomputes every hash after the edit: the seal at 10,
        // made with the HSM key, no longer matches.
        let mut h = t.records[4].3;
        for r in &mut t.records[5..] {
            h = chain(&h, &r.2);
            r.3 = h;
        }
        assert_eq!(t.verify(0, mac), Ok(false));
    }

    #[test]
    fn a_seal_checked_under_another_key_version_fails() {
        let mut t = trail();
        t.seals[1].1 = 1;
        assert_eq!(t.verify(0, mac), Ok(false));
    }

    #[test]
    fn seals_round_trip_with_their_key_version() {
        let m = [9u8; 32];
        assert_eq!(encode_seal(1, &m).len(), 32, "version 1 keeps the old form");
        assert_eq!(decode_seal(&encode_seal(1, &m)).unwrap(), (1, m));
        assert_eq!(decode_seal(&encode_seal(3, &m)).unwrap(), (3, m));
        assert!(decode_seal(&[0u8; 33]).is_err());
    }

    #[test]
    fn removing_a_record_or_a_seal_is_noticed() {
        let mut t = trail();
        t.records.remove(6);
        assert_eq!(t.verify(0, mac), Ok(false), "gap in sequence numbers");
        let mut t = trail();
        t.seals.pop();
        assert_eq!(t.verify(0, mac), Ok(false), "the page's end is not sealed");
    }
}
