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

#[cfg(test)]
pub(crate) mod tests {
    use crate::diag::Diag;
    use proc_macro2::TokenStream;

    /// The front end's errors for a model: (message, line, column).
    pub(crate) fn errors(src: &str) -> Vec<(String, usize, usize)> {
        let tokens: TokenStream = src.parse().expect("test sources lex");
        let diag: Diag = crate::check(tokens);
        diag.errors()
            .iter()
            .map(|e| {
                let start = e.span().start();
                (e.to_string(), start.line, start.column)
            })
            .collect()
    }

    fn one(body: &str) -> (String, usize, usize) {
        let e = errors(&format!("struct M {{\n    input x: [batch, 8];\n{body}\n}}"));
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn layer_norm_errors_point_at_the_attribute() {
        let (m, l, c) = one("    output o = layer_norm(x, axis = 2);");
        assert!(
            m.contains("`layer_norm`: axis 2 is out of range for `x` of shape [batch, 8] (valid axes are -2 to 1)"),
            "{m}"
        );
        assert_eq!((l, c), (3, 36));
        let (m, l, c) = one("    output o = layer_norm(x, epsilon = 0);");
        assert!(m.contains("`epsilon` must be a positive number"), "{m}");
        assert_eq!((l, c), (3, 39));
        let (m, _, _) = one("    output o = layer_norm(x, epsilon = -1e-3);");
        assert!(m.contains("not -0.001"), "{m}");
        let (m, _, _) = one("    output o = layer_norm(sum(x));");
        assert!(m.contains("is a scalar"), "{m}");
        let (m, _, _) = one("    output o = layer_norm(x, epsilon = x);");
        assert!(m.contains("`layer_norm`: `epsilon` must be a number literal"), "{m}");
    }

    #[test]
    fn every_valid_layer_norm_compiles() {
        for body in
            ["layer_norm(x)", "layer_norm(x, axis = 0)", "layer_norm(x, -2, 1e-3)", "layer_norm(x, epsilon = 1)"]
        {
            let e = errors(&format!("struct M {{\n    input x: [batch, 8];\n    output o = {body};\n}}"));
            assert!(e.is_empty(), "{body}: {e:?}");
        }
    }
}
