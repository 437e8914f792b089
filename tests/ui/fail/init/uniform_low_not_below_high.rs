use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = uniform(low = 0.5, high = 0.5);
        output o = matmul(x, w);
    }
}

fn main() {}
