use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output e = x.exp();
    }
}

fn main() {}
