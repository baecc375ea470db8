//! A tiny persistent thread pool for splitting one matrix product across cores.
//!
//! Spawning threads per product would cost more than a micro model's whole layer, so workers
//! live as long as the pool, spin briefly for the next job and then sleep on a condvar.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    generation: AtomicUsize,
    job: AtomicPtr<()>,
    remaining: AtomicUsize,
    sleepers: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// `n` threads (the caller's plus `n - 1` workers) that run a job together.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    dispatch: Mutex<()>,
}

/// Spins before a worker sleeps: long enough to cover the gap between two products of one
/// forward pass, short enough not to burn a core when the model is idle.
const SPINS: u32 = 20_000;

impl Pool {
    /// A pool of `n` threads in all (`n <= 1`: everything runs on the caller's thread).
    pub fn new(n: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n.max(1))
            .map(|idx| {
                let sh = shared.clone();
                std::thread::Builder::new().name(format!("ulm-pool-{idx}")).spawn(move || worker(sh, idx)).expect("spawn pool thread")
            })
            .collect();
        Pool { shared, workers, dispatch: Mutex::new(()) }
    }

    /// Threads in the pool, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every thread index `i < threads()` and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return f(0);
        }
        let _one_job_at_a_time = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        let job: Job<'_> = f;
        // The pointer to `job` stays valid: we wait below until every worker has finished with it.
        sh.job.store(&job as *const Job<'_> as *mut (), SeqCst);
        sh.remaining.store(self.workers.len(), SeqCst);
        sh.generation.fetch_add(1, SeqCst);
        if sh.sleepers.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        f(0);
        while sh.remaining.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }
}

fn worker(sh: Arc<Shared>, idx: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        let generation = loop {
            let g = sh.generation.load(SeqCst);
            if g != seen || sh.stop.load(SeqCst) {
                break g;
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            sh.sleepers.fetch_add(1, SeqCst);
            let guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            let _guard = sh
                .wake
                .wait_while(guard, |_| sh.generation.load(SeqCst) == seen && !sh.stop.load(SeqCst))
                .unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_sub(1, SeqCst);
            spins = 0;
        };
        if sh.stop.load(SeqCst) {
            return;
        }
        seen = generation;
        // SAFETY: `run` stored a pointer to a live `Job` and waits for `remaining` to reach 0.
        let job: Job<'_> = unsafe { *(sh.job.load(SeqCst) as *const Job<'_>) };
        job(idx);
        sh.remaining.fetch_sub(1, SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The part `i` of `n` of the range `0..len`, split into near-equal pieces aligned to `align`.
pub fn split_range(len: usize, i: usize, n: usize, align: usize) -> std::ops::Range<usize> {
    let units = len.div_ceil(align);
    let (a, b) = (units * i / n, units * (i + 1) / n);
    (a * align).min(len)..(b * align).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_per_job_and_ranges_cover() {
        let pool = Pool::new(3);
        for _ in 0..200 {
            let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
        }
        std::thread::sleep(std::time::Duration::from_millis(30)); // let workers fall asleep
        let total = AtomicUsize::new(0);
        pool.run(&|i| {
            total.fetch_add(split_range(1000, i, 3, 8).len(), SeqCst);
        });
        assert_eq!(total.load(SeqCst), 1000);
    }
}
