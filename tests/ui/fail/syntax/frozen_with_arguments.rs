use modelc::model;

// `#[frozen]` takes no arguments.
model! {
    pub struct M {
        input x: [batch, 10];
        #[frozen(true)]
        param b: [10] = zeros;
        output o = x + b;
    }
}

fn main() {}
