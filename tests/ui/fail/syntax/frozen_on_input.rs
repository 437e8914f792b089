use modelc::model;

// `#[frozen]` applies to params only.
model! {
    pub struct M {
        #[frozen]
        input x: [batch, 784];
        output o = x;
    }
}

fn main() {}
