//! The loop of the generated code's fused elementwise groups: `out = f(out, ins...)`
//! element by element, each input broadcast to `out`'s shape, in plain slice loops that
//! LLVM vectorizes for the widest vectors the CPU has ([`widest`]).
//!
//! ndarray's `Zip` would do the same work, but its loop stays a call that LLVM does not
//! inline into a `#[target_feature]` function, so it runs at the baseline target's 4
//! lanes (see `docs/decisions.md`, "Generated elementwise loops run in the runtime's
//! `kernels::map`"). Here every operand is reduced to rows, and the rows cut into blocks
//! of at most [`CHUNK`] elements: several whole rows when they are short, part of one
//! when long. An operand whose block is contiguous is read (or written) in place; any
//! other (a bias or a column broadcast, a transposed input, a stepped output) is
//! copied into a block-sized buffer first (and `out` back after). Each block is one
//! call of the inner loop, in fixed runs of 16 lanes, the one place `f` is compiled,
//! inlined into the widest build. Every element is computed by the same operations
//! whatever the path, so the bits are the same.

use ndarray::{ArrayViewD, ArrayViewMutD, Axis};

use crate::sgemm::widest;

/// Elements of a block: the size of the buffers an operand not read in place is copied
/// into.
const CHUNK: usize = 256;

/// One operand reduced to rows: `rows` rows of `cols` elements, element `(r, c)` at
/// `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Rows {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `out[i] = f(out[i], [ins[0][i], ..])` for every index `i` of `out`, each input
/// broadcast to `out`'s shape (NumPy's rules, as ndarray's `broadcast`). `f` is called
/// once per element, in no particular order; mark it `#[inline(always)]` so that it is
/// compiled into the vector loop.
///
/// Allocates nothing for ranks up to 4 (ndarray keeps such shapes inline).
///
/// Panics if an input does not broadcast to `out`'s shape (the compiler checked them).
#[inline]
pub fn map<const N: usize, F: Fn(f32, [f32; N]) -> f32>(
    out: ArrayViewMutD<'_, f32>,
    ins: [ArrayViewD<'_, f32>; N],
    f: F,
) {
    let len = out.len();
    let rec = move || crate::profile::pass("map", len, N);
    crate::profile::timed(rec, || {
        // Most often every operand has the output's shape already: ndarray's `broadcast`
        // (its IxDyn upcast) and even a view's copy of an IxDyn shape cost more than a
        // 16-element block's loop.
        if ins.iter().all(|v| v.shape() == out.shape()) {
            map_views(out, &ins, &f);
            return;
        }
        let shape = out.raw_dim();
        let views: [ArrayViewD<'_, f32>; N] =
            std::array::from_fn(|k| ins[k].broadcast(shape.clone()).expect("an input that broadcasts to the output"));
        map_views(out, &views, &f);
    });
}

/// [`map`] once the inputs have `out`'s shape: [`drive`] cuts the operands into blocks and
/// calls back for each; the callback is the only code compiled per `f` (and per
/// instruction set): [`run`] over one block, inlined into [`widest`]'s copy for the
/// widest vectors.
///
/// The block loop, the copies of operands not read in place and the recursion over
/// leading axes do not depend on `f`, so they are compiled once per operand count, not
/// once per fused group and instruction set: that made `map_views` and its three
/// instruction-set copies 80% of a test binary's code (504 groups in
/// `gradients/tests/gradients.rs`) and most of its build time. The price is one indirect call
/// and one kernel lookup per block of up to [`CHUNK`] elements.
fn map_views<const N: usize, F: Fn(f32, [f32; N]) -> f32>(
    out: ArrayViewMutD<'_, f32>,
    views: &[ArrayViewD<'_, f32>; N],
    f: &F,
) {
    drive(out, views, &mut |dst: &mut [f32], ins: [&[f32]; N]| {
        widest(
            #[inline(always)]
            || run(dst, ins, f),
        )
    });
}

/// One block of the loop: the output's row and the inputs' rows.
type Block<'b, const N: usize> = dyn FnMut(&mut [f32], [&[f32]; N]) + 'b;

/// Calls `block(dst, ins)` for blocks of `out` and of the inputs (which have `out`'s
/// shape): rows, or one call of itself per index of the first axis where the leading
/// axes do not merge (a rank above 2 with a broadcast or a permuted axis).
fn drive<const N: usize>(mut out: ArrayViewMutD<'_, f32>, views: &[ArrayViewD<'_, f32>; N], block: &mut Block<'_, N>) {
    // An empty output (a batch of 0) has nothing to compute, and its pointer may dangle
    // (an empty `Array` owns no memory): `as_rows` would take a shape like `[0]` (no
    // axis longer than 1) for one element and write it.
    if out.is_empty() {
        return;
    }
    // The common case, every operand one contiguous slice in the same (standard) order:
    // blocks of CHUNK straight from the slices, without `as_rows` and the block buffers
    // (zeroing those was a fifth of a small call's instructions).
    if views.iter().all(|v| v.is_standard_layout()) {
        if let Some(o) = out.as_slice_mut() {
            let ins: [&[f32]; N] = std::array::from_fn(|k| views[k].as_slice().unwrap_or(&[]));
            if ins.iter().all(|s| s.len() == o.len()) {
                for (b, dst) in o.chunks_mut(CHUNK).enumerate() {
                    block(dst, std::array::from_fn(|k| &ins[k][b * CHUNK..b * CHUNK + dst.len()]));
                }
                return;
            }
        }
    }
    let Some((rows, cols, o, src)) = as_rows(&mut out, views) else {
        // Rank 2 or more: ranks 0 and 1 always make rows.
        for i in 0..out.shape()[0] {
            let sub: [ArrayViewD<'_, f32>; N] = std::array::from_fn(|k| views[k].index_axis(Axis(0), i));
            drive(out.index_axis_mut(Axis(0), i), &sub, block);
        }
        return;
    };
    if cols == 0 || rows == 0 {
        return;
    }
    // Blocks of at most CHUNK elements, each one call of `block`: rows of at most
    // CHUNK / 2 into a contiguous `out` in blocks of whole rows (CHUNK / cols of them),
    // so that a row of 10 costs no loop set-up of its own; longer rows in blocks of at
    // most CHUNK of one row.
    let short = o.cs == 1 && (rows == 1 || o.rs == cols as isize) && cols <= CHUNK / 2;
    let (per, per_row) = if short { (CHUNK / cols, 1) } else { (1, cols.div_ceil(CHUNK)) };
    let blocks = if short { rows.div_ceil(per) } else { rows * per_row };
    // Operands not read in place, a block at a time.
    let mut buf = [[0.0f32; CHUNK]; N];
    let mut obuf = [0.0f32; CHUNK];
    for bi in 0..blocks {
        // Block `bi`: `nr` rows from row r0, `width` columns from column c0.
        let (r0, c0, nr, width) = if short {
            let r0 = bi * per;
            (r0, 0, per.min(rows - r0), cols)
        } else {
            (bi / per_row, bi % per_row * CHUNK, 1, CHUNK.min(cols - bi % per_row * CHUNK))
        };
        let len = nr * width;
        let at = |s: &Rows, r: usize, c: usize| s.ptr.wrapping_offset(r as isize * s.rs + c as isize * s.cs);
        // Read in place where the block is contiguous: a unit column stride, and
        // rows that follow each other if the block has several.
        let in_place = |s: &Rows| s.cs == 1 && (nr == 1 || s.rs == cols as isize);
        // SAFETY: r0 + nr <= rows and c0 + width <= cols, so every element read or
        // written is (r, c) of its live operand (`as_rows`); `out` is borrowed
        // mutably for this call and the inputs shared, so no input aliases it;
        // a block read or written in place is contiguous (`in_place`).
        unsafe {
            let gather = |s: &Rows, dst: &mut [f32]| {
                for r in 0..nr {
                    for c in 0..width {
                        dst[r * width + c] = *at(s, r0 + r, c0 + c);
                    }
                }
            };
            for (k, s) in src.iter().enumerate() {
                // One that is the same in every block is copied in block 0, the
                // longest.
                let same = s.rs == 0 && (per_row == 1 || s.cs == 0);
                let ready = in_place(s) || (same && bi > 0);
                if !ready {
                    gather(s, &mut buf[k][..len]);
                }
            }
            let ins: [&[f32]; N] = std::array::from_fn(|k| {
                if in_place(&src[k]) {
                    std::slice::from_raw_parts(at(&src[k], r0, c0), len)
                } else {
                    &buf[k][..len]
                }
            });
            let direct = in_place(&o);
            let dst = if direct {
                std::slice::from_raw_parts_mut(at(&o, r0, c0) as *mut f32, len)
            } else {
                gather(&o, &mut obuf[..len]);
                &mut obuf[..len]
            };
            block(dst, ins);
            if !direct {
                for r in 0..nr {
                    for c in 0..width {
                        *(at(&o, r0 + r, c0 + c) as *mut f32) = obuf[r * width + c];
                    }
                }
            }
        }
    }
}

/// Elements the inner loop takes at a time: one AVX-512 vector.
const LANES: usize = 16;

/// The inner loop over one chunk: every slice of `ins` is `dst.len()` long. It runs in
/// blocks of [`LANES`] of fixed length, which LLVM compiles to straight vector code, and
/// the last partial block through a padded copy: a plain loop's vector body takes 64
/// elements at a time, so rows shorter than that (`[n, 10]`, `[n, 32]`) ran in its scalar
/// remainder, slower than `Zip` at 4 lanes.
#[inline(always)]
fn run<const N: usize, F: Fn(f32, [f32; N]) -> f32>(dst: &mut [f32], ins: [&[f32]; N], f: &F) {
    let len = dst.len();
    let ins: [&[f32]; N] = ins.map(|s| &s[..len]);
    let full = len / LANES * LANES;
    for b in (0..full).step_by(LANES) {
        let d: &mut [f32; LANES] = (&mut dst[b..b + LANES]).try_into().expect("a block of LANES");
        let x: [&[f32; LANES]; N] = std::array::from_fn(|k| ins[k][b..b + LANES].try_into().expect("a block of LANES"));
        // Loaded into and computed in local blocks, then stored: the slices come from raw
        // parts, and LLVM, unable to tell that `dst` overlaps no input, wrote the loop
        // over `d` in place as 16 scalar operations (2-3 elements per ns on the Xeon, for
        // `a * b + a`; one AVX-512 vector per operand now).
        let xv: [[f32; LANES]; N] = x.map(|x| *x);
        let mut r = *d;
        for i in 0..LANES {
            r[i] = f(r[i], std::array::from_fn(|k| xv[k][i]));
        }
        *d = r;
    }
    let tail = len - full;
    if tail > 0 {
        // The padding lanes are computed (from zeros) and dropped.
        let mut d = [0.0f32; LANES];
        let mut x = [[0.0f32; LANES]; N];
        for i in 0..tail {
            d[i] = dst[full + i];
            for k in 0..N {
                x[k][i] = ins[k][full + i];
            }
        }
        for i in 0..LANES {
            d[i] = f(d[i], std::array::from_fn(|k| x[k][i]));
        }
        dst[full..].copy_from_slice(&d[..tail]);
    }
}

/// `out` and `ins` (broadcast to `out`'s shape) as rows, when every operand's axes
/// merge into two: `(rows, cols, out, ins)`. Axes of length 1 are dropped first (a
/// column `[n, 1]` is one row of `n`), and rows that follow each other in every operand
/// (contiguous, or one value for all) are merged into one row, as `Zip` does, so that
/// short rows (`[n, 10]`) cost no loop set-up each.
fn as_rows<const N: usize>(
    out: &mut ArrayViewMutD<'_, f32>,
    ins: &[ArrayViewD<'_, f32>; N],
) -> Option<(usize, usize, Rows, [Rows; N])> {
    // `out`'s pointer with its write provenance, before `shape` borrows it.
    let out_ptr = out.as_mut_ptr();
    let shape = out.shape();
    // The axes longer than 1, innermost first.
    let mut long = (0..shape.len()).rev().filter(|&a| shape[a] > 1);
    let Some(last) = long.next() else {
        // One element (`map_views` returned early for none).
        let one = |ptr: *const f32| Rows { ptr, rs: 0, cs: 0 };
        return Some((1, 1, one(out_ptr), std::array::from_fn(|k| one(ins[k].as_ptr()))));
    };
    let cols = shape[last];
    let rows: usize = shape.iter().product::<usize>() / cols;
    let reduce = |ptr: *const f32, strides: &[isize]| -> Option<Rows> {
        // The leading long axes must step like one axis.
        let mut rs = None::<isize>;
        let mut next = 0isize;
        for a in long.clone() {
            match rs {
                None => rs = Some(strides[a]),
                Some(_) if strides[a] != next => return None,
                Some(_) => {}
            }
            next = strides[a] * shape[a] as isize;
        }
        Some(Rows { ptr, rs: rs.unwrap_or(0), cs: strides[last] })
    };
    let o = reduce(out_ptr, out.strides())?;
    let mut src = [Rows { ptr: std::ptr::null(), rs: 0, cs: 0 }; N];
    for (s, v) in src.iter_mut().zip(ins) {
        *s = reduce(v.as_ptr(), v.strides())?;
    }
    let follows = |r: &Rows| rows == 1 || r.rs == cols as isize * r.cs;
    if follows(&o) && src.iter().all(follows) {
        return Some((1, rows * cols, o, src));
    }
    Some((rows, cols, o, src))
}
