//! The `vaultd` binary: `run`, `check-config`, and the key ceremony commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vaultd::config::Config;
use vaultd::{daemon, logging};

/// jemalloc for the whole process, the PKCS#11 module included (its
/// `malloc` and `free` are the ones the dynamic linker binds). SoftHSM2
/// allocates and frees dozens of small C++ objects per call and keeps the
/// shell of every session object it ever made (see `vault_hsm`'s
/// re-initialisation); glibc's allocator then spends its time searching
/// fragmented bins (`_int_malloc` was the hottest symbol of the HSM
/// threads). Measured in BENCHMARKS.md (session 6): credentials +20-25%,
/// tokenize-repeat +27%, the same memory bound with a 48 MiB redb cache.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "vaultd", version, about = "Card vault daemon")]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "VAULTD_CONFIG",
        default_value = "/etc/vaultd/vaultd.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run {
        /// Run even as root (development only: run as the `vaultd` user).
        #[arg(long)]
        allow_root: bool,
    },
    /// Validate a configuration file without starting.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    /// HSM key management.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Write a consistent copy of the database while vaultd serves (asks
    /// the running daemon: the `backup` op; needs an admin client).
    Backup {
        /// Absolute path of the copy; its PAN slots go to FILE.pans.
        #[arg(long = "to")]
        to: PathBuf,
    },
    /// Replace the database with a backup. vaultd must be stopped.
    Restore {
        /// The backup (FILE and FILE.pans).
        #[arg(long = "from")]
        from: PathBuf,
    },
    /// The audit trail, checked offline: vaultd must be stopped; needs the
    /// HSM (`vaultctl audit` checks the newest records while it runs).
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the whole audit chain: every record against its chain hash,
    /// every seal in the HSM and its link to the seal before it, the
    /// breaks vaultd found at start-up, and the audit head file. Names the
    /// first bad record and exits non-zero if anything is wrong that no
    /// operator has acknowledged.
    Verify {
        /// Check from this record on (from the newest seal before it).
        #[arg(long = "from")]
        from: Option<u64>,
    },
    /// Record in the trail that an operator has seen what `verify`
    /// reports: an `audit_acknowledge` record and a seal naming the broken
    /// range. vaultd seals normally again after it.
    Acknowledge {
        /// Why (the investigation, the ticket); never card data.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create vault.pan.v1, vault.fp and vault.audit if missing (idempotent).
    Init,
    /// Import a token service KEK from two or more key components (XOR).
    /// A scheme that has a KEK gets the next version (tsp.<scheme>.kek.v<N>);
    /// older versions stay while stored token keys are wrapped under them.
    ImportKek {
        #[arg(long)]
        scheme: String,
        #[arg(long = "component", required = true, num_args = 1)]
        components: Vec<PathBuf>,
    },
    /// Destroy KEK version N of a scheme once no stored token key is
    /// wrapped under it (never the newest). vaultd must be stopped (it
    /// reads the database's counts).
    RetireKek {
        #[arg(long)]
        scheme: String,
        #[arg(long)]
        version: u32,
    },
    /// List the vault's keys in the HSM (labels and attributes, never values).
    List,
    /// Create vault.pan.v<N+1>. A running vaultd seals with it within
    /// [keys].refresh_interval and re-encrypts in the background
    /// (`vaultctl key-rotate` does the same through the daemon, at once).
    Rotate,
    /// Create the next audit key (vault.audit.v<N+1>); old ones are kept.
    RotateAudit,
    /// Destroy vault.pan.v<N> once no record uses it. vaultd must be
    /// stopped (it scans the database); while it runs, use
    /// `vaultctl key-retire --version N`.
    Retire {
        #[arg(long)]
        version: u32,
    },
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| format!("configuration error: {e}"))
}

/// Keeps secrets out of core files and away from same-uid debuggers:
/// non-dumpable (no core, no ptrace attach, /proc/<pid>/{mem,environ}
/// root-only) and a core size limit of 0, before the PIN or any key
/// component is read. Runs for every subcommand.
fn harden_process() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot make the process non-dumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the rlimit we pass and keeps no reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        return Err(format!(
            "cannot set the core size limit to 0: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(e) = harden_process() {
        eprintln!("vaultd: {e}");
        return ExitCode::FAILURE;
    }
    // SAFETY: first thing in main, before any thread exists.
    unsafe { vault_hsm::pkcs11::take_pin_from_env() };
    quiet_panics();
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Run { allow_root: false }) {
        Cmd::CheckConfig { file } => {
            let f = file.unwrap_or(cli.config);
            load(&f).map(|_| println!("{}: ok", f.display()))
        }
        Cmd::Run { allow_root } => load(&cli.config).and_then(|cfg| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 && !allow_root {
                return Err("refusing to run as root; run as the vaultd user (or pass --allow-root in development)".into());
            }
            logging::init(&cfg.log.level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let served = rt.block_on(daemon::run(cfg, cli.config));
            // A SoftHSM2 standby copy being prepared must not meet the
            // libraries' exit-time destructors.
            vault_hsm::pkcs11::quiesce_modules();
            served.map_err(|e| e.to_string())
        }),
        Cmd::Keys(k) => load(&cli.config).and_then(|cfg| keys(&cfg, k)),
        Cmd::Backup { to } => load(&cli.config).and_then(|cfg| backup(&cfg, &to)),
        Cmd::Restore { from } => load(&cli.config).and_then(|cfg| restore(&cfg, &from)),
        Cmd::Audit(a) => load(&cli.config).and_then(|cfg| audit(&cfg, a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vaultd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A panic reports where it happened and nothing of its message: a
/// message may quote the value that broke an assumption (a slice of a token
/// number, a PAN), and the default hook prints it to stderr, which is the
/// journal under systemd.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".to_owned());
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, location = %at, "a thread panicked (message withheld: it may hold card data)");
        eprintln!("vaultd: thread {name} panicked at {at} (message withheld)");
    }));
}

/// Whether a vaultd answers on the configured socket.
fn daemon_running(cfg: &Config) -> bool {
    std::os::unix::net::UnixStream::connect(&cfg.server.socket).is_ok()
}

fn backup(cfg: &Config, to: &Path) -> Result<(), String> {
    let to = std::path::absolute(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut client = vault_proto::BlockingClient::connect(&cfg.server.socket).map_err(|e| {
        format!(
            "cannot reach vaultd at {} ({e}); with vaultd stopped, copy [storage].path and its .pans file instead",
            cfg.server.socket.display()
        )
    })?;
    let r = client
        .op::<vault_proto::ops::BackupOp>(&vault_proto::ops::BackupArgs {
            path: to.to_string_lossy().into_owned(),
        })
        .map_err(|e| e.to_string())?;
    println!(
        "backup written to {} (+ .pans): {} aliases, {} PANs, audit up to #{}",
        r.path, r.aliases, r.pans, r.audit_seq
    );
    Ok(())
}

fn restore(cfg: &Config, from: &Path) -> Result<(), String> {
    if daemon_running(cfg) {
        return Err(format!(
            "vaultd answers on {}: stop it before restoring",
            cfg.server.socket.display()
        ));
    }
    // Taking redb's lock also proves no other process has the file open.
    if cfg.storage.path.exists() {
        drop(redb::Database::open(&cfg.storage.path).map_err(|e| {
            format!(
                "{} is in use or unreadable ({e}); stop vaultd first",
                cfg.storage.path.display()
            )
        })?);
    }
    let s = vaultd::store::backup::restore(from, &cfg.storage.path).map_err(|e| e.to_string())?;
    println!(
        "restored {} into {}: {} aliases, {} PANs, audit up to #{}",
        from.display(),
        cfg.storage.path.display(),
        s.aliases,
        s.pans,
        s.audit_seq
    );
    Ok(())
}

/// `vaultd audit verify|acknowledge`: vaultd stopped, the database and
/// the HSM opened here.
fn audit(cfg: &Config, cmd: AuditCmd) -> Result<(), String> {
    use vault_hsm::Hsm;
    use vaultd::store::audit::{self as trail, Head};
    if daemon_running(cfg) {
        return Err(format!(
            "vaultd answers on {}: stop it first (`systemctl stop vaultd.socket vaultd.service`); while it runs, `vaultctl audit` checks the newest records",
            cfg.server.socket.display()
        ));
    }
    let path = &cfg.storage.path;
    if !path.exists() {
        return Err(format!("{}: no database there", path.display()));
    }
    let in_use = |e: redb::DatabaseError| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "{} is held by another process (is vaultd running?): stop vaultd first",
            path.display()
        ),
        e => format!("{}: {e}", path.display()),
    };
    let head_path = trail::head_path(path);
    match cmd {
        AuditCmd::Verify { from } => {
            // Read-only; a database that needs the repair of an unclean
            // stop is opened for writing, as a start would.
            let ro = match redb::ReadOnlyDatabase::open(path) {
                Ok(db) => Some(db),
                Err(redb::DatabaseError::RepairAborted) => None,
                Err(e) => return Err(in_use(e)),
            };
            let rw = match ro {
                Some(_) => None,
                None => Some(redb::Database::open(path).map_err(in_use)?),
            };
            let hsm = daemon::open_hsm_admin(cfg).map_err(|e| e.to_string())?;
            let mut mac = |v: u32, p: &[u8; 32], d: &[u8]| hsm.audit_mac_with(v, p, d);
            let head = Head::read(&head_path);
            let txn = match (&ro, &rw) {
                (Some(db), _) => redb::ReadableDatabase::begin_read(db),
                (_, Some(db)) => redb::ReadableDatabase::begin_read(db),
                _ => unreachable!("one of them is open"),
            }
            .map_err(|e| e.to_string())?;
            let rep = trail::verify_trail(&txn, from.unwrap_or(1), &head, &mut mac)
                .map_err(|e| e.to_string())?;
            if rep.records == 0 {
                println!("audit trail: no records from {}", from.unwrap_or(1));
            } else {
                println!(
                    "audit trail: records {} to {} ({} checked), {} seals",
                    rep.first, rep.last, rep.records, rep.seals
                );
            }
            match rep.head {
                Some(h) => println!("audit head: seal at {h} ({})", head_path.display()),
                None => println!("audit head: none valid ({})", head_path.display()),
            }
            if let Some((a, b)) = rep.unsealed {
                println!(
                    "unsealed: records {a} to {b} (not verifiable yet; the next start checks and seals them)"
                );
            }
            for n in &rep.notes {
                println!("note: {n}");
            }
            for (f, ack) in &rep.findings {
                match ack {
                    Some(a) => println!(
                        "acknowledged (seal at {a}): from record {}: {}",
                        f.first_bad, f.what
                    ),
                    None => println!("BROKEN from record {}: {}", f.first_bad, f.what),
                }
            }
            match rep.first_unacknowledged() {
                Some(f) => Err(format!(
                    "audit chain broken: first bad record {}",
                    f.first_bad
                )),
                None => {
                    println!("chain OK");
                    Ok(())
                }
            }
        }
        AuditCmd::Acknowledge { reason } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.len() > 500 {
                return Err("--reason must be 1 to 500 characters".into());
            }
            // The reason goes into the trail and the log: no card numbers.
            let digits = reason
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            if digits >= 12 {
                return Err(
                    "--reason holds a long run of digits (a card number?): leave it out".into(),
                );
            }
            let db = redb::Database::open(path).map_err(in_use)?;
            let hsm = daemon::open_hsm_admin(cfg).map_err(|e| e.to_string())?;
            let mut rec = vaultd::store::records::AuditRec::by_daemon("audit_acknowledge", "");
            rec.client = "vaultd audit acknowledge".into();
            match trail::acknowledge(&db, &head_path, &hsm, rec, reason)
                .map_err(|e| e.to_string())?
            {
                None => println!("nothing to acknowledge: the audit chain verifies"),
                Some(a) => println!(
                    "acknowledged records {} to {} in audit record {} (sealed): {}",
                    a.from, a.to, a.seq, a.what
                ),
            }
            Ok(())
        }
    }
}

/// `keys retire` on a stopped daemon: scan the database for the version.
/// Tokens whose stored key each KEK version wraps, from the database
/// (vaultd stopped); `None` while vaultd runs.
fn kek_usage_offline(
    cfg: &Config,
    hsm: &std::sync::Arc<vault_hsm::Pkcs11Hsm>,
) -> Result<Option<vaultd::store::KekUsage>, String> {
    use vaultd::store::{KeyStore, RedbStore};
    if daemon_running(cfg) {
        return Ok(None);
    }
    let store = RedbStore::open(&cfg.storage.path, hsm.clone(), &cfg.storage.options())
        .map_err(|e| format!("[storage].path {}: {e}", cfg.storage.path.display()))?;
    store.kek_usage().map(Some).map_err(|e| e.to_string())
}

fn retire_kek_offline(
    cfg: &Config,
    hsm: vault_hsm::Pkcs11Hsm,
    scheme: &str,
    version: u32,
) -> Result<(), String> {
    let label = vault_hsm::pkcs11::kek_version_label(scheme, version).map_err(|e| e.to_string())?;
    let hsm = std::sync::Arc::new(hsm);
    let Some(usage) = kek_usage_offline(cfg, &hsm)? else {
        return Err(format!(
            "vaultd answers on {}: stop it first (the database says which KEK versions are in use)",
            cfg.server.socket.display()
        ));
    };
    if let Some(n) = usage.get(&(scheme.to_owned(), version)) {
        return Err(format!(
            "{n} stored token keys are wrapped under {label}: move them to the newest KEK first (vaultctl kek-refresh --scheme {scheme} --version {version}, then wait until stats shows none under it)"
        ));
    }
    let destroyed =
        vault_hsm::keys::destroy_kek(&hsm, scheme, version).map_err(|e| e.to_string())?;
    println!(
        "{label}: {}",
        if destroyed {
            "destroyed"
        } else {
            "was not in the token"
        }
    );
    Ok(())
}

fn retire_offline(cfg: &Config, hsm: vault_hsm::Pkcs11Hsm, version: u32) -> Result<(), String> {
    use vaultd::store::{KeyStore, RedbStore};
    if daemon_running(cfg) {
        return Err(format!(
            "vaultd answers on {}: use `vaultctl key-retire --version {version}` (or stop it)",
            cfg.server.socket.display()
        ));
    }
    let newest = hsm.refresh_pan_version().map_err(|e| e.to_string())?;
    if version == 0 || version >= newest {
        return Err(format!(
            "cannot retire version {version}: the newest PAN key is v{newest}"
        ));
    }
    let hsm = std::sync::Arc::new(hsm);
    let counts = {
        let store = RedbStore::open(&cfg.storage.path, hsm.clone(), &cfg.storage.options())
            .map_err(|e| format!("[storage].path {}: {e}", cfg.storage.path.display()))?;
        store.key_versions().map_err(|e| e.to_string())?
    };
    if let Some(n) = counts.get(&version).filter(|n| **n > 0) {
        return Err(format!(
            "{n} ciphertexts still use vault.pan.v{version}: start vaultd and let it re-encrypt first"
        ));
    }
    let destroyed = vault_hsm::keys::destroy_pan_key(&hsm, version).map_err(|e| e.to_string())?;
    println!(
        "vault.pan.v{version}: {}",
        if destroyed {
            "destroyed"
        } else {
            "not present"
        }
    );
    Ok(())
}

fn keys(cfg: &Config, cmd: KeysCmd) -> Result<(), String> {
    use vault_hsm::keys;
    let hsm = daemon::open_hsm_admin(cfg).map_err(|e| e.to_string())?;
    match cmd {
        KeysCmd::Rotate => {
            let v = keys::rotate_pan_key(&hsm).map_err(|e| e.to_string())?;
            println!(
                "vault.pan.v{v}: created; new writes use it (a running vaultd within [keys].refresh_interval)"
            );
        }
        KeysCmd::RotateAudit => {
            let v = keys::rotate_audit_key(&hsm).map_err(|e| e.to_string())?;
            println!(
                "{}: created; audit seals use it (a running vaultd within [keys].refresh_interval)",
                vault_hsm::pkcs11::audit_label(v)
            );
        }
        KeysCmd::Retire { version } => return retire_offline(cfg, hsm, version),
        KeysCmd::Init => {
            for (label, created) in keys::init_keys(&hsm).map_err(|e| e.to_string())? {
                println!("{label}: {}", if created { "created" } else { "present" });
            }
        }
        KeysCmd::ImportKek { scheme, components } => {
            let paths: Vec<&Path> = components.iter().map(PathBuf::as_path).collect();
            let k = keys::import_kek(&hsm, &scheme, &paths).map_err(|e| e.to_string())?;
            for (path, kcv) in paths.iter().zip(&k.component_kcvs) {
                println!("component {}: check value {kcv}", path.display());
            }
            if k.created {
                println!(
                    "{} imported (version {}), check value {}; new token keys may be wrapped under it",
                    k.label, k.version, k.kcv
                );
            } else if k.upgraded {
                println!(
                    "{} already holds this key (version {}), check value {}; remade with an unwrap template (keys unwrapped under it stay sensitive, non-extractable)",
                    k.label, k.version, k.kcv
                );
            } else {
                println!(
                    "{} already holds this key (version {}), check value {}",
                    k.label, k.version, k.kcv
                );
            }
        }
        KeysCmd::RetireKek { scheme, version } => {
            return retire_kek_offline(cfg, hsm, &scheme, version);
        }
        KeysCmd::List => {
            for k in keys::list_keys(&hsm).map_err(|e| e.to_string())? {
                let uses: Vec<&str> = [
                    (k.encrypt, "encrypt"),
                    (k.decrypt, "decrypt"),
                    (k.sign, "sign"),
                    (k.verify, "verify"),
                    (k.wrap, "wrap"),
                    (k.unwrap, "unwrap"),
                    (k.derive, "derive"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                println!(
                    "{:<28} {:<15} {:>3} bytes  sensitive={} extractable={}  {}",
                    k.label,
                    k.key_type,
                    k.value_len.unwrap_or(0),
                    k.sensitive,
                    k.extractable,
                    uses.join(",")
                );
            }
            let hsm = std::sync::Arc::new(hsm);
            match kek_usage_offline(cfg, &hsm)? {
                None => println!(
                    "(vaultd is running: `vaultctl stats` shows how many token keys each KEK version wraps)"
                ),
                Some(usage) if usage.is_empty() => println!("no stored token keys"),
                Some(usage) => {
                    for ((scheme, version), n) in usage {
                        let what = if version == 0 {
                            format!("{scheme}: legacy nt.* objects")
                        } else {
                            vault_hsm::pkcs11::kek_version_label(&scheme, version)
                                .map_err(|e| e.to_string())?
                        };
                        println!("{what:<40} wraps {n} stored token keys");
                    }
                }
            }
        }
    }
    Ok(())
}
