use modelc::model;

// The contract's example: `b` is a vector.
model! {
    pub struct M {
        input x: [batch, 784];
        param b: [10] = zeros;
        let a = softmax(matmul(x, b));
        output o = a;
    }
}

fn main() {}
