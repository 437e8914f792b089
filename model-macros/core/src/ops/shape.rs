//! Shape ops: `reshape` (and `flatten`, its sugar), `concat`, `slice` with its adjoint
//! `pad`, and `where` (`select`). Each op's shape rule, derivative and kernel call sit
//! side by side; the kernels are in `runtime/src/shape.rs`.
//!
//! They move elements, so they take index tensors as well as f32 ones ([`dtype`]): a
//! reshape, slice or concatenation of token ids, or a `where` picking between two id
//! tensors, is again an id tensor. No gradient flows into an index tensor (every VJP
//! here returns `None` for a u32 node), and the range check an index op puts on its ids
//! follows them back through these ops to the inputs they come from ([`index_sources`]).
//! A u32 `where` is a kernel (`runtime/src/shape.rs`), not a fused loop: fused loops
//! compute f32.
//!
//! **Element counts as monomials.** A shape's element count is a static factor times a
//! product of symbolic dimensions (`[batch, 28, 28]` is `784 * batch`). A reshape whose
//! two counts are the same monomial is correct for every binding and needs no check; one
//! whose symbols differ (`[batch, 6] -> [n, 4]`) may hold for some bindings only, so the
//! generated prologue checks it before anything runs ([`needs_runtime_check`]); one
//! whose symbols agree but whose static factors differ can never hold: a compile error.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{DType, Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::{broadcast, Dim, Shape};

/// The type rule of the ops that move elements (`Reshape`, `Concat`, `Slice`,
/// `Select`): the tensors moved all have one element type, which the result has; a
/// `where`'s condition is f32 (a comparison's 1.0 / 0.0).
pub fn dtype(op: &Op, ins: &[DType]) -> Result<DType, String> {
    let moved = if *op == Op::Select {
        if ins.first() != Some(&DType::F32) {
            return Err("the condition of `where` must be f32 (a comparison gives 1.0 or 0.0)".to_string());
        }
        &ins[1..]
    } else {
        ins
    };
    let Some(&first) = moved.first() else { return Ok(DType::F32) };
    match moved.iter().position(|&d| d != first) {
        None => Ok(first),
        Some(i) => Err(format!(
            "its tensors must have one element type, but one is {first} and another {}: indices and numbers do not mix",
            moved[i]
        )),
    }
}

/// Slices `(axis, start, end)` taken of a tensor, innermost first.
pub type Window = Vec<(usize, usize, usize)>;

/// Where the elements of the index tensor `id` come from, for the range check of the
/// index op that reads it: `(source, window)` pairs, with `source` a node that is not a
/// shape op (an input, an `argmax`) and `window` the `(axis, start, end)` slices applied
/// to it directly (outermost last). The ops that only move elements are followed:
/// `reshape` (the same elements), `concat` (each operand), `where` (both branches) and
/// `slice` (only the window's elements are read). A slice taken after a reshape is not
/// a window of the source (it is one of the reshaped view), so it is dropped: the
/// check then covers all of the reshaped elements, a superset, which only rejects ids
/// the call reads or ids beside them in the same reshaped input.
pub fn index_sources(g: &Graph, id: NodeId) -> Vec<(NodeId, Window)> {
    let mut out = Vec::new();
    // (node, slices seen above it since the last reshape, outermost first)
    let mut stack: Vec<(NodeId, Window)> = vec![(id, Vec::new())];
    while let Some((n, window)) = stack.pop() {
        let node = g.node(n);
        match &node.op {
            Op::Reshape(_) => stack.push((node.inputs[0], Vec::new())),
            Op::Slice { axis, start, end } => {
                let mut w = window;
                w.push((*axis, *start, *end));
                stack.push((node.inputs[0], w));
            }
            Op::Concat { .. } => stack.extend(node.inputs.iter().map(|&i| (i, Vec::new()))),
            Op::Select => stack.extend(node.inputs[1..].iter().map(|&i| (i, Vec::new()))),
            _ => {
                let mut w = window;
                w.reverse();
                if !out.contains(&(n, w.clone())) {
                    out.push((n, w));
                }
            }
        }
    }
    out
}

/// A shape's element count as (static factor, sorted symbolic factors).
pub fn monomial(s: &Shape) -> (u128, Vec<String>) {
    let mut n: u128 = 1;
    let mut syms = Vec::new();
    for d in s.dims() {
        match d {
            Dim::Static(k) => n = n.saturating_mul(*k as u128),
            Dim::Sym(s) => syms.push(s.clone()),
        }
    }
    syms.sort();
    (n, syms)
}

/// Whether a reshape from `from` to `to` is only known to keep the element count once
/// the symbolic dimensions are bound (then the prologue checks it).
pub fn needs_runtime_check(from: &Shape, to: &Shape) -> bool {
    monomial(from).1 != monomial(to).1
}

/// `Reshape(to)`: the same elements, in row-major order, in another shape. The counts
/// must be the same monomial, or differ in their symbols (checked at run time).
pub fn reshape_shape(s: &Shape, to: &Shape) -> Result<Shape, String> {
    let ((nf, sf), (nt, st)) = (monomial(s), monomial(to));
    if sf == st && nf != nt {
        return Err(format!("{s} has {} elements but {to} has {}", count_text(nf, &sf), count_text(nt, &st)));
    }
    Ok(to.clone())
}

/// `784 * batch`, `10`, `batch * n`.
pub fn count_text(n: u128, syms: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if n != 1 || syms.is_empty() {
        parts.push(n.to_string());
    }
    parts.extend(syms.iter().cloned());
    parts.join(" * ")
}

/// The adjoint of a reshape is the reverse reshape.
pub fn reshape_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    if node.dtype == DType::U32 {
        return vec![None];
    }
    let s = g.shape(node.inputs[0]).clone();
    vec![Some(g.reshape(adj, &s))]
}

/// `Concat { axis }`: equal ranks, equal dimensions except along `axis`, where the
/// (static) sizes add up.
pub fn concat_shape(ins: &[&Shape], axis: usize) -> Result<Shape, String> {
    let first = ins.first().ok_or("concat needs at least one tensor")?;
    if axis >= first.rank() {
        return Err(format!("axis {axis} is out of range for shape {first}"));
    }
    let mut total = 0usize;
    for (i, s) in ins.iter().enumerate() {
        if s.rank() != first.rank() {
            return Err(format!("tensor {i} is {s} but tensor 0 is {first}: concat needs equal ranks"));
        }
        for (k, (a, b)) in s.dims().iter().zip(first.dims()).enumerate() {
            if k != axis && a != b {
                return Err(format!(
                    "tensor {i} is {s} but tensor 0 is {first}: they differ in axis {k} ({a} != {b}), and only axis {axis} may differ"
                ));
            }
        }
        match &s.0[axis] {
            Dim::Static(n) => total = total.saturating_add(*n),
            Dim::Sym(name) if ins.len() > 1 => {
                return Err(format!(
                    "tensor {i} is {s}: its axis {axis} is the symbolic dimension `{name}`, and a sum of dimensions such as `{name} + ...` is not one dimension; concatenate along a static axis"
                ))
            }
            Dim::Sym(_) => return Ok((*first).clone()),
        }
    }
    let mut out = (*first).clone();
    out.0[axis] = Dim::Static(total);
    Ok(out)
}

/// The adjoint of a concatenation: each operand's slice of the adjoint.
pub fn concat_vjp(g: &mut Graph, node: &Node, axis: usize, adj: NodeId) -> Vec<Option<NodeId>> {
    if node.dtype == DType::U32 {
        return vec![None; node.inputs.len()];
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(node.inputs.len());
    for &x in &node.inputs {
        let len = g.shape(x).0[axis].as_static().unwrap_or(0);
        if node.inputs.len() == 1 {
            out.push(Some(adj));
            continue;
        }
        out.push(Some(g.add(Op::Slice { axis, start, end: start + len }, vec![adj], node.span)));
        start += len;
    }
    out
}

/// `Slice { axis, start, end }`: `0 <= start < end <= d` along a static axis `d`.
pub fn slice_shape(s: &Shape, axis: usize, start: usize, end: usize) -> Result<Shape, String> {
    let Some(d) = s.0.get(axis) else { return Err(format!("axis {axis} is out of range for shape {s}")) };
    let Dim::Static(d) = d else {
        return Err(format!("axis {axis} of {s} is the symbolic dimension `{d}`: a slice needs a static axis"));
    };
    if start >= end || end > *d {
        return Err(format!("[{start}, {end}) is not a non-empty range inside axis {axis} of {s} (size {d})"));
    }
    let mut out = s.clone();
    out.0[axis] = Dim::Static(end - start);
    Ok(out)
}

/// The adjoint of a slice: the adjoint placed into zeros of the operand's shape.
pub fn slice_vjp(
    g: &mut Graph,
    node: &Node,
    axis: usize,
    start: usize,
    end: usize,
    adj: NodeId,
) -> Vec<Option<NodeId>> {
    if node.dtype == DType::U32 {
        return vec![None];
    }
    let d = g.shape(node.inputs[0]).0[axis].as_static().unwrap_or(end);
    vec![Some(g.add(Op::Pad { axis, before: start, after: d.saturating_sub(end) }, vec![adj], node.span))]
}

/// `Pad { axis, before, after }`: zeros around the operand along a static axis.
pub fn pad_shape(s: &Shape, axis: usize, before: usize, after: usize) -> Result<Shape, String> {
    let Some(Dim::Static(d)) = s.0.get(axis) else {
        return Err(format!("axis {axis} of {s} must be a static axis to pad"));
    };
    let mut out = s.clone();
    out.0[axis] = Dim::Static(d + before + after);
    Ok(out)
}

/// The adjoint of a pad is the slice it came from.
pub fn pad_vjp(g: &mut Graph, node: &Node, axis: usize, before: usize, adj: NodeId) -> Vec<Option<NodeId>> {
    let d = g.shape(node.inputs[0]).0[axis].as_static().unwrap_or(1);
    vec![Some(g.add(Op::Slice { axis, start: before, end: before + d }, vec![adj], node.span))]
}

/// `Select(cond, a, b)`: the three shapes broadcast together.
pub fn select_shape(ins: &[&Shape]) -> Result<Shape, String> {
    broadcast(&broadcast(ins[0], ins[1])?, ins[2])
}

/// The adjoints of `where(c, a, b)`: `where(c, g, 0)` to `a` and `where(c, 0, g)` to
/// `b`, each summed back over its broadcast axes; none to `c`, and none to u32 branches.
pub fn select_vjp(g: &mut Graph, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    if node.dtype == DType::U32 {
        return vec![None, None, None];
    }
    let (c, a, b) = (node.inputs[0], node.inputs[1], node.inputs[2]);
    let zero = g.constant(0.0, node.span);
    let (sa, sb) = (g.shape(a).clone(), g.shape(b).clone());
    let da = g.add(Op::Select, vec![c, adj, zero], node.span);
    let db = g.add(Op::Select, vec![c, zero, adj], node.span);
    vec![None, Some(g.sum_to(da, &sa)), Some(g.sum_to(db, &sb))]
}

/// The scalar expression of an f32 `where` in a fused loop: `cond != 0` picks `a` (a
/// NaN condition too, as NumPy's `where` treats NaN as true). A u32 `where` is the
/// kernel `shape::select`, with the same rule.
pub fn select_expr(c: &TokenStream, a: &TokenStream, b: &TokenStream) -> TokenStream {
    quote!((if (#c) != 0.0f32 { #a } else { #b }))
}

/// The kernel calls of the non-elementwise shape ops (and of a u32 `where`: fused loops
/// are f32 only, see `emit/plan.rs`).
pub fn kernel_call(op: &Op, args: &[TokenStream], out: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::shape);
    match op {
        Op::Select => {
            let (c, a, b) = (&args[0], &args[1], &args[2]);
            quote!(#k::select(#c.into_dyn(), #a.into_dyn(), #b.into_dyn(), #out.into_dyn());)
        }
        Op::Concat { axis } => quote!(#k::concat(&[#(#args.into_dyn()),*], #axis, #out.into_dyn());),
        Op::Slice { axis, start, .. } => {
            let a = &args[0];
            quote!(#k::slice(#a.into_dyn(), #axis, #start, #out.into_dyn());)
        }
        Op::Pad { axis, before, .. } => {
            let a = &args[0];
            quote!(#k::pad(#a.into_dyn(), #axis, #before, #out.into_dyn());)
        }
        _ => quote!(::core::compile_error!("not a shape kernel op");),
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::DType;
    use crate::ops::Op;
    use proc_macro2::TokenStream;

    const IDS: &str =
        "input x: [batch, 3]; input a: [batch] as u32; input b: [batch] as u32; param emb: [5, 2] = normal(std = 1.0);";

    fn compile(body: &str) -> Result<crate::autodiff::Compiled, Vec<String>> {
        let src = format!("struct M {{ {IDS} {body} optimizer sgd(learning_rate = 0.1); }}");
        let tokens: TokenStream = src.parse().expect("test sources lex");
        crate::compile(tokens).map_err(|d| d.errors().iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn no_gradient_flows_into_indices() {
        // The table gets a scatter-add; the ids, moved by a where, a reshape and a
        // concat, get nothing, and no node of the gradient takes a u32 operand it cannot.
        let c = compile(
            "#[frozen] param w: [3] = zeros; loss l = sum(gather(emb, reshape(concat([reshape(where(sum(x * w, axis = 1) > 0.0, a, b), [batch, 1]), reshape(a, [batch, 1])], axis = 1), [batch, 2])));",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.grads.len(), 1);
        let g = &c.model.graph;
        assert!(g.invalid_nodes().next().is_none());
        let scatter = g.nodes.iter().filter(|n| matches!(n.op, Op::ScatterAdd { .. })).count();
        assert_eq!(scatter, 1);
        for n in &g.nodes {
            if n.dtype == DType::U32 {
                assert!(matches!(n.op, Op::Input(_) | Op::Reshape(_) | Op::Concat { .. } | Op::Select), "{:?}", n.op);
            }
        }
        // A param whose only path to the loss is the condition of a u32 where gets none.
        let e = compile("param w: [3] = zeros; loss l = sum(gather(emb, where(sum(x * w, axis = 1) > 0.0, a, b)));")
            .err()
            .unwrap_or_default();
        assert!(e.iter().any(|m| m.contains("param `w` gets no gradient")), "{e:?}");
    }

    #[test]
    fn a_sum_over_the_gathered_ids_is_an_embedding_bag() {
        // `mean` over the tokens is the sum times 1 / t: the forward reads the table once
        // per id (no [batch, 2, 2] gather), the gradient is the bag scatter, and explain
        // names the rewrite.
        let c = compile(
            "input t: [batch, 2] as u32; param v: [2] = zeros; loss l = sum(mean(gather(emb, t), axis = 1) * v);",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let g = &c.model.graph;
        assert!(g.nodes.iter().any(|n| n.op == Op::GatherSum));
        assert!(!g.nodes.iter().any(|n| n.op == Op::Gather), "the [batch, t, d] gather is gone");
        assert!(g.nodes.iter().any(|n| matches!(n.op, Op::ScatterAdd { bags: true, .. })));
        assert_eq!(c.rewrites.applied.get(super::super::index::GATHER_SUM), Some(&1));
        assert!(crate::ir::explain::explain_text(&c).contains("gather_sum(emb, t)"));
        // A sum over the row axis (or over everything) keeps the gather.
        let c = compile("input t: [batch, 2] as u32; loss l = sum(sum(gather(emb, t), axis = 2));")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!c.model.graph.nodes.iter().any(|n| n.op == Op::GatherSum));
    }
}
