use modelc::model;

// Independent shape errors in different items are all reported.
model! {
    pub struct M {
        input x: [batch, 784];
        param w: [10, 784] = zeros;
        param b: [7] = zeros;
        output o = matmul(x, w);
        output p = x * b;
        output q = sum(x, axis = 3);
    }
}

fn main() {}
