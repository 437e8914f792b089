use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param unused: [10] = zeros;
        output o = matmul(x, w) + unused;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
