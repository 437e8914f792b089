use modelc::model;

model! {
    pub struct M {
        input x: [batch, features];
        param w: [784, 10] = zeros;
        output o = matmul(x, w);
    }
}

fn main() {}
