//! Which instruction set runs: the CPU's best ([`Kernel`]), capped by `MODELC_KERNEL` (and
//! in tests by `FORCE_KERNEL`), and [`widest`], which compiles a closure for it (the
//! runtime's other vector loops follow the same choice).

/// The micro-kernels this build carries, each a superset of the one before: the
/// AVX-512 build still runs the AVX2 kernels where its own do not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The kernel products run with: the best this CPU has, at most the one the
/// `MODELC_KERNEL` environment variable names (in tests, at most the one
/// `FORCE_KERNEL` names). The runtime's other vector kernels follow it too.
pub(crate) fn kernel() -> Kernel {
    let best = detected();
    #[cfg(test)]
    if let Some(forced) = FORCE_KERNEL.with(|f| f.get()) {
        return forced.min(best);
    }
    best
}

/// Runs `f` compiled for the widest vectors this CPU has and the runtime uses: AVX-512,
/// AVX2 + FMA, or the build's target (the choice of [`sgemm`](crate::sgemm)'s kernel, which
/// `MODELC_KERNEL` caps).
///
/// The runtime is compiled for the user's target, the baseline x86-64 (SSE2) unless
/// they set `target-cpu`. `f` is inlined into a copy of this function per instruction
/// set, where LLVM vectorizes its loops for that set: plain loops over slices, as in
/// `kernels::exp_inplace`, `kernels::map` (the generated elementwise loops), the bias
/// update's row sums, the optimizers' updates and [`Act`](super::Act)'s block pass. Calls that LLVM
/// does not inline stay compiled for the baseline; ndarray's `Zip::for_each` is one (see
/// `docs/decisions.md`, "Generated elementwise loops"). The results are the same bits on every path: each
/// element is computed by the same operations, and without fast-math LLVM neither
/// contracts `a * b + c` into an FMA nor reorders a sum.
#[inline]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen where avx512f, avx2 and fma were detected.
        Kernel::Avx512 => unsafe { with_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only chosen where avx2 and fma were detected.
        Kernel::Avx2Fma => unsafe { with_avx2(f) },
        Kernel::Portable => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(super) unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The best kernel this CPU has, capped by `MODELC_KERNEL` (`portable`, `avx2` or
/// `avx512`; any other value, or none, leaves the CPU's best), read once.
pub(super) fn detected() -> Kernel {
    static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        let cpu = cpu_kernel();
        let cap = match std::env::var("MODELC_KERNEL").as_deref() {
            Ok("portable") => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Ok("avx2") => Kernel::Avx2Fma,
            _ => cpu,
        };
        cap.min(cpu)
    })
}

pub(super) fn cpu_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            return Kernel::Avx2Fma;
        }
    }
    Kernel::Portable
}

/// Every kernel this CPU runs, from the portable one up (what `tests/sgemm.rs`, which
/// compiles this file as a module of its own, loops over).
#[cfg(test)]
#[allow(dead_code)]
pub(crate) fn kernels() -> Vec<Kernel> {
    let best = detected();
    let all = [
        Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512,
    ];
    all.into_iter().filter(|&k| k <= best).collect()
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run at most the named kernel (and skip the paths of the better
    /// ones) on a CPU that has them, so that every kernel is tested on a machine with
    /// the best.
    pub(crate) static FORCE_KERNEL: std::cell::Cell<Option<Kernel>> = const { std::cell::Cell::new(None) };
}

/// Proof that the AVX2 + FMA kernel may run (only built after detecting both).
#[derive(Clone, Copy)]
pub(super) struct Direct(pub(super) ());

/// Whether the AVX2 + FMA kernels run on this CPU.
pub(super) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return kernel() >= Kernel::Avx2Fma;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// What the blocking ([`driver`](super::driver)) needs to know of this CPU's caches:
/// one core's L1d and L2 in bytes, as CPUID reports them (leaf 4 on Intel, 0x8000001D
/// on AMD), and whether it is an AMD CPU.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caches {
    pub(super) l1d: usize,
    pub(super) l2: usize,
    pub(super) amd: bool,
}

/// This CPU's [`Caches`], read once. A CPU (or hypervisor) that reports no cache
/// gets 48 KiB and 1 MiB, the smallest of the CPUs the kernels were tuned on.
pub(super) fn caches() -> Caches {
    static CACHES: std::sync::OnceLock<Caches> = std::sync::OnceLock::new();
    *CACHES.get_or_init(|| {
        let fallback = Caches { l1d: 48 << 10, l2: 1 << 20, amd: false };
        #[cfg(target_arch = "x86_64")]
        {
            detect_caches().unwrap_or(fallback)
        }
        #[cfg(not(target_arch = "x86_64"))]
        fallback
    })
}

/// The deterministic cache parameters (CPUID leaf 4 on Intel, 0x8000001D on AMD: the
/// same layout), or `None` where the CPU reports neither cache.
#[cfg(target_arch = "x86_64")]
fn detect_caches() -> Option<Caches> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID exists on every x86-64 CPU (safe to call); leaves above the maximum the CPU
    // reports (leaf 0, leaf 0x80000000) are not queried.
    let id = __cpuid(0);
    let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
    let amd = vendor == b"AuthenticAMD";
    let leaf = if amd {
        if __cpuid(0x8000_0000).eax < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else {
        if id.eax < 4 {
            return None;
        }
        4
    };
    let (mut l1d, mut l2) = (0, 0);
    for sub in 0..16 {
        let r = __cpuid_count(leaf, sub);
        let (kind, level) = (r.eax & 0x1F, (r.eax >> 5) & 0x7);
        if kind == 0 {
            break;
        }
        let ways = ((r.ebx >> 22) & 0x3FF) as usize + 1;
        let partitions = ((r.ebx >> 12) & 0x3FF) as usize + 1;
        let line = (r.ebx & 0xFFF) as usize + 1;
        let sets = r.ecx as usize + 1;
        let bytes = ways * partitions * line * sets;
        // Type 1 is a data cache, 3 a unified one.
        match (level, kind) {
            (1, 1) => l1d = bytes,
            (2, 1 | 3) => l2 = bytes,
            _ => {}
        }
    }
    (l1d > 0 && l2 > 0).then_some(Caches { l1d, l2, amd })
}

#[cfg(test)]
mod tests {
    /// What CPUID reports (or the fallback) is a cache hierarchy the blocking can use:
    /// an L1d of 16 KiB to 1 MiB and an L2 at least as large (this Xeon: 48 KiB, 2 MiB).
    #[test]
    fn detected_caches_are_plausible() {
        let c = super::caches();
        assert!((16 << 10..=1 << 20).contains(&c.l1d) && c.l2 >= c.l1d, "{c:?}");
    }
}
