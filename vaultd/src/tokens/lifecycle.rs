//! Lifecycle notifications: follows each token service's feed (not built yet).

use std::sync::Arc;

use vault_hsm::Hsm;

use super::Tokens;
use crate::store::Store;

/// Follows one scheme's notification feed until `stop` fires.
pub async fn follow<S: Store, H: Hsm>(
    _tokens: Arc<Tokens<S, H>>,
    _scheme: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stop.changed().await;
}
