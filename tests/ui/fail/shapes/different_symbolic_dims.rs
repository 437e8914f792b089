use modelc::model;

model! {
    pub struct M {
        input a: [n, 3];
        input b: [m, 3];
        output o = a + b;
    }
}

fn main() {}
