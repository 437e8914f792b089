//! Hand-minimized cases that the random-model test (`random_models.rs`) found, one test
//! each, so that they stay fixed whatever the generator draws.

use modelc::model;
use modelc::ndarray::{Array1, Array2};

// Found by model seed 5 (n = 0): `exp` of an empty vector wrote one element through the
// dangling pointer of the empty output buffer (SIGSEGV): `elementwise::as_rows` took the
// axis of length 0 for a unit axis and the whole array for one element.
// (The model of seed 5 took `argmax(exp(x), axis = 0)`; an argmax over an empty axis is
// now an `Err` before anything runs, so `exp` is summed here instead, and the argmax has
// a test of its own below; `pick` is an output since argmax gives u32 indices.)
model! { struct EmptyVector { input x: [n]; input y: [n, 1]; param p: [] = zeros; loss l = sum(square(p)); metric acc = sum(exp(x)); output pick = argmax(exp(x), axis = 0); output e = exp(y) * 2.0; optimizer sgd(learning_rate = 0.1); } }

#[test]
fn elementwise_ops_on_an_empty_vector_write_nothing() {
    let m = EmptyVector::new();
    assert_eq!(m.acc(Array1::<f32>::zeros(0).view()).unwrap(), 0.0);
    let err = m.pick(Array1::<f32>::zeros(0).view()).unwrap_err().to_string();
    assert!(err.contains("argmax over `n`"), "{err}");
    let e = m.e(Array2::<f32>::zeros((0, 1)).view()).unwrap();
    assert_eq!(e.shape(), &[0, 1]);
}

// Found by model seeds 1020 and 1035 (`MODELC_RANDOM_SEED=1001 MODELC_RANDOM_MODELS=80`,
// n = m = 0): `max` over an axis bound to 0 is -inf (`kernels::max_axis`: "-inf if
// empty"), so the loss is `Ok(-inf)`, or `Ok(NaN)` once -inf meets a product with mixed
// signs, where a mean over the same axis is `Err(EmptyReduction)`. Fixed in the emitter's
// prologue checks: a max over nothing has no value either (NumPy refuses it; TF gives the
// lowest float). Minimal form of seed 1035:
model! { struct MaxEmpty { input x: [n]; param p: [] = zeros; loss l = max(x, axis = 0) * square(p); optimizer sgd(learning_rate = 0.1); } }

#[test]
fn max_over_an_empty_axis_is_an_error() {
    let mut m = MaxEmpty::new();
    m.p = modelc::ndarray::arr0(0.5);
    let x = Array1::<f32>::zeros(0);
    let r = m.compute_gradients(x.view()).map(|r| r.0);
    assert!(r.is_err(), "found {r:?}");
    let r = m.l(x.view());
    assert!(r.is_err(), "found {r:?}");
}
