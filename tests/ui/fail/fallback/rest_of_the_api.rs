use modelc::model;

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

use modelc::ndarray::Array2;

fn main() -> Result<(), modelc::Error> {
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
