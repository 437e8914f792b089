use modelc::model;

// Each out-of-range or ill-typed optimizer argument is reported.
model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer momentum(learning_rate = 0.1, momentum = 1.5, nesterov = 1, clip_norm = lr);
    }
}

fn main() {}
