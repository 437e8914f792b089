//! Compile errors: the fallback. A model with an error still defines its struct and the
//! whole generated API (types unknown to the compiler are `ArrayD`), so that the user's
//! code adds no error of its own: each model below has one error, and the functions
//! after it use the API; the only other error allowed is rest_of_the_api's type mismatch
//! on `probs`, whose shape the compiler could not know (it also shows that rustc
//! type-checked this file: a secondary error would be in the .stderr).

use modelc::model;
use modelc::ndarray::Array2;

// no_secondary_errors
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

fn no_secondary_errors() -> Result<(), modelc::Error> {
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

// rest_of_the_api
// The shape error is in the node behind `probs`, which takes only `x`; the user code
// uses the rest of the generated API and must add no error of its own.
model! {
    /// Doc on the model.
    #[derive(Debug)]
    pub struct Net {
        input x: [batch, 784];
        input y: [batch, 10];
        param w: [784, 10] = glorot_uniform;
        #[frozen] param b: [10] = zeros;
        let z = matmul(x, w) + b;
        let a = softmax(z + x);
        output probs = a;
        loss xent = mean(softmax_cross_entropy(z, y));
        optimizer adam(learning_rate = 0.001);
    }
}

fn rest_of_the_api() -> Result<(), modelc::Error> {
    let mut m = Net::with_seed(3);
    let x = Array2::<f32>::zeros((100, 784));
    let y = Array2::<f32>::zeros((100, 10));
    let p: Array2<f32> = m.probs(x.view())?;
    let mut g = NetGradients::zeros();
    let l = m.compute_gradients_into(x.view(), y.view(), &mut g)?;
    m.apply_gradients(&g)?;
    let copy = m.clone();
    println!("{copy:?} {l} {}", p.len());
    m.set_learning_rate(m.learning_rate() / 2.0);
    let check = m.check_gradients(x.view(), y.view())?;
    println!("{}", check.passes(1e-2));
    println!("{} {}", Net::explain(), Net::graph_dot());
    println!("{} {}", Net::cost(100), Net::PARAMETERS);
    println!("{}", m.trainable_variables().len() + m.global_step() as usize);
    m.save("net.safetensors")?;
    let _n = Net::load("net.safetensors")?;
    let map = modelc::NameMap::new().pytorch_linear("w", "b", "fc");
    m.load_params("net.safetensors", &map)?;
    let _f = Net::from_safetensors("net.safetensors", &map)?;
    Ok(())
}

fn main() -> Result<(), modelc::Error> {
    no_secondary_errors()?;
    rest_of_the_api()
}
