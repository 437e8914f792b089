//! Every optimizer kind with every argument; each model trains and its loss falls.

use modelc::model;
use modelc::ndarray::Array2;

macro_rules! regression {
    ($name:ident, $($opt:tt)*) => {
        model! {
            pub struct $name {
                input x: [batch, 3];
                input y: [batch, 1];
                param w: [3, 1] = zeros;
                param b: [1] = zeros;
                loss mse = mean(square(matmul(x, w) + b - y));
                $($opt)*
            }
        }
    };
}

regression!(Sgd, optimizer sgd(learning_rate = 0.1, clip_norm = 10.0, weight_decay = 0.0001););
regression!(Momentum, optimizer momentum(learning_rate = 0.1, momentum = 0.9, nesterov = true););
regression!(PlainMomentum, optimizer momentum(learning_rate = 0.05, momentum = 0.5, nesterov = false, clip_norm = 5.0););
regression!(Adam, optimizer adam(learning_rate = 0.05, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8, clip_norm = 1.0, weight_decay = 0.001););
regression!(RmsProp, optimizer rmsprop(learning_rate = 0.01, rho = 0.9, epsilon = 1e-7, momentum = 0.1, centered = true, weight_decay = 0.0););
regression!(AdaGrad, optimizer adagrad(learning_rate = 0.1, initial_accumulator_value = 0.1, epsilon = 1e-10, clip_norm = 2.0););
regression!(Positional, optimizer sgd(0.1););

fn data() -> (Array2<f32>, Array2<f32>) {
    let mut x = Array2::<f32>::zeros((8, 3));
    let mut y = Array2::<f32>::zeros((8, 1));
    for i in 0..8 {
        for j in 0..3 {
            x[[i, j]] = ((i * 3 + j) % 5) as f32 / 5.0;
        }
        y[[i, 0]] = 2.0 * x[[i, 0]] - x[[i, 1]] + 0.5 * x[[i, 2]] + 1.0;
    }
    (x, y)
}

macro_rules! check {
    ($name:ident, $lr:expr) => {{
        let (x, y) = data();
        let mut m = $name::new();
        assert_eq!(m.learning_rate(), $lr);
        let first = m.train_step(x.view(), y.view()).unwrap();
        for _ in 0..50 {
            m.train_step(x.view(), y.view()).unwrap();
        }
        let last = m.mse(x.view(), y.view()).unwrap();
        assert!(last < first, "{}: loss went from {first} to {last}", stringify!($name));
        assert_eq!(m.global_step(), 51);
        m.set_learning_rate($lr / 2.0);
        assert_eq!(m.learning_rate(), $lr / 2.0);
    }};
}

fn main() {
    check!(Sgd, 0.1);
    check!(Momentum, 0.1);
    check!(PlainMomentum, 0.05);
    check!(Adam, 0.05);
    check!(RmsProp, 0.01);
    check!(AdaGrad, 0.1);
    check!(Positional, 0.1);
}
