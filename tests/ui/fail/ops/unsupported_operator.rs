use modelc::model;

// Every unsupported operator is reported (`x < y` is a comparison since v2: it compiles).
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
