use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output s = sum(x, axis = 1, keepdims = 1);
    }
}

fn main() {}
