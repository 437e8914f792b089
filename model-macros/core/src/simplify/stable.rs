//! Numerically stable rewrites: forms that overflow or lose precision in f32 are
//! replaced by equivalent fused ops.
//!
//! - `ln(softmax(z))` becomes `log_softmax(z)`: finite for any logits, where
//!   `ln(softmax(z))` is `ln(0) = -inf` as soon as one logit is ~100 above another.
//! - `sum(y * log_softmax(z), axis = -1)` becomes `-softmax_cross_entropy(z, y)`, the
//!   fused op whose gradient is `(softmax(z) * sum(y) - y) * g` in one pass.
//! - `ln(sigmoid(x))` becomes `-softplus(-x)`, and `ln(1 - sigmoid(x))` (also written
//!   `1.0 - p`, `-p + 1`, with `p` a `let`: all one node after lowering and the algebra
//!   pass's constants-first order) becomes `-softplus(x)`, through the cancellation
//!   `1 - sigmoid(x) = sigmoid(-x)`. In f32, `sigmoid(x)` rounds to exactly 1 once `x`
//!   passes about 16.6 (`e^-x` below half an ulp of 1), so a hand-written binary cross-entropy
//!   `-(y ln(p) + (1 - y) ln(1 - p))` would compute `0 * ln(0) = NaN`, and its derivative
//!   `(1 - y) / (1 - p)` would be `0 / 0`. The rewrites run before differentiation, so the
//!   derivative is taken of the softplus form: `sigmoid(-x)` and `sigmoid(x)`, bounded,
//!   with no division by `p` or `1 - p`.
//!
//! The cancellation is only made under `ln`: elsewhere `1 - sigmoid(x)` is finite, and
//! rewriting it would add a second `exp` per element to every sigmoid's derivative
//! (`y (1 - y)`, with `y` the sigmoid's output).

use super::Ctx;
use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Binary, Op, Unary};

/// The name logged for the log-softmax rewrite.
pub const LN_SOFTMAX: &str = "ln(softmax(z)) -> log_softmax(z)";
/// The name logged for the fused cross-entropy rewrite.
pub const XENT: &str = "-sum(y * log_softmax(z), axis = -1) -> softmax_cross_entropy(z, y)";
/// The name logged for the log-sigmoid rewrite.
pub const LN_SIGMOID: &str = "ln(sigmoid(x)) -> -softplus(-x)";

/// The name logged for the log-one-minus-sigmoid rewrite.
pub const LN_ONE_MINUS_SIGMOID: &str = "ln(1 - sigmoid(x)) -> -softplus(x)";

/// `x` if `id` is `1 - sigmoid(x)`, i.e. `1 + -sigmoid(x)` with the constant on either
/// side (the algebra pass puts it first, but a rule may see a node it has not reached
/// yet), and the constant does not broadcast the sigmoid to a larger shape.
fn one_minus_sigmoid(g: &Graph, id: NodeId) -> Option<NodeId> {
    let node = g.node(id);
    if node.op != Op::Binary(Binary::Add) {
        return None;
    }
    let (a, b) = (node.inputs[0], node.inputs[1]);
    for (one, rest) in [(a, b), (b, a)] {
        if g.node(one).op != Op::Const(1.0f32.to_bits()) {
            continue;
        }
        let neg = g.node(rest);
        if neg.op != Op::Unary(Unary::Neg) {
            continue;
        }
        let sig = g.node(neg.inputs[0]);
        if sig.op == Op::Unary(Unary::Sigmoid) && sig.shape == node.shape {
            return Some(sig.inputs[0]);
        }
    }
    None
}

/// One stable rewrite of `node`, if any applies.
pub fn rule(g: &mut Graph, node: &Node, x: &[NodeId], ctx: &mut Ctx) -> Option<NodeId> {
    match &node.op {
        Op::Unary(Unary::Ln) => {
            let inner = g.node(x[0]).clone();
            match inner.op {
                Op::Softmax(axis) => {
                    ctx.log.note(LN_SOFTMAX);
                    Some(g.add(Op::LogSoftmax(axis), inner.inputs.clone(), node.span))
                }
                Op::Unary(Unary::Sigmoid) => {
                    ctx.log.note(LN_SIGMOID);
                    let nx = g.neg(inner.inputs[0]);
                    let sp = g.unary(Unary::Softplus, nx);
                    Some(g.neg(sp))
                }
                _ => {
                    let z = one_minus_sigmoid(g, x[0])?;
                    ctx.log.note(LN_ONE_MINUS_SIGMOID);
                    let sp = g.unary(Unary::Softplus, z);
                    Some(g.neg(sp))
                }
            }
        }
        Op::Sum { axes, keepdims: false } => {
            let prod = g.node(x[0]).clone();
            if prod.op != Op::Binary(Binary::Mul) || axes.len() != 1 || axes[0] + 1 != g.shape(x[0]).rank() {
                return None;
            }
            for (yi, li) in [(0, 1), (1, 0)] {
                let (y, ls) = (prod.inputs[yi], prod.inputs[li]);
                let ls_node = g.node(ls).clone();
                if ls_node.op == Op::LogSoftmax(axes[0]) {
                    let z = ls_node.inputs[0];
                    if g.shape(y) == g.shape(z) {
                        ctx.log.note(XENT);
                        let xent = g.add(Op::SoftmaxXent, vec![z, y], node.span);
                        return Some(g.neg(xent));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Graph;
    use crate::shape::{Dim, Shape};
    use crate::simplify::{run, RewriteLog, Stage};
    use proc_macro2::Span;

    /// `[batch, 1]` logits `z` (input 0) and `sigmoid(z)`.
    fn logits(g: &mut Graph) -> (NodeId, NodeId) {
        let z = g.leaf(
            Op::Input(0),
            Shape(vec![Dim::Sym("batch".into()), Dim::Static(1)]),
            crate::ir::DType::F32,
            Span::call_site(),
        );
        (z, g.unary(Unary::Sigmoid, z))
    }

    /// `k - x` as lowering writes it, `k + -x` (or `-x + k` with `k_last`).
    fn minus(g: &mut Graph, k: f32, x: NodeId, k_last: bool) -> NodeId {
        let kc = g.constant(k, Span::call_site());
        let nx = g.neg(x);
        if k_last {
            g.add2(nx, kc)
        } else {
            g.add2(kc, nx)
        }
    }

    /// Whether `id` is `-softplus(arg)`.
    fn is_neg_softplus_of(g: &Graph, id: NodeId, arg: NodeId) -> bool {
        let n = g.node(id);
        n.op == Op::Unary(Unary::Neg) && {
            let sp = g.node(n.inputs[0]);
            sp.op == Op::Unary(Unary::Softplus) && sp.inputs == vec![arg]
        }
    }

    #[test]
    fn ln_one_minus_sigmoid_becomes_neg_softplus_with_the_constant_on_either_side() {
        for k_last in [false, true] {
            let mut g = Graph::new();
            let (z, p) = logits(&mut g);
            let q = minus(&mut g, 1.0, p, k_last);
            let l = g.unary(Unary::Ln, q);
            // The matcher itself, before the algebra pass has put the constant first.
            assert_eq!(one_minus_sigmoid(&g, q), Some(z));
            let mut log = RewriteLog::default();
            let (out, map) = run(&g, &[l], Stage::Forward, &mut log);
            assert!(is_neg_softplus_of(&out, map[&l], map[&z]), "{:?}", out.nodes);
            assert_eq!(log.applied.get(LN_ONE_MINUS_SIGMOID), Some(&1));
            // No sigmoid, no ln left.
            assert!(
                out.nodes.iter().all(|n| !matches!(n.op, Op::Unary(Unary::Sigmoid | Unary::Ln))),
                "{:?}",
                out.nodes
            );
        }
    }

    #[test]
    fn ln_sigmoid_of_a_negation_cancels_to_neg_softplus() {
        // ln(sigmoid(-z)) -> -softplus(--z) -> -softplus(z).
        let mut g = Graph::new();
        let (z, _) = logits(&mut g);
        let nz = g.neg(z);
        let s = g.unary(Unary::Sigmoid, nz);
        let l = g.unary(Unary::Ln, s);
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[l], Stage::Forward, &mut log);
        assert!(is_neg_softplus_of(&out, map[&l], map[&z]), "{:?}", out.nodes);
        assert_eq!(log.applied.get(LN_SIGMOID), Some(&1));
    }

    #[test]
    fn near_misses_are_left_alone() {
        let mut g = Graph::new();
        let (z, p) = logits(&mut g);
        let t = g.unary(Unary::Tanh, z);
        let two_minus_p = minus(&mut g, 2.0, p, false);
        let one_minus_t = minus(&mut g, 1.0, t, false);
        let one = g.constant(1.0, Span::call_site());
        let one_plus_p = g.add2(one, p);
        for q in [two_minus_p, one_minus_t, one_plus_p] {
            assert_eq!(one_minus_sigmoid(&g, q), None, "{:?}", g.node(q));
            let l = g.unary(Unary::Ln, q);
            let mut log = RewriteLog::default();
            let (out, map) = run(&g, &[l], Stage::Forward, &mut log);
            assert_eq!(out.node(map[&l]).op, Op::Unary(Unary::Ln));
            assert!(log.applied.is_empty(), "{:?}", log.applied);
        }
    }

    #[test]
    fn one_minus_sigmoid_outside_ln_is_kept() {
        // sigmoid's own derivative `y (1 - y)`: rewriting `1 - y` to `sigmoid(-z)` would
        // cost a second exp per element for nothing, since `1 - y` is finite.
        let mut g = Graph::new();
        let (_, p) = logits(&mut g);
        let q = minus(&mut g, 1.0, p, false);
        let d = g.mul(p, q);
        let mut log = RewriteLog::default();
        for stage in [Stage::Forward, Stage::Differentiated] {
            let (out, map) = run(&g, &[d], stage, &mut log);
            assert_eq!(out.nodes.len(), g.nodes.len(), "{:?}", out.nodes);
            assert_eq!(out.nodes.iter().filter(|n| n.op == Op::Unary(Unary::Sigmoid)).count(), 1);
            assert_eq!(out.node(map[&d]).op, Op::Binary(Binary::Mul));
        }
        assert!(log.applied.is_empty(), "{:?}", log.applied);
    }

    /// Every op in the gradients' cone of the compiled model.
    fn backward_ops(model: proc_macro2::TokenStream) -> (Vec<Op>, RewriteLog) {
        let c = match crate::compile(model) {
            Ok(c) => c,
            Err(d) => panic!("{:?}", d.messages()),
        };
        let roots: Vec<NodeId> = c.grads.iter().map(|g| g.1).collect();
        assert_eq!(roots.len(), 2);
        let g = &c.model.graph;
        (g.cone(&roots).into_iter().map(|i| g.node(i).op.clone()).collect(), c.rewrites)
    }

    #[test]
    fn the_hand_written_cross_entropy_is_differentiated_in_its_stable_form() {
        let (ops, log) = backward_ops(quote::quote! {
            struct Bce {
                input x: [batch, 2];
                input y: [batch, 1];
                param w: [2, 1] = zeros;
                param b: [1] = zeros;
                let p = sigmoid(matmul(x, w) + b);
                loss l = mean(-(y * ln(p) + (1 - y) * ln(1 - p)));
                optimizer sgd(learning_rate = 0.1);
            }
        });
        assert_eq!(log.applied.get(LN_SIGMOID), Some(&1), "{:?}", log.applied);
        assert_eq!(log.applied.get(LN_ONE_MINUS_SIGMOID), Some(&1), "{:?}", log.applied);
        // The derivative is `(1 - y) sigmoid(z) - y sigmoid(-z)` over the batch: two
        // sigmoids, no ln, and the only reciprocal is the mean's `1 / batch`.
        assert_eq!(ops.iter().filter(|op| **op == Op::Unary(Unary::Sigmoid)).count(), 2, "{ops:?}");
        assert!(!ops.contains(&Op::Unary(Unary::Ln)), "{ops:?}");
        let recips = ops.iter().filter(|op| **op == Op::Unary(Unary::Recip)).count();
        assert_eq!(recips, 1, "{ops:?}");
        assert!(ops.contains(&Op::DimProduct(vec!["batch".into()])), "{ops:?}");
    }
}
