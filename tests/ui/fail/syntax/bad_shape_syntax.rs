use modelc::model;

// The dimensions of a shape are separated by commas.
model! {
    pub struct M {
        input x: [batch 784];
        output o = x;
    }
}

fn main() {}
