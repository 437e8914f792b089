use modelc::model;

// A shape is written in brackets.
model! {
    pub struct M {
        input x: (batch, 784);
        output o = x;
    }
}

fn main() {}
