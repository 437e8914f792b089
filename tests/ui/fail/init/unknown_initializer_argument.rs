use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = normal(mean = 0.0, stdev = 0.1);
        output o = matmul(x, w);
    }
}

fn main() {}
