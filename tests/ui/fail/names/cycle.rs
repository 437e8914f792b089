use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        let a = b;
        let b = a;
        output o = a + x;
    }
}

fn main() {}
