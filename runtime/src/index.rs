//! Kernels of the index family: `one_hot`, `gather` and its adjoint `scatter_add`,
//! `sparse_softmax_cross_entropy` and its gradient, and comparisons of u32 tensors.
//!
//! Generated code checks every index against its bound before a call runs (an input's
//! ids in the prologue, an `argmax` result at compile time), so these kernels only see
//! valid indices. They still never read or write out of bounds with a bad one: an id
//! past the bound gives a zero row (`one_hot`, `gather`), adds nothing (`scatter_add`)
//! or a NaN loss (`sparse_softmax_xent`), like TensorFlow's CPU kernels do for the ones
//! it does not reject.
//!
//! Outputs are workspace buffers in standard layout; operands may be any view (inputs
//! keep their strides). A non-standard output is handled too (through a standard copy,
//! which allocates; generated code never passes one).

use ndarray::{Array, ArrayViewD, ArrayViewMutD, Axis, IxDyn, Zip};

use crate::kernels::{exp, exp_inplace, ln, log_sum_exp, row_max, row_sum, rows_of, rows_of_mut};

/// A comparison of two index tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

/// `out = one_hot(ids)`: `out[.., k] = 1.0` where `k == ids[..]`, else 0; `out` has one
/// more (last) axis than `ids`, of size `depth`.
pub fn one_hot(ids: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    out.fill(0.0);
    let last = Axis(out.ndim() - 1);
    Zip::from(out.lanes_mut(last)).and(&ids).for_each(|mut lane, &id| {
        if let Some(o) = lane.get_mut(id as usize) {
            *o = 1.0;
        }
    });
}

/// `out = ln(sum(exp(z))) - z[y]` per row: the cross-entropy of `softmax(z)` against the
/// class `y`, through a stable log-sum-exp. `z` is `[.., c]`, `y` and `out` are `[..]`.
pub fn sparse_softmax_xent(z: ArrayViewD<'_, f32>, y: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    let axis = z.ndim() - 1;
    if let (Some(zr), Some(ys), Some(o)) = (rows_of(&z, axis), y.as_slice(), out.as_slice_mut()) {
        for ((z, &y), o) in zr.zip(ys).zip(o) {
            *o = z.get(y as usize).map_or(f32::NAN, |&zy| log_sum_exp(z) - zy);
        }
        return;
    }
    Zip::from(&mut out).and(z.lanes(Axis(axis))).and(&y).for_each(|o, z, &y| {
        let m = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let s: f32 = z.iter().map(|&v| exp(v - m)).sum();
        *o = z.get(y as usize).map_or(f32::NAN, |&zy| m + crate::kernels::ln(s) - zy);
    });
}

/// `out = (softmax(z) - one_hot(y)) * g[.., None]`: the gradient of
/// [`sparse_softmax_xent`] w.r.t. the logits, in one pass per row.
pub fn sparse_softmax_xent_grad(
    z: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, u32>,
    g: ArrayViewD<'_, f32>,
    mut out: ArrayViewMutD<'_, f32>,
) {
    let axis = z.ndim() - 1;
    let row = |z: &mut dyn Iterator<Item = f32>, o: &mut [f32], y: u32, g: f32| {
        let mut m = f32::NEG_INFINITY;
        for (o, v) in o.iter_mut().zip(z) {
            *o = v;
            m = m.max(v);
        }
        let mut s = 0.0;
        for o in o.iter_mut() {
            *o = exp(*o - m);
            s += *o;
        }
        let scale = g / s;
        for o in o.iter_mut() {
            *o *= scale;
        }
        if let Some(o) = o.get_mut(y as usize) {
            *o -= g;
        }
    };
    if let (Some(zr), Some(ys), Some(gs), Some(outs)) =
        (rows_of(&z, axis), y.as_slice(), g.as_slice(), rows_of_mut(&mut out, axis))
    {
        for (((z, &y), &g), o) in zr.zip(ys).zip(gs).zip(outs) {
            row(&mut z.iter().copied(), o, y, g);
        }
        return;
    }
    let last = Axis(axis);
    let cols = z.shape()[axis];
    let mut tmp = vec![0.0f32; cols];
    Zip::from(out.lanes_mut(last)).and(z.lanes(last)).and(&y).and(&g).for_each(|mut o, z, &y, &g| {
        row(&mut z.iter().copied(), &mut tmp, y, g);
        for (o, &t) in o.iter_mut().zip(&tmp) {
            *o = t;
        }
    });
}

/// [`sparse_softmax_xent_with_grad`]'s rows over contiguous slices, `cols > 0` floats a
/// row: the shifted logits into `grad`, one vector pass of `exp` over all of it, then per
/// row the sum, the loss and the gradient.
fn sparse_xent_rows(z: &[f32], y: &[u32], g: &[f32], loss: &mut [f32], grad: &mut [f32], cols: usize) {
    for ((z, o), l) in z.chunks_exact(cols).zip(grad.chunks_exact_mut(cols)).zip(loss.iter_mut()) {
        let m = row_max(z);
        for (o, &v) in o.iter_mut().zip(z) {
            *o = v - m;
        }
        *l = m;
    }
    exp_inplace(grad);
    for ((((z, &y), &g), l), o) in z.chunks_exact(cols).zip(y).zip(g).zip(loss).zip(grad.chunks_exact_mut(cols)) {
        let s = row_sum(o);
        *l = z.get(y as usize).map_or(f32::NAN, |&zy| *l + ln(s) - zy);
        let scale = g / s;
        for o in o.iter_mut() {
            *o *= scale;
        }
        if let Some(o) = o.get_mut(y as usize) {
            *o -= g;
        }
    }
}

/// [`sparse_softmax_xent`] and [`sparse_softmax_xent_grad`] in one pass per row: each
/// row's loss into `loss` and `(softmax(z) - one_hot(y)) * g` into `grad`, computing the
/// exponentials once for both (as `softmax_xent_with_grad` does for dense labels: the
/// shifted logits go into `grad`, one vector pass of `exp` over the whole buffer, then
/// per row the sum, the loss and the gradient).
pub fn sparse_softmax_xent_with_grad(
    z: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, u32>,
    g: ArrayViewD<'_, f32>,
    mut loss: ArrayViewMutD<'_, f32>,
    mut grad: ArrayViewMutD<'_, f32>,
) {
    let axis = z.ndim() - 1;
    let cols = z.shape()[axis];
    if let (true, Some(zs), Some(ys), Some(gs), Some(ls), Some(os)) = (
        cols > 0 && y.shape() == &z.shape()[..axis],
        z.as_slice(),
        y.as_slice(),
        g.as_slice(),
        loss.as_slice_mut(),
        grad.as_slice_mut(),
    ) {
        if gs.len() == ls.len() && ys.len() == ls.len() && ls.len() * cols == zs.len() && os.len() == zs.len() {
            // Whole blocks of 16 narrow rows on AVX-512 (`narrow`), the rest here.
            #[cfg(target_arch = "x86_64")]
            let done = crate::narrow::sparse_softmax_xent_with_grad(zs, ys, gs, ls, os, cols);
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            let at = done * cols;
            sparse_xent_rows(&zs[at..], &ys[done..], &gs[done..], &mut ls[done..], &mut os[at..], cols);
            return;
        }
    }
    sparse_softmax_xent(z.view(), y.view(), loss.view_mut());
    sparse_softmax_xent_grad(z, y, g, grad);
}

/// The number of scalars in one row of a table `[v, d..]` (the product of `d..`).
fn row_len(shape: &[usize]) -> usize {
    shape[1..].iter().product()
}

/// `out[i.., ..] = table[ids[i..], ..]`: an embedding lookup. `table` is `[v, d..]`, `ids`
/// `[i..]`, `out` `[i.., d..]`.
pub fn gather(table: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    let rows = table.shape()[0];
    let d = row_len(table.shape());
    let Some(o) = out.as_slice_mut() else {
        let mut tmp = Array::<f32, IxDyn>::zeros(out.raw_dim());
        gather(table, ids, tmp.view_mut());
        out.assign(&tmp);
        return;
    };
    if d == 0 {
        return;
    }
    let contiguous = table.as_slice();
    // ids as a slice where they are one (the common case): IxDyn's iterator is slow.
    let ids = ids.as_standard_layout();
    let ids = ids.as_slice().unwrap_or(&[]);
    for (chunk, &id) in o.chunks_exact_mut(d).zip(ids) {
        let id = id as usize;
        if id >= rows {
            chunk.fill(0.0);
            continue;
        }
        match contiguous {
            Some(t) => chunk.copy_from_slice(&t[id * d..(id + 1) * d]),
            None => {
                for (c, &v) in chunk.iter_mut().zip(table.index_axis(Axis(0), id).iter()) {
                    *c = v;
                }
            }
        }
    }
}

/// `out = 0; out[ids[i..], ..] += g[i.., ..]`: the adjoint of [`gather`], each row of `g`
/// added into the table row its id names (repeated ids add up, in order). `g` is
/// `[i.., d..]`, `ids` `[i..]`, `out` `[v, d..]`.
pub fn scatter_add(g: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    out.fill(0.0);
    add_rows(1.0, g, ids, 1, out);
}

/// `table[ids[i..], ..] += alpha * g[i.., ..]`: [`scatter_add`] into the table itself,
/// without zeroing it, touching only the rows the ids name. The fused plain-SGD step of
/// `gather` calls it with `alpha = -lr`: against `table -= lr * scatter_add(g, ids)` it
/// adds a repeated id's rows into the table one at a time rather than summing them first
/// (the same terms, rounded in another order), and skips the zeroed table-sized gradient
/// and the two passes over it (3 x 2.5 MB for a 10k x 64 table whose batch uses 400 rows).
pub fn scatter_add_acc(alpha: f32, g: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, out: ArrayViewMutD<'_, f32>) {
    add_rows(alpha, g, ids, 1, out);
}

/// `y += alpha * x` over a row. In blocks of 16 so that a short row (an embedding of
/// 16) is one AVX-512 vector, or two AVX2 ones, under [`widest`](crate::sgemm::widest):
/// the plain loop's vector body (unrolled to 64 for AVX-512) never ran on such rows, and
/// the scalar tail made the step slower than at the baseline.
#[inline(always)]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (ys, yt) = y[..n].as_chunks_mut::<16>();
    let (xs, xt) = x[..n].as_chunks::<16>();
    for (y, x) in ys.iter_mut().zip(xs) {
        // Through a local block: LLVM cannot tell that the rows do not overlap once this
        // is inlined, and wrote the element loop as 16 scalar adds.
        let mut r = *y;
        for i in 0..16 {
            r[i] += alpha * x[i];
        }
        *y = r;
    }
    for (y, &x) in yt.iter_mut().zip(xt) {
        *y += alpha * x;
    }
}

/// The scatter family's one loop: `out[id, ..] += alpha * g[r, ..]` for every id of the
/// `r`-th run of `bag` ids (1 for `scatter_add`, the bag length for an embedding bag), in
/// order. `g` holds one row of `d` scalars per run, `out` is `[v, d..]`. An id past `v`
/// adds nothing (the prologue has rejected it already).
fn add_rows(alpha: f32, g: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, bag: usize, mut out: ArrayViewMutD<'_, f32>) {
    let rows = out.shape().first().copied().unwrap_or(0);
    let d = row_len(out.shape());
    if d == 0 || bag == 0 || ids.is_empty() {
        return;
    }
    // Workspace buffers and standard-layout inputs in practice: borrowed, no copy. (Through
    // a `dyn Iterator` and ids' IxDyn iterator, the scatter took 14% of the embedding
    // example's Adam step: issue 17's benchmarks.)
    let (g, ids) = (g.as_standard_layout(), ids.as_standard_layout());
    let (Some(gs), Some(is)) = (g.as_slice(), ids.as_slice()) else { return };
    let runs = gs.chunks_exact(d).zip(is.chunks_exact(bag));
    match out.as_slice_mut() {
        // Compiled for the widest vectors: at the baseline's SSE2 the bag loops took about
        // 2 instructions per element (callgrind, a 10k x 64 table's 400 rows).
        Some(o) => crate::sgemm::widest(
            #[inline(always)]
            || {
                for (row, run) in runs {
                    for &id in run {
                        let id = id as usize;
                        if id < rows {
                            axpy(alpha, row, &mut o[id * d..(id + 1) * d]);
                        }
                    }
                }
            },
        ),
        // A param is in standard layout after the prologue; any other table row by row.
        None => {
            for (row, run) in runs {
                for &id in run {
                    if (id as usize) < rows {
                        let mut t = out.index_axis_mut(Axis(0), id as usize);
                        for (t, &v) in t.iter_mut().zip(row) {
                            *t += alpha * v;
                        }
                    }
                }
            }
        }
    }
}

/// `out[p.., ..] = sum over t of table[ids[p.., t], ..]`: the sum of each bag's rows
/// (PyTorch's `EmbeddingBag` with `mode="sum"`), what `sum(gather(table, ids), axis = -1)`
/// computes without the `[p.., t, d..]` gather in between. `ids` is `[p.., t]`, `out`
/// `[p.., d..]`. Rows are added in id order, as the reduction over the gather's axis adds
/// them (the same terms; a row past the bound adds nothing, as `gather` gives it zeros).
pub fn gather_sum(table: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    let rows = table.shape()[0];
    let d = row_len(table.shape());
    let bag = ids.shape().last().copied().unwrap_or(1);
    let Some(o) = out.as_slice_mut() else {
        let mut tmp = Array::<f32, IxDyn>::zeros(out.raw_dim());
        gather_sum(table, ids, tmp.view_mut());
        out.assign(&tmp);
        return;
    };
    o.fill(0.0);
    if d == 0 || bag == 0 {
        return;
    }
    let table = table.as_standard_layout();
    let ids = ids.as_standard_layout();
    let (Some(t), Some(ids)) = (table.as_slice(), ids.as_slice()) else { return };
    crate::sgemm::widest(
        #[inline(always)]
        || {
            for (chunk, bag_ids) in o.chunks_exact_mut(d).zip(ids.chunks_exact(bag)) {
                for &id in bag_ids {
                    let id = id as usize;
                    if id < rows {
                        // `1 * v` is exact: the bits of `c + v`.
                        axpy(1.0, &t[id * d..(id + 1) * d], chunk);
                    }
                }
            }
        },
    )
}

/// `table[ids[p.., t], ..] += alpha * g[p.., ..]` for every `t`: each bag's adjoint row
/// added into the rows of all its ids (repeated ids add up, in order). With `out` zeroed
/// first and `alpha = 1` it is the adjoint of [`gather_sum`]; the fused SGD step of an
/// embedding bag calls it on the table itself with `alpha = -lr`.
pub fn scatter_add_bags_acc(alpha: f32, g: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, out: ArrayViewMutD<'_, f32>) {
    let bag = ids.shape().last().copied().unwrap_or(1);
    add_rows(alpha, g, ids, bag, out);
}

/// `out = 0; out[ids[p.., t], ..] += g[p.., ..]`: the adjoint of [`gather_sum`].
pub fn scatter_add_bags(g: ArrayViewD<'_, f32>, ids: ArrayViewD<'_, u32>, mut out: ArrayViewMutD<'_, f32>) {
    out.fill(0.0);
    scatter_add_bags_acc(1.0, g, ids, out);
}

/// `out = (a cmp b) as f32`, with NumPy broadcasting of `a` and `b` to `out`'s shape.
pub fn compare_indices(a: ArrayViewD<'_, u32>, b: ArrayViewD<'_, u32>, cmp: Cmp, mut out: ArrayViewMutD<'_, f32>) {
    let shape = out.raw_dim();
    let (Some(a), Some(b)) = (a.broadcast(shape.clone()), b.broadcast(shape)) else {
        // Shapes are checked at compile time; a mismatch here is a caller bug.
        out.fill(f32::NAN);
        return;
    };
    let f = match cmp {
        Cmp::Eq => |x: u32, y: u32| x == y,
        Cmp::Ne => |x: u32, y: u32| x != y,
        Cmp::Gt => |x: u32, y: u32| x > y,
        Cmp::Ge => |x: u32, y: u32| x >= y,
    };
    Zip::from(&mut out).and(&a).and(&b).for_each(|o, &x, &y| *o = if f(x, y) { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array1, Array2, ArrayD};

    #[test]
    fn the_fused_sparse_xent_is_the_two_kernels() {
        let z = Array2::from_shape_fn((7, 5), |(i, j)| ((i * 5 + j) as f32 * 0.37).sin() * 4.0);
        let y = Array1::from_shape_fn(7, |i| (i * 3 % 5) as u32);
        let g = Array1::from_shape_fn(7, |i| 0.5 + i as f32);
        let (mut l1, mut d1) = (Array1::<f32>::zeros(7), Array2::<f32>::zeros((7, 5)));
        sparse_softmax_xent_with_grad(
            z.view().into_dyn(),
            y.view().into_dyn(),
            g.view().into_dyn(),
            l1.view_mut().into_dyn(),
            d1.view_mut().into_dyn(),
        );
        let (mut l2, mut d2) = (Array1::<f32>::zeros(7), Array2::<f32>::zeros((7, 5)));
        sparse_softmax_xent(z.view().into_dyn(), y.view().into_dyn(), l2.view_mut().into_dyn());
        sparse_softmax_xent_grad(
            z.view().into_dyn(),
            y.view().into_dyn(),
            g.view().into_dyn(),
            d2.view_mut().into_dyn(),
        );
        for (a, b) in l1.iter().zip(&l2).chain(d1.iter().zip(&d2)) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // f64: loss = lse - z[y]; each gradient row sums to 0.
        for i in 0..7 {
            let lse = z.row(i).iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            assert!((l1[i] as f64 - (lse - z[[i, y[i] as usize]] as f64)).abs() < 1e-5);
            assert!(d1.row(i).sum().abs() < 1e-5 * g[i]);
        }
        // A transposed (non-contiguous) logits view takes the lane path.
        let zt = z.t().to_owned();
        let (mut l3, mut d3) = (Array1::<f32>::zeros(7), Array2::<f32>::zeros((7, 5)));
        sparse_softmax_xent_with_grad(
            zt.t().into_dyn(),
            y.view().into_dyn(),
            g.view().into_dyn(),
            l3.view_mut().into_dyn(),
            d3.view_mut().into_dyn(),
        );
        for (a, b) in l3.iter().zip(&l1).chain(d3.iter().zip(&d1)) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn bad_ids_never_read_or_write_out_of_bounds() {
        let table = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f32);
        let ids = Array1::from(vec![0u32, 3, u32::MAX]);
        let mut out = Array2::<f32>::from_elem((3, 2), 9.0);
        gather(table.view().into_dyn(), ids.view().into_dyn(), out.view_mut().into_dyn());
        assert_eq!(out.as_slice().unwrap(), &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let mut acc = Array2::<f32>::from_elem((3, 2), 9.0);
        scatter_add(out.view().into_dyn(), ids.view().into_dyn(), acc.view_mut().into_dyn());
        assert_eq!(acc.as_slice().unwrap(), &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let mut hot = Array2::<f32>::zeros((3, 3));
        one_hot(ids.view().into_dyn(), hot.view_mut().into_dyn());
        assert_eq!(hot.sum(), 1.0);
        let (logits, mut l) = (table.t().to_owned(), Array1::<f32>::zeros(2));
        sparse_softmax_xent(logits.view().into_dyn(), ids.slice(ndarray::s![..2]).into_dyn(), l.view_mut().into_dyn());
        assert!(l[0].is_finite() && l[1].is_nan());
    }

    #[test]
    fn gather_sum_is_the_sum_of_the_gather_and_its_adjoint_the_scatter() {
        let table = Array2::from_shape_fn((5, 3), |(i, j)| ((i * 3 + j) as f32 * 0.7).sin());
        // Two bags of 4 ids, a repeated id and one past the bound.
        let ids = Array2::from_shape_vec((2, 4), vec![0u32, 2, 2, 4, 1, 9, 3, 0]).unwrap();
        let mut full = ndarray::Array3::<f32>::zeros((2, 4, 3));
        gather(table.view().into_dyn(), ids.view().into_dyn(), full.view_mut().into_dyn());
        let mut bags = Array2::<f32>::from_elem((2, 3), 7.0);
        gather_sum(table.view().into_dyn(), ids.view().into_dyn(), bags.view_mut().into_dyn());
        assert_eq!(bags, full.sum_axis(Axis(1)));
        // A transposed (non-contiguous) ids view: the same bags.
        let idt = ids.t().to_owned();
        let mut bags_t = Array2::<f32>::zeros((2, 3));
        gather_sum(table.view().into_dyn(), idt.t().into_dyn(), bags_t.view_mut().into_dyn());
        assert_eq!(bags_t, bags);
        // The adjoint: <gather_sum(t), g> == <t, scatter_add_bags(g)>.
        let g = Array2::from_shape_fn((2, 3), |(i, j)| 0.5 + (i * 3 + j) as f32);
        let mut dt = Array2::<f32>::from_elem((5, 3), 9.0);
        scatter_add_bags(g.view().into_dyn(), ids.view().into_dyn(), dt.view_mut().into_dyn());
        let lhs: f32 = (&bags * &g).sum();
        let rhs: f32 = (&table * &dt).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
        assert_eq!(dt.row(2).to_vec(), (&g.row(0) * 2.0).to_vec(), "a repeated id adds twice");
        // Against scatter_add of the broadcast adjoint.
        let wide = g.view().insert_axis(Axis(1)).broadcast((2, 4, 3)).unwrap().to_owned();
        let mut dt2 = Array2::<f32>::zeros((5, 3));
        scatter_add(wide.view().into_dyn(), ids.view().into_dyn(), dt2.view_mut().into_dyn());
        assert_eq!(dt, dt2);
        // Empty bags sum to zero; an empty batch writes nothing.
        let none = Array2::<u32>::zeros((2, 0));
        gather_sum(table.view().into_dyn(), none.view().into_dyn(), bags.view_mut().into_dyn());
        assert!(bags.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn scatter_add_acc_adds_every_row_in_order_and_skips_ids_out_of_range() {
        let src = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f32 + 1.0);
        let ids = ndarray::arr1(&[2u32, 0, 2, 9]);
        let mut table = ArrayD::<f32>::zeros(IxDyn(&[4, 3]));
        table.fill(10.0);
        scatter_add_acc(-0.5, src.view().into_dyn(), ids.view().into_dyn(), table.view_mut());
        let want = ndarray::arr2(&[
            [10.0 - 0.5 * 4.0, 10.0 - 0.5 * 5.0, 10.0 - 0.5 * 6.0],
            [10.0; 3],
            [10.0 - 0.5 * 1.0 - 0.5 * 7.0, 10.0 - 0.5 * 2.0 - 0.5 * 8.0, 10.0 - 0.5 * 3.0 - 0.5 * 9.0],
            [10.0; 3],
        ]);
        assert_eq!(table, want.into_dyn());
        // Non-standard views of everything: the same numbers.
        let mut t2 = Array2::<f32>::from_elem((3, 4), 10.0);
        let src_t = src.t().to_owned();
        let rev = ndarray::arr1(&[9u32, 2, 0, 2]);
        scatter_add_acc(
            -0.5,
            src_t.t().into_dyn(),
            rev.slice(s![..;-1]).into_dyn(),
            t2.view_mut().reversed_axes().into_dyn(),
        );
        assert_eq!(t2.t().to_owned().into_dyn(), table);
    }

    #[test]
    fn bag_loops_match_a_naive_loop_across_the_16_blocks_and_the_tail() {
        for d in [1usize, 16, 37, 64] {
            let table = Array2::from_shape_fn((9, d), |(i, j)| ((i * d + j) as f32 * 0.31).sin());
            let ids = Array2::from_shape_vec((3, 4), vec![0u32, 8, 8, 3, 5, 1, 2, 7, 4, 4, 6, 0]).unwrap();
            let mut bags = Array2::<f32>::zeros((3, d));
            gather_sum(table.view().into_dyn(), ids.view().into_dyn(), bags.view_mut().into_dyn());
            let mut acc = table.clone();
            scatter_add_bags_acc(-0.5, bags.view().into_dyn(), ids.view().into_dyn(), acc.view_mut().into_dyn());
            let (mut want_bags, mut want_acc) = (Array2::<f32>::zeros((3, d)), table.clone());
            for (p, run) in ids.rows().into_iter().enumerate() {
                for &id in run {
                    for j in 0..d {
                        want_bags[[p, j]] += table[[id as usize, j]];
                    }
                }
            }
            for (p, run) in ids.rows().into_iter().enumerate() {
                for &id in run {
                    for j in 0..d {
                        want_acc[[id as usize, j]] += -0.5 * want_bags[[p, j]];
                    }
                }
            }
            assert_eq!(bags, want_bags, "d = {d}");
            assert_eq!(acc, want_acc, "d = {d}");
        }
    }
}
