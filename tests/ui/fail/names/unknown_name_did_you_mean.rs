use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param weights: [784, 10] = zeros;
        output o = matmul(x, wieghts);
    }
}

fn main() {}
