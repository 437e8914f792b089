use modelc::model;

// A node's shape is inferred: no type annotation on `let`.
model! {
    pub struct M {
        input x: [batch, 784];
        let a: [batch, 784] = relu(x);
        output o = a;
    }
}

fn main() {}
