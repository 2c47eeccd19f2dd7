//! Start-up and shutdown of the daemon: configuration → HSM → store →
//! vault → socket → serve until SIGTERM/SIGINT, then drain and close.

use std::sync::Arc;

use vault_hsm::HsmPool;
use vault_hsm::pkcs11::{HsmConfig, Pkcs11Hsm, load_pin};

use crate::config::Config;
use crate::dispatch::{ClientTable, Dispatcher};
use crate::server::{self, Limits};
use crate::store::RedbStore;
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
    Pkcs11Hsm::open(&hsm_config(cfg)?).map_err(|e| StartError(e.to_string()))
}

/// Opens the HSM for key commands: keys may be missing.
pub fn open_hsm_admin(cfg: &Config) -> Result<Pkcs11Hsm, StartError> {
    Pkcs11Hsm::open_admin(&hsm_config(cfg)?).map_err(|e| StartError(e.to_string()))
}

/// Runs the daemon until a signal stops it.
pub async fn run(cfg: Config) -> Result<(), StartError> {
    let hsm = Arc::new(open_hsm(&cfg)?);
    let store = RedbStore::open(
        &cfg.storage.path,
        hsm.clone(),
        cfg.storage.two_phase_commit,
        cfg.storage.max_batch,
    )
    .map_err(|e| {
        StartError(format!(
            "[storage].path {}: {e}",
            cfg.storage.path.display()
        ))
    })?;
    let store = Arc::new(store);
    let pool = HsmPool::new(hsm.clone(), cfg.hsm.threads);
    let vault = Arc::new(Vault::new(store.clone(), pool, Policy::from_config(&cfg)));
    let dispatcher = Arc::new(Dispatcher::new(
        vault.clone(),
        ClientTable::from_config(&cfg),
    ));
    let listener = server::bind(&cfg.server.socket).map_err(|e| {
        StartError(format!(
            "[server].socket {}: {e}",
            cfg.server.socket.display()
        ))
    })?;
    tracing::info!(socket = %cfg.server.socket.display(), "vaultd ready");

    server::run(
        listener,
        dispatcher.clone(),
        Limits::from_config(&cfg.server),
        shutdown_signal(),
    )
    .await;

    // Drop everything that holds the store so the writer drains and joins.
    drop(dispatcher);
    drop(vault);
    match Arc::try_unwrap(store) {
        Ok(s) => drop(s),
        Err(_) => tracing::warn!("store still referenced at shutdown"),
    }
    let _ = std::fs::remove_file(&cfg.server.socket);
    tracing::info!("vaultd stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
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
