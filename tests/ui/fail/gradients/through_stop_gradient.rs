use modelc::model;

model! {
    pub struct M {
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
