use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param b: [10] = zeros;
        output o = x + b;
    }
}

fn main() {}
