use modelc::model;

// One `model!` declares one model.
model! {
    pub struct M {
        input x: [batch, 784];
        output o = x;
    }
    pub struct N {}
}

fn main() {}
