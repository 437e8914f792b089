use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output o = matmul(x);
    }
}

fn main() {}
