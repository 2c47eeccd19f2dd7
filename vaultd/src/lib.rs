//! vaultd: the card vault daemon. Merchants' PANs go in over a Unix socket,
//! opaque aliases come out; the keys stay in a PKCS#11 HSM and the records
//! in redb.
//!
//! Layout (DESIGN.md "Parts"): [`server`] is the socket front door,
//! [`dispatch`] authorizes and routes, [`vault`] is the domain over the
//! [`store::Store`] and [`vault_hsm::Hsm`] traits, [`store`] is redb with
//! its group-commit writer, [`config`] reads the TOML.

pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod store;
pub mod systemd;
pub mod tokens;
pub mod vault;
