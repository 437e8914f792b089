use modelc::model;

// Both unsupported operators are reported.
model! {
    pub struct M {
        input x: [batch, 784];
        input y: [batch, 784];
        output r = x % 2;
        output c = x < y;
        output n = !x;
    }
}

fn main() {}
