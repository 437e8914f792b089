//! 2-D convolution over NHWC images and HWIO kernels: `conv2d` and its two gradients.
//!
//! Two strategies ([`Strategy`]), picked per layer and pass by the compiler from the
//! static shape (`model-macros/core/src/ops/conv.rs`, rule and figures in docs/conv.md):
//! the direct AVX-512 kernels of `direct.rs` ([`conv2d_with`] and its siblings with
//! [`Strategy::Direct`]), and the tiled im2col here, which [`conv2d`],
//! [`conv2d_grad_input`] and [`conv2d_grad_filter`] run and everything falls back to.
//!
//! The im2col strategy is a tiled im2col onto the one matrix product ([`crate::kernels::gemm`]):
//! the `n * oh * ow` output pixels are taken [`tile_pixels`] at a time; for one tile the
//! receptive fields are copied into a `[pixels, kh * kw * ci]` matrix (`cols`, zeros
//! where a tap falls in the padding), and
//!
//! - forward: `out[tile] = cols x W`, with `W` the kernel seen as `[kh * kw * ci, co]`;
//! - weight gradient: `dW += cols^T x g[tile]`, accumulated over the tiles (input times
//!   output gradient over pixels; never a convolution with batch and channels swapped,
//!   which is what makes XLA's and old PyTorch's backward slow);
//! - input gradient (col2im): `cols = g[tile] x W^T`, then each row of `cols` added back
//!   into the receptive field it came from.
//!
//! The tile bounds the scratch matrix (about [`TILE_FLOATS`] floats whatever the batch:
//! C1's second conv would need 31 MB for a whole-batch im2col), and the scratch is the
//! caller's: generated code passes a buffer of its workspace, which grows on the first
//! call and is reused after, so a training step allocates nothing in steady state.
//!
//! Padding is given as the rows and columns added before the image (top, left); the
//! output's spatial size comes from `out` (or the gradient), so both TensorFlow
//! paddings (`"same"`: the extra row/column at the bottom/right; `"valid"`) are the same
//! code: a tap outside `[0, h) x [0, w)` reads zero. The compiler checked every shape;
//! the kernels trust them.

use ndarray::{s, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4};

use crate::kernels::gemm;

mod direct;
mod fused;
pub(crate) mod par;

pub use fused::{conv2d_max_pool_with, fused_scratch_len};

/// How one pass of a convolution is computed. The compiler picks one per layer and pass
/// from the static shape (`model-macros/core/src/ops/conv.rs`, `strategy`); the figures
/// that decided the rule are in `docs/conv.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A tiled im2col onto the matrix product: correct for everything, fastest where
    /// the receptive field is deep.
    Im2col,
    /// Register-blocked AVX-512 kernels reading a zero-padded copy of each image (see
    /// `direct.rs`). Where the CPU lacks AVX-512F (or `MODELC_KERNEL` caps it), and for
    /// the input gradient of a strided convolution, it runs [`Strategy::Im2col`].
    Direct,
}

/// One of the three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `conv2d(x, w)`.
    Forward,
    /// `dx` from the output gradient and the kernel.
    GradInput,
    /// `dw` from the image and the output gradient.
    GradFilter,
}

/// The sizes of one convolution: image `[n, h, w, ci]`, kernel `[kh, kw, ci, co]`,
/// output `[n, oh, ow, co]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Images in the batch.
    pub n: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Input channels.
    pub ci: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output channels.
    pub co: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// The scratch floats one call of `pass` by `strategy` needs (what `cost()` counts in
/// the workspace; the call grows the buffer to this on first use).
pub fn scratch_len_for(strategy: Strategy, pass: Pass, z: Sizes, geo: Geometry) -> usize {
    let d = Dims { n: z.n, h: z.h, w: z.w, ci: z.ci, kh: z.kh, kw: z.kw, co: z.co, oh: z.oh, ow: z.ow };
    match (strategy, pass) {
        (Strategy::Direct, Pass::Forward) => direct::forward_scratch(&d, &geo),
        (Strategy::Direct, Pass::GradInput) if geo.stride == [1, 1] => direct::grad_input_scratch(&d, &geo),
        (Strategy::Direct, Pass::GradFilter) => direct::grad_filter_scratch(&d, &geo),
        _ => scratch_len(d.k(), d.co, d.pixels()),
    }
}

/// [`conv2d`] by `strategy`.
pub fn conv2d_with(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    out: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let d = (x.dim(), w.dim(), out.dim());
    crate::profile::timed(move || conv_record("conv_fwd", d), || conv2d_with_inner(strategy, x, w, geo, out, scratch))
}

fn conv2d_with_inner(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    mut out: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    if strategy == Strategy::Direct && direct::available() {
        let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (x.dim(), w.dim(), out.dim());
        let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
        if d.k() == 0 {
            out.fill(0.0);
        } else {
            direct::forward(&x, &w, &geo, &mut out, &d, scratch);
        }
        return;
    }
    conv2d(x, w, geo, out, scratch)
}

/// [`conv2d_grad_input`] by `strategy` (direct for stride 1 only).
pub fn conv2d_grad_input_with(
    strategy: Strategy,
    g: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    dx: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let d = (dx.dim(), w.dim(), g.dim());
    crate::profile::timed(
        move || conv_record("conv_dx", d),
        || conv2d_grad_input_with_inner(strategy, g, w, geo, dx, scratch),
    )
}

fn conv2d_grad_input_with_inner(
    strategy: Strategy,
    g: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    mut dx: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    if strategy == Strategy::Direct && geo.stride == [1, 1] && direct::available() {
        let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (dx.dim(), w.dim(), g.dim());
        let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
        if d.k() == 0 || co == 0 {
            dx.fill(0.0);
        } else {
            direct::grad_input(&g, &w, &geo, &mut dx, &d, scratch);
        }
        return;
    }
    conv2d_grad_input(g, w, geo, dx, scratch)
}

/// [`conv2d_grad_filter`] by `strategy`.
pub fn conv2d_grad_filter_with(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    g: ArrayView4<'_, f32>,
    geo: Geometry,
    dw: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let d = (x.dim(), dw.dim(), g.dim());
    crate::profile::timed(
        move || conv_record("conv_dw", d),
        || conv2d_grad_filter_with_inner(strategy, x, g, geo, dw, scratch),
    )
}

fn conv2d_grad_filter_with_inner(
    strategy: Strategy,
    x: ArrayView4<'_, f32>,
    g: ArrayView4<'_, f32>,
    geo: Geometry,
    mut dw: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    if strategy == Strategy::Direct && direct::available() {
        let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (x.dim(), dw.dim(), g.dim());
        let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
        if d.k() == 0 {
            dw.fill(0.0);
        } else {
            direct::grad_filter(&x, &g, &geo, &mut dw, &d, scratch);
        }
        return;
    }
    conv2d_grad_filter(x, g, geo, dw, scratch)
}

type Dim4 = (usize, usize, usize, usize);

/// A conv pass's profile record (`crate::profile`), as the product it amounts to:
/// `(n oh ow) x (kh kw ci) . (kh kw ci) x co`, reading the image, kernel and output once.
pub(crate) fn conv_record(
    name: &'static str,
    ((n, h, w, ci), (kh, kw, _, co), (_, oh, ow, _)): (Dim4, Dim4, Dim4),
) -> crate::profile::Record {
    let (m, k) = (n * oh * ow, kh * kw * ci);
    crate::profile::Record {
        name,
        dims: (m, k, co),
        transposed: (false, false),
        flops: 2 * (m * k * co) as u64,
        bytes: 4 * (n * h * w * ci + k * co + m * co) as u64,
        nanos: 0,
    }
}

/// The attributes of one convolution that the shapes do not carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Output pixel `(oy, ox)` reads input rows from `oy * stride[0]`, columns from `ox * stride[1]` (before padding).
    pub stride: [usize; 2],
    /// The distance between two taps of the window, rows and columns.
    pub dilation: [usize; 2],
    /// Zero rows added above the image and zero columns added left of it.
    pub pad: [usize; 2],
}

/// About how many floats one tile's `cols` matrix holds: 256 KiB, so that the tile and
/// the packed kernel stay in L2 (2 MB here) while the product runs.
pub const TILE_FLOATS: usize = 1 << 16;

/// Output pixels per tile for a receptive field of `k = kh * kw * ci` floats: at least
/// 32 (the product's `m`), else as many as fit in [`TILE_FLOATS`].
pub fn tile_pixels(k: usize) -> usize {
    (TILE_FLOATS / k.max(1)).max(32)
}

/// The sizes of one convolution, read from its operands.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    h: usize,
    w: usize,
    ci: usize,
    kh: usize,
    kw: usize,
    co: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    /// `kh * kw * ci`: one receptive field.
    fn k(&self) -> usize {
        self.kh * self.kw * self.ci
    }

    /// `n * oh * ow`: the output pixels.
    fn pixels(&self) -> usize {
        self.n * self.oh * self.ow
    }
}

/// The scratch floats one call needs, for a receptive field of `k` floats, `co` output
/// channels and `pixels = n * oh * ow` output pixels: a tile of `cols`, room for the
/// kernel as a contiguous `[k, co]` and for a tile of the output gradient (`cost()`
/// counts it in the workspace).
pub fn scratch_len(k: usize, co: usize, pixels: usize) -> usize {
    let p = tile_pixels(k).min(pixels.max(1));
    p * k + k * co + p * co
}

/// Splits the caller's scratch into `cols` (`p * k`), the kernel's room (`k * co`) and
/// the gradient tile's (`p * co`), growing it on first use only.
fn split<'a>(scratch: &'a mut Vec<f32>, p: usize, d: &Dims) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32]) {
    let (a, b, c) = (p * d.k(), d.k() * d.co, p * d.co);
    debug_assert_eq!(a + b + c, scratch_len(d.k(), d.co, d.pixels()));
    if scratch.len() < a + b + c {
        scratch.resize(a + b + c, 0.0);
    }
    let (cols, rest) = scratch.split_at_mut(a);
    let (wbuf, rest) = rest.split_at_mut(b);
    (cols, wbuf, &mut rest[..c])
}

/// The kernel as a `[kh * kw * ci, co]` matrix: a view of it when it is in standard
/// layout (always, for a param of a training step), else a copy into `buf`.
fn kernel_matrix<'a>(w: &'a ArrayView4<'_, f32>, buf: &'a mut [f32], d: &Dims) -> ArrayView2<'a, f32> {
    if let Some(ws) = w.as_slice() {
        if let Ok(m) = ArrayView2::from_shape((d.k(), d.co), ws) {
            return m;
        }
    }
    for (dst, &v) in buf.iter_mut().zip(w.iter()) {
        *dst = v;
    }
    ArrayView2::from_shape((d.k(), d.co), &buf[..]).expect("the scratch holds k * co floats")
}

/// Rows `q0..q0 + p` of `g` (an `[n, oh, ow, co]` tensor) as a `[p, co]` matrix: a view
/// when `g` is in standard layout, else a copy into `buf`.
fn grad_rows<'a>(g: &'a ArrayView4<'_, f32>, buf: &'a mut [f32], q0: usize, p: usize, d: &Dims) -> ArrayView2<'a, f32> {
    let co = d.co;
    if let Some(gs) = g.as_slice() {
        return ArrayView2::from_shape((p, co), &gs[q0 * co..(q0 + p) * co]).expect("a tile is inside g");
    }
    for r in 0..p {
        let (b, oy, ox) = pixel(q0 + r, d);
        for (dst, &v) in buf[r * co..(r + 1) * co].iter_mut().zip(g.slice(s![b, oy, ox, ..])) {
            *dst = v;
        }
    }
    ArrayView2::from_shape((p, co), &buf[..p * co]).expect("the scratch holds p * co floats")
}

/// Output pixel `q` (flattened over `n, oh, ow`) as `(image, row, column)`.
#[inline]
fn pixel(q: usize, d: &Dims) -> (usize, usize, usize) {
    let per = d.oh * d.ow;
    let (b, r) = (q / per, q % per);
    (b, r / d.ow, r % d.ow)
}

/// The input row (or column) tap `i` of output row `o` reads, if it is inside the image
/// of `size` rows (else it reads the zero padding).
#[inline]
fn source(o: usize, i: usize, stride: usize, dilation: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + i * dilation).checked_sub(pad).filter(|&v| v < size)
}

/// The first input column of output column `ox`'s window, if the whole window row is
/// inside the image and its taps are adjacent (dilation 1 along the width): then the
/// window row is one contiguous run of `kw * ci` floats of a standard-layout image, copied
/// (or added back) at once instead of tap by tap (`kh` copies per pixel, not `kh * kw`:
/// measured 3x on C1's first conv, whose taps are single floats).
#[inline]
fn whole_row(ox: usize, geo: &Geometry, d: &Dims) -> Option<usize> {
    let ix0 = (ox * geo.stride[1]).checked_sub(geo.pad[1])?;
    (geo.dilation[1] == 1 && ix0 + d.kw <= d.w).then_some(ix0)
}

/// Copies the receptive fields of output pixels `q0..q0 + p` into `cols` (`p` rows of
/// `kh * kw * ci`, tap-major, channels contiguous as in HWIO).
fn im2col(x: &ArrayView4<'_, f32>, geo: &Geometry, d: &Dims, q0: usize, p: usize, cols: &mut [f32]) {
    let (k, ci) = (d.k(), d.ci);
    let run = d.kw * ci;
    let xs = x.as_slice();
    for r in 0..p {
        let (b, oy, ox) = pixel(q0 + r, d);
        let row = &mut cols[r * k..(r + 1) * k];
        let whole = whole_row(ox, geo, d);
        for i in 0..d.kh {
            let iy = source(oy, i, geo.stride[0], geo.dilation[0], geo.pad[0], d.h);
            let taps = &mut row[i * run..(i + 1) * run];
            match (iy, whole, xs) {
                (None, _, _) => taps.fill(0.0),
                (Some(iy), Some(ix0), Some(xs)) => {
                    let at = ((b * d.h + iy) * d.w + ix0) * ci;
                    taps.copy_from_slice(&xs[at..at + run]);
                }
                (Some(iy), _, _) => {
                    for (j, dst) in taps.chunks_exact_mut(ci).enumerate() {
                        let ix = source(ox, j, geo.stride[1], geo.dilation[1], geo.pad[1], d.w);
                        match (ix, xs) {
                            (Some(ix), Some(xs)) => {
                                let at = ((b * d.h + iy) * d.w + ix) * ci;
                                dst.copy_from_slice(&xs[at..at + ci]);
                            }
                            (Some(ix), None) => {
                                for (c, v) in dst.iter_mut().enumerate() {
                                    *v = x[[b, iy, ix, c]];
                                }
                            }
                            (None, _) => dst.fill(0.0),
                        }
                    }
                }
            }
        }
    }
}

/// `dst += src`, elementwise.
#[inline]
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o += v;
    }
}

/// Adds each row of `cols` (output pixels `q0..q0 + p`) back into the receptive field it
/// was copied from: the adjoint of [`im2col`] (taps in the padding are dropped).
fn col2im(cols: &[f32], geo: &Geometry, d: &Dims, q0: usize, p: usize, dx: &mut ArrayViewMut4<'_, f32>) {
    let (k, ci) = (d.k(), d.ci);
    let run = d.kw * ci;
    let standard = dx.is_standard_layout();
    for r in 0..p {
        let (b, oy, ox) = pixel(q0 + r, d);
        let row = &cols[r * k..(r + 1) * k];
        let whole = whole_row(ox, geo, d);
        for i in 0..d.kh {
            let Some(iy) = source(oy, i, geo.stride[0], geo.dilation[0], geo.pad[0], d.h) else { continue };
            let taps = &row[i * run..(i + 1) * run];
            match (whole, dx.as_slice_mut().filter(|_| standard)) {
                (Some(ix0), Some(dxs)) => {
                    let at = ((b * d.h + iy) * d.w + ix0) * ci;
                    add_into(&mut dxs[at..at + run], taps);
                }
                (_, Some(dxs)) => {
                    for (j, src) in taps.chunks_exact(ci).enumerate() {
                        let Some(ix) = source(ox, j, geo.stride[1], geo.dilation[1], geo.pad[1], d.w) else { continue };
                        let at = ((b * d.h + iy) * d.w + ix) * ci;
                        add_into(&mut dxs[at..at + ci], src);
                    }
                }
                (_, None) => {
                    for (j, src) in taps.chunks_exact(ci).enumerate() {
                        let Some(ix) = source(ox, j, geo.stride[1], geo.dilation[1], geo.pad[1], d.w) else { continue };
                        for (c, &v) in src.iter().enumerate() {
                            dx[[b, iy, ix, c]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `out = conv2d(x, w)`: `x` `[n, h, w, ci]`, `w` `[kh, kw, ci, co]`, `out` `[n, oh, ow, co]`.
pub fn conv2d(
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    out: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (x.dim(), w.dim(), out.dim());
    let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
    let len = scratch_len(d.k(), d.co, d.pixels());
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    conv2d_in(x, w, geo, out, &d, &mut scratch[..len]);
}

/// [`conv2d`] with its scratch given as a slice of at least [`scratch_len`] floats.
fn conv2d_in(
    x: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    mut out: ArrayViewMut4<'_, f32>,
    d: &Dims,
    scratch: &mut [f32],
) {
    let (d, co) = (*d, d.co);
    let (m, p) = (d.pixels(), tile_pixels(d.k()));
    let (cols, rest) = scratch.split_at_mut(p.min(m.max(1)) * d.k());
    let (wbuf, obuf) = rest.split_at_mut(d.k() * co);
    let wm = kernel_matrix(&w, wbuf, &d);
    if d.k() == 0 {
        // No channels in: every output is an empty sum (and `cols` has no columns).
        out.fill(0.0);
        return;
    }
    let standard = out.is_standard_layout();
    for q0 in (0..m).step_by(p) {
        let pt = p.min(m - q0);
        im2col(&x, &geo, &d, q0, pt, cols);
        let a = ArrayView2::from_shape((pt, d.k()), &cols[..pt * d.k()]).expect("the scratch holds a tile");
        match out.as_slice_mut().filter(|_| standard) {
            Some(os) => {
                let c = ArrayViewMut2::from_shape((pt, co), &mut os[q0 * co..(q0 + pt) * co])
                    .expect("a tile is inside out");
                gemm(1.0, a, wm, 0.0, c);
            }
            None => {
                // A strided `out` (never from generated code, whose buffers are contiguous).
                let c = ArrayViewMut2::from_shape((pt, co), &mut obuf[..pt * co]).expect("the scratch holds a tile");
                gemm(1.0, a, wm, 0.0, c);
                for r in 0..pt {
                    let (b, oy, ox) = pixel(q0 + r, &d);
                    for (dst, &v) in out.slice_mut(s![b, oy, ox, ..]).iter_mut().zip(&obuf[r * co..(r + 1) * co]) {
                        *dst = v;
                    }
                }
            }
        }
    }
}

/// `dx` of `conv2d(x, w)` given the output gradient `g` `[n, oh, ow, co]`: `dx` is `[n, h, w, ci]`.
pub fn conv2d_grad_input(
    g: ArrayView4<'_, f32>,
    w: ArrayView4<'_, f32>,
    geo: Geometry,
    mut dx: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (dx.dim(), w.dim(), g.dim());
    let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
    let (m, p) = (d.pixels(), tile_pixels(d.k()));
    dx.fill(0.0);
    if d.k() == 0 {
        return;
    }
    let (cols, wbuf, gbuf) = split(scratch, p.min(m.max(1)), &d);
    let wm = kernel_matrix(&w, wbuf, &d);
    for q0 in (0..m).step_by(p) {
        let pt = p.min(m - q0);
        let gm = grad_rows(&g, gbuf, q0, pt, &d);
        let c = ArrayViewMut2::from_shape((pt, d.k()), &mut cols[..pt * d.k()]).expect("the scratch holds a tile");
        gemm(1.0, gm, wm.t(), 0.0, c);
        col2im(cols, &geo, &d, q0, pt, &mut dx);
    }
}

/// `dw` of `conv2d(x, w)` given the output gradient `g` `[n, oh, ow, co]`: `dw` is `[kh, kw, ci, co]`.
pub fn conv2d_grad_filter(
    x: ArrayView4<'_, f32>,
    g: ArrayView4<'_, f32>,
    geo: Geometry,
    mut dw: ArrayViewMut4<'_, f32>,
    scratch: &mut Vec<f32>,
) {
    let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (x.dim(), dw.dim(), g.dim());
    let d = Dims { n, h, w: wd, ci, kh, kw, co, oh, ow };
    let (m, p) = (d.pixels(), tile_pixels(d.k()));
    dw.fill(0.0);
    if d.k() == 0 {
        return;
    }
    let standard = dw.is_standard_layout();
    let (cols, wbuf, gbuf) = split(scratch, p.min(m.max(1)), &d);
    // The product accumulates into a `[k, co]` matrix: `dw` itself, or the scratch.
    wbuf.fill(0.0);
    for q0 in (0..m).step_by(p) {
        let pt = p.min(m - q0);
        im2col(&x, &geo, &d, q0, pt, cols);
        let a = ArrayView2::from_shape((pt, d.k()), &cols[..pt * d.k()]).expect("the scratch holds a tile");
        let gm = grad_rows(&g, gbuf, q0, pt, &d);
        match dw.as_slice_mut().filter(|_| standard) {
            Some(ds) => gemm(1.0, a.t(), gm, 1.0, ArrayViewMut2::from_shape((d.k(), co), ds).expect("dw is k x co")),
            None => gemm(1.0, a.t(), gm, 1.0, ArrayViewMut2::from_shape((d.k(), co), &mut wbuf[..]).expect("k x co")),
        }
    }
    if !standard {
        for (dst, &v) in dw.iter_mut().zip(wbuf.iter()) {
            *dst = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array4};

    fn filled(shape: (usize, usize, usize, usize), seed: u32) -> Array4<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        Array::from_shape_fn(shape, |_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
    }

    /// The three passes in f64 by loops: `(out, dx, dw)` for the output gradient `g`.
    #[allow(clippy::type_complexity)]
    fn reference64(
        x: &Array4<f32>,
        w: &Array4<f32>,
        g: &Array4<f32>,
        geo: Geometry,
    ) -> (Array4<f64>, Array4<f64>, Array4<f64>) {
        let ((n, h, wd, ci), (kh, kw, _, co), (_, oh, ow, _)) = (x.dim(), w.dim(), g.dim());
        let mut out = Array4::<f64>::zeros((n, oh, ow, co));
        let mut dx = Array4::<f64>::zeros((n, h, wd, ci));
        let mut dw = Array4::<f64>::zeros((kh, kw, ci, co));
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (oy * geo.stride[0] + i * geo.dilation[0]) as isize - geo.pad[0] as isize;
                            let ix = (ox * geo.stride[1] + j * geo.dilation[1]) as isize - geo.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let (iy, ix) = (iy as usize, ix as usize);
                            for c in 0..ci {
                                for o in 0..co {
                                    let (xv, wv, gv) = (
                                        f64::from(x[[b, iy, ix, c]]),
                                        f64::from(w[[i, j, c, o]]),
                                        f64::from(g[[b, oy, ox, o]]),
                                    );
                                    out[[b, oy, ox, o]] += xv * wv;
                                    dx[[b, iy, ix, c]] += gv * wv;
                                    dw[[i, j, c, o]] += xv * gv;
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, dx, dw)
    }

    /// The largest `|got - want|` over `1 + mag`, `mag` the sum of the absolute values of
    /// the terms (the same sums over `|x|`, `|w|`, `|g|`): f32 rounding of a sum stays
    /// below `1e-6` of that for the few thousand terms here (its worst case grows
    /// with the count, the typical with its square root: about `6e-8 sqrt(8400) = 5e-6` of the largest term, far less of the sum
    /// for the longest, a weight gradient over 8400 pixels).
    fn rel_err(got: &Array4<f32>, want: &Array4<f64>, mag: &Array4<f64>) -> f64 {
        assert_eq!(got.dim(), want.dim());
        got.iter().zip(want).zip(mag).fold(0f64, |a, ((&g, &w), &m)| a.max((f64::from(g) - w).abs() / (1.0 + m)))
    }

    const STRATEGIES: [Strategy; 2] = [Strategy::Im2col, Strategy::Direct];

    #[test]
    fn every_strategy_agrees_with_the_f64_loops_on_every_pass() {
        // (n, h, w, ci, kh, kw, co, stride, dilation, pad, oh, ow); the fourth has 8400
        // output pixels, more than one tile of k = 50 (1310 pixels).
        let cases = [
            (2, 7, 5, 3, 3, 2, 4, [1, 1], [1, 1], [0, 0], 5, 4),
            (1, 8, 8, 2, 3, 3, 3, [2, 2], [1, 1], [0, 0], 4, 4),
            (2, 9, 6, 1, 3, 3, 2, [2, 1], [2, 1], [2, 1], 5, 6),
            (3, 70, 40, 2, 5, 5, 3, [1, 1], [1, 1], [2, 2], 70, 40),
            // More output channels than one 16-lane vector, and not a multiple of it.
            (2, 6, 5, 2, 3, 3, 20, [1, 1], [1, 1], [1, 1], 6, 5),
            // More than one 64-channel group (the direct kernels' last group masked), a
            // row longer than one register block (24 / 4 vectors = 6 pixels), dilation
            // with "same"-like padding at stride 1 (the direct input gradient).
            (2, 9, 13, 3, 3, 3, 70, [1, 1], [2, 2], [2, 2], 9, 13),
            // ci = 1 and 32 or 16 output channels, as a first layer (the direct kernels'
            // 2- and 1-vector tiles), "same" with an even kernel (the extra column right).
            (2, 12, 30, 1, 5, 5, 32, [1, 1], [1, 1], [2, 2], 12, 30),
            (2, 11, 29, 1, 2, 4, 16, [1, 1], [1, 1], [0, 1], 11, 29),
            // Wide on both sides: two channel groups out, 40 in (the direct input gradient
            // writes 40 channels: 3 vectors, the last masked).
            (1, 6, 7, 40, 3, 3, 70, [1, 1], [1, 1], [1, 1], 6, 7),
            // Stride with padding, wide channels: direct forward and weight gradient.
            (2, 10, 11, 17, 3, 3, 33, [2, 3], [1, 1], [1, 1], 5, 4),
            // Windows that skip the image's last rows/columns ("valid", stride 2).
            (1, 10, 10, 4, 3, 3, 8, [2, 2], [1, 2], [0, 0], 4, 3),
        ];
        for (n, h, w, ci, kh, kw, co, stride, dilation, pad, oh, ow) in cases {
            let geo = Geometry { stride, dilation, pad };
            let x = filled((n, h, w, ci), 1);
            let k = filled((kh, kw, ci, co), 2);
            let g = filled((n, oh, ow, co), 3);
            let (want, want_dx, want_dw) = reference64(&x, &k, &g, geo);
            let abs = |a: &Array4<f32>| a.mapv(f32::abs);
            let (mag, mag_dx, mag_dw) = reference64(&abs(&x), &abs(&k), &abs(&g), geo);
            for strategy in STRATEGIES {
                let mut scratch = Vec::new();
                let mut out = Array4::from_elem((n, oh, ow, co), 9.0);
                conv2d_with(strategy, x.view(), k.view(), geo, out.view_mut(), &mut scratch);
                let e = rel_err(&out, &want, &mag);
                assert!(e < 1e-6, "{strategy:?} forward {geo:?} co {co}: {e}");
                let mut dx = Array4::from_elem((n, h, w, ci), 9.0);
                conv2d_grad_input_with(strategy, g.view(), k.view(), geo, dx.view_mut(), &mut scratch);
                let e = rel_err(&dx, &want_dx, &mag_dx);
                assert!(e < 1e-6, "{strategy:?} grad_input {geo:?} co {co}: {e}");
                let mut dw = Array4::from_elem((kh, kw, ci, co), 9.0);
                conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, dw.view_mut(), &mut scratch);
                let e = rel_err(&dw, &want_dw, &mag_dw);
                assert!(e < 1e-6, "{strategy:?} grad_filter {geo:?} co {co}: {e}");
                let z = Sizes { n, h, w, ci, kh, kw, co, oh, ow };
                for pass in [Pass::Forward, Pass::GradInput, Pass::GradFilter] {
                    let len = scratch_len_for(strategy, pass, z, geo);
                    assert!(len > 0 && len <= scratch.len(), "{strategy:?} {pass:?}: {len} vs {}", scratch.len());
                }
            }
        }
    }

    #[test]
    fn strided_views_give_the_contiguous_answers() {
        let geo = Geometry { stride: [1, 2], dilation: [1, 1], pad: [1, 0] };
        let x = filled((2, 6, 7, 3), 4);
        let k = filled((3, 3, 3, 2), 5);
        let g = filled((2, 6, 3, 2), 6);
        // The same values in reversed (negative-stride) or permuted storage.
        let xr = x.slice(s![.., .., ..;-1, ..]).to_owned();
        let xv = xr.slice(s![.., .., ..;-1, ..]);
        let gr = g.slice(s![..;-1, .., .., ..]).to_owned();
        let gv = gr.slice(s![..;-1, .., .., ..]);
        let mut kp = Array4::zeros((3, 3, 2, 3));
        kp.assign(&k.view().permuted_axes([0, 1, 3, 2]));
        let kv = kp.view().permuted_axes([0, 1, 3, 2]);
        for strategy in STRATEGIES {
            let mut scratch = Vec::new();

            let mut a = Array4::zeros((2, 6, 3, 2));
            conv2d_with(strategy, x.view(), k.view(), geo, a.view_mut(), &mut scratch);
            let mut b = Array4::zeros((2, 6, 2, 3));
            conv2d_with(strategy, xv, kv, geo, b.view_mut().permuted_axes([0, 1, 3, 2]), &mut scratch);
            assert_eq!(a.view(), b.view().permuted_axes([0, 1, 3, 2]));

            let (mut d1, mut d2) = (Array4::zeros((2, 6, 7, 3)), Array4::zeros((2, 6, 3, 7)));
            conv2d_grad_input_with(strategy, g.view(), k.view(), geo, d1.view_mut(), &mut scratch);
            conv2d_grad_input_with(strategy, gv, kv, geo, d2.view_mut().permuted_axes([0, 1, 3, 2]), &mut scratch);
            assert_eq!(d1.view(), d2.view().permuted_axes([0, 1, 3, 2]));

            let (mut w1, mut w2) = (Array4::zeros((3, 3, 3, 2)), Array4::zeros((3, 3, 2, 3)));
            conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, w1.view_mut(), &mut scratch);
            conv2d_grad_filter_with(strategy, xv, gv, geo, w2.view_mut().permuted_axes([0, 1, 3, 2]), &mut scratch);
            assert_eq!(w1.view(), w2.view().permuted_axes([0, 1, 3, 2]));
        }
    }

    #[test]
    #[should_panic]
    fn a_direct_call_with_disagreeing_shapes_panics_instead_of_reading_out_of_bounds() {
        // The kernel takes 1 channel, the image has 2: the direct tiles (raw pointers)
        // would read past the kernel; the checks before them panic.
        let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad: [0, 0] };
        let (x, k) = (filled((1, 5, 5, 2), 1), filled((3, 3, 1, 16), 2));
        let mut out = Array4::zeros((1, 3, 3, 16));
        conv2d_with(Strategy::Direct, x.view(), k.view(), geo, out.view_mut(), &mut Vec::new());
        // Without AVX-512 the call ran im2col, which may not panic: make the test's point moot.
        assert!(direct::available(), "no AVX-512F: nothing to check");
    }

    #[test]
    fn zero_channels_give_zeros() {
        for strategy in STRATEGIES {
            let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad: [1, 1] };
            let x = Array4::<f32>::zeros((2, 4, 4, 0));
            let k = Array4::<f32>::zeros((3, 3, 0, 2));
            let mut out = Array4::from_elem((2, 4, 4, 2), 7.0f32);
            conv2d_with(strategy, x.view(), k.view(), geo, out.view_mut(), &mut Vec::new());
            assert!(out.iter().all(|&v| v == 0.0));
            let mut dx = Array4::<f32>::zeros((2, 4, 4, 0));
            conv2d_grad_input_with(strategy, out.view(), k.view(), geo, dx.view_mut(), &mut Vec::new());
            let mut dw = Array4::<f32>::zeros((3, 3, 0, 2));
            conv2d_grad_filter_with(strategy, x.view(), out.view(), geo, dw.view_mut(), &mut Vec::new());
        }
    }

    /// The direct passes and the fused conv + pool cut into 2, 3 and 5 parts (over
    /// images, or over kernel taps for the weight gradient, run on the pool's threads
    /// with `parallel`) give the bits of one part: C1's and C2's layer shapes on a small
    /// batch, a strided, dilated and a 70-channel geometry, a batch smaller than the
    /// part count, and a permuted output view. Random values, so that any change in the
    /// order of a sum would show.
    #[test]
    fn the_split_passes_give_the_bits_of_one_part() {
        use crate::pool::Window;
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // (n, h, w, ci, kh, kw, co, stride, dilation, pad, oh, ow)
        let cases = [
            (5, 14, 14, 32, 5, 5, 64, [1, 1], [1, 1], [2, 2], 14, 14),
            (5, 28, 28, 1, 5, 5, 32, [1, 1], [1, 1], [2, 2], 28, 28),
            (7, 28, 28, 1, 3, 3, 16, [1, 1], [1, 1], [0, 0], 26, 26),
            (6, 13, 13, 16, 3, 3, 32, [1, 1], [1, 1], [0, 0], 11, 11),
            (3, 10, 11, 17, 3, 3, 33, [2, 3], [1, 1], [1, 1], 5, 4),
            (2, 9, 13, 3, 3, 3, 70, [1, 1], [2, 2], [2, 2], 9, 13),
            (1, 8, 8, 16, 3, 3, 16, [1, 1], [1, 1], [1, 1], 8, 8),
        ];
        let win = Window { kh: 2, kw: 2, sh: 2, sw: 2, top: 0, left: 0 };
        for (n, h, w, ci, kh, kw, co, stride, dilation, pad, oh, ow) in cases {
            let geo = Geometry { stride, dilation, pad };
            let x = filled((n, h, w, ci), 11);
            let k = filled((kh, kw, ci, co), 12);
            let g = filled((n, oh, ow, co), 13);
            let bias = ndarray::Array1::from_shape_fn(co, |o| o as f32 * 0.01 - 0.2);
            let (ph, pw) = (oh / 2, ow / 2);
            let run = |parts: usize| {
                par::FORCE_PARTS.with(|f| f.set(parts));
                let mut scratch = Vec::new();
                let mut out = Array4::zeros((n, oh, ow, co));
                conv2d_with(Strategy::Direct, x.view(), k.view(), geo, out.view_mut(), &mut scratch);
                let mut outp = Array4::zeros((n, oh, co, ow));
                let view = outp.view_mut().permuted_axes([0, 1, 3, 2]);
                conv2d_with(Strategy::Direct, x.view(), k.view(), geo, view, &mut scratch);
                let mut dx = Array4::zeros((n, h, w, ci));
                conv2d_grad_input_with(Strategy::Direct, g.view(), k.view(), geo, dx.view_mut(), &mut scratch);
                let mut dw = Array4::zeros((kh, kw, ci, co));
                conv2d_grad_filter_with(Strategy::Direct, x.view(), g.view(), geo, dw.view_mut(), &mut scratch);
                let (mut v, mut a) = (Array4::zeros((n, ph, pw, co)), Array4::<u8>::zeros((n, ph, pw, co)));
                conv2d_max_pool_with(
                    Strategy::Direct,
                    x.view(),
                    k.view(),
                    Some(bias.view()),
                    geo,
                    [oh, ow],
                    win,
                    Some(v.view_mut()),
                    Some(a.view_mut()),
                    &mut scratch,
                );
                par::FORCE_PARTS.with(|f| f.set(0));
                let a = a.mapv(f32::from);
                [out, outp.permuted_axes([0, 1, 3, 2]).to_owned(), dx, dw, v, a].map(|t| bits(&t))
            };
            let one = run(1);
            for parts in [2, 3, 5] {
                let split = run(parts);
                for (what, (a, b)) in [
                    "forward",
                    "forward into a permuted view",
                    "grad_input",
                    "grad_filter",
                    "fused value",
                    "fused argmax",
                ]
                .iter()
                .zip(one.iter().zip(&split))
                {
                    assert!(
                        a == b,
                        "{what}, {parts} parts, n {n} {h}x{w}x{ci} -> {co} {geo:?}: not the bits of one part"
                    );
                }
            }
        }
    }

    /// The weight gradients summed by halves of the batch (whose bits the split test
    /// above and the f64 test cover: C1 conv1's shape there, and the 70 x 40 case): the
    /// first layers of C1 and C2, not their second ones, and never a batch of 1.
    #[test]
    fn the_first_layers_weight_gradients_are_summed_by_halves_of_the_batch() {
        let dims = |n, h, ci, k, co, o| Dims { n, h, w: h, ci, kh: k, kw: k, co, oh: o, ow: o };
        let got = [
            dims(50, 28, 1, 5, 32, 28),
            dims(64, 28, 1, 3, 16, 26),
            dims(5, 28, 1, 5, 32, 28),
            dims(3, 70, 2, 5, 3, 70),
            dims(50, 14, 32, 5, 64, 14),
            dims(64, 13, 16, 3, 32, 11),
            dims(1, 28, 1, 5, 32, 28),
        ]
        .map(|d| direct::halves(&d));
        assert_eq!(got, [true, true, true, true, false, false, false]);
    }

    #[test]
    fn a_batch_of_zero_writes_zero_gradients() {
        for strategy in STRATEGIES {
            let geo = Geometry { stride: [1, 1], dilation: [1, 1], pad: [0, 0] };
            let x = Array4::<f32>::zeros((0, 4, 4, 2));
            let g = Array4::<f32>::zeros((0, 2, 2, 3));
            let mut dw = Array4::from_elem((3, 3, 2, 3), 7.0f32);
            conv2d_grad_filter_with(strategy, x.view(), g.view(), geo, dw.view_mut(), &mut Vec::new());
            assert!(dw.iter().all(|&v| v == 0.0));
            let mut out = Array4::<f32>::zeros((0, 2, 2, 3));
            conv2d_with(strategy, x.view(), dw.view(), geo, out.view_mut(), &mut Vec::new());
        }
    }
}
