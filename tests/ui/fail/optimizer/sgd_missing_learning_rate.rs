use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss xent = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd();
    }
}

fn main() {}
