use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        input k: [];
        output p = pow(x, k);
    }
}

fn main() {}
