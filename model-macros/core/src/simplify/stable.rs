//! Numerically stable rewrites: forms that overflow or lose precision in f32 are
//! replaced by equivalent fused ops.
//!
//! - `ln(softmax(z))` becomes `log_softmax(z)`: finite for any logits, where
//!   `ln(softmax(z))` is `ln(0) = -inf` as soon as one logit is ~100 above another.
//! - `sum(y * log_softmax(z), axis = -1)` becomes `-softmax_cross_entropy(z, y)`, the
//!   fused op whose gradient is `(softmax(z) * sum(y) - y) * g` in one pass.
//! - `ln(sigmoid(x))` becomes `-softplus(-x)`.

use super::Ctx;
use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Binary, Op, Unary};

/// The name logged for the log-softmax rewrite.
pub const LN_SOFTMAX: &str = "ln(softmax(z)) -> log_softmax(z)";
/// The name logged for the fused cross-entropy rewrite.
pub const XENT: &str = "-sum(y * log_softmax(z), axis = -1) -> softmax_cross_entropy(z, y)";
/// The name logged for the log-sigmoid rewrite.
pub const LN_SIGMOID: &str = "ln(sigmoid(x)) -> -softplus(-x)";

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
                _ => None,
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
