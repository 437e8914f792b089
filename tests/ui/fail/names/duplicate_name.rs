use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        let w = relu(x);
        output o = x;
    }
}

fn main() {}
