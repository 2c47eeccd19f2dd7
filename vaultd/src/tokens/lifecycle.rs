//! Lifecycle notifications: follows each token service's feed from the
//! durable cursor, seals re-digitized token numbers, applies each batch in
//! one commit together with the new cursor, and destroys the HSM keys of
//! deleted tokens once that commit is durable.

use std::sync::Arc;

use tokio::sync::watch;
use vault_hsm::Hsm;

use super::Tokens;
use super::connector::{FeedEvent, Notification};
use crate::store::{Change, ChangeKind, Store};

/// Notifications asked for per poll; a full page is followed at once.
const PAGE: u32 = 500;

/// Follows one scheme's notification feed until `stop` fires.
pub async fn follow<S: Store, H: Hsm>(
    tokens: Arc<Tokens<S, H>>,
    scheme: String,
    mut stop: watch::Receiver<bool>,
) {
    let Some(connector) = tokens.connector(&scheme).cloned() else {
        return;
    };
    let interval = tokens.settings().poll_interval;
    // The failure of the last poll: each new kind of failure is a warning,
    // its repeats at every poll are not.
    let mut failing: Option<String> = None;
    loop {
        let more = match poll_once(&tokens, &scheme, &connector).await {
            Ok(n) => {
                if failing.take().is_some() {
                    tracing::info!(scheme, "notification feed read again");
                }
                n == PAGE as usize
            }
            Err(e) => {
                if failing.as_deref() == Some(e.as_str()) {
                    tracing::debug!(scheme, error = %e, "notification feed not read");
                } else {
                    tracing::warn!(scheme, error = %e, "notification feed not read");
                }
                failing = Some(e);
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
        changes.push(prepare(tokens, scheme, ev).await?);
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

/// Turns a checked notification into a change; a new token number is
/// sealed for its alias here, before the commit, if the token is this
/// scheme's (the commit ignores an event for another scheme's token).
async fn prepare<S: Store, H: Hsm>(
    tokens: &Tokens<S, H>,
    scheme: &str,
    ev: Notification,
) -> Result<Change, String> {
    // An event without a usable token_ref is `Invalid` already.
    let token_ref = ev.token_ref.unwrap_or_default();
    let kind = match ev.event {
        FeedEvent::Suspend => ChangeKind::Suspend,
        FeedEvent::Resume => ChangeKind::Resume,
        FeedEvent::Delete => ChangeKind::Delete,
        FeedEvent::PanExpiry {
            exp_month,
            exp_year,
        } => ChangeKind::PanExpiry {
            exp_month,
            exp_year,
        },
        FeedEvent::Unknown(name) => ChangeKind::Unknown(name),
        FeedEvent::Invalid(why) => ChangeKind::Invalid(why.to_owned()),
        FeedEvent::Redigitize { token, exp } => {
            let (mut token_ct, mut token_last4) = (None, None);
            if let Some(number) = token {
                let known = tokens.store.token(&token_ref).map_err(|e| e.to_string())?;
                if let Some(t) = known.filter(|t| t.scheme == scheme) {
                    // Checked digits: last4 is four ASCII digits.
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
    };
    Ok(Change {
        seq: ev.seq,
        token_ref,
        kind,
    })
}
