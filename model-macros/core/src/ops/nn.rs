//! Softmax, log-softmax and the fused, numerically stable cross-entropies.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Op, Unary};
use crate::shape::{broadcast, Shape};

/// Softmax keeps its operand's shape; the axis must exist.
pub fn softmax_shape(s: &Shape, axis: usize) -> Result<Shape, String> {
    if axis >= s.rank() {
        return Err(format!("axis {axis} is out of range for shape {s}"));
    }
    Ok(s.clone())
}

/// `softmax_cross_entropy(logits, labels)`: equal shapes `[.., c]` give `[..]`.
pub fn xent_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let (z, y) = (ins[0], ins[1]);
    if z.rank() == 0 {
        return Err(format!("logits must have a class axis, found {z}"));
    }
    if z != y {
        return Err(format!("logits {z} and labels {y} must have the same shape"));
    }
    Ok(z.without_axis(z.rank() - 1))
}

/// The fused gradient `(z, y, g) -> [.., c]`.
pub fn xent_grad_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let reduced = xent_shape(&ins[..2])?;
    if ins[2] != &reduced {
        return Err(format!("the adjoint {} must have shape {reduced}", ins[2]));
    }
    Ok(ins[0].clone())
}

/// `dz = y * (g - sum(g * y, axis))`, with `y = softmax(z)`.
pub fn softmax_vjp(g: &mut Graph, y: NodeId, node: &Node, axis: usize, adj: NodeId) -> Vec<Option<NodeId>> {
    let gy = g.mul(adj, y);
    let s = g.add(Op::Sum { axes: vec![axis], keepdims: true }, vec![gy], node.span);
    let ns = g.neg(s);
    let diff = g.add2(adj, ns);
    vec![Some(g.mul(y, diff))]
}

/// `dz = g - softmax(z) * sum(g, axis)`: no softmax Jacobian is ever formed.
pub fn log_softmax_vjp(g: &mut Graph, _y: NodeId, node: &Node, axis: usize, adj: NodeId) -> Vec<Option<NodeId>> {
    let z = node.inputs[0];
    let p = g.add(Op::Softmax(axis), vec![z], node.span);
    let s = g.add(Op::Sum { axes: vec![axis], keepdims: true }, vec![adj], node.span);
    let ps = g.mul(p, s);
    let nps = g.neg(ps);
    vec![Some(g.add2(adj, nps))]
}

/// `dz = (softmax(z) * sum(y) - y) * g` (one fused kernel); `dy = -g * log_softmax(z)`.
pub fn xent_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (z, y) = (node.inputs[0], node.inputs[1]);
    let dz = g.add(Op::SoftmaxXentGrad, vec![z, y, adj], node.span);
    let sz = g.shape(z).clone();
    let last = sz.rank() - 1;
    let ls = g.add(Op::LogSoftmax(last), vec![z], node.span);
    let adj_keep = g.reshape(adj, &sz.with_unit_axis(last));
    let t = g.mul(adj_keep, ls);
    let dy = g.neg(t);
    vec![Some(dz), Some(dy)]
}

/// `sigmoid_cross_entropy(x, z) = max(x, 0) - x z + ln(1 + e^-|x|)`:
/// `dx = g (sigmoid(x) - z)`, `dz = -g x`.
pub fn sigmoid_xent_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (x, z) = (node.inputs[0], node.inputs[1]);
    let out = node.shape.clone();
    let (sx, sz) = (g.shape(x).clone(), g.shape(z).clone());
    let s = g.unary(Unary::Sigmoid, x);
    let nz = g.neg(z);
    let d = g.add2(s, nz);
    let dx = g.mul(adj, d);
    let gx = g.mul(adj, x);
    let dz = g.neg(gx);
    debug_assert_eq!(broadcast(&sx, &sz).as_ref(), Ok(&out));
    vec![Some(g.sum_to(dx, &sx)), Some(g.sum_to(dz, &sz))]
}

/// The scalar expression of `sigmoid_cross_entropy`.
pub fn sigmoid_xent_expr(x: &TokenStream, z: &TokenStream) -> TokenStream {
    quote!(::modelc::__private::kernels::sigmoid_xent(#x, #z))
}
