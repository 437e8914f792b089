//! Random ops: `dropout(a, rate = r)`.
//!
//! `dropout` lowers to `a * mask`, with `mask` a leaf of `a`'s shape
//! ([`Op::DropoutMask`]) that the training programs fill from the model's own random
//! stream (`runtime::random`): 0 with probability `rate`, `1 / (1 - rate)` otherwise.
//! Being an ordinary operand of a product, the mask needs no derivative rule of its own:
//! the backward pass multiplies by the very buffer the forward pass used.
//!
//! Training and inference are different graphs in one arena ([`split_modes`]): every
//! fetch (outputs, the loss called on its own, metrics) is rebuilt with each `a * mask`
//! replaced by `a`, so that its function does no dropout at all; the loss as written,
//! masks included, is kept as [`Model::train_loss`], which autodiff differentiates and
//! `train_step` / `compute_gradients` compute. `check_gradients` runs the training program
//! with every mask filled with ones (no draw): the gradient of the inference loss, which
//! its finite differences (of the `loss` fetch) measure.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, NodeId};
use crate::model::Model;
use crate::ops::{Binary, Op};

/// The kernel call filling a mask buffer: draws when the generated function's `__train`
/// is set, else fills ones (see `runtime::random::dropout_mask`).
pub fn mask_call(rate: u32, out: &TokenStream) -> TokenStream {
    let rate = crate::ops::elementwise::f32_tokens(f32::from_bits(rate));
    quote!(::modelc::__private::random::dropout_mask(&mut self.__state.dropout, __train, #rate, #out.into_dyn());)
}

/// The dropout masks of a graph: `(mask node, rate)`.
pub fn masks(g: &Graph) -> Vec<(NodeId, f32)> {
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n.op {
            Op::DropoutMask { rate, .. } => Some((i, f32::from_bits(rate))),
            _ => None,
        })
        .collect()
}

/// Whether the model draws dropout masks (and so keeps a random stream).
pub fn has_dropout(g: &Graph) -> bool {
    g.nodes.iter().any(|n| matches!(n.op, Op::DropoutMask { .. }))
}

/// Splits training from inference (see the module documentation): repoints every fetch
/// at its mask-free version and keeps the loss as written in `model.train_loss`.
pub fn split_modes(model: &mut Model) {
    if !has_dropout(&model.graph) {
        return;
    }
    let g = &mut model.graph;
    let n = g.nodes.len();
    let mut map: Vec<NodeId> = (0..n).collect();
    for id in 0..n {
        let node = g.node(id).clone();
        if matches!(node.op, Op::DropoutMask { .. }) {
            // Used only by the product `a * mask` handled below; anywhere else it is 1.
            let one = g.constant(1.0, node.span);
            map[id] = g.broadcast_to(one, &node.shape);
            continue;
        }
        if node.op == Op::Binary(Binary::Mul) {
            let is_mask = |i: NodeId| matches!(g.node(i).op, Op::DropoutMask { .. });
            if is_mask(node.inputs[1]) && g.shape(node.inputs[0]) == &node.shape {
                map[id] = map[node.inputs[0]];
                continue;
            }
        }
        let inputs: Vec<NodeId> = node.inputs.iter().map(|&i| map[i]).collect();
        if inputs != node.inputs {
            map[id] = g.add(node.op.clone(), inputs, node.span);
        }
    }
    let loss = model.loss().map(|l| l.node);
    if let Some(l) = loss {
        if map[l] != l {
            model.train_loss = Some(l);
        }
    }
    for f in &mut model.fetches {
        f.node = map[f.node];
    }
    // User names follow their inference nodes (explain and graph_dot name those).
    let extra: Vec<(NodeId, String)> =
        model.names.iter().filter(|(id, _)| map[*id] != *id).map(|(id, s)| (map[*id], s.clone())).collect();
    model.names.extend(extra);
}

#[cfg(test)]
mod tests {
    use crate::ops::norm::tests::errors;

    fn one(body: &str) -> (String, usize, usize) {
        let e = errors(&format!("struct M {{\n    input x: [batch, 8];\n{body}\n}}"));
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn dropout_rates_outside_0_to_1_are_errors_at_the_rate() {
        for (rate, col) in [("1.0", 33), ("1", 33), ("-0.1", 33), ("1.5", 33), ("0.99999999", 33)] {
            let (m, l, c) = one(&format!("    output o = dropout(x, rate = {rate});"));
            assert!(
                m.contains("`dropout`: `rate` is the probability of dropping an element, 0 <= rate < 1"),
                "{rate}: {m}"
            );
            assert_eq!((l, c), (3, col), "{rate}");
        }
    }

    #[test]
    fn a_rate_must_be_given_as_a_literal() {
        let (m, l, c) = one("    output o = dropout(x, rate = x);");
        assert!(m.contains("`dropout`: `rate` must be a number literal"), "{m}");
        assert_eq!((l, c), (3, 33));
        let (m, _, _) = one("    output o = dropout(x);");
        assert!(m.contains("`dropout` needs its drop rate: `dropout(a, rate = 0.5)`"), "{m}");
    }

    #[test]
    fn each_call_has_its_own_mask() {
        // Two calls on the same operand must not be hash-consed into one mask.
        let src = "struct M { input x: [batch, 8]; output o = dropout(x, rate = 0.5) + dropout(x, rate = 0.5); }";
        let mut diag = crate::diag::Diag::default();
        let def = crate::syntax::parse_model(src.parse().expect("lexes"), &mut diag).expect("parses");
        let model = crate::lower::lower(&def, &mut diag);
        assert_eq!(super::masks(&model.graph).len(), 2);
    }
}
