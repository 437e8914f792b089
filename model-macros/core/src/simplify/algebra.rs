//! Algebraic identities and canonical forms: `x + 0`, `x * 1`, `--x`, constants first,
//! negations moved outward, transposes folded into matrix products, explicit broadcasts
//! dropped where implicit broadcasting gives the same result, identity reshapes.

use super::{Ctx, Stage};
use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Binary, Op, Unary};
use crate::shape::broadcast;

fn constant(g: &Graph, id: NodeId) -> Option<f32> {
    match g.node(id).op {
        Op::Const(bits) => Some(f32::from_bits(bits)),
        _ => None,
    }
}

fn is(g: &Graph, id: NodeId, op: &Op) -> bool {
    g.node(id).op == *op
}

/// One algebraic rewrite of `node` (with operands already rewritten), if any applies.
pub fn rule(g: &mut Graph, node: &Node, x: &[NodeId], ctx: &mut Ctx) -> Option<NodeId> {
    let same_shape = |g: &Graph, id: NodeId| g.shape(id) == &node.shape;
    match &node.op {
        Op::StopGradient if ctx.stage == Stage::Differentiated => Some(x[0]),
        Op::Unary(Unary::Neg) => {
            let inner = g.node(x[0]).clone();
            match inner.op {
                Op::Unary(Unary::Neg) => Some(inner.inputs[0]),
                _ => None,
            }
        }
        Op::Unary(Unary::Recip) if is(g, x[0], &Op::Unary(Unary::Recip)) => Some(g.node(x[0]).inputs[0]),
        Op::Unary(Unary::Pow(k)) if f32::from_bits(*k) == 1.0 => Some(x[0]),
        Op::Binary(b) => {
            let (a, c) = (x[0], x[1]);
            // Drop explicit broadcasts/reshapes that implicit broadcasting makes redundant.
            for (i, &operand) in x.iter().enumerate() {
                if let Op::Broadcast(_) = g.node(operand).op {
                    let inner = g.node(operand).inputs[0];
                    let other = x[1 - i];
                    if broadcast(g.shape(inner), g.shape(other)).as_ref() == Ok(&node.shape) {
                        let mut ops = x.to_vec();
                        ops[i] = inner;
                        return Some(g.add(node.op.clone(), ops, node.span));
                    }
                }
            }
            match b {
                Binary::Add => {
                    if constant(g, c) == Some(0.0) && same_shape(g, a) {
                        return Some(a);
                    }
                    if constant(g, a) == Some(0.0) && same_shape(g, c) {
                        return Some(c);
                    }
                    if constant(g, c).is_some() && constant(g, a).is_none() {
                        return Some(g.add2(c, a));
                    }
                    // a + (-b) with both negated: -(a + b)
                    None
                }
                Binary::Mul => {
                    if constant(g, c) == Some(1.0) && same_shape(g, a) {
                        return Some(a);
                    }
                    if constant(g, a) == Some(1.0) && same_shape(g, c) {
                        return Some(c);
                    }
                    if constant(g, a) == Some(-1.0) {
                        return Some(g.neg(c));
                    }
                    if constant(g, c).is_some() && constant(g, a).is_none() {
                        return Some(g.mul(c, a));
                    }
                    // k1 * (k2 * y) -> (k1 k2) * y
                    if let Some(k1) = constant(g, a) {
                        let inner = g.node(c).clone();
                        if inner.op == Op::Binary(Binary::Mul) {
                            if let Some(k2) = constant(g, inner.inputs[0]) {
                                let k = g.constant(k1 * k2, node.span);
                                return Some(g.mul(k, inner.inputs[1]));
                            }
                        }
                    }
                    // (-p) * q -> -(p q) and p * (-q) -> -(p q): negations move outward.
                    let neg = Op::Unary(Unary::Neg);
                    let (na, nc) = (is(g, a, &neg), is(g, c, &neg));
                    if na || nc {
                        let p = if na { g.node(a).inputs[0] } else { a };
                        let q = if nc { g.node(c).inputs[0] } else { c };
                        let m = g.mul(p, q);
                        return Some(if na && nc { m } else { g.neg(m) });
                    }
                    None
                }
                _ => None,
            }
        }
        Op::Sum { .. } | Op::SumTo(_) if is(g, x[0], &Op::Unary(Unary::Neg)) => {
            // sum(-x) -> -sum(x), so that negations meet and cancel.
            let inner = g.node(x[0]).inputs[0];
            let s = g.add(node.op.clone(), vec![inner], node.span);
            Some(g.neg(s))
        }
        Op::Broadcast(to) | Op::SumTo(to) | Op::Reshape(to) if g.shape(x[0]) == to => Some(x[0]),
        Op::Reshape(to) if matches!(g.node(x[0]).op, Op::Reshape(_)) => {
            let inner = g.node(x[0]).inputs[0];
            Some(g.reshape(inner, to))
        }
        // Broadcasting looks through a reshape only if the reshape adds or removes
        // *leading* unit axes (which broadcasting adds anyway): `[n] -> [n, 1]` then
        // broadcast to `[n, n]` repeats `n` along the columns, `[n]` broadcast to `[n, n]`
        // along the rows.
        Op::Broadcast(to)
            if matches!(g.node(x[0]).op, Op::Broadcast(_))
                || (matches!(g.node(x[0]).op, Op::Reshape(_)) && leading_units_only(g, x[0])) =>
        {
            let inner = g.node(x[0]).inputs[0];
            if crate::shape::broadcasts_to(g.shape(inner), to) {
                Some(g.broadcast_to(inner, to))
            } else {
                None
            }
        }
        Op::Transpose if is(g, x[0], &Op::Transpose) => Some(g.node(x[0]).inputs[0]),
        Op::MatMul { ta, tb } => {
            let (a, b) = (x[0], x[1]);
            let (fa, fb) = (is(g, a, &Op::Transpose), is(g, b, &Op::Transpose));
            if !fa && !fb {
                return None;
            }
            let a2 = if fa { g.node(a).inputs[0] } else { a };
            let b2 = if fb { g.node(b).inputs[0] } else { b };
            ctx.log.note("transpose folded into matmul");
            Some(g.add(Op::MatMul { ta: *ta ^ fa, tb: *tb ^ fb }, vec![a2, b2], node.span))
        }
        _ => None,
    }
}

/// Whether reshape node `id` only adds or removes leading unit axes (`[n] -> [1, n]`).
fn leading_units_only(g: &Graph, id: NodeId) -> bool {
    let strip = |s: &crate::shape::Shape| -> Vec<crate::shape::Dim> {
        s.dims().iter().skip_while(|d| **d == crate::shape::Dim::Static(1)).cloned().collect()
    };
    strip(g.shape(id)) == strip(g.shape(g.node(id).inputs[0]))
}
