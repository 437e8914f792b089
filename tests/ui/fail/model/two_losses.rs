use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        let z = matmul(x, w);
        loss xent = mean(softmax_cross_entropy(z, y));
        loss l2 = mean(square(z - y));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
