//! Configuration items: initializers (`= glorot_uniform`) and the optimizer
//! (`optimizer adam(learning_rate = 1e-3)`), their arguments, defaults and ranges.

use proc_macro2::Span;
use syn::spanned::Spanned;

use super::call::{AttrKind, AttrValue};
use super::{Lowerer, INITIALIZERS, OPTIMIZERS};
use crate::diag::suggestion;
use crate::model::{InitSpec, OptimizerKind, OptimizerSpec};
use crate::syntax::{Arg, OptimizerItem};

impl Lowerer<'_> {
    pub(super) fn init(&mut self, call: &crate::syntax::CallSyntax) -> InitSpec {
        let name = call.name.to_string();
        let (params, make): (&[Param], MakeInit) = match name.as_str() {
            "zeros" => (&[], |_| InitSpec::Zeros),
            "ones" => (&[], |_| InitSpec::Ones),
            "glorot_uniform" => (&[], |_| InitSpec::GlorotUniform),
            "glorot_normal" => (&[], |_| InitSpec::GlorotNormal),
            "he_normal" => (&[], |_| InitSpec::HeNormal),
            "constant" => (&[("value", None)], |v| InitSpec::Constant(v[0])),
            "uniform" => (&[("low", Some(-0.05)), ("high", Some(0.05))], |v| InitSpec::Uniform(v[0], v[1])),
            "normal" => (&[("mean", Some(0.0)), ("std", Some(0.05))], |v| InitSpec::Normal(v[0], v[1])),
            "truncated_normal" => {
                (&[("mean", Some(0.0)), ("std", Some(0.05))], |v| InitSpec::TruncatedNormal(v[0], v[1]))
            }
            _ => {
                let hint = suggestion(&name, INITIALIZERS.iter().copied());
                self.diag.error(
                    call.name.span(),
                    format!("unknown initializer `{name}` (the initializers are {}){hint}", INITIALIZERS.join(", ")),
                );
                return InitSpec::Zeros;
            }
        };
        let cfg = self.config_args(&name, call.args.as_deref().unwrap_or(&[]), call.span, params, &[]);
        let spec = make(&cfg.values);
        match spec {
            InitSpec::Uniform(lo, hi) if lo >= hi && cfg.valid[0] && cfg.valid[1] => {
                self.diag.error(cfg.spans[1], format!("uniform: `low` ({lo}) must be less than `high` ({hi})"));
            }
            InitSpec::Normal(_, s) | InitSpec::TruncatedNormal(_, s) if s <= 0.0 && cfg.valid[1] => {
                self.diag.error(cfg.spans[1], format!("{name}: `std` must be positive, found {s}"));
            }
            _ => {}
        }
        if cfg.ok {
            spec
        } else {
            InitSpec::Zeros
        }
    }

    /// Binds `name = number` / positional number arguments of an initializer or
    /// optimizer, plus boolean flags. Every value is returned (defaults where missing or
    /// broken), with its span and whether it is usable, so that callers can check ranges
    /// of every good value even when another one is wrong.
    fn config_args(
        &mut self,
        what: &str,
        args: &[Arg],
        span: Span,
        params: &[(&str, Option<f32>)],
        flags: &[(&str, bool)],
    ) -> ConfigArgs {
        let mut values: Vec<Option<f32>> = vec![None; params.len()];
        let mut valid = vec![true; params.len()];
        let mut spans = vec![span; params.len()];
        let mut set_flags: Vec<Option<bool>> = vec![None; flags.len()];
        let mut ok = true;
        let no_args = params.is_empty() && flags.is_empty();
        for (pos, arg) in args.iter().enumerate() {
            let key = match &arg.name {
                _ if no_args => {
                    self.diag.spanned(&arg.value, format!("`{what}` takes no arguments"));
                    ok = false;
                    continue;
                }
                Some(n) => n.to_string(),
                None if pos < params.len() && args[..pos].iter().all(|a| a.name.is_none()) => params[pos].0.to_string(),
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.0).chain(flags.iter().map(|f| f.0)).collect();
                    self.diag.spanned(
                        &arg.value,
                        format!("`{what}`: unexpected positional argument; name it, one of {}", names.join(", ")),
                    );
                    ok = false;
                    continue;
                }
            };
            let span_of = arg.name.as_ref().map_or(arg.value.span(), |n| n.span());
            if let Some(i) = params.iter().position(|p| p.0 == key) {
                if values[i].is_some() || !valid[i] {
                    self.diag.error(span_of, format!("`{what}`: argument `{key}` is given twice"));
                    ok = false;
                }
                spans[i] = arg.value.span();
                match AttrKind::Number.parse(&arg.value) {
                    Some(AttrValue::Number(v)) if v.is_finite() => values[i] = Some(v as f32),
                    _ => {
                        self.diag.spanned(&arg.value, format!("`{what}`: `{key}` must be a number literal"));
                        ok = false;
                        valid[i] = false;
                    }
                }
            } else if let Some(i) = flags.iter().position(|f| f.0 == key) {
                match AttrKind::Bool.parse(&arg.value) {
                    Some(AttrValue::Bool(v)) => set_flags[i] = Some(v),
                    _ => {
                        self.diag.spanned(&arg.value, format!("`{what}`: `{key}` must be `true` or `false`"));
                        ok = false;
                    }
                }
            } else {
                let all: Vec<&str> = params.iter().map(|p| p.0).chain(flags.iter().map(|f| f.0)).collect();
                let hint = suggestion(&key, all.iter().copied());
                let takes = if all.is_empty() {
                    "it takes no arguments".to_string()
                } else {
                    format!("it takes {}", all.join(", "))
                };
                self.diag.error(span_of, format!("`{what}` has no argument `{key}` ({takes}){hint}"));
                ok = false;
            }
        }
        let mut out = Vec::new();
        for (i, (p, default)) in params.iter().enumerate() {
            match (values[i], default) {
                (Some(v), _) | (None, &Some(v)) => out.push(v),
                (None, None) => {
                    if valid[i] {
                        self.diag.error(span, format!("`{what}` needs `{p}`, e.g. `{what}({p} = ...)`"));
                    }
                    ok = false;
                    valid[i] = false;
                    out.push(0.0);
                }
            }
        }
        let flags = flags.iter().zip(set_flags).map(|((_, d), v)| v.unwrap_or(*d)).collect();
        ConfigArgs { values: out, valid, spans, flags, ok }
    }

    pub(super) fn optimizer(&mut self, o: &OptimizerItem) -> Option<OptimizerSpec> {
        let kind = o.kind.to_string();
        const COMMON: [(&str, Option<f32>); 2] = [("clip_norm", Some(f32::INFINITY)), ("weight_decay", Some(0.0))];
        let (own, flags): (Vec<Param>, Vec<Flag>) = match kind.as_str() {
            "sgd" => (vec![("learning_rate", None)], vec![]),
            "momentum" => (vec![("learning_rate", None), ("momentum", Some(0.9))], vec![("nesterov", false)]),
            "adam" => (
                vec![
                    ("learning_rate", Some(0.001)),
                    ("beta1", Some(0.9)),
                    ("beta2", Some(0.999)),
                    ("epsilon", Some(1e-8)),
                ],
                vec![],
            ),
            "rmsprop" => (
                vec![
                    ("learning_rate", Some(0.01)),
                    ("rho", Some(0.99)),
                    ("epsilon", Some(1e-8)),
                    ("momentum", Some(0.0)),
                ],
                vec![("centered", false)],
            ),
            "adagrad" => (
                vec![("learning_rate", Some(0.01)), ("initial_accumulator_value", Some(0.0)), ("epsilon", Some(1e-10))],
                vec![],
            ),
            _ => {
                let hint = suggestion(&kind, OPTIMIZERS.iter().copied());
                self.diag.error(
                    o.kind.span(),
                    format!("unknown optimizer `{kind}` (the optimizers are {}){hint}", OPTIMIZERS.join(", ")),
                );
                return None;
            }
        };
        let n_own = own.len();
        let params: Vec<(&str, Option<f32>)> = own.into_iter().chain(COMMON).collect();
        let cfg = self.config_args(&kind, &o.args, o.paren_span, &params, &flags);
        let (v, f) = (&cfg.values, &cfg.flags);
        let mut ok = cfg.ok;
        // Checks one value's range, when that value itself is usable.
        let mut check = |i: usize, good: bool, msg: String, lw: &mut Self| {
            if cfg.valid[i] && !good {
                lw.diag.error(cfg.spans[i], msg);
                ok = false;
            }
        };
        let in_unit = |x: f32| (0.0..1.0).contains(&x);
        check(0, v[0] > 0.0, format!("`{kind}`: learning_rate must be positive, found {}", v[0]), self);
        let clip = v[n_own];
        check(n_own, clip > 0.0, format!("`{kind}`: clip_norm must be positive, found {clip}"), self);
        let wd = v[n_own + 1];
        check(n_own + 1, wd >= 0.0, format!("`{kind}`: weight_decay must not be negative, found {wd}"), self);
        let kind_spec = match kind.as_str() {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => {
                check(1, in_unit(v[1]), format!("momentum: `momentum` must be in [0, 1), found {}", v[1]), self);
                OptimizerKind::Momentum { momentum: v[1], nesterov: f[0] }
            }
            "adam" => {
                check(1, in_unit(v[1]), format!("adam: beta1 must be in [0, 1), found {}", v[1]), self);
                check(2, in_unit(v[2]), format!("adam: beta2 must be in [0, 1), found {}", v[2]), self);
                check(3, v[3] > 0.0, format!("adam: epsilon must be positive, found {}", v[3]), self);
                OptimizerKind::Adam { beta1: v[1], beta2: v[2], epsilon: v[3] }
            }
            "rmsprop" => {
                check(1, in_unit(v[1]), format!("rmsprop: rho must be in [0, 1), found {}", v[1]), self);
                check(2, v[2] > 0.0, format!("rmsprop: epsilon must be positive, found {}", v[2]), self);
                check(3, in_unit(v[3]), format!("rmsprop: momentum must be in [0, 1), found {}", v[3]), self);
                OptimizerKind::RmsProp { rho: v[1], epsilon: v[2], momentum: v[3], centered: f[0] }
            }
            _ => {
                check(
                    1,
                    v[1] >= 0.0,
                    format!("adagrad: initial_accumulator_value must not be negative, found {}", v[1]),
                    self,
                );
                check(2, v[2] > 0.0, format!("adagrad: epsilon must be positive, found {}", v[2]), self);
                OptimizerKind::Adagrad { initial_accumulator_value: v[1], epsilon: v[2] }
            }
        };
        ok.then(|| OptimizerSpec {
            kind: kind_spec,
            learning_rate: v[0],
            clip_norm: clip.is_finite().then_some(clip),
            weight_decay: wd,
            span: o.keyword,
        })
    }
}

/// A numeric configuration argument and its default (`None`: required).
type Param = (&'static str, Option<f32>);
/// Builds an initializer from its bound arguments.
type MakeInit = fn(&[f32]) -> InitSpec;
/// A boolean configuration argument and its default.
type Flag = (&'static str, bool);

/// Bound configuration arguments (see `Lowerer::config_args`).
struct ConfigArgs {
    values: Vec<f32>,
    valid: Vec<bool>,
    spans: Vec<Span>,
    flags: Vec<bool>,
    ok: bool,
}
