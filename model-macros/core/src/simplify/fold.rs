//! Constant folding: elementwise ops on scalar constants become constants.

use super::Ctx;
use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;

fn constant(g: &Graph, id: NodeId) -> Option<f32> {
    match g.node(id).op {
        Op::Const(bits) => Some(f32::from_bits(bits)),
        _ => None,
    }
}

/// `2 * 3 -> 6`, `-(1) -> -1`, `recip(4) -> 0.25`.
pub fn rule(g: &mut Graph, node: &Node, inputs: &[NodeId], _ctx: &mut Ctx) -> Option<NodeId> {
    let value = match &node.op {
        Op::Unary(u) => u.eval(constant(g, inputs[0])?),
        Op::Binary(b) => b.eval(constant(g, inputs[0])?, constant(g, inputs[1])?),
        _ => return None,
    };
    Some(g.constant(value, node.span))
}
