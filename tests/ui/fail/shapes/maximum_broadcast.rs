use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 10];
        output o = maximum(x, y);
    }
}

fn main() {}
