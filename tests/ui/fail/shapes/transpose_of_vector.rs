use modelc::model;

model! {
    pub struct M {
        input v: [10];
        output o = transpose(v);
    }
}

fn main() {}
