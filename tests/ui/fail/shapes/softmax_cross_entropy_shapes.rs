use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 5];
        param w: [784, 10] = zeros;
        loss l = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
