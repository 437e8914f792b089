// The shape ops' compile errors (issue 17): each model holds several mistakes, and each
// is reported at its own tokens.
use modelc::model;

model! {
    pub struct Reshapes {
        input x: [batch, 784];
        output count = reshape(x, [batch, 28, 27]);
        output two = reshape(x, [-1, -1, 28]);
        output inferred = reshape(x, [28, -1]);
        output name = reshape(x, [bach, 784]);
        output flat = flatten(reshape(x, [batch, 28, batch]));
    }
}

model! {
    pub struct Joins {
        input x: [batch, 784];
        input y: [batch, 10];
        output rows = concat([x, y], axis = 0);
        output axis = concat([x, y], axis = 2);
        output list = concat(x, axis = 1);
        output range = slice(x, axis = 1, start = 3, end = 800);
        output empty = slice(y, axis = -1, start = 5, end = -5);
        output batch_axis = slice(x, axis = 0, start = 1);
    }
}

model! {
    pub struct Picks {
        input x: [batch, 784];
        input y: [batch, 10];
        output arity = where(x > 0.0, x);
        output shapes = where(x > 0.0, x, y);
        output twice = max(x, axis = [1, -1]);
        output compare = x < y;
    }
}

model! {
    pub struct Mixes {
        input x: [batch, 4];
        input ids: [batch, 4] as u32;
        input scores: [batch, 12];
        param emb: [10, 2] = zeros;
        output joined = concat([ids, x], axis = 1);
        output padded = where(x > 0.0, ids, 0.0);
        output cond = where(ids, x, x);
        output shifted = reshape(ids, [batch, 2, 2]) + 1.0;
        output wide = gather(emb, reshape(argmax(scores, axis = 1), [batch, 1]));
    }
}

fn main() {}
