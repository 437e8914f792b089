use modelc::model;

// Every param is frozen: the optimizer has nothing to update.
model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        #[frozen] param w: [784, 10] = zeros;
        #[frozen] param b: [10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w) + b, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
