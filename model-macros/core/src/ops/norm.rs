//! Normalization: `layer_norm(a, axis, epsilon)` and its fused gradient.
//!
//! `layer_norm` is one primitive (not lowered to means and square roots), so that the
//! forward pass is one kernel (`runtime::norm::layer_norm`: each row's statistics and its
//! normalization while the row is in cache) and its derivative is one more primitive,
//! [`Op::LayerNormGrad`] `(x, g)`, one kernel too: `dx = (g - mean(g) - xhat *
//! mean(g * xhat)) / sigma`.
//!
//! **Saved statistics.** A program that computes both `LayerNorm(x)` and its gradient
//! (a training program) runs the forward kernel that also writes each row's `(mean, 1 /
//! sigma)` into a buffer of its own, and a backward kernel that reads them
//! ([`saved_statistics`], planned in `emit/plan.rs`): the gradient no longer recomputes
//! them (two passes over each row fewer; session 8 measured recomputation at 1.6 to
//! 1.9x the backward kernel). The buffer is the operand's shape with the normalized
//! axis of size 2, a workspace slot that no other node shares, allocated with the
//! workspace: a step still allocates nothing. Fetches have no gradient and store
//! nothing. The IR is unchanged: the pairing is the planner's, the statistics are not
//! a node (no rewrite or gradient rule has to know about them).

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

/// The shape of the statistics buffer of a layer norm of `x` along `axis`: `x`'s shape
/// with `axis` of size 2 (`(mean, 1 / sigma)` per row).
pub fn stats_shape(x: &Shape, axis: usize) -> Shape {
    let mut s = x.clone();
    if let Some(d) = s.0.get_mut(axis) {
        *d = crate::shape::Dim::Static(2);
    }
    s
}

/// The layer norms of a program whose statistics are saved: `(forward, gradients)` for
/// each kernel step `LayerNorm { axis, epsilon }(x)` followed, later in `kernels` (the
/// program's kernel steps in order), by steps `LayerNormGrad { axis, epsilon }(x, g)` of
/// the same `x`, axis and epsilon. A gradient whose forward op is not an earlier step
/// (a program without the forward, or one that runs it later) recomputes.
pub fn saved_statistics(g: &Graph, kernels: &[NodeId]) -> Vec<(NodeId, Vec<NodeId>)> {
    let mut out: Vec<(NodeId, Vec<NodeId>)> = Vec::new();
    for (i, &id) in kernels.iter().enumerate() {
        let node = g.node(id);
        let Op::LayerNorm { axis, epsilon } = node.op else { continue };
        let grads: Vec<NodeId> = kernels[i + 1..]
            .iter()
            .copied()
            .filter(|&k| {
                let n = g.node(k);
                n.op == Op::LayerNormGrad { axis, epsilon } && n.inputs[0] == node.inputs[0]
            })
            .collect();
        if !grads.is_empty() {
            out.push((id, grads));
        }
    }
    out
}

/// The kernel call of a layer norm or its gradient whose statistics live in the
/// workspace buffer `stats` (see [`saved_statistics`]): the forward writes them, the
/// gradient reads them.
pub fn saved_stats_call(op: &Op, args: &[TokenStream], out: &TokenStream, stats: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::norm);
    match op {
        Op::LayerNorm { axis, epsilon } => {
            let (a, eps) = (&args[0], crate::ops::elementwise::f32_tokens(f32::from_bits(*epsilon)));
            quote!(#k::layer_norm_saving(#a.into_dyn(), #axis, #eps, #out.into_dyn(), #stats.view_mut().into_dyn());)
        }
        Op::LayerNormGrad { axis, .. } => {
            let (x, g) = (&args[0], &args[1]);
            quote!(#k::layer_norm_grad_saved(#x.into_dyn(), #g.into_dyn(), #stats.view().into_dyn(), #axis, #out.into_dyn());)
        }
        _ => quote!(::core::compile_error!("internal: not a layer norm");),
    }
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
    fn training_saves_the_statistics_and_fetches_do_not() {
        let src = "struct M {\n    input x: [batch, 8];\n    param w: [8, 8] = glorot_uniform;\n    \
                   let h = layer_norm(matmul(x, w));\n    output o = h;\n    loss l = mean(square(h * h));\n    \
                   optimizer sgd(learning_rate = 0.1);\n}";
        let code = crate::expand(src.parse().expect("test sources lex")).to_string().replace(' ', "");
        let count = |s: &str| code.matches(s).count();
        // train_step and compute_gradients (and check_gradients' program, if separate)
        // write and read the statistics; the fetches `o` and `l` only normalize.
        assert!(count("norm::layer_norm_saving(") >= 2, "{code}");
        assert_eq!(count("norm::layer_norm_saving("), count("norm::layer_norm_grad_saved("));
        assert_eq!(count("norm::layer_norm_grad("), 0, "no gradient recomputes: {code}");
        assert!(count("norm::layer_norm(") >= 2);
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
