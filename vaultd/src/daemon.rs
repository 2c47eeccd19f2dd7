//! Start-up and shutdown of the daemon: configuration → HSM → store →
//! vault → socket → `READY=1` → serve (reloading on SIGHUP, pinging the
//! watchdog) until SIGTERM/SIGINT → `STOPPING=1`, drain and close.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use vault_hsm::HsmPool;
use vault_hsm::pkcs11::{HsmConfig, Pkcs11Hsm, load_pin};

use crate::config::Config;
use crate::dispatch::{ClientTable, Dispatcher};
use crate::server::{self, Limits};
use crate::store::RedbStore;
use crate::systemd;
use crate::vault::{Policy, Vault};

/// A start-up failure, printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

fn hsm_config(cfg: &Config) -> Result<HsmConfig, StartError> {
    let pin = load_pin(cfg.hsm.pin_file.as_deref()).map_err(|e| StartError(e.to_string()))?;
    Ok(HsmConfig {
        module: cfg.hsm.module.clone(),
        token_label: cfg.hsm.token_label.clone(),
        pin,
    })
}

/// Opens the HSM for serving: the vault's keys must exist.
pub fn open_hsm(cfg: &Config) -> Result<Pkcs11Hsm, StartError> {
    let hsm = Pkcs11Hsm::open(&hsm_config(cfg)?).map_err(|e| StartError(e.to_string()))?;
    hsm.set_key_cache(cfg.hsm.key_cache);
    hsm.set_token_key_cache(cfg.hsm.token_key_cache);
    if let Some(objects) = cfg.hsm.reinit_after_objects {
        hsm.set_reinit_after_objects(objects);
    }
    hsm.set_reinit_standby(cfg.hsm.reinit_standby);
    Ok(hsm)
}

/// Opens the HSM for key commands: keys may be missing.
pub fn open_hsm_admin(cfg: &Config) -> Result<Pkcs11Hsm, StartError> {
    Pkcs11Hsm::open_admin(&hsm_config(cfg)?).map_err(|e| StartError(e.to_string()))
}

/// The vault as the daemon serves it.
type ServingVault = Vault<RedbStore, Pkcs11Hsm>;
type ServingDispatcher = Dispatcher<RedbStore, Pkcs11Hsm>;

/// Runs the daemon until a signal stops it. `config_path` is re-read on
/// SIGHUP.
pub async fn run(cfg: Config, config_path: PathBuf) -> Result<(), StartError> {
    let hsm = Arc::new(open_hsm(&cfg)?);
    let store =
        RedbStore::open(&cfg.storage.path, hsm.clone(), &cfg.storage.options()).map_err(|e| {
            StartError(format!(
                "[storage].path {}: {e}",
                cfg.storage.path.display()
            ))
        })?;
    let store = Arc::new(store);
    let pool = HsmPool::with_background_share(
        hsm.clone(),
        cfg.hsm.threads,
        cfg.hsm.background_min_share.0,
    );
    let vault = Arc::new(Vault::new(&cfg, store.clone(), pool).map_err(StartError)?);
    start_metrics(&cfg, &vault)?;
    vault.start_retention(cfg.retention.check_interval.0);
    vault.start_key_job();
    let dispatcher = Arc::new(Dispatcher::new(
        vault.clone(),
        ClientTable::from_config(&cfg),
    ));
    let (listener, bound_here) = listen(&cfg)?;
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| StartError(format!("cannot install the SIGHUP handler: {e}")))?;
    let mut watchdog = systemd::Watchdog::from_env();

    systemd::ready("serving");
    match &watchdog {
        Some(w) => tracing::info!(
            watchdog_timeout = ?w.timeout(),
            ping_every = ?w.interval(),
            "vaultd ready"
        ),
        None => tracing::info!("vaultd ready"),
    }

    let serve = server::run(
        listener,
        dispatcher.clone(),
        Limits::from_config(&cfg.server),
        async {
            shutdown_signal().await;
            systemd::stopping();
        },
    );
    tokio::pin!(serve);
    // The main loop: serving, reloads and the watchdog. The watchdog is
    // pinged from here, and only after a probe of the vault answers, so a
    // hung loop, a hung store writer or a hung HSM pool gets us restarted.
    let mut probe: JoinSet<Liveness> = JoinSet::new();
    let mut last_status = String::from("serving");
    loop {
        tokio::select! {
            () = &mut serve => break,
            Some(()) = hangup.recv() => reload(&config_path, &dispatcher),
            () = systemd::next_tick(&mut watchdog) => {
                if probe.is_empty() {
                    probe.spawn(liveness(vault.clone()));
                } else {
                    tracing::warn!("the previous liveness probe has not answered; watchdog not pinged");
                }
            }
            Some(answered) = probe.join_next(), if !probe.is_empty() => match answered {
                Ok(l) => {
                    systemd::watchdog_ping();
                    let status = l.status();
                    if status != last_status {
                        log_health_change(&l);
                        systemd::status(&status);
                        last_status = status;
                    }
                }
                Err(e) => tracing::error!(error = %e, "liveness probe failed; watchdog not pinged"),
            },
        }
    }
    probe.shutdown().await;

    // Drop everything that holds the store so the writer drains and joins.
    drop(dispatcher);
    vault.shutdown().await;
    drop(vault);
    match Arc::try_unwrap(store) {
        Ok(s) => drop(s),
        Err(_) => tracing::warn!("store still referenced at shutdown"),
    }
    // An activated socket belongs to systemd: it keeps listening (and
    // queueing clients) while we restart.
    if bound_here {
        let _ = std::fs::remove_file(&cfg.server.socket);
    }
    tracing::info!("vaultd stopped");
    Ok(())
}

/// Starts the metrics endpoint when `[metrics] listen` is set. A port or
/// path that cannot be bound stops the start, as the main socket does.
fn start_metrics(cfg: &Config, vault: &Arc<ServingVault>) -> Result<(), StartError> {
    let Some(listen) = cfg
        .metrics
        .listen()
        .map_err(|e| StartError(e.to_string()))?
    else {
        return Ok(());
    };
    let handle = crate::metrics::install().map_err(StartError)?;
    let weak = Arc::downgrade(vault);
    let snapshot: crate::metrics::Snapshot = Arc::new(move || {
        let vault = weak.upgrade().ok_or("the vault is shutting down")?;
        vault.stats().map_err(|e| e.to_string())
    });
    let bound = crate::metrics::bind(&listen)
        .map_err(|e| StartError(format!("[metrics].listen {listen:?}: {e}")))?;
    tracing::info!(listen = ?listen, "metrics endpoint listening");
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(bound, handle, snapshot).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

/// The listening socket: the one systemd passed, or our own bound at
/// `[server].socket`. The flag says whether we bound it (and so remove it).
fn listen(cfg: &Config) -> Result<(UnixListener, bool), StartError> {
    if let Some(l) = systemd::activated_listener().map_err(|e| StartError(e.to_string()))? {
        let passed = l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf));
        match &passed {
            Some(p) if p == &cfg.server.socket => {
                tracing::info!(socket = %p.display(), "serving the socket systemd passed")
            }
            Some(p) => tracing::warn!(
                socket = %p.display(),
                configured = %cfg.server.socket.display(),
                "serving the socket systemd passed, which is not [server].socket: clients using the configured path will not reach this daemon"
            ),
            None => tracing::info!("serving the (unnamed) socket systemd passed"),
        }
        return Ok((l, false));
    }
    let l = server::bind(&cfg.server.socket).map_err(|e| {
        StartError(format!(
            "[server].socket {}: {e}",
            cfg.server.socket.display()
        ))
    })?;
    tracing::info!(socket = %cfg.server.socket.display(), "listening");
    Ok((l, true))
}

/// SIGHUP: re-read the configuration and swap in its tenants and clients.
/// An invalid file changes nothing. Connections stay open: the client table
/// is read per request. Other sections need a restart.
fn reload(path: &Path, dispatcher: &ServingDispatcher) {
    systemd::reloading();
    match Config::load(path) {
        Ok(new) => {
            // Policy first: a new client's new tenant must exist before the
            // client can make requests for it. The schemes stay: their token
            // service connections are made at start-up.
            let mut policy = Policy::from_config(&new);
            policy.schemes = dispatcher.vault.policy().schemes.clone();
            dispatcher.vault.set_policy(policy);
            dispatcher.set_clients(ClientTable::from_config(&new));
            tracing::info!(
                clients = new.clients.len(),
                tenants = new.tenants.len(),
                "configuration reloaded: clients and tenants are live; other sections apply at the next restart"
            );
            systemd::ready("serving; configuration reloaded");
        }
        Err(e) => {
            tracing::warn!(
                config = %path.display(),
                error = %e,
                "configuration reload refused; keeping the running clients and tenants"
            );
            systemd::ready("serving; last reload refused (see the log)");
        }
    }
}

/// What one watchdog probe saw. That it answered at all is what the
/// watchdog needs; the answers themselves feed `STATUS=` and the log.
struct Liveness {
    hsm: String,
    store: String,
    writer: Result<(), String>,
}

impl Liveness {
    fn status(&self) -> String {
        if self.hsm == "ok" && self.store == "ok" && self.writer.is_ok() {
            "serving".into()
        } else {
            "serving, degraded (see the log)".into()
        }
    }
}

fn log_health_change(l: &Liveness) {
    match &l.writer {
        Ok(()) if l.hsm == "ok" && l.store == "ok" => tracing::info!("HSM and store healthy again"),
        writer => tracing::warn!(
            hsm = %l.hsm,
            store = %l.store,
            writer = writer.as_ref().err().map(String::as_str).unwrap_or("ok"),
            "degraded"
        ),
    }
}

/// Runs an HSM session check on the HSM pool, a store read, and an empty
/// group commit through the store writer: each must come back for the
/// watchdog to be pinged. Failures that answer (an HSM that refuses, a full
/// disk) do not stop the ping: a restart would not fix them.
async fn liveness(vault: Arc<ServingVault>) -> Liveness {
    let health = vault.health().await;
    let writer = vault
        .store
        .writer()
        .write(|_| Ok(()))
        .await
        .map_err(|e| e.to_string());
    Liveness {
        hsm: health.hsm,
        store: health.store,
        writer,
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
