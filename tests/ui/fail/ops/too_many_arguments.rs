use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output o = matmul(x, w, x);
        output e = exp(x, 2);
    }
}

fn main() {}
