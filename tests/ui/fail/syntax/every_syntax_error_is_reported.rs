use modelc::model;

// Three independent syntax errors: all are reported, and the good items are kept.
model! {
    pub struct M {
        input x: [batch 784];
        param w: [784, 10];
        let a: [batch, 10] = x;
        input y: [batch, 10];
        output o = y;
    }
}

fn main() {}
