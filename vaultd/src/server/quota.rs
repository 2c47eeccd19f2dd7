//! What one uid may take from the server: open connections, requests in
//! flight over all its connections, and a share of the global budget of
//! buffered request bytes. Uids that are not configured clients share one
//! allowance, so a crowd of unknown uids weighs as one.
//!
//! A uid at its connection cap is refused (`overloaded`); at its in-flight
//! or byte allowance it is pushed back: its next frame stays in the kernel
//! buffer until earlier requests finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::Limits;

/// One uid, or every uid that is not a configured client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Bucket {
    Client(u32),
    Unknown,
}

/// The limits of one bucket, shared by its connections.
struct Allowance {
    connections: usize,
    in_flight: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

pub(super) struct Quotas {
    max_connections: usize,
    max_in_flight: usize,
    share_bytes: usize,
    /// Request bytes buffered over all connections.
    budget: Arc<Budget>,
    /// Only buckets with open connections: an entry goes with its last one.
    buckets: Mutex<HashMap<Bucket, Allowance>>,
}

impl Quotas {
    pub(super) fn new(limits: &Limits) -> Arc<Quotas> {
        Arc::new(Quotas {
            max_connections: limits.max_connections_per_uid,
            max_in_flight: limits.max_in_flight_per_uid,
            share_bytes: limits.max_buffered_bytes / super::UID_SHARE_OF_BUFFER,
            budget: Arc::new(Budget {
                free: Mutex::new(limits.max_buffered_bytes),
                freed: Notify::new(),
            }),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// A connection slot of `bucket`, or `None` at its cap.
    pub(super) fn admit(self: &Arc<Self>, bucket: Bucket) -> Option<Admission> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let a = buckets.entry(bucket).or_insert_with(|| Allowance {
            connections: 0,
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            bytes: Arc::new(Semaphore::new(self.share_bytes)),
        });
        if a.connections >= self.max_connections {
            return None;
        }
        a.connections += 1;
        Some(Admission {
            quotas: self.clone(),
            bucket,
            in_flight: a.in_flight.clone(),
            bytes: a.bytes.clone(),
        })
    }

    #[cfg(test)]
    fn open(&self, bucket: Bucket) -> usize {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(&bucket).map_or(0, |a| a.connections)
    }
}

/// One admitted connection; its slot is given back on drop.
pub(super) struct Admission {
    quotas: Arc<Quotas>,
    bucket: Bucket,
    in_flight: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// What one request holds while it is read and handled.
pub(super) struct RequestPermit {
    _in_flight: OwnedSemaphorePermit,
    _share: OwnedSemaphorePermit,
    _budget: BudgetBytes,
}

/// The global byte budget. Unlike a (fair) semaphore it keeps no queue: a
/// frame that fits is taken at once, though a bigger one waits, so a big
/// frame of one uid never holds up the small requests of the others.
struct Budget {
    free: Mutex<usize>,
    freed: Notify,
}

impl Budget {
    async fn take(self: &Arc<Self>, n: usize) -> BudgetBytes {
        loop {
            // Registered before looking, so a release in between wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
                if *free >= n {
                    *free -= n;
                    return BudgetBytes {
                        budget: self.clone(),
                        n,
                    };
                }
            }
            freed.await;
        }
    }
}

struct BudgetBytes {
    budget: Arc<Budget>,
    n: usize,
}

impl Drop for BudgetBytes {
    fn drop(&mut self) {
        *self.budget.free.lock().unwrap_or_else(|p| p.into_inner()) += self.n;
        self.budget.freed.notify_waiters();
    }
}

impl Admission {
    /// Waits until the bucket may have one more request in flight and
    /// `len` more bytes buffered, in its share and in the global budget.
    /// Always in that order, and the budget is taken last, so no holder of
    /// budget bytes ever waits for a uid's allowance: no deadlock. Within
    /// a uid's allowance requests queue in order (its big frame is not
    /// overtaken forever by its small ones); the global budget has no
    /// queue (see [`Budget`]).
    ///
    /// `None` only if `len` cannot be counted (over u32; max_frame is at
    /// most 64 MiB) or a semaphore was closed (never): the caller closes.
    pub(super) async fn request(&self, len: usize) -> Option<RequestPermit> {
        let n = u32::try_from(len).ok()?;
        let in_flight = self.in_flight.clone().acquire_owned().await.ok()?;
        let share = self.bytes.clone().acquire_many_owned(n).await.ok()?;
        let budget = self.quotas.budget.take(len).await;
        Some(RequestPermit {
            _in_flight: in_flight,
            _share: share,
            _budget: budget,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut buckets = self
            .quotas
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(a) = buckets.get_mut(&self.bucket) {
            a.connections -= 1;
            if a.connections == 0 {
                buckets.remove(&self.bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(conns: usize, in_flight: usize, bytes: usize) -> Limits {
        Limits {
            max_frame: 1024,
            max_in_flight: 256,
            max_connections: 1024,
            max_connections_per_uid: conns,
            max_in_flight_per_uid: in_flight,
            max_buffered_bytes: bytes,
            idle_timeout: Duration::from_secs(1),
            frame_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn connections_are_capped_per_uid_and_come_back() {
        let q = Quotas::new(&limits(2, 8, 1 << 20));
        let a = q.admit(Bucket::Client(7)).unwrap();
        let b = q.admit(Bucket::Client(7)).unwrap();
        assert!(q.admit(Bucket::Client(7)).is_none(), "over the cap");
        // Another uid and the unknown uids have their own.
        let others: Vec<_> = [Bucket::Client(8), Bucket::Client(8), Bucket::Unknown]
            .into_iter()
            .map(|b| q.admit(b).expect("own allowance"))
            .collect();
        assert_eq!(q.open(Bucket::Client(7)), 2);
        drop(a);
        let c = q.admit(Bucket::Client(7)).expect("a slot came back");
        drop((b, c, others));
        assert!(q.buckets.lock().unwrap().is_empty(), "no entry left behind");
    }

    #[tokio::test]
    async fn in_flight_and_bytes_push_back() {
        // One uid: 3 in flight, a quarter of 4000 bytes = 1000.
        let q = Quotas::new(&limits(8, 3, 4000));
        let uid = q.admit(Bucket::Client(1)).unwrap();
        let other = q.admit(Bucket::Client(2)).unwrap();
        let wait = Duration::from_millis(50);
        let p1 = uid.request(10).await.unwrap();
        let p2 = uid.request(10).await.unwrap();
        let p3 = uid.request(10).await.unwrap();
        assert!(
            tokio::time::timeout(wait, uid.request(10)).await.is_err(),
            "a 4th request of the uid waits"
        );
        let o = other.request(10).await.unwrap();
        drop(p1);
        let p4 = tokio::time::timeout(Duration::from_secs(30), uid.request(10))
            .await
            .expect("a slot came back")
            .unwrap();
        drop((p2, p3, p4, o));
        // Bytes: each uid's share is 1000 of the 4000.
        let big = uid.request(900).await.unwrap();
        assert!(
            tokio::time::timeout(wait, uid.request(200)).await.is_err(),
            "past the uid's share"
        );
        let o2 = other.request(1000).await.unwrap();
        let (u3, u4, u5) = (
            q.admit(Bucket::Client(3)).unwrap(),
            q.admit(Bucket::Client(4)).unwrap(),
            q.admit(Bucket::Unknown).unwrap(),
        );
        let o3 = u3.request(1000).await.unwrap();
        let o4 = u4.request(1000).await.unwrap();
        // 3900 of 4000 taken: 200 more pass the global budget, though
        // not the share of the unknown uids.
        let mut waiting = Box::pin(u5.request(200));
        assert!(
            tokio::time::timeout(wait, waiting.as_mut()).await.is_err(),
            "past the global budget"
        );
        // While that frame waits, one that fits is not queued behind it.
        let u6 = q.admit(Bucket::Client(6)).unwrap();
        let small = tokio::time::timeout(Duration::from_secs(30), u6.request(100))
            .await
            .expect("a frame that fits is taken at once")
            .unwrap();
        drop(o2);
        let o5 = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("budget came back")
            .unwrap();
        drop((big, o3, o4, o5, small));
    }
}
