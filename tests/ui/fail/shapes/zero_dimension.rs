use modelc::model;

model! {
    pub struct M {
        input x: [batch, 0];
        param b: [0] = zeros;
        output o = x + b;
    }
}

fn main() {}
