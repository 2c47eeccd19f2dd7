//! Injected faults for the token service API: a latency on every call, then
//! a random share of calls failing with 503 or held and timed out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;

use crate::error::ApiError;
use crate::scheme::Scheme;
use crate::state::Sim;

/// How long a `timeout` fault holds the request before answering 504.
const TIMEOUT_HOLD: Duration = Duration::from_secs(30);
/// Upper bound on `latency_ms`, so a typo can't park requests for hours.
const MAX_LATENCY_MS: u64 = 120_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    #[serde(rename = "http_503")]
    Http503,
    Timeout,
}

fn http_503() -> FaultKind {
    FaultKind::Http503
}

/// Body of `POST /sim/faults`; also a setting in force.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct FaultSetting {
    /// `None`: every scheme.
    pub scheme: Option<Scheme>,
    pub fail_rate: f64,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default = "http_503")]
    pub kind: FaultKind,
    #[serde(default)]
    pub retry_after_s: Option<u32>,
}

impl FaultSetting {
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(ApiError::BadRequest(
                "fail_rate must be between 0.0 and 1.0".into(),
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(ApiError::BadRequest(format!(
                "latency_ms must be at most {MAX_LATENCY_MS}"
            )));
        }
        Ok(())
    }
}

/// The settings in force; none by default. A setting for every scheme
/// (`scheme: null`) replaces all others; a setting for one scheme replaces
/// only that scheme's own, and wins over the one for every scheme. A
/// setting of no latency and no failures clears what it replaces.
#[derive(Default)]
pub struct Faults(RwLock<Settings>);

#[derive(Default)]
struct Settings {
    all: Option<FaultSetting>,
    by_scheme: HashMap<Scheme, FaultSetting>,
}

impl Faults {
    /// Puts `setting` in force (see [`Faults`]).
    pub fn set(&self, setting: FaultSetting) {
        let off = setting.fail_rate == 0.0 && setting.latency_ms == 0;
        let mut s = self.0.write().unwrap_or_else(|p| p.into_inner());
        match setting.scheme {
            None => {
                s.by_scheme.clear();
                s.all = (!off).then_some(setting);
            }
            Some(scheme) => {
                // Clearing one scheme under a setting for every scheme
                // keeps it clear (an explicit "off").
                if off && s.all.is_none() {
                    s.by_scheme.remove(&scheme);
                } else {
                    s.by_scheme.insert(scheme, setting);
                }
            }
        }
    }

    fn current(&self, scheme: Scheme) -> Option<FaultSetting> {
        let s = self.0.read().unwrap_or_else(|p| p.into_inner());
        s.by_scheme.get(&scheme).copied().or(s.all)
    }

    /// Applies the setting to one call: sleeps the latency, then maybe
    /// fails. The lock is released before any sleep.
    pub async fn apply(&self, scheme: Scheme) -> Result<(), ApiError> {
        let Some(setting) = self.current(scheme) else {
            return Ok(());
        };
        if setting.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(setting.latency_ms)).await;
        }
        if !rand::rng().random_bool(setting.fail_rate) {
            return Ok(());
        }
        match setting.kind {
            FaultKind::Http503 => Err(ApiError::Unavailable {
                retry_after_s: setting.retry_after_s,
            }),
            FaultKind::Timeout => {
                tokio::time::sleep(TIMEOUT_HOLD).await;
                Err(ApiError::Timeout)
            }
        }
    }
}

/// Middleware on every `/tsp/{scheme}/v1/...` route: refuses an unknown
/// scheme, then applies the faults, before the handler (and so before any
/// idempotency handling) runs.
pub async fn layer(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    // Routes are /tsp/{scheme}/v1/..., so the scheme is the third segment.
    let scheme = req
        .uri()
        .path()
        .split('/')
        .nth(2)
        .and_then(|s| s.parse::<Scheme>().ok());
    let Some(scheme) = scheme else {
        return ApiError::NotFound.into_response();
    };
    match sim.faults.apply(scheme).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
