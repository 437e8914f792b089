//! Compile errors: names. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// cycle
model! {
    pub struct Cycle {
        input x: [batch, 784];
        let a = b;
        let b = a;
        output o = a + x;
    }
}

// double_underscore
model! {
    pub struct DoubleUnderscore {
        input x: [batch, 784];
        let __tmp = relu(x);
        output o = x;
    }
}

// duplicate_name
model! {
    pub struct DuplicateName {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        let w = relu(x);
        output o = x;
    }
}

// fetch_named_like_a_method
model! {
    pub struct FetchNamedLikeAMethod {
        input x: [batch, 784];
        output new = relu(x);
        metric train_step = mean(x);
    }
}

// unknown_name_did_you_mean
model! {
    pub struct UnknownNameDidYouMean {
        input x: [batch, 784];
        param weights: [784, 10] = zeros;
        output o = matmul(x, wieghts);
    }
}

// unknown_name_no_suggestion
model! {
    pub struct UnknownNameNoSuggestion {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output o = matmul(x, w) + bias_vector;
    }
}

fn main() {}
