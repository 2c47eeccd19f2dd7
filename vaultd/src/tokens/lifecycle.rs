//! Lifecycle notifications: follows each token service's feed from the
//! durable cursor, seals re-digitized token numbers, applies each batch in
//! one commit together with the new cursor, and destroys the HSM keys of
//! deleted tokens once that commit is durable.

use std::sync::Arc;

use vault_hsm::Hsm;

use super::Tokens;
use super::connector::Notification;
use crate::store::{Change, ChangeKind, Store};

/// Notifications asked for per poll; a full page is followed at once.
const PAGE: u32 = 500;

/// Follows one scheme's notification feed until `stop` fires.
pub async fn follow<S: Store, H: Hsm>(
    tokens: Arc<Tokens<S, H>>,
    scheme: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(connector) = tokens.connector(&scheme).cloned() else {
        return;
    };
    let interval = tokens.settings().poll_interval;
    loop {
        let more = match poll_once(&tokens, &scheme, &connector).await {
            Ok(n) => n == PAGE as usize,
            Err(e) => {
                tracing::debug!(scheme, error = %e, "notification feed not read");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn poll_once<S: Store, H: Hsm>(
    tokens: &Tokens<S, H>,
    scheme: &str,
    connector: &super::connector::Connector,
) -> Result<usize, String> {
    let cursor = tokens
        .store
        .feed_cursor(scheme)
        .map_err(|e| e.to_string())?;
    let feed = connector
        .notifications(cursor, PAGE)
        .await
        .map_err(|e| e.to_string())?;
    let n = feed.events.len();
    if n == 0 {
        return Ok(0);
    }
    let mut changes = Vec::with_capacity(n);
    for ev in feed.events {
        changes.push(prepare(tokens, ev).await?);
    }
    let deleted = tokens
        .store
        .apply_changes(scheme, changes, feed.next)
        .await
        .map_err(|e| e.to_string())?;
    for r in deleted {
        let r2 = r.clone();
        match tokens
            .hsm
            .run_background(move |h| h.destroy_token_key(&r2))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(token_ref = %r, error = %e, "could not destroy a deleted token's key")
            }
        }
    }
    tracing::debug!(scheme, applied = n, "lifecycle notifications applied");
    Ok(n)
}

/// Turns a notification into a change; a new token number is sealed for
/// its alias here, before the commit.
async fn prepare<S: Store, H: Hsm>(
    tokens: &Tokens<S, H>,
    ev: Notification,
) -> Result<Change, String> {
    let kind = match ev.event.as_str() {
        "suspend" => ChangeKind::Suspend,
        "resume" => ChangeKind::Resume,
        "delete" => ChangeKind::Delete,
        "pan_expiry" => match (ev.pan_exp_month, ev.pan_exp_year) {
            (Some(m), Some(y)) if (1..=12).contains(&m) => ChangeKind::PanExpiry {
                exp_month: m,
                exp_year: y,
            },
            _ => ChangeKind::Unknown("pan_expiry without a valid expiry".into()),
        },
        "redigitize" => {
            let exp = match (ev.exp_month, ev.exp_year) {
                (Some(m), Some(y)) if (1..=12).contains(&m) => Some((m, y)),
                _ => None,
            };
            let (mut token_ct, mut token_last4) = (None, None);
            if let Some(number) = ev.token {
                let known = tokens
                    .store
                    .token(&ev.token_ref)
                    .map_err(|e| e.to_string())?;
                if let Some(t) = known {
                    let last4 = number.last4().to_owned();
                    let alias = t.alias.clone();
                    let ct = tokens
                        .hsm
                        .run_background(move |h| {
                            h.seal(&alias, "token", number.expose().as_bytes())
                        })
                        .await
                        .and_then(|r| r)
                        .map_err(|e| e.to_string())?;
                    token_ct = Some(ct);
                    token_last4 = Some(last4);
                }
            }
            ChangeKind::Redigitize {
                token_ct,
                token_last4,
                exp,
            }
        }
        other => ChangeKind::Unknown(other.chars().take(32).collect()),
    };
    Ok(Change {
        seq: ev.seq,
        token_ref: ev.token_ref,
        kind,
    })
}
