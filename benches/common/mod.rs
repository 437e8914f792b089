//! What the benchmarks share.

use std::time::Instant;

/// One core's f32 FMA peak in GFLOP/s: 12 independent 8-lane FMA chains (enough to
/// cover the FMA latency on two pipes), 0 where AVX2 + FMA are absent.
pub fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { fma_peak_avx2() };
        }
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak_avx2() -> f64 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_setzero_ps(); 12];
    let iters = 20_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, x, y);
                // An empty asm block that "uses" the register: the FMA cannot be folded
                // away, and nothing goes through memory.
                std::arch::asm!("/* {0} */", inout(ymm_reg) * v, options(pure, nomem, nostack));
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(acc);
    (iters * 12 * 8 * 2) as f64 / best / 1e9
}
