use modelc::model;

// One shape error in a `let`; the user code below uses the whole API and must add no
// error of its own.
model! {
    pub struct SoftmaxRegression {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = zeros;
        param b: [10] = zeros;
        let a = softmax(matmul(x, w) + b);
        let bad = matmul(x, b);
        output probs = a;
        output logits = bad;
        loss cross_entropy = mean(-sum(y * ln(a), axis = 1)) + mean(bad);
        metric accuracy = mean(argmax(a, axis = 1) == argmax(y, axis = 1));
        optimizer sgd(learning_rate = 0.5);
    }
}

use modelc::ndarray::Array2;

fn main() -> Result<(), modelc::Error> {
    let mut m = SoftmaxRegression::new();
    let x = Array2::<f32>::zeros((100, 784));
    let y = Array2::<f32>::zeros((100, 10));
    let loss: f32 = m.train_step(x.view(), y.view())?;
    let (l2, g): (f32, SoftmaxRegressionGradients) = m.compute_gradients(x.view(), y.view())?;
    m.apply_gradients(&g)?;
    let p: Array2<f32> = m.probs(x.view())?;
    let _logits = m.logits(x.view())?;
    let ce: f32 = m.cross_entropy(x.view(), y.view())?;
    let acc: f32 = m.accuracy(x.view(), y.view())?;
    let w: &Array2<f32> = &m.w;
    println!("{loss} {l2} {ce} {acc} {} {} {}", p.len(), w.len(), m.b.len());
    println!("{}", g.w.len() + g.b.len());
    Ok(())
}
