//! Generated `train_step` against the best hand-written ndarray step, for the three
//! workloads of issue 5 (f32, one thread):
//!
//! - M1, the tutorial model: softmax regression 784 -> 10, batch 100, sgd;
//! - M2: MLP 784-256-128-10, relu, softmax cross-entropy, batch 128, sgd;
//! - M3: MLP 784-1024-1024-10, relu, batch 256, sgd;
//!
//! and M4, M2 with tanh and sigmoid hidden layers instead of relu, where elementwise work
//! (the activations and their derivatives) is a large part of the step.
//!
//! The hand-written steps allocate their buffers once, multiply through transposed
//! views instead of copies, do bias + activation and softmax in single passes, and fuse
//! the SGD update into the weight-gradient product. They call one of three matrix
//! products ([`Gemm`]): the generated code's own (`modelc::kernels::gemm`), so that the
//! ratio measures the generated code around its products; and the two a user writing
//! the step by hand would otherwise pick, the `gemm` crate with its AVX-512 kernels
//! (`x86-v4`) and, with `--features openblas`, the system's OpenBLAS (`cblas_sgemm`).
//! With `--features parallel` every one of them runs on all cores (rayon's pool, the
//! `gemm` crate's rayon split, OpenBLAS's threads).
//!
//! `cargo bench --bench train_step` measures each pair with criterion, then prints the
//! ratios generated / hand-written from interleaved rounds (see [`ratio`]), under a line
//! naming the CPU; `cargo bench --bench train_step -- nomatch` skips criterion and
//! prints only the ratios (about a minute). With `--features profile` it then prints a
//! per-op profile of each generated step ([`profile`]: time, GFLOP/s and GB/s per
//! product and fused pass, and what lies outside them).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use modelc::kernels::gemm;
use modelc::model;
use modelc::ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Zip};

mod common;

model! {
    struct M1 {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param b: [10] = zeros;
        let a = softmax(matmul(x, w) + b);
        output probs = a;
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1));
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
        optimizer sgd(learning_rate = 0.5);
    }
}

model! {
    struct M2 {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 256] = glorot_uniform;
        param b1: [256] = zeros;
        param w2: [256, 128] = glorot_uniform;
        param b2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let z = matmul(h2, w3) + b3;
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    struct M3 {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 1024] = glorot_uniform;
        param b1: [1024] = zeros;
        param w2: [1024, 1024] = glorot_uniform;
        param b2: [1024] = zeros;
        param w3: [1024, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let z = matmul(h2, w3) + b3;
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    struct M4 {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 256] = glorot_uniform;
        param b1: [256] = zeros;
        param w2: [256, 128] = glorot_uniform;
        param b2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = tanh(matmul(x, w1) + b1);
        let h2 = sigmoid(matmul(h1, w2) + b2);
        let z = matmul(h2, w3) + b3;
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

/// A hidden layer's activation in [`HandMlp`].
#[derive(Clone, Copy, PartialEq)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
}

/// The scalar `tanh` and `sigmoid` a hand-written step calls.
#[derive(Clone, Copy, PartialEq)]
enum Fns {
    /// The standard library's (libm's `tanhf`, `expf`), as ndarray code calls them.
    Libm,
    /// modelc's vectorizable polynomials (`modelc::kernels::{tanh, sigmoid}`), the ones
    /// the generated code calls.
    Modelc,
}

/// The matrix product a hand-written step calls (see the header).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Gemm {
    /// `modelc::kernels::gemm`, the generated code's.
    Modelc,
    /// The `gemm` crate (0.19, `x86-v4`): allocates its packing on every call.
    Crate,
    /// `cblas_sgemm` of the system's OpenBLAS.
    #[cfg(feature = "openblas")]
    OpenBlas,
}

impl Gemm {
    /// The references a hand-written step is timed with: this build's.
    fn all() -> Vec<Gemm> {
        vec![
            Gemm::Modelc,
            Gemm::Crate,
            #[cfg(feature = "openblas")]
            Gemm::OpenBlas,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            Gemm::Modelc => "modelc's sgemm",
            Gemm::Crate => "gemm crate x86-v4",
            #[cfg(feature = "openblas")]
            Gemm::OpenBlas => "OpenBLAS",
        }
    }

    /// `c = alpha * a x b + beta * c`.
    fn run(self, alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, c: ArrayViewMut2<f32>) {
        match self {
            Gemm::Modelc => gemm(alpha, a, b, beta, c),
            Gemm::Crate => gemm_crate(alpha, a, b, beta, c),
            #[cfg(feature = "openblas")]
            Gemm::OpenBlas => openblas::sgemm(alpha, a, b, beta, c),
        }
    }
}

/// Threads the references use: 1, or with `parallel` as many as modelc's pool
/// (`MODELC_THREADS`, else one a CPU).
fn threads() -> usize {
    if !cfg!(feature = "parallel") {
        return 1;
    }
    std::env::var("MODELC_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&t| t >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The `gemm` crate on the views' own strides. Its `dst = alpha dst + beta lhs rhs`
/// names the scalars the other way round.
fn gemm_crate(alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, mut c: ArrayViewMut2<f32>) {
    let ((m, k), n) = (a.dim(), b.dim().1);
    assert!(b.dim().0 == k && c.dim() == (m, n));
    let (sa, sb, sc) = (a.strides().to_vec(), b.strides().to_vec(), c.strides().to_vec());
    let par = match threads() {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    let cp = c.as_mut_ptr();
    // SAFETY: pointers and strides of live views of shapes (m, k), (k, n), (m, n); c is
    // borrowed mutably and not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            cp,
            sc[1],
            sc[0],
            beta != 0.0,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// OpenBLAS through `cblas_sgemm`, for the row-major and transposed (column-major)
/// views a hand-written step passes.
#[cfg(feature = "openblas")]
mod openblas {
    use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT, CBLAS_TRANSPOSE};
    use modelc::ndarray::{ArrayView2, ArrayViewMut2};

    #[link(name = "openblas")]
    extern "C" {
        fn openblas_set_num_threads(n: std::ffi::c_int);
    }

    /// Runs this benchmark again with `OPENBLAS_CORETYPE` set, unless it is set. OpenBLAS
    /// picks its kernels from the CPU's model when it loads, before `main`, and an
    /// OpenBLAS older than the CPU does not know the model: Debian 12's 0.3.21 on the
    /// Xeon here (family 6 model 207) chose its SSE3 "Prescott" kernels and ran M3's
    /// products at 32 GFLOP/s. SkylakeX (AVX-512) and Haswell (AVX2 + FMA) are the
    /// kernels it has for the vectors the CPU has (`OPENBLAS_VERBOSE=2` prints the
    /// choice).
    pub fn pick_kernels() {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return;
        }
        let core = if is_x86_feature_detected!("avx512f") {
            "SkylakeX"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "Haswell"
        } else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else { return };
        let err =
            std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("OPENBLAS_CORETYPE", core).exec();
        eprintln!("could not run the benchmark again with OPENBLAS_CORETYPE={core}: {err}");
    }

    /// How a view reads as a row-major BLAS operand: transposed or not, and its `ld`.
    fn op(x: &ArrayView2<f32>) -> (CBLAS_TRANSPOSE, i32) {
        let (s0, s1) = (x.strides()[0], x.strides()[1]);
        let ld = |s: isize| i32::try_from(s).expect("a leading dimension in i32");
        if s1 == 1 {
            (CBLAS_TRANSPOSE::CblasNoTrans, ld(s0.max(x.ncols() as isize)))
        } else {
            assert_eq!(s0, 1, "a row-major or column-major view");
            (CBLAS_TRANSPOSE::CblasTrans, ld(s1.max(x.nrows() as isize)))
        }
    }

    pub fn sgemm(alpha: f32, a: ArrayView2<f32>, b: ArrayView2<f32>, beta: f32, mut c: ArrayViewMut2<f32>) {
        static THREADS: std::sync::Once = std::sync::Once::new();
        // SAFETY: a plain setter of OpenBLAS's thread count.
        THREADS.call_once(|| unsafe { openblas_set_num_threads(super::threads() as std::ffi::c_int) });
        let ((m, k), n) = (a.dim(), b.dim().1);
        assert!(b.dim().0 == k && c.dim() == (m, n) && c.strides()[1] == 1);
        let ((ta, lda), (tb, ldb)) = (op(&a), op(&b));
        let ldc = i32::try_from(c.strides()[0].max(n as isize)).expect("ldc in i32");
        let dim = |x: usize| i32::try_from(x).expect("a dimension in i32");
        // SAFETY: a, b and c are live views of shapes (m, k), (k, n), (m, n) laid out as
        // `op` says (a unit stride along one axis, ld along the other); c is borrowed
        // mutably and not aliased.
        unsafe {
            let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
            let layout = CBLAS_LAYOUT::CblasRowMajor;
            cblas_sgemm(layout, ta, tb, dim(m), dim(n), dim(k), alpha, ap, lda, bp, ldb, beta, cp, ldc);
        }
    }
}

/// A hand-written MLP step (any depth), written as well as ndarray allows.
struct HandMlp {
    /// The matrix product it calls.
    gemm: Gemm,
    /// Each hidden layer's activation.
    acts: Vec<Act>,
    fns: Fns,
    w: Vec<Array2<f32>>,
    b: Vec<Array1<f32>>,
    /// Activations: a[0] is the input's copy-free stand-in (unused), a[i] layer outputs.
    a: Vec<Array2<f32>>,
    /// Adjoint buffers, one per layer output.
    d: Vec<Array2<f32>>,
    lr: f32,
}

impl HandMlp {
    fn new(sizes: &[usize], batch: usize, lr: f32) -> Self {
        let n = sizes.len() - 1;
        let w = (0..n)
            .map(|i| {
                Array2::from_shape_fn((sizes[i], sizes[i + 1]), |(r, c)| ((r * 31 + c * 17) % 97) as f32 / 970.0 - 0.05)
            })
            .collect();
        let b = (0..n).map(|i| Array1::zeros(sizes[i + 1])).collect();
        let a = (0..n).map(|i| Array2::zeros((batch, sizes[i + 1]))).collect();
        let d = (0..n).map(|i| Array2::zeros((batch, sizes[i + 1]))).collect();
        HandMlp { gemm: Gemm::Modelc, acts: vec![Act::Relu; n.saturating_sub(1)], fns: Fns::Libm, w, b, a, d, lr }
    }

    /// The same through another matrix product.
    fn through(gemm: Gemm, sizes: &[usize], batch: usize, lr: f32) -> Self {
        HandMlp { gemm, ..Self::new(sizes, batch, lr) }
    }

    /// The same with `acts` on the hidden layers, computed with `fns`.
    fn with_acts(sizes: &[usize], batch: usize, lr: f32, acts: &[Act], fns: Fns) -> Self {
        assert_eq!(acts.len(), sizes.len() - 2, "one activation per hidden layer");
        HandMlp { acts: acts.to_vec(), fns, ..Self::new(sizes, batch, lr) }
    }

    fn step(&mut self, x: ArrayView2<f32>, y: ArrayView2<f32>) -> f32 {
        let n = self.w.len();
        let batch = x.nrows();
        let g = self.gemm;
        // Forward: product, then bias + relu in one pass (no relu on the logits).
        for i in 0..n {
            let (before, after) = self.a.split_at_mut(i);
            let out = &mut after[0];
            if i == 0 {
                g.run(1.0, x.view(), self.w[i].view(), 0.0, out.view_mut());
            } else {
                g.run(1.0, before[i - 1].view(), self.w[i].view(), 0.0, out.view_mut());
            }
            let b = &self.b[i];
            let poly = self.fns == Fns::Modelc;
            let act = if i + 1 < n { self.acts[i] } else { Act::Relu };
            if i + 1 < n && act == Act::Relu {
                Zip::from(out.rows_mut())
                    .for_each(|mut row| Zip::from(&mut row).and(b).for_each(|v, &bb| *v = (*v + bb).max(0.0)));
            } else if i + 1 < n {
                let f = move |x: f32| match (act, poly) {
                    (Act::Tanh, false) => x.tanh(),
                    (Act::Tanh, true) => modelc::kernels::tanh(x),
                    (_, false) => {
                        // Stable for large |x|, as the generated code's.
                        let e = (-x.abs()).exp();
                        if x >= 0.0 {
                            1.0 / (1.0 + e)
                        } else {
                            e / (1.0 + e)
                        }
                    }
                    (_, true) => modelc::kernels::sigmoid(x),
                };
                Zip::from(out.rows_mut())
                    .for_each(|mut row| Zip::from(&mut row).and(b).for_each(|v, &bb| *v = f(*v + bb)));
            } else {
                Zip::from(out.rows_mut()).for_each(|mut row| row += b);
            }
        }
        // Softmax cross-entropy and its gradient in one pass per row.
        let inv = 1.0 / batch as f32;
        let mut loss = 0.0;
        let (logits, dz) = (&self.a[n - 1], &mut self.d[n - 1]);
        Zip::from(logits.rows()).and(y.rows()).and(dz.rows_mut()).for_each(|z, y, mut g| {
            let m = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut s = 0.0;
            Zip::from(&mut g).and(&z).for_each(|g, &v| {
                let e = (v - m).exp();
                *g = e;
                s += e;
            });
            let lse = m + s.ln();
            let r = 1.0 / s;
            Zip::from(&mut g).and(&z).and(&y).for_each(|g, &zv, &yv| {
                loss += yv * (lse - zv);
                *g = (*g * r - yv) * inv;
            });
        });
        // Backward with the SGD update fused into each weight-gradient product.
        for i in (0..n).rev() {
            if i > 0 {
                // d[i-1] = (d[i] w[i]^T) * relu'(a[i-1]), before w[i] changes.
                let (lo, hi) = self.d.split_at_mut(i);
                g.run(1.0, hi[0].view(), self.w[i].t(), 0.0, lo[i - 1].view_mut());
                let g = Zip::from(&mut lo[i - 1]).and(&self.a[i - 1]);
                match self.acts[i - 1] {
                    Act::Relu => g.for_each(|g, &a| {
                        if a <= 0.0 {
                            *g = 0.0
                        }
                    }),
                    Act::Tanh => g.for_each(|g, &a| *g *= 1.0 - a * a),
                    Act::Sigmoid => g.for_each(|g, &a| *g *= a * (1.0 - a)),
                }
            }
            if i == 0 {
                g.run(-self.lr, x.t(), self.d[i].view(), 1.0, self.w[i].view_mut());
            } else {
                g.run(-self.lr, self.a[i - 1].t(), self.d[i].view(), 1.0, self.w[i].view_mut());
            }
            let db = &self.d[i];
            let lr = self.lr;
            for row in db.rows() {
                Zip::from(&mut self.b[i]).and(&row).for_each(|b, &g| *b -= lr * g);
            }
        }
        loss * inv
    }
}

/// Prints generated / hand-written for one workload, against each hand-written
/// reference in `refs` (its name and step), and the generated step's FLOP rate against
/// one core's FMA peak.
///
/// The ratios: the steps run in alternating rounds of `calls` calls each (generated, then
/// each reference), and each keeps its fastest round (the mean time per call). On a
/// shared, noisy machine this compares them under the same conditions, where criterion
/// measures one for seconds and then the other. The median of the 25 rounds' own ratios
/// (each generated round against the reference's round right after it) is printed too:
/// a burst of noise that slows both rounds of a pair leaves their ratio alone, where it
/// can decide which side gets the single fastest round.
///
/// The FLOP rate: the generated step's fastest of 25 rounds run alone, as in a training
/// loop. In the alternating rounds each step finds its weights partly evicted by the
/// other's (M3: 2 x 7 MB through an L3 shared with other tenants), which made M3's
/// generated step about 5% slower there than alone; both are printed. The FMA peak is
/// probed right before and right after the rounds, and the rate is quoted against the
/// higher, so that both come from the same minutes (this machine's clock moves by 10%
/// over minutes). Probing inside the rounds instead disturbed M3 (9.26 -> 9.8 ms a step:
/// while the probe runs, which touches no memory, other tenants evict this process's
/// data from the shared L3).
fn ratio(name: &str, flops: u64, calls: usize, generated: &mut dyn FnMut(), refs: &mut [(&str, &mut dyn FnMut())]) {
    let fastest = |step: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls {
            step();
        }
        start.elapsed().as_secs_f64() / calls as f64
    };
    let before = common::fma_peak().0;
    let alone = (0..25).map(|_| fastest(generated)).fold(f64::MAX, f64::min);
    let mut best_gen = f64::MAX;
    let mut best = vec![f64::MAX; refs.len()];
    let mut ratios = vec![Vec::with_capacity(25); refs.len()];
    for _ in 0..25 {
        let g = fastest(generated);
        best_gen = best_gen.min(g);
        for (i, (_, step)) in refs.iter_mut().enumerate() {
            let t = fastest(*step);
            best[i] = best[i].min(t);
            ratios[i].push(g / t);
        }
    }
    let peak = before.max(common::fma_peak().0);
    let us = |t: f64| format!("{:.1} us", t * 1e6);
    let rate = |t: f64| flops as f64 / t / 1e9;
    println!(
        "{name}: generated {} (fastest of 25 alternating rounds), alone {} = {:.1} GFLOP/s = {:.1}% of the FMA \
         peak probed around the rounds ({peak:.1}; {:.1}% in the alternating rounds)",
        us(best_gen),
        us(alone),
        rate(alone),
        100.0 * rate(alone) / peak,
        100.0 * rate(best_gen) / peak,
    );
    for ((label, _), (t, r)) in refs.iter().zip(best.iter().zip(&mut ratios)) {
        r.sort_by(f64::total_cmp);
        println!(
            "    / hand-written, {label}: {} ({:.1} GFLOP/s) -> {:.3} (median ratio of a round's pair {:.3})",
            us(*t),
            rate(*t),
            best_gen / t,
            r[r.len() / 2],
        );
    }
}

fn data(batch: usize) -> (Array2<f32>, Array2<f32>) {
    let x = Array2::from_shape_fn((batch, 784), |(i, j)| ((i * 7 + j * 3) % 255) as f32 / 255.0);
    let y = Array2::from_shape_fn((batch, 10), |(i, j)| f32::from(u8::from((i * 7 + 3) % 10 == j)));
    (x, y)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(30);

    let (x, y) = data(100);
    let mut m1 = M1::new();
    group
        .bench_function(BenchmarkId::new("M1", "generated"), |b| b.iter(|| m1.train_step(x.view(), y.view()).unwrap()));
    for g in Gemm::all() {
        let mut h1 = HandMlp::through(g, &[784, 10], 100, 0.5);
        let id = BenchmarkId::new("M1", format!("hand-written, {}", g.name()));
        group.bench_function(id, |b| b.iter(|| h1.step(x.view(), y.view())));
    }
    group.bench_function(BenchmarkId::new("M1", "probs"), |b| b.iter(|| m1.probs(x.view()).unwrap()));
    group.bench_function(BenchmarkId::new("M1", "accuracy"), |b| b.iter(|| m1.accuracy(x.view(), y.view()).unwrap()));
    group.bench_function(BenchmarkId::new("M1", "compute+apply"), |b| {
        let mut g = M1Gradients::zeros();
        b.iter(|| {
            let l = m1.compute_gradients_into(x.view(), y.view(), &mut g).unwrap();
            m1.apply_gradients(&g).unwrap();
            l
        })
    });

    let (x, y) = data(128);
    let mut m2 = M2::new();
    group
        .bench_function(BenchmarkId::new("M2", "generated"), |b| b.iter(|| m2.train_step(x.view(), y.view()).unwrap()));
    for g in Gemm::all() {
        let mut h2 = HandMlp::through(g, &[784, 256, 128, 10], 128, 0.1);
        let id = BenchmarkId::new("M2", format!("hand-written, {}", g.name()));
        group.bench_function(id, |b| b.iter(|| h2.step(x.view(), y.view())));
    }

    let mut m4 = M4::new();
    group
        .bench_function(BenchmarkId::new("M4", "generated"), |b| b.iter(|| m4.train_step(x.view(), y.view()).unwrap()));
    let m4_sizes = [784, 256, 128, 10];
    let m4_acts = [Act::Tanh, Act::Sigmoid];
    let mut h4 = HandMlp::with_acts(&m4_sizes, 128, 0.1, &m4_acts, Fns::Libm);
    group.bench_function(BenchmarkId::new("M4", "hand-written"), |b| b.iter(|| h4.step(x.view(), y.view())));
    let mut h4p = HandMlp::with_acts(&m4_sizes, 128, 0.1, &m4_acts, Fns::Modelc);
    group.bench_function(BenchmarkId::new("M4", "hand-written, modelc's tanh and sigmoid"), |b| {
        b.iter(|| h4p.step(x.view(), y.view()))
    });

    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let (x, y) = data(256);
    let mut m3 = M3::new();
    group
        .bench_function(BenchmarkId::new("M3", "generated"), |b| b.iter(|| m3.train_step(x.view(), y.view()).unwrap()));
    for g in Gemm::all() {
        let mut h3 = HandMlp::through(g, &[784, 1024, 1024, 10], 256, 0.1);
        let id = BenchmarkId::new("M3", format!("hand-written, {}", g.name()));
        group.bench_function(id, |b| b.iter(|| h3.step(x.view(), y.view())));
    }
    group.finish();

    // Multiply-adds of the products (two FLOPs each): what the FLOP rate is quoted on.
    let products = |sizes: &[usize], batch: usize| -> u64 {
        let layers: Vec<u64> = sizes.windows(2).map(|w| (batch * w[0] * w[1]) as u64).collect();
        // Forward and weight gradient for every layer; input gradient for all but the first.
        2 * (2 * layers.iter().sum::<u64>() + layers[1..].iter().sum::<u64>())
    };
    let (peak, width) = common::fma_peak();
    println!("\n{}", common::cpu());
    println!("{} thread(s); one core's {width} FMA peak: {peak:.1} GFLOP/s", threads());
    // One hand-written step per reference product.
    let hands = |sizes: &[usize], batch: usize, lr: f32| -> Vec<(&'static str, HandMlp)> {
        Gemm::all().into_iter().map(|g| (g.name(), HandMlp::through(g, sizes, batch, lr))).collect()
    };
    let (x, y) = data(100);
    let mut h = hands(&[784, 10], 100, 0.5);
    let mut gen = || {
        black_box(m1.train_step(x.view(), y.view()).unwrap());
    };
    ratio_hands("M1", products(&[784, 10], 100), 200, &mut gen, &mut h, x.view(), y.view());
    let (x, y) = data(128);
    let mut h = hands(&[784, 256, 128, 10], 128, 0.1);
    let mut gen = || {
        black_box(m2.train_step(x.view(), y.view()).unwrap());
    };
    ratio_hands("M2", products(&[784, 256, 128, 10], 128), 20, &mut gen, &mut h, x.view(), y.view());
    let mut h = [("modelc's sgemm, libm's tanh and sigmoid", h4), ("modelc's sgemm, modelc's tanh and sigmoid", h4p)];
    let mut gen = || {
        black_box(m4.train_step(x.view(), y.view()).unwrap());
    };
    ratio_hands("M4", products(&m4_sizes, 128), 20, &mut gen, &mut h, x.view(), y.view());
    let (x, y) = data(256);
    let mut h = hands(&[784, 1024, 1024, 10], 256, 0.1);
    let mut gen = || {
        black_box(m3.train_step(x.view(), y.view()).unwrap());
    };
    ratio_hands("M3", products(&[784, 1024, 1024, 10], 256), 4, &mut gen, &mut h, x.view(), y.view());

    if modelc::profile::ENABLED {
        println!("\nPer-op profiles of the generated steps (--features profile; {})", common::cpu());
        let (x, y) = data(100);
        profile("M1", 400, &mut || {
            black_box(m1.train_step(x.view(), y.view()).unwrap());
        });
        let (x, y) = data(128);
        profile("M2", 100, &mut || {
            black_box(m2.train_step(x.view(), y.view()).unwrap());
        });
        let (x, y) = data(256);
        profile("M3", 30, &mut || {
            black_box(m3.train_step(x.view(), y.view()).unwrap());
        });
    }
}

/// Prints the per-op profile of `calls` runs of `step` (`modelc::profile::report`:
/// medians over the runs).
fn profile(name: &str, calls: usize, step: &mut dyn FnMut()) {
    let _ = modelc::profile::take();
    let runs: Vec<(u64, Vec<modelc::profile::Record>)> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            step();
            (start.elapsed().as_nanos() as u64, modelc::profile::take())
        })
        .collect();
    println!("{name}, median of {calls} steps:\n{}", modelc::profile::report(&runs));
}

/// [`ratio`] against each hand-written step of `hands` (its label and step) on `x`, `y`.
fn ratio_hands(
    name: &str,
    flops: u64,
    calls: usize,
    generated: &mut dyn FnMut(),
    hands: &mut [(&'static str, HandMlp)],
    x: ArrayView2<f32>,
    y: ArrayView2<f32>,
) {
    type Step<'a> = Box<dyn FnMut() + 'a>;
    let mut steps: Vec<(&str, Step<'_>)> = hands
        .iter_mut()
        .map(|(label, h)| {
            let step = move || {
                black_box(h.step(x, y));
            };
            (*label, Box::new(step) as Step<'_>)
        })
        .collect();
    let mut refs: Vec<(&str, &mut dyn FnMut())> =
        steps.iter_mut().map(|(label, s)| (*label, &mut **s as &mut dyn FnMut())).collect();
    ratio(name, flops, calls, generated, &mut refs);
}

criterion_group!(benches, bench);

// `criterion_main!`, after OpenBLAS's choice of kernels.
fn main() {
    #[cfg(feature = "openblas")]
    openblas::pick_kernels();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
