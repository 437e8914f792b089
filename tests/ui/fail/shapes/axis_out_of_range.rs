use modelc::model;

// Both the positive and the negative out-of-range axis are reported.
model! {
    pub struct M {
        input x: [batch, 784];
        output s = sum(x, axis = 2);
        output t = mean(x, axis = -3);
        output u = softmax(x, axis = 5);
    }
}

fn main() {}
