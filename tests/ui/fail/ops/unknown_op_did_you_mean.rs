use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output probs = softmx(matmul(x, w));
    }
}

fn main() {}
