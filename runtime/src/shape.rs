//! Kernels of the shape ops (`concat`, `slice` and its adjoint `pad`, the `where` of
//! index tensors), reductions over several axes, the run-time check of a reshape whose
//! element count the compiler could not prove (`[batch, 6] -> [n, 4]`), and the range
//! check of a slice of an index input ([`check_indices_in`]).
//!
//! `concat`, `slice` and `select` are generic over the element: they move f32 values
//! and u32 indices alike (`reshape` is `kernels::reshape`, generic too).
//!
//! Like every kernel they write into caller-owned buffers and allocate nothing; they take
//! views of any strides. They trust the shapes they are given (checked at compile time,
//! or in the generated prologue before anything runs).

use ndarray::{ArrayViewD, ArrayViewMutD, Axis, Slice};

use crate::Error;

/// `out = concat(ins, axis)`: each operand is copied into its range of `out`.
pub fn concat<T: Copy>(ins: &[ArrayViewD<'_, T>], axis: usize, mut out: ArrayViewMutD<'_, T>) {
    let mut start = 0;
    for a in ins {
        let len = a.len_of(Axis(axis));
        out.slice_axis_mut(Axis(axis), Slice::from(start..start + len)).assign(a);
        start += len;
    }
}

/// `out = a[.., start..start + out.len_of(axis), ..]` along `axis`.
pub fn slice<T: Copy>(a: ArrayViewD<'_, T>, axis: usize, start: usize, mut out: ArrayViewMutD<'_, T>) {
    let len = out.len_of(Axis(axis));
    out.assign(&a.slice_axis(Axis(axis), Slice::from(start..start + len)));
}

/// `out = where(cond, a, b)` with broadcasting: `a` where `cond != 0` (NaN included, as
/// the fused f32 loop does), else `b`. The generated code calls it for u32 branches; an
/// f32 `where` is fused into its neighbours' loop instead.
pub fn select<T: Copy>(
    cond: ArrayViewD<'_, f32>,
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
    mut out: ArrayViewMutD<'_, T>,
) {
    let shape = out.raw_dim();
    let (Some(c), Some(a), Some(b)) = (cond.broadcast(shape.clone()), a.broadcast(shape.clone()), b.broadcast(shape))
    else {
        unreachable!("shapes checked at compile time")
    };
    ndarray::Zip::from(&mut out).and(&c).and(&a).and(&b).for_each(|o, &c, &a, &b| *o = if c != 0.0 { a } else { b });
}

/// [`crate::support::check_indices`] for the ids an index op reads from a slice of an
/// index input: `window` holds the `(axis, start, end)` slices taken of `ids`, innermost
/// first (e.g. `gather(emb, slice(ids, axis = 1, start = 2))` reads columns 2.. only).
/// Only the window's ids must be below `bound`; the position in the error is `ids`' own
/// (the window's offsets added back), so it names the element of the input the caller
/// passed. Allocates only when it reports an error.
pub fn check_indices_in<D: ndarray::Dimension>(
    input: &'static str,
    ids: ndarray::ArrayView<'_, u32, D>,
    window: &[(usize, usize, usize)],
    bound: usize,
    what: &'static str,
) -> Result<(), Error> {
    let mut v = ids.into_dyn();
    let mut offset = [0usize; 16];
    for &(axis, start, end) in window {
        v.slice_axis_inplace(Axis(axis), Slice::from(start..end));
        if let Some(o) = offset.get_mut(axis) {
            *o += start;
        }
    }
    match crate::support::check_indices(input, v, bound, what) {
        Err(Error::Index { input, index, mut position, bound, what }) => {
            for (p, o) in position.iter_mut().zip(offset) {
                *p += o;
            }
            Err(Error::Index { input, index, position, bound, what })
        }
        other => other,
    }
}

/// `out` = zeros with `a` at `before..before + a.len_of(axis)` along `axis` (the adjoint
/// of [`slice()`]).
pub fn pad(a: ArrayViewD<'_, f32>, axis: usize, before: usize, mut out: ArrayViewMutD<'_, f32>) {
    out.fill(0.0);
    let len = a.len_of(Axis(axis));
    out.slice_axis_mut(Axis(axis), Slice::from(before..before + len)).assign(&a);
}

/// `out = fold(a)` over `axes` (sorted, distinct), starting from `init`; `out` has the
/// reduced axes removed or kept as 1. Every element of `a` is folded into the output
/// element its kept coordinates name, in `a`'s logical order (so a sum adds in the same
/// order whatever the strides). Allocates nothing for ranks up to 4 (ndarray keeps such
/// indices inline) and at most 16 axes.
pub fn reduce_axes(
    a: ArrayViewD<'_, f32>,
    axes: &[usize],
    init: f32,
    f: impl Fn(f32, f32) -> f32,
    out: ArrayViewMutD<'_, f32>,
) {
    let mut out = out;
    if out.ndim() != a.ndim() {
        for &ax in axes {
            out.insert_axis_inplace(Axis(ax));
        }
    }
    out.fill(init);
    let rank = a.ndim().min(16);
    let mut idx = [0usize; 16];
    for (i, &v) in a.indexed_iter() {
        for (k, slot) in idx.iter_mut().enumerate().take(rank) {
            *slot = if axes.contains(&k) { 0 } else { i[k] };
        }
        let o = &mut out[&idx[..rank]];
        *o = f(*o, v);
    }
}

/// `out = max(a, axes)`; a NaN wins (as [`crate::kernels::max_axis`]).
pub fn max_axes(a: ArrayViewD<'_, f32>, axes: &[usize], out: ArrayViewMutD<'_, f32>) {
    if let [axis] = axes {
        crate::kernels::max_axis(a, *axis, out);
        return;
    }
    reduce_axes(a, axes, f32::NEG_INFINITY, |m, v| if m.is_nan() || !(v > m || v.is_nan()) { m } else { v }, out);
}

/// `Err(Error::Shape)` unless a reshape from `from` to `to` (as declared, e.g. `[batch,
/// 6]` and `[n, 4]`) keeps the element count with this call's dimensions: `input` binds
/// a dimension of the reshape, `declared` is its declared shape and `found` its shape.
pub fn check_reshape(
    input: &'static str,
    declared: &'static str,
    found: &[usize],
    from: &'static str,
    to: &'static str,
    from_len: u64,
    to_len: u64,
) -> Result<(), Error> {
    if from_len == to_len {
        return Ok(());
    }
    Err(Error::Shape {
        input,
        expected: declared.to_string(),
        found: found.to_vec(),
        detail: format!(
            "`reshape` from {from} to {to} must keep the element count, but with these dimensions {from} has {from_len} elements and {to} has {to_len}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array2, Array3, ArrayD, IxDyn};

    #[test]
    fn concat_slice_and_pad_move_the_right_elements() {
        let a = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
        let b = arr2(&[[5.0f32], [6.0]]);
        let mut out = Array2::<f32>::zeros((2, 3));
        concat(&[a.view().into_dyn(), b.view().into_dyn()], 1, out.view_mut().into_dyn());
        assert_eq!(out, arr2(&[[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]));
        let mut s = Array2::<f32>::zeros((2, 2));
        slice(out.view().into_dyn(), 1, 1, s.view_mut().into_dyn());
        assert_eq!(s, arr2(&[[2.0, 5.0], [4.0, 6.0]]));
        let mut p = Array2::<f32>::from_elem((2, 4), 9.0);
        pad(s.view().into_dyn(), 1, 1, p.view_mut().into_dyn());
        assert_eq!(p, arr2(&[[0.0, 2.0, 5.0, 0.0], [0.0, 4.0, 6.0, 0.0]]));
        // Reversed strides in, the same answer.
        let mut r = Array2::<f32>::zeros((2, 2));
        slice(out.slice(ndarray::s![..;-1, ..]).into_dyn(), 1, 0, r.view_mut().into_dyn());
        assert_eq!(r, arr2(&[[3.0, 4.0], [1.0, 2.0]]));
    }

    #[test]
    fn select_broadcasts_and_moves_indices() {
        let c = arr2(&[[1.0f32], [0.0], [f32::NAN]]);
        let a = ndarray::arr1(&[7u32, 8]);
        let b = arr2(&[[1u32, 2], [3, 4], [5, 6]]);
        let mut out = Array2::<u32>::zeros((3, 2));
        select(c.view().into_dyn(), a.view().into_dyn(), b.view().into_dyn(), out.view_mut().into_dyn());
        // A NaN condition picks `a`, as the fused f32 loop does.
        assert_eq!(out, arr2(&[[7, 8], [3, 4], [7, 8]]));
        let mut j = Array2::<u32>::zeros((3, 4));
        concat(&[b.view().into_dyn(), out.view().into_dyn()], 1, j.view_mut().into_dyn());
        assert_eq!(j.row(1).to_vec(), [3, 4, 3, 4]);
    }

    #[test]
    fn a_window_of_ids_is_checked_and_reported_at_the_inputs_position() {
        let ids = arr2(&[[9u32, 1, 2, 9], [9, 0, 7, 9]]);
        assert!(check_indices_in("ids", ids.view(), &[(1, 1, 3)], 8, "gather").is_ok());
        match check_indices_in("ids", ids.view(), &[(1, 1, 4), (1, 0, 2)], 5, "gather") {
            Err(Error::Index { index, position, .. }) => assert_eq!((index, position), (7, vec![1, 2])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_axes_reduce_with_and_without_keepdims() {
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 12 + j * 4 + k) as f32);
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[3]));
        reduce_axes(a.view().into_dyn(), &[0, 2], 0.0, |s, v| s + v, out.view_mut());
        for j in 0..3 {
            let want: f32 = (0..2).flat_map(|i| (0..4).map(move |k| (i * 12 + j * 4 + k) as f32)).sum();
            assert_eq!(out[[j]], want);
        }
        let mut keep = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 1]));
        max_axes(a.view().into_dyn(), &[0, 2], keep.view_mut());
        assert_eq!(keep.iter().copied().collect::<Vec<_>>(), [15.0, 19.0, 23.0]);
        let mut nan = a.clone();
        nan[[1, 1, 2]] = f32::NAN;
        max_axes(nan.view().into_dyn(), &[0, 2], keep.view_mut());
        assert!(keep[[0, 1, 0]].is_nan());
        assert_eq!(keep[[0, 2, 0]], 23.0);
    }

    #[test]
    fn a_reshape_that_changes_the_count_is_an_error() {
        assert!(check_reshape("x", "[batch, 6]", &[2, 6], "[batch, 6]", "[n, 4]", 12, 12).is_ok());
        let e = check_reshape("x", "[batch, 6]", &[2, 6], "[batch, 6]", "[n, 4]", 12, 8).unwrap_err().to_string();
        assert!(e.contains("12 elements") && e.contains("has 8"), "{e}");
    }
}
