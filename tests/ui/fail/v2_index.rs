// Index tensors (u32): every mistake below is reported, each at its own tokens.
use modelc::model;

model! {
    pub struct Arithmetic {
        input x: [batch, 4];
        input y: [batch] as u32;
        input t: [batch, 3] as i64;
        param w: [4, 3] = zeros;
        let z = matmul(x, w);
        output plus = y + 1.0;
        output neg = -y;
        output e = exp(y);
        output mixed = argmax(z, axis = 1) == x;
        loss l = mean(softmax_cross_entropy(z, y));
        optimizer sgd(learning_rate = 0.1);
    }
}

model! {
    pub struct WrongIndexOperands {
        input x: [batch, 4];
        input ids: [batch, 5] as u32;
        input y: [batch] as u32;
        param emb: [10, 4] = zeros;
        param w: [4, 3] = zeros;
        output looked_up = gather(emb, x);
        output hot = one_hot(x, depth = 3);
        output no_depth = one_hot(y);
        output zero_depth = one_hot(y, depth = 0);
        output bad_labels = sparse_softmax_cross_entropy(matmul(x, w), ids);
        output too_few_rows = gather(w, argmax(matmul(x, transpose(emb)), axis = 1));
        metric pick = argmax(sum(x, axis = 0), axis = 0);
    }
}

fn main() {}
