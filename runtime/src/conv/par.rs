//! The conv passes on the threads of sgemm's persistent pool (`parallel` feature): a
//! pass is cut into at most [`MAX_PARTS`] parts over units whose results are disjoint
//! (images for the forward pass, the input gradient and the fused conv + pool; kernel
//! taps for the weight gradient, which reduces over the batch and the pixels), never
//! over a reduction, so every output element is computed by the same operations in the
//! same order whatever the part count: the same bits on 1 and 2 threads. Each part gets
//! its own slice of the caller's scratch (grown once for every part before the split),
//! so a split pass allocates nothing (the max-pool scatter, `pool.rs`, splits over
//! images the same way), and the job itself is a pointer to a closure on
//! the caller's stack (`sgemm/threads.rs`).

use std::sync::Mutex;

/// Most parts a pass is split into (threads beyond it idle).
pub(crate) const MAX_PARTS: usize = 8;

#[cfg(test)]
thread_local! {
    /// Tests set this to a part count (0: the default, one a thread), to check that the
    /// bits do not depend on it.
    pub(crate) static FORCE_PARTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The threads a pass may use: the pool's (1 without `parallel`).
fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        crate::sgemm::threads::count()
    }
    #[cfg(not(feature = "parallel"))]
    {
        1
    }
}

/// The parts a pass of `units` independent units and `flops` floating-point operations
/// is cut into: one a thread, at most `units`, and 1 below [`SPLIT_MIN_FLOPS`].
pub(crate) fn parts(units: usize, flops: usize) -> usize {
    #[cfg(test)]
    {
        let forced = FORCE_PARTS.with(|f| f.get());
        if forced > 0 {
            return forced.min(units).clamp(1, MAX_PARTS);
        }
    }
    if flops < SPLIT_MIN_FLOPS {
        return 1;
    }
    threads().min(units).clamp(1, MAX_PARTS)
}

/// Passes below this many floating-point operations stay on one thread.
pub(super) const SPLIT_MIN_FLOPS: usize = 1 << 20;

/// Where part `i` of `parts` over `len` units starts (part `parts` is the end).
pub(crate) fn cut(len: usize, parts: usize, i: usize) -> usize {
    len * i / parts
}

/// Runs `f(i, items[i])` for `i < parts` on the pool's threads (where it is free, else
/// one after the other here), each item moved into the one part that uses it.
pub(crate) fn each<T: Send>(items: [Option<T>; MAX_PARTS], parts: usize, f: impl Fn(usize, T) + Sync) {
    let cells: [Mutex<Option<T>>; MAX_PARTS] = items.map(Mutex::new);
    let part = |i: usize| {
        let item = cells[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each part runs once");
        f(i, item);
    };
    #[cfg(feature = "parallel")]
    crate::sgemm::threads::run(parts, &part);
    #[cfg(not(feature = "parallel"))]
    (0..parts).for_each(part);
}
