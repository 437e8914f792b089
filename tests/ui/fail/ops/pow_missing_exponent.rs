use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output p = pow(x);
    }
}

fn main() {}
