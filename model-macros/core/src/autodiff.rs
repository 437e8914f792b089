//! Reverse-mode differentiation at compile time, and the stages around it.
//!
//! The forward graph is simplified, then the loss is differentiated with respect to
//! every trainable param by a reverse sweep over the loss's cone: each node's adjoint
//! is pushed to its operands by the op's VJP rule (in `ops/`), and contributions to one
//! operand are summed. The derivative is more nodes in the same hash-consed graph (never
//! a runtime tape), so the simplifier then cleans forward and backward together.
//! Gradients are only propagated into nodes that depend on a trainable param: never to
//! inputs, frozen params, or through `argmax`, `==` and `stop_gradient`.

use std::collections::HashMap;

use crate::diag::Diag;
use crate::ir::{Graph, NodeId};
use crate::model::Model;
use crate::ops::Op;
use crate::simplify::{self, RewriteLog, Stage};

/// A model ready for emission: the final graph (forward and backward), and each
/// trainable param's gradient node.
pub struct Compiled {
    /// The model, its graph replaced by the simplified forward + backward graph.
    pub model: Model,
    /// `(param index, gradient node)` for every trainable param, when the model trains.
    pub grads: Vec<(usize, NodeId)>,
    /// The named rewrites the simplifier applied.
    pub rewrites: RewriteLog,
    /// The forward graph as the user wrote it (before simplification), for `explain()`.
    pub original: Graph,
    /// The user names of the original graph's nodes.
    pub original_names: Vec<(NodeId, String)>,
}

/// Runs simplify -> differentiate -> simplify. Errors (a trainable param that gets no
/// gradient) go to `diag`.
pub fn compile(mut model: Model, diag: &mut Diag) -> Compiled {
    let original = model.graph.clone();
    let original_names = model.names.clone();
    // Fetches run in inference mode, training in training mode (dropout).
    crate::ops::random::split_modes(&mut model);
    let mut rewrites = RewriteLog::default();
    simplify_model(&mut model, &[], Stage::Forward, &mut rewrites);

    let mut grads = Vec::new();
    if model.optimizer.is_some() {
        if let Some(loss) = model.train_loss_node().zip(model.loss().map(|f| f.name.to_string())) {
            grads = differentiate(&mut model, loss.0, &loss.1, diag);
        }
    }
    let roots: Vec<NodeId> = grads.iter().map(|g| g.1).collect();
    let map = simplify_model(&mut model, &roots, Stage::Differentiated, &mut rewrites);
    for g in &mut grads {
        g.1 = map[&g.1];
    }
    for (id, message) in model.graph.invalid_nodes() {
        diag.error(model.graph.node(id).span, format!("internal compiler error (please report): {message}"));
    }
    Compiled { model, grads, rewrites, original, original_names }
}

/// Simplifies the model's graph keeping every leaf, fetch and `extra` root; returns the
/// id map and updates every id the model holds.
fn simplify_model(model: &mut Model, extra: &[NodeId], stage: Stage, log: &mut RewriteLog) -> HashMap<NodeId, NodeId> {
    let mut roots: Vec<NodeId> = model.inputs.iter().map(|i| i.node).collect();
    roots.extend(model.params.iter().map(|p| p.node));
    roots.extend(model.fetches.iter().map(|f| f.node));
    roots.extend(model.train_loss);
    roots.extend_from_slice(extra);
    let (graph, map) = simplify::run(&model.graph, &roots, stage, log);
    model.graph = graph;
    for i in &mut model.inputs {
        i.node = map[&i.node];
    }
    for p in &mut model.params {
        p.node = map[&p.node];
    }
    for f in &mut model.fetches {
        f.node = map[&f.node];
    }
    if let Some(t) = &mut model.train_loss {
        *t = map[t];
    }
    model.names = model.names.iter().filter_map(|(id, n)| map.get(id).map(|&m| (m, n.clone()))).collect();
    map
}

/// The reverse sweep. Returns `(param index, gradient node)` for every trainable param
/// that gets a gradient; reports the others.
fn differentiate(model: &mut Model, loss: NodeId, loss_name: &str, diag: &mut Diag) -> Vec<(usize, NodeId)> {
    let trainable: Vec<usize> = model.trainable();
    let g = &mut model.graph;
    let cone = g.cone(&[loss]);

    // needs[n]: n depends on a trainable param through differentiable ops.
    let mut needs = vec![false; g.nodes.len()];
    // reaches[n]: n depends on a trainable param at all (ignoring blocking ops).
    let mut reaches = vec![false; g.nodes.len()];
    for &id in &cone {
        let node = g.node(id);
        match node.op {
            Op::Param(p) if !model.params[p].frozen => {
                needs[id] = true;
                reaches[id] = true;
            }
            _ => {
                reaches[id] = node.inputs.iter().any(|&i| reaches[i]);
                needs[id] = !node.op.blocks_gradient() && node.inputs.iter().any(|&i| needs[i]);
            }
        }
    }

    let mut adjoint: HashMap<NodeId, NodeId> = HashMap::new();
    let span = g.node(loss).span;
    if needs[loss] {
        let seed = g.constant(1.0, span);
        adjoint.insert(loss, seed);
    }
    for &id in cone.iter().rev() {
        if !needs[id] {
            continue;
        }
        let Some(&adj) = adjoint.get(&id) else { continue };
        let inputs = g.node(id).inputs.clone();
        let contributions = Op::vjp(g, id, adj);
        for (input, contribution) in inputs.into_iter().zip(contributions) {
            let Some(c) = contribution else { continue };
            if !needs[input] {
                continue;
            }
            if g.shape(c) != g.shape(input) {
                let message = format!(
                    "internal compiler error (please report): the gradient of {:?} has shape {} but its operand has shape {}",
                    g.node(id).op,
                    g.shape(c),
                    g.shape(input)
                );
                diag.error(g.node(id).span, message);
                continue;
            }
            let total = match adjoint.get(&input) {
                Some(&prev) => g.add2(prev, c),
                None => c,
            };
            adjoint.insert(input, total);
        }
    }

    let mut grads = Vec::new();
    for p in trainable {
        let node = model.params[p].node;
        let name = &model.params[p].name;
        match adjoint.get(&node) {
            Some(&grad) => grads.push((p, grad)),
            None if reaches.get(node).copied().unwrap_or(false) && cone.contains(&node) => {
                // Find the blocking op on a path from the param to the loss.
                let blocker = cone.iter().copied().find(|&id| {
                    let n = g.node(id);
                    n.op.blocks_gradient() && n.inputs.iter().any(|&i| depends_on(g, i, node))
                });
                let (span, what) = match blocker {
                    Some(b) => (g.node(b).span, describe_blocker(&g.node(b).op)),
                    None => (name.span(), "a non-differentiable op".to_string()),
                };
                diag.error(
                    span,
                    format!(
                        "param `{name}` gets no gradient from loss `{loss_name}`: its only path to the loss goes through {what}, which is not differentiable; \
                         mark it `#[frozen]` or change the loss"
                    ),
                );
            }
            None => {
                diag.error(
                    name.span(),
                    format!(
                        "param `{name}` gets no gradient: loss `{loss_name}` does not depend on it (TensorFlow's \"No gradients provided for any variable\"); \
                         use it in the loss or mark it `#[frozen]`"
                    ),
                );
            }
        }
    }
    grads
}

fn depends_on(g: &Graph, from: NodeId, target: NodeId) -> bool {
    from == target || g.cone(&[from]).contains(&target)
}

fn describe_blocker(op: &Op) -> String {
    match op {
        Op::Argmax { .. } => "`argmax`".to_string(),
        Op::StopGradient => "`stop_gradient`".to_string(),
        Op::Binary(b) if b.is_comparison() => "`==`".to_string(),
        other => format!("`{other:?}`"),
    }
}
