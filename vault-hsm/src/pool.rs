//! [`HsmPool`]: a few named std threads that run HSM calls for async code.
//! HSM calls block, so they never run on a tokio worker; each pool thread
//! keeps its own logged-in session (the `Hsm` implementation's thread-local).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::{Hsm, HsmError};

type Job<H> = Box<dyn FnOnce(&H) + Send + 'static>;

/// N threads named `hsm-<i>` taking closures from one queue. Dropping the
/// pool closes the queue, lets queued jobs finish and joins the threads.
pub struct HsmPool<H: Hsm> {
    hsm: Arc<H>,
    jobs: Option<Sender<Job<H>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<H: Hsm> HsmPool<H> {
    /// Starts `threads` workers (at least one).
    ///
    /// # Panics
    /// If the OS refuses to start a thread (start-up only).
    pub fn new(hsm: Arc<H>, threads: usize) -> Self {
        let (tx, rx) = channel::<Job<H>>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|i| {
                let hsm = Arc::clone(&hsm);
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("hsm-{i}"))
                    .spawn(move || worker(&*hsm, &rx))
                    .expect("start HSM pool thread")
            })
            .collect();
        HsmPool {
            hsm,
            jobs: Some(tx),
            threads,
        }
    }

    /// Runs `f` on a pool thread and returns its result. Fails only when the
    /// pool is shut down (or `f` panicked).
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&H) -> R + Send + 'static,
    ) -> Result<R, HsmError> {
        let (reply, answer) = oneshot::channel();
        let job: Job<H> = Box::new(move |hsm| {
            // The caller may have given up (request cancelled): ignore.
            let _ = reply.send(f(hsm));
        });
        self.jobs
            .as_ref()
            .ok_or_else(shut_down)?
            .send(job)
            .map_err(|_| shut_down())?;
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
}

impl<H: Hsm> Drop for HsmPool<H> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn worker<H: Hsm>(hsm: &H, jobs: &Mutex<Receiver<Job<H>>>) {
    loop {
        // Hold the lock only while taking a job, not while running it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return; // queue closed: the pool is shutting down
        };
        // A panicking job must not take the thread down; its caller sees the
        // dropped reply as an error.
        if catch_unwind(AssertUnwindSafe(|| job(hsm))).is_err() {
            tracing::error!("an HSM job panicked");
        }
    }
}

fn shut_down() -> HsmError {
    HsmError::Unavailable("HSM pool is shut down".to_owned())
}
