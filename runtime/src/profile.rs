//! Where a step's time goes: a per-op profile of the kernels generated code calls (the
//! `profile` cargo feature; `cargo bench -p modelc-bench --bench train_step --features
//! profile -- nomatch` prints M1-M3's).
//!
//! With the feature, every matrix product a generated step calls (`kernels::matmul`,
//! `matmul_act`, `matmul_then`, `gemm_acc`, and `gemm` / `gemm_then` from hand-written
//! code) and every fused elementwise pass (`kernels::map`) and the fused softmax
//! cross-entropy append a [`Record`] (what ran, its shape, FLOPs, bytes touched, time) to
//! the calling thread's log; [`take`] drains it after a step, and [`report`] turns steps'
//! logs into a table. Only the outermost call is timed: the epilogue closure a
//! `matmul_then` runs on each finished block (a `map` of its own) counts as part of its
//! product, which is where its time is spent.
//!
//! Why a cargo feature and not an environment variable read once: the hooks sit in every
//! product and pass of a step, M1's has about 15 calls in 40 us, and with the feature off
//! each hook is compiled out (the timed call is the untimed one), so "off" costs nothing
//! provably, not a load and a branch per call that a benchmark would have to show are
//! free. Profiling is a build for measuring, like `--features parallel`; the log grows
//! while it is on (records are not free), so an allocation-free step is only claimed
//! without it.

/// What one kernel call did, and how long it took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    /// The kernel (`matmul_act`, `map`, ...).
    pub name: &'static str,
    /// A product's `(m, k, n)` (`a` transposed if `ta`, `b` if `tb`); a pass's element
    /// count as `(len, 0, 0)`.
    pub dims: (usize, usize, usize),
    /// Whether the product read `a` (`ta`) or `b` (`tb`) transposed.
    pub transposed: (bool, bool),
    /// Floating-point operations: `2 m k n` for a product, 0 for a pass.
    pub flops: u64,
    /// Bytes the call must read and write at least (each operand once).
    pub bytes: u64,
    /// Wall time of the call.
    pub nanos: u64,
}

impl Record {
    /// Whether this is a matrix product (else an elementwise or reduction pass).
    pub fn is_product(&self) -> bool {
        self.flops > 0
    }
}

#[cfg(feature = "profile")]
mod on {
    use super::Record;
    use std::cell::{Cell, RefCell};

    thread_local! {
        pub(super) static LOG: RefCell<Vec<Record>> = const { RefCell::new(Vec::new()) };
        /// Timed calls in progress on this thread: only the outermost records.
        pub(super) static DEPTH: Cell<u32> = const { Cell::new(0) };
    }
}

/// Runs `f`, and with the `profile` feature logs it as `rec` (its `nanos` filled in)
/// unless it is nested in another timed call.
#[inline(always)]
pub(crate) fn timed<R>(rec: impl FnOnce() -> Record, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "profile")]
    {
        let depth = on::DEPTH.with(|d| d.replace(d.get() + 1));
        let start = std::time::Instant::now();
        let out = f();
        let nanos = start.elapsed().as_nanos() as u64;
        on::DEPTH.with(|d| d.set(depth));
        if depth == 0 {
            let r = Record { nanos, ..rec() };
            on::LOG.with(|l| l.borrow_mut().push(r));
        }
        out
    }
    #[cfg(not(feature = "profile"))]
    {
        let _ = rec;
        f()
    }
}

/// A product's record (before its time): `c = op(a) x op(b)`, `c` `m x n`, read too if
/// `accumulates`.
pub(crate) fn product(
    name: &'static str,
    (m, k, n): (usize, usize, usize),
    t: (bool, bool),
    accumulates: bool,
) -> Record {
    let c = (m * n) as u64 * if accumulates { 2 } else { 1 };
    Record {
        name,
        dims: (m, k, n),
        transposed: t,
        flops: 2 * (m * k * n) as u64,
        bytes: 4 * ((m * k + k * n) as u64 + c),
        nanos: 0,
    }
}

/// A pass's record (before its time): `len` elements written, `reads` operands of `len`
/// read.
pub(crate) fn pass(name: &'static str, len: usize, reads: usize) -> Record {
    Record {
        name,
        dims: (len, 0, 0),
        transposed: (false, false),
        flops: 0,
        bytes: 4 * (len * (1 + reads)) as u64,
        nanos: 0,
    }
}

/// Whether this build records (the `profile` feature).
pub const ENABLED: bool = cfg!(feature = "profile");

/// This thread's records since the last call, in call order (empty without the
/// `profile` feature).
pub fn take() -> Vec<Record> {
    #[cfg(feature = "profile")]
    {
        on::LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
    #[cfg(not(feature = "profile"))]
    Vec::new()
}

/// A table of one step's ops from several runs of it (`runs[r]`: run `r`'s whole-step
/// time, timed by the caller, and its records, each run's in the same call order): per
/// op its median time over the runs, share of the step, GFLOP/s and GB/s; then the
/// totals against the median step, and the median over runs of what lies outside the
/// ops (the validating prologue, the kernels without a hook, the calls between).
/// Medians, so that the parts add up to the whole on a machine whose speed varies from
/// run to run. Returns an empty string for no runs, or runs whose call sequences differ.
pub fn report(runs: &[(u64, Vec<Record>)]) -> String {
    use std::fmt::Write;
    let Some((_, first)) = runs.first() else { return String::new() };
    let same = |r: &Vec<Record>| {
        r.len() == first.len() && r.iter().zip(first).all(|(x, y)| x.name == y.name && x.dims == y.dims)
    };
    if !runs.iter().all(|(_, r)| same(r)) {
        return String::new();
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let best: Vec<Record> = (0..first.len())
        .map(|i| Record { nanos: median(runs.iter().map(|(_, r)| r[i].nanos).collect()), ..first[i] })
        .collect();
    let step_nanos = median(runs.iter().map(|(t, _)| *t).collect());
    let outside = median(runs.iter().map(|(t, r)| t.saturating_sub(r.iter().map(|x| x.nanos).sum())).collect());
    let step = step_nanos.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3} {:<22} {:<22} {:>10} {:>6} {:>8} {:>7}",
        "#", "op", "shape", "us", "step%", "GFLOP/s", "GB/s"
    );
    for (i, r) in best.iter().enumerate() {
        let shape = if r.is_product() {
            let (m, k, n) = r.dims;
            let t = |x: bool| if x { "^T" } else { "" };
            format!("{m}x{k}{} . {k}x{n}{}", t(r.transposed.0), t(r.transposed.1))
        } else {
            format!("{} elements", r.dims.0)
        };
        let secs = r.nanos.max(1) as f64 * 1e-9;
        let gflops = if r.is_product() { format!("{:.1}", r.flops as f64 / secs / 1e9) } else { "-".into() };
        let _ = writeln!(
            out,
            "{i:>3} {:<22} {:<22} {:>10.1} {:>6.1} {:>8} {:>7.1}",
            r.name,
            shape,
            r.nanos as f64 / 1e3,
            100.0 * r.nanos as f64 / step,
            gflops,
            r.bytes as f64 / secs / 1e9
        );
    }
    let sum = |p: bool| best.iter().filter(|r| r.is_product() == p).map(|r| r.nanos).sum::<u64>();
    let (products, passes) = (sum(true), sum(false));
    let flops: u64 = best.iter().map(|r| r.flops).sum();
    let rest = outside;
    let _ = writeln!(
        out,
        "    products {:.1} us ({:.1}% of the step, {:.1} GFLOP/s); passes {:.1} us ({:.1}%); \
         outside both {:.1} us ({:.1}%); step {:.1} us = {:.3}x its products, {:.1} GFLOP/s",
        products as f64 / 1e3,
        100.0 * products as f64 / step,
        flops as f64 / (products.max(1) as f64),
        passes as f64 / 1e3,
        100.0 * passes as f64 / step,
        rest as f64 / 1e3,
        100.0 * rest as f64 / step,
        step / 1e3,
        step / products.max(1) as f64,
        flops as f64 / step,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &'static str, flops: u64, nanos: u64) -> Record {
        Record { name, dims: (2, 3, 4), transposed: (false, true), flops, bytes: 8000, nanos }
    }

    #[test]
    fn report_takes_medians_and_what_lies_outside() {
        let run = |a, b, step| (step, vec![rec("matmul_act(bias,relu)", 2000, a), rec("map", 0, b)]);
        let runs = [run(1000, 100, 1500), run(3000, 300, 9000), run(2000, 200, 2500)];
        let table = report(&runs);
        // Medians: the product 2000 ns (1 GFLOP/s, 4 GB/s), the pass 200 ns, the step
        // 2500 ns, outside median(400, 5700, 300) = 400 ns.
        assert!(table.contains("2x3 . 3x4^T"), "{table}");
        assert!(table.contains("products 2.0 us (80.0% of the step, 1.0 GFLOP/s)"), "{table}");
        assert!(table.contains("passes 0.2 us (8.0%)"), "{table}");
        assert!(table.contains("outside both 0.4 us (16.0%)"), "{table}");
        assert!(table.contains("step 2.5 us = 1.250x its products"), "{table}");
        // Runs of different call sequences are not one step's.
        assert_eq!(report(&[run(1, 1, 1), (1, vec![rec("map", 0, 1)])]), "");
        assert_eq!(report(&[]), "");
    }

    #[test]
    fn only_the_outermost_call_records() {
        let _ = take();
        let out = timed(|| pass("outer", 10, 1), || timed(|| pass("inner", 10, 1), || 7));
        assert_eq!(out, 7);
        let log = take();
        if ENABLED {
            assert_eq!(log.iter().map(|r| r.name).collect::<Vec<_>>(), ["outer"]);
        } else {
            assert!(log.is_empty());
        }
    }
}
