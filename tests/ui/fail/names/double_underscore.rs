use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        let __tmp = relu(x);
        output o = x;
    }
}

fn main() {}
