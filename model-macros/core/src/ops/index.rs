//! The index family: ops that read u32 index tensors (class labels, token ids) —
//! `one_hot`, `gather` (an embedding lookup) and its adjoint the scatter-add,
//! `sparse_softmax_cross_entropy`, and comparisons between indices.
//!
//! Indices are never differentiated: every rule here returns `None` for its index
//! operand. Whether an index is in range is checked before a call runs (inputs, in the
//! generated prologue: `Error::Index`) or at compile time (an `argmax` result feeding a
//! smaller table), so the kernels only ever see valid indices.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::{Binary, Op};
use crate::shape::{broadcast, Dim, Shape};

/// `one_hot(ids, depth)`: `[..] -> [.., depth]`.
pub fn one_hot_shape(ids: &Shape, depth: usize) -> Shape {
    let mut dims = ids.0.clone();
    dims.push(Dim::Static(depth));
    Shape(dims)
}

/// `sparse_softmax_cross_entropy(logits, labels)`: `[.., c]` and `[..]` give `[..]`.
pub fn sparse_xent_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let (z, y) = (ins[0], ins[1]);
    if z.rank() == 0 {
        return Err(format!("logits must have a class axis, found {z}"));
    }
    let rows = z.without_axis(z.rank() - 1);
    if y != &rows {
        return Err(format!("labels must have the logits' shape without the class axis, {rows}, but they are {y}"));
    }
    Ok(rows)
}

/// The fused gradient `(z, y, g) -> [.., c]`.
pub fn sparse_xent_grad_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let rows = sparse_xent_shape(&ins[..2])?;
    if ins[2] != &rows {
        return Err(format!("the adjoint {} must have shape {rows}", ins[2]));
    }
    Ok(ins[0].clone())
}

/// `gather(table, ids)`: `[v, d..]` and `[i..]` give `[i.., d..]`.
pub fn gather_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let (table, ids) = (ins[0], ins[1]);
    if table.rank() == 0 {
        return Err(format!("the table must have a row axis, found {table}"));
    }
    let mut dims = ids.0.clone();
    dims.extend(table.0[1..].iter().cloned());
    Ok(Shape(dims))
}

/// `gather_sum(table, ids)`: `[v, d..]` and `[p.., t]` give `[p.., d..]`.
pub fn gather_sum_shape(ins: &[&Shape]) -> Result<Shape, String> {
    let (table, ids) = (ins[0], ins[1]);
    if table.rank() == 0 || ids.rank() == 0 {
        return Err(format!(
            "gather_sum needs a table with a row axis and ids with a bag axis, found {table} and {ids}"
        ));
    }
    let mut dims = ids.0[..ids.rank() - 1].to_vec();
    dims.extend(table.0[1..].iter().cloned());
    Ok(Shape(dims))
}

/// The scatter-add `(g, ids) -> [rows, d..]`, with `g` of shape `[i.., d..]` (`bags`:
/// `[p.., d..]` for ids `[p.., t]`, one row per bag).
pub fn scatter_add_shape(ins: &[&Shape], rows: usize, bags: bool) -> Result<Shape, String> {
    let (g, ids) = (ins[0], ins[1]);
    let lead = if bags { ids.rank().saturating_sub(1) } else { ids.rank() };
    if (bags && ids.rank() == 0) || g.rank() < lead || g.0[..lead] != ids.0[..lead] {
        return Err(format!("the adjoint {g} must start with the ids' shape {ids}"));
    }
    let mut dims = vec![Dim::Static(rows)];
    dims.extend(g.0[lead..].iter().cloned());
    Ok(Shape(dims))
}

/// A comparison of two index tensors, with broadcasting.
pub fn compare_shape(ins: &[&Shape]) -> Result<Shape, String> {
    broadcast(ins[0], ins[1])
}

/// `d logits = (softmax(z) - one_hot(y)) * g` (one fused kernel); labels get nothing.
pub fn sparse_xent_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (z, y) = (node.inputs[0], node.inputs[1]);
    vec![Some(g.add(Op::SparseXentGrad, vec![z, y, adj], node.span)), None]
}

/// `d table = scatter_add(g, ids)`: each row of the adjoint is added into the table row
/// its id names (ids that repeat add up); ids get nothing.
pub fn gather_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (table, ids) = (node.inputs[0], node.inputs[1]);
    let rows = g.shape(table).0[0].as_static().unwrap_or(1);
    vec![Some(g.add(Op::ScatterAdd { rows, bags: false }, vec![adj, ids], node.span)), None]
}

/// `d table = scatter_add_bags(g, ids)`: each bag's adjoint row added into the rows of
/// all its ids, with no `[p.., t, d..]` broadcast of `g` in between; ids get nothing.
pub fn gather_sum_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (table, ids) = (node.inputs[0], node.inputs[1]);
    let rows = g.shape(table).0[0].as_static().unwrap_or(1);
    vec![Some(g.add(Op::ScatterAdd { rows, bags: true }, vec![adj, ids], node.span)), None]
}

/// The adjoint of a scatter-add is a gather (only reached by second derivatives).
pub fn scatter_add_vjp(g: &mut Graph, node: &Node, bags: bool, adj: NodeId) -> Vec<Option<NodeId>> {
    let ids = node.inputs[1];
    let op = if bags { Op::GatherSum } else { Op::Gather };
    vec![Some(g.add(op, vec![adj, ids], node.span)), None]
}

/// The name of the embedding-bag rewrite, as `explain()` lists it.
pub const GATHER_SUM: &str = "sum(gather(t, ids), axis = -1) -> gather_sum(t, ids): each bag's rows summed as they are read, and the gradient scatter-added per bag (no [.., t, d] gather or broadcast)";

/// `sum(gather(table, ids), axis = a)` with `a` the ids' last axis -> `gather_sum(table,
/// ids)`, before differentiation (so `mean` over the tokens, which is this sum times
/// `1 / t`, gets it too). Exact: the same rows added in the same order. Applied whatever
/// else reads the gather (it is then still computed for those readers).
pub fn gather_sum_rewrite(g: &mut Graph, node: &Node, x: &[NodeId], ctx: &mut crate::simplify::Ctx) -> Option<NodeId> {
    let Op::Sum { axes, keepdims: false } = &node.op else { return None };
    if ctx.stage != crate::simplify::Stage::Forward || g.node(x[0]).op != Op::Gather {
        return None;
    }
    let (table, ids) = (g.node(x[0]).inputs[0], g.node(x[0]).inputs[1]);
    let r = g.shape(ids).rank();
    if r == 0 || axes[..] != [r - 1] {
        return None;
    }
    ctx.log.note(GATHER_SUM);
    Some(g.add(Op::GatherSum, vec![table, ids], node.span))
}

/// The runtime's name of a comparison.
fn cmp_tokens(b: Binary) -> TokenStream {
    let k = quote!(::modelc::__private::kernels::Cmp);
    match b {
        Binary::Eq => quote!(#k::Eq),
        Binary::Ne => quote!(#k::Ne),
        Binary::Gt => quote!(#k::Gt),
        Binary::Ge => quote!(#k::Ge),
        other => {
            // The front end only builds index comparisons of the three kinds above.
            let name = other.name();
            quote!(::core::compile_error!(concat!("internal: no index comparison ", #name)))
        }
    }
}

/// The kernel call of an index op writing `out`.
pub fn kernel_call(op: &Op, args: &[TokenStream], out: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::kernels);
    match op {
        Op::OneHot { .. } => {
            let ids = &args[0];
            quote!(#k::one_hot(#ids.into_dyn(), #out.into_dyn());)
        }
        Op::SparseXent => {
            let (z, y) = (&args[0], &args[1]);
            quote!(#k::sparse_softmax_xent(#z.into_dyn(), #y.into_dyn(), #out.into_dyn());)
        }
        Op::SparseXentGrad => {
            let (z, y, g) = (&args[0], &args[1], &args[2]);
            quote!(#k::sparse_softmax_xent_grad(#z.into_dyn(), #y.into_dyn(), #g.into_dyn(), #out.into_dyn());)
        }
        Op::Gather => {
            let (t, ids) = (&args[0], &args[1]);
            quote!(#k::gather(#t.into_dyn(), #ids.into_dyn(), #out.into_dyn());)
        }
        Op::GatherSum => {
            let (t, ids) = (&args[0], &args[1]);
            quote!(#k::gather_sum(#t.into_dyn(), #ids.into_dyn(), #out.into_dyn());)
        }
        Op::ScatterAdd { bags: false, .. } => {
            let (g, ids) = (&args[0], &args[1]);
            quote!(#k::scatter_add(#g.into_dyn(), #ids.into_dyn(), #out.into_dyn());)
        }
        Op::ScatterAdd { bags: true, .. } => {
            let (g, ids) = (&args[0], &args[1]);
            quote!(#k::scatter_add_bags(#g.into_dyn(), #ids.into_dyn(), #out.into_dyn());)
        }
        Op::IndexCompare(b) => {
            let (a, c) = (&args[0], &args[1]);
            let cmp = cmp_tokens(*b);
            quote!(#k::compare_indices(#a.into_dyn(), #c.into_dyn(), #cmp, #out.into_dyn());)
        }
        _ => quote!(::core::compile_error!("internal: not an index op")),
    }
}
