use modelc::model;

// A model is declared as a struct.
model! {
    pub enum M {
        input x: [batch, 784];
        output o = x;
    }
}

fn main() {}
