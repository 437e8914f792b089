use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input labels: [batch, 10];
        param w: [784, 10] = zeros;
        let predicted = argmax(matmul(x, w), axis = 1);
        loss l = mean(square(one_hot(predicted, depth = 10) - labels));
        optimizer sgd(learning_rate = 0.1);
    }
}

fn main() {}
