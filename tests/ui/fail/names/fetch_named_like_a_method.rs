use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output new = relu(x);
        metric train_step = mean(x);
    }
}

fn main() {}
