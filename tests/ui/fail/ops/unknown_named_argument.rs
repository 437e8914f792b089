use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output s = sum(x, axs = 1);
    }
}

fn main() {}
