//! Reductions and their adjoints: `Sum` and `Broadcast` are each other's derivative, as
//! are `SumTo` (the adjoint of implicit broadcasting) and `Broadcast`. `Max` reduces
//! one or several axes; its gradient splits ties evenly (TensorFlow's rule).

use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Binary, Op};
use crate::shape::{broadcasts_to, Dim, Shape};

/// The shape after reducing `axes` (sorted, in range).
pub fn sum_shape(s: &Shape, axes: &[usize], keepdims: bool) -> Result<Shape, String> {
    if let Some(&bad) = axes.iter().find(|&&a| a >= s.rank()) {
        return Err(format!("axis {bad} is out of range for shape {s}"));
    }
    let dims =
        s.0.iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Static(1)),
                (true, false) => None,
            })
            .collect();
    Ok(Shape(dims))
}

/// `Broadcast(to)` requires NumPy compatibility.
pub fn broadcast_shape(s: &Shape, to: &Shape) -> Result<Shape, String> {
    if broadcasts_to(s, to) {
        Ok(to.clone())
    } else {
        Err(format!("{s} does not broadcast to {to}"))
    }
}

/// `SumTo(to)` requires `to` to broadcast to the operand's shape.
pub fn sum_to_shape(s: &Shape, to: &Shape) -> Result<Shape, String> {
    if broadcasts_to(to, s) {
        Ok(to.clone())
    } else {
        Err(format!("{s} does not sum down to {to}"))
    }
}

/// The adjoint of a sum: the adjoint broadcast back over the reduced axes.
pub fn sum_vjp(g: &mut Graph, node: &Node, axes: &[usize], keepdims: bool, adj: NodeId) -> Vec<Option<NodeId>> {
    let x = node.inputs[0];
    let sx = g.shape(x).clone();
    let kept = if keepdims { adj } else { unreduce(g, adj, &sx, axes) };
    vec![Some(g.broadcast_to(kept, &sx))]
}

/// Reinserts reduced axes as unit axes (`[n] -> [n, 1]` after a sum over axis 1).
fn unreduce(g: &mut Graph, adj: NodeId, input: &Shape, axes: &[usize]) -> NodeId {
    let keep = sum_shape(input, axes, true).unwrap_or_else(|_| input.clone());
    g.reshape(adj, &keep)
}

/// The adjoint of a max: the adjoint goes to the maximal elements, split evenly between
/// ties (TensorFlow's rule). Over several axes the ties are counted over all of them
/// together: a maximum reached three times in the reduced block gets a third each.
pub fn max_vjp(
    g: &mut Graph,
    y: NodeId,
    node: &Node,
    axes: &[usize],
    keepdims: bool,
    adj: NodeId,
) -> Vec<Option<NodeId>> {
    let x = node.inputs[0];
    let sx = g.shape(x).clone();
    let (y_keep, adj_keep) = if keepdims { (y, adj) } else { (unreduce(g, y, &sx, axes), unreduce(g, adj, &sx, axes)) };
    let mask = g.binary(Binary::Eq, x, y_keep);
    let ties = g.add(Op::Sum { axes: axes.to_vec(), keepdims: true }, vec![mask], node.span);
    let share = g.unary(crate::ops::Unary::Recip, ties);
    let per = g.mul(adj_keep, share);
    vec![Some(g.mul(mask, per))]
}

/// The adjoint of a broadcast is a sum back to the operand's shape.
pub fn broadcast_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let s = g.shape(node.inputs[0]).clone();
    vec![Some(g.sum_to(adj, &s))]
}

/// The adjoint of a sum-to is a broadcast back to the operand's shape.
pub fn sum_to_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let s = g.shape(node.inputs[0]).clone();
    vec![Some(g.broadcast_to(adj, &s))]
}
