//! `runtime::conv` (conv2d and its two gradients, by each `Strategy`: the tiled im2col
//! onto sgemm and the direct AVX-512 kernels) on the
//! convolutions of issue 18's C1 (Deep MNIST, batch 50) and C2 (LeNet-small, batch 64)
//! steps, single thread. Throughput is in elements = FLOPs (`2 n oh ow co kh kw ci` per
//! pass), so criterion's `Gelem/s` reads as GFLOP/s per pass and the slowest pass shows.
//! `cargo bench -p modelc-bench --bench conv` (a minute or two); figures in docs/conv.md.
//! `MODELC_CONV_CPU=1 cargo bench -p modelc-bench --bench conv [filter]` prints CPU
//! milliseconds per call instead (see [`cpu_report`]: what the strategy rule was decided
//! on, the machine being shared).

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use modelc::conv::{conv2d_grad_filter_with, conv2d_grad_input_with, conv2d_with, Geometry, Strategy};
use modelc::ndarray::{Array, Array4};

/// (label, n, h, w, ci, kh, kw, co, same).
type Case = (&'static str, usize, usize, usize, usize, usize, usize, usize, bool);

const CASES: &[Case] = &[
    ("c1_conv1_50x28x28x1_5x5x32_same", 50, 28, 28, 1, 5, 5, 32, true),
    ("c1_conv2_50x14x14x32_5x5x64_same", 50, 14, 14, 32, 5, 5, 64, true),
    ("c2_conv1_64x28x28x1_3x3x16_valid", 64, 28, 28, 1, 3, 3, 16, false),
    ("c2_conv2_64x13x13x16_3x3x32_valid", 64, 13, 13, 16, 3, 3, 32, false),
];

fn filled(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Array::from_shape_fn(shape, |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    for &(label, n, h, w, ci, kh, kw, co, same) in CASES {
        let (oh, ow, pad) = if same { (h, w, [(kh - 1) / 2, (kw - 1) / 2]) } else { (h - kh + 1, w - kw + 1, [0, 0]) };
        let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad };
        let (x, k, g) = (filled((n, h, w, ci), 1), filled((kh, kw, ci, co), 2), filled((n, oh, ow, co), 3));
        let (mut y, mut dx, mut dw) =
            (Array4::zeros((n, oh, ow, co)), Array4::zeros((n, h, w, ci)), Array4::zeros((kh, kw, ci, co)));
        let mut scratch = Vec::new();
        group.throughput(Throughput::Elements((2 * n * oh * ow * co * kh * kw * ci) as u64));
        for (name, strategy) in [("im2col", Strategy::Im2col), ("direct", Strategy::Direct)] {
            group.bench_function(BenchmarkId::new(format!("forward/{name}"), label), |b| {
                b.iter(|| conv2d_with(strategy, x.view(), k.view(), geo, y.view_mut(), &mut scratch))
            });
            group.bench_function(BenchmarkId::new(format!("grad_input/{name}"), label), |b| {
                b.iter(|| conv2d_grad_input_with(strategy, g.view(), k.view(), geo, dx.view_mut(), &mut scratch))
            });
            group.bench_function(BenchmarkId::new(format!("grad_filter/{name}"), label), |b| {
                b.iter(|| conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, dw.view_mut(), &mut scratch))
            });
        }
    }
    group.finish();
}

/// This thread's CPU time (user + system) in ticks of 10 ms, from `/proc/thread-self/stat`.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The fields after the command name (which is in parentheses): utime and stime are
    // the 12th and 13th of them.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `MODELC_CONV_CPU=1`: instead of criterion, each pass by each strategy run for about
/// `MODELC_CONV_CPU_SECS` (default 1) seconds of this thread's CPU time, printed as CPU
/// ms per call. On the shared 2-core machine the wall time criterion reports swings by
/// 30-60% with the other agents' load (the same binary measured 6.4 and 11.2 ms a
/// minute apart); the CPU time a call gets does not include the time it waited.
/// Linux only (10 ms ticks: at 1 s a figure is within 1%).
fn cpu_report(filter: &str) {
    let secs: f64 = std::env::var("MODELC_CONV_CPU_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    for &(label, n, h, w, ci, kh, kw, co, same) in CASES {
        let (oh, ow, pad) = if same { (h, w, [(kh - 1) / 2, (kw - 1) / 2]) } else { (h - kh + 1, w - kw + 1, [0, 0]) };
        let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad };
        let (x, k, g) = (filled((n, h, w, ci), 1), filled((kh, kw, ci, co), 2), filled((n, oh, ow, co), 3));
        let (mut y, mut dx, mut dw) =
            (Array4::zeros((n, oh, ow, co)), Array4::zeros((n, h, w, ci)), Array4::zeros((kh, kw, ci, co)));
        let mut scratch = Vec::new();
        let flop = (2 * n * oh * ow * co * kh * kw * ci) as f64;
        for pass in ["forward", "grad_input", "grad_filter"] {
            for (name, strategy) in [("im2col", Strategy::Im2col), ("direct", Strategy::Direct)] {
                let id = format!("{pass}/{name}/{label}");
                if !id.contains(filter) {
                    continue;
                }
                let mut call = || match pass {
                    "forward" => conv2d_with(strategy, x.view(), k.view(), geo, y.view_mut(), &mut scratch),
                    "grad_input" => {
                        conv2d_grad_input_with(strategy, g.view(), k.view(), geo, dx.view_mut(), &mut scratch)
                    }
                    _ => conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, dw.view_mut(), &mut scratch),
                };
                call();
                let Some(t0) = cpu_ticks() else { return eprintln!("no /proc/thread-self/stat") };
                let mut calls = 0u64;
                let mut t1 = t0;
                while ((t1 - t0) as f64) < secs * 100.0 {
                    call();
                    calls += 1;
                    t1 = cpu_ticks().unwrap_or(u64::MAX);
                }
                let ms = (t1 - t0) as f64 * 10.0 / calls as f64;
                println!("{id:<60} {ms:8.3} CPU ms  {:6.1} GFLOP/s", flop / ms / 1e6);
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("MODELC_CONV_CPU").is_some() {
        let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
        cpu_report(&filter);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
