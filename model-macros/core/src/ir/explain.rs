//! `explain()` and `graph_dot()`: the model's programs as text, generated at compile time.
//!
//! `explain()` reads like a derivation: the forward program as written (sugar lowered to
//! primitives), the rewrites the simplifier made, then `d loss / d param = ...` for every
//! trainable param over the simplified graph, with shared subexpressions named `t1`,
//! `t2`, ... Primitive pairs print as the sugar they came from (`a + -b` as `a - b`,
//! `a * recip(b)` as `a / b`).

use std::collections::HashMap;
use std::fmt::Write;

use proc_macro2::TokenStream;

use crate::autodiff::Compiled;
use crate::ir::{Graph, NodeId};
use crate::ops::{Binary, Op, Unary};
use crate::syntax::NodeKind;

struct Printer<'a> {
    g: &'a Graph,
    names: HashMap<NodeId, String>,
    /// How deep [`Printer::expr`] is nested now: past [`PRINT_DEPTH`] an operand prints
    /// as `..`.
    depth: std::cell::Cell<usize>,
}

/// The deepest unnamed subexpression `explain()` prints: a sum of a thousand terms is a
/// thousand nodes deep, which no reader follows and which overflowed the macro's stack
/// when printed recursively; below this depth it prints as `..`.
const PRINT_DEPTH: usize = 48;

impl<'a> Printer<'a> {
    fn new(g: &'a Graph, names: HashMap<NodeId, String>) -> Self {
        Printer { g, names, depth: std::cell::Cell::new(0) }
    }
}

fn num(v: f32) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Printer<'_> {
    fn is_infix(&self, id: NodeId) -> bool {
        if self.names.contains_key(&id) {
            return false;
        }
        matches!(
            self.g.node(id).op,
            Op::Binary(Binary::Add | Binary::Mul | Binary::Eq | Binary::Ne | Binary::Ge | Binary::Gt)
                | Op::Unary(Unary::Recip)
                | Op::IndexCompare(_)
        )
    }

    fn operand(&self, id: NodeId) -> String {
        let s = self.expr(id, None);
        if self.is_infix(id) {
            format!("({s})")
        } else {
            s
        }
    }

    fn expr(&self, id: NodeId, defining: Option<NodeId>) -> String {
        let depth = self.depth.get();
        if depth >= PRINT_DEPTH && defining != Some(id) && !self.names.contains_key(&id) {
            return "..".to_string();
        }
        self.depth.set(depth + 1);
        let s = self.expr_at(id, defining);
        self.depth.set(depth);
        s
    }

    fn expr_at(&self, id: NodeId, defining: Option<NodeId>) -> String {
        if defining != Some(id) {
            if let Some(n) = self.names.get(&id) {
                return n.clone();
            }
        }
        let node = self.g.node(id);
        let x = &node.inputs;
        let op = |i: usize| self.operand(x[i]);
        let axis_suffix = |axis: usize, keep: bool| {
            let mut s = format!(", axis = {axis}");
            if keep {
                s.push_str(", keepdims = true");
            }
            s
        };
        match &node.op {
            Op::Input(_) | Op::Param(_) => format!("%{id}"),
            Op::Const(bits) => num(f32::from_bits(*bits)),
            Op::DimProduct(syms) => syms.join(" * "),
            Op::Unary(Unary::Neg) => format!("-{}", op(0)),
            Op::Unary(Unary::Recip) => format!("1 / {}", op(0)),
            Op::Unary(Unary::Pow(k)) => format!("pow({}, {})", self.expr(x[0], None), num(f32::from_bits(*k))),
            Op::Unary(u) => format!("{}({})", u.name(), self.expr(x[0], None)),
            Op::Binary(Binary::Add) => {
                let b = self.g.node(x[1]);
                if b.op == Op::Unary(Unary::Neg) && !self.names.contains_key(&x[1]) {
                    format!("{} - {}", op(0), self.operand(b.inputs[0]))
                } else {
                    format!("{} + {}", op(0), op(1))
                }
            }
            Op::Binary(Binary::Mul) => {
                let b = self.g.node(x[1]);
                if let Op::DropoutMask { rate, .. } = b.op {
                    format!("dropout({}, rate = {})", self.expr(x[0], None), num(f32::from_bits(rate)))
                } else if b.op == Op::Unary(Unary::Recip) && !self.names.contains_key(&x[1]) {
                    format!("{} / {}", op(0), self.operand(b.inputs[0]))
                } else {
                    format!("{} * {}", op(0), op(1))
                }
            }
            Op::Binary(Binary::Eq) => format!("{} == {}", op(0), op(1)),
            Op::Binary(Binary::Ne) => format!("{} != {}", op(0), op(1)),
            Op::Binary(Binary::Ge) => format!("{} >= {}", op(0), op(1)),
            Op::Binary(Binary::Gt) => format!("{} > {}", op(0), op(1)),
            Op::Binary(b) => format!("{}({}, {})", b.name(), self.expr(x[0], None), self.expr(x[1], None)),
            Op::MatMul { ta, tb } => {
                let t = |i: usize, f: bool| {
                    let e = self.expr(x[i], None);
                    if f {
                        format!("transpose({e})")
                    } else {
                        e
                    }
                };
                format!("matmul({}, {})", t(0, *ta), t(1, *tb))
            }
            Op::Transpose => format!("transpose({})", self.expr(x[0], None)),
            Op::Sum { axes, keepdims } => {
                let a = self.expr(x[0], None);
                if axes.len() == self.g.shape(x[0]).rank() && !keepdims {
                    format!("sum({a})")
                } else if axes.len() == 1 {
                    format!("sum({a}{})", axis_suffix(axes[0], *keepdims))
                } else {
                    format!("sum({a}, axis = {axes:?}{})", if *keepdims { ", keepdims = true" } else { "" })
                }
            }
            Op::Max { axes, keepdims } => {
                let a = self.expr(x[0], None);
                if axes.len() == 1 {
                    format!("max({a}{})", axis_suffix(axes[0], *keepdims))
                } else {
                    format!("max({a}, axis = {axes:?}{})", if *keepdims { ", keepdims = true" } else { "" })
                }
            }
            Op::Argmax { axis, keepdims } => {
                format!("argmax({}{})", self.expr(x[0], None), axis_suffix(*axis, *keepdims))
            }
            Op::Broadcast(s) => format!("broadcast({}, {s})", self.expr(x[0], None)),
            Op::SumTo(s) => format!("sum_to({}, {s})", self.expr(x[0], None)),
            Op::Reshape(s) => format!("reshape({}, {s})", self.expr(x[0], None)),
            Op::Concat { axis } => {
                let parts: Vec<String> = x.iter().map(|&i| self.expr(i, None)).collect();
                format!("concat([{}], axis = {axis})", parts.join(", "))
            }
            Op::Slice { axis, start, end } => {
                format!("slice({}, axis = {axis}, start = {start}, end = {end})", self.expr(x[0], None))
            }
            Op::Pad { axis, before, after } => {
                format!("pad({}, axis = {axis}, before = {before}, after = {after})", self.expr(x[0], None))
            }
            Op::Select => {
                format!("where({}, {}, {})", self.expr(x[0], None), self.expr(x[1], None), self.expr(x[2], None))
            }
            Op::Softmax(a) | Op::LogSoftmax(a) => {
                let f = if matches!(node.op, Op::Softmax(_)) { "softmax" } else { "log_softmax" };
                let e = self.expr(x[0], None);
                if *a + 1 == self.g.shape(x[0]).rank() {
                    format!("{f}({e})")
                } else {
                    format!("{f}({e}, axis = {a})")
                }
            }
            Op::SoftmaxXent => format!("softmax_cross_entropy({}, {})", self.expr(x[0], None), self.expr(x[1], None)),
            Op::SoftmaxXentGrad => {
                let (z, y) = (self.expr(x[0], None), self.operand(x[1]));
                // Show a broadcast scalar adjoint `1 / n` as a division.
                let gnode = self.g.node(x[2]);
                let scale = match &gnode.op {
                    Op::Broadcast(_) if !self.names.contains_key(&x[2]) => gnode.inputs[0],
                    _ => x[2],
                };
                let snode = self.g.node(scale);
                let tail = if snode.op == Op::Unary(Unary::Recip) && !self.names.contains_key(&scale) {
                    format!(" / {}", self.operand(snode.inputs[0]))
                } else {
                    format!(" * {}", self.operand(x[2]))
                };
                format!("(softmax({z}) * rowsum({y}) - {y}){tail}")
            }
            Op::SigmoidXent => format!("sigmoid_cross_entropy({}, {})", self.expr(x[0], None), self.expr(x[1], None)),
            Op::StopGradient => format!("stop_gradient({})", self.expr(x[0], None)),
            Op::OneHot { depth } => format!("one_hot({}, depth = {depth})", self.expr(x[0], None)),
            Op::SparseXent => {
                format!("sparse_softmax_cross_entropy({}, {})", self.expr(x[0], None), self.expr(x[1], None))
            }
            Op::SparseXentGrad => format!(
                "(softmax({}) - one_hot({})) * {}",
                self.expr(x[0], None),
                self.expr(x[1], None),
                self.expr(x[2], None)
            ),
            Op::Gather => format!("gather({}, {})", self.expr(x[0], None), self.expr(x[1], None)),
            Op::GatherSum => format!("gather_sum({}, {})", self.expr(x[0], None), self.expr(x[1], None)),
            Op::ScatterAdd { rows, bags } => {
                let name = if *bags { "scatter_add_bags" } else { "scatter_add" };
                format!("{name}({}, {}, rows = {rows})", self.expr(x[0], None), self.expr(x[1], None))
            }
            Op::IndexCompare(b) => {
                let sym = match b {
                    Binary::Gt => ">",
                    Binary::Ge => ">=",
                    Binary::Ne => "!=",
                    _ => "==",
                };
                format!("{} {sym} {}", op(0), op(1))
            }
            Op::LayerNorm { axis, epsilon } | Op::LayerNormGrad { axis, epsilon } => {
                let mut attrs = String::new();
                if axis + 1 != self.g.shape(x[0]).rank() {
                    let _ = write!(attrs, ", axis = {axis}");
                }
                if f32::from_bits(*epsilon) != 1e-5 {
                    let _ = write!(attrs, ", epsilon = {}", f32::from_bits(*epsilon));
                }
                match node.op {
                    Op::LayerNorm { .. } => format!("layer_norm({}{attrs})", self.expr(x[0], None)),
                    _ => format!("layer_norm_grad({}, {}{attrs})", self.expr(x[0], None), self.expr(x[1], None)),
                }
            }
            Op::PoolArgmax(p) => format!("max_pool_argmax({}, {})", self.expr(x[0], None), p.attrs()),
            // The argmax operand is the forward pass's own choice: `max_pool` as written.
            Op::PoolPick(p) => format!("max_pool({}, {})", self.expr(x[0], None), p.attrs()),
            Op::MaxPoolGrad(p) => {
                format!("max_pool_grad({}, {}, {})", self.expr(x[0], None), self.expr(x[1], None), p.attrs())
            }
            Op::AvgPool(p) => format!("avg_pool({}, {})", self.expr(x[0], None), p.attrs()),
            Op::AvgPoolGrad(p) => format!("avg_pool_grad({}, {})", self.expr(x[0], None), p.attrs()),
            Op::Conv2d(c) | Op::Conv2dGradInput(c) | Op::Conv2dGradFilter(c) => {
                let name = match node.op {
                    Op::Conv2d(_) => "conv2d",
                    Op::Conv2dGradInput(_) => "conv2d_grad_input",
                    _ => "conv2d_grad_filter",
                };
                let attrs = crate::ops::conv::attrs_text(c);
                format!("{name}({}, {}{attrs})", self.expr(x[0], None), self.expr(x[1], None))
            }
            Op::ConvPool(c) => {
                let name = if c.argmax { "conv2d_max_pool_argmax" } else { "conv2d_max_pool" };
                let bias = if c.bias { format!(" + {}", self.expr(x[2], None)) } else { String::new() };
                format!(
                    "{name}(conv2d({}, {}{}){bias}, {})",
                    self.expr(x[0], None),
                    self.expr(x[1], None),
                    crate::ops::conv::attrs_text(&c.conv),
                    c.pool.attrs()
                )
            }
            Op::DropoutMask { rate, .. } => format!("dropout_mask(rate = {})", num(f32::from_bits(*rate))),
            Op::Invalid(m) => format!("<invalid: {m}>"),
        }
    }
}

fn names_map(names: &[(NodeId, String)]) -> HashMap<NodeId, String> {
    let mut map = HashMap::new();
    for (id, n) in names {
        map.entry(*id).or_insert_with(|| n.clone());
    }
    map
}

/// The text of `explain()`, as a string literal.
pub fn explain(c: &Compiled) -> TokenStream {
    let lit = proc_macro2::Literal::string(&explain_text(c));
    quote::quote!(#lit)
}

/// The text of `explain()`.
pub fn explain_text(c: &Compiled) -> String {
    let m = &c.model;
    let mut out = String::new();
    let _ = writeln!(out, "model {}", m.ident);
    let _ = writeln!(out, "\ninputs");
    for i in &m.inputs {
        let _ = writeln!(out, "  {}: {}", i.name, i.shape);
    }
    let _ = writeln!(out, "\nparams");
    for p in &m.params {
        let kind = if p.frozen { "frozen" } else { "trainable" };
        let _ = writeln!(out, "  {}: {:?} ({kind})", p.name, p.dims);
    }

    // Forward, as written.
    let _ = writeln!(out, "\nforward (as written, sugar lowered to primitives)");
    let orig = Printer::new(&c.original, names_map(&c.original_names));
    for (id, name) in &c.original_names {
        if matches!(c.original.node(*id).op, Op::Input(_) | Op::Param(_)) {
            continue;
        }
        let kind = m.fetches.iter().find(|f| f.name == name.as_str()).map_or("let", |f| f.kind.keyword());
        // An item that names a node another item named first is an alias of it.
        let rhs = match orig.names.get(id) {
            Some(first) if first != name => first.clone(),
            _ => orig.expr(*id, Some(*id)),
        };
        let _ = writeln!(out, "  {kind} {name} = {rhs}    : {}", c.original.shape(*id));
    }

    let masks = crate::ops::random::masks(&c.original);
    if !masks.is_empty() {
        let _ = writeln!(out, "\ndropout (training mode only)");
        for (id, rate) in &masks {
            let users = c.original.nodes.iter().filter(|n| n.inputs.contains(id));
            for u in users {
                let on = orig.expr(u.inputs[0], None);
                let _ = writeln!(out, "  dropout({on}, rate = {}) : {}", num(*rate), c.original.shape(*id));
            }
        }
        let _ = writeln!(
            out,
            "  train_step and compute_gradients keep each element with probability 1 - rate and scale it by 1 / (1 - rate), \
             the mask drawn from the model's random stream (seeded by with_seed, saved in checkpoints); \
             every fetch and check_gradients run in inference mode and skip it"
        );
    }

    let _ = writeln!(out, "\nrewrites");
    if c.rewrites.applied.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (name, count) in &c.rewrites.applied {
        let times = if *count == 1 { String::new() } else { format!(" (x{count})") };
        let _ = writeln!(out, "  {name}{times}");
    }

    // Derivatives over the simplified graph, with shared subexpressions named.
    if let Some(loss) = m.loss().filter(|_| !c.grads.is_empty()) {
        let g = &m.graph;
        let roots: Vec<NodeId> = c.grads.iter().map(|x| x.1).collect();
        let cone = g.cone(&roots);
        let uses = g.use_counts(&cone);
        let mut names = names_map(&m.names);
        let mut temps = Vec::new();
        for &id in &cone {
            let leafish = matches!(g.node(id).op, Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::DimProduct(_));
            if uses[id] >= 2 && !leafish && !names.contains_key(&id) {
                let t = format!("t{}", temps.len() + 1);
                names.insert(id, t.clone());
                temps.push((id, t));
            }
        }
        let pr = Printer::new(g, names);
        let _ = writeln!(out, "\nbackward (reverse mode, simplified)");
        for (id, t) in &temps {
            let _ = writeln!(out, "  {t} = {}    : {}", pr.expr(*id, Some(*id)), g.shape(*id));
        }
        for (p, grad) in &c.grads {
            let _ = writeln!(out, "  d {} / d {} = {}", loss.name, m.params[*p].name, pr.expr(*grad, None));
        }
    }
    let fetches: Vec<String> = m.fetches.iter().map(|f| format!("{} {}", f.kind.keyword(), f.name)).collect();
    let _ = writeln!(out, "\nfetches: {}", fetches.join(", "));
    if m.fetches.iter().all(|f| f.kind != NodeKind::Loss) {
        let _ = writeln!(out, "(no loss: nothing to differentiate)");
    }
    out
}

/// The text of `graph_dot()`, as a string literal: every node of the simplified graph,
/// forward and backward, with inputs, params and the gradients (`d loss / d w`) filled
/// in colour so that a rendering (`dot -Tsvg`) reads at a glance.
pub fn dot(c: &Compiled) -> TokenStream {
    let m = &c.model;
    let g = &m.graph;
    let mut names = names_map(&m.names);
    let loss = m.loss().map_or_else(|| "loss".to_string(), |l| l.name.to_string());
    let grads: std::collections::HashSet<NodeId> = c.grads.iter().map(|&(_, id)| id).collect();
    for &(p, id) in &c.grads {
        names.entry(id).or_insert_with(|| format!("d {loss} / d {}", m.params[p].name));
    }
    let mut out = String::from("digraph model {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (id, node) in g.nodes.iter().enumerate() {
        let label = match &node.op {
            Op::Const(b) => num(f32::from_bits(*b)),
            Op::Unary(u) => u.name().to_string(),
            Op::Binary(b) | Op::IndexCompare(b) => b.name().to_string(),
            Op::LayerNorm { axis, .. } => format!("layer_norm axis={axis}"),
            Op::LayerNormGrad { axis, .. } => format!("layer_norm_grad axis={axis}"),
            Op::Conv2d(c) | Op::Conv2dGradInput(c) | Op::Conv2dGradFilter(c) => {
                let name = match node.op {
                    Op::Conv2d(_) => "conv2d",
                    Op::Conv2dGradInput(_) => "conv2d_grad_input",
                    _ => "conv2d_grad_filter",
                };
                let [kh, kw] = c.kernel;
                format!("{name} {kh}x{kw}{}", crate::ops::conv::attrs_text(c).replace(", ", " ").replace(" = ", "="))
            }
            Op::DropoutMask { rate, .. } => format!("dropout_mask rate={} (training only)", num(f32::from_bits(*rate))),
            Op::PoolArgmax(p) => format!("max_pool_argmax {} (first max)", p.short()),
            Op::ConvPool(c) => {
                let [kh, kw] = c.conv.kernel;
                let what = if c.argmax { "argmax (first max)" } else { "value" };
                format!("conv2d {kh}x{kw} + max_pool {} {what}", c.pool.short())
            }
            Op::PoolPick(p) => format!("max_pool {}", p.short()),
            Op::MaxPoolGrad(p) => format!("max_pool_grad {}", p.short()),
            Op::AvgPool(p) => format!("avg_pool {}", p.short()),
            Op::AvgPoolGrad(p) => format!("avg_pool_grad {}", p.short()),
            Op::GatherSum => "gather_sum".to_string(),
            Op::ScatterAdd { bags, .. } => if *bags { "scatter_add_bags" } else { "scatter_add" }.to_string(),
            other => {
                let s = format!("{other:?}");
                s.split(['(', ' ', '{']).next().unwrap_or("op").to_lowercase()
            }
        };
        let fill = match node.op {
            Op::Input(_) => ", style=filled, fillcolor=\"#dbe9f6\"",
            Op::Param(_) => ", style=filled, fillcolor=\"#fdf0c8\"",
            _ if grads.contains(&id) => ", style=filled, fillcolor=\"#f8d7d3\"",
            _ => "",
        };
        let label = match names.get(&id) {
            Some(n) => format!("{n} = {label}"),
            None => label,
        };
        let ty = match node.dtype {
            crate::ir::DType::F32 => "",
            crate::ir::DType::U32 => " u32",
            crate::ir::DType::U8 => " u8",
        };
        let _ = writeln!(out, "  n{id} [label=\"{} {}{ty}\"{fill}];", label.replace('"', "'"), node.shape);
        for &i in &node.inputs {
            let _ = writeln!(out, "  n{i} -> n{id};");
        }
    }
    out.push_str("}\n");
    let lit = proc_macro2::Literal::string(&out);
    quote::quote!(#lit)
}
