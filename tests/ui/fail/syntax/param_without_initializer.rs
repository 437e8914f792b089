use modelc::model;

// A param needs `= initializer`.
model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10];
        output probs = matmul(x, w);
    }
}

fn main() {}
