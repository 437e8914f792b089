//! The `parallel` feature's threads: a persistent pool that runs the parts of one
//! product on the caller and the helper threads, and allocates nothing per product.
//!
//! Why not rayon, which `parallel` used before: a `rayon::join` from outside its pool
//! injects the job into a queue that allocates now and then (24 small allocations in 300
//! of M2's steps), so a step was allocation-free only without `parallel`; and a product
//! needs nothing of a work-stealing scheduler: its parts are fixed before it starts
//! (see `parallel` in `mod.rs`), one a thread. Here the job is a pointer to the caller's
//! closure, published through atomics; the caller waits until no helper is inside the
//! job, so the closure outlives every use of the pointer.
//!
//! Helpers spin for a while after a part (the next product of a step follows within
//! a millisecond: [`SPIN_FOR`]), then sleep on a condition variable. A product started while another
//! is running (a second user thread, or a part's own nested product) runs its parts one
//! after the other on its own thread: the same parts, so the same bits.
//!
//! The thread count is `MODELC_THREADS` if set to a number of at least 1, else the CPUs
//! this process may run on (`std::thread::available_parallelism`), read once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One part of a job: `f(i)` computes part `i`.
type Part<'a> = &'a (dyn Fn(usize) + Sync);

/// How long a helper spins for the next job before it sleeps. Between two products of
/// a step there can be a fraction of a millisecond of work on one thread (M3's SGD guard
/// reads its operands, about 0.25 ms, before the staged weight gradient): a helper that
/// had gone to sleep there took so long to wake (a futex under KVM) that the caller
/// had run every part alone. Measured on the Xeon (family 6 model 167) in M3's step on
/// two threads: the staged 1024 x 256 x 10 gradient took 117 us after 4096 spins of
/// `pause` (38 us here, not the 0.2 ms once thought), 60 us after 32768 (0.37 ms); on
/// one thread 93 us. A time rather than a count, since `pause` takes 9 ns here and
/// several times that on other CPUs.
const SPIN_FOR: Duration = Duration::from_millis(1);

/// Spins between two readings of the clock while spinning (about 2 us here).
const SPINS_PER_CHECK: u32 = 256;

/// Spins until `done()` or [`SPIN_FOR`] has passed; returns whether `done()`.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..SPINS_PER_CHECK {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_FOR {
            return done();
        }
    }
}

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
    /// The running job's next unclaimed part.
    next: AtomicUsize,
    /// Helpers are welcome in the running job.
    open: AtomicBool,
    /// Helpers inside the running job.
    active: AtomicUsize,
    /// A helper's part panicked.
    panicked: AtomicBool,
    lock: Mutex<usize>,
    wake: Condvar,
}

/// The thread count (see the module's header); the conv passes (`conv/par.rs`) read it too.
pub(crate) fn count() -> usize {
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
            next: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            lock: Mutex::new(0),
            wake: Condvar::new(),
        }));
        // Helpers that could not start are no threads of the pool.
        let started = 1
            + (1..threads)
                .take_while(|&h| {
                    std::thread::Builder::new().name(format!("modelc-sgemm-{h}")).spawn(move || helper(pool)).is_ok()
                })
                .count();
        pool.threads.store(started, Ordering::Relaxed);
        pool
    })
}

/// Runs `f(0)`, ..., `f(parts - 1)` on the pool's threads where it is free, else one
/// after the other here; returns once every part has returned, and re-raises a part's
/// panic. Parts are claimed, not assigned: every thread of the job, the caller
/// included, takes the next unclaimed part until none is left, so a helper that is
/// slow to wake (its core busy with another process) leaves its part to the others
/// rather than holding up the product; which thread runs a part never changes its bits.
/// The conv passes (`conv/par.rs`) split on it too, so a conv pass and a product never
/// run their parts at the same time.
pub(crate) fn run(parts: usize, f: Part<'_>) {
    let pool = pool();
    if parts <= 1 || pool.threads.load(Ordering::Relaxed) < 2 || pool.busy.swap(true, Ordering::Acquire) {
        (0..parts).for_each(f);
        return;
    }
    // The job for the helpers: `f` through a pointer to this stack slot, which stays
    // alive (and unchanged) until no helper is inside the job (`active` back to 0 after
    // `open` is cleared, below).
    let slot: Part<'_> = f;
    pool.job.store(&slot as *const Part<'_> as *mut (), Ordering::Relaxed);
    pool.parts.store(parts, Ordering::Relaxed);
    pool.next.store(0, Ordering::Relaxed);
    pool.open.store(true, Ordering::SeqCst);
    {
        let sleepers = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.epoch.fetch_add(1, Ordering::Release);
        if *sleepers > 0 {
            pool.wake.notify_all();
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(|| claim(pool, parts, f)));
    // Close the job, then wait for the helpers inside it. A helper counts itself in
    // `active` before it reads `open` (both SeqCst), so either it is counted here or it
    // sees the job closed and touches nothing.
    pool.open.store(false, Ordering::SeqCst);
    if !spin_until(|| pool.active.load(Ordering::SeqCst) == 0) {
        while pool.active.load(Ordering::SeqCst) != 0 {
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

/// Runs unclaimed parts of the open job until none is left.
fn claim(pool: &Pool, parts: usize, f: Part<'_>) {
    loop {
        let i = pool.next.fetch_add(1, Ordering::Relaxed);
        if i >= parts {
            return;
        }
        f(i);
    }
}

/// A helper's loop: waits for a job, then claims its parts with the caller.
fn helper(pool: &'static Pool) {
    let mut seen = 0;
    loop {
        if !spin_until(|| pool.epoch.load(Ordering::Acquire) != seen) {
            let mut sleepers = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
            *sleepers += 1;
            while pool.epoch.load(Ordering::Acquire) == seen {
                sleepers = pool.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
            }
            *sleepers -= 1;
        }
        seen = pool.epoch.load(Ordering::Acquire);
        pool.active.fetch_add(1, Ordering::SeqCst);
        if pool.open.load(Ordering::SeqCst) {
            // SAFETY: the job is open, so `run` has published a pointer to its live
            // `Part` (before opening it; read after seeing it open, both SeqCst), and it
            // keeps that alive until `active`, which counts this helper, is back to 0.
            let f: Part<'_> = unsafe { *(pool.job.load(Ordering::Relaxed) as *const Part<'_>) };
            let parts = pool.parts.load(Ordering::Relaxed);
            if catch_unwind(AssertUnwindSafe(|| claim(pool, parts, f))).is_err() {
                pool.panicked.store(true, Ordering::Relaxed);
            }
        }
        pool.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::run;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_once_in_every_job() {
        for parts in [2, 3, 7, 64] {
            for _ in 0..200 {
                let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                run(parts, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{parts} parts");
            }
        }
    }

    #[test]
    fn a_nested_job_and_a_panicking_part_complete() {
        let inner = AtomicUsize::new(0);
        run(2, &|_| {
            run(3, &|_| {
                inner.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(inner.load(Ordering::Relaxed), 6);
        for bad in 0..2 {
            let caught = std::panic::catch_unwind(|| run(2, &|i| assert_ne!(i, bad, "part {bad} fails")));
            assert!(caught.is_err(), "the panic of part {bad} reaches the caller");
        }
        let after = AtomicUsize::new(0);
        run(2, &|_| {
            after.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(after.load(Ordering::Relaxed), 2, "the pool works after a panic");
    }
}
