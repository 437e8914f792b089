//! Compile errors: init. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// bad_initializer_values
// Each bad initializer argument is reported.
model! {
    pub struct BadInitializerValues {
        input x: [batch, 10];
        param a: [10] = normal(std = -1.0);
        param b: [10] = zeros(1.0);
        param c: [10] = constant(value = x);
        output o = x + a + b + c;
    }
}

// constant_without_value
model! {
    pub struct ConstantWithoutValue {
        input x: [batch, 10];
        param b: [10] = constant;
        output o = x + b;
    }
}

// uniform_low_not_below_high
model! {
    pub struct UniformLowNotBelowHigh {
        input x: [batch, 784];
        param w: [784, 10] = uniform(low = 0.5, high = 0.5);
        output o = matmul(x, w);
    }
}

// unknown_initializer
model! {
    pub struct UnknownInitializer {
        input x: [batch, 784];
        param w: [784, 10] = glorot_unifrom;
        output o = matmul(x, w);
    }
}

// unknown_initializer_argument
model! {
    pub struct UnknownInitializerArgument {
        input x: [batch, 784];
        param w: [784, 10] = normal(mean = 0.0, stdev = 0.1);
        output o = matmul(x, w);
    }
}

fn main() {}
