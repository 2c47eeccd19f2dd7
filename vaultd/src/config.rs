//! vaultd's configuration: TOML in, validated structs out. Every problem is
//! reported as one line naming the key (`[server].max_frame: ...`), both at
//! start-up and by `vaultd check-config`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem: the key it is about and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A duration written like `"500ms"`, `"1s"`, `"10m"`, `"2h"`, `"90d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} must start with a whole number"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("duration {s:?}: unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    pub storage: Storage,
    pub hsm: Hsm,
    #[serde(default)]
    pub provisioning: Provisioning,
    #[serde(default)]
    pub schemes: BTreeMap<String, Scheme>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub retention: RetentionSchedule,
    #[serde(default)]
    pub keys: Keys,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<Tenant>,
    #[serde(default, rename = "client")]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub metrics: Metrics,
}

/// `[metrics]`: the Prometheus text endpoint, off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// An absolute path (a Unix socket, mode 0660) or a loopback
    /// `address:port` (`127.0.0.1:9187`, `[::1]:9187`).
    pub listen: Option<String>,
}

/// Where the metrics endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Metrics {
    /// The parsed `listen`; `None` when the endpoint is off.
    pub fn listen(&self) -> Result<Option<MetricsListen>, ConfigError> {
        let Some(l) = self.listen.as_deref() else {
            return Ok(None);
        };
        if l.starts_with('/') {
            return Ok(Some(MetricsListen::Unix(PathBuf::from(l))));
        }
        let addr: std::net::SocketAddr = l.parse().map_err(|_| {
            err(
                "[metrics].listen",
                "must be an absolute socket path or a loopback address:port (127.0.0.1:9187)",
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(err(
                "[metrics].listen",
                "must be a loopback address: the endpoint has no authentication (use a Unix socket, or a local scraper)",
            ));
        }
        Ok(Some(MetricsListen::Tcp(addr)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub socket: PathBuf,
    pub max_frame: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    /// Open connections of one uid; beyond them its new ones are answered
    /// `overloaded`. Uids that are not configured clients share one such
    /// allowance, so together they never hold more.
    pub max_connections_per_uid: usize,
    /// Requests of one uid handled at once over all its connections;
    /// beyond them vaultd stops reading that uid's connections.
    pub max_in_flight_per_uid: usize,
    /// Request bytes buffered at once over all connections. A frame that
    /// would pass it is left unread until earlier requests finish; one uid
    /// (and the unconfigured uids together) may hold a quarter of it.
    pub max_buffered_bytes: usize,
    /// A connection with nothing in flight and no frame for this long is closed.
    pub idle_timeout: Dur,
    /// A frame that has begun must be complete within this time (slowloris).
    pub frame_timeout: Dur,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Dur,
}

/// Upper bound of `[server].max_buffered_bytes` (16 GiB): a typo guard.
const MAX_BUFFERED_BYTES: usize = 16 << 30;

impl Default for Server {
    fn default() -> Self {
        Server {
            socket: PathBuf::from(vault_proto::DEFAULT_SOCKET),
            max_frame: vault_proto::DEFAULT_MAX_FRAME,
            max_in_flight: 256,
            max_connections: 1024,
            max_connections_per_uid: 128,
            max_in_flight_per_uid: 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            idle_timeout: Dur(Duration::from_secs(300)),
            frame_timeout: Dur(Duration::from_secs(10)),
            shutdown_grace: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub path: PathBuf,
    /// redb two-phase commit: a second fsync per commit, so a commit never
    /// relies on a (non-cryptographic) checksum to be recognised as complete.
    /// Off by default: redb's one-phase commit with checksums is crash-safe,
    /// and the second fsync halves the commit rate (BENCHMARKS.md).
    #[serde(default)]
    pub two_phase_commit: bool,
    /// redb page cache in bytes (default 48 MiB): bounds the daemon's memory.
    #[serde(default = "default_cache")]
    pub cache_size: usize,
    /// Most mutations one group commit takes.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// How long audit records may stay committed but not yet sealed with
    /// the HSM's audit key (they are hash-chained from the start). Under
    /// load one seal then covers the commits of this interval instead of
    /// one HSM call per commit; a quiet writer seals within the interval,
    /// the `audit` op seals before it reads, and a stop seals the tail.
    /// "0ms" seals every commit.
    #[serde(default = "default_seal_interval")]
    pub audit_seal_interval: Dur,
    /// ATCs journaled between two folds of the ATC journal into the token
    /// records (`store::atc`). Lower: a shorter journal to replay at
    /// start-up, more record rewrites.
    #[serde(default = "default_fold_after")]
    pub atc_fold_after: u64,
}

fn default_fold_after() -> u64 {
    crate::store::atc::FOLD_AFTER
}

fn default_seal_interval() -> Dur {
    Dur(Duration::from_millis(10))
}

fn default_cache() -> usize {
    48 * 1024 * 1024
}

impl Storage {
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            two_phase_commit: self.two_phase_commit,
            max_batch: self.max_batch,
            cache_size: self.cache_size,
            audit_seal_interval: self.audit_seal_interval.0,
            atc_fold_after: self.atc_fold_after,
        }
    }
}
fn default_batch() -> usize {
    2048
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsm {
    pub module: PathBuf,
    pub token_label: String,
    /// PIN file; the `VAULTD_HSM_PIN` environment variable wins when set.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// HSM worker threads, each with its own logged-in session.
    #[serde(default = "default_hsm_threads")]
    pub threads: usize,
    /// Keys kept as session-object copies in the HSM (the vault's own
    /// keys, and the `nt.*` objects of tokens from before 2026-12 until
    /// their key refresh); 0 turns copying off. See `vault-hsm`
    /// `pkcs11::copies`: SoftHSM2 spends about 8 KB per copy.
    #[serde(default = "default_key_cache")]
    pub key_cache: usize,
    /// Network token keys kept unwrapped (session objects) between
    /// cryptograms; a payment for a token not among them costs one
    /// `C_UnwrapKey` of its stored key. See `vault-hsm` `pkcs11::token_keys`.
    #[serde(default = "default_token_key_cache")]
    pub token_key_cache: usize,
    /// Re-initialise the PKCS#11 module after this many session objects
    /// (one per cryptogram, one per key copy); 0 never. Unset: 600,000 for
    /// SoftHSM2, which frees destroyed session objects only at
    /// `C_Finalize`, and never for other modules.
    #[serde(default)]
    pub reinit_after_objects: Option<u64>,
    /// Re-initialise SoftHSM2 through a standby copy of the library,
    /// prepared beside the one in use, so calls wait only for the switch
    /// (see `vault-hsm` `pkcs11::module`); false: in place, calls wait for
    /// the whole re-initialisation. Ignored for other modules.
    #[serde(default = "default_true")]
    pub reinit_standby: bool,
    /// While client calls keep every HSM thread busy, background work
    /// (provisioning, lifecycle, key destruction, re-encryption) still
    /// starts one call this long after the last; zero: it competes with
    /// client calls as an equal.
    #[serde(default = "default_background_min_share")]
    pub background_min_share: Dur,
}

fn default_background_min_share() -> Dur {
    Dur(vault_hsm::pool::BACKGROUND_MIN_SHARE)
}

fn default_true() -> bool {
    true
}

fn default_hsm_threads() -> usize {
    2
}

fn default_token_key_cache() -> usize {
    vault_hsm::pkcs11::DEFAULT_TOKEN_KEY_CACHE
}

fn default_key_cache() -> usize {
    vault_hsm::pkcs11::DEFAULT_KEY_CACHE
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Provisioning {
    pub concurrency: usize,
    pub per_scheme_concurrency: usize,
    pub max_attempts: u32,
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    pub poll_interval: Dur,
    pub request_timeout: Dur,
    /// `pan_retention = "none"` tenants wait this long for a token in `tokenize`.
    pub sync_timeout: Dur,
    /// Consecutive failures that open a scheme's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker stays open before a probe.
    pub breaker_cooldown: Dur,
}

impl Default for Provisioning {
    fn default() -> Self {
        Provisioning {
            concurrency: 256,
            per_scheme_concurrency: 128,
            max_attempts: 8,
            backoff_initial: Dur(Duration::from_secs(1)),
            backoff_max: Dur(Duration::from_secs(600)),
            poll_interval: Dur(Duration::from_secs(1)),
            request_timeout: Dur(Duration::from_secs(10)),
            sync_timeout: Dur(Duration::from_secs(5)),
            breaker_threshold: 20,
            breaker_cooldown: Dur(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheme {
    pub url: String,
    pub token_requestor_id: String,
}

/// `[retention]`: how often the scheduler looks for PANs that fell due.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSchedule {
    pub check_interval: Dur,
}

impl Default for RetentionSchedule {
    fn default() -> Self {
        RetentionSchedule {
            check_interval: Dur(Duration::from_secs(1)),
        }
    }
}

/// `[keys]`: the re-encryption job after a PAN key rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// Ciphertexts re-encrypted per group commit.
    pub reencrypt_batch: usize,
    /// Pause between two batches, so clients keep most of the writer.
    pub reencrypt_pause: Dur,
    /// How often the daemon looks for key versions rotated by
    /// `vaultd keys rotate` / `rotate-audit` (the `key_rotate` op switches at once).
    pub refresh_interval: Dur,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            reencrypt_batch: 500,
            reencrypt_pause: Dur(Duration::from_millis(20)),
            refresh_interval: Dur(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// tracing filter, e.g. "info" or "vaultd=debug"; `RUST_LOG` wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    Keep,
    None,
    Transition(Duration),
}

impl Retention {
    pub fn describe(&self) -> String {
        match self {
            Retention::Keep => "keep".into(),
            Retention::None => "none".into(),
            Retention::Transition(d) => format!("transition {}", fmt_duration(*d)),
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Table { transition: Dur },
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected \"keep\", \"none\" or { transition = \"<duration>\" }",
            )
        })?;
        match raw {
            Raw::Word(w) if w == "keep" => Ok(Retention::Keep),
            Raw::Word(w) if w == "none" => Ok(Retention::None),
            Raw::Word(_) => Err(serde::de::Error::custom(
                "expected \"keep\", \"none\" or { transition = \"<duration>\" }",
            )),
            Raw::Table { transition } => Ok(Retention::Transition(transition.0)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub network_tokens: bool,
    #[serde(default = "keep")]
    pub pan_retention: Retention,
}

fn keep() -> Retention {
    Retention::Keep
}

/// A client's roles; which ops each may call is declared with the op
/// (`vault_proto::ops`, part of the protocol contract).
pub use vault_proto::ops::Role;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    pub name: String,
    pub uid: u32,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    pub roles: Vec<Role>,
    /// Most `credentials` answers that return a PAN per minute (none: no limit).
    #[serde(default)]
    pub pan_credentials_per_minute: Option<u32>,
}

/// One uid (and the unknown uids together) may hold 1/this of
/// `max_buffered_bytes`: filling the budget takes several uids (the server
/// enforces it; configuration checks the budget against it).
pub const UID_SHARE_OF_BUFFER: usize = 4;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| toml_err(text, &e))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = key_of_path(&e.path().to_string());
            let inner = e.into_inner();
            err(key, one_line(inner.message()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.metrics.listen()?;
        if self.keys.reencrypt_batch == 0 || self.keys.reencrypt_batch > 10_000 {
            return Err(err("[keys].reencrypt_batch", "must be between 1 and 10000"));
        }
        if self.keys.refresh_interval.0.is_zero() {
            return Err(err("[keys].refresh_interval", "must be more than 0"));
        }
        let s = &self.server;
        if s.max_frame < 64 || s.max_frame > 64 * 1024 * 1024 {
            return Err(err(
                "[server].max_frame",
                "must be between 64 and 67108864 bytes",
            ));
        }
        if s.max_in_flight == 0 || s.max_in_flight > 65_536 {
            return Err(err("[server].max_in_flight", "must be between 1 and 65536"));
        }
        if s.max_connections == 0 {
            return Err(err("[server].max_connections", "must be at least 1"));
        }
        // Above max_connections it never binds; not an error, so that a
        // small max_connections alone is a valid file.
        if s.max_connections_per_uid == 0 || s.max_connections_per_uid > 1_048_576 {
            return Err(err(
                "[server].max_connections_per_uid",
                "must be between 1 and 1048576",
            ));
        }
        if s.max_in_flight_per_uid == 0 || s.max_in_flight_per_uid > 1_048_576 {
            return Err(err(
                "[server].max_in_flight_per_uid",
                "must be between 1 and 1048576",
            ));
        }
        // A uid may hold a share of the budget, and must be able to hold
        // one frame of max_frame bytes, or such a frame would wait forever.
        let share = UID_SHARE_OF_BUFFER;
        if s.max_buffered_bytes / share < s.max_frame || s.max_buffered_bytes > MAX_BUFFERED_BYTES {
            return Err(err(
                "[server].max_buffered_bytes",
                format!(
                    "must be between {} ({share} x max_frame: one uid may buffer 1/{share} of it) and {MAX_BUFFERED_BYTES}",
                    s.max_frame.saturating_mul(share)
                ),
            ));
        }
        if self.storage.max_batch == 0 {
            return Err(err("[storage].max_batch", "must be at least 1"));
        }
        if self.storage.atc_fold_after == 0 {
            return Err(err("[storage].atc_fold_after", "must be at least 1"));
        }
        if self.storage.audit_seal_interval.0 > Duration::from_secs(1) {
            return Err(err(
                "[storage].audit_seal_interval",
                "must be at most 1s (records stay unsealed that long)",
            ));
        }
        if self.hsm.threads == 0 || self.hsm.threads > 256 {
            return Err(err("[hsm].threads", "must be between 1 and 256"));
        }
        if self.hsm.token_key_cache == 0 || self.hsm.token_key_cache > 1_000_000 {
            return Err(err("[hsm].token_key_cache", "must be 1 to 1000000"));
        }
        if self.hsm.key_cache > 1_000_000 {
            return Err(err("[hsm].key_cache", "must be at most 1000000"));
        }
        if let Some(n) = self.hsm.reinit_after_objects
            && n != 0
            && n < 1_000
        {
            return Err(err(
                "[hsm].reinit_after_objects",
                "must be 0 (never) or at least 1000: each re-initialisation pauses HSM calls",
            ));
        }
        if self.hsm.background_min_share.0 > Duration::from_secs(1) {
            return Err(err(
                "[hsm].background_min_share",
                "must be at most 1s (background work would all but stop under load)",
            ));
        }
        if self.hsm.token_label.is_empty() {
            return Err(err("[hsm].token_label", "must not be empty"));
        }
        let p = &self.provisioning;
        if p.concurrency == 0 || p.per_scheme_concurrency == 0 {
            return Err(err("[provisioning].concurrency", "must be at least 1"));
        }
        if p.max_attempts == 0 {
            return Err(err("[provisioning].max_attempts", "must be at least 1"));
        }
        if p.backoff_initial.0 > p.backoff_max.0 {
            return Err(err(
                "[provisioning].backoff_initial",
                "must not exceed backoff_max",
            ));
        }
        for (name, sch) in &self.schemes {
            if name.parse::<vault_proto::Scheme>().is_err() {
                return Err(err(
                    format!("[schemes.{name}]"),
                    format!("unknown scheme ({})", vault_proto::Scheme::names()),
                ));
            }
            if !(sch.url.starts_with("http://") || sch.url.starts_with("https://")) {
                return Err(err(
                    format!("[schemes.{name}].url"),
                    "must start with http:// or https://",
                ));
            }
        }
        let mut tenant_ids = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !valid_id(&t.id) {
                return Err(err(
                    format!("[[tenant]] #{}.id", i + 1),
                    "must be 1..64 characters of [A-Za-z0-9._-]",
                ));
            }
            if tenant_ids.insert(t.id.as_str(), i).is_some() {
                return Err(err(format!("[[tenant]] {}", t.id), "defined twice"));
            }
            if let Retention::Transition(d) = t.pan_retention
                && d.is_zero()
            {
                return Err(err(
                    format!("[[tenant]] {}.pan_retention", t.id),
                    "transition must be longer than 0",
                ));
            }
        }
        let mut uids = HashMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            let at = format!(
                "[[client]] {}",
                if c.name.is_empty() {
                    format!("#{}", i + 1)
                } else {
                    c.name.clone()
                }
            );
            if c.name.is_empty() {
                return Err(err(format!("{at}.name"), "must not be empty"));
            }
            if uids.insert(c.uid, c.name.as_str()).is_some() {
                return Err(err(
                    format!("{at}.uid"),
                    format!("uid {} is used by another client", c.uid),
                ));
            }
            if c.roles.is_empty() {
                return Err(err(format!("{at}.roles"), "needs at least one role"));
            }
            let needs_tenant = c
                .roles
                .iter()
                .any(|r| matches!(r, Role::Collector | Role::Merchant));
            match (&c.tenant, needs_tenant) {
                (None, true) => {
                    return Err(err(
                        format!("{at}.tenant"),
                        "collector and merchant clients need a tenant",
                    ));
                }
                (Some(t), _) if !tenant_ids.contains_key(t.as_str()) => {
                    return Err(err(
                        format!("{at}.tenant"),
                        format!("no [[tenant]] with id {t:?}"),
                    ));
                }
                _ => {}
            }
            if c.roles.contains(&Role::Forwarder) && c.tenants.is_empty() {
                return Err(err(
                    format!("{at}.tenants"),
                    "forwarders need tenants = [\"*\"] or a list",
                ));
            }
            for t in &c.tenants {
                if t != "*" && !tenant_ids.contains_key(t.as_str()) {
                    return Err(err(
                        format!("{at}.tenants"),
                        format!("no [[tenant]] with id {t:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// Tenant ids, transaction ids and similar: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `server.max_frame` → `[server].max_frame`; `tenant[1].id` → `[[tenant]] #2.id`.
fn key_of_path(path: &str) -> String {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return "(top level)".into();
    };
    if first.is_empty() || first == "?" {
        return "(top level)".into();
    }
    let rest: Vec<&str> = parts.collect();
    let head = if let Some((name, idx)) = first.split_once('[') {
        let i: usize = idx.trim_end_matches(']').parse().unwrap_or(0);
        format!("[[{name}]] #{}", i + 1)
    } else if rest.is_empty() {
        return first.to_owned();
    } else {
        format!("[{first}]")
    };
    if rest.is_empty() {
        head
    } else {
        format!("{head}.{}", rest.join("."))
    }
}

fn toml_err(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
        .unwrap_or(0);
    err(format!("line {line}"), one_line(e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
socket = "/tmp/v.sock"
[storage]
path = "/tmp/v.redb"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "vaultd"
[[tenant]]
id = "m-1"
network_tokens = true
pan_retention = { transition = "90d" }
[[client]]
name = "shop"
uid = 1001
tenant = "m-1"
roles = ["merchant"]
[[client]]
name = "fwd"
uid = 1002
roles = ["forwarder"]
tenants = ["*"]
"#;

    #[test]
    fn metrics_listen_is_a_socket_path_or_a_loopback_port() {
        let with = |l: &str| Config::parse(&format!("{GOOD}\n[metrics]\nlisten = \"{l}\"\n"));
        assert_eq!(Config::parse(GOOD).unwrap().metrics.listen().unwrap(), None);
        assert_eq!(
            with("/run/vaultd/metrics.sock")
                .unwrap()
                .metrics
                .listen()
                .unwrap(),
            Some(MetricsListen::Unix("/run/vaultd/metrics.sock".into()))
        );
        assert_eq!(
            with("127.0.0.1:9187").unwrap().metrics.listen().unwrap(),
            Some(MetricsListen::Tcp("127.0.0.1:9187".parse().unwrap()))
        );
        assert!(with("[::1]:9187").is_ok());
        for bad in [
            "0.0.0.0:9187",
            "10.1.2.3:9187",
            "metrics.sock",
            "localhost:9187",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.key, "[metrics].listen", "{bad}: {e}");
        }
    }

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.tenants[0].pan_retention,
            Retention::Transition(Duration::from_secs(90 * 86400))
        );
        assert_eq!(c.server.max_in_flight, 256);
    }

    #[test]
    fn names_the_key_of_a_problem() {
        let e = Config::parse(&GOOD.replace("socket = \"/tmp/v.sock\"", "max_frame = \"big\""))
            .unwrap_err();
        assert_eq!(e.key, "[server].max_frame", "{e}");
        let e = Config::parse(&GOOD.replace("uid = 1002", "uid = 1001")).unwrap_err();
        assert_eq!(e.key, "[[client]] fwd.uid", "{e}");
        let e = Config::parse(&GOOD.replace("\"90d\"", "\"90 days\"")).unwrap_err();
        assert!(e.key.contains("pan_retention"), "{e}");
        let e = Config::parse(&GOOD.replace("[storage]", "[storage]\ncolour = 1")).unwrap_err();
        assert_eq!(e.key, "[storage].colour", "{e}");
        assert!(e.problem.contains("colour"), "{e}");
        let e = Config::parse(&GOOD.replace("tenant = \"m-1\"", "tenant = \"m-9\"")).unwrap_err();
        assert_eq!(e.key, "[[client]] shop.tenant", "{e}");
        let hsm = |line: &str| GOOD.replace("[hsm]", &format!("[hsm]\n{line}"));
        let e = Config::parse(&hsm("reinit_after_objects = 10")).unwrap_err();
        assert_eq!(e.key, "[hsm].reinit_after_objects", "{e}");
        for ok in ["reinit_after_objects = 0", "reinit_after_objects = 50000"] {
            Config::parse(&hsm(ok)).expect(ok);
        }
        assert!(
            Config::parse(GOOD).unwrap().hsm.reinit_standby,
            "on by default"
        );
        assert!(
            !Config::parse(&hsm("reinit_standby = false"))
                .unwrap()
                .hsm
                .reinit_standby
        );
        for bad in ["token_key_cache = 0", "token_key_cache = 1000001"] {
            let e = Config::parse(&hsm(bad)).unwrap_err();
            assert_eq!(e.key, "[hsm].token_key_cache", "{e}");
        }
        assert_eq!(Config::parse(GOOD).unwrap().hsm.token_key_cache, 4096);
        let c = Config::parse(&hsm("token_key_cache = 100000")).unwrap();
        assert_eq!(c.hsm.token_key_cache, 100_000);
        let e = Config::parse(&hsm("background_min_share = \"2s\"")).unwrap_err();
        assert_eq!(e.key, "[hsm].background_min_share", "{e}");
        for (ok, ms) in [("\"0ms\"", 0), ("\"2ms\"", 2), ("\"1s\"", 1000)] {
            let c = Config::parse(&hsm(&format!("background_min_share = {ok}"))).expect(ok);
            assert_eq!(c.hsm.background_min_share.0, Duration::from_millis(ms));
        }
        assert_eq!(
            Config::parse(GOOD).unwrap().hsm.background_min_share.0,
            Duration::from_millis(10),
            "the default"
        );
        let storage = |line: &str| GOOD.replace("[storage]", &format!("[storage]\n{line}"));
        let e = Config::parse(&storage("audit_seal_interval = \"2s\"")).unwrap_err();
        assert_eq!(e.key, "[storage].audit_seal_interval", "{e}");
        for (ok, ms) in [("\"0ms\"", 0), ("\"1s\"", 1000)] {
            let c = Config::parse(&storage(&format!("audit_seal_interval = {ok}"))).expect(ok);
            assert_eq!(c.storage.audit_seal_interval.0, Duration::from_millis(ms));
        }
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.storage.audit_seal_interval.0,
            Duration::from_millis(10),
            "the default"
        );
    }

    #[test]
    fn server_limits_have_sane_defaults_and_are_checked() {
        let s = Config::parse(GOOD).unwrap().server;
        assert_eq!(
            (
                s.max_connections_per_uid,
                s.max_in_flight_per_uid,
                s.max_buffered_bytes
            ),
            (128, 1024, 64 << 20)
        );
        let server = |lines: &str| GOOD.replace("[server]", &format!("[server]\n{lines}"));
        for (bad, key) in [
            ("max_connections_per_uid = 0", "max_connections_per_uid"),
            (
                "max_connections_per_uid = 1048577",
                "max_connections_per_uid",
            ),
            ("max_in_flight_per_uid = 0", "max_in_flight_per_uid"),
            ("max_in_flight_per_uid = 1048577", "max_in_flight_per_uid"),
            // One uid's share (a quarter) must hold a max_frame frame.
            ("max_buffered_bytes = 4194303", "max_buffered_bytes"),
            (
                "max_frame = 4096\nmax_buffered_bytes = 16383",
                "max_buffered_bytes",
            ),
            ("max_buffered_bytes = 17179869185", "max_buffered_bytes"),
            ("max_buffered_bytes = -1", "max_buffered_bytes"),
        ] {
            let e = Config::parse(&server(bad)).unwrap_err();
            assert_eq!(e.key, format!("[server].{key}"), "{bad}: {e}");
        }
        let e = Config::parse(&server("max_buffered_bytes = 1000")).unwrap_err();
        assert!(e.problem.contains("4194304"), "names the least: {e}");
        for ok in [
            "max_connections = 10\nmax_connections_per_uid = 10",
            // The default per-uid cap with a smaller max_connections.
            "max_connections = 8",
            "max_connections_per_uid = 1\nmax_in_flight_per_uid = 1",
            "max_buffered_bytes = 4194304",
            "max_frame = 4096\nmax_buffered_bytes = 16384",
            "max_buffered_bytes = 17179869184",
        ] {
            Config::parse(&server(ok)).expect(ok);
        }
        let s = Config::parse(&server(
            "max_connections_per_uid = 3\nmax_in_flight_per_uid = 5\nmax_buffered_bytes = 8388608",
        ))
        .unwrap()
        .server;
        assert_eq!(
            (
                s.max_connections_per_uid,
                s.max_in_flight_per_uid,
                s.max_buffered_bytes
            ),
            (3, 5, 8 << 20)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(fmt_duration(Duration::from_secs(7200)), "2h");
    }
}
