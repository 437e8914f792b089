//! Hand-minimized cases that the random-model test (`random_models.rs`) found, one test
//! each, so that they stay fixed whatever the generator draws.

use modelc::model;
use modelc::ndarray::{Array1, Array2};

// Found by model seed 5 (n = 0): `exp` of an empty vector wrote one element through the
// dangling pointer of the empty output buffer (SIGSEGV): `elementwise::as_rows` took the
// axis of length 0 for a unit axis and the whole array for one element.
model! { struct EmptyVector { input x: [n]; input y: [n, 1]; param p: [] = zeros; loss l = sum(square(p)); metric acc = sum(argmax(exp(x), axis = 0)); output e = exp(y) * 2.0; optimizer sgd(learning_rate = 0.1); } }

#[test]
fn elementwise_ops_on_an_empty_vector_write_nothing() {
    let m = EmptyVector::new();
    // argmax over an empty axis gives index 0 (its sum over a scalar is that index).
    assert_eq!(m.acc(Array1::<f32>::zeros(0).view()).unwrap(), 0.0);
    let e = m.e(Array2::<f32>::zeros((0, 1)).view()).unwrap();
    assert_eq!(e.shape(), &[0, 1]);
}
