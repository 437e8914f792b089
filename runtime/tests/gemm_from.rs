//! `kernels::gemm_from` (`out = src + alpha * op(a) op(b)`, out of place), the plain-SGD
//! guard's staged update: the same bits as `gemm_acc` into a copy of `src`, for every
//! thin form (dot, outer, the transposed orientation, two depth blocks, a strided `c`)
//! and the fallback (a product no thin kernel takes), with `src` left untouched.

use modelc_runtime::kernels::{gemm_acc, gemm_from};
use modelc_runtime::ndarray::{s, Array2, ArrayView2, ShapeBuilder};

fn fill(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| (((i * 31 + j * 17 + seed * 7) % 101) as f32 - 50.0) / 37.0)
}

fn bits(a: ArrayView2<'_, f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// `gemm_from` against `gemm_acc` for `op(a) op(b)` of `m x k` by `k x n`, with `c`
/// (and `src`) column-major when `fortran`.
fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool, fortran: bool) {
    let a = if ta { fill(k, m, 1) } else { fill(m, k, 1) };
    let b = if tb { fill(n, k, 2) } else { fill(k, n, 2) };
    let shape = (m, n).set_f(fortran);
    let src = Array2::from_shape_vec(shape, fill(m, n, 3).into_iter().collect()).unwrap();
    let before = src.clone();
    let mut want = src.clone();
    gemm_acc(-0.3, a.view(), ta, b.view(), tb, want.view_mut());
    let mut out = Array2::from_shape_vec(shape, vec![f32::NAN; m * n]).unwrap();
    gemm_from(-0.3, a.view(), ta, b.view(), tb, src.view(), out.view_mut());
    let case = format!("{m}x{k}x{n} ta={ta} tb={tb} fortran={fortran}");
    assert_eq!(bits(out.view()), bits(want.view()), "{case}");
    assert_eq!(src, before, "src untouched: {case}");
}

#[test]
fn gemm_from_gives_gemm_acc_bits_on_every_thin_form_and_the_fallback() {
    // M1's weight gradient x^T dz: the outer form (a's columns contiguous).
    check(784, 100, 10, true, false, false);
    // The dot form (a's rows contiguous), one and two depth blocks (THIN_KB = 2048).
    check(300, 64, 7, false, false, false);
    check(40, 4100, 3, false, true, false);
    // m <= 16: the transposed orientation, and a column-major c (store_small's strides).
    check(5, 200, 300, false, false, false);
    check(123, 77, 9, true, false, true);
    // Ragged tails: rows not a multiple of 8, a single row.
    check(37, 50, 13, true, false, false);
    check(1, 64, 16, false, false, false);
    // No thin kernel: both sides wide (the copy + accumulate fallback).
    check(100, 50, 80, false, false, false);
    check(64, 33, 48, true, true, true);
}

#[test]
fn gemm_from_with_src_of_other_strides_falls_back_to_the_same_numbers() {
    // `src` a transposed copy's view (other strides than `out`): thin_from declines.
    let (a, b) = (fill(100, 784, 1), fill(100, 10, 2));
    let src_t = fill(10, 784, 3);
    let src = src_t.t();
    let mut want = src.to_owned();
    gemm_acc(0.7, a.view(), true, b.view(), false, want.view_mut());
    let mut out = Array2::<f32>::zeros((784, 10));
    gemm_from(0.7, a.view(), true, b.view(), false, src, out.view_mut());
    assert_eq!(bits(out.view()), bits(want.view()));
    // A slice of a larger matrix as `out` (row stride 20), `src` of the same layout.
    let mut big = Array2::<f32>::zeros((784, 20));
    let src_big = Array2::from_shape_fn((784, 20), |(i, j)| (i + j) as f32 * 0.01);
    let mut want = src_big.slice(s![.., ..10]).to_owned();
    gemm_acc(0.7, a.view(), true, b.view(), false, want.view_mut());
    gemm_from(0.7, a.view(), true, b.view(), false, src_big.slice(s![.., ..10]), big.slice_mut(s![.., ..10]));
    assert_eq!(bits(big.slice(s![.., ..10])), bits(want.view()));
}
