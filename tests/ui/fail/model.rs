//! Compile errors: model. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// loss_not_scalar
model! {
    pub struct LossNotScalar {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss l = -sum(y * log_softmax(matmul(x, w)), axis = 1);
        optimizer sgd(learning_rate = 0.1);
    }
}

// metric_not_scalar
model! {
    pub struct MetricNotScalar {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        metric predictions = argmax(matmul(x, w), axis = 1);
    }
}

// nothing_to_train
// Every param is frozen: the optimizer has nothing to update.
model! {
    pub struct NothingToTrain {
        input x: [batch, 784];
        input y: [batch, 10];
        #[frozen] param w: [784, 10] = zeros;
        #[frozen] param b: [10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w) + b, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

// optimizer_without_loss
model! {
    pub struct OptimizerWithoutLoss {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output o = matmul(x, w);
        optimizer sgd(learning_rate = 0.1);
    }
}

// two_losses
model! {
    pub struct TwoLosses {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        let z = matmul(x, w);
        loss xent = mean(softmax_cross_entropy(z, y));
        loss l2 = mean(square(z - y));
        optimizer sgd(learning_rate = 0.1);
    }
}

// two_optimizers
model! {
    pub struct TwoOptimizers {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = 0.1);
        optimizer adam(learning_rate = 0.001);
    }
}

fn main() {}
