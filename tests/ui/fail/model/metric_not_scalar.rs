use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        metric predictions = argmax(matmul(x, w), axis = 1);
    }
}

fn main() {}
