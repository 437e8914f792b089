//! Pooling over NHWC images: `max_pool` and `avg_pool`, forward and backward.
//!
//! A [`Window`] is the geometry the compiler fixed: the window `kh x kw`, the stride
//! `sh x sw`, and the padding before the first row and column (`top`, `left`; TF's
//! "same" puts the extra row/column at the bottom/right, so the rest is implied by the
//! output size). Output cell `(oi, oj)` covers input rows `oi * sh - top ..` and columns
//! `oj * sw - left ..`; cells outside the image are padding, which never wins a max and is
//! not counted by an average (TF's `avg_pool` divides by the valid cells only). Rows and
//! columns that no window covers ("valid" floor pooling, 11 -> 5 with size 2) get a zero
//! gradient.
//!
//! **Max pooling stores its choice.** `max_pool(x)` is two kernels: [`max_pool_argmax`]
//! writes, per output element, the offset `r * kw + c` within its window of the *first*
//! maximum in scan order (row-major in the window; a u32 workspace buffer of the output's
//! shape, allocated once), and [`pool_pick`] reads the values it names. The gradient,
//! [`max_pool_grad`], scatters each output's adjoint to exactly that one cell. Recomputing
//! the choice in the backward pass as an equality mask (`x == max`) is the classic tie
//! bug: on MNIST-like data a whole 2x2 window is often one value (zero background gives
//! exactly the bias after relu) and a mask sends 4x the gradient. TensorFlow, PyTorch
//! and JAX all pick one cell, the first in scan order, and so does this. A NaN cell
//! always takes over (the window's last NaN is picked; PyTorch's rule is `val > max ||
//! isnan(val)` too), so that NaN propagates to the loss and the training step's
//! non-finite guard reports it, instead of pooling hiding it.
//!
//! Like every kernel these write into caller-owned buffers and allocate nothing (the
//! running maxima live in a fixed stack block of [`CHUNK`] channels). Each has a fast
//! path for standard-layout (contiguous NHWC) arrays, channels innermost, and a path
//! by index for any other strides (reversed or sliced views) with the same results. They
//! trust the shapes they are given (checked at compile time and in the prologue).

use ndarray::{ArrayView4, ArrayViewMut4};

use crate::conv::par;

/// The scatter's work per cell of its image, in the units of `par::parts`'s threshold
/// (the conv passes' floating-point operations): it splits from about 256 Ki cells.
const SCATTER_WORK: usize = 4;

/// The geometry of a pooling window (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Window rows.
    pub kh: usize,
    /// Window columns.
    pub kw: usize,
    /// Row stride.
    pub sh: usize,
    /// Column stride.
    pub sw: usize,
    /// Padding rows above the image.
    pub top: usize,
    /// Padding columns left of it.
    pub left: usize,
}

/// Channels whose running maxima are kept on the stack at once.
pub const CHUNK: usize = 64;

impl Window {
    /// The valid input rows of output row `o` over an image of `h` rows: the first one,
    /// the range end, and the first one's row within the window.
    #[inline]
    fn rows(&self, o: usize, h: usize) -> (usize, usize, usize) {
        span(o, self.sh, self.kh, self.top, h)
    }

    #[inline]
    fn cols(&self, o: usize, w: usize) -> (usize, usize, usize) {
        span(o, self.sw, self.kw, self.left, w)
    }
}

/// `(first, end, first - start)` of the window `[o * s - pad, o * s - pad + k)` clipped to
/// `[0, n)`. A window always holds at least one valid cell for the geometries the
/// compiler emits (TF's "same" pads less than a window on each side).
#[inline]
fn span(o: usize, s: usize, k: usize, pad: usize, n: usize) -> (usize, usize, usize) {
    let start = o * s;
    let first = start.max(pad) - pad;
    let end = (start + k).saturating_sub(pad).min(n);
    (first, end.max(first), first + pad - start)
}

/// `idx[b, oi, oj, c]` = the offset `r * kw + c'` in its window of the first maximum of
/// `x[b, .., .., c]` over the window's valid cells, in row-major scan order.
pub fn max_pool_argmax(x: ArrayView4<'_, f32>, win: Window, mut idx: ArrayViewMut4<'_, u32>) {
    let (n, h, w, ch) = x.dim();
    let (_, oh, ow, _) = idx.dim();
    if let (Some(xs), Some(is)) = (x.as_slice(), idx.as_slice_mut()) {
        #[cfg(target_arch = "x86_64")]
        if vector_blocks(ch) {
            // SAFETY: `vector_blocks` saw AVX-512F; the kernel checks the lengths.
            unsafe { x86::argmax(xs, (n, h, w, ch), (oh, ow), win, is) };
            return;
        }
        crate::sgemm::widest(
            #[inline(always)]
            || argmax_contiguous(xs, (n, h, w, ch), (oh, ow), win, is),
        );
        return;
    }
    for b in 0..n {
        for oi in 0..oh {
            let (i0, i1, di) = win.rows(oi, h);
            for oj in 0..ow {
                let (j0, j1, dj) = win.cols(oj, w);
                for c in 0..ch {
                    let mut m = f32::NAN;
                    let mut at = 0u32;
                    let mut first = true;
                    for i in i0..i1 {
                        for j in j0..j1 {
                            let v = x[[b, i, j, c]];
                            if first || v > m || v.is_nan() {
                                m = v;
                                at = ((i - i0 + di) * win.kw + (j - j0 + dj)) as u32;
                                first = false;
                            }
                        }
                    }
                    idx[[b, oi, oj, c]] = at;
                }
            }
        }
    }
}

/// The contiguous fast path of [`max_pool_argmax`], compiled per instruction set
/// ([`crate::sgemm::widest`]): per output pixel, blocks of [`CHUNK`] channels keep their
/// running maxima on the stack while the window's cells stream by, channels innermost;
/// the update is branch-free (two selects) so that it vectorizes.
#[inline(always)]
fn argmax_contiguous(
    xs: &[f32],
    (n, h, w, ch): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
    win: Window,
    is: &mut [u32],
) {
    let mut best = [0f32; CHUNK];
    for b in 0..n {
        for oi in 0..oh {
            let (i0, i1, di) = win.rows(oi, h);
            for oj in 0..ow {
                let (j0, j1, dj) = win.cols(oj, w);
                let out = &mut is[((b * oh + oi) * ow + oj) * ch..][..ch];
                for c0 in (0..ch).step_by(CHUNK) {
                    let len = CHUNK.min(ch - c0);
                    let (best, out) = (&mut best[..len], &mut out[c0..c0 + len]);
                    let mut first = true;
                    for i in i0..i1 {
                        for j in j0..j1 {
                            let off = ((i - i0 + di) * win.kw + (j - j0 + dj)) as u32;
                            let lane = &xs[((b * h + i) * w + j) * ch + c0..][..len];
                            if first {
                                best.copy_from_slice(lane);
                                out.fill(off);
                                first = false;
                                continue;
                            }
                            for ((m, o), &v) in best.iter_mut().zip(out.iter_mut()).zip(lane) {
                                // Strictly greater: the first maximum stays; a NaN
                                // always takes over, so that it propagates. `|`, not
                                // `||`: the short circuit was a branch per element that
                                // kept the loop scalar and mispredicted on real data
                                // (35% of C2's step under `perf`, session 10).
                                let gt = (v > *m) | v.is_nan();
                                *m = if gt { v } else { *m };
                                *o = if gt { off } else { *o };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Window cells whose offsets [`Offsets`] tabulates; larger windows divide instead.
const TABLE: usize = 256;

/// Element offsets, in a contiguous `[n, h, w, c]` array, of each window offset `r * kw
/// + q` from the window's origin: `(r * w + q) * c`. A table on the stack, so that
/// the pick and the scatter read one entry per element instead of dividing by `kw`.
struct Offsets {
    table: [isize; TABLE],
    kw: usize,
    row: isize,
    ch: isize,
    tabulated: bool,
}

impl Offsets {
    fn new(win: Window, w: usize, ch: usize) -> Offsets {
        let (row, ch) = ((w * ch) as isize, ch as isize);
        let mut table = [0isize; TABLE];
        let tabulated = win.kh * win.kw <= TABLE;
        if tabulated {
            for (k, t) in table.iter_mut().enumerate().take(win.kh * win.kw) {
                *t = (k / win.kw) as isize * row + (k % win.kw) as isize * ch;
            }
        }
        Offsets { table, kw: win.kw, row, ch, tabulated }
    }

    #[inline(always)]
    fn get(&self, off: u32) -> isize {
        let off = off as usize;
        if self.tabulated {
            self.table[off % TABLE]
        } else {
            (off / self.kw) as isize * self.row + (off % self.kw) as isize * self.ch
        }
    }

    /// The element offset of output `(b, oi, oj)`'s window origin (negative where the
    /// window starts in the padding; the cells an argmax names are inside the image).
    #[inline(always)]
    fn origin(&self, win: Window, h: usize, b: usize, oi: usize, oj: usize) -> isize {
        let i = (b * h + oi * win.sh) as isize - win.top as isize;
        let j = (oj * win.sw) as isize - win.left as isize;
        i * self.row + j * self.ch
    }
}

/// The input cell `(i, j)` that window offset `off` of output `(oi, oj)` names.
#[inline]
fn cell(win: Window, oi: usize, oj: usize, off: u32) -> (usize, usize) {
    let off = off as usize;
    (oi * win.sh + off / win.kw - win.top, oj * win.sw + off % win.kw - win.left)
}

/// `out[b, oi, oj, c] = x[b, i, j, c]` for the cell `(i, j)` that `idx` names (the forward
/// value of `max_pool` once [`max_pool_argmax`] has chosen).
pub fn pool_pick(x: ArrayView4<'_, f32>, idx: ArrayView4<'_, u32>, win: Window, mut out: ArrayViewMut4<'_, f32>) {
    let (n, h, w, ch) = x.dim();
    let (_, oh, ow, _) = out.dim();
    if let (Some(xs), Some(is), Some(os)) = (x.as_slice(), idx.as_slice(), out.as_slice_mut()) {
        #[cfg(target_arch = "x86_64")]
        if vector_blocks(ch) {
            // SAFETY: as in `max_pool_argmax`.
            unsafe { x86::pick(xs, is, (n, h, w, ch), (oh, ow), win, os) };
            return;
        }
        let t = Offsets::new(win, w, ch);
        for b in 0..n {
            for oi in 0..oh {
                for oj in 0..ow {
                    let at = ((b * oh + oi) * ow + oj) * ch;
                    let origin = t.origin(win, h, b, oi, oj);
                    for (c, (o, &off)) in os[at..at + ch].iter_mut().zip(&is[at..at + ch]).enumerate() {
                        // In the image: the argmax names a valid cell.
                        *o = xs[(origin + t.get(off)) as usize + c];
                    }
                }
            }
        }
        return;
    }
    for b in 0..n {
        for oi in 0..oh {
            for oj in 0..ow {
                for c in 0..ch {
                    let (i, j) = cell(win, oi, oj, idx[[b, oi, oj, c]]);
                    out[[b, oi, oj, c]] = x[[b, i, j, c]];
                }
            }
        }
    }
}

/// The gradient of `max_pool`: `dx` = zeros, then each `g[b, oi, oj, c]` added to the one
/// cell `idx` names (overlapping windows, stride < size, accumulate).
///
/// The offsets are u32 ([`max_pool_argmax`]) or u8 (the fused conv + pool of
/// `crate::conv::conv2d_max_pool_with`, whose windows hold at most 256 cells).
pub fn max_pool_grad<I: PoolIndex>(
    g: ArrayView4<'_, f32>,
    idx: ArrayView4<'_, I>,
    win: Window,
    dx: ArrayViewMut4<'_, f32>,
) {
    let len = dx.len();
    crate::profile::timed(move || crate::profile::pass("pool_grad", len, 2), || max_pool_grad_inner(g, idx, win, dx))
}

fn max_pool_grad_inner<I: PoolIndex>(
    g: ArrayView4<'_, f32>,
    idx: ArrayView4<'_, I>,
    win: Window,
    mut dx: ArrayViewMut4<'_, f32>,
) {
    let (n, oh, ow, ch) = g.dim();
    let (_, h, w, _) = dx.dim();
    if let (Some(gs), Some(is), Some(ds)) = (g.as_slice(), idx.as_slice(), dx.as_slice_mut()) {
        #[cfg(target_arch = "x86_64")]
        if vector_blocks(ch) {
            let tiles = tiles(win, (h, w), (oh, ow));
            // Over images on the pool's threads (`conv/par.rs`): each image's cells are
            // written by one part, in the order one thread writes them.
            let (gi, di) = (oh * ow * ch, h * w * ch);
            let parts = par::parts(n, SCATTER_WORK * n * di);
            let mut items: [Option<&mut [f32]>; par::MAX_PARTS] = std::array::from_fn(|_| None);
            let mut rest = &mut ds[..n * di];
            for (i, slot) in items.iter_mut().enumerate().take(parts) {
                let (d, more) = rest.split_at_mut((par::cut(n, parts, i + 1) - par::cut(n, parts, i)) * di);
                *slot = Some(d);
                rest = more;
            }
            par::each(items, parts, |i, d| {
                let (b0, b1) = (par::cut(n, parts, i), par::cut(n, parts, i + 1));
                if !tiles {
                    d.fill(0.0);
                }
                // SAFETY: as in `max_pool_argmax`.
                unsafe {
                    x86::grad(
                        &gs[b0 * gi..b1 * gi],
                        &is[b0 * gi..b1 * gi],
                        (b1 - b0, h, w, ch),
                        (oh, ow),
                        win,
                        tiles,
                        d,
                    )
                };
            });
            return;
        }
        ds.fill(0.0);
        let t = Offsets::new(win, w, ch);
        for b in 0..n {
            for oi in 0..oh {
                for oj in 0..ow {
                    let at = ((b * oh + oi) * ow + oj) * ch;
                    let origin = t.origin(win, h, b, oi, oj);
                    for (c, (&v, &off)) in gs[at..at + ch].iter().zip(&is[at..at + ch]).enumerate() {
                        ds[(origin + t.get(off.offset())) as usize + c] += v;
                    }
                }
            }
        }
        return;
    }
    dx.fill(0.0);
    for b in 0..n {
        for oi in 0..oh {
            for oj in 0..ow {
                for c in 0..ch {
                    let (i, j) = cell(win, oi, oj, idx[[b, oi, oj, c]].offset());
                    dx[[b, i, j, c]] += g[[b, oi, oj, c]];
                }
            }
        }
    }
}

/// `out[b, oi, oj, c]` = the mean of `x[b, .., .., c]` over the window's valid cells.
pub fn avg_pool(x: ArrayView4<'_, f32>, win: Window, mut out: ArrayViewMut4<'_, f32>) {
    let (n, h, w, ch) = x.dim();
    let (_, oh, ow, _) = out.dim();
    if let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) {
        // Compiled per instruction set: the channel loops vectorize.
        crate::sgemm::widest(
            #[inline(always)]
            || {
                for b in 0..n {
                    for oi in 0..oh {
                        let (i0, i1, _) = win.rows(oi, h);
                        for oj in 0..ow {
                            let (j0, j1, _) = win.cols(oj, w);
                            let o = &mut os[((b * oh + oi) * ow + oj) * ch..][..ch];
                            o.fill(0.0);
                            for i in i0..i1 {
                                for j in j0..j1 {
                                    let lane = &xs[((b * h + i) * w + j) * ch..][..ch];
                                    for (a, &v) in o.iter_mut().zip(lane) {
                                        *a += v;
                                    }
                                }
                            }
                            let inv = 1.0 / ((i1 - i0) * (j1 - j0)) as f32;
                            for a in o.iter_mut() {
                                *a *= inv;
                            }
                        }
                    }
                }
            },
        );
        return;
    }
    for b in 0..n {
        for oi in 0..oh {
            let (i0, i1, _) = win.rows(oi, h);
            for oj in 0..ow {
                let (j0, j1, _) = win.cols(oj, w);
                let inv = 1.0 / ((i1 - i0) * (j1 - j0)) as f32;
                for c in 0..ch {
                    let mut s = 0.0;
                    for i in i0..i1 {
                        for j in j0..j1 {
                            s += x[[b, i, j, c]];
                        }
                    }
                    out[[b, oi, oj, c]] = s * inv;
                }
            }
        }
    }
}

/// The gradient of `avg_pool`: each valid cell of a window gets `g / count` of it
/// (overlapping windows accumulate; padding and uncovered cells get nothing).
pub fn avg_pool_grad(g: ArrayView4<'_, f32>, win: Window, mut dx: ArrayViewMut4<'_, f32>) {
    let (n, oh, ow, ch) = g.dim();
    let (_, h, w, _) = dx.dim();
    dx.fill(0.0);
    if let (Some(gs), Some(ds)) = (g.as_slice(), dx.as_slice_mut()) {
        // Compiled per instruction set: the channel loops vectorize.
        crate::sgemm::widest(
            #[inline(always)]
            || {
                for b in 0..n {
                    for oi in 0..oh {
                        let (i0, i1, _) = win.rows(oi, h);
                        for oj in 0..ow {
                            let (j0, j1, _) = win.cols(oj, w);
                            let inv = 1.0 / ((i1 - i0) * (j1 - j0)) as f32;
                            let gl = &gs[((b * oh + oi) * ow + oj) * ch..][..ch];
                            for i in i0..i1 {
                                for j in j0..j1 {
                                    let d = &mut ds[((b * h + i) * w + j) * ch..][..ch];
                                    for (a, &v) in d.iter_mut().zip(gl) {
                                        *a += v * inv;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
        return;
    }
    for b in 0..n {
        for oi in 0..oh {
            let (i0, i1, _) = win.rows(oi, h);
            for oj in 0..ow {
                let (j0, j1, _) = win.cols(oj, w);
                let inv = 1.0 / ((i1 - i0) * (j1 - j0)) as f32;
                for c in 0..ch {
                    let v = g[[b, oi, oj, c]] * inv;
                    for i in i0..i1 {
                        for j in j0..j1 {
                            dx[[b, i, j, c]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Max pooling of one conv output image as the fused conv + bias + max pool computes it
/// (`crate::conv::conv2d_max_pool_with`): `img` is the image before the bias (`[h, w,
/// ch]`, contiguous, just written by the conv and still in cache), `bias` its `ch`
/// channel offsets. Each window's cells are `img + bias` (the same f32 add as the
/// unfused bias add, so the same bits), the first maximum in scan order wins (a NaN
/// takes over: [`max_pool_argmax`]'s rule), and its value and u8 offset go to `value`
/// and `arg` (`[oh, ow, ch]`, contiguous; either may be absent). The windows hold at
/// most 256 cells (the compiler's condition for the fusion).
pub(crate) fn max_pool_image(
    img: &[f32],
    (h, w, ch): (usize, usize, usize),
    bias: &[f32],
    win: Window,
    (oh, ow): (usize, usize),
    mut value: Option<&mut [f32]>,
    mut arg: Option<&mut [u8]>,
) {
    assert!(img.len() >= h * w * ch && bias.len() >= ch && win.kh * win.kw <= 256);
    assert!(
        value.as_ref().is_none_or(|v| v.len() >= oh * ow * ch) && arg.as_ref().is_none_or(|a| a.len() >= oh * ow * ch)
    );
    #[cfg(target_arch = "x86_64")]
    if vector_blocks(ch) {
        // SAFETY: `vector_blocks` saw AVX-512F; the lengths are asserted above.
        unsafe { x86::max_pool_image(img, (h, w, ch), bias, win, (oh, ow), value, arg) };
        return;
    }
    crate::sgemm::widest(
        #[inline(always)]
        || {
            let mut best = [0f32; CHUNK];
            let mut at = [0u8; CHUNK];
            for oi in 0..oh {
                let (i0, i1, di) = win.rows(oi, h);
                for oj in 0..ow {
                    let (j0, j1, dj) = win.cols(oj, w);
                    let o = (oi * ow + oj) * ch;
                    for c0 in (0..ch).step_by(CHUNK) {
                        let len = CHUNK.min(ch - c0);
                        let (best, at, bias) = (&mut best[..len], &mut at[..len], &bias[c0..c0 + len]);
                        let mut first = true;
                        for i in i0..i1 {
                            for j in j0..j1 {
                                let off = ((i - i0 + di) * win.kw + (j - j0 + dj)) as u8;
                                let lane = &img[(i * w + j) * ch + c0..][..len];
                                for (((m, a), &v), &b) in best.iter_mut().zip(at.iter_mut()).zip(lane).zip(bias) {
                                    let v = v + b;
                                    // As `argmax_contiguous`: strictly greater, or NaN.
                                    let take = first | (v > *m) | v.is_nan();
                                    *m = if take { v } else { *m };
                                    *a = if take { off } else { *a };
                                }
                                first = false;
                            }
                        }
                        if let Some(v) = value.as_deref_mut() {
                            v[o + c0..o + c0 + len].copy_from_slice(best);
                        }
                        if let Some(a) = arg.as_deref_mut() {
                            a[o + c0..o + c0 + len].copy_from_slice(at);
                        }
                    }
                }
            }
        },
    );
}

/// One cell of [`max_pool_image`] by index (for outputs that are not contiguous): the
/// maximum of window `(oi, oj)` of channel `c` of `img + bias` and its offset.
pub(crate) fn window_max(
    img: &[f32],
    (h, w, ch): (usize, usize, usize),
    bias: f32,
    win: Window,
    (oi, oj, c): (usize, usize, usize),
) -> (f32, u8) {
    let ((i0, i1, di), (j0, j1, dj)) = (win.rows(oi, h), win.cols(oj, w));
    let (mut m, mut at, mut first) = (f32::NAN, 0u8, true);
    for i in i0..i1 {
        for j in j0..j1 {
            let v = img[(i * w + j) * ch + c] + bias;
            if first || v > m || v.is_nan() {
                (m, at, first) = (v, ((i - i0 + di) * win.kw + (j - j0 + dj)) as u8, false);
            }
        }
    }
    (m, at)
}

/// The element type of a window offset: u32 (what [`max_pool_argmax`] writes) or u8
/// (the fused conv + pool's argmax, a quarter of the memory; windows of at most 256
/// cells). Sealed: only these two.
pub trait PoolIndex: Copy + Sync + sealed::Sealed {
    /// The offset `r * kw + c` as a u32.
    fn offset(self) -> u32;
    /// Sixteen offsets from `p` widened to u32 lanes.
    ///
    /// # Safety
    /// AVX-512F must be available and `p..p + 16` readable.
    #[cfg(target_arch = "x86_64")]
    #[doc(hidden)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512i;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u8 {}
}

impl PoolIndex for u32 {
    #[inline(always)]
    fn offset(self) -> u32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const u32) -> std::arch::x86_64::__m512i {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_loadu_si512(p.cast()) }
    }
}

impl PoolIndex for u8 {
    #[inline(always)]
    fn offset(self) -> u32 {
        u32::from(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const u8) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (16 bytes readable).
        unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast())) }
    }
}

/// Whether max pooling's contiguous paths run the AVX-512 kernels of [`x86`]: whole
/// 16-channel vectors (C1's 32 and 64 channels, C2's 16 and 32) on a CPU with AVX-512F
/// that `MODELC_KERNEL` does not cap below it (sgemm's choice, which every vector kernel
/// of the runtime follows). Elsewhere the portable loops above, with the same bits.
fn vector_blocks(ch: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        ch > 0 && ch.is_multiple_of(16) && crate::sgemm::kernel() == crate::sgemm::Kernel::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ch;
        false
    }
}

/// Whether the windows of `win` over an `h x w` image with an `oh x ow` output cover
/// every image cell exactly once: stride = size, and every row and column covered (C1's
/// and C2's 28 -> 14, 14 -> 7, 26 -> 13; not 11 -> 5, whose last row and column no
/// window reads). Then max pooling's gradient writes each cell once, with no zero fill.
fn tiles(win: Window, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> bool {
    win.sh == win.kh
        && win.sw == win.kw
        && oh > 0
        && ow > 0
        && (oh - 1) * win.sh + win.kh >= h + win.top
        && (ow - 1) * win.sw + win.kw >= w + win.left
}

/// Max pooling's contiguous paths with AVX-512F intrinsics, one 16-channel vector at a
/// time: per output pixel, the window's valid cells in scan order. Measured (C2's step
/// under `perf`, session 11): the portable argmax, pick (an indexed gather per element)
/// and scatter were 27% of the step; LLVM kept a constant-16 block of the portable
/// loops scalar (tried: 2-8x slower), hence intrinsics, as the direct conv kernels.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Window;

    type Dims = (usize, usize, usize, usize);

    /// The argmax: the running maximum and its window offset in two registers; a cell
    /// takes over where it is strictly greater (ordered: a NaN maximum stays) or NaN,
    /// exactly the portable rule (`(v > m) | v.is_nan()`), so ties keep the first cell.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn argmax(
        xs: &[f32],
        (n, h, w, ch): Dims,
        (oh, ow): (usize, usize),
        win: Window,
        is: &mut [u32],
    ) {
        assert!(xs.len() >= n * h * w * ch && is.len() >= n * oh * ow * ch && ch.is_multiple_of(16));
        for b in 0..n {
            for oi in 0..oh {
                let (i0, i1, di) = win.rows(oi, h);
                for oj in 0..ow {
                    let (j0, j1, dj) = win.cols(oj, w);
                    let at = ((b * oh + oi) * ow + oj) * ch;
                    for c0 in (0..ch).step_by(16) {
                        // SAFETY: every cell (i, j) is inside the image (`rows`, `cols`
                        // clip to it) and c0 + 16 <= ch: inside `xs`; `at + c0 + 16 <=
                        // n oh ow ch`: inside `is` (asserted above).
                        unsafe {
                            let mut m = _mm512_setzero_ps();
                            let mut a = _mm512_setzero_si512();
                            let mut first = true;
                            for i in i0..i1 {
                                for j in j0..j1 {
                                    let off = _mm512_set1_epi32(((i - i0 + di) * win.kw + (j - j0 + dj)) as i32);
                                    let v = _mm512_loadu_ps(xs.as_ptr().add(((b * h + i) * w + j) * ch + c0));
                                    let take = if first {
                                        first = false;
                                        0xffff
                                    } else {
                                        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m)
                                            | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
                                    };
                                    m = _mm512_mask_mov_ps(m, take, v);
                                    a = _mm512_mask_mov_epi32(a, take, off);
                                }
                            }
                            _mm512_storeu_si512(is.as_mut_ptr().add(at + c0).cast(), a);
                        }
                    }
                }
            }
        }
    }

    /// [`super::max_pool_image`]: the argmax's registers with the bias added to each
    /// cell as it is loaded; the maximum stored as f32, the offset narrowed to u8.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_pool_image(
        img: &[f32],
        (h, w, ch): (usize, usize, usize),
        bias: &[f32],
        win: Window,
        (oh, ow): (usize, usize),
        mut value: Option<&mut [f32]>,
        mut arg: Option<&mut [u8]>,
    ) {
        for oi in 0..oh {
            let (i0, i1, di) = win.rows(oi, h);
            for oj in 0..ow {
                let (j0, j1, dj) = win.cols(oj, w);
                let at = (oi * ow + oj) * ch;
                for c0 in (0..ch).step_by(16) {
                    // SAFETY: every cell is inside the image (`rows`, `cols` clip to it),
                    // c0 + 16 <= ch, and `at + c0 + 16 <= oh ow ch`: inside `img`, `bias`,
                    // `value` and `arg` (asserted by the caller).
                    unsafe {
                        let bv = _mm512_loadu_ps(bias.as_ptr().add(c0));
                        let mut m = _mm512_setzero_ps();
                        let mut a = _mm512_setzero_si512();
                        let mut first = true;
                        for i in i0..i1 {
                            for j in j0..j1 {
                                let off = _mm512_set1_epi32(((i - i0 + di) * win.kw + (j - j0 + dj)) as i32);
                                let v = _mm512_add_ps(_mm512_loadu_ps(img.as_ptr().add((i * w + j) * ch + c0)), bv);
                                let take = if first {
                                    first = false;
                                    0xffff
                                } else {
                                    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
                                };
                                m = _mm512_mask_mov_ps(m, take, v);
                                a = _mm512_mask_mov_epi32(a, take, off);
                            }
                        }
                        if let Some(v) = value.as_deref_mut() {
                            _mm512_storeu_ps(v.as_mut_ptr().add(at + c0), m);
                        }
                        if let Some(o) = arg.as_deref_mut() {
                            _mm_storeu_si128(o.as_mut_ptr().add(at + c0).cast(), _mm512_cvtepi32_epi8(a));
                        }
                    }
                }
            }
        }
    }

    /// The pick: each valid cell's lanes loaded where the argmax names that cell (a
    /// masked load; exactly one cell per lane matches).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pick(
        xs: &[f32],
        is: &[u32],
        (n, h, w, ch): Dims,
        (oh, ow): (usize, usize),
        win: Window,
        os: &mut [f32],
    ) {
        assert!(xs.len() >= n * h * w * ch && is.len() >= n * oh * ow * ch && os.len() >= n * oh * ow * ch);
        assert!(ch.is_multiple_of(16));
        for b in 0..n {
            for oi in 0..oh {
                let (i0, i1, di) = win.rows(oi, h);
                for oj in 0..ow {
                    let (j0, j1, dj) = win.cols(oj, w);
                    let at = ((b * oh + oi) * ow + oj) * ch;
                    for c0 in (0..ch).step_by(16) {
                        // SAFETY: as in `argmax`.
                        unsafe {
                            let a = _mm512_loadu_si512(is.as_ptr().add(at + c0).cast());
                            let mut v = _mm512_setzero_ps();
                            for i in i0..i1 {
                                for j in j0..j1 {
                                    let off = _mm512_set1_epi32(((i - i0 + di) * win.kw + (j - j0 + dj)) as i32);
                                    let k = _mm512_cmpeq_epi32_mask(a, off);
                                    v = _mm512_mask_loadu_ps(v, k, xs.as_ptr().add(((b * h + i) * w + j) * ch + c0));
                                }
                            }
                            _mm512_storeu_ps(os.as_mut_ptr().add(at + c0), v);
                        }
                    }
                }
            }
        }
    }

    /// The scatter: each valid cell gets `0 + g` where the argmax names it and `0`
    /// elsewhere (`0 + g`, not `g`: the portable path's zero fill then `+=` turns a -0
    /// into +0, and the bits must agree). Stored when the windows `tiles` the image
    /// (each cell in one window), else added to the zeroed `ds` (overlapping windows;
    /// adding +0 changes no bit of a sum that starts at +0).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad<I: super::PoolIndex>(
        gs: &[f32],
        is: &[I],
        (n, h, w, ch): Dims,
        (oh, ow): (usize, usize),
        win: Window,
        tiles: bool,
        ds: &mut [f32],
    ) {
        assert!(ds.len() >= n * h * w * ch && is.len() >= n * oh * ow * ch && gs.len() >= n * oh * ow * ch);
        assert!(ch.is_multiple_of(16));
        for b in 0..n {
            for oi in 0..oh {
                let (i0, i1, di) = win.rows(oi, h);
                for oj in 0..ow {
                    let (j0, j1, dj) = win.cols(oj, w);
                    let at = ((b * oh + oi) * ow + oj) * ch;
                    for c0 in (0..ch).step_by(16) {
                        // SAFETY: as in `argmax`, with `ds` the image.
                        unsafe {
                            let a = I::load16(is.as_ptr().add(at + c0));
                            let g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_loadu_ps(gs.as_ptr().add(at + c0)));
                            for i in i0..i1 {
                                for j in j0..j1 {
                                    let off = _mm512_set1_epi32(((i - i0 + di) * win.kw + (j - j0 + dj)) as i32);
                                    let mine = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(a, off), g);
                                    let d = ds.as_mut_ptr().add(((b * h + i) * w + j) * ch + c0);
                                    let v = if tiles { mine } else { _mm512_add_ps(_mm512_loadu_ps(d), mine) };
                                    _mm512_storeu_ps(d, v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array4};

    const W2: Window = Window { kh: 2, kw: 2, sh: 2, sw: 2, top: 0, left: 0 };

    #[test]
    fn a_tied_window_sends_its_whole_gradient_to_its_first_cell() {
        // One 2x2 image of one channel, all 0.1: the relu'd bias over a zero background.
        let x = Array4::from_elem((1, 2, 2, 1), 0.1f32);
        let mut idx = Array4::zeros((1, 1, 1, 1));
        max_pool_argmax(x.view(), W2, idx.view_mut());
        assert_eq!(idx[[0, 0, 0, 0]], 0);
        let g = Array4::from_elem((1, 1, 1, 1), 1f32);
        let mut dx = Array4::from_elem((1, 2, 2, 1), 7f32);
        max_pool_grad(g.view(), idx.view(), W2, dx.view_mut());
        assert_eq!(dx.iter().copied().collect::<Vec<_>>(), vec![1.0, 0.0, 0.0, 0.0]);
        // A later tie with an earlier maximum keeps the earlier one.
        let x = Array4::from_shape_vec((1, 2, 2, 1), vec![0.0, 3.0, 1.0, 3.0]).unwrap();
        max_pool_argmax(x.view(), W2, idx.view_mut());
        assert_eq!(idx[[0, 0, 0, 0]], 1);
    }

    #[test]
    fn a_nan_cell_is_picked_on_every_path() {
        let x = Array4::from_shape_vec((1, 2, 2, 1), vec![1.0, f32::NAN, 5.0, f32::NAN]).unwrap();
        let mut idx = Array4::zeros((1, 1, 1, 1));
        max_pool_argmax(x.view(), W2, idx.view_mut());
        assert_eq!(idx[[0, 0, 0, 0]], 3);
        // The index path: a reversed view of a reversed copy (`invert_axis` on a clone,
        // as this test had it, reverses the view only: the slice of it was contiguous,
        // and so is a `to_owned()` of a reversed view, which keeps its strides).
        let rev = x.slice(s![.., .., ..;-1, ..]).as_standard_layout().into_owned();
        let view = rev.slice(s![.., .., ..;-1, ..]);
        assert!(view.as_slice().is_none());
        max_pool_argmax(view, W2, idx.view_mut());
        assert_eq!(idx[[0, 0, 0, 0]], 3);
    }

    #[test]
    fn same_padding_never_picks_or_counts_a_padded_cell() {
        // 3x3 image, window 2 stride 2 "same": output 2x2, one padded row and column at
        // the bottom/right. All values negative: a zero pad cell would win a max.
        let x = Array4::from_shape_fn((1, 3, 3, 1), |(_, i, j, _)| -1.0 - (i * 3 + j) as f32);
        let win = Window { top: 0, left: 0, ..W2 };
        let mut idx = Array4::zeros((1, 2, 2, 1));
        max_pool_argmax(x.view(), win, idx.view_mut());
        let mut out = Array4::zeros((1, 2, 2, 1));
        pool_pick(x.view(), idx.view(), win, out.view_mut());
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), vec![-1.0, -3.0, -7.0, -9.0]);
        avg_pool(x.view(), win, out.view_mut());
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), vec![-3.0, -4.5, -7.5, -9.0]);
    }

    #[test]
    fn strided_views_give_the_contiguous_answer() {
        let x = Array4::from_shape_fn((2, 5, 6, 3), |(b, i, j, c)| ((b * 7 + i * 5 + j * 3 + c) % 11) as f32 - 5.0);
        let rev = x.slice(s![.., ..;-1, .., ..]);
        // A standard-layout copy (`to_owned` of a reversed view keeps its strides, and
        // this test then compared the index path with itself).
        let copy = rev.as_standard_layout().into_owned();
        assert!(copy.as_slice().is_some());
        let win = Window { kh: 3, kw: 2, sh: 1, sw: 2, top: 1, left: 0 };
        let (mut a, mut b) = (Array4::zeros((2, 5, 3, 3)), Array4::zeros((2, 5, 3, 3)));
        max_pool_argmax(rev, win, a.view_mut());
        max_pool_argmax(copy.view(), win, b.view_mut());
        assert_eq!(a, b);
        let (mut p, mut q) = (Array4::zeros((2, 5, 3, 3)), Array4::zeros((2, 5, 3, 3)));
        avg_pool(rev, win, p.view_mut());
        avg_pool(copy.view(), win, q.view_mut());
        assert_eq!(p, q);
        let g = Array4::from_shape_fn((2, 5, 3, 3), |(b, i, j, c)| (b + i + j + c) as f32);
        let (mut d1, mut d2) = (Array4::zeros((2, 5, 6, 3)), Array4::zeros((2, 5, 6, 3)));
        let gw = Array4::from_shape_fn(
            (2, 5, 6, 3),
            |(b, i, j, c)| if j % 2 == 0 { (b + i + j / 2 + c) as f32 } else { -99.0 },
        );
        avg_pool_grad(gw.slice(s![.., .., ..;2, ..]), win, d1.view_mut());
        avg_pool_grad(g.view(), win, d2.view_mut());
        assert_eq!(d1, d2);
        // The index path of the gradients, through a non-contiguous output.
        let mut wide = Array4::zeros((2, 5, 12, 3));
        max_pool_grad(g.view(), a.view(), win, wide.slice_mut(s![.., .., ..;2, ..]));
        let mut dense = Array4::zeros((2, 5, 6, 3));
        max_pool_grad(g.view(), a.view(), win, dense.view_mut());
        assert_eq!(wide.slice(s![.., .., ..;2, ..]), dense);
    }

    /// The contiguous (vectorized) paths against the index path, bit for bit, over
    /// windows that tile, overlap, leave a floor row/column or pad ("same"), channel
    /// counts around the 16-lane block (1, 3, 16, 17, 33, 64, 70), values on a coarse grid
    /// so that windows tie, and a NaN in some images. `dx` starts as garbage: a cell the
    /// tiling shortcut failed to write would keep it.
    #[test]
    fn the_vector_paths_equal_the_index_path_bit_for_bit() {
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // (h, w, kh, kw, sh, sw, same)
        let geos = [
            (4, 4, 2, 2, 2, 2, false),
            (5, 4, 2, 2, 2, 2, false),
            (4, 5, 2, 2, 2, 2, false),
            (5, 7, 2, 2, 2, 2, false),
            (5, 7, 2, 2, 2, 2, true),
            (6, 5, 3, 3, 2, 2, true),
            (6, 6, 3, 3, 1, 1, false),
            (7, 6, 3, 2, 3, 2, true),
            (3, 3, 3, 3, 3, 3, false),
            (9, 8, 2, 3, 1, 2, true),
        ];
        let mut cases = 0;
        for (gi, &(h, w, kh, kw, sh, sw, same)) in geos.iter().enumerate() {
            let out = |n: usize, k: usize, s: usize| if same { n.div_ceil(s) } else { (n - k) / s + 1 };
            let (oh, ow) = (out(h, kh, sh), out(w, kw, sw));
            let pad =
                |n: usize, k: usize, s: usize, o: usize| if same { ((o - 1) * s + k).saturating_sub(n) / 2 } else { 0 };
            let win = Window { kh, kw, sh, sw, top: pad(h, kh, sh, oh), left: pad(w, kw, sw, ow) };
            for ch in [1, 3, 16, 17, 33, 64, 70] {
                let n = 2;
                let x = Array4::from_shape_fn((n, h, w, ch), |(b, i, j, c)| {
                    if gi % 3 == 1 && b == 1 && i == 1 && j == 0 && c % 5 == 0 {
                        f32::NAN
                    } else {
                        ((b * 31 + i * 7 + j * 3 + c * 5) % 4) as f32 * 0.5 - 0.5
                    }
                });
                let rev = x.slice(s![.., .., ..;-1, ..]).as_standard_layout().into_owned();
                let xv = rev.slice(s![.., .., ..;-1, ..]);
                assert!(xv.as_slice().is_none());
                let (mut a, mut a_wide) = (Array4::zeros((n, oh, ow, ch)), Array4::zeros((n, oh, 2 * ow, ch)));
                max_pool_argmax(x.view(), win, a.view_mut());
                max_pool_argmax(xv, win, a_wide.slice_mut(s![.., .., ..;2, ..]));
                assert_eq!(a, a_wide.slice(s![.., .., ..;2, ..]), "argmax, geometry {gi}, {ch} channels");
                let (mut p, mut p_wide) = (Array4::zeros((n, oh, ow, ch)), Array4::zeros((n, oh, 2 * ow, ch)));
                pool_pick(x.view(), a.view(), win, p.view_mut());
                pool_pick(xv, a.view(), win, p_wide.slice_mut(s![.., .., ..;2, ..]));
                assert_eq!(bits(&p), bits(&p_wide.slice(s![.., .., ..;2, ..]).to_owned()), "pick, geometry {gi}");
                let g = Array4::from_shape_fn((n, oh, ow, ch), |(b, i, j, c)| (b + 2 * i + 3 * j + c) as f32 - 4.0);
                let (mut d, mut d_wide) =
                    (Array4::from_elem((n, h, w, ch), 7f32), Array4::from_elem((n, h, 2 * w, ch), 7f32));
                max_pool_grad(g.view(), a.view(), win, d.view_mut());
                max_pool_grad(g.view(), a.view(), win, d_wide.slice_mut(s![.., .., ..;2, ..]));
                assert_eq!(
                    bits(&d),
                    bits(&d_wide.slice(s![.., .., ..;2, ..]).to_owned()),
                    "grad, geometry {gi}, {ch} channels"
                );
                cases += 1;
            }
        }
        assert_eq!(cases, 70);
    }

    /// The scatter cut over images into 2, 3 and 5 parts (on the pool's threads with
    /// `parallel`) writes the bits of one part, with tiling windows (no zero fill first)
    /// and overlapping ones (a fill, then adds), `dx` starting as garbage.
    #[test]
    fn the_split_scatter_gives_the_bits_of_one_part() {
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (h, w, win) in [(8, 6, W2), (7, 7, Window { kh: 3, kw: 3, sh: 2, sw: 2, top: 0, left: 0 })] {
            let (oh, ow) = ((h - win.kh) / win.sh + 1, (w - win.kw) / win.sw + 1);
            for ch in [16, 64] {
                let n = 5;
                let x = Array4::from_shape_fn((n, h, w, ch), |(b, i, j, c)| ((b * 13 + i * 7 + j * 3 + c) % 5) as f32);
                let mut a = Array4::<u32>::zeros((n, oh, ow, ch));
                max_pool_argmax(x.view(), win, a.view_mut());
                let g =
                    Array4::from_shape_fn((n, oh, ow, ch), |(b, i, j, c)| (b + 2 * i + 3 * j + c) as f32 * 0.37 - 4.0);
                let run = |parts: usize| {
                    crate::conv::par::FORCE_PARTS.with(|f| f.set(parts));
                    let mut d = Array4::from_elem((n, h, w, ch), 7f32);
                    max_pool_grad(g.view(), a.view(), win, d.view_mut());
                    crate::conv::par::FORCE_PARTS.with(|f| f.set(0));
                    bits(&d)
                };
                let one = run(1);
                for parts in [2, 3, 5] {
                    assert!(one == run(parts), "{h}x{w} {win:?} {ch} channels, {parts} parts");
                }
            }
        }
    }
}
