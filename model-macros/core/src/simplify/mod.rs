//! Simplification: small rewrite passes chained to a bounded fixpoint.
//!
//! Each pass is one function `rule(graph, node, operands) -> Option<replacement>` in its
//! own file; [`run`] rebuilds the graph from its roots through every pass until nothing
//! changes. Rebuilding from the roots is also dead-code elimination, and the hash-consed
//! graph makes it common-subexpression elimination. Every rewrite that changes what is
//! computed (not just how it is written) is logged by name for `explain()`.

pub mod algebra;
pub mod fold;
pub mod stable;

use std::collections::{BTreeMap, HashMap};

use crate::ir::{Graph, Node, NodeId};

/// Which stage the graph is in: some rewrites are only valid after differentiation
/// (`stop_gradient(x) -> x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Before autodiff.
    Forward,
    /// After autodiff.
    Differentiated,
}

/// The named rewrites applied, with how often each fired.
#[derive(Default, Debug, Clone)]
pub struct RewriteLog {
    /// Rewrite name to count.
    pub applied: BTreeMap<&'static str, usize>,
}

impl RewriteLog {
    /// Records one application of a named rewrite.
    pub fn note(&mut self, name: &'static str) {
        *self.applied.entry(name).or_default() += 1;
    }
}

/// Context handed to each rule.
pub struct Ctx<'a> {
    /// The stage.
    pub stage: Stage,
    /// Where named rewrites are logged.
    pub log: &'a mut RewriteLog,
}

const MAX_ROUNDS: usize = 8;

/// Simplifies the part of `graph` that `roots` depend on. Returns the new graph and the
/// old-to-new id map for every node kept.
pub fn run(graph: &Graph, roots: &[NodeId], stage: Stage, log: &mut RewriteLog) -> (Graph, HashMap<NodeId, NodeId>) {
    let mut current = graph.clone();
    let mut total: HashMap<NodeId, NodeId> = graph.cone(roots).into_iter().map(|i| (i, i)).collect();
    let mut current_roots = roots.to_vec();
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        let (next, map) = current.rebuild(&current_roots, |g, node, inputs| {
            let mut ctx = Ctx { stage, log };
            let out = rule(g, node, inputs, &mut ctx);
            changed |= out.is_some();
            out
        });
        // Nodes a rewrite skipped over are gone; the roots always survive.
        total = total.into_iter().filter_map(|(k, v)| map.get(&v).map(|&n| (k, n))).collect();
        current_roots = current_roots.iter().map(|r| map[r]).collect();
        let shrank = next.nodes.len() < current.nodes.len();
        current = next;
        if !changed && !shrank {
            break;
        }
    }
    // A global pass (it needs every reader of a node, which the local rules do not see),
    // once the backward graph exists: conv + bias + max_pool into one kernel.
    if stage == Stage::Differentiated {
        if let Some((fused, map)) = crate::ops::pool::fuse_conv_pool(&current, &current_roots, log) {
            total = total.into_iter().filter_map(|(k, v)| map.get(&v).map(|&n| (k, n))).collect();
            current = fused;
        }
    }
    (current, total)
}

/// Every pass's rule, in order; the first that fires wins.
fn rule(g: &mut Graph, node: &Node, inputs: &[NodeId], ctx: &mut Ctx) -> Option<NodeId> {
    fold::rule(g, node, inputs, ctx)
        .or_else(|| algebra::rule(g, node, inputs, ctx))
        .or_else(|| stable::rule(g, node, inputs, ctx))
        .or_else(|| crate::ops::pool::rewrite(g, node, inputs, ctx))
        .or_else(|| crate::ops::index::gather_sum_rewrite(g, node, inputs, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Op, Unary};
    use crate::shape::{Dim, Shape};
    use proc_macro2::Span;

    fn leaf(g: &mut Graph, i: usize, dims: Vec<Dim>) -> NodeId {
        g.leaf(Op::Input(i), Shape(dims), crate::ir::DType::F32, Span::call_site())
    }

    #[test]
    fn folds_constants_and_identities() {
        let mut g = Graph::new();
        let x = leaf(&mut g, 0, vec![Dim::Static(3)]);
        let one = g.constant(1.0, Span::call_site());
        let two = g.constant(2.0, Span::call_site());
        let three = g.add2(one, two);
        let nx = g.neg(x);
        let nnx = g.neg(nx);
        let prod = g.mul(nnx, one);
        let root = g.mul(prod, three);
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[root], Stage::Forward, &mut log);
        let r = map[&root];
        // 3 * x: two nodes besides the leaf.
        assert_eq!(out.nodes.len(), 3, "{:?}", out.nodes);
        assert_eq!(out.node(r).op, Op::Binary(crate::ops::Binary::Mul));
        assert!(out.node(r).inputs.contains(&map[&x]));
    }

    #[test]
    fn rewrites_ln_softmax_into_log_softmax() {
        let mut g = Graph::new();
        let z = leaf(&mut g, 0, vec![Dim::Sym("n".into()), Dim::Static(10)]);
        let s = g.add(Op::Softmax(1), vec![z], Span::call_site());
        let l = g.unary(Unary::Ln, s);
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[l], Stage::Forward, &mut log);
        assert_eq!(out.node(map[&l]).op, Op::LogSoftmax(1));
        assert_eq!(log.applied.get(stable::LN_SOFTMAX), Some(&1));
    }

    #[test]
    fn fuses_the_tutorial_cross_entropy() {
        let mut g = Graph::new();
        let n = Dim::Sym("batch".into());
        let z = leaf(&mut g, 0, vec![n.clone(), Dim::Static(10)]);
        let y = leaf(&mut g, 1, vec![n.clone(), Dim::Static(10)]);
        let s = g.add(Op::Softmax(1), vec![z], Span::call_site());
        let l = g.unary(Unary::Ln, s);
        let m = g.mul(y, l);
        let sum = g.add(Op::Sum { axes: vec![1], keepdims: false }, vec![m], Span::call_site());
        let neg = g.neg(sum);
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[neg], Stage::Forward, &mut log);
        let root = out.node(map[&neg]);
        assert_eq!(root.op, Op::SoftmaxXent);
        assert_eq!(root.inputs, vec![map[&z], map[&y]]);
    }
}
