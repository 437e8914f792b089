//! The direct strategy: register-blocked AVX-512 kernels that read the taps straight
//! from a zero-padded copy of one image (no `cols` matrix, no packing).
//!
//! - forward: a tile of `R` adjacent output pixels of one row x `V` 16-lane vectors of
//!   output channels (`R * V <= 24` accumulators in zmm registers); per tap, `V` loads of
//!   the kernel row `w[tap, ..]` (HWIO is `[kh kw ci, co]` already, read in place) and
//!   `R` broadcasts of the input, `R * V` FMAs. Over `co > 64` the tile walks groups of
//!   64 channels; the last vector of a group is masked, so any `co` works.
//! - weight gradient: a tile of `T` taps x `V` vectors of `co`, accumulated over every
//!   output pixel of one image (its output gradient is read once per tap block, from L1
//!   or L2), then added into a `[k, co]` accumulator: input x output-gradient over
//!   pixels, never a convolution with batch and channels swapped.
//! - input gradient (stride 1 only): the forward kernel on the output gradient with the
//!   kernel flipped and its channel axes swapped (`w'[i, j, o, c] = w[kh-1-i, kw-1-j, c,
//!   o]`, built in the scratch per call) and padding `(k - 1) d - pad`: oneDNN's design.
//!
//! The padded copy (`hp x wp x ci` floats, zero outside the image) is what makes every
//! stride, padding, dilation and view one code path: a tap in the padding reads a zero,
//! and a strided or reversed view is read through its own indexing once per call. The
//! kernels need AVX-512F; [`available`] says whether this CPU (and `MODELC_KERNEL`)
//! allows it, and the caller falls back to im2col otherwise.

use ndarray::{s, ArrayView4, ArrayViewMut4, Axis};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::par::{self, MAX_PARTS};
use super::{Dims, Geometry};

/// Whether the direct kernels can run here: AVX-512F detected and not capped below it
/// by `MODELC_KERNEL` (sgemm's choice, which every vector kernel of the runtime follows).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::sgemm::kernel() == crate::sgemm::Kernel::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The padded image's rows and columns: exactly what the output's windows read
/// (`(o - 1) * s + (k - 1) * d + 1`), 0 when there is no output.
fn padded(d: &Dims, geo: &Geometry) -> (usize, usize) {
    let one = |o: usize, k: usize, s: usize, dl: usize| if o == 0 { 0 } else { (o - 1) * s + (k.max(1) - 1) * dl + 1 };
    (one(d.oh, d.kh, geo.stride[0], geo.dilation[0]), one(d.ow, d.kw, geo.stride[1], geo.dilation[1]))
}

/// The floating-point operations of one pass (a multiply-add is two).
fn flops(d: &Dims) -> usize {
    2 * d.pixels() * d.k() * d.co
}

/// The parts a forward pass (or an input gradient, as the forward pass of `d`) is cut
/// into: over images.
fn image_parts(d: &Dims) -> usize {
    par::parts(d.n, flops(d))
}

/// The parts a weight-gradient pass is cut into: over kernel taps (`kh kw ci` rows of
/// `dw`), each part summing its rows over the whole batch as one thread would.
fn tap_parts(d: &Dims) -> usize {
    par::parts(d.k(), flops(d))
}

/// The scratch floats of one part of a forward pass: the padded image and a row of the
/// output (for a non-standard output view).
fn image_part_scratch(d: &Dims, geo: &Geometry) -> usize {
    let (hp, wp) = padded(d, geo);
    hp * wp * d.ci + d.ow * d.co
}

/// The scratch floats a forward call needs: a contiguous copy of the kernel (only used
/// for a non-standard kernel view), then each part's (see [`image_part_scratch`]).
pub(super) fn forward_scratch(d: &Dims, geo: &Geometry) -> usize {
    d.k() * d.co + image_parts(d) * image_part_scratch(d, geo)
}

/// The scratch floats of one part of a weight-gradient pass: the padded image and one
/// image of the output gradient (for a non-standard view).
fn tap_part_scratch(d: &Dims, geo: &Geometry) -> usize {
    let (hp, wp) = padded(d, geo);
    hp * wp * d.ci + d.oh * d.ow * d.co
}

/// The scratch floats a weight-gradient call needs: the `[k, co]` accumulator, then
/// each part's (see [`tap_part_scratch`]); summed by [`halves`], a second accumulator
/// and two parts' scratch.
pub(super) fn grad_filter_scratch(d: &Dims, geo: &Geometry) -> usize {
    if halves(d) {
        return 2 * (d.k() * d.co + tap_part_scratch(d, geo));
    }
    d.k() * d.co + tap_parts(d) * tap_part_scratch(d, geo)
}

/// Whether a weight-gradient pass sums the two halves of its batch apart (images
/// `..n / 2` and `n / 2..`, each over every tap), then adds the second sum to the first:
/// where the pass is at most four tiles of taps per image (`k * vectors <= 4 * MAX_ACC`),
/// so bound by reading the output gradient (C1 conv1's 25 taps x 32 channels, 5 MB a
/// batch; C2 conv1's 9 x 16), which the tap cut made every part read whole (1.0-1.12x
/// on two threads). By shape only, so that 1 and 2 threads give the same bits (one
/// thread sums the halves one after the other); at least [`par::SPLIT_MIN_FLOPS`], so
/// small passes keep the one sum.
pub(super) fn halves(d: &Dims) -> bool {
    d.n >= 2 && d.k() * d.co.div_ceil(16) <= 4 * MAX_ACC && flops(d) >= par::SPLIT_MIN_FLOPS
}

/// The input gradient's geometry and sizes as a forward convolution of the output
/// gradient (stride 1 only): `ci` and `co` swap, the image is `oh x ow`, the output
/// `h x w`, the padding before is `(k - 1) * d - pad`.
pub(super) fn transposed(d: &Dims, geo: &Geometry) -> (Dims, Geometry) {
    let t = Dims { n: d.n, h: d.oh, w: d.ow, ci: d.co, kh: d.kh, kw: d.kw, co: d.ci, oh: d.h, ow: d.w };
    let pad = |a: usize, k: usize| ((k.max(1) - 1) * geo.dilation[a]).saturating_sub(geo.pad[a]);
    (t, Geometry { stride: [1, 1], dilation: geo.dilation, pad: [pad(0, d.kh), pad(1, d.kw)] })
}

/// The scratch floats an input-gradient call needs: the flipped kernel and the forward
/// call's parts on the transposed sizes.
pub(super) fn grad_input_scratch(d: &Dims, geo: &Geometry) -> usize {
    let (t, tg) = transposed(d, geo);
    d.k() * d.co + image_parts(&t) * image_part_scratch(&t, &tg)
}

/// Grows `scratch` to `len` floats on first use only.
fn grow(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    &mut scratch[..len]
}

/// Copies image `b` of `x` into `img` (`hp x wp x ci`), `pad` zero rows/columns before,
/// zeros after; rows and columns the windows never read are left out.
fn pad_image(x: &ArrayView4<'_, f32>, b: usize, pad: [usize; 2], hp: usize, wp: usize, img: &mut [f32]) {
    let (_, h, w, ci) = x.dim();
    img.fill(0.0);
    let cols = w.min(wp.saturating_sub(pad[1]));
    let xs = x.as_slice();
    for iy in 0..h {
        let py = iy + pad[0];
        if py >= hp {
            break;
        }
        let at = (py * wp + pad[1]) * ci;
        let dst = &mut img[at..at + cols * ci];
        match xs {
            Some(xs) => {
                let from = (b * h + iy) * w * ci;
                dst.copy_from_slice(&xs[from..from + cols * ci]);
            }
            None => {
                for (v, &s) in dst.iter_mut().zip(x.slice(s![b, iy, ..cols, ..]).iter()) {
                    *v = s;
                }
            }
        }
    }
}

/// `out = conv2d(x, w)` by the direct kernel; the caller checked [`available`].
pub(super) fn forward(
    x: &ArrayView4<'_, f32>,
    w: &ArrayView4<'_, f32>,
    geo: &Geometry,
    out: &mut ArrayViewMut4<'_, f32>,
    d: &Dims,
    scratch: &mut Vec<f32>,
) {
    forward_in(x, w, geo, out, d, grow(scratch, forward_scratch(d, geo)));
}

/// [`forward`] with its scratch given as a slice of at least [`forward_scratch`] floats
/// (the fused conv + pool keeps its own buffers beside it).
pub(super) fn forward_in(
    x: &ArrayView4<'_, f32>,
    w: &ArrayView4<'_, f32>,
    geo: &Geometry,
    out: &mut ArrayViewMut4<'_, f32>,
    d: &Dims,
    s: &mut [f32],
) {
    let (wbuf, parts) = s.split_at_mut(d.k() * d.co);
    let wm: &[f32] = match w.as_slice() {
        Some(ws) => ws,
        None => {
            for (dst, &v) in wbuf.iter_mut().zip(w.iter()) {
                *dst = v;
            }
            wbuf
        }
    };
    forward_with(x, wm, geo, out, d, parts);
}

/// The forward pass with the kernel given as a contiguous `[kh kw ci, co]` matrix, cut
/// over images into [`image_parts`] parts, `s` holding each part's scratch.
fn forward_with(
    x: &ArrayView4<'_, f32>,
    wm: &[f32],
    geo: &Geometry,
    out: &mut ArrayViewMut4<'_, f32>,
    d: &Dims,
    s: &mut [f32],
) {
    let per = image_part_scratch(d, geo);
    let parts = image_parts(d).min(s.len() / per.max(1)).max(1);
    if parts == 1 {
        forward_images(x, wm, geo, out.view_mut(), d, 0, &mut s[..per]);
        return;
    }
    let mut items: [Option<(ArrayViewMut4<'_, f32>, &mut [f32])>; MAX_PARTS] = std::array::from_fn(|_| None);
    let (mut rest, mut srest) = (out.view_mut(), &mut s[..parts * per]);
    for (i, slot) in items.iter_mut().enumerate().take(parts) {
        let (o, more) = rest.split_at(Axis(0), par::cut(d.n, parts, i + 1) - par::cut(d.n, parts, i));
        let (sc, smore) = srest.split_at_mut(per);
        *slot = Some((o, sc));
        (rest, srest) = (more, smore);
    }
    par::each(items, parts, |i, (o, sc)| forward_images(x, wm, geo, o, d, par::cut(d.n, parts, i), sc));
}

/// The forward pass of images `b0..b0 + out.dim().0` of `x` into `out`, `s` one part's
/// scratch ([`image_part_scratch`]).
fn forward_images(
    x: &ArrayView4<'_, f32>,
    wm: &[f32],
    geo: &Geometry,
    mut out: ArrayViewMut4<'_, f32>,
    d: &Dims,
    b0: usize,
    s: &mut [f32],
) {
    let (hp, wp) = padded(d, geo);
    let (img, obuf) = s.split_at_mut(hp * wp * d.ci);
    let standard = out.is_standard_layout();
    let t = Taps {
        kh: d.kh,
        kw: d.kw,
        ci: d.ci,
        co: d.co,
        row: geo.dilation[0] * wp * d.ci,
        col: geo.dilation[1] * d.ci,
        step: geo.stride[1] * d.ci,
        down: geo.stride[0] * wp * d.ci,
        orow: d.ow * d.co,
    };
    // Two output rows a tile where the output is standard (the rows adjacent in memory),
    // there are two vectors of channels or more, and the kernel matrix streams from L2
    // (more than PAIR_MIN_KERNEL floats): `rows`.
    let pair = standard && d.co > 16 && d.k() * d.co > PAIR_MIN_KERNEL;
    for b in 0..out.dim().0 {
        pad_image(x, b0 + b, geo.pad, hp, wp, img);
        let mut oy = 0;
        while oy < d.oh {
            let xrow = &img[oy * t.down..];
            match out.as_slice_mut().filter(|_| standard) {
                Some(os) => {
                    let h = if pair && oy + 1 < d.oh { 2 } else { 1 };
                    let at = (b * d.oh + oy) * t.orow;
                    rows(&t, xrow, wm, &mut os[at..at + h * t.orow], d.ow, h);
                    oy += h;
                }
                None => {
                    rows(&t, xrow, wm, &mut obuf[..t.orow], d.ow, 1);
                    for (dst, &v) in out.slice_mut(s![b, oy, .., ..]).iter_mut().zip(obuf.iter()) {
                        *dst = v;
                    }
                    oy += 1;
                }
            }
        }
    }
}

/// `dx` of `conv2d(x, w)` (stride 1) by the forward kernel on `g` with the flipped,
/// channel-swapped kernel.
pub(super) fn grad_input(
    g: &ArrayView4<'_, f32>,
    w: &ArrayView4<'_, f32>,
    geo: &Geometry,
    dx: &mut ArrayViewMut4<'_, f32>,
    d: &Dims,
    scratch: &mut Vec<f32>,
) {
    let (t, tg) = transposed(d, geo);
    let s = grow(scratch, grad_input_scratch(d, geo));
    let (wt, parts) = s.split_at_mut(d.k() * d.co);
    // wt[i, j, o, c] = w[kh-1-i, kw-1-j, c, o].
    let (kh, kw, ci, co) = (d.kh, d.kw, d.ci, d.co);
    for i in 0..kh {
        for j in 0..kw {
            let at = (i * kw + j) * co * ci;
            let dst = &mut wt[at..at + co * ci];
            match w.as_slice() {
                Some(ws) => {
                    let from = ((kh - 1 - i) * kw + (kw - 1 - j)) * ci * co;
                    let tap = &ws[from..from + ci * co];
                    for (o, row) in dst.chunks_exact_mut(ci).enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = tap[c * co + o];
                        }
                    }
                }
                None => {
                    let tap = w.slice(s![kh - 1 - i, kw - 1 - j, .., ..]);
                    for o in 0..co {
                        for c in 0..ci {
                            dst[o * ci + c] = tap[[c, o]];
                        }
                    }
                }
            }
        }
    }
    forward_with(g, wt, &tg, dx, &t, parts);
}

/// `dw` of `conv2d(x, w)` by the direct weight-gradient kernel.
pub(super) fn grad_filter(
    x: &ArrayView4<'_, f32>,
    g: &ArrayView4<'_, f32>,
    geo: &Geometry,
    dw: &mut ArrayViewMut4<'_, f32>,
    d: &Dims,
    scratch: &mut Vec<f32>,
) {
    let s = grow(scratch, grad_filter_scratch(d, geo));
    let (acc, rest) = s.split_at_mut(d.k() * d.co);
    acc.fill(0.0);
    let (k, per) = (d.k(), tap_part_scratch(d, geo));
    let parts = tap_parts(d).min(rest.len() / per.max(1)).max(1);
    if halves(d) {
        let (acc1, rest) = rest.split_at_mut(k * d.co);
        acc1.fill(0.0);
        let (s0, s1) = rest[..2 * per].split_at_mut(per);
        let half = par::cut(d.n, 2, 1);
        if par::parts(2, flops(d)) == 1 {
            filter_taps(x, g, geo, d, 0..k, 0..half, acc, s0);
            filter_taps(x, g, geo, d, 0..k, half..d.n, acc1, s1);
        } else {
            let mut items: [Option<(&mut [f32], &mut [f32])>; MAX_PARTS] = std::array::from_fn(|_| None);
            (items[0], items[1]) = (Some((&mut acc[..], s0)), Some((&mut acc1[..], s1)));
            par::each(items, 2, |i, (a, sc)| {
                let images = if i == 0 { 0..half } else { half..d.n };
                filter_taps(x, g, geo, d, 0..k, images, a, sc)
            });
        }
        for (a, &b) in acc.iter_mut().zip(acc1.iter()) {
            *a += b;
        }
    } else if parts == 1 {
        filter_taps(x, g, geo, d, 0..k, 0..d.n, acc, &mut rest[..per]);
    } else {
        let mut items: [Option<(&mut [f32], &mut [f32])>; MAX_PARTS] = std::array::from_fn(|_| None);
        let (mut arest, mut srest) = (&mut acc[..], &mut rest[..parts * per]);
        for (i, slot) in items.iter_mut().enumerate().take(parts) {
            let (a, amore) = arest.split_at_mut((par::cut(k, parts, i + 1) - par::cut(k, parts, i)) * d.co);
            let (sc, smore) = srest.split_at_mut(per);
            *slot = Some((a, sc));
            (arest, srest) = (amore, smore);
        }
        par::each(items, parts, |i, (a, sc)| {
            filter_taps(x, g, geo, d, par::cut(k, parts, i)..par::cut(k, parts, i + 1), 0..d.n, a, sc)
        });
    }
    match dw.as_slice_mut() {
        Some(ds) => ds.copy_from_slice(acc),
        None => {
            for (dst, &v) in dw.iter_mut().zip(acc.iter()) {
                *dst = v;
            }
        }
    }
}

/// The rows `taps` of the weight gradient (`acc`: those rows of the `[k, co]` matrix)
/// summed over `images` of the batch, image after image, into `acc`, `s` one part's
/// scratch ([`tap_part_scratch`]). Each element is the same sum whatever the rows' cut
/// into parts and blocks: a tile's lanes are independent.
#[allow(clippy::too_many_arguments)]
fn filter_taps(
    x: &ArrayView4<'_, f32>,
    g: &ArrayView4<'_, f32>,
    geo: &Geometry,
    d: &Dims,
    taps: std::ops::Range<usize>,
    images: std::ops::Range<usize>,
    acc: &mut [f32],
    s: &mut [f32],
) {
    let (hp, wp) = padded(d, geo);
    let (img, gbuf) = s.split_at_mut(hp * wp * d.ci);
    let per = d.oh * d.ow * d.co;
    let gs = g.as_slice();
    // The tap offsets in the padded image, tap-major as HWIO: (i d0 wp + j d1) ci + c.
    let mut block = [0usize; MAX_ACC];
    for b in images {
        pad_image(x, b, geo.pad, hp, wp, img);
        let gimg: &[f32] = match gs {
            Some(gs) => &gs[b * per..(b + 1) * per],
            None => {
                for (dst, &v) in gbuf.iter_mut().zip(g.slice(s![b, .., .., ..]).iter()) {
                    *dst = v;
                }
                &gbuf[..per]
            }
        };
        let px = Pixels { oh: d.oh, ow: d.ow, co: d.co, row: geo.stride[0] * wp * d.ci, step: geo.stride[1] * d.ci };
        for g0 in (0..d.co).step_by(GROUP) {
            let v = (d.co - g0).min(GROUP).div_ceil(16);
            let tmax = MAX_ACC / v;
            // Blocks of equal size (13 taps as 7 and 6 rather than 12 and 1).
            let len = taps.len();
            let nt = len.div_ceil(len.div_ceil(tmax).max(1));
            let mut t0 = taps.start;
            while t0 < taps.end {
                let nt = nt.min(taps.end - t0);
                for (slot, tap) in block[..nt].iter_mut().zip(t0..) {
                    let (ij, c) = (tap / d.ci, tap % d.ci);
                    let (i, j) = (ij / d.kw, ij % d.kw);
                    *slot = (i * geo.dilation[0] * wp + j * geo.dilation[1]) * d.ci + c;
                }
                let dst = &mut acc[(t0 - taps.start) * d.co + g0..];
                filter_tile(&px, img, &gimg[g0..], &block[..nt], dst, (d.co - g0).min(GROUP));
                t0 += nt;
            }
        }
    }
}

/// Accumulators per tile: 24 of the 32 zmm registers (the rest hold the kernel row or
/// the gradient vectors and a broadcast).
const MAX_ACC: usize = 24;

/// Output channels per tile: four 16-lane vectors.
const GROUP: usize = 64;

/// Output channels per two-row forward tile: two 16-lane vectors.
const PAIR_GROUP: usize = 32;

/// The smallest kernel matrix (floats) the forward pass tiles two rows at a time: 32 KiB,
/// past what the 48 KiB L1d keeps beside the padded image. Below it (C1 conv1's 3 KiB,
/// C2 conv2's 18 KiB) the kernel rows come from L1 and the one-row tiles, longer, measured
/// as fast or faster (C1 conv1's fused forward 483-485 us one-row against 490-513
/// two-row on two threads; C2's step 3-7% slower at one thread in 2 of 3 rounds).
const PAIR_MIN_KERNEL: usize = 8192;

/// The forward tile's strides (in floats) and sizes.
struct Taps {
    kh: usize,
    kw: usize,
    ci: usize,
    co: usize,
    /// Between two kernel rows in the padded image.
    row: usize,
    /// Between two kernel columns.
    col: usize,
    /// Between two adjacent output pixels' windows.
    step: usize,
    /// Between two adjacent output rows' windows.
    down: usize,
    /// Between two adjacent output rows (floats of the output: `ow * co`).
    orow: usize,
}

/// The weight-gradient tile's pixel walk over one image.
struct Pixels {
    oh: usize,
    ow: usize,
    co: usize,
    /// Between two output rows' windows in the padded image.
    row: usize,
    /// Between two adjacent output pixels' windows.
    step: usize,
}

/// The lane mask of the last vector of a group of `width` channels.
#[inline]
fn last_mask(width: usize) -> u16 {
    let r = width - 16 * (width.div_ceil(16) - 1);
    if r == 16 {
        u16::MAX
    } else {
        (1u16 << r) - 1
    }
}

/// `h` output rows (1 or 2; `ow` pixels x `co` channels each, into `orow`, `t.orow`
/// floats apart), their windows starting in `xrow` (the padded image from the first
/// row's top-left tap; the second row's `t.down` floats on).
///
/// Two rows go in tiles of `R` pixels x 2 rows x `V <= 2` vectors (channel groups of 32):
/// the kernel rows loaded for a tap serve twice the pixels, so the kernel matrix (read
/// from L2 for every tile: 200 KiB for C1 conv2) is streamed half as often per FMA as by
/// one-row tiles of 4 vectors (C1 conv2's forward: 6.4 bytes per FMA against 12.8).
fn rows(t: &Taps, xrow: &[f32], wm: &[f32], orow: &mut [f32], ow: usize, h: usize) {
    // Every read below stays inside `xrow`, `wm` and `orow`: the padded image covers every
    // window (`padded`), `wm` is `k * co`, `orow` is `h` rows. Checked in release builds
    // too (once a call): the public entry points take views whose shapes a direct caller
    // of the runtime could get wrong, and the tiles read through raw pointers.
    assert!(h == 1 || h == 2);
    assert!(
        ow == 0 || xrow.len() >= (h - 1) * t.down + (ow - 1) * t.step + (t.kh - 1) * t.row + (t.kw - 1) * t.col + t.ci
    );
    assert!(wm.len() >= t.kh * t.kw * t.ci * t.co && orow.len() >= (h - 1) * t.orow + ow * t.co);
    let group = if h == 2 { PAIR_GROUP } else { GROUP };
    #[cfg(target_arch = "x86_64")]
    for g0 in (0..t.co).step_by(group) {
        let width = (t.co - g0).min(group);
        let v = width.div_ceil(16);
        let rmax = MAX_ACC / (v * h);
        // Blocks of equal size (28 pixels in blocks of 10, 10, 8 rather than 12, 12, 4).
        let blocks = ow.div_ceil(rmax);
        let r = if blocks == 0 { 0 } else { ow.div_ceil(blocks) };
        let mut ox = 0;
        while ox < ow {
            let rr = r.min(ow - ox);
            let (x, w, o) = (xrow[ox * t.step..].as_ptr(), wm[g0..].as_ptr(), orow[ox * t.co + g0..].as_mut_ptr());
            // SAFETY: `available()` (checked by the caller) saw AVX-512F; the tile reads
            // `rr` windows of `h` rows from `x`, `k` rows of `width` floats from `w` and
            // writes `h` x `rr` rows of `width` floats to `o`, all inside the slices
            // (asserted above).
            unsafe { forward_dispatch(t, rr, v, h, last_mask(width), x, w, o) };
            ox += rr;
        }
    }
}

/// Adds one tap block (offsets `taps` into the padded image) x one channel group of
/// `width` of the weight gradient over every pixel of the image into `acc` (rows of `co`).
fn filter_tile(px: &Pixels, img: &[f32], g: &[f32], taps: &[usize], acc: &mut [f32], width: usize) {
    // As in `row`, checked in release builds (once per image and block of taps).
    assert!(taps
        .iter()
        .all(|&o| px.oh == 0 || px.ow == 0 || o + (px.oh - 1) * px.row + (px.ow - 1) * px.step < img.len()));
    assert!(px.oh * px.ow == 0 || g.len() >= (px.oh * px.ow - 1) * px.co + width);
    assert!(taps.is_empty() || acc.len() >= (taps.len() - 1) * px.co + width);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `row`: AVX-512F was detected, and every access is inside the slices.
    unsafe {
        filter_dispatch(px, taps, width.div_ceil(16), last_mask(width), img.as_ptr(), g.as_ptr(), acc.as_mut_ptr())
    };
}

/// Calls `$f::<R, V>` for the runtime `r` and `v` (every `R <= 24 / V`).
macro_rules! dispatch {
    (@v $f:ident, $v:literal, $r:ident, $args:tt, [$($n:literal)*]) => {
        match $r {
            $($n => $f::<$n, $v> $args,)*
            _ => {}
        }
    };
    (@pair $f:ident, $r:expr, $v:expr, $args:tt) => {
        match ($v, $r) {
            (1, r) => dispatch!(@v $f, 1, r, $args, [1 2 3 4 5 6 7 8 9 10 11 12]),
            (_, r) => dispatch!(@v $f, 2, r, $args, [1 2 3 4 5 6]),
        }
    };
    ($f:ident, $r:expr, $v:expr, $args:tt) => {
        match ($v, $r) {
            (1, r) => dispatch!(@v $f, 1, r, $args, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24]),
            (2, r) => dispatch!(@v $f, 2, r, $args, [1 2 3 4 5 6 7 8 9 10 11 12]),
            (3, r) => dispatch!(@v $f, 3, r, $args, [1 2 3 4 5 6 7 8]),
            (_, r) => dispatch!(@v $f, 4, r, $args, [1 2 3 4 5 6]),
        }
    };
}

/// The forward tile with the pixel step `S` (floats between adjacent output pixels'
/// windows: `stride * ci`) fixed at compile time for the common layers (`ci` of 1, 16,
/// 32, 64 at stride 1; 0: read from `Taps`). With `S` known, each pixel's input is at a
/// constant displacement from the tap's base, one addressing mode of the FMA's embedded
/// broadcast; with a run-time step LLVM computed the `R` addresses by a chain of
/// integer adds per input channel, ALU work on the FMA ports (C2's 16-channel tiles ran
/// at 60% of the 32- and 64-channel ones).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_dispatch(
    t: &Taps,
    r: usize,
    v: usize,
    h: usize,
    mask: u16,
    x: *const f32,
    w: *const f32,
    o: *mut f32,
) {
    unsafe {
        if h == 2 {
            match t.step {
                1 => dispatch!(@pair forward_pair_1, r, v, (t, mask, x, w, o)),
                16 => dispatch!(@pair forward_pair_16, r, v, (t, mask, x, w, o)),
                32 => dispatch!(@pair forward_pair_32, r, v, (t, mask, x, w, o)),
                64 => dispatch!(@pair forward_pair_64, r, v, (t, mask, x, w, o)),
                _ => dispatch!(@pair forward_pair_any, r, v, (t, mask, x, w, o)),
            }
            return;
        }
        match t.step {
            1 => dispatch!(forward_tile_1, r, v, (t, mask, x, w, o)),
            16 => dispatch!(forward_tile_16, r, v, (t, mask, x, w, o)),
            32 => dispatch!(forward_tile_32, r, v, (t, mask, x, w, o)),
            64 => dispatch!(forward_tile_64, r, v, (t, mask, x, w, o)),
            _ => dispatch!(forward_tile_any, r, v, (t, mask, x, w, o)),
        }
    }
}

/// `forward_tile` for one pixel step `S` (0: any), as a function of `R` and `V` only,
/// which `dispatch!` instantiates.
macro_rules! with_step {
    ($h:literal: $($name:ident = $s:literal),*) => {$(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name<const R: usize, const V: usize>(t: &Taps, mask: u16, x: *const f32, w: *const f32, o: *mut f32) {
            unsafe { forward_tile::<R, V, $s, $h>(t, mask, x, w, o) }
        }
    )*};
}
with_step!(1: forward_tile_1 = 1, forward_tile_16 = 16, forward_tile_32 = 32, forward_tile_64 = 64, forward_tile_any = 0);
with_step!(2: forward_pair_1 = 1, forward_pair_16 = 16, forward_pair_32 = 32, forward_pair_64 = 64, forward_pair_any = 0);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn filter_dispatch(
    px: &Pixels,
    taps: &[usize],
    v: usize,
    mask: u16,
    x: *const f32,
    g: *const f32,
    acc: *mut f32,
) {
    unsafe { dispatch!(filter_tile_k, taps.len(), v, (px, taps, mask, x, g, acc)) }
}

/// `H` rows (1 or 2) of `R` output pixels x `V` vectors of channels (the last one masked
/// by `mask`): for each tap, `V` kernel-row loads, `H R` broadcasts of the input, `H R V`
/// FMAs. Each output element is the same sum (taps in order) whatever `R`, `V` and `H`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn forward_tile<const R: usize, const V: usize, const S: usize, const H: usize>(
    t: &Taps,
    mask: u16,
    x: *const f32,
    w: *const f32,
    o: *mut f32,
) {
    let step = if S == 0 { t.step } else { S };
    unsafe {
        let mut acc = [[[_mm512_setzero_ps(); V]; R]; H];
        for i in 0..t.kh {
            for j in 0..t.kw {
                let xb = x.add(i * t.row + j * t.col);
                let wb = w.add((i * t.kw + j) * t.ci * t.co);
                for c in 0..t.ci {
                    let wr = wb.add(c * t.co);
                    let mut wv = [_mm512_setzero_ps(); V];
                    for (q, slot) in wv.iter_mut().enumerate() {
                        *slot = if q + 1 == V {
                            _mm512_maskz_loadu_ps(mask, wr.add(16 * q))
                        } else {
                            _mm512_loadu_ps(wr.add(16 * q))
                        };
                    }
                    for (y, rows) in acc.iter_mut().enumerate() {
                        let xy = xb.add(y * t.down + c);
                        for (r, row) in rows.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xy.add(r * step));
                            for (a, &wq) in row.iter_mut().zip(&wv) {
                                *a = _mm512_fmadd_ps(xv, wq, *a);
                            }
                        }
                    }
                }
            }
        }
        for (y, rows) in acc.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                for (q, &a) in row.iter().enumerate() {
                    let d = o.add(y * t.orow + r * t.co + 16 * q);
                    if q + 1 == V {
                        _mm512_mask_storeu_ps(d, mask, a);
                    } else {
                        _mm512_storeu_ps(d, a);
                    }
                }
            }
        }
    }
}

/// `R` taps x `V` vectors of channels of the weight gradient, over every output pixel of
/// one image: per pixel, `V` gradient loads, `R` broadcasts of the input, `R * V` FMAs;
/// then added into `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn filter_tile_k<const R: usize, const V: usize>(
    px: &Pixels,
    taps: &[usize],
    mask: u16,
    x: *const f32,
    g: *const f32,
    out: *mut f32,
) {
    unsafe {
        let mut off = [0usize; R];
        off.copy_from_slice(&taps[..R]);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for oy in 0..px.oh {
            let xr = x.add(oy * px.row);
            let gr = g.add(oy * px.ow * px.co);
            for ox in 0..px.ow {
                let xp = xr.add(ox * px.step);
                let gp = gr.add(ox * px.co);
                let mut gv = [_mm512_setzero_ps(); V];
                for (q, slot) in gv.iter_mut().enumerate() {
                    *slot = if q + 1 == V {
                        _mm512_maskz_loadu_ps(mask, gp.add(16 * q))
                    } else {
                        _mm512_loadu_ps(gp.add(16 * q))
                    };
                }
                for (row, &o) in acc.iter_mut().zip(&off) {
                    let xv = _mm512_set1_ps(*xp.add(o));
                    for (a, &gq) in row.iter_mut().zip(&gv) {
                        *a = _mm512_fmadd_ps(xv, gq, *a);
                    }
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, &a) in row.iter().enumerate() {
                let d = out.add(r * px.co + 16 * q);
                if q + 1 == V {
                    _mm512_mask_storeu_ps(d, mask, _mm512_add_ps(a, _mm512_maskz_loadu_ps(mask, d)));
                } else {
                    _mm512_storeu_ps(d, _mm512_add_ps(a, _mm512_loadu_ps(d)));
                }
            }
        }
    }
}
