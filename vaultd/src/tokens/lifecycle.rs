//! Lifecycle notifications: follows each token service's feed from the
//! durable cursor, seals re-digitized token numbers, applies each batch in
//! one commit together with the new cursor, and destroys the HSM keys of
//! deleted tokens once that commit is durable.
//!
//! The follower is supervised: a panic (a bug) is logged without its
//! message and the follower starts again, so a feed is never left unread
//! until the next restart.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    stop: watch::Receiver<bool>,
) {
    let pause = tokens.settings().poll_interval;
    let name = scheme.clone();
    let inner_stop = stop.clone();
    restart_on_panic(&name, pause, stop, move || {
        follow_feed(tokens.clone(), scheme.clone(), inner_stop.clone())
    })
    .await;
}

/// Aborts its task when dropped, so a supervisor that is itself aborted
/// leaves nothing running behind it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `start` makes until it returns. After a panic, logs that
/// it happened (not its message, which can carry anything the task held)
/// and starts a new one after `pause`, unless `stop` fired meanwhile.
async fn restart_on_panic<F, Fut>(
    scheme: &str,
    pause: Duration,
    mut stop: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let mut task = AbortOnDrop(tokio::spawn(start()));
        match (&mut task.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!(
                    scheme,
                    "the notification feed follower panicked; it starts again"
                );
            }
            Err(_) => return,
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn follow_feed<S: Store, H: Hsm>(
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_follower_that_panics_starts_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let (_stop_tx, stop) = watch::channel(false);
        let counter = runs.clone();
        let supervised = restart_on_panic("visa", Duration::from_millis(10), stop, move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug in the follower");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), supervised)
            .await
            .expect("the supervisor returns once its task does");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, two restarts");
    }

    #[tokio::test]
    async fn stop_ends_the_supervision_of_a_panicking_follower() {
        let (stop_tx, stop) = watch::channel(false);
        let supervised = restart_on_panic("visa", Duration::from_secs(3600), stop, || async {
            panic!("a bug in the follower");
        });
        let waiter = tokio::spawn(supervised);
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("stop ends the pause before a restart")
            .unwrap();
    }
}
