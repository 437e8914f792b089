//! Resolution, checking and lowering: from the syntax tree to the checked [`Model`].
//!
//! Every name, op, argument and shape is checked here, and every mistake is recorded
//! in the [`Diag`] with the span of the smallest offending tokens; lowering goes on
//! after an error (with the broken subexpression left out) so that all independent
//! mistakes are reported at once. Surface sugar is rewritten into primitives here:
//! `a - b` is `a + neg(b)`, `a / b` is `a * recip(b)`, `mean` is `sum / count`,
//! `square(x)` is `pow(x, 2)`, `log` is `ln`.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Ident, Lit, UnOp};

use crate::diag::{suggestion, Diag};
use crate::ir::{DType, Graph, NodeId};
use crate::model::{Fetch, InputDecl, Model, ParamDecl};
use crate::ops::{Binary, Op, Unary};
use crate::shape::{broadcast, Dim, Shape};
use crate::syntax::{DimSyntax, Item, ModelDef, NodeItem, NodeKind, OptimizerItem, ShapeSyntax};

mod call;
mod config;
mod index;
mod pool;
mod shape;

/// The most scalars one f32 array may have: `isize::MAX` bytes, the bound of every Rust
/// allocation.
pub const MAX_ELEMENTS: usize = isize::MAX as usize / 4;

/// Names that the generated API uses, so no fetch may take them.
pub const RESERVED: &[&str] = &[
    "new",
    "with_seed",
    "train_step",
    "compute_gradients",
    "compute_gradients_into",
    "apply_gradients",
    "learning_rate",
    "set_learning_rate",
    "global_step",
    "trainable_variables",
    "save",
    "load",
    "check_gradients",
    "explain",
    "graph_dot",
    "cost",
    "optimizer",
];

/// The surface ops of the language (for "did you mean").
pub const OPS: &[&str] = &[
    "matmul",
    "transpose",
    "exp",
    "ln",
    "log",
    "sqrt",
    "square",
    "abs",
    "relu",
    "sigmoid",
    "tanh",
    "softplus",
    "pow",
    "maximum",
    "minimum",
    "sum",
    "mean",
    "max",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "argmax",
    "stop_gradient",
    "one_hot",
    "gather",
    "sparse_softmax_cross_entropy",
    "layer_norm",
    "dropout",
    "max_pool",
    "avg_pool",
    "conv2d",
    "reshape",
    "flatten",
    "concat",
    "slice",
    "where",
    "select",
];

const INITIALIZERS: &[&str] = &[
    "zeros",
    "ones",
    "constant",
    "uniform",
    "normal",
    "truncated_normal",
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
];

const OPTIMIZERS: &[&str] = &["sgd", "momentum", "adam", "rmsprop", "adagrad"];

#[derive(Clone, Copy)]
enum Decl {
    Input(usize),
    Param(usize),
    Node(usize),
    /// An item that did not parse (already reported): uses of it are silent.
    Broken,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    InProgress,
    Done(Option<NodeId>),
}

struct Lowerer<'a> {
    diag: &'a mut Diag,
    graph: Graph,
    decls: HashMap<String, (Decl, Span)>,
    nodes: Vec<&'a NodeItem>,
    state: Vec<Option<State>>,
    inputs: Vec<InputDecl>,
    params: Vec<ParamDecl>,
    symbols: Vec<String>,
    names: Vec<(NodeId, String)>,
    /// The node items being lowered (for cycle paths).
    stack: Vec<usize>,
    /// How deep [`Self::expr`] is nested now.
    depth: usize,
}

/// The deepest nesting of an expression a model may have (brackets, calls, prefix
/// operators and operands together). Deeper models overflowed rustc's 8 MiB stack, which
/// runs the macro unoptimized in a debug build (1000 nested parentheses did, in
/// `tests/no_panic.rs`); no real model nests a tenth of this.
pub const MAX_NESTING: usize = 128;

/// Checks a parsed model and lowers it to the graph IR. Errors go to `diag`.
pub fn lower(def: &ModelDef, diag: &mut Diag) -> Model {
    let mut lw = Lowerer {
        diag,
        graph: Graph::new(),
        decls: HashMap::new(),
        nodes: Vec::new(),
        state: Vec::new(),
        inputs: Vec::new(),
        params: Vec::new(),
        symbols: Vec::new(),
        names: Vec::new(),
        depth: 0,
        stack: Vec::new(),
    };
    let mut optimizers: Vec<&OptimizerItem> = Vec::new();
    for name in &def.broken {
        lw.decls.entry(name.to_string()).or_insert((Decl::Broken, name.span()));
    }

    // Declarations first: items may appear in any order.
    for item in &def.items {
        match item {
            Item::Input(i) => {
                if !lw.declare(&i.name, Decl::Input(lw.inputs.len())) {
                    continue;
                }
                let shape = lw.shape(&i.shape, None);
                let dtype = match i.element.as_ref().map(|e| (e, e.to_string())) {
                    None => DType::F32,
                    Some((_, t)) if t == "f32" => DType::F32,
                    Some((_, t)) if t == "u32" => DType::U32,
                    Some((e, t)) => {
                        lw.diag.error(
                            e.span(),
                            format!("`{t}`: an input holds `f32` values (the default) or `u32` indices (`as u32`: class labels, token ids)"),
                        );
                        DType::F32
                    }
                };
                let node = lw.graph.leaf(Op::Input(lw.inputs.len()), shape.clone(), dtype, i.name.span());
                lw.names.push((node, i.name.to_string()));
                lw.inputs.push(InputDecl { name: i.name.clone(), shape, dtype, attrs: i.attrs.clone(), node });
            }
            Item::Param(p) => {
                if !lw.declare(&p.name, Decl::Param(lw.params.len())) {
                    continue;
                }
                let shape = lw.shape(&p.shape, Some(&p.name));
                let dims: Vec<usize> = shape.0.iter().map(|d| d.as_static().unwrap_or(1)).collect();
                let init = lw.init(&p.init);
                let node = lw.graph.leaf(Op::Param(lw.params.len()), Shape::of(&dims), DType::F32, p.name.span());
                lw.names.push((node, p.name.to_string()));
                lw.params.push(ParamDecl {
                    name: p.name.clone(),
                    dims,
                    init,
                    frozen: p.frozen,
                    attrs: p.attrs.clone(),
                    node,
                });
            }
            Item::Node(n) => {
                if n.kind != NodeKind::Let {
                    let name = n.name.to_string();
                    if RESERVED.contains(&name.as_str()) {
                        lw.diag.error(
                            n.name.span(),
                            format!(
                                "`{name}` is a method of every generated model; choose another name for this {}",
                                n.kind.keyword()
                            ),
                        );
                    }
                }
                if lw.declare(&n.name, Decl::Node(lw.nodes.len())) {
                    lw.nodes.push(n);
                    lw.state.push(None);
                }
            }
            Item::Optimizer(o) => optimizers.push(o),
        }
    }

    // Lower every node item (in declaration order; references lower on demand).
    let mut fetches = Vec::new();
    for idx in 0..lw.nodes.len() {
        let node = lw.lower_decl(idx);
        let item = lw.nodes[idx];
        if let Some(node) = node {
            lw.names.push((node, item.name.to_string()));
            let shape = lw.graph.shape(node).clone();
            if matches!(item.kind, NodeKind::Loss | NodeKind::Metric)
                && shape.is_scalar()
                && lw.graph.dtype(node) == DType::U32
            {
                lw.diag.error(
                    item.name.span(),
                    format!(
                        "{} `{}` is an index (u32): a {} is an f32 number; make it an `output` to return indices",
                        item.kind.keyword(),
                        item.name,
                        item.kind.keyword()
                    ),
                );
            }
            match item.kind {
                NodeKind::Loss | NodeKind::Metric if !shape.is_scalar() => {
                    lw.diag.error(
                        item.name.span(),
                        format!(
                            "{} `{}` must be a scalar, but its shape is {shape}: reduce it, e.g. with `mean(...)`",
                            item.kind.keyword(),
                            item.name
                        ),
                    );
                }
                _ => {}
            }
            if item.kind != NodeKind::Let {
                fetches.push(Fetch { kind: item.kind, name: item.name.clone(), node, attrs: item.attrs.clone() });
            }
        }
    }

    // Losses and the optimizer.
    let losses: Vec<&NodeItem> = lw.nodes.iter().copied().filter(|n| n.kind == NodeKind::Loss).collect();
    for extra in losses.iter().skip(1) {
        lw.diag.error(
            extra.name.span(),
            format!(
                "a model has exactly one loss, but `{}` is a second one (the first is `{}`); make it a metric",
                extra.name, losses[0].name
            ),
        );
    }
    for extra in optimizers.iter().skip(1) {
        lw.diag.error(extra.keyword, "a model has at most one optimizer");
    }
    let optimizer = optimizers.first().and_then(|o| lw.optimizer(o));
    if let Some(o) = optimizers.first() {
        if losses.is_empty() {
            lw.diag.error(o.keyword, "this model has an optimizer but no loss: declare one with `loss NAME = EXPR;`");
        }
        if !lw.params.is_empty() && lw.params.iter().all(|p| p.frozen) || lw.params.is_empty() {
            lw.diag.error(o.kind.span(), "the optimizer has nothing to train: the model has no trainable param");
        }
    }

    Model {
        attrs: def.attrs.clone(),
        vis: def.vis.clone(),
        ident: def.ident.clone(),
        inputs: lw.inputs,
        params: lw.params,
        fetches,
        optimizer,
        symbols: lw.symbols,
        graph: lw.graph,
        names: lw.names,
        train_loss: None,
    }
}

impl<'a> Lowerer<'a> {
    fn declare(&mut self, name: &Ident, decl: Decl) -> bool {
        let s = name.to_string();
        if s.starts_with("__") {
            self.diag.error(name.span(), format!("`{s}`: names starting with `__` are reserved for generated code"));
            return false;
        }
        if let Some((prev, _)) = self.decls.get(&s) {
            let what = match prev {
                Decl::Input(_) => "an input",
                Decl::Param(_) => "a param",
                Decl::Node(i) => self.nodes[*i].kind.keyword(),
                Decl::Broken => "declared by an item with an error",
            };
            self.diag.error(name.span(), format!("`{s}` is declared twice: it is already {what}"));
            return false;
        }
        self.decls.insert(s, (decl, name.span()));
        true
    }

    fn shape(&mut self, syntax: &ShapeSyntax, param: Option<&Ident>) -> Shape {
        let mut dims = Vec::new();
        for d in &syntax.dims {
            match d {
                DimSyntax::Static(lit) => match lit.base10_parse::<usize>() {
                    Ok(0) => {
                        self.diag.error(lit.span(), "a dimension must be at least 1");
                        dims.push(Dim::Static(1));
                    }
                    Ok(n) => dims.push(Dim::Static(n)),
                    Err(_) => {
                        self.diag.error(lit.span(), "a dimension must be a positive integer");
                        dims.push(Dim::Static(1));
                    }
                },
                DimSyntax::Symbolic(id) => {
                    let s = id.to_string();
                    if let Some(p) = param {
                        self.diag.error(
                            id.span(),
                            format!("param `{p}` has the symbolic dimension `{s}`: params need static dimensions (integers)"),
                        );
                        dims.push(Dim::Static(1));
                        continue;
                    }
                    if !self.symbols.contains(&s) {
                        self.symbols.push(s.clone());
                    }
                    dims.push(Dim::Sym(s));
                }
            }
        }
        // `param w: [4294967296, 4294967296]`: 2^64 scalars. No f32 array can have more
        // than isize::MAX bytes, and counting the elements (sizes, costs) would overflow
        // `usize`; the dimensions become 1 so that later checks see a sane shape.
        let statics = dims.iter().filter_map(|d| match d {
            Dim::Static(n) => Some(*n),
            Dim::Sym(_) => None,
        });
        if statics.clone().try_fold(1usize, |n, d| n.checked_mul(d)).is_none_or(|n| n > MAX_ELEMENTS) {
            let written: Vec<String> = statics.map(|n| n.to_string()).collect();
            self.diag.error(
                syntax.span,
                format!(
                    "this shape is too large: {} scalars are more than the {MAX_ELEMENTS} an f32 array can hold",
                    written.join(" x ")
                ),
            );
            for d in &mut dims {
                if let Dim::Static(n) = d {
                    *n = 1;
                }
            }
        }
        Shape(dims)
    }

    fn lower_decl(&mut self, idx: usize) -> Option<NodeId> {
        match self.state[idx] {
            Some(State::Done(n)) => return n,
            Some(State::InProgress) => return None,
            None => {}
        }
        self.state[idx] = Some(State::InProgress);
        self.stack.push(idx);
        let item = self.nodes[idx];
        let node = self.expr(&item.expr);
        self.stack.pop();
        if self.state[idx] == Some(State::InProgress) {
            self.state[idx] = Some(State::Done(node));
        }
        self.state[idx].and_then(|s| match s {
            State::Done(n) => n,
            State::InProgress => None,
        })
    }

    fn name(&mut self, ident: &Ident) -> Option<NodeId> {
        let s = ident.to_string();
        match self.decls.get(&s).copied() {
            Some((Decl::Input(i), _)) => Some(self.inputs[i].node),
            Some((Decl::Param(i), _)) => Some(self.params[i].node),
            Some((Decl::Broken, _)) => None,
            Some((Decl::Node(i), _)) => {
                if self.state[i] == Some(State::InProgress) {
                    let start = self.stack.iter().position(|&j| j == i).unwrap_or(0);
                    let mut path: Vec<String> =
                        self.stack[start..].iter().map(|&j| self.nodes[j].name.to_string()).collect();
                    path.push(s.clone());
                    self.diag
                        .error(ident.span(), format!("`{s}` is defined in terms of itself: {}", path.join(" -> ")));
                    // Mark done so the cycle is reported once.
                    self.state[i] = Some(State::Done(None));
                    return None;
                }
                self.lower_decl(i)
            }
            None if self.symbols.contains(&s) => {
                // A symbolic dimension used as a value: its size at call time.
                Some(self.graph.dim_product(&[Dim::Sym(s)], ident.span()))
            }
            None => {
                let names: Vec<&str> = self.decls.keys().map(String::as_str).collect();
                let hint = suggestion(&s, names);
                self.diag.error(ident.span(), format!("unknown name `{s}`{hint}"));
                None
            }
        }
    }

    /// Lowers an expression. Its nesting (calls, operators, operands) is at most
    /// [`MAX_NESTING`] deep: past that, a spanned error instead of a stack overflow that
    /// would take rustc down. A long chain `a + b + c ..` is not deep here: its left
    /// spine is lowered in a loop ([`Self::binary`]).
    fn expr(&mut self, e: &Expr) -> Option<NodeId> {
        if let Expr::Paren(syn::ExprParen { expr, .. }) | Expr::Group(syn::ExprGroup { expr, .. }) = e {
            // Not a level of its own: brackets are at most MAX_NESTING deep in the tokens
            // (`syntax::check_nesting`).
            return self.expr_at(expr);
        }
        if self.depth >= MAX_NESTING {
            self.diag.spanned(
                e,
                format!("this expression is nested more than {MAX_NESTING} levels deep: split it with `let`"),
            );
            return None;
        }
        self.depth += 1;
        let id = self.expr_at(e);
        self.depth -= 1;
        id
    }

    fn expr_at(&mut self, e: &Expr) -> Option<NodeId> {
        match e {
            Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
                let ident = p.path.get_ident().cloned()?;
                self.name(&ident)
            }
            Expr::Lit(l) => match &l.lit {
                Lit::Float(f) => match f.base10_parse::<f32>() {
                    Ok(v) => Some(self.graph.constant(v, f.span())),
                    Err(e) => {
                        self.diag.push(e);
                        None
                    }
                },
                Lit::Int(i) => match i.base10_parse::<i64>() {
                    Ok(v) => Some(self.graph.constant(v as f32, i.span())),
                    Err(e) => {
                        self.diag.push(e);
                        None
                    }
                },
                other => {
                    self.diag.spanned(other, "expected a number: tensors hold f32 values");
                    None
                }
            },
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Unary(u) => match u.op {
                UnOp::Neg(_) => {
                    let x = self.expr(&u.expr)?;
                    if self.graph.dtype(x) == DType::U32 {
                        let d = describe(&u.expr);
                        self.diag.spanned(
                            u,
                            format!(
                                "`-` on an index tensor: `{d}` is u32 {}, and arithmetic on indices is not defined; \
                                 encode it as numbers with `one_hot({d}, depth = N)`",
                                self.graph.shape(x)
                            ),
                        );
                        return None;
                    }
                    Some(self.graph.neg(x))
                }
                _ => {
                    let op = quote::ToTokens::to_token_stream(&u.op).to_string();
                    self.diag.error(
                        u.op.span(),
                        format!("unsupported operator `{op}`: the model language has `-x`, `+ - * /` and `==`"),
                    );
                    None
                }
            },
            Expr::Binary(b) => self.binary(b),
            Expr::Call(c) => self.call(c),
            Expr::MethodCall(m) => {
                self.diag.error(
                    m.method.span(),
                    format!(
                        "method calls are not supported: write `{}(...)` with the tensor as its first argument",
                        m.method
                    ),
                );
                None
            }
            Expr::Assign(a) => {
                self.diag.error(
                    a.eq_token.span(),
                    "unexpected `=`: named arguments go inside a call, e.g. `sum(x, axis = 1)`",
                );
                None
            }
            other => {
                self.diag.spanned(
                    other,
                    "unsupported expression: expected a name, a number, an op call, `-x`, `+ - * /` or `==`",
                );
                None
            }
        }
    }

    /// A binary expression. syn nests a left-associative chain `a + b - c ..` to the
    /// left: its left spine is lowered in a loop, innermost first, so that a sum of
    /// thousands of terms needs no more stack than one of two.
    fn binary(&mut self, b: &syn::ExprBinary) -> Option<NodeId> {
        let mut spine = vec![b];
        let mut left = &*b.left;
        while let Expr::Binary(inner) = left {
            spine.push(inner);
            left = &*inner.left;
        }
        let mut acc = self.expr(left);
        for b in spine.into_iter().rev() {
            acc = self.binary_step(b, acc);
        }
        acc
    }

    /// `b` with its left operand already lowered (`None`: it had an error).
    fn binary_step(&mut self, b: &syn::ExprBinary, l: Option<NodeId>) -> Option<NodeId> {
        let symbol = match b.op {
            BinOp::Add(_) => "+",
            BinOp::Sub(_) => "-",
            BinOp::Mul(_) => "*",
            BinOp::Div(_) => "/",
            BinOp::Eq(_) => "==",
            BinOp::Ne(_) => "!=",
            BinOp::Lt(_) => "<",
            BinOp::Le(_) => "<=",
            BinOp::Gt(_) => ">",
            BinOp::Ge(_) => ">=",
            _ => {
                let op = quote::ToTokens::to_token_stream(&b.op).to_string();
                self.diag.spanned(
                    b.op,
                    format!("unsupported operator `{op}`: the model language has `+ - * /` and the comparisons `== != < <= > >=`"),
                );
                return None;
            }
        };
        let r = self.expr(&b.right);
        let (l, r) = (l?, r?);
        if self.graph.dtype(l) == DType::U32 || self.graph.dtype(r) == DType::U32 {
            return self.index_binary(b, symbol, l, r);
        }
        let (sl, sr) = (self.graph.shape(l).clone(), self.graph.shape(r).clone());
        if let Err(why) = broadcast(&sl, &sr) {
            self.diag.spanned(
                b.op,
                format!(
                    "`{symbol}`: shapes do not broadcast: `{}` is {sl} but `{}` is {sr}: {why}",
                    describe(&b.left),
                    describe(&b.right)
                ),
            );
            return None;
        }
        let g = &mut self.graph;
        Some(match b.op {
            BinOp::Add(_) => g.add2(l, r),
            BinOp::Sub(_) => {
                let nr = g.neg(r);
                g.add2(l, nr)
            }
            BinOp::Mul(_) => g.mul(l, r),
            BinOp::Div(_) => {
                let rr = g.unary(Unary::Recip, r);
                g.mul(l, rr)
            }
            // The comparisons give 1.0 or 0.0; `a < b` is `b > a`, `a <= b` is `b >= a`.
            BinOp::Ne(_) => g.add(Op::Binary(Binary::Ne), vec![l, r], b.op.span()),
            BinOp::Lt(_) => g.add(Op::Binary(Binary::Gt), vec![r, l], b.op.span()),
            BinOp::Le(_) => g.add(Op::Binary(Binary::Ge), vec![r, l], b.op.span()),
            BinOp::Gt(_) => g.add(Op::Binary(Binary::Gt), vec![l, r], b.op.span()),
            BinOp::Ge(_) => g.add(Op::Binary(Binary::Ge), vec![l, r], b.op.span()),
            _ => g.add(Op::Binary(Binary::Eq), vec![l, r], b.op.span()),
        })
    }
}

/// A short description of an expression for messages: names as written, calls as
/// `f(...)` when long.
pub fn describe(e: &Expr) -> String {
    let s = describe_full(e, 0);
    if s.chars().count() <= 40 {
        return s;
    }
    match e {
        Expr::Call(c) => format!("{}(...)", describe_full(&c.func, 0)),
        _ => "this expression".to_string(),
    }
}

/// The text of `e`, `..` below a depth of 16: [`describe`] keeps 40 characters, and a
/// long sum's left spine is as deep as it is long (no stack for that).
fn describe_full(e: &Expr, depth: usize) -> String {
    if depth > 16 {
        return "..".to_string();
    }
    let describe_full = |e: &Expr| describe_full(e, depth + 1);
    match e {
        Expr::Path(p) => p.path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::"),
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.to_string(),
            Lit::Float(f) => f.to_string(),
            Lit::Bool(b) => b.value.to_string(),
            _ => "literal".to_string(),
        },
        Expr::Paren(p) => format!("({})", describe_full(&p.expr)),
        Expr::Group(g) => describe_full(&g.expr),
        Expr::Unary(u) => format!("-{}", describe_full(&u.expr)),
        Expr::Binary(b) => {
            let op = match b.op {
                BinOp::Add(_) => "+",
                BinOp::Sub(_) => "-",
                BinOp::Mul(_) => "*",
                BinOp::Div(_) => "/",
                BinOp::Eq(_) => "==",
                BinOp::Ne(_) => "!=",
                BinOp::Lt(_) => "<",
                BinOp::Le(_) => "<=",
                BinOp::Gt(_) => ">",
                BinOp::Ge(_) => ">=",
                _ => "?",
            };
            format!("{} {op} {}", describe_full(&b.left), describe_full(&b.right))
        }
        Expr::Call(c) => {
            let args: Vec<String> = c.args.iter().map(describe_full).collect();
            format!("{}({})", describe_full(&c.func), args.join(", "))
        }
        Expr::Assign(a) => format!("{} = {}", describe_full(&a.left), describe_full(&a.right)),
        Expr::Array(a) => {
            let items: Vec<String> = a.elems.iter().map(describe_full).collect();
            format!("[{}]", items.join(", "))
        }
        _ => "expression".to_string(),
    }
}

#[cfg(test)]
mod tests;
