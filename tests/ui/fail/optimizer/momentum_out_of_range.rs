use modelc::model;

// `momentum` must be in [0, 1). (When another argument of the same optimizer is also
// wrong, as in bad_argument_values.rs, this range check is not reported.)
model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer momentum(learning_rate = 0.1, momentum = 1.5);
    }
}

fn main() {}
