//! The audit trail: every record is chained to the one before it by a
//! SHA-256 hash (`h_n = SHA-256(h_{n-1} ‖ record_n)`, stored with the
//! record), and the chain head is sealed with the HSM's audit key now and
//! then (`audit_seals` under n). Editing, inserting or removing a record
//! changes every later hash and so breaks the next seal, which no one
//! without the HSM key can recompute; one HSM call per seal instead of one
//! per record keeps the audit trail off the tokenize hot path. The writer
//! seals at most once per `audit_seal_interval` under load and the tail
//! within the interval when the load stops (`store::writer`); `audit`
//! seals before it reads, so every record it returns is covered.
//!
//! The seals form a chain of their own. A seal at n is
//! `HMAC(key, h_n ‖ "seal2" ‖ n ‖ p ‖ tag_p ‖ at ‖ kind)` where p is the
//! previous seal's seq and `tag_p` its stored MAC ([`Seal`]): a seal removed
//! between two others breaks the link of the next, and seals cannot be put
//! back in another order. (Seals of earlier releases, `HMAC(key, h_n ‖
//! "seal" ‖ n)`, still verify; the first chained seal links to the newest
//! of them.)
//!
//! What the database alone cannot show is a cut at the end: records and
//! seals removed after some seal leave a shorter trail that verifies. So
//! the newest seal is also named in the **audit head**, a file beside the
//! database (`vault.redb.audit-head`, [`Head`]). A chained seal keeps only
//! the first half of its MAC in the database; the head holds the seal's
//! seq and both halves, and the second half is stored nowhere else, so
//! only the HSM can make a head for a given seal. The writer rewrites it
//! after a seal (at most once a second, and at every stop; no HSM call);
//! at start-up a head naming a seal the database does not hold means seals
//! were removed. Deleting the file is noticed while the trail has chained
//! seals; putting back an older copy of it (taken earlier by whoever
//! edits the files) is not: that, and records edited after the newest
//! seal, only the log shows, where every record and every seal also goes
//! (`logging::AuditLog`).
//!
//! Start-up ([`check_tail`]) verifies the newest seal that verifies
//! (walking back over failing ones), the seal links from the head's seal
//! on, the records after the good seal, and the head, before it seals
//! anything. A break makes the daemon say so loudly, append an
//! `audit_chain_broken` record, and from then on seal with [`SealKind::Broken`]
//! seals, which vouch for new records but never for the broken range; an
//! operator ends that with `vaultd audit acknowledge` ([`acknowledge`]),
//! whose [`SealKind::Ack`] seal names the range. [`verify_trail`] checks a
//! whole trail (`vaultd audit verify`).
//!
//! The audit key can be rotated (`vault.audit` is version 1,
//! `vault.audit.v<N>` later ones): every seal names the version that made it.

use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};
use vault_hsm::{Hsm, HsmError};

use super::records::{AuditRec, decode, encode};
use super::{AUDIT, AUDIT_SEALS, META, RedbStore, StoreError, StoreResult};

/// Chain hash of a record given the previous hash.
pub fn chain(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// What the audit key MACs for an unchained seal (earlier releases) at `seq`.
pub fn seal_input(seq: u64) -> [u8; 12] {
    let mut d = [0u8; 12];
    d[..4].copy_from_slice(b"seal");
    d[4..].copy_from_slice(&seq.to_be_bytes());
    d
}

/// The HSM's audit MAC: `mac(version, prev, data)` = HMAC under audit key
/// `version` of `prev ‖ data` ([`Hsm::audit_mac_with`]).
pub type MacFn<'a> = dyn FnMut(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], HsmError> + 'a;

/// What a chained seal says besides "the chain is as hashed up to here".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// Vouches for every record up to the seal.
    Normal,
    /// Made while a break found at start-up (records `from` to `to`) is not
    /// acknowledged: vouches for the records after `to` only.
    Broken { from: u64, to: u64 },
    /// An operator acknowledged the break of records `from` to `to`
    /// (`vaultd audit acknowledge`); sealing is normal again after it.
    Ack { from: u64, to: u64 },
}

impl SealKind {
    fn code(self) -> (u8, u64, u64) {
        match self {
            SealKind::Normal => (0, 0, 0),
            SealKind::Broken { from, to } => (1, from, to),
            SealKind::Ack { from, to } => (2, from, to),
        }
    }

    fn from_code(code: u8, from: u64, to: u64) -> StoreResult<SealKind> {
        Ok(match code {
            0 => SealKind::Normal,
            1 => SealKind::Broken { from, to },
            2 => SealKind::Ack { from, to },
            _ => return Err(StoreError::Corrupt("unknown audit seal kind".into())),
        })
    }

    /// For the log.
    pub fn name(self) -> &'static str {
        match self {
            SealKind::Normal => "normal",
            SealKind::Broken { .. } => "broken",
            SealKind::Ack { .. } => "acknowledge",
        }
    }

    /// The records this seal does not vouch for.
    pub fn unvouched(self) -> Option<(u64, u64)> {
        match self {
            SealKind::Normal => None,
            SealKind::Broken { from, to } | SealKind::Ack { from, to } => Some((from, to)),
        }
    }
}

/// The link of a chained seal to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The previous seal's seq (0: none).
    pub prev_seq: u64,
    /// When the seal was made (Unix milliseconds).
    pub at: u64,
    pub kind: SealKind,
}

/// A stored seal: the audit key version that made it, the MAC, and (for a
/// chained seal) its link. Stored as the bare MAC (version 1, unchained),
/// `version (u32 BE) ‖ MAC` (unchained), or `version ‖ prev_seq (u64) ‖ at
/// (u64) ‖ kind (u8) ‖ from (u64) ‖ to (u64) ‖ tag` (chained), where the
/// tag is the first [`TAG`] bytes of the MAC: the other 16 are the audit
/// head's key for this seal ([`Head`]), which the database never holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub version: u32,
    /// The MAC as stored: 32 bytes for an unchained seal; for a chained
    /// one the first [`TAG`] (the rest zero).
    pub mac: [u8; 32],
    pub link: Option<Link>,
}

/// Bytes of a chained seal's MAC kept in the database.
pub const TAG: usize = 16;

const CHAINED_LEN: usize = 4 + 8 + 8 + 1 + 8 + 8 + TAG;

fn u64_at(v: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[at..at + 8]);
    u64::from_be_bytes(b)
}

impl Seal {
    pub fn decode(v: &[u8]) -> StoreResult<Seal> {
        let mut mac = [0u8; 32];
        match v.len() {
            32 => {
                mac.copy_from_slice(v);
                Ok(Seal {
                    version: 1,
                    mac,
                    link: None,
                })
            }
            36 => {
                mac.copy_from_slice(&v[4..]);
                Ok(Seal {
                    version: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    mac,
                    link: None,
                })
            }
            CHAINED_LEN => {
                mac[..TAG].copy_from_slice(&v[CHAINED_LEN - TAG..]);
                let kind = SealKind::from_code(v[20], u64_at(v, 21), u64_at(v, 29))?;
                Ok(Seal {
                    version: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    mac,
                    link: Some(Link {
                        prev_seq: u64_at(v, 4),
                        at: u64_at(v, 12),
                        kind,
                    }),
                })
            }
            _ => Err(StoreError::Corrupt("bad audit seal".into())),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CHAINED_LEN);
        match &self.link {
            None => {
                if self.version > 1 {
                    v.extend_from_slice(&self.version.to_be_bytes());
                }
            }
            Some(l) => {
                let (code, from, to) = l.kind.code();
                v.extend_from_slice(&self.version.to_be_bytes());
                v.extend_from_slice(&l.prev_seq.to_be_bytes());
                v.extend_from_slice(&l.at.to_be_bytes());
                v.push(code);
                v.extend_from_slice(&from.to_be_bytes());
                v.extend_from_slice(&to.to_be_bytes());
            }
        }
        v.extend_from_slice(self.tag());
        v
    }

    /// The MAC bytes the database holds (what the next seal covers).
    pub fn tag(&self) -> &[u8] {
        if self.link.is_some() {
            &self.mac[..TAG]
        } else {
            &self.mac
        }
    }

    /// What the audit key MACs, after the chain hash at `seq`, for a
    /// chained seal at `seq` whose previous seal holds `prev_tag`.
    pub fn chained_input(seq: u64, link: &Link, prev_tag: &[u8]) -> Vec<u8> {
        let (code, from, to) = link.kind.code();
        let mut d = Vec::with_capacity(5 + 8 + 8 + 1 + 32 + 8 + 1 + 16);
        d.extend_from_slice(b"seal2");
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&link.prev_seq.to_be_bytes());
        d.push(prev_tag.len() as u8);
        d.extend_from_slice(prev_tag);
        d.extend_from_slice(&link.at.to_be_bytes());
        d.push(code);
        d.extend_from_slice(&from.to_be_bytes());
        d.extend_from_slice(&to.to_be_bytes());
        d
    }

    /// A chained seal at `seq` over chain hash `hash`, after the seal
    /// `prev` (its seq and stored tag; `(0, &[])` when it is the first),
    /// and the audit head for it.
    pub fn make<E>(
        version: u32,
        seq: u64,
        hash: &[u8; 32],
        prev: (u64, &[u8]),
        at: u64,
        kind: SealKind,
        mac: impl FnOnce(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], E>,
    ) -> Result<(Seal, Head), E> {
        let link = Link {
            prev_seq: prev.0,
            at,
            kind,
        };
        let full = mac(version, hash, &Seal::chained_input(seq, &link, prev.1))?;
        let mut stored = [0u8; 32];
        stored[..TAG].copy_from_slice(&full[..TAG]);
        Ok((
            Seal {
                version,
                mac: stored,
                link: Some(link),
            },
            Head::of(seq, &full),
        ))
    }

    /// The full MAC if this is the audit key's seal of the chain at `seq`
    /// (hash `hash`) and, for a chained seal, of the seal before it: `prev`
    /// is the database's previous seal (seq and seal; `None` when there is
    /// none), which a chained seal must name, and after which an unchained
    /// seal cannot come. `None`: it is not.
    pub fn check<E>(
        &self,
        seq: u64,
        hash: &[u8; 32],
        prev: Option<(u64, &Seal)>,
        mut mac: impl FnMut(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], E>,
    ) -> Result<Option<[u8; 32]>, E> {
        let full = match &self.link {
            None => {
                if prev.is_some_and(|(_, p)| p.link.is_some()) {
                    return Ok(None);
                }
                mac(self.version, hash, &seal_input(seq))?
            }
            Some(l) => {
                let (pseq, ptag) = prev.map_or((0, &[][..]), |(s, p)| (s, p.tag()));
                if l.prev_seq != pseq {
                    return Ok(None);
                }
                mac(self.version, hash, &Seal::chained_input(seq, l, ptag))?
            }
        };
        let n = self.tag().len();
        Ok((full[..n] == self.mac[..n]).then_some(full))
    }

    /// Whether [`Seal::check`] finds this seal good.
    pub fn verify<E>(
        &self,
        seq: u64,
        hash: &[u8; 32],
        prev: Option<(u64, &Seal)>,
        mac: impl FnMut(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], E>,
    ) -> Result<bool, E> {
        Ok(self.check(seq, hash, prev, mac)?.is_some())
    }
}

/// The records `from` to `to` in words: "records 5 to 9", or, when
/// none of them is left (`from > to`: they were cut off after `to`),
/// "the records after 4".
pub fn range_text(from: u64, to: u64) -> String {
    if from > to {
        format!("the records after {to}")
    } else {
        format!("records {from} to {to}")
    }
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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

// ------------------------------------------------------------ audit head

/// The audit head file beside the database at `db`.
pub fn head_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".audit-head");
    p.into()
}

/// The audit head file of the database whose PAN slot file is `slots`
/// (`vault.redb.pans` → `vault.redb.audit-head`).
pub fn head_path_beside_slots(slots: &Path) -> PathBuf {
    let s = slots.as_os_str().to_string_lossy();
    match s.strip_suffix(".pans") {
        Some(db) => head_path(Path::new(db)),
        None => head_path(slots),
    }
}

/// The newest chained seal as the writer last recorded it outside the
/// database: its seq, its stored tag, and the other half of its MAC (the
/// key), which is stored nowhere else: only the HSM can recompute it, so
/// no one can write a head for a seal of their choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub tag: [u8; TAG],
    pub key: [u8; 32 - TAG],
}

/// The audit head file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadFile {
    Missing,
    Unreadable(String),
    Found(Head),
}

const HEAD_MAGIC: &str = "vaultd audit head 1";

impl Head {
    /// The head for the chained seal at `seq` whose full MAC is `full`.
    pub fn of(seq: u64, full: &[u8; 32]) -> Head {
        let mut tag = [0u8; TAG];
        let mut key = [0u8; 32 - TAG];
        tag.copy_from_slice(&full[..TAG]);
        key.copy_from_slice(&full[TAG..]);
        Head { seq, tag, key }
    }

    fn render(&self) -> String {
        format!(
            "{HEAD_MAGIC}\nseq {}\ntag {}\nkey {}\n",
            self.seq,
            hex(&self.tag),
            hex(&self.key)
        )
    }

    fn parse(s: &str) -> Result<Head, String> {
        let mut lines = s.lines();
        if lines.next() != Some(HEAD_MAGIC) {
            return Err("not an audit head file".into());
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| format!("no `{name}` line"))
        };
        let seq = field("seq")?.parse().map_err(|_| "bad seq".to_owned())?;
        let tag = unhex16(&field("tag")?).ok_or("bad tag")?;
        let key = unhex16(&field("key")?).ok_or("bad key")?;
        Ok(Head { seq, tag, key })
    }

    pub fn read(path: &Path) -> HeadFile {
        match std::fs::read_to_string(path) {
            Ok(s) => match Head::parse(&s) {
                Ok(h) => HeadFile::Found(h),
                Err(e) => HeadFile::Unreadable(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HeadFile::Missing,
            Err(e) => HeadFile::Unreadable(e.to_string()),
        }
    }

    /// Replaces the file at `path` (mode 0600): written, synced, renamed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ checks

/// Something wrong with the trail, and the records it concerns: from the
/// first record no valid seal vouches for (or the first one missing) to
/// `last_bad` (`u64::MAX`: to the newest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub first_bad: u64,
    pub last_bad: u64,
    pub what: String,
}

/// A finding from `first_bad` to the newest record.
fn finding(out: &mut Vec<Finding>, first_bad: u64, what: String) {
    finding_to(out, first_bad, u64::MAX, what);
}

fn finding_to(out: &mut Vec<Finding>, first_bad: u64, last_bad: u64, what: String) {
    out.push(Finding {
        first_bad: first_bad.max(1),
        last_bad,
        what,
    });
}

/// The stored chain hash of record `seq`.
fn stored_hash<T: ReadableTable<u64, &'static [u8]>>(
    audit: &T,
    seq: u64,
) -> StoreResult<Option<[u8; 32]>> {
    match audit.get(seq)? {
        Some(v) => Ok(Some(split(v.value())?.1)),
        None => Ok(None),
    }
}

fn read_seal<T: ReadableTable<u64, &'static [u8]>>(
    seals: &T,
    seq: u64,
) -> StoreResult<Option<Seal>> {
    Ok(seals.get(seq)?.and_then(|v| Seal::decode(v.value()).ok()))
}

/// The full MAC of the seal at `s` if it is the HSM's over the stored
/// chain hash at `s` and (chained) over the seal it names.
fn full_mac<A, S>(
    audit: &A,
    seals: &S,
    s: u64,
    seal: &Seal,
    mac: &mut MacFn<'_>,
) -> StoreResult<Option<[u8; 32]>>
where
    A: ReadableTable<u64, &'static [u8]>,
    S: ReadableTable<u64, &'static [u8]>,
{
    let Some(h) = stored_hash(audit, s)? else {
        return Ok(None);
    };
    let prev = match &seal.link {
        Some(l) if l.prev_seq > 0 => match read_seal(seals, l.prev_seq)? {
            Some(p) => Some((l.prev_seq, p)),
            None => return Ok(None),
        },
        _ => None,
    };
    seal.check(s, &h, prev.as_ref().map(|(q, p)| (*q, p)), &mut *mac)
        .map_err(StoreError::Hsm)
}

fn seal_ok<A, S>(
    audit: &A,
    seals: &S,
    s: u64,
    seal: &Seal,
    mac: &mut MacFn<'_>,
) -> StoreResult<bool>
where
    A: ReadableTable<u64, &'static [u8]>,
    S: ReadableTable<u64, &'static [u8]>,
{
    Ok(full_mac(audit, seals, s, seal, mac)?.is_some())
}

/// Checks the audit head against the seals: a head naming a seal the
/// database does not hold means seals (and the records after them) were
/// removed. After a restore (`restored`) a head ahead of the trail, or
/// none, is expected: a note, not a finding. Returns the head's seq when
/// it is this vault's head of a seal the database holds.
fn check_head<A, S>(
    audit: &A,
    seals: &S,
    head: &HeadFile,
    restored: bool,
    mac: &mut MacFn<'_>,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
) -> StoreResult<Option<u64>>
where
    A: ReadableTable<u64, &'static [u8]>,
    S: ReadableTable<u64, &'static [u8]>,
{
    let newest = seals
        .last()?
        .map(|(k, v)| (k.value(), Seal::decode(v.value()).ok()));
    let newest_seq = newest.as_ref().map_or(0, |n| n.0);
    match head {
        HeadFile::Missing => {
            let chained = newest
                .as_ref()
                .is_some_and(|(_, s)| s.is_some_and(|s| s.link.is_some()));
            if chained && restored {
                notes.push("a restored database without its audit head file: the head starts again at the restored trail's newest seal".into());
            } else if chained {
                finding(
                    findings,
                    newest_seq + 1,
                    format!(
                        "the audit head file is missing although the trail has chained seals: seals and records after seq {newest_seq} may have been removed (compare with the log's newest `audit seal` line)"
                    ),
                );
            }
        }
        HeadFile::Unreadable(e) => finding(
            findings,
            newest_seq + 1,
            format!(
                "the audit head file is unreadable ({e}): seals and records after seq {newest_seq} may have been removed"
            ),
        ),
        HeadFile::Found(h) => match read_seal(seals, h.seq)? {
            Some(s) if s.link.is_some() && s.tag() == h.tag => {
                match full_mac(audit, seals, h.seq, &s, mac)? {
                    Some(full) if full[TAG..] == h.key => return Ok(Some(h.seq)),
                    Some(_) => finding(
                        findings,
                        newest_seq + 1,
                        format!(
                            "the audit head file does not match the seal at seq {} it names: it was not written by this vault",
                            h.seq
                        ),
                    ),
                    // That seal does not verify: the seal checks say so.
                    None => {}
                }
            }
            _ => {
                let below = seals
                    .range(..h.seq)?
                    .next_back()
                    .transpose()?
                    .map_or(0, |(k, _)| k.value());
                let what = format!(
                    "the audit head names the seal at seq {}, which the database does not hold (its newest seal before that is at seq {below}): seals and records after seq {below} were removed or replaced",
                    h.seq
                );
                if restored {
                    notes.push(format!(
                        "a restored backup: {what}; the records after the backup are only in the log"
                    ));
                } else {
                    finding(findings, below + 1, what);
                }
            }
        },
    }
    Ok(None)
}

/// Start-up's check: the newest seal that verifies (walking back over at
/// most this many failing ones), then everything after it.
const WALK_BACK: u64 = 1000;

/// What start-up found about the newest part of the trail.
#[derive(Debug, Default)]
pub struct TailCheck {
    pub findings: Vec<Finding>,
    /// The newest seal verifies and is a [`SealKind::Broken`] one: a break
    /// an earlier start found, not acknowledged yet.
    pub unacknowledged: Option<(u64, u64)>,
    /// Records after the newest seal (they hash from it when there are no
    /// findings): sealed at start-up.
    pub unsealed: Option<(u64, u64)>,
    pub notes: Vec<String>,
    /// The newest record.
    pub newest: u64,
    /// The audit head for the newest seal, when it is chained and verifies.
    pub head: Option<Head>,
}

impl TailCheck {
    /// The broken range (first bad record to the newest) and why.
    pub fn broken(&self) -> Option<(u64, u64, String)> {
        let from = self.findings.iter().map(|f| f.first_bad).min()?;
        let why: Vec<&str> = self.findings.iter().map(|f| f.what.as_str()).collect();
        Some((from, self.newest, why.join("; ")))
    }
}

/// Start-up's check of the trail, before anything is sealed: the newest
/// seal that verifies, the seal links from the older of it and the head's
/// seal on, the records after it (consecutive, hashing from it), and the
/// audit head. `restored`: the database is a restored backup.
pub fn check_tail(
    r: &ReadTransaction,
    head: &HeadFile,
    restored: bool,
    mac: &mut MacFn<'_>,
) -> StoreResult<TailCheck> {
    let audit = r.open_table(AUDIT)?;
    let seals = r.open_table(AUDIT_SEALS)?;
    let mut out = TailCheck {
        newest: super::newest_seq(&audit)?,
        ..TailCheck::default()
    };
    let newest_seal = super::newest_seq(&seals)?;
    if newest_seal > out.newest {
        finding(
            &mut out.findings,
            out.newest + 1,
            format!(
                "seals go up to seq {newest_seal} but the records end at seq {}: records were removed",
                out.newest
            ),
        );
    }

    // The newest seal that verifies.
    let mut good: Option<(u64, Seal)> = None;
    let (mut failed, mut newest_failed, mut oldest_examined) = (0u64, None, None);
    for item in seals.iter()?.rev() {
        let (k, v) = item?;
        let s = k.value();
        oldest_examined = Some(s);
        if let Ok(seal) = Seal::decode(v.value())
            && let Some(full) = full_mac(&audit, &seals, s, &seal, mac)?
        {
            // The newest seal, chained and good: the head to keep.
            if s == newest_seal && seal.link.is_some() {
                out.head = Some(Head::of(s, &full));
            }
            good = Some((s, seal));
            break;
        }
        failed += 1;
        newest_failed.get_or_insert(s);
        if failed >= WALK_BACK {
            break;
        }
    }
    let g = good.as_ref().map_or(0, |(s, _)| *s);
    if let Some(nf) = newest_failed {
        let capped = good.is_none() && failed >= WALK_BACK;
        let from = if capped {
            let o = oldest_examined.unwrap_or(nf);
            seals
                .range(..o)?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value())
                + 1
        } else {
            g + 1
        };
        finding(
            &mut out.findings,
            from,
            format!(
                "records {from} to {nf} do not match the {failed} seal(s) over them{}: records were edited, rewritten, inserted or removed",
                if capped {
                    " (and perhaps earlier ones: run `vaultd audit verify`)"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some((s, seal)) = &good
        && *s == newest_seal
        && let Some(Link {
            kind: SealKind::Broken { from, to },
            ..
        }) = seal.link
    {
        out.unacknowledged = Some((from, to));
    }

    // The seal links, from the older of the good seal and the head's seal.
    let mut start = g;
    if let HeadFile::Found(h) = head {
        start = start.min(h.seq);
    }
    if good.is_none() {
        start = oldest_examined.unwrap_or(0);
    }
    let mut prev: Option<(u64, bool)> =
        seals
            .range(..start)?
            .next_back()
            .transpose()?
            .map(|(k, v)| {
                let chained = Seal::decode(v.value()).is_ok_and(|s| s.link.is_some());
                (k.value(), chained)
            });
    for item in seals.range(start..)? {
        let (k, v) = item?;
        let s = k.value();
        let pseq = prev.map_or(0, |p| p.0);
        match Seal::decode(v.value()) {
            Err(_) => finding(
                &mut out.findings,
                pseq + 1,
                format!("the seal at seq {s} is unreadable"),
            ),
            Ok(seal) => match seal.link {
                Some(l) if l.prev_seq != pseq => finding(
                    &mut out.findings,
                    l.prev_seq.min(pseq) + 1,
                    format!(
                        "the seal at seq {s} follows a seal at seq {}, but the database's previous seal is at seq {pseq}: seals were removed or put back",
                        l.prev_seq
                    ),
                ),
                None if prev.is_some_and(|p| p.1) => finding(
                    &mut out.findings,
                    pseq + 1,
                    format!("the unchained seal at seq {s} follows chained seals"),
                ),
                _ => {}
            },
        }
        prev = Some((s, Seal::decode(v.value()).is_ok_and(|x| x.link.is_some())));
    }

    // The records after the good seal.
    let mut h = if g == 0 {
        [0u8; 32]
    } else {
        stored_hash(&audit, g)?.unwrap_or([0u8; 32])
    };
    let mut expected = g + 1;
    for item in audit.range(g + 1..)? {
        let (k, v) = item?;
        let seq = k.value();
        if seq != expected {
            finding(
                &mut out.findings,
                expected,
                format!("records {expected} to {} are missing", seq - 1),
            );
        }
        expected = seq + 1;
        let Ok((body, stored)) = split(v.value()) else {
            finding(&mut out.findings, seq, format!("record {seq} is truncated"));
            continue;
        };
        h = chain(&h, body);
        if h != stored {
            finding(
                &mut out.findings,
                seq,
                format!("record {seq} does not match its chain hash: it was edited"),
            );
            h = stored;
        }
    }
    if out.newest > newest_seal {
        out.unsealed = Some((newest_seal + 1, out.newest));
    }

    check_head(
        &audit,
        &seals,
        head,
        restored,
        mac,
        &mut out.findings,
        &mut out.notes,
    )?;
    out.findings.sort_by_key(|f| f.first_bad);
    Ok(out)
}

/// Whether the database is marked as a restored backup not started yet.
pub fn restore_marked(r: &ReadTransaction) -> StoreResult<bool> {
    Ok(r.open_table(META)?.get(super::atc::ATCS_UNKNOWN)?.is_some())
}

/// What [`verify_trail`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// The records checked (first and last seq, how many).
    pub first: u64,
    pub last: u64,
    pub records: u64,
    pub seals: u64,
    /// What is wrong, each with the seq of the [`SealKind::Ack`] seal that
    /// acknowledged it, if one did.
    pub findings: Vec<(Finding, Option<u64>)>,
    /// Records after the newest seal (not verifiable until sealed).
    pub unsealed: Option<(u64, u64)>,
    pub notes: Vec<String>,
    /// The audit head file's seal, when it is valid.
    pub head: Option<u64>,
}

impl Report {
    /// The first finding no operator acknowledged.
    pub fn first_unacknowledged(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .filter(|(_, ack)| ack.is_none())
            .map(|(f, _)| f)
            .min_by_key(|f| f.first_bad)
    }
}

/// Checks the whole trail from record `from` (from the newest seal before
/// it, which must verify): consecutive records whose stored hashes chain,
/// every seal (MAC and link), the breaks vaultd found at start-up and
/// their acknowledgements, and the audit head.
pub fn verify_trail(
    r: &ReadTransaction,
    from: u64,
    head: &HeadFile,
    mac: &mut MacFn<'_>,
) -> StoreResult<Report> {
    let audit = r.open_table(AUDIT)?;
    let seals = r.open_table(AUDIT_SEALS)?;
    let restored = restore_marked(r)?;
    let newest = super::newest_seq(&audit)?;
    let mut findings = Vec::new();
    let mut rep = Report::default();

    let from = from.max(1);
    let mut h = [0u8; 32];
    let mut prev: Option<(u64, Seal)> = None;
    if from > 1
        && let Some(item) = seals.range(..from)?.next_back()
    {
        let (k, v) = item?;
        let s = k.value();
        match Seal::decode(v.value()) {
            Ok(seal) => {
                if !seal_ok(&audit, &seals, s, &seal, mac)? {
                    finding(
                        &mut findings,
                        s,
                        format!(
                            "the seal at seq {s}, where the check starts, does not verify: check from an earlier record"
                        ),
                    );
                }
                h = stored_hash(&audit, s)?.unwrap_or([0u8; 32]);
                prev = Some((s, seal));
            }
            Err(_) => finding(
                &mut findings,
                s,
                format!("the seal at seq {s}, where the check starts, is unreadable"),
            ),
        }
    }
    let start = prev.as_ref().map_or(1, |p| p.0 + 1);
    rep.first = start;
    let mut expected = start;
    let mut declared: Vec<(u64, u64)> = Vec::new();
    let mut acks: Vec<(u64, u64, u64)> = Vec::new();
    let mut pending = seals.range(start..)?.peekable();

    // One seal, after the record at its seq (whose stored hash is `h`).
    let mut one_seal = |s: u64,
                        raw: &[u8],
                        h: &[u8; 32],
                        prev: &mut Option<(u64, Seal)>,
                        findings: &mut Vec<Finding>|
     -> StoreResult<()> {
        let pseq = prev.as_ref().map_or(0, |p| p.0);
        let Ok(seal) = Seal::decode(raw) else {
            finding_to(
                findings,
                pseq + 1,
                s,
                format!("the seal at seq {s} is unreadable"),
            );
            return Ok(());
        };
        // The MAC covers the seal the link names; a link that skips the
        // previous seal (or names one after it) is a break of its own.
        let named = match &seal.link {
            Some(l) if l.prev_seq != pseq => {
                finding_to(
                    findings,
                    l.prev_seq.min(pseq) + 1,
                    s,
                    format!(
                        "the seal at seq {s} follows a seal at seq {}, but the previous seal is at seq {pseq}: seals were removed or put back",
                        l.prev_seq
                    ),
                );
                if l.prev_seq == 0 {
                    None
                } else {
                    read_seal(&seals, l.prev_seq)?.map(|p| (l.prev_seq, p))
                }
            }
            None if prev.as_ref().is_some_and(|p| p.1.link.is_some()) => {
                finding_to(
                    findings,
                    pseq + 1,
                    s,
                    format!("the unchained seal at seq {s} follows chained seals"),
                );
                None
            }
            _ => *prev,
        };
        let ok = match &seal.link {
            Some(l) if l.prev_seq > 0 && named.is_none() => false,
            Some(_) => seal
                .verify(s, h, named.as_ref().map(|(q, p)| (*q, p)), &mut *mac)
                .map_err(StoreError::Hsm)?,
            None => seal
                .verify(s, h, None, &mut *mac)
                .map_err(StoreError::Hsm)?,
        };
        if !ok {
            finding_to(
                findings,
                pseq + 1,
                s,
                format!(
                    "records {} to {s} do not match the seal at seq {s}: records were edited, rewritten, inserted or removed, or the seal was replaced",
                    pseq + 1
                ),
            );
        } else {
            match seal.link.map(|l| l.kind) {
                Some(SealKind::Broken { from, to }) if !declared.contains(&(from, to)) => {
                    declared.push((from, to));
                }
                Some(SealKind::Ack { from, to }) => acks.push((s, from, to)),
                _ => {}
            }
        }
        *prev = Some((s, seal));
        Ok(())
    };

    for item in audit.range(start..)? {
        let (k, v) = item?;
        let seq = k.value();
        // Seals over records that are not there.
        while let Some(Ok((sk, _))) = pending.peek() {
            let sk = sk.value();
            if sk >= seq {
                break;
            }
            finding(
                &mut findings,
                sk,
                format!("the seal at seq {sk} has no record under it: records were removed"),
            );
            pending.next();
        }
        if seq != expected {
            finding_to(
                &mut findings,
                expected,
                seq - 1,
                format!("records {expected} to {} are missing", seq - 1),
            );
        }
        expected = seq + 1;
        rep.records += 1;
        rep.last = seq;
        match split(v.value()) {
            Ok((body, stored)) => {
                if chain(&h, body) != stored {
                    finding_to(
                        &mut findings,
                        seq,
                        seq,
                        format!("record {seq} does not match its chain hash: it was edited"),
                    );
                }
                h = stored;
            }
            Err(_) => finding_to(
                &mut findings,
                seq,
                seq,
                format!("record {seq} is truncated"),
            ),
        }
        if let Some(Ok((sk, _))) = pending.peek()
            && sk.value() == seq
        {
            let (_, sv) = pending.next().expect("peeked")?;
            rep.seals += 1;
            one_seal(seq, sv.value(), &h, &mut prev, &mut findings)?;
        }
    }
    for item in pending {
        let (sk, _) = item?;
        finding(
            &mut findings,
            newest + 1,
            format!(
                "the seal at seq {} is past the last record ({newest}): records were removed",
                sk.value()
            ),
        );
    }
    let sealed_to = prev.as_ref().map_or(0, |p| p.0);
    if newest > sealed_to {
        rep.unsealed = Some((sealed_to + 1, newest));
    }
    // Breaks vaultd found at start-up, with the reason it recorded.
    for (from, to) in declared {
        let why = audit
            .get(to + 1)?
            .and_then(|v| split(v.value()).ok().map(|(b, _)| b.to_vec()))
            .and_then(|b| decode::<AuditRec>("audit", &b).ok())
            .filter(|r| r.op == "audit_chain_broken")
            .map_or_else(String::new, |r| format!(": {}", r.outcome));
        finding_to(
            &mut findings,
            from,
            to,
            format!(
                "vaultd found the trail broken at a start ({} unverified){why}",
                range_text(from, to)
            ),
        );
    }
    let mut head_notes = Vec::new();
    rep.head = check_head(
        &audit,
        &seals,
        head,
        restored,
        mac,
        &mut findings,
        &mut head_notes,
    )?;
    rep.notes = head_notes;
    findings.sort_by_key(|f| f.first_bad);
    findings.dedup();
    rep.findings = findings
        .into_iter()
        .map(|f| {
            let ack = acks
                .iter()
                .find(|(_, from, to)| f.first_bad >= *from && f.first_bad <= (*to).max(*from))
                .map(|(a, ..)| *a);
            (f, ack)
        })
        .collect();
    Ok(rep)
}

/// What [`acknowledge`] recorded.
#[derive(Debug)]
pub struct Acknowledged {
    pub from: u64,
    pub to: u64,
    /// The `audit_acknowledge` record (and its seal).
    pub seq: u64,
    pub what: String,
}

/// `vaultd audit acknowledge` (vaultd stopped): checks the whole trail;
/// if something is wrong that no operator acknowledged, appends an
/// `audit_acknowledge` record (`rec`'s client, uid and pid; `reason`) and
/// seals it with a [`SealKind::Ack`] seal naming the broken range (from
/// the first bad record to the newest), then rewrites the audit head.
/// `None`: nothing to acknowledge.
pub fn acknowledge(
    db: &Database,
    head_path: &Path,
    hsm: &dyn Hsm,
    mut rec: AuditRec,
    reason: &str,
) -> StoreResult<Option<Acknowledged>> {
    let head = Head::read(head_path);
    let mut mac = |v: u32, p: &[u8; 32], d: &[u8]| hsm.audit_mac_with(v, p, d);
    let rep = verify_trail(&db.begin_read()?, 1, &head, &mut mac)?;
    let open: Vec<&Finding> = rep
        .findings
        .iter()
        .filter(|(_, a)| a.is_none())
        .map(|(f, _)| f)
        .collect();
    let Some(from) = open.iter().map(|f| f.first_bad).min() else {
        return Ok(None);
    };
    // The records no seal vouches for (`from - 1` when what is missing is
    // records after `from - 1`).
    let to = open
        .iter()
        .map(|f| f.last_bad)
        .max()
        .unwrap_or(from)
        .min(rep.last)
        .max(from - 1);
    let what = open
        .iter()
        .map(|f| f.what.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    rec.op = "audit_acknowledge".into();
    rec.outcome = format!(
        "acknowledged the broken audit chain, records {from} to {to} ({what}); reason: {reason}"
    );
    let body = encode(&rec)?;
    let txn = db.begin_write()?;
    let (seq, seal) = {
        let mut audit = txn.open_table(AUDIT)?;
        let mut seals = txn.open_table(AUDIT_SEALS)?;
        let (n, h_n) = match audit.last()? {
            Some((k, v)) => (k.value(), split(v.value())?.1),
            None => (0, [0u8; 32]),
        };
        let prev = match seals.last()? {
            Some((k, v)) => (k.value(), Some(Seal::decode(v.value())?)),
            None => (0, None),
        };
        let seq = n + 1;
        let h = chain(&h_n, &body);
        let mut stored = body;
        stored.extend_from_slice(&h);
        audit.insert(seq, stored.as_slice())?;
        let (seal, head) = Seal::make(
            hsm.audit_key_version(),
            seq,
            &h,
            (prev.0, prev.1.as_ref().map_or(&[][..], Seal::tag)),
            crate::vault::cards::now_ms(),
            SealKind::Ack { from, to },
            |v, p, d| hsm.audit_mac_with(v, p, d),
        )
        .map_err(StoreError::Hsm)?;
        seals.insert(seq, seal.encode().as_slice())?;
        (seq, head)
    };
    txn.commit()?;
    seal.write(head_path).map_err(|e| {
        StoreError::Unavailable(format!("cannot write {}: {e}", head_path.display()))
    })?;
    Ok(Some(Acknowledged {
        from,
        to,
        seq,
        what,
    }))
}

// ------------------------------------------------------------ pages

/// A page of the trail plus what is needed to verify it: the hash before
/// the page, the records after it up to the first seal at or past its end,
/// and the seals in that range with the one before them.
pub struct AuditPage {
    pub prev_hash: [u8; 32],
    pub records: Vec<(u64, AuditRec, Vec<u8>, [u8; 32])>,
    /// Records after the page up to the sealing record (bodies and hashes).
    pub tail: Vec<(u64, Vec<u8>, [u8; 32])>,
    pub seals: Vec<(u64, Seal)>,
    /// The seal before the first of `seals`, which the first links to.
    pub seal_before: Option<(u64, Seal)>,
    /// Start-up found the chain broken and no operator acknowledged it.
    pub broken: Option<String>,
}

impl AuditPage {
    /// Checks the page: consecutive sequence numbers from `after + 1`, every
    /// stored hash equal to the recomputed chain, every seal in range valid
    /// and linked to the one before it (`mac(version, prev, data)` computes
    /// the HSM MAC under the audit key version the seal names), no record
    /// of the page in a range a seal says it does not vouch for, the page
    /// covered by a seal, and no unacknowledged break.
    pub fn verify<E>(
        &self,
        after: u64,
        mut mac: impl FnMut(u32, &[u8; 32], &[u8]) -> Result<[u8; 32], E>,
    ) -> Result<bool, E> {
        if self.broken.is_some() {
            return Ok(false);
        }
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
        let first = self.records.first().map(|r| r.0);
        let mut covered = last.is_none();
        let mut prev = self.seal_before.as_ref().map(|(s, seal)| (*s, seal));
        for (seq, seal) in &self.seals {
            let Some(h) = hashes.get(seq) else {
                return Ok(false);
            };
            if !seal.verify(*seq, h, prev, &mut mac)? {
                return Ok(false);
            }
            if let (Some((a, b)), Some(f), Some(l)) =
                (seal.link.and_then(|l| l.kind.unvouched()), first, last)
                && a <= b
                && a <= l
                && f <= b
            {
                return Ok(false);
            }
            if last.is_some_and(|l| *seq >= l) {
                covered = true;
            }
            prev = Some((*seq, seal));
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
        let broken = self
            .stats
            .audit_broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
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
        let mut page = AuditPage {
            prev_hash,
            records: Vec::new(),
            tail: Vec::new(),
            seals: Vec::new(),
            seal_before: None,
            broken,
        };
        if after >= upto {
            return Ok(page);
        }
        for item in t.range(after + 1..=upto)?.take(limit) {
            let (k, v) = item?;
            let (body, h) = split(v.value())?;
            let rec: AuditRec = decode("audit", body)?;
            page.records.push((k.value(), rec, body.to_vec(), h));
        }
        if let Some(&(first, ..)) = page.records.first() {
            let last = page.records.last().map(|r| r.0).unwrap_or(first);
            // The first seal at or after the page's end, every seal inside
            // the page, and the one before them.
            let end_seal = seals_t
                .range(last..)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value());
            let upto = end_seal.unwrap_or(last);
            if let Some(item) = seals_t.range(..first)?.next_back() {
                let (k, v) = item?;
                page.seal_before = Some((k.value(), Seal::decode(v.value())?));
            }
            for item in seals_t.range(first..=upto)? {
                let (k, v) = item?;
                page.seals.push((k.value(), Seal::decode(v.value())?));
            }
            if upto > last {
                for item in t.range(last + 1..=upto)? {
                    let (k, v) = item?;
                    let (body, h) = split(v.value())?;
                    page.tail.push((k.value(), body.to_vec(), h));
                }
            }
        }
        Ok(page)
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

    /// Ten records sealed at 4 (unchained, as an earlier release did), 7
    /// and 10 (chained; the audit key was rotated before 10).
    fn trail() -> AuditPage {
        let mut h = [0u8; 32];
        let mut records = Vec::new();
        let mut seals: Vec<(u64, Seal)> = Vec::new();
        for i in 1..=10u64 {
            let body = encode(&rec(i)).unwrap();
            h = chain(&h, &body);
            records.push((i, rec(i), body, h));
            let prev = seals.last().map(|(s, p)| (*s, *p));
            let prev = prev.as_ref().map_or((0, &[][..]), |(s, p)| (*s, p.tag()));
            match i {
                4 => seals.push((
                    4,
                    Seal {
                        version: 1,
                        mac: mac(1, &h, &seal_input(4)).unwrap(),
                        link: None,
                    },
                )),
                7 | 10 => {
                    let version = if i == 7 { 1 } else { 2 };
                    let s = Seal::make(version, i, &h, prev, 1000 + i, SealKind::Normal, mac);
                    seals.push((i, s.unwrap().0));
                }
                _ => {}
            }
        }
        AuditPage {
            prev_hash: [0u8; 32],
            records,
            tail: Vec::new(),
            seals,
            seal_before: None,
            broken: None,
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
        // An attacker recomputes every hash after the edit: the seal at 7,
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
        t.seals[2].1.version = 1;
        assert_eq!(t.verify(0, mac), Ok(false));
    }

    #[test]
    fn seals_round_trip() {
        let m = [9u8; 32];
        let legacy = Seal {
            version: 1,
            mac: m,
            link: None,
        };
        assert_eq!(legacy.encode().len(), 32, "version 1 keeps the old form");
        assert_eq!(Seal::decode(&legacy.encode()).unwrap(), legacy);
        let v3 = Seal {
            version: 3,
            ..legacy
        };
        assert_eq!(Seal::decode(&v3.encode()).unwrap(), v3);
        for kind in [
            SealKind::Normal,
            SealKind::Broken { from: 3, to: 9 },
            SealKind::Ack { from: 5, to: 4 },
        ] {
            let mut tag = [0u8; 32];
            tag[..TAG].copy_from_slice(&m[..TAG]);
            let s = Seal {
                version: 2,
                mac: tag,
                link: Some(Link {
                    prev_seq: 41,
                    at: 77,
                    kind,
                }),
            };
            assert_eq!(Seal::decode(&s.encode()).unwrap(), s);
        }
        assert!(Seal::decode(&[0u8; 33]).is_err());
    }

    #[test]
    fn removing_a_record_or_a_seal_is_noticed() {
        let mut t = trail();
        t.records.remove(6);
        assert_eq!(t.verify(0, mac), Ok(false), "gap in sequence numbers");
        let mut t = trail();
        t.seals.pop();
        assert_eq!(t.verify(0, mac), Ok(false), "the page's end is not sealed");
        // The seal at 7 removed: the seal at 10 names it, so its link (and
        // its MAC, which covers the seal at 7) fails.
        let mut t = trail();
        t.seals.remove(1);
        assert_eq!(t.verify(0, mac), Ok(false), "a seal between two removed");
    }

    #[test]
    fn an_unchained_seal_after_chained_ones_is_refused() {
        let mut t = trail();
        let h = t.records[9].3;
        t.seals[2].1 = Seal {
            version: 1,
            mac: mac(1, &h, &seal_input(10)).unwrap(),
            link: None,
        };
        assert_eq!(t.verify(0, mac), Ok(false));
    }

    #[test]
    fn a_page_of_records_a_seal_does_not_vouch_for_fails_and_later_pages_pass() {
        let mut t = trail();
        let prev = t.seals[1];
        let h = t.records[9].3;
        let kind = SealKind::Broken { from: 5, to: 8 };
        t.seals[2].1 = Seal::make(2, 10, &h, (prev.0, prev.1.tag()), 5, kind, mac)
            .unwrap()
            .0;
        assert_eq!(t.verify(0, mac), Ok(false), "records 5 to 8 in the page");
        // A page of records 9 and 10 only.
        let mut later = trail();
        later.seals = vec![t.seals[2]];
        later.seal_before = Some(t.seals[1]);
        later.prev_hash = later.records[7].3;
        later.records.drain(..8);
        assert_eq!(later.verify(8, mac), Ok(true));
        later.broken = Some("found at start".into());
        assert_eq!(later.verify(8, mac), Ok(false), "while not acknowledged");
    }

    #[test]
    fn heads_round_trip_and_refuse_garbage() {
        let h = Head::of(12, &[7u8; 32]);
        assert_eq!(Head::parse(&h.render()), Ok(h));
        assert!(Head::parse("vaultd audit head 1\nseq x\n").is_err());
        assert!(Head::parse("").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = head_path(&dir.path().join("v.redb"));
        assert_eq!(p, head_path_beside_slots(&dir.path().join("v.redb.pans")));
        assert_eq!(Head::read(&p), HeadFile::Missing);
        h.write(&p).unwrap();
        assert_eq!(Head::read(&p), HeadFile::Found(h));
        std::fs::write(&p, "junk").unwrap();
        assert!(matches!(Head::read(&p), HeadFile::Unreadable(_)));
    }

    #[test]
    fn a_chained_seal_stores_half_its_mac_and_its_head_the_other_half() {
        let t = trail();
        let (s, seal) = t.seals[2];
        assert_eq!(seal.encode().len(), CHAINED_LEN);
        assert_eq!(
            seal.mac[TAG..],
            [0u8; 32 - TAG],
            "the database never holds the key"
        );
        let full = seal
            .check(s, &t.records[9].3, Some((t.seals[1].0, &t.seals[1].1)), mac)
            .unwrap()
            .expect("good");
        let head = Head::of(s, &full);
        assert_eq!(&head.tag[..], seal.tag());
        assert_ne!(head.key, [0u8; 32 - TAG]);
    }
}
