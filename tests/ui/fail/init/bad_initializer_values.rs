use modelc::model;

// Each bad initializer argument is reported.
model! {
    pub struct M {
        input x: [batch, 10];
        param a: [10] = normal(std = -1.0);
        param b: [10] = zeros(1.0);
        param c: [10] = constant(value = x);
        output o = x + a + b + c;
    }
}

fn main() {}
