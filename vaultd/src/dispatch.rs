//! Request → authorization (role, tenant) → the vault → response. Every
//! refusal and every state change is audited; nothing here knows sockets.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use vault_hsm::Hsm;
use vault_proto::frame::{self, RequestHead};
use vault_proto::ops::{self, op};
use vault_proto::{ErrorCode, WireError};

use crate::config::{Config, Role};
use crate::store::Store;
use crate::vault::{Caller, Vault, VaultError};

/// The peer of a connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// A configured client.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub name: String,
    pub roles: Vec<Role>,
    pub tenant: Option<String>,
    /// Tenants a forwarder may serve; `None` means every tenant.
    pub tenants: Option<Vec<String>>,
    pub pan_credentials_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    by_uid: HashMap<u32, Arc<ClientEntry>>,
}

impl ClientTable {
    pub fn from_config(cfg: &Config) -> ClientTable {
        ClientTable {
            by_uid: cfg
                .clients
                .iter()
                .map(|c| {
                    let tenants = if c.tenants.iter().any(|t| t == "*") {
                        None
                    } else {
                        Some(c.tenants.clone())
                    };
                    (
                        c.uid,
                        Arc::new(ClientEntry {
                            name: c.name.clone(),
                            roles: c.roles.clone(),
                            tenant: c.tenant.clone(),
                            tenants,
                            pan_credentials_per_minute: c.pan_credentials_per_minute,
                        }),
                    )
                })
                .collect(),
        }
    }

    pub fn get(&self, uid: u32) -> Option<Arc<ClientEntry>> {
        self.by_uid.get(&uid).cloned()
    }
}

/// Which roles may call an op; `None` for ops nobody has (unknown).
fn allowed_roles(op_name: &str) -> Option<&'static [Role]> {
    use Role::*;
    Some(match op_name {
        op::HEALTH => &[Collector, Merchant, Forwarder, Admin],
        op::TOKENIZE => &[Collector, Merchant],
        op::TRANSACTION_TOKENS
        | op::ALIAS_STATUS
        | op::REMOVE_PAN
        | op::DELETE_ALIAS
        | op::PROVISION => &[Merchant],
        op::CREDENTIALS => &[Forwarder],
        op::STATS
        | op::QUEUE_LIST
        | op::QUEUE_RETRY
        | op::SCHEME_PAUSE
        | op::SCHEME_RESUME
        | op::RETENTION
        | op::PURGE_DUE
        | op::EVENTS
        | op::AUDIT
        | op::KEY_ROTATE
        | op::KEY_RETIRE
        | op::KEK_REFRESH
        | op::BACKUP => &[Admin],
        _ => return None,
    })
}

pub struct Dispatcher<S: Store, H: Hsm> {
    pub vault: Arc<Vault<S, H>>,
    clients: RwLock<Arc<ClientTable>>,
}

impl<S: Store, H: Hsm> Dispatcher<S, H> {
    pub fn new(vault: Arc<Vault<S, H>>, clients: ClientTable) -> Self {
        Dispatcher {
            vault,
            clients: RwLock::new(Arc::new(clients)),
        }
    }

    pub fn clients(&self) -> Arc<ClientTable> {
        self.clients
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_clients(&self, t: ClientTable) {
        match self.clients.write() {
            Ok(mut g) => *g = Arc::new(t),
            Err(p) => *p.into_inner() = Arc::new(t),
        }
    }

    /// Answers one request body with one framed response.
    pub async fn handle(&self, peer: Peer, body: &[u8]) -> Vec<u8> {
        let client = self.clients().get(peer.uid);
        let caller = |c: &ClientEntry| Caller {
            client: c.name.clone(),
            uid: peer.uid,
            pid: peer.pid,
            tenant: c.tenant.clone(),
            tenants: c.tenants.clone(),
            pan_per_minute: c.pan_credentials_per_minute,
        };
        let unknown = || Caller {
            client: "(unknown)".into(),
            uid: peer.uid,
            pid: peer.pid,
            tenant: None,
            tenants: Some(Vec::new()),
            pan_per_minute: None,
        };
        let not_a_client = || {
            WireError::new(
                ErrorCode::Unauthenticated,
                "this uid is not a configured client",
            )
        };
        let head = match frame::decode_request(body) {
            Ok(h) => h,
            Err(e) => {
                // An unknown uid gets `unauthenticated` for every request
                // (PROTOCOL.md), a malformed one too.
                let (who, error) = match client.as_deref() {
                    Some(c) => (caller(c), e.error),
                    None => (unknown(), not_a_client()),
                };
                self.refused(&who, "(malformed)", None, &error).await;
                return frame::encode_err(e.id, &error);
            }
        };
        let Some(client) = client else {
            let e = not_a_client();
            self.refused(&unknown(), head.op, None, &e).await;
            return frame::encode_err(Some(head.id), &e);
        };
        let who = caller(&client);
        let outcome = self.route(&client, &who, head).await;
        match outcome {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = e.into_wire();
                self.refused(&who, head.op, alias_arg(head), &e).await;
                frame::encode_err(Some(head.id), &e)
            }
        }
    }

    async fn refused(&self, who: &Caller, op_name: &str, alias: Option<String>, e: &WireError) {
        let op_name = if allowed_roles(op_name).is_some() {
            op_name
        } else {
            "(unknown op)"
        };
        let rec = who.audit(op_name, alias, e.code.as_str());
        if let Err(err) = self.vault.store.audit(rec).await {
            tracing::error!(error = %err, "could not audit a refusal");
        }
        tracing::info!(client = %who.client, uid = who.uid, op = op_name, code = %e.code, "refused");
    }

    async fn route(
        &self,
        client: &ClientEntry,
        who: &Caller,
        head: RequestHead<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let Some(roles) = allowed_roles(head.op) else {
            return Err(VaultError::refuse(ErrorCode::UnknownOp, "no such op"));
        };
        if !client.roles.iter().any(|r| roles.contains(r)) {
            return Err(VaultError::refuse(
                ErrorCode::Forbidden,
                format!("op {} is not allowed for this client's roles", head.op),
            ));
        }
        let v = &self.vault;
        let id = Some(head.id);
        let args = head.args;
        let ok = |r: &dyn ErasedSerialize| r.encode(id);
        let bytes = match head.op {
            op::HEALTH => {
                let _: ops::NoArgs = decode(args)?;
                ok(&v.health().await)
            }
            op::TOKENIZE => {
                let a: ops::TokenizeArgs = decode(args)?;
                ok(&v.tokenize(who, a).await?)
            }
            op::ALIAS_STATUS => {
                let a: ops::AliasArgs = decode(args)?;
                ok(&v.alias_status(who, &a.alias)?)
            }
            op::TRANSACTION_TOKENS => {
                let a: ops::TransactionArgs = decode(args)?;
                ok(&v.transaction_tokens(who, &a.transaction_id)?)
            }
            op::DELETE_ALIAS => {
                let a: ops::AliasArgs = decode(args)?;
                v.delete_alias(who, &a.alias).await?;
                ok(&ops::DeleteResult { deleted: true })
            }
            op::REMOVE_PAN => {
                let a: ops::AliasArgs = decode(args)?;
                ok(&v.remove_pan(who, &a.alias).await?)
            }
            op::STATS => {
                let _: ops::NoArgs = decode(args)?;
                ok(&v.stats()?)
            }
            op::AUDIT => {
                let a: ops::PageArgs = decode(args)?;
                let page = v.audit_page(a.after, a.limit).await?;
                v.store.audit(who.audit(op::AUDIT, None, "ok")).await?;
                ok(&page)
            }
            op::PROVISION => {
                let a: ops::AliasArgs = decode(args)?;
                ok(&v.provision(who, &a.alias).await?)
            }
            op::CREDENTIALS => {
                let a: ops::CredentialsArgs = decode(args)?;
                ok(&v.credentials(who, a).await?)
            }
            op::QUEUE_LIST => {
                let a: ops::QueueListArgs = decode(args)?;
                ok(&v.queue_list(a)?)
            }
            op::QUEUE_RETRY => {
                let a: ops::JobArgs = decode(args)?;
                ok(&v.queue_retry(who, &a.job_id).await?)
            }
            op::SCHEME_PAUSE | op::SCHEME_RESUME => {
                let a: ops::SchemeArgs = decode(args)?;
                ok(&v
                    .scheme_pause(who, &a.scheme, head.op == op::SCHEME_PAUSE)
                    .await?)
            }
            op::EVENTS => {
                let a: ops::PageArgs = decode(args)?;
                ok(&v.events(a.after, a.limit)?)
            }
            op::RETENTION => {
                let _: ops::NoArgs = decode(args)?;
                ok(&v.retention()?)
            }
            op::PURGE_DUE => {
                let a: ops::PurgeArgs = decode(args)?;
                ok(&v.purge_due(who, a.tenant).await?)
            }
            op::KEY_ROTATE => {
                let a: ops::KeyRotateArgs = decode(args)?;
                ok(&v.key_rotate(who, a.key).await?)
            }
            op::KEY_RETIRE => {
                let a: ops::KeyRetireArgs = decode(args)?;
                ok(&v.key_retire(who, a.version).await?)
            }
            op::BACKUP => {
                let a: ops::BackupArgs = decode(args)?;
                ok(&v.backup(who, a.path).await?)
            }
            op::KEK_REFRESH => {
                let a: ops::KekRefreshArgs = decode(args)?;
                ok(&v.kek_refresh(who, a.scheme, a.version).await?)
            }
            other => {
                return Err(VaultError::refuse(
                    ErrorCode::UnknownOp,
                    format!("op {other} is not served"),
                ));
            }
        };
        bytes.map_err(VaultError::Refused)
    }
}

/// The alias named in a request's args, for the audit record of a refusal.
fn alias_arg(head: RequestHead<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyAlias {
        alias: Option<String>,
    }
    let raw = head.args?;
    let a: OnlyAlias = rmp_serde::from_slice(raw).ok()?;
    a.alias.filter(|a| crate::vault::cards::valid_alias(a))
}

fn decode<T: serde::de::DeserializeOwned>(args: Option<&[u8]>) -> Result<T, VaultError> {
    frame::decode_args(args).map_err(VaultError::Refused)
}

/// Lets `route` encode any result type through one closure.
trait ErasedSerialize {
    fn encode(&self, id: Option<u64>) -> Result<Vec<u8>, WireError>;
}

impl<T: Serialize> ErasedSerialize for T {
    fn encode(&self, id: Option<u64>) -> Result<Vec<u8>, WireError> {
        frame::encode_ok(id, self)
    }
}
