//! Compile errors: the fallback of a model with an error still implements the traits
//! `modelc::mpi::World` takes (`Gradients` for its gradients, `Replica` for the model),
//! which exist without the `mpi` feature, so that a data-parallel loop adds no error of
//! its own: the only error below is the model's shape error.

use modelc::model;
use modelc::mpi::{Gradients, Replica};

model! {
    pub struct Broken {
        input x: [batch, 4];
        input y: [batch, 2];
        param w: [4, 2] = zeros;
        param b: [3] = zeros;
        loss l = mean(softmax_cross_entropy(matmul(x, w) + b, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

/// What `World::allreduce_mean` and `World::broadcast_params` require of their arguments.
fn reduce<G: Gradients>(_: &mut G) -> &'static str {
    G::MODEL
}

fn broadcast<M: Replica>(m: &mut M) -> f32 {
    m.replica_learning_rate()
}

fn main() {
    let mut m = Broken::new();
    let mut g = BrokenGradients::zeros();
    let _ = (reduce(&mut g), broadcast(&mut m));
}
