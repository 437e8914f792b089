//! `max_pool` and `avg_pool` gradients (`compute_gradients`, f32) against an f64
//! re-implementation written here (plain loops over `Vec<f64>`, TF's padding formula
//! written out again, sharing no code with the runtime), over every stride and padding
//! variant: non-overlapping, overlapping (stride < size: gradients accumulate), floor
//! pooling that drops the last row (zero gradient there), "same" with the extra row and
//! column at the bottom/right, windows of unequal sides.
//!
//! Each model is `sum(c * square(pool(x * w + b)))` over 7x6 images of 2 channels, with a
//! param `w: [7, 6, 2]` (one weight per cell, so each cell's gradient is probed) and a
//! bias `b: [2]`, and random weights `c` of the pooled shape.
//!
//! Two checks per variant:
//! - **Away from ties** (`finite_differences`): every pre-pooling value `x * w + b` of an
//!   image is distinct, at least 0.03 from any other (a random permutation of 0.05-spaced
//!   magnitudes with random signs, `x` solved from it), so that a finite-difference step
//!   (`1e-3` on `w` in 0.8-1.2, moving a cell by at most 1e-2) never changes which cell
//!   wins a window. The reference is the fourth-order central
//!   difference of the f64 loss (as gradients/tests/gradients.rs; its `compare` is copied:
//!   the error of scalar i is `|g_i - r_i| / max(|r_i|, rms(r))`), every scalar probed.
//! - **At ties** (`ties`): MNIST-like images, a zero background (so `x * w + b` is exactly
//!   `b` over whole windows) and a constant rectangle; finite differences measure the kink
//!   there, so the reference is the chain rule in f64 with TF's choice: each window's
//!   gradient goes to its first maximum in row-major scan order, avg's `g / count` to
//!   each valid cell. An equality mask (`z == max`) would give the bias `b` up to 4x (2x2)
//!   or 9x (3x3) its gradient over tied windows; this check catches it.
//!
//! Tolerance `1e-4` (both checks): a gradient here is a sum over at most 4 images and 9
//! windows of a few f32 operations (`square`, not `tanh`: tanh's derivative `1 - t^2`
//! loses digits where t is near 1, which measured the polynomial, not pooling), ~1e-6;
//! measured worst 8.8e-6 (max) and 2.7e-6 (avg) over the default 480 cases
//! (`MODELC_GRAD_REPORT=1` prints each case's error, with `-- --nocapture`).
//!
//! Cases: `MODELC_GRAD_CASES` (default 24, as gradients.rs) random batches of 1-4 per
//! variant and check, batch 1 first; the default runs in well under a second of test time
//! in release, a few seconds in debug.

use modelc::ndarray::{Array1, Array3, Array4, ArrayView4};

const H: usize = 7;
const W: usize = 6;
const C: usize = 2;

// ------------------------------------------------------------------------- the models

/// One model per pooling variant, with its geometry for the reference.
macro_rules! variants {
    ($($name:ident: $pool:ident($($attr:tt)*) => [$oh:literal, $ow:literal], $max:literal, [$kh:literal, $kw:literal], [$sh:literal, $sw:literal], $same:literal;)*) => {
        mod models {
            use modelc::model;
            $(
                model! {
                    pub struct $name {
                        input x: [n, 7, 6, 2];
                        input c: [n, $oh, $ow, 2];
                        param w: [7, 6, 2] = ones;
                        param b: [2] = constant(0.1);
                        loss l = sum(c * square($pool(x * w + b, $($attr)*)));
                        optimizer sgd(learning_rate = 0.1);
                    }
                }
            )*
        }

        /// Every variant: its name, its geometry, and its generated gradients.
        fn variants() -> Vec<Variant> {
            vec![$(Variant {
                name: stringify!($name),
                geo: Geo { max: $max, k: [$kh, $kw], s: [$sh, $sw], same: $same },
                out: [$oh, $ow],
                run: |x, c, p| {
                    let mut m = models::$name::new();
                    let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
                    m.w.assign(&Array3::from_shape_vec((H, W, C), f32s(&p[0])).expect("w's shape"));
                    m.b.assign(&Array1::from(f32s(&p[1])));
                    let (l, g) = m.compute_gradients(x, c).expect("the inputs have the declared shapes");
                    (l, vec![g.w.iter().map(|&v| f64::from(v)).collect(), g.b.iter().map(|&v| f64::from(v)).collect()])
                },
            }),*]
        }
    };
}

variants! {
    // 7 -> 3 rows (row 6 dropped), 6 -> 3 columns.
    MaxValid: max_pool() => [3, 3], true, [2, 2], [2, 2], false;
    // Overlapping windows: 3x3 stride 1 gives 5x4.
    MaxOverlap: max_pool(size = 3, stride = 1) => [5, 4], true, [3, 3], [1, 1], false;
    // "same": 7 -> 4 with one padding row at the bottom; 6 -> 3, none.
    MaxSame: max_pool(padding = "same") => [4, 3], true, [2, 2], [2, 2], true;
    // Unequal sides and strides, "same": rows ceil(7 / 2) = 4, pad (3 * 2 + 3 - 7) = 2
    // (1 above, 1 below); columns 6, pad 1 (at the right).
    MaxSameRect: max_pool(size = [3, 2], stride = [2, 1], padding = "same") => [4, 6], true, [3, 2], [2, 1], true;
    // Overlapping and "same": 3x3 stride 2, rows 4 (pad 2: 1 and 1), columns 3 (pad 1, right).
    MaxSameOverlap: max_pool(size = 3, stride = 2, padding = "same") => [4, 3], true, [3, 3], [2, 2], true;
    AvgValid: avg_pool() => [3, 3], false, [2, 2], [2, 2], false;
    AvgOverlap: avg_pool(size = 3, stride = 1) => [5, 4], false, [3, 3], [1, 1], false;
    AvgSame: avg_pool(padding = "same") => [4, 3], false, [2, 2], [2, 2], true;
    AvgSameRect: avg_pool(size = [3, 2], stride = [2, 1], padding = "same") => [4, 6], false, [3, 2], [2, 1], true;
    AvgSameOverlap: avg_pool(size = 3, stride = 1, padding = "same") => [7, 6], false, [3, 3], [1, 1], true;
}

type Run = fn(ArrayView4<f32>, ArrayView4<f32>, &[Vec<f64>]) -> (f32, Vec<Vec<f64>>);

struct Variant {
    name: &'static str,
    geo: Geo,
    out: [usize; 2],
    run: Run,
}

// ------------------------------------------------------------- the f64 reference

/// A pooling geometry, as the test understands TF's.
#[derive(Clone, Copy)]
struct Geo {
    max: bool,
    k: [usize; 2],
    s: [usize; 2],
    same: bool,
}

impl Geo {
    /// Output size and padding before the image along axis `a` (0 rows, 1 columns).
    fn axis(&self, a: usize, n: usize) -> (usize, usize) {
        let (k, s) = (self.k[a], self.s[a]);
        if self.same {
            let out = n.div_ceil(s);
            ((out), ((out - 1) * s + k).saturating_sub(n) / 2)
        } else {
            ((n - k) / s + 1, 0)
        }
    }

    /// The valid cells `(i, j)` of window `(oi, oj)`, in row-major scan order.
    fn cells(&self, oi: usize, oj: usize) -> Vec<(usize, usize)> {
        let ((_, top), (_, left)) = (self.axis(0, H), self.axis(1, W));
        let mut out = Vec::new();
        for r in 0..self.k[0] {
            for q in 0..self.k[1] {
                let (i, j) = ((oi * self.s[0] + r) as i64 - top as i64, (oj * self.s[1] + q) as i64 - left as i64);
                if (0..H as i64).contains(&i) && (0..W as i64).contains(&j) {
                    out.push((i as usize, j as usize));
                }
            }
        }
        out
    }
}

/// Flat NHWC index.
fn at(b: usize, i: usize, j: usize, ch: usize) -> usize {
    ((b * H + i) * W + j) * C + ch
}

/// The f64 loss and, by the chain rule with TF's first-maximum choice, its gradients
/// `[dw, db]`. `x` is `[n, 7, 6, 2]` flat, `c` `[n, oh, ow, 2]` flat.
fn reference(geo: Geo, out: [usize; 2], n: usize, x: &[f64], c: &[f64], p: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
    let (w, bias) = (&p[0], &p[1]);
    let z = |b: usize, i: usize, j: usize, ch: usize| x[at(b, i, j, ch)] * w[(i * W + j) * C + ch] + bias[ch];
    let (mut loss, mut dw, mut db) = (0.0, vec![0.0; H * W * C], vec![0.0; C]);
    for b in 0..n {
        for oi in 0..out[0] {
            for oj in 0..out[1] {
                let cells = geo.cells(oi, oj);
                for ch in 0..C {
                    // (cell, share of the window's gradient)
                    let route: Vec<((usize, usize), f64)> = if geo.max {
                        let mut best = cells[0];
                        for &(i, j) in &cells[1..] {
                            // Strictly greater: the first maximum in scan order stays.
                            if z(b, i, j, ch) > z(b, best.0, best.1, ch) {
                                best = (i, j);
                            }
                        }
                        vec![(best, 1.0)]
                    } else {
                        cells.iter().map(|&cell| (cell, 1.0 / cells.len() as f64)).collect()
                    };
                    let pooled: f64 = route.iter().map(|&((i, j), s)| s * z(b, i, j, ch)).sum();
                    let cw = c[((b * out[0] + oi) * out[1] + oj) * C + ch];
                    loss += cw * pooled * pooled;
                    let g = 2.0 * cw * pooled;
                    for ((i, j), s) in route {
                        dw[(i * W + j) * C + ch] += g * s * x[at(b, i, j, ch)];
                        db[ch] += g * s;
                    }
                }
            }
        }
    }
    (loss, vec![dw, db])
}

/// The fourth-order central difference of the f64 loss along scalar `i` of param `k`.
fn derivative(v: &Variant, n: usize, x: &[f64], c: &[f64], p: &[Vec<f64>], k: usize, i: usize) -> f64 {
    let h = 1e-3 * p[k][i].abs().max(1.0);
    let at = |t: f64| {
        let mut q = p.to_vec();
        q[k][i] += t;
        reference(v.geo, v.out, n, x, c, &q).0
    };
    (at(-2.0 * h) - 8.0 * at(-h) + 8.0 * at(h) - at(2.0 * h)) / (12.0 * h)
}

/// The worst error of `got` against `want` (copied from gradients.rs's `compare`):
/// relative, with the rms of `want` as the floor.
fn compare(got: &[f64], want: &[f64]) -> (f64, String) {
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
    let floor = rms.max(1e-30);
    let mut worst = (0.0, String::from("no scalar"));
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let err = (g - r).abs() / r.abs().max(floor);
        if err > worst.0 || err.is_nan() {
            worst = (err, format!("scalar {i}: generated {g:e}, reference {r:e} (rms {rms:e})"));
        }
    }
    worst
}

// ------------------------------------------------------------------ data and drivers

/// SplitMix64: the test's own deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `n` images whose pre-pooling values `z = x * w + b` are all distinct and >= 0.03 from
/// each other: `z` is drawn so, and `x = (z - b) / w`.
fn distinct(n: usize, p: &[Vec<f64>], rng: &mut Rng) -> Vec<f32> {
    let mut x = Vec::with_capacity(n * H * W * C);
    for _ in 0..n {
        let mut perm: Vec<usize> = (0..H * W * C).collect();
        for i in (1..perm.len()).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        for (cell, &k) in perm.iter().enumerate() {
            let sign = if rng.next() & 1 == 0 { 1.0 } else { -1.0 };
            let z = sign * (0.3 + 0.05 * k as f64 + 0.02 * rng.uniform(0.0, 1.0));
            x.push(((z - p[1][cell % C]) / p[0][cell]) as f32);
        }
    }
    x
}

/// `n` MNIST-like images: zeros with one constant rectangle per image and channel.
fn tied(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = vec![0f32; n * H * W * C];
    for b in 0..n {
        for ch in 0..C {
            let (i0, j0) = (rng.below(H - 1), rng.below(W - 1));
            let (i1, j1) = (i0 + 1 + rng.below(H - i0), j0 + 1 + rng.below(W - j0));
            let v = [0.5f32, 1.0, 2.0][rng.below(3)];
            for i in i0..i1.min(H) {
                for j in j0..j1.min(W) {
                    x[at(b, i, j, ch)] = v;
                }
            }
        }
    }
    x
}

/// `MODELC_GRAD_CASES`, or 24.
fn cases() -> u64 {
    std::env::var("MODELC_GRAD_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24)
}

const TOL: f64 = 1e-4;

/// One case: `(loss error, worst gradient error and where)`, against finite differences
/// (`fd`) or the chain-rule reference.
fn case(v: &Variant, n: usize, seed: u64, ties: bool) -> Result<f64, String> {
    let mut rng = Rng(seed);
    // Params as f32 values, so that the model and the reference start from the same ones.
    let p: Vec<Vec<f64>> = if ties {
        // w = 1 everywhere keeps a rectangle's cells tied; b = 0.1 is the background.
        vec![vec![1.0; H * W * C], vec![0.1, 0.1]]
    } else {
        vec![
            (0..H * W * C).map(|_| f64::from(rng.uniform(0.8, 1.2) as f32)).collect(),
            (0..C).map(|_| f64::from(rng.uniform(-0.2, 0.2) as f32)).collect(),
        ]
    };
    let x32 = if ties { tied(n, &mut rng) } else { distinct(n, &p, &mut rng) };
    let c32: Vec<f32> = (0..n * v.out[0] * v.out[1] * C).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    let xa = Array4::from_shape_vec((n, H, W, C), x32.clone()).map_err(|e| e.to_string())?;
    let ca = Array4::from_shape_vec((n, v.out[0], v.out[1], C), c32.clone()).map_err(|e| e.to_string())?;
    let (loss32, got) = (v.run)(xa.view(), ca.view(), &p);
    let (x, c): (Vec<f64>, Vec<f64>) =
        (x32.iter().map(|&a| f64::from(a)).collect(), c32.iter().map(|&a| f64::from(a)).collect());
    let (loss, chain) = reference(v.geo, v.out, n, &x, &c, &p);
    let loss_err = (f64::from(loss32) - loss).abs() / loss.abs().max(1.0);
    if loss_err > TOL {
        return Err(format!("loss {loss32} vs reference {loss}"));
    }
    let mut worst = 0f64;
    for (k, name) in ["w", "b"].into_iter().enumerate() {
        let want: Vec<f64> =
            if ties { chain[k].clone() } else { (0..p[k].len()).map(|i| derivative(v, n, &x, &c, &p, k, i)).collect() };
        let (err, at) = compare(&got[k], &want);
        if err.is_nan() || err > TOL {
            return Err(format!("d l / d {name}: error {err:e} > {TOL:e} at {at}"));
        }
        if !ties {
            // The chain rule agrees with the finite differences away from ties, so the
            // reference used at ties is itself checked here.
            let (e2, at2) = compare(&chain[k], &want);
            if e2 > 1e-7 {
                return Err(format!("the f64 chain rule of d l / d {name} errs by {e2:e} at {at2}"));
            }
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

fn run(ties: bool) {
    let what = if ties { "at ties" } else { "away from ties" };
    for v in variants() {
        let mut rng = Rng(0x9001 ^ v.name.len() as u64);
        for i in 0..cases() {
            let n = if i == 0 { 1 } else { 1 + rng.below(4) };
            let seed = rng.next() % 1_000_000;
            match case(&v, n, seed, ties) {
                Ok(err) => {
                    if std::env::var_os("MODELC_GRAD_REPORT").is_some() {
                        eprintln!("{:<16} {what:<15} n = {n} seed = {seed:<7} grad {err:.2e}", v.name);
                    }
                }
                Err(e) => panic!("{} {what}, n = {n}, seed = {seed}: {e}", v.name),
            }
        }
    }
}

#[test]
fn finite_differences() {
    run(false);
}

#[test]
fn ties() {
    run(true);
}

/// The tie check is not vacuous: on the tied data the mask rule (every cell equal to the
/// window's max gets the whole gradient) differs from the first-cell rule the reference
/// uses, for the bias in every max variant.
#[test]
fn a_mask_rule_would_fail_the_tie_check() {
    for v in variants().into_iter().filter(|v| v.geo.max) {
        let mut rng = Rng(7);
        let n = 2;
        let x: Vec<f64> = tied(n, &mut rng).into_iter().map(f64::from).collect();
        let c: Vec<f64> = (0..n * v.out[0] * v.out[1] * C).map(|_| rng.uniform(0.5, 1.0)).collect();
        let p = vec![vec![1.0; H * W * C], vec![0.1, 0.1]];
        let (_, first) = reference(v.geo, v.out, n, &x, &c, &p);
        // The mask rule's bias gradient: each window's g times the number of tied cells.
        let mut db = [0.0; C];
        let z = |b: usize, i: usize, j: usize, ch: usize| x[at(b, i, j, ch)] + 0.1;
        for b in 0..n {
            for oi in 0..v.out[0] {
                for oj in 0..v.out[1] {
                    let cells = v.geo.cells(oi, oj);
                    for (ch, d) in db.iter_mut().enumerate() {
                        let m = cells.iter().map(|&(i, j)| z(b, i, j, ch)).fold(f64::MIN, f64::max);
                        let ties = cells.iter().filter(|&&(i, j)| z(b, i, j, ch) == m).count() as f64;
                        *d += c[((b * v.out[0] + oi) * v.out[1] + oj) * C + ch] * 2.0 * m * ties;
                    }
                }
            }
        }
        let (err, _) = compare(&db, &first[1]);
        assert!(err > 10.0 * TOL, "{}: the mask rule is within {err:e} of the first-cell rule", v.name);
    }
}
