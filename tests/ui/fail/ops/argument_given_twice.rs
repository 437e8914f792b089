use modelc::model;

model! {
    pub struct M {
        input x: [batch, 784];
        output s = sum(x, axis = 1, axis = 0);
        output t = sum(x, 1, axis = 0);
    }
}

fn main() {}
