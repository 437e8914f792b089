use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output o = x + glorot_uniform(x);
    }
}

fn main() {}
