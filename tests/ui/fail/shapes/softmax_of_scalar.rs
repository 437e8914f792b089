use modelc::model;

model! {
    pub struct M {
        input x: [batch, 10];
        output o = softmax(sum(x));
    }
}

fn main() {}
