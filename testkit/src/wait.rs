//! Waiting for a state, never for a span of time.
//!
//! The end-to-end tests start several real daemons at once on a machine
//! that may have two busy cores, so no test waits for a span of time: it
//! waits for the state it needs, and the only time limit is a ceiling that
//! ends a hung test. Where the property is itself about time (an event
//! shows within two poll intervals), the wait measures it and
//! [`assert_took`] checks it with a wide margin.

use std::time::{Duration, Instant};

/// The ceiling of a wait for something the daemon does on its own: only
/// a hung test reaches it, on any machine.
pub const CEILING: Duration = Duration::from_secs(60);

/// The ceiling of a wait for something the daemon does every `interval`
/// (a poll, a refresh, a seal): 30 intervals, and never under 30 s.
pub fn ceiling_for(interval: Duration) -> Duration {
    (interval * 30).max(Duration::from_secs(30))
}

/// The machine's load, for messages about measured time:
/// `load average 1.52 0.98 0.40 on 2 cores`.
pub fn machine_load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {avg} on {cores} cores")
}

/// One wait: how long it has run and how long to pause before the next
/// look (10 ms at first, growing to 200 ms so a slow check, like a
/// `vaultd keys list`, does not load the machine it waits on).
struct Waiter {
    started: Instant,
    ceiling: Duration,
    looks: u32,
}

impl Waiter {
    fn new(ceiling: Duration) -> Waiter {
        Waiter {
            started: Instant::now(),
            ceiling,
            looks: 0,
        }
    }

    /// The pause before the next look; panics once the ceiling is passed.
    fn pause(&mut self, what: &dyn std::fmt::Display, last: &str) -> Duration {
        let waited = self.started.elapsed();
        if waited > self.ceiling {
            panic!(
                "gave up waiting for {what} after {waited:?}{last} (the ceiling, {:?}, only \
                 ends a hung test; {})",
                self.ceiling,
                machine_load()
            );
        }
        self.looks += 1;
        Duration::from_millis(10 << self.looks.min(5)).min(Duration::from_millis(200))
    }
}

/// Polls `poll` until it returns `Ok`; `Err` carries what it saw instead
/// (if anything), quoted if the ceiling is reached. Returns the value and
/// how long the wait took.
pub fn wait_for_state<T>(
    ceiling: Duration,
    what: impl std::fmt::Display,
    mut poll: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let mut w = Waiter::new(ceiling);
    loop {
        match poll() {
            Ok(v) => return (v, w.started.elapsed()),
            Err(seen) if seen.is_empty() => std::thread::sleep(w.pause(&what, "")),
            Err(seen) => std::thread::sleep(w.pause(&what, &format!("; last seen: {seen}"))),
        }
    }
}

/// Polls `check` until it holds; returns how long that took. Panics with
/// `what`, the time waited and the machine load after `ceiling`.
pub fn wait_for(
    ceiling: Duration,
    what: impl std::fmt::Display,
    mut check: impl FnMut() -> bool,
) -> Duration {
    wait_for_state(ceiling, what, || {
        check().then_some(()).ok_or_else(String::new)
    })
    .1
}

/// Polls `check` until it returns `Some`, and returns that.
pub fn wait_for_some<T>(
    ceiling: Duration,
    what: impl std::fmt::Display,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_for_state(ceiling, what, || check().ok_or_else(String::new)).0
}

/// [`wait_for`] for async tests: pauses without blocking the runtime.
pub async fn wait_for_async(
    ceiling: Duration,
    what: impl std::fmt::Display,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let mut w = Waiter::new(ceiling);
    while !check() {
        tokio::time::sleep(w.pause(&what, "")).await;
    }
    w.started.elapsed()
}

/// Asserts a measured time where the time is the property, with a bound
/// at least 10 times what the property needs on an idle machine; the
/// message names the measured time and the machine load.
pub fn assert_took(took: Duration, bound: Duration, what: impl std::fmt::Display) {
    assert!(
        took <= bound,
        "{what} took {took:?}, more than {bound:?} (10 times what it needs on an idle \
         machine; {})",
        machine_load()
    );
}
