use modelc::model;

// `paramm` is not an item keyword.
model! {
    pub struct M {
        input x: [batch, 784];
        paramm w: [784, 10] = zeros;
        output probs = x;
    }
}

fn main() {}
