//! Compile errors: optimizer. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// bad_argument_values
// Each out-of-range or ill-typed optimizer argument is reported.
model! {
    pub struct BadArgumentValues {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer momentum(learning_rate = 0.1, momentum = 1.5, nesterov = 1, clip_norm = lr);
    }
}

// momentum_out_of_range
// `momentum` must be in [0, 1). (When another argument of the same optimizer is also
// wrong, as in bad_argument_values.rs, this range check is not reported.)
model! {
    pub struct MomentumOutOfRange {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer momentum(learning_rate = 0.1, momentum = 1.5);
    }
}

// negative_learning_rate
model! {
    pub struct NegativeLearningRate {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = -0.1);
    }
}

// sgd_missing_learning_rate
model! {
    pub struct SgdMissingLearningRate {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd();
    }
}

// unknown_argument
model! {
    pub struct UnknownArgument {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer momentum(learning_rate = 0.1, momentm = 0.9);
    }
}

// unknown_optimizer
model! {
    pub struct UnknownOptimizer {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer adamm(learning_rate = 0.001);
    }
}

fn main() {}
