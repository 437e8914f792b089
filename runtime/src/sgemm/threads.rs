//! The `parallel` feature's threads: a persistent pool that runs the parts of one
//! product, the caller taking part 0 and each helper thread one other part, and that
//! allocates nothing per product.
//!
//! Why not rayon, which `parallel` used before: a `rayon::join` from outside its pool
//! injects the job into a queue that allocates now and then (24 small allocations in 300
//! of M2's steps), so a step was allocation-free only without `parallel`; and a product
//! needs nothing of a work-stealing scheduler: its parts are fixed before it starts
//! (see `parallel` in `mod.rs`), one a thread. Here the job is a pointer to the caller's
//! closure, published through atomics; the caller waits until every helper has run its
//! part, so the closure outlives every use of the pointer.
//!
//! Helpers spin for a while after a part (the next product of a step follows within
//! microseconds), then sleep on a condition variable. A product started while another
//! is running (a second user thread, or a part's own nested product) runs its parts one
//! after the other on its own thread: the same parts, so the same bits.
//!
//! The thread count is `MODELC_THREADS` if set to a number of at least 1, else the CPUs
//! this process may run on (`std::thread::available_parallelism`), read once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// One part of a job: `f(i)` computes part `i`.
type Part<'a> = &'a (dyn Fn(usize) + Sync);

/// Spins of a helper waiting for the next job before it sleeps: about 0.2 ms of `pause`.
const SPINS: u32 = 1 << 12;

struct Pool {
    /// Threads, the caller's included (set once the helpers have started).
    threads: AtomicUsize,
    /// A job is running.
    busy: AtomicBool,
    /// Bumped once a job is published (under `lock`, so that no sleeper misses it).
    epoch: AtomicU64,
    /// The running job: a pointer to the caller's `Part`.
    job: AtomicPtr<()>,
    /// The running job's part count.
    parts: AtomicUsize,
    /// Helpers that have not finished the running job.
    pending: AtomicUsize,
    /// A helper's part panicked.
    panicked: AtomicBool,
    lock: Mutex<usize>,
    wake: Condvar,
}

/// The thread count (see the module's header).
pub(super) fn count() -> usize {
    pool().threads.load(Ordering::Relaxed)
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("MODELC_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&t| t >= 1)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            threads: AtomicUsize::new(1),
            busy: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            parts: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            lock: Mutex::new(0),
            wake: Condvar::new(),
        }));
        // Helpers that could not start are no threads of the pool.
        let started = 1
            + (1..threads)
                .take_while(|&h| {
                    std::thread::Builder::new().name(format!("modelc-sgemm-{h}")).spawn(move || helper(pool, h)).is_ok()
                })
                .count();
        pool.threads.store(started, Ordering::Relaxed);
        pool
    })
}

/// Runs `f(0)`, ..., `f(parts - 1)`, on the pool's threads where it is free (part `i` on
/// helper `i`, part 0 on the calling thread), else one after the other here. Returns
/// once every part has returned; re-raises a part's panic.
pub(super) fn run(parts: usize, f: Part<'_>) {
    let pool = pool();
    let threads = pool.threads.load(Ordering::Relaxed);
    if parts <= 1 || parts > threads || pool.busy.swap(true, Ordering::Acquire) {
        (0..parts).for_each(f);
        return;
    }
    // Part of the job for the helpers: `f` through a pointer to this stack slot, which
    // stays alive (and unchanged) until `pending` is back to 0 below.
    let slot: Part<'_> = f;
    pool.job.store(&slot as *const Part<'_> as *mut (), Ordering::Relaxed);
    pool.parts.store(parts, Ordering::Relaxed);
    pool.pending.store(threads - 1, Ordering::Relaxed);
    {
        let sleepers = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.epoch.fetch_add(1, Ordering::Release);
        if *sleepers > 0 {
            pool.wake.notify_all();
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
    let mut spins = 0u32;
    while pool.pending.load(Ordering::Acquire) != 0 {
        if spins < SPINS {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    let theirs = pool.panicked.swap(false, Ordering::Relaxed);
    pool.busy.store(false, Ordering::Release);
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    assert!(!theirs, "a part of a parallel matrix product panicked");
}

/// Helper `h`'s loop: waits for a job, runs its part `h` (if the job has one), reports.
fn helper(pool: &'static Pool, h: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        loop {
            let e = pool.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let mut sleepers = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
            *sleepers += 1;
            while pool.epoch.load(Ordering::Acquire) == seen {
                sleepers = pool.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
            }
            *sleepers -= 1;
        }
        if h < pool.parts.load(Ordering::Relaxed) {
            // SAFETY: `run` published a pointer to its live `Part` before bumping the
            // epoch (Release; read above with Acquire), and keeps it alive until this
            // helper decrements `pending` below.
            let f: Part<'_> = unsafe { *(pool.job.load(Ordering::Relaxed) as *const Part<'_>) };
            if catch_unwind(AssertUnwindSafe(|| f(h))).is_err() {
                pool.panicked.store(true, Ordering::Relaxed);
            }
        }
        pool.pending.fetch_sub(1, Ordering::Release);
    }
}
