use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = glorot_unifrom;
        output o = matmul(x, w);
    }
}

fn main() {}
