use modelc::model;

// The `;` after `output probs = a` is missing: the error points at the next item.
model! {
    pub struct M {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        let a = softmax(matmul(x, w));
        output probs = a
        metric m = mean(a);
    }
}

fn main() {}
