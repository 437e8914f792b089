use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        loss l = -sum(y * log_softmax(matmul(x, w)), axis = 1);
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
