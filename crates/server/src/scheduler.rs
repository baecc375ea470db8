//! Admission control: a fixed number of generation slots, a bounded queue in front of them, then
//! 429 (queue full) or 503 (waited too long for a slot).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Longest `Retry-After` the server suggests.
const MAX_RETRY_AFTER_S: f64 = 60.0;

/// Counters of the scheduler, for `/api/stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rejected_timeout: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
}

/// Slots and queue shared by every generation request.
#[derive(Debug)]
pub(crate) struct Scheduler {
    slots: Arc<Semaphore>,
    n_slots: usize,
    max_queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    running: Arc<AtomicUsize>,
    /// Running mean of a generation's duration in seconds, for `Retry-After`.
    mean_secs: Mutex<f64>,
    pub counters: Counters,
}

/// A place in the queue: counts as waiting until it is turned into a [`Slot`] or dropped.
pub(crate) struct Ticket<'a> {
    sched: &'a Scheduler,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.sched.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to generate; the slot is free again when this is dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Scheduler {
    pub fn new(n_slots: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        Scheduler {
            slots: Arc::new(Semaphore::new(n_slots)),
            n_slots,
            max_queue,
            queue_timeout,
            waiting: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            mean_secs: Mutex::new(1.0),
            counters: Counters::default(),
        }
    }

    /// A queue place, or 429 when `slots + queue` requests are already in.
    pub fn admit(&self) -> Result<Ticket<'_>, ApiError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket { sched: self };
        // Requests waiting beyond the free slots occupy the queue.
        let free = self.slots.available_permits();
        if before >= free + self.max_queue {
            self.counters.rejected_full.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::queue_full(self.retry_after(before)));
        }
        Ok(ticket)
    }

    /// Waits for a slot; 503 after the queue timeout.
    pub async fn slot(&self, ticket: Ticket<'_>) -> Result<Slot, ApiError> {
        let got = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        let waiting = self.waiting.load(Ordering::SeqCst);
        drop(ticket);
        match got {
            Ok(Ok(permit)) => {
                self.running.fetch_add(1, Ordering::SeqCst);
                Ok(Slot { _permit: permit, running: self.running.clone() })
            }
            Ok(Err(_closed)) => Err(ApiError::unavailable("the server is shutting down", 5)),
            Err(_) => {
                self.counters.rejected_timeout.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::unavailable(
                    format!("no generation slot became free within {} ms; retry later", self.queue_timeout.as_millis()),
                    self.retry_after(waiting),
                ))
            }
        }
    }

    /// A slot for synchronous code (the handoff's local fallback, which ulm-handoff runs under
    /// `block_in_place`): admitted and queued like [`Scheduler::slot`] on a multi-threaded
    /// runtime; elsewhere the thread cannot wait, so only a slot free right now is taken (else 503).
    pub fn slot_blocking(&self) -> Result<Slot, ApiError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let ticket = self.admit()?;
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(self.slot(ticket))),
            _ => match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    drop(ticket);
                    self.running.fetch_add(1, Ordering::SeqCst);
                    Ok(Slot { _permit: permit, running: self.running.clone() })
                }
                Err(_) => Err(ApiError::unavailable("no generation slot is free", self.retry_after(self.waiting()))),
            },
        }
    }

    /// Records how long a generation held its slot.
    pub fn observe(&self, d: Duration) {
        let mut m = self.mean_secs.lock().unwrap_or_else(|e| e.into_inner());
        *m += 0.2 * (d.as_secs_f64() - *m);
    }

    fn retry_after(&self, waiting: usize) -> u64 {
        let mean = *self.mean_secs.lock().unwrap_or_else(|e| e.into_inner());
        let s = mean * (waiting as f64 + 1.0) / self.n_slots.max(1) as f64;
        s.ceil().clamp(1.0, MAX_RETRY_AFTER_S) as u64
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    pub fn max_queue(&self) -> usize {
        self.max_queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_is_429_and_a_long_wait_is_503() {
        let s = Scheduler::new(1, 1, Duration::from_millis(50));
        let t1 = s.admit().unwrap();
        let slot = s.slot(t1).await.unwrap();
        assert_eq!(s.running(), 1);
        let t2 = s.admit().unwrap(); // the one queue place
        let e = s.admit().err().unwrap();
        assert_eq!(e.status.as_u16(), 429);
        assert!(e.retry_after.unwrap() >= 1);
        let e = s.slot(t2).await.err().unwrap();
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(s.waiting(), 0);
        drop(slot);
        assert_eq!(s.running(), 0);
        let t = s.admit().unwrap();
        assert!(s.slot(t).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_slot_waits_in_the_same_queue() {
        let s = std::sync::Arc::new(Scheduler::new(1, 1, Duration::from_millis(2000)));
        let held = s.slot(s.admit().unwrap()).await.unwrap();
        // Synchronous code waits for the slot a request holds…
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.slot_blocking().map(|_| s.running()) }
        });
        while s.waiting() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // …in the queue's one place, so the next request is turned away with 429.
        assert_eq!(s.admit().err().unwrap().status.as_u16(), 429);
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert_eq!((s.running(), s.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_a_blocking_slot_never_waits() {
        let s = Scheduler::new(1, 4, Duration::from_secs(60));
        let held = s.slot_blocking().unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(s.slot_blocking().err().unwrap().status.as_u16(), 503);
        assert!(t0.elapsed() < Duration::from_secs(1));
        drop(held);
        assert!(s.slot_blocking().is_ok());
    }
}
