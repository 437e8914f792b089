use modelc::model;

model! {
    pub struct M {
        input x: [batch, 10];
        param b: [10] = constant;
        output o = x + b;
    }
}

fn main() {}
