//! Normalization: `layer_norm(a, axis, epsilon)` and its fused gradient.
//!
//! `layer_norm` is one primitive (not lowered to means and square roots), so that the
//! forward pass is one kernel (`runtime::norm::layer_norm`: each row's statistics and its
//! normalization while the row is in cache) and its derivative is one more primitive,
//! [`Op::LayerNormGrad`] `(x, g)`, one kernel too: `dx = (g - mean(g) - xhat *
//! mean(g * xhat)) / sigma`, which recomputes the row's statistics rather than reading
//! saved ones (see the runtime module for why).

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::Shape;

/// `layer_norm` keeps its operand's shape; the axis must exist.
pub fn layer_norm_shape(s: &Shape, axis: usize) -> Result<Shape, String> {
    if axis >= s.rank() {
        return Err(format!("axis {axis} is out of range for shape {s}"));
    }
    Ok(s.clone())
}

/// The gradient `(x, g) -> dx`: both of `x`'s shape.
pub fn layer_norm_grad_shape(ins: &[&Shape], axis: usize) -> Result<Shape, String> {
    if ins[0] != ins[1] {
        return Err(format!("the adjoint {} must have the operand's shape {}", ins[1], ins[0]));
    }
    layer_norm_shape(ins[0], axis)
}

/// `dx = LayerNormGrad(x, g)`: one fused kernel.
pub fn layer_norm_vjp(g: &mut Graph, node: &Node, axis: usize, epsilon: u32, adj: NodeId) -> Vec<Option<NodeId>> {
    let x = node.inputs[0];
    vec![Some(g.add(Op::LayerNormGrad { axis, epsilon }, vec![x, adj], node.span))]
}

/// The kernel call of `layer_norm`.
pub fn layer_norm_call(a: &TokenStream, axis: usize, epsilon: u32, out: &TokenStream) -> TokenStream {
    let eps = crate::ops::elementwise::f32_tokens(f32::from_bits(epsilon));
    quote!(::modelc::__private::norm::layer_norm(#a.into_dyn(), #axis, #eps, #out.into_dyn());)
}

/// The kernel call of its gradient.
pub fn layer_norm_grad_call(
    x: &TokenStream,
    g: &TokenStream,
    axis: usize,
    epsilon: u32,
    out: &TokenStream,
) -> TokenStream {
    let eps = crate::ops::elementwise::f32_tokens(f32::from_bits(epsilon));
    quote!(::modelc::__private::norm::layer_norm_grad(#x.into_dyn(), #g.into_dyn(), #axis, #eps, #out.into_dyn());)
}
