//! scheme-sim: the token services of visa, mastercard, amex and discover and
//! the authorization network, in one in-memory HTTP server for vaultd's
//! tests and demos (DESIGN.md "scheme-sim").
//!
//! [`cryptogram::compute`] is also the independent software reference for
//! the payment cryptogram the vault computes in its HSM.

pub mod cryptogram;
pub mod date;
pub mod kek;
pub mod scheme;

mod control;
mod error;
mod faults;
mod hostile;
mod network;
mod state;
mod tsp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use error::ApiError;
pub use hostile::{NumberVariant, spoil_number};
pub use kek::{KekError, Keks};
pub use scheme::Scheme;
pub use state::Sim;

/// How long in-flight requests (a held `timeout` fault, a long latency) may
/// take to finish after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Every route of the simulator.
pub fn router(sim: Arc<Sim>) -> Router {
    let tsp = Router::new()
        .route("/tsp/{scheme}/v1/provision", post(tsp::provision_handler))
        .route(
            "/tsp/{scheme}/v1/tokens/{token_ref}/delete",
            post(|s, p| tsp::action_handler(tsp::Action::Delete, s, p)),
        )
        .route(
            "/tsp/{scheme}/v1/tokens/{token_ref}/suspend",
            post(|s, p| tsp::action_handler(tsp::Action::Suspend, s, p)),
        )
        .route(
            "/tsp/{scheme}/v1/tokens/{token_ref}/resume",
            post(|s, p| tsp::action_handler(tsp::Action::Resume, s, p)),
        )
        .route(
            "/tsp/{scheme}/v1/tokens/{token_ref}/key",
            post(tsp::key_handler),
        )
        .route(
            "/tsp/{scheme}/v1/notifications",
            get(tsp::notifications_handler),
        )
        // route_layer: faults apply to matched token service routes only.
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::layer,
        ))
        // Outside the faults: a hostile answer is given whatever they say.
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            hostile::layer,
        ));
    Router::new()
        .merge(tsp)
        .route("/v1/authorize", post(network::authorize_handler))
        .route("/sim/issuers", post(control::issuers_handler))
        .route("/sim/faults", post(control::faults_handler))
        .route("/sim/tokens/{token_ref}", get(control::token_handler))
        .route(
            "/sim/tokens/{token_ref}/events",
            post(control::event_handler),
        )
        .route("/sim/stats", get(control::stats_handler))
        .route(
            "/sim/hostile",
            post(hostile::hostile_handler).get(hostile::hostile_view),
        )
        .route(
            "/sim/redirect_sink",
            axum::routing::any(hostile::redirect_sink),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(sim)
        .layer(axum::middleware::from_fn(read_body_first))
}

/// Reads every request body before anything answers. A body left unread
/// (a handler that takes none, a fault or a 404 answered early) makes the
/// server drop the connection, which a pooling client then finds closed.
async fn read_body_first(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Err(_) => {
            ApiError::BadRequest("request body too large or unreadable".into()).into_response()
        }
    }
}

/// Serves the simulator on `listener` until `shutdown` completes, then lets
/// in-flight requests finish for a short grace period.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        // The receiver only goes away when serve returns; nothing to do then.
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, router(sim)).with_graceful_shutdown(signal);
    let grace = async move {
        // Err means the sender dropped without a signal: wait forever.
        if stop_rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r,
        () = grace => {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    }
}
