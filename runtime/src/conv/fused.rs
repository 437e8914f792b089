//! `max_pool(conv2d(x, w) + bias)` in one pass per image: the conv writes one image's
//! output into the scratch (in L1 or L2: at most 100 KiB for C1 and C2), and the pooling
//! reads it from there with the bias added to each cell, writing the pooled value and a
//! u8 argmax. The unpooled image never goes to memory, and the bias add, the argmax and
//! the pick are one pass instead of three (what the profile of C2's step said: the pick
//! re-read a 2.8 MB image that the argmax had just read, past the 2 MB L2).
//!
//! The compiler rewrites `PoolArgmax(a)` and `PoolPick(a, ..)` into this when `a =
//! conv2d(x, w) + bias` (or the conv alone) is read by nothing else
//! (`model-macros/core/src/ops/pool.rs`, `fuse_conv_pool`). Values and choices are the
//! unfused ops' bit for bit: the same conv kernel per image, the same f32 bias add, the
//! same first-maximum rule (`crate::pool::max_pool_image`).

use ndarray::{s, ArrayView1, ArrayView4, ArrayViewMut4, Axis};

use super::par::{self, MAX_PARTS};
use super::{conv2d_in, direct, scratch_len, Dims, Geometry, Sizes, Strategy};
use crate::pool::{self, Window};

/// The scratch floats of one [`conv2d_max_pool_with`] call (`z` the conv's sizes, with
/// `n` the batch): the bias, then for each part of the batch (`conv::par::parts`) one conv output
/// image and one image's conv scratch, for the direct kernel or im2col, whichever is
/// larger (the call runs im2col where the CPU lacks AVX-512F).
pub fn fused_scratch_len(strategy: Strategy, z: Sizes, geo: Geometry) -> usize {
    z.co + parts(strategy, z) * part_scratch(strategy, z, geo)
}

/// The scratch floats of one part: one conv output image and one image's conv scratch.
fn part_scratch(strategy: Strategy, z: Sizes, geo: Geometry) -> usize {
    let d = Dims { n: 1, ..z.into() };
    let im2col = scratch_len(d.k(), d.co, d.pixels());
    let conv = match strategy {
        Strategy::Direct => direct::forward_scratch(&d, &geo).max(im2col),
        Strategy::Im2col => im2col,
    };
    z.oh * z.ow * z.co + conv
}

/// The parts the batch is cut into: one a thread for the direct kernel (`conv/par.rs`);
/// im2col's products split on their own.
fn parts(strategy: Strategy, z: Sizes) -> usize {
    let d: Dims = z.into();
    match strategy {
        Strategy::Direct if direct::available() => par::parts(d.n, 2 * d.pixels() * d.k() * d.co),
        _ => 1,
    }
}

/// `value = max_pool(conv2d(x, w) + bias)` and `arg` its u8 argmax (each window's first
/// maximum in scan order, as `crate::pool::max_pool_argmax`), with the conv by `strategy`
/// one image at a time. `conv_out` is the conv's output rows and columns (which the
/// pooled shape does not give back); `win` the pooling window over them, of at most 256
/// cells. Either output may be absent (inference needs no argmax). Any view of `x`, `w`
/// and `bias`; outputs in standard layout take the vector path, others are written by
/// index.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_max_pool_with(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geo: Geometry,
    conv_out: [usize; 2],
    win: Window,
    value: Option<ArrayViewMut4<'_, f32>>,
    arg: Option<ArrayViewMut4<'_, u8>>,
    scratch: &mut Vec<f32>,
) {
    let out = match (&value, &arg) {
        (Some(v), _) => v.dim(),
        (None, Some(a)) => a.dim(),
        (None, None) => (0, 0, 0, 0),
    };
    // Recorded as the conv (its output `conv_out`), the pooling and bias inside it.
    let d = (x.dim(), w.dim(), (out.0, conv_out[0], conv_out[1], out.3));
    crate::profile::timed(
        move || super::conv_record("conv_pool", d),
        || conv2d_max_pool_inner(strategy, x, w, bias, geo, conv_out, win, value, arg, scratch),
    )
}

#[allow(clippy::too_many_arguments)]
fn conv2d_max_pool_inner(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geo: Geometry,
    conv_out: [usize; 2],
    win: Window,
    mut value: Option<ArrayViewMut4<'_, f32>>,
    mut arg: Option<ArrayViewMut4<'_, u8>>,
    scratch: &mut Vec<f32>,
) {
    let ((n, h, wd, ci), (kh, kw, _, co)) = (x.dim(), w.dim());
    let [oh, ow] = conv_out;
    let pooled = match (&value, &arg) {
        (Some(v), _) => (v.dim().1, v.dim().2),
        (None, Some(a)) => (a.dim().1, a.dim().2),
        (None, None) => return,
    };
    let z = Sizes { n, h, w: wd, ci, kh, kw, co, oh, ow };
    let len = fused_scratch_len(strategy, z, geo);
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let (bv, rest) = scratch[..len].split_at_mut(co);
    match bias {
        Some(b) => {
            for (d, &v) in bv.iter_mut().zip(b.iter()) {
                *d = v;
            }
        }
        None => bv.fill(0.0),
    }
    let bv: &[f32] = bv;
    let (parts, per) = (parts(strategy, z), part_scratch(strategy, z, geo));
    let job = Job { strategy, x: &x, w: &w, bias: bv, geo, z, win, pooled };
    if parts == 1 {
        job.images(0, value, arg, rest);
        return;
    }
    type Item<'v, 'a, 's> = (Option<ArrayViewMut4<'v, f32>>, Option<ArrayViewMut4<'a, u8>>, &'s mut [f32]);
    let mut items: [Option<Item<'_, '_, '_>>; MAX_PARTS] = std::array::from_fn(|_| None);
    let (mut vrest, mut arest, mut srest) =
        (value.as_mut().map(|v| v.view_mut()), arg.as_mut().map(|a| a.view_mut()), rest);
    for (i, slot) in items.iter_mut().enumerate().take(parts) {
        let len = par::cut(n, parts, i + 1) - par::cut(n, parts, i);
        let (v, vmore) = match vrest {
            Some(v) => {
                let (a, b) = v.split_at(Axis(0), len);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (a, amore) = match arest {
            Some(a) => {
                let (p, q) = a.split_at(Axis(0), len);
                (Some(p), Some(q))
            }
            None => (None, None),
        };
        let (sc, smore) = srest.split_at_mut(per);
        *slot = Some((v, a, sc));
        (vrest, arest, srest) = (vmore, amore, smore);
    }
    par::each(items, parts, |i, (v, a, sc)| job.images(par::cut(n, parts, i), v, a, sc));
}

/// One fused call's operands, shared by its parts.
struct Job<'j, 'x, 'w> {
    strategy: Strategy,
    x: &'j ArrayView4<'x, f32>,
    w: &'j ArrayView4<'w, f32>,
    bias: &'j [f32],
    geo: Geometry,
    z: Sizes,
    win: Window,
    pooled: (usize, usize),
}

impl Job<'_, '_, '_> {
    /// Images `b0..` of the batch (as many as `value` or `arg` holds) into `value` and
    /// `arg`, `s` one part's scratch ([`part_scratch`]).
    fn images(
        &self,
        b0: usize,
        mut value: Option<ArrayViewMut4<'_, f32>>,
        mut arg: Option<ArrayViewMut4<'_, u8>>,
        s: &mut [f32],
    ) {
        let (x, w, bv, geo, win, pooled, z) = (self.x, self.w, self.bias, self.geo, self.win, self.pooled, self.z);
        let (oh, ow, co) = (z.oh, z.ow, z.co);
        let n = value.as_ref().map(|v| v.dim().0).or(arg.as_ref().map(|a| a.dim().0)).unwrap_or(0);
        let (img, conv_s) = s.split_at_mut(oh * ow * co);
        let d = Dims { n: 1, ..z.into() };
        let direct = self.strategy == Strategy::Direct && direct::available();
        for b in 0..n {
            let xb = x.slice(s![b0 + b..b0 + b + 1, .., .., ..]);
            let mut ob = ArrayViewMut4::from_shape((1, oh, ow, co), &mut img[..]).expect("the scratch holds one image");
            if d.k() == 0 {
                ob.fill(0.0);
            } else if direct {
                direct::forward_in(&xb, w, &geo, &mut ob, &d, conv_s);
            } else {
                conv2d_in(xb, w.view(), geo, ob, &d, conv_s);
            }
            let mut vb = value.as_mut().map(|v| v.slice_mut(s![b, .., .., ..]));
            let mut ab = arg.as_mut().map(|a| a.slice_mut(s![b, .., .., ..]));
            let standard = vb.as_ref().is_none_or(|v| v.is_standard_layout())
                && ab.as_ref().is_none_or(|a| a.is_standard_layout());
            if standard {
                let vs = vb.as_mut().and_then(|v| v.as_slice_mut());
                let as_ = ab.as_mut().and_then(|a| a.as_slice_mut());
                pool::max_pool_image(img, (oh, ow, co), bv, win, pooled, vs, as_);
                continue;
            }
            for oi in 0..pooled.0 {
                for oj in 0..pooled.1 {
                    for (c, &bc) in bv.iter().enumerate() {
                        let (m, at) = pool::window_max(img, (oh, ow, co), bc, win, (oi, oj, c));
                        if let Some(v) = vb.as_mut() {
                            v[[oi, oj, c]] = m;
                        }
                        if let Some(a) = ab.as_mut() {
                            a[[oi, oj, c]] = at;
                        }
                    }
                }
            }
        }
    }
}

impl From<Sizes> for Dims {
    fn from(z: Sizes) -> Dims {
        Dims { n: z.n, h: z.h, w: z.w, ci: z.ci, kh: z.kh, kw: z.kw, co: z.co, oh: z.oh, ow: z.ow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{max_pool_argmax, pool_pick};
    use ndarray::{Array1, Array4};

    /// The unfused ops: the conv over the whole batch, the bias add, the argmax, the pick.
    #[allow(clippy::too_many_arguments)]
    fn unfused(
        strategy: Strategy,
        x: ArrayView4<'_, f32>,
        w: ArrayView4<'_, f32>,
        bias: &Array1<f32>,
        geo: Geometry,
        [oh, ow]: [usize; 2],
        win: Window,
        pooled: (usize, usize),
    ) -> (Array4<f32>, Array4<u32>) {
        let (n, co) = (x.dim().0, w.dim().3);
        let mut a = Array4::zeros((n, oh, ow, co));
        super::super::conv2d_with(strategy, x, w, geo, a.view_mut(), &mut Vec::new());
        a += bias;
        let mut at = Array4::zeros((n, pooled.0, pooled.1, co));
        max_pool_argmax(a.view(), win, at.view_mut());
        let mut v = Array4::zeros((n, pooled.0, pooled.1, co));
        pool_pick(a.view(), at.view(), win, v.view_mut());
        (v, at)
    }

    /// The fused call equals the unfused ops bit for bit, values and argmax, on both
    /// strategies, over conv geometries ("same", "valid", strided, dilated) times
    /// pooling windows (tiling, a floor row and column, "same" padding, overlapping),
    /// channel counts around the 16-lane vector (3, 16, 17, 32, 70), with and without
    /// a bias, through contiguous and strided outputs and a reversed input view, with a
    /// NaN in one image and a batch of 0. The values are small integers (exact whatever
    /// the summation order), so that whole windows tie and the first-maximum rule shows.
    #[test]
    fn the_fused_conv_pool_equals_the_unfused_ops_bit_for_bit() {
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // (h, w, kh, kw, stride, dilation, "same")
        let convs = [
            (9, 8, 3, 3, 1, 1, false),
            (8, 8, 3, 3, 1, 1, true),
            (11, 10, 5, 5, 1, 1, true),
            (11, 9, 3, 2, 2, 1, true),
            (12, 11, 3, 3, 1, 2, false),
        ];
        // (kh, kw, sh, sw, "same")
        let pools = [(2, 2, 2, 2, false), (2, 2, 2, 2, true), (3, 3, 1, 1, false), (3, 2, 2, 1, true)];
        let mut cases = 0;
        for (ci_, &(h, w, kh, kw, st, dl, same)) in convs.iter().enumerate() {
            let out = |n: usize, k: usize| {
                let span = (k - 1) * dl + 1;
                if same {
                    n.div_ceil(st)
                } else {
                    (n - span) / st + 1
                }
            };
            let (oh, ow) = (out(h, kh), out(w, kw));
            let pad = |n: usize, k: usize, o: usize| {
                if same {
                    ((o - 1) * st + (k - 1) * dl + 1).saturating_sub(n) / 2
                } else {
                    0
                }
            };
            let geo = Geometry { stride: [st, st], dilation: [dl, dl], pad: [pad(h, kh, oh), pad(w, kw, ow)] };
            for (pi, &(pkh, pkw, psh, psw, psame)) in pools.iter().enumerate() {
                let po = |n: usize, k: usize, s: usize| if psame { n.div_ceil(s) } else { (n - k) / s + 1 };
                let (ph, pw) = (po(oh, pkh, psh), po(ow, pkw, psw));
                let pp = |n: usize, k: usize, s: usize, o: usize| {
                    if psame {
                        ((o - 1) * s + k).saturating_sub(n) / 2
                    } else {
                        0
                    }
                };
                let win = Window {
                    kh: pkh,
                    kw: pkw,
                    sh: psh,
                    sw: psw,
                    top: pp(oh, pkh, psh, ph),
                    left: pp(ow, pkw, psw, pw),
                };
                for (ci, co) in [(1, 16), (3, 17), (16, 32), (2, 3), (5, 70)] {
                    for n in [0, 2] {
                        let x = Array4::from_shape_fn((n, h, w, ci), |(b, i, j, c)| {
                            if ci_ == 1 && b == 1 && i == 2 && j == 3 && c == 0 {
                                f32::NAN
                            } else {
                                ((b * 7 + i * 3 + j * 5 + c) % 3) as f32 - 1.0
                            }
                        });
                        let k = Array4::from_shape_fn((kh, kw, ci, co), |(i, j, c, o)| {
                            ((i + 2 * j + c + o) % 3) as f32 - 1.0
                        });
                        let bias = Array1::from_shape_fn(co, |o| (o % 4) as f32 * 0.5);
                        for strategy in [Strategy::Im2col, Strategy::Direct] {
                            let (want_v, want_a) =
                                unfused(strategy, x.view(), k.view(), &bias, geo, [oh, ow], win, (ph, pw));
                            let (mut v, mut a) = (Array4::zeros((n, ph, pw, co)), Array4::<u8>::zeros((n, ph, pw, co)));
                            let mut s = Vec::new();
                            fn f(
                                (strategy, k, bias, geo, size, win): (
                                    Strategy,
                                    &Array4<f32>,
                                    &Array1<f32>,
                                    Geometry,
                                    [usize; 2],
                                    Window,
                                ),
                                x: ArrayView4<'_, f32>,
                                v: Option<ArrayViewMut4<'_, f32>>,
                                a: Option<ArrayViewMut4<'_, u8>>,
                                s: &mut Vec<f32>,
                            ) {
                                conv2d_max_pool_with(strategy, x, k.view(), Some(bias.view()), geo, size, win, v, a, s)
                            }
                            let cfg = (strategy, &k, &bias, geo, [oh, ow], win);
                            f(cfg, x.view(), Some(v.view_mut()), Some(a.view_mut()), &mut s);
                            let what = format!("conv {ci_}, pool {pi}, {ci} -> {co}, n {n}, {strategy:?}");
                            assert_eq!(bits(&v), bits(&want_v), "values, {what}");
                            assert_eq!(a.mapv(u32::from), want_a, "argmax, {what}");
                            // A reversed input view and strided outputs: the index path.
                            let rev = x.slice(s![.., ..;-1, .., ..]).as_standard_layout().into_owned();
                            let (mut vw, mut aw) =
                                (Array4::zeros((n, ph, 2 * pw, co)), Array4::<u8>::zeros((n, ph, 2 * pw, co)));
                            f(
                                cfg,
                                rev.slice(s![.., ..;-1, .., ..]),
                                Some(vw.slice_mut(s![.., .., ..;2, ..])),
                                Some(aw.slice_mut(s![.., .., ..;2, ..])),
                                &mut s,
                            );
                            assert_eq!(
                                bits(&vw.slice(s![.., .., ..;2, ..]).to_owned()),
                                bits(&want_v),
                                "strided values, {what}"
                            );
                            assert_eq!(
                                aw.slice(s![.., .., ..;2, ..]).mapv(u32::from),
                                want_a,
                                "strided argmax, {what}"
                            );
                            // The value alone (inference), and no bias.
                            let mut v1 = Array4::zeros((n, ph, pw, co));
                            f(cfg, x.view(), Some(v1.view_mut()), None, &mut s);
                            assert_eq!(bits(&v1), bits(&want_v), "value alone, {what}");
                            let zero = Array1::zeros(co);
                            let (nb_v, nb_a) =
                                unfused(strategy, x.view(), k.view(), &zero, geo, [oh, ow], win, (ph, pw));
                            let (mut v2, mut a2) =
                                (Array4::zeros((n, ph, pw, co)), Array4::<u8>::zeros((n, ph, pw, co)));
                            conv2d_max_pool_with(
                                strategy,
                                x.view(),
                                k.view(),
                                None,
                                geo,
                                [oh, ow],
                                win,
                                Some(v2.view_mut()),
                                Some(a2.view_mut()),
                                &mut s,
                            );
                            assert_eq!(bits(&v2), bits(&nb_v), "no bias, {what}");
                            assert_eq!(a2.mapv(u32::from), nb_a, "no bias argmax, {what}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 5 * 4 * 5 * 2 * 2);
    }
}
