// layer_norm and dropout: every mistake an error at its own tokens.
use modelc::model;

model! {
    pub struct Rates {
        input x: [batch, 8];
        output a = dropout(x, rate = 1.0);
        output b = dropout(x, rate = -0.25);
        output c = dropout(x, rate = 2);
        output d = dropout(x, rate = x);
        output e = dropout(x);
    }
}

model! {
    pub struct Norms {
        input x: [batch, 8];
        output a = layer_norm(x, epsilon = 0);
        output b = layer_norm(x, epsilon = -1e-5);
        output c = layer_norm(x, axis = 2);
        output d = layer_norm(x, axis = -3);
        output e = layer_norm(sum(x));
    }
}

fn main() {}
