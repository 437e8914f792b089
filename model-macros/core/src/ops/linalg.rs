//! Matrix products and transposes. Transposes feeding a product are folded into its
//! `ta`/`tb` flags by the simplifier, so no transposed copy is ever made.

use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::Shape;

fn op_dims(s: &Shape, t: bool) -> Result<(crate::shape::Dim, crate::shape::Dim), String> {
    if s.rank() != 2 {
        return Err(format!("expected a matrix, found {s}"));
    }
    let (r, c) = (s.0[0].clone(), s.0[1].clone());
    Ok(if t { (c, r) } else { (r, c) })
}

/// `op(a) x op(b)`: `[m, k] x [k, n] -> [m, n]`.
pub fn matmul_shape(ins: &[&Shape], ta: bool, tb: bool) -> Result<Shape, String> {
    let (m, k1) = op_dims(ins[0], ta)?;
    let (k2, n) = op_dims(ins[1], tb)?;
    if k1 != k2 {
        return Err(format!("inner dimensions differ: {} and {}", ins[0], ins[1]));
    }
    Ok(Shape(vec![m, n]))
}

/// `[m, n] -> [n, m]`.
pub fn transpose_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let (r, c) = op_dims(ins[0], true)?;
    Ok(Shape(vec![r, c]))
}

/// For `C = op(A) op(B)`: `dA = g op(B)^T` and `dB = op(A)^T g`, written with flags so
/// that no transpose is materialized.
pub fn matmul_vjp(g: &mut Graph, node: &Node, ta: bool, tb: bool, adj: NodeId) -> Vec<Option<NodeId>> {
    let (a, b) = (node.inputs[0], node.inputs[1]);
    let span = node.span;
    let da = if !ta {
        g.add(Op::MatMul { ta: false, tb: !tb }, vec![adj, b], span)
    } else {
        g.add(Op::MatMul { ta: tb, tb: true }, vec![b, adj], span)
    };
    let db = if !tb {
        g.add(Op::MatMul { ta: !ta, tb: false }, vec![a, adj], span)
    } else {
        g.add(Op::MatMul { ta: true, tb: ta }, vec![adj, a], span)
    };
    vec![Some(da), Some(db)]
}

/// The adjoint of a transpose is the transpose of the adjoint.
pub fn transpose_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    vec![Some(g.add(Op::Transpose, vec![adj], node.span))]
}
