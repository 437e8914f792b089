//! Compile errors: gradients. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// param_not_used_by_loss
model! {
    pub struct ParamNotUsedByLoss {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param unused: [10] = zeros;
        output o = matmul(x, w) + unused;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = 0.1);
    }
}

// through_argmax
model! {
    pub struct ThroughArgmax {
        input x: [batch, 784];
        input labels: [batch, 10];
        param w: [784, 10] = zeros;
        let predicted = argmax(matmul(x, w), axis = 1);
        loss l = mean(square(one_hot(predicted, depth = 10) - labels));
        optimizer sgd(learning_rate = 0.1);
    }
}

// through_eq
model! {
    pub struct ThroughEq {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss l = mean(relu(matmul(x, w)) == y);
        optimizer sgd(learning_rate = 0.1);
    }
}

// through_stop_gradient
model! {
    pub struct ThroughStopGradient {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param b: [10] = zeros;
        let target = stop_gradient(matmul(x, w));
        loss l = mean(square(target - y)) + mean(b);
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
