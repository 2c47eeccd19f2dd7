//! [`HsmPool`]: a few named std threads that run HSM calls for async code.
//! HSM calls block, so they never run on a tokio worker; each pool thread
//! keeps its own logged-in session (the `Hsm` implementation's thread-local).
//!
//! Two queues feed the threads. Requests a client waits for (tokenize,
//! credentials, ...) go to the foreground queue, which is always served
//! first. Work no client waits for goes to the background queue,
//! [`HsmPool::run_background`]: the provisioning worker's calls (open the
//! PAN, unwrap a token key into the token, seal the token number), lifecycle
//! changes, token-key destruction, re-encryption after a key rotation. They
//! run one at a time, when no foreground call is waiting, or when the last
//! background call started the pool's minimum share ago or more (so a
//! saturated pool still provisions a trickle rather than nothing; 10 ms,
//! [`BACKGROUND_MIN_SHARE`], unless [`HsmPool::with_background_share`] says
//! otherwise). A
//! token-key unwrap holds SoftHSM2's token for 0.5–1 ms and the process-wide
//! token-object lock; without the split, two of them could occupy both pool
//! threads while tokenize calls queue behind.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use vault_proto::ops::HsmStats;

use crate::pkcs11::locks::lock;
use crate::{Hsm, HsmError};

type Job<H> = Box<dyn FnOnce(&H) + Send + 'static>;

/// While foreground calls keep the pool busy, a background call still starts
/// once this long after the last one started: a floor of ~100 background
/// calls a second, at most one at a time. The default of
/// [`HsmPool::new`] (vaultd's `[hsm] background_min_share`).
pub const BACKGROUND_MIN_SHARE: Duration = Duration::from_millis(10);

/// How long [`BackgroundHold::hold`] waits at most for the background job
/// that is running to end.
const HOLD_WAIT: Duration = Duration::from_secs(2);

/// Lets the HSM layer stop a pool's background work for a while: SoftHSM2's
/// standby copy must see no token-object change while it loads, and token
/// objects are created and destroyed only by background work (and by the
/// rare admin call). Attached by [`HsmPool::new`] through
/// [`Hsm::attach_background_hold`].
pub trait BackgroundHold: Send + Sync {
    /// Starts no more background jobs, and waits (a bounded time) for the
    /// one running to end.
    fn hold(&self);
    /// Starts background jobs again.
    fn release(&self);
}

/// N threads named `hsm-<i>` taking closures from two queues. Dropping the
/// pool closes the queues, lets queued jobs finish and joins the threads.
pub struct HsmPool<H: Hsm> {
    hsm: Arc<H>,
    queue: Arc<Queue<H>>,
    threads: Vec<JoinHandle<()>>,
}

struct Queue<H> {
    state: Mutex<State<H>>,
    ready: Condvar,
}

struct State<H> {
    foreground: VecDeque<Job<H>>,
    background: VecDeque<Job<H>>,
    /// A background job is running (they run one at a time).
    background_running: bool,
    /// When the last background job started.
    background_started: Option<Instant>,
    /// A background job is due this long after the last one started, even
    /// while foreground jobs wait.
    min_share: Duration,
    /// Background jobs are held ([`BackgroundHold`]).
    held: bool,
    background_done: u64,
    closed: bool,
}

/// Which of the pool's queues a call goes to (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// A client waits for it: served first.
    Foreground,
    /// Queued work no client waits for: one at a time, when no foreground
    /// call waits (or its share is due).
    Background,
}

impl<H> State<H> {
    fn empty(min_share: Duration) -> Self {
        State {
            min_share,
            foreground: VecDeque::new(),
            background: VecDeque::new(),
            background_running: false,
            background_started: None,
            held: false,
            background_done: 0,
            closed: false,
        }
    }

    /// The next job for a free thread, by the rules of the module doc.
    fn take(&mut self, now: Instant) -> Option<(Lane, Job<H>)> {
        let background_due = !self.held
            && !self.background_running
            && !self.background.is_empty()
            && (self.foreground.is_empty()
                || self
                    .background_started
                    .is_none_or(|t| now.duration_since(t) >= self.min_share));
        if background_due {
            self.background_running = true;
            self.background_started = Some(now);
            return self.background.pop_front().map(|j| (Lane::Background, j));
        }
        self.foreground.pop_front().map(|j| (Lane::Foreground, j))
    }
}

impl<H: Hsm> HsmPool<H> {
    /// Starts `threads` workers (at least one).
    ///
    /// # Panics
    /// If the OS refuses to start a thread (start-up only).
    pub fn new(hsm: Arc<H>, threads: usize) -> Self {
        Self::with_background_share(hsm, threads, BACKGROUND_MIN_SHARE)
    }

    /// Like [`HsmPool::new`], with background work's minimum share: while
    /// client calls keep every thread busy, a background call starts once
    /// `min_share` after the last one started (zero: whenever a thread is
    /// free and none runs, as if it were a client call).
    ///
    /// # Panics
    /// If the OS refuses to start a thread (start-up only).
    pub fn with_background_share(hsm: Arc<H>, threads: usize, min_share: Duration) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::empty(min_share)),
            ready: Condvar::new(),
        });
        let hold: Weak<dyn BackgroundHold> = Arc::<Queue<H>>::downgrade(&queue);
        hsm.attach_background_hold(hold);
        let threads = (0..threads.max(1))
            .map(|i| {
                let hsm = Arc::clone(&hsm);
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("hsm-{i}"))
                    .spawn(move || worker(&*hsm, &queue))
                    .expect("start HSM pool thread")
            })
            .collect();
        HsmPool {
            hsm,
            queue,
            threads,
        }
    }

    /// Runs `f` on a pool thread, ahead of any background work, and returns
    /// its result. Fails only when the pool is shut down (or `f` panicked).
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&H) -> R + Send + 'static,
    ) -> Result<R, HsmError> {
        self.run_in(Lane::Foreground, f).await
    }

    /// Runs `f` on a pool thread when no foreground call is waiting (see the
    /// module doc): for work no client is waiting for.
    pub async fn run_background<R: Send + 'static>(
        &self,
        f: impl FnOnce(&H) -> R + Send + 'static,
    ) -> Result<R, HsmError> {
        self.run_in(Lane::Background, f).await
    }

    /// Runs `f` on a pool thread from `lane`'s queue.
    pub async fn run_in<R: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce(&H) -> R + Send + 'static,
    ) -> Result<R, HsmError> {
        let (reply, answer) = oneshot::channel();
        let job: Job<H> = Box::new(move |hsm| {
            // The caller may have given up (request cancelled): ignore.
            let _ = reply.send(f(hsm));
        });
        {
            let mut state = lock(&self.queue.state);
            if state.closed {
                return Err(shut_down());
            }
            match lane {
                Lane::Foreground => state.foreground.push_back(job),
                Lane::Background => state.background.push_back(job),
            }
        }
        self.queue.ready.notify_one();
        answer.await.map_err(|_| shut_down())
    }

    /// The HSM the pool runs against (for blocking callers such as the store's
    /// writer thread).
    pub fn hsm(&self) -> &Arc<H> {
        &self.hsm
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Background jobs finished since start.
    pub fn background_done(&self) -> u64 {
        lock(&self.queue.state).background_done
    }

    /// The HSM's upkeep figures ([`Hsm::stats`]) with this pool's
    /// background queue: waiting now, and done since start.
    pub fn stats(&self) -> Option<HsmStats> {
        let stats = self.hsm.stats()?;
        let state = lock(&self.queue.state);
        Some(HsmStats {
            background_queued: state.background.len() as u64,
            background_done: state.background_done,
            ..stats
        })
    }
}

impl<H: Hsm> Drop for HsmPool<H> {
    fn drop(&mut self) {
        lock(&self.queue.state).closed = true;
        self.queue.ready.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn worker<H: Hsm>(hsm: &H, queue: &Queue<H>) {
    let mut state = lock(&queue.state);
    loop {
        let now = Instant::now();
        if let Some((lane, job)) = state.take(now) {
            drop(state);
            // A panicking job must not take the thread down; its caller sees
            // the dropped reply as an error.
            if catch_unwind(AssertUnwindSafe(|| job(hsm))).is_err() {
                tracing::error!("an HSM job panicked");
            }
            state = lock(&queue.state);
            if lane == Lane::Background {
                state.background_running = false;
                state.background_done += 1;
                // The next background job may be waiting for this one, and
                // a hold for its end.
                queue.ready.notify_all();
            }
            continue;
        }
        if state.closed && state.foreground.is_empty() && state.background.is_empty() {
            // The pool is shutting down and every queued job ran; threads
            // waiting for a background job to end must see that too.
            queue.ready.notify_all();
            return;
        }
        // Idle: nothing in the foreground queue, and the background queue
        // empty, its one job running, or held. A new job, that job's end or
        // the hold's release wakes us.
        state = queue.ready.wait(state).unwrap_or_else(|p| p.into_inner());
    }
}

impl<H: Hsm> BackgroundHold for Queue<H> {
    fn hold(&self) {
        let mut state = lock(&self.state);
        state.held = true;
        let deadline = Instant::now() + HOLD_WAIT;
        while state.background_running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::debug!("a background HSM job is still running; holding the others anyway");
                break;
            }
            state = self
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self) {
        lock(&self.state).held = false;
        self.ready.notify_all();
    }
}

fn shut_down() -> HsmError {
    HsmError::Unavailable("HSM pool is shut down".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State<()> {
        State::empty(BACKGROUND_MIN_SHARE)
    }

    fn job() -> Job<()> {
        Box::new(|_| {})
    }

    /// A queue whose last background job started at `t0`, with `background`
    /// and `foreground` jobs waiting.
    fn queued(t0: Instant, background: usize, foreground: usize) -> State<()> {
        let mut s = state();
        s.background_started = Some(t0);
        s.background.extend((0..background).map(|_| job()));
        s.foreground.extend((0..foreground).map(|_| job()));
        s
    }

    fn lane(taken: Option<(Lane, Job<()>)>) -> Option<Lane> {
        taken.map(|(l, _)| l)
    }

    #[test]
    fn foreground_goes_first_until_background_is_owed_its_share() {
        let t0 = Instant::now();
        let mut s = queued(t0, 1, 2);
        assert_eq!(lane(s.take(t0)), Some(Lane::Foreground));
        // The share is due: the background job goes before the waiting
        // foreground one.
        let later = t0 + BACKGROUND_MIN_SHARE;
        assert_eq!(lane(s.take(later)), Some(Lane::Background));
        assert_eq!(s.background_started, Some(later));
        assert_eq!(lane(s.take(later)), Some(Lane::Foreground));
        assert_eq!(lane(s.take(later)), None);
    }

    #[test]
    fn background_runs_at_once_when_no_foreground_waits_but_one_at_a_time() {
        let t0 = Instant::now();
        let mut s = queued(t0, 2, 0);
        assert_eq!(lane(s.take(t0)), Some(Lane::Background));
        assert!(s.background_running);
        // The second waits for the first, whatever the time.
        let much_later = t0 + BACKGROUND_MIN_SHARE * 10;
        assert_eq!(lane(s.take(much_later)), None, "woken by the first's end");
        s.foreground.push_back(job());
        assert_eq!(lane(s.take(much_later)), Some(Lane::Foreground));
        s.background_running = false;
        assert_eq!(lane(s.take(much_later)), Some(Lane::Background));
    }

    #[test]
    fn the_first_background_job_is_not_held_back() {
        let t0 = Instant::now();
        let mut s = state();
        s.foreground.push_back(job());
        s.background.push_back(job());
        assert_eq!(lane(s.take(t0)), Some(Lane::Background));
    }

    #[test]
    fn the_share_is_the_pools_own() {
        let t0 = Instant::now();
        let share = Duration::from_millis(50);
        let mut s = queued(t0, 1, 3);
        s.min_share = share;
        // The default share has passed, this pool's has not.
        assert_eq!(
            lane(s.take(t0 + BACKGROUND_MIN_SHARE)),
            Some(Lane::Foreground)
        );
        assert_eq!(
            lane(s.take(t0 + share - Duration::from_millis(1))),
            Some(Lane::Foreground)
        );
        assert_eq!(lane(s.take(t0 + share)), Some(Lane::Background));
        // Zero: background is due whenever none runs.
        let mut s = queued(t0, 2, 2);
        s.min_share = Duration::ZERO;
        assert_eq!(lane(s.take(t0)), Some(Lane::Background));
        assert_eq!(lane(s.take(t0)), Some(Lane::Foreground), "one at a time");
    }
}
