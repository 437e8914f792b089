//! Optimizers against their formulas, written out again here in f64 from the textbook
//! (PyTorch documentation) form, over several steps on a quadratic loss; plus clipping,
//! weight decay order, Nesterov, epsilon placement and slots.

use modelc_runtime::optim::{defaults, global_norm, Optimizer, OptimizerKind};

/// The loss: `0.5 * Σ a_i (p_i - c_i)²` over two params (3 and 2 scalars), so that
/// clipping by the *global* norm is exercised.
const A: [f64; 5] = [1.0, 2.5, 0.3, 4.0, 0.7];
const C: [f64; 5] = [0.5, -1.0, 2.0, 0.25, -3.0];
const P0: [f32; 5] = [1.5, 0.75, -1.0, -0.5, 2.0];
const SPLIT: usize = 3;
const STEPS: u64 = 6;

fn grad32(p: &[f32], offset: usize) -> Vec<f32> {
    p.iter().enumerate().map(|(i, &x)| A[offset + i] as f32 * (x - C[offset + i] as f32)).collect()
}

/// The reference state of one scalar.
#[derive(Default, Clone, Copy)]
struct Ref {
    m: f64,
    v: f64,
    b: f64,
    sq: f64,
    ga: f64,
    sum: f64,
}

/// One step of the rule on one scalar, in f64, from the documented formulas.
fn reference_step(opt: &Optimizer, p: &mut f64, g: f64, st: &mut Ref, t: u64) {
    let lr = f64::from(opt.learning_rate);
    match opt.kind {
        OptimizerKind::Sgd => *p -= lr * g,
        OptimizerKind::Momentum { momentum, nesterov } => {
            let mu = f64::from(momentum);
            st.b = mu * st.b + g;
            *p -= lr * if nesterov { g + mu * st.b } else { st.b };
        }
        OptimizerKind::Adam { beta1, beta2, epsilon } => {
            let (b1, b2, eps) = (f64::from(beta1), f64::from(beta2), f64::from(epsilon));
            st.m = b1 * st.m + (1.0 - b1) * g;
            st.v = b2 * st.v + (1.0 - b2) * g * g;
            let m_hat = st.m / (1.0 - b1.powi(t as i32));
            let v_hat = st.v / (1.0 - b2.powi(t as i32));
            *p -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        OptimizerKind::RmsProp { rho, epsilon, momentum, centered } => {
            let (rho, eps, mu) = (f64::from(rho), f64::from(epsilon), f64::from(momentum));
            st.sq = rho * st.sq + (1.0 - rho) * g * g;
            let denom = if centered {
                st.ga = rho * st.ga + (1.0 - rho) * g;
                (st.sq - st.ga * st.ga).sqrt() + eps
            } else {
                st.sq.sqrt() + eps
            };
            if mu > 0.0 {
                st.b = mu * st.b + g / denom;
                *p -= lr * st.b;
            } else {
                *p -= lr * g / denom;
            }
        }
        OptimizerKind::Adagrad { epsilon, .. } => {
            st.sum += g * g;
            *p -= lr * g / (st.sum.sqrt() + f64::from(epsilon));
        }
    }
}

/// Runs `opt` for [`STEPS`] steps in f32 through the crate and in f64 through the
/// reference, comparing the params after every step.
fn check_against_reference(opt: Optimizer) {
    let (mut p1, mut p2) = (P0[..SPLIT].to_vec(), P0[SPLIT..].to_vec());
    let mut s1 = opt.new_slots(p1.len());
    let mut s2 = opt.new_slots(p2.len());
    let mut rp: Vec<f64> = P0.iter().map(|&x| f64::from(x)).collect();
    let init_sum = match opt.kind {
        OptimizerKind::Adagrad { initial_accumulator_value, .. } => f64::from(initial_accumulator_value),
        _ => 0.0,
    };
    let mut rs = [Ref { sum: init_sum, ..Ref::default() }; 5];
    for t in 1..=STEPS {
        let (g1, g2) = (grad32(&p1, 0), grad32(&p2, SPLIT));
        let scale = opt.clip_scale(&[&g1, &g2]);
        opt.update(&mut p1, &g1, &mut s1, scale, t);
        opt.update(&mut p2, &g2, &mut s2, scale, t);

        let rg: Vec<f64> = rp.iter().enumerate().map(|(i, &x)| A[i] * (x - C[i])).collect();
        let norm = rg.iter().map(|g| g * g).sum::<f64>().sqrt();
        let rscale = opt.clip_norm.map_or(1.0, |c| (f64::from(c) / norm).min(1.0));
        for i in 0..5 {
            let g = rg[i] * rscale + f64::from(opt.weight_decay) * rp[i];
            reference_step(&opt, &mut rp[i], g, &mut rs[i], t);
        }

        let got: Vec<f32> = p1.iter().chain(&p2).copied().collect();
        for (i, (&x, &r)) in got.iter().zip(&rp).enumerate() {
            let err = (f64::from(x) - r).abs() / r.abs().max(1.0);
            assert!(err < 2e-5, "{opt:?}\nstep {t}, scalar {i}: got {x}, reference {r} (error {err:e})");
        }
    }
    // The params moved: the test is not vacuous.
    assert!(rp.iter().zip(&P0).all(|(&r, &p0)| (r - f64::from(p0)).abs() > 1e-4), "{opt:?}: {rp:?}");
}

fn opt(kind: OptimizerKind, learning_rate: f32) -> Optimizer {
    Optimizer::new(kind, learning_rate)
}

fn variants(base: Optimizer) -> [Optimizer; 4] {
    [
        base,
        Optimizer { weight_decay: 0.1, ..base },
        Optimizer { clip_norm: Some(1.0), ..base },
        Optimizer { clip_norm: Some(2.0), weight_decay: 0.05, ..base },
    ]
}

#[test]
fn sgd_matches_reference() {
    variants(opt(OptimizerKind::Sgd, 0.1)).into_iter().for_each(check_against_reference);
}

#[test]
fn momentum_matches_reference() {
    for nesterov in [false, true] {
        let kind = OptimizerKind::Momentum { momentum: 0.9, nesterov };
        variants(opt(kind, 0.05)).into_iter().for_each(check_against_reference);
    }
}

#[test]
fn adam_matches_reference() {
    variants(opt(OptimizerKind::ADAM, 0.1)).into_iter().for_each(check_against_reference);
    let kind = OptimizerKind::Adam { beta1: 0.5, beta2: 0.9, epsilon: 0.1 };
    variants(opt(kind, 0.2)).into_iter().for_each(check_against_reference);
}

#[test]
fn rmsprop_matches_reference() {
    for momentum in [0.0, 0.5] {
        for centered in [false, true] {
            let kind = OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-3, momentum, centered };
            variants(opt(kind, 0.02)).into_iter().for_each(check_against_reference);
        }
    }
    variants(opt(OptimizerKind::RMSPROP, 0.01)).into_iter().for_each(check_against_reference);
}

#[test]
fn adagrad_matches_reference() {
    variants(opt(OptimizerKind::ADAGRAD, 0.1)).into_iter().for_each(check_against_reference);
    let kind = OptimizerKind::Adagrad { initial_accumulator_value: 0.1, epsilon: 1e-7 };
    variants(opt(kind, 0.3)).into_iter().for_each(check_against_reference);
}

/// One update of a one-scalar param with gradient `g` from `p`.
fn one_step(o: Optimizer, p: f32, g: f32, scale: f32, steps: u64) -> f32 {
    let mut p = [p];
    let mut slots = o.new_slots(1);
    for t in 1..=steps {
        o.update(&mut p, &[g], &mut slots, scale, t);
    }
    p[0]
}

#[test]
fn clip_then_decay_as_pytorch() {
    // grads [3, 4] (norm 5) clipped to norm 1: scale 0.2; then decay 0.5 * p.
    let o = Optimizer { clip_norm: Some(1.0), weight_decay: 0.5, ..opt(OptimizerKind::Sgd, 1.0) };
    let (g1, g2) = ([3.0f32], [4.0f32]);
    let scale = o.clip_scale(&[&g1, &g2]);
    assert!((scale - 0.2).abs() < 1e-7);
    let mut p1 = [2.0f32];
    let mut p2 = [-2.0f32];
    o.update(&mut p1, &g1, &mut [], scale, 1);
    o.update(&mut p2, &g2, &mut [], scale, 1);
    // g = 0.2 * grad + 0.5 * p: [0.6 + 1.0, 0.8 - 1.0] = [1.6, -0.2].
    // (Decaying before clipping would give [1.2, -2.6].)
    assert!((p1[0] - 0.4).abs() < 1e-6, "{p1:?}");
    assert!((p2[0] + 1.8).abs() < 1e-6, "{p2:?}");
}

#[test]
fn zero_weight_decay_does_not_touch_infinite_params() {
    // PyTorch skips the decay term when weight_decay is 0, so 0 * inf never makes a NaN.
    let p = one_step(opt(OptimizerKind::Sgd, 0.1), f32::INFINITY, 1.0, 1.0, 1);
    assert_eq!(p, f32::INFINITY);
}

#[test]
fn nesterov_differs_from_classical_momentum() {
    let classical = opt(OptimizerKind::Momentum { momentum: 0.9, nesterov: false }, 0.1);
    let nesterov = opt(OptimizerKind::Momentum { momentum: 0.9, nesterov: true }, 0.1);
    // Constant gradient 1. Classical: steps 0.1, then 0.19. Nesterov: 0.19, then 0.271.
    assert!((one_step(classical, 0.0, 1.0, 1.0, 1) + 0.1).abs() < 1e-6);
    assert!((one_step(classical, 0.0, 1.0, 1.0, 2) + 0.29).abs() < 1e-6);
    assert!((one_step(nesterov, 0.0, 1.0, 1.0, 1) + 0.19).abs() < 1e-6);
    assert!((one_step(nesterov, 0.0, 1.0, 1.0, 2) + 0.461).abs() < 1e-6);
}

#[test]
fn adam_epsilon_is_added_to_the_corrected_root_as_pytorch() {
    // beta1 0.9, beta2 0.999, epsilon 1, g = 1, t = 1: m_hat = v_hat = 1, so PyTorch steps
    // lr * 1 / (1 + 1) = 0.5 lr. TF 1.x (epsilon hat) would step
    // lr * sqrt(0.001) / 0.1 * 0.1 / (sqrt(0.001) + 1) ≈ 0.0307 lr.
    let o = opt(OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1.0 }, 1.0);
    let p = one_step(o, 0.0, 1.0, 1.0, 1);
    assert!((p + 0.5).abs() < 1e-6, "{p}");
}

#[test]
fn adam_first_step_is_about_lr_times_sign() {
    let o = opt(OptimizerKind::ADAM, defaults::ADAM_LEARNING_RATE);
    for g in [1e-3f32, 0.5, -20.0] {
        let p = one_step(o, 0.0, g, 1.0, 1);
        assert!((p + 0.001 * g.signum()).abs() < 1e-7, "g {g}: {p}");
    }
    // A step of 0 is taken as 1 (no division by a zero bias correction).
    let mut p = [0.0f32];
    o.update(&mut p, &[1.0], &mut o.new_slots(1), 1.0, 0);
    assert!((p[0] + 0.001).abs() < 1e-7);
}

#[test]
fn rmsprop_epsilon_is_outside_the_root_as_pytorch() {
    // rho 0.9, epsilon 1, g = 1: a = 0.1; PyTorch steps 1 / (sqrt(0.1) + 1) ≈ 0.7597,
    // TF 1.x (inside the root, a starting at 1) 1 / sqrt(0.1 + 0.9 + 1) ≈ 0.7071.
    let o = opt(OptimizerKind::RmsProp { rho: 0.9, epsilon: 1.0, momentum: 0.0, centered: false }, 1.0);
    let p = one_step(o, 0.0, 1.0, 1.0, 1);
    let expected = 1.0 / (0.1f64.sqrt() + 1.0);
    assert!((f64::from(p) + expected).abs() < 1e-6, "{p}");
}

#[test]
fn adagrad_accumulator_starts_at_its_initial_value() {
    let o = opt(OptimizerKind::Adagrad { initial_accumulator_value: 0.1, epsilon: 0.0 }, 1.0);
    assert_eq!(o.new_slots(3), vec![vec![0.1f32; 3]]);
    let p = one_step(o, 0.0, 1.0, 1.0, 1);
    assert!((f64::from(p) + 1.0 / 1.1f64.sqrt()).abs() < 1e-6, "{p}");
}

#[test]
fn slots_names_and_initial_values() {
    let names = |kind| opt(kind, 0.1).slot_names();
    assert_eq!(names(OptimizerKind::Sgd), &[] as &[&str]);
    assert_eq!(names(OptimizerKind::MOMENTUM), ["momentum_buffer"]);
    assert_eq!(names(OptimizerKind::ADAM), ["m", "v"]);
    assert_eq!(names(OptimizerKind::RMSPROP), ["square_avg"]);
    let rms = |momentum, centered| OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-8, momentum, centered };
    assert_eq!(names(rms(0.5, false)), ["square_avg", "momentum_buffer"]);
    assert_eq!(names(rms(0.0, true)), ["square_avg", "grad_avg"]);
    assert_eq!(names(rms(0.5, true)), ["square_avg", "momentum_buffer", "grad_avg"]);
    assert_eq!(names(OptimizerKind::ADAGRAD), ["sum"]);
    let adam = opt(OptimizerKind::ADAM, 0.1);
    assert_eq!(adam.new_slots(2), vec![vec![0.0; 2], vec![0.0; 2]]);
    assert!(opt(OptimizerKind::Sgd, 0.1).new_slots(5).is_empty());
}

#[test]
fn defaults_are_pytorchs() {
    assert_eq!(OptimizerKind::ADAM, OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 });
    assert_eq!(
        OptimizerKind::RMSPROP,
        OptimizerKind::RmsProp { rho: 0.99, epsilon: 1e-8, momentum: 0.0, centered: false }
    );
    assert_eq!(OptimizerKind::ADAGRAD, OptimizerKind::Adagrad { initial_accumulator_value: 0.0, epsilon: 1e-10 });
    assert_eq!(OptimizerKind::MOMENTUM, OptimizerKind::Momentum { momentum: 0.9, nesterov: false });
    assert_eq!(defaults::ADAM_LEARNING_RATE, 0.001);
    assert_eq!(defaults::RMSPROP_LEARNING_RATE, 0.01);
    assert_eq!(defaults::ADAGRAD_LEARNING_RATE, 0.01);
}

#[test]
fn clip_scale_cases() {
    let none = opt(OptimizerKind::Sgd, 0.1);
    let clip = |c| Optimizer { clip_norm: Some(c), ..none };
    let (g1, g2) = ([3.0f32, 0.0], [4.0f32]);
    assert_eq!(none.clip_scale(&[&g1, &g2]), 1.0);
    assert_eq!(clip(5.0).clip_scale(&[&g1, &g2]), 1.0);
    assert_eq!(clip(10.0).clip_scale(&[&g1, &g2]), 1.0);
    assert!((clip(1.0).clip_scale(&[&g1, &g2]) - 0.2).abs() < 1e-7);
    assert!((clip(2.5).clip_scale(&[&g1, &g2]) - 0.5).abs() < 1e-7);
    // Clipping is global: each param alone is within 4.5, together they are not.
    assert!((clip(4.5).clip_scale(&[&g1, &g2]) - 0.9).abs() < 1e-7);
    assert_eq!(clip(1.0).clip_scale(&[&[0.0, 0.0]]), 1.0);
    assert_eq!(clip(1.0).clip_scale(&[]), 1.0);
    assert_eq!(clip(1.0).clip_scale(&[&[f32::INFINITY]]), 0.0);
}

#[test]
fn global_norm_accumulates_in_f64() {
    assert_eq!(global_norm(&[&[3.0], &[], &[4.0, 0.0]]), 5.0);
    let big = vec![0.1f32; 1 << 22];
    let expected = (f64::from(0.1f32).powi(2) * (1u64 << 22) as f64).sqrt() as f32;
    assert_eq!(global_norm(&[&big]), expected);
}

#[test]
fn validate_reports_every_bad_value() {
    assert!(opt(OptimizerKind::ADAM, 0.001).validate().is_ok());
    let bad = Optimizer {
        kind: OptimizerKind::Adam { beta1: 1.0, beta2: 0.999, epsilon: 0.0 },
        learning_rate: -1.0,
        clip_norm: Some(0.0),
        weight_decay: 0.0,
    };
    let msg = bad.validate().unwrap_err().to_string();
    for what in ["learning_rate is -1", "clip_norm is 0", "beta1 is 1", "epsilon is 0"] {
        assert!(msg.contains(what), "{msg}");
    }
}

#[test]
#[should_panic(expected = "keeps 2 slot(s) per param, but update was given 1")]
fn wrong_slot_count_is_a_caller_bug() {
    let o = opt(OptimizerKind::ADAM, 0.1);
    o.update(&mut [0.0], &[1.0], &mut [vec![0.0]], 1.0, 1);
}

/// The update's loops are vectorized (for the widest vectors the CPU has): over a long
/// param, every element must get the same bits as when it is updated alone (a
/// one-element call runs no vector code), for every rule, with and without decay.
#[test]
fn a_long_update_gives_each_element_the_bits_of_its_own() {
    let kinds = [
        OptimizerKind::Sgd,
        OptimizerKind::Momentum { momentum: 0.9, nesterov: false },
        OptimizerKind::Momentum { momentum: 0.9, nesterov: true },
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 },
        OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-7, momentum: 0.0, centered: false },
        OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-7, momentum: 0.5, centered: false },
        OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-7, momentum: 0.0, centered: true },
        OptimizerKind::RmsProp { rho: 0.9, epsilon: 1e-7, momentum: 0.5, centered: true },
        OptimizerKind::Adagrad { epsilon: 1e-7, initial_accumulator_value: 0.1 },
    ];
    let n = 1037;
    for kind in kinds {
        for decay in [0.0, 0.01] {
            let o = Optimizer { weight_decay: decay, ..Optimizer::new(kind, 0.01) };
            let mut p: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02).collect();
            let (mut one, p0) = (p.clone(), p.clone());
            let mut slots = o.new_slots(n);
            let mut own: Vec<Vec<Vec<f32>>> = (0..n).map(|_| o.new_slots(1)).collect();
            for t in 1..=3u64 {
                let g: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.01 * t as f32).collect();
                o.update(&mut p, &g, &mut slots, 0.75, t);
                for i in 0..n {
                    o.update(&mut one[i..=i], &g[i..=i], &mut own[i], 0.75, t);
                }
            }
            for i in 0..n {
                assert_eq!(p[i].to_bits(), one[i].to_bits(), "{kind:?}, decay {decay}: element {i}");
            }
            // The params moved: the test is not vacuous.
            assert!(p.iter().zip(&p0).filter(|(a, b)| a != b).count() > n / 2, "{kind:?}");
        }
    }
}
