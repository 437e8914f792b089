use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output i = x[0];
        output s = "one";
    }
}

fn main() {}
