use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output s = sum(x, axis = 1.5);
        output t = mean(x, axis = batch);
    }
}

fn main() {}
