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
//!   passes about 17, so a hand-written binary cross-entropy
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
