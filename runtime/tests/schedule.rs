//! Learning-rate schedules against known values (TensorFlow's and PyTorch's formulas
//! evaluated by hand).

use modelc_runtime::schedule::{
    constant, cosine_decay, exponential_decay, from_fn, CosineDecay, ExponentialDecay, PiecewiseConstant, Schedule,
    StepDecay, Warmup,
};

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-7 * b.abs().max(1e-3)
}

macro_rules! assert_rates {
    ($s:expr, [$(($step:expr, $lr:expr)),* $(,)?]) => {
        $(
            let got = $s.learning_rate($step);
            assert!(close(got, $lr), "step {}: got {}, expected {}", $step, got, $lr);
        )*
    };
}

#[test]
fn constant_rate() {
    assert_rates!(constant(0.3), [(0, 0.3), (1_000_000, 0.3)]);
}

#[test]
fn step_decay_is_pytorch_step_lr() {
    let s = StepDecay { initial: 0.1, gamma: 0.5, step_size: 10 };
    assert_rates!(s, [(0, 0.1), (9, 0.1), (10, 0.05), (19, 0.05), (20, 0.025), (35, 0.0125)]);
    // A step size of 0 is taken as 1.
    let every = StepDecay { initial: 1.0, gamma: 0.5, step_size: 0 };
    assert_rates!(every, [(0, 1.0), (1, 0.5), (3, 0.125)]);
}

#[test]
fn exponential_decay_is_tensorflows() {
    // tf.train.exponential_decay(0.1, step, 100, 0.96, staircase)
    assert!(close(exponential_decay(0.1, 0, 100, 0.96, false), 0.1));
    assert!(close(exponential_decay(0.1, 100, 100, 0.96, false), 0.096));
    assert!(close(exponential_decay(0.1, 50, 100, 0.96, false), 0.1 * 0.96f64.sqrt()));
    assert!(close(exponential_decay(0.1, 50, 100, 0.96, true), 0.1));
    assert!(close(exponential_decay(0.1, 250, 100, 0.96, true), 0.1 * 0.96 * 0.96));
    assert!(close(exponential_decay(0.1, 250, 100, 0.96, false), 0.1 * 0.96f64.powf(2.5)));
    let s = ExponentialDecay { initial: 0.5, decay_steps: 1000, decay_rate: 0.1, staircase: false };
    assert_rates!(s, [(0, 0.5), (1000, 0.05), (2000, 0.005), (500, 0.5 * 0.1f64.sqrt())]);
}

#[test]
fn cosine_decay_is_tensorflows_and_pytorchs() {
    // TF: cosine_decay(0.1, step, 100, alpha = 0.01).
    let s = CosineDecay::new(0.1, 100, 0.01);
    let pi = std::f64::consts::PI;
    assert_rates!(
        s,
        [
            (0, 0.1),
            (50, 0.1 * (0.01 + 0.99 * 0.5)),
            (100, 0.001),
            (250, 0.001), // stays at the minimum after decay_steps (TF)
            (25, 0.1 * (0.01 + 0.99 * 0.5 * (1.0 + (pi / 4.0).cos()))),
        ]
    );
    // PyTorch CosineAnnealingLR(T_max = 100, eta_min = 0.001) from 0.1:
    // eta_min + (0.1 - eta_min) * (1 + cos(pi * t / T_max)) / 2.
    let torch = CosineDecay::to_min(0.1, 100, 0.001);
    for t in [0u64, 10, 25, 60, 99, 100] {
        let expected = 0.001 + 0.099 * (1.0 + (pi * t as f64 / 100.0).cos()) / 2.0;
        let got = torch.learning_rate(t);
        assert!((f64::from(got) - expected).abs() < 1e-8, "t {t}: {got} vs {expected}");
    }
    assert!(close(cosine_decay(1.0, 5, 10, 0.0), 0.5));
    assert!(close(cosine_decay(1.0, 7, 0, 0.0), 0.0));
}

#[test]
fn warmup_ramps_then_hands_over() {
    let s = Warmup::new(constant(0.1), 4);
    assert_rates!(s, [(0, 0.025), (1, 0.05), (2, 0.075), (3, 0.1), (4, 0.1), (1000, 0.1)]);
    // The wrapped schedule counts its steps from the end of the warm-up.
    let s = Warmup::new(StepDecay { initial: 1.0, gamma: 0.5, step_size: 10 }, 5);
    assert_rates!(s, [(0, 0.2), (4, 1.0), (5, 1.0), (14, 1.0), (15, 0.5)]);
    let none = Warmup::new(constant(0.3), 0);
    assert_rates!(none, [(0, 0.3)]);
    // Warm-up into cosine decay, as a dyn schedule.
    let boxed: Box<dyn Schedule> = Box::new(Warmup::new(CosineDecay::new(0.1, 100, 0.0), 10));
    assert_rates!(boxed, [(0, 0.01), (9, 0.1), (10, 0.1), (60, 0.05), (110, 0.0)]);
}

#[test]
fn piecewise_constant_is_tensorflows() {
    let s = PiecewiseConstant::new(vec![100, 200], vec![1.0, 0.5, 0.1]).unwrap();
    assert_rates!(s, [(0, 1.0), (100, 1.0), (101, 0.5), (200, 0.5), (201, 0.1), (10_000, 0.1)]);
    assert!(PiecewiseConstant::new(vec![100], vec![1.0]).is_err());
    assert!(PiecewiseConstant::new(vec![100, 100], vec![1.0, 0.5, 0.1]).is_err());
    assert!(close(PiecewiseConstant::new(vec![], vec![0.7]).unwrap().learning_rate(5), 0.7));
}

#[test]
fn closures_and_references() {
    let inverse_time = from_fn(|step| 0.1 / (1.0 + step as f32 / 10.0));
    assert_rates!(inverse_time, [(0, 0.1), (10, 0.05)]);
    let by_ref: &dyn Schedule = &inverse_time;
    assert_rates!(&by_ref, [(30, 0.025)]);
}
