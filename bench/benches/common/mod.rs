//! What the benchmarks share.

use std::time::Instant;

/// The CPU, as a line for the printouts: the model name, and where a hypervisor hides
/// the model (KVM's "Intel(R) Xeon(R) Processor"), the family, model and stepping that
/// identify it (family 6 model 207 is Emerald Rapids, 143 Sapphire Rapids; AMD family 26
/// is Zen 5), the widest vectors, the per-core L1d and L2 and the shared L3, and the CPUs
/// this process may run on. Figures mean nothing without it: the same code runs at
/// different fractions of peak on different CPUs (README, "Speed").
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let cache = |index: u32| {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{index}/size"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // index0 is L1d (index1 L1i), index2 L2, index3 L3 on Linux's x86 cache topology.
    format!(
        "{} (family {} model {} stepping {}, {}; L1d {}, L2 {} a core, L3 {}; {} CPUs)",
        field("model name"),
        field("cpu family"),
        field("model"),
        field("stepping"),
        fma_rate(0).0,
        cache(0),
        cache(2),
        cache(3),
        cpus,
    )
}

/// One core's f32 FMA peak in GFLOP/s with the widest vectors the CPU has (AVX-512 or
/// AVX2) and modelc uses (`MODELC_KERNEL=avx2` caps it to AVX2, as it caps modelc's
/// kernels), and their name: the best of five timings of 20M rounds of 12 independent
/// FMA chains (enough to cover the FMA latency on two pipes); 0 where AVX2 + FMA are
/// absent.
pub fn fma_peak() -> (f64, &'static str) {
    let (width, _) = fma_rate(0);
    let best = (0..5).map(|_| fma_rate(20_000_000).1).fold(0.0, f64::max);
    (best, width)
}

/// One timing of `rounds` rounds of the peak probe: the vectors' name and GFLOP/s.
pub fn fma_rate(rounds: u64) -> (&'static str, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        let capped = matches!(std::env::var("MODELC_KERNEL").as_deref(), Ok("avx2" | "portable"));
        if is_x86_feature_detected!("avx512f") && !capped {
            // SAFETY: the feature was just detected.
            return ("AVX-512", unsafe { fma_peak_avx512(rounds) });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return ("AVX2", unsafe { fma_peak_avx2(rounds) });
        }
    }
    let _ = rounds;
    ("none", 0.0)
}

/// The body of a peak probe: one timing of `$rounds` rounds of 12 independent FMA
/// chains, in GFLOP/s. An empty asm block "uses" each register after its FMA, so the
/// FMA cannot be folded away and nothing goes through memory.
#[cfg(target_arch = "x86_64")]
macro_rules! probe {
    ($rounds:expr, $lanes:expr, $set1:ident, $zero:ident, $fma:ident, $reg:ident) => {{
        use std::arch::x86_64::*;
        let (x, y) = ($set1(0.999_999), $set1(1e-7));
        let mut acc = [$zero(); 12];
        let start = Instant::now();
        for _ in 0..$rounds {
            for v in acc.iter_mut() {
                *v = $fma(*v, x, y);
                std::arch::asm!("/* {0} */", inout($reg) * v, options(pure, nomem, nostack));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        ($rounds * 12 * $lanes * 2) as f64 / secs.max(1e-9) / 1e9
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak_avx2(rounds: u64) -> f64 {
    probe!(rounds, 8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_fmadd_ps, ymm_reg)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak_avx512(rounds: u64) -> f64 {
    probe!(rounds, 16, _mm512_set1_ps, _mm512_setzero_ps, _mm512_fmadd_ps, zmm_reg)
}

/// The load average (`/proc/loadavg`'s first three fields), for printing beside every
/// figure: on a shared machine a figure means little without it.
#[allow(dead_code)] // not every bench prints it
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!("load average: {}", avg.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
