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
use syn::{BinOp, Expr, ExprCall, Ident, Lit, UnOp};

use crate::diag::{suggestion, Diag};
use crate::ir::{Graph, NodeId};
use crate::model::{Fetch, InitSpec, InputDecl, Model, OptimizerKind, OptimizerSpec, ParamDecl};
use crate::ops::{Binary, Op, Unary};
use crate::shape::{broadcast, normalize_axis, Dim, Shape};
use crate::syntax::{arg_from_expr, Arg, DimSyntax, Item, ModelDef, NodeItem, NodeKind, OptimizerItem, ShapeSyntax};

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
}

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
                let node = lw.graph.leaf(Op::Input(lw.inputs.len()), shape.clone(), i.name.span());
                lw.names.push((node, i.name.to_string()));
                lw.inputs.push(InputDecl { name: i.name.clone(), shape, attrs: i.attrs.clone(), node });
            }
            Item::Param(p) => {
                if !lw.declare(&p.name, Decl::Param(lw.params.len())) {
                    continue;
                }
                let shape = lw.shape(&p.shape, Some(&p.name));
                let dims: Vec<usize> = shape.0.iter().map(|d| d.as_static().unwrap_or(1)).collect();
                let init = lw.init(&p.init);
                let node = lw.graph.leaf(Op::Param(lw.params.len()), Shape::of(&dims), p.name.span());
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

    fn expr(&mut self, e: &Expr) -> Option<NodeId> {
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

    fn binary(&mut self, b: &syn::ExprBinary) -> Option<NodeId> {
        let symbol = match b.op {
            BinOp::Add(_) => "+",
            BinOp::Sub(_) => "-",
            BinOp::Mul(_) => "*",
            BinOp::Div(_) => "/",
            BinOp::Eq(_) => "==",
            _ => {
                let op = quote::ToTokens::to_token_stream(&b.op).to_string();
                self.diag
                    .spanned(b.op, format!("unsupported operator `{op}`: the model language has `+ - * /` and `==`"));
                return None;
            }
        };
        let l = self.expr(&b.left);
        let r = self.expr(&b.right);
        let (l, r) = (l?, r?);
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
            _ => g.add(Op::Binary(Binary::Eq), vec![l, r], b.op.span()),
        })
    }

    fn call(&mut self, c: &ExprCall) -> Option<NodeId> {
        let ident = match &*c.func {
            Expr::Path(p) if p.path.get_ident().is_some() => p.path.get_ident().cloned()?,
            other => {
                self.diag.spanned(other, "expected an op name, e.g. `matmul`");
                return None;
            }
        };
        let name = ident.to_string();
        let sig = match signature(&name) {
            Some(sig) => sig,
            None => {
                let hint = suggestion(&name, OPS.iter().copied());
                let what = if INITIALIZERS.contains(&name.as_str()) {
                    ": it is an initializer; use it after `=` in a `param` item".to_string()
                } else if hint.is_empty() {
                    // No plausible typo: list what there is, as for initializers and
                    // optimizers.
                    format!(" (the ops are {})", OPS.join(", "))
                } else {
                    hint
                };
                self.diag.error(ident.span(), format!("unknown op `{name}`{what}"));
                return None;
            }
        };
        let args: Vec<Arg> = c.args.iter().cloned().map(arg_from_expr).collect();
        let bound = self.bind(&name, &ident, sig, &args)?;
        // Lower tensor operands (all of them, to report every error).
        let mut operands = Vec::new();
        for e in &bound.tensors {
            operands.push(self.expr(e));
        }
        let operands: Vec<NodeId> = operands.into_iter().collect::<Option<_>>()?;
        self.apply(&name, &ident, c, &bound, &operands)
    }

    fn bind<'e>(&mut self, name: &str, ident: &Ident, sig: Sig, args: &'e [Arg]) -> Option<Bound<'e>> {
        let mut tensors: Vec<Option<&'e Expr>> = vec![None; sig.tensors.len()];
        let mut attrs: Vec<Option<&'e Expr>> = vec![None; sig.attrs.len()];
        let mut ok = true;
        let mut positional = 0;
        for arg in args {
            match &arg.name {
                None => {
                    if positional < tensors.len() {
                        tensors[positional] = Some(&arg.value);
                    } else if positional - tensors.len() < attrs.len() {
                        attrs[positional - tensors.len()] = Some(&arg.value);
                    } else {
                        self.diag.spanned(
                            &arg.value,
                            format!(
                                "`{name}` takes {} argument{}: {}",
                                sig.arity(),
                                plural(sig.arity()),
                                sig.describe()
                            ),
                        );
                        ok = false;
                    }
                    positional += 1;
                }
                Some(n) => {
                    let key = n.to_string();
                    let slot = if let Some(i) = sig.tensors.iter().position(|t| *t == key) {
                        &mut tensors[i]
                    } else if let Some(i) = sig.attrs.iter().position(|(a, _)| *a == key) {
                        &mut attrs[i]
                    } else {
                        let all = sig.tensors.iter().copied().chain(sig.attrs.iter().map(|(a, _)| *a));
                        let hint = suggestion(&key, all);
                        self.diag.error(
                            n.span(),
                            format!("`{name}` has no argument `{key}`{hint}; it takes {}", sig.describe()),
                        );
                        ok = false;
                        continue;
                    };
                    if slot.is_some() {
                        self.diag.error(n.span(), format!("`{name}`: argument `{key}` is given twice"));
                        ok = false;
                    }
                    *slot = Some(&arg.value);
                }
            }
        }
        let missing: Vec<&str> =
            sig.tensors.iter().zip(&tensors).filter(|(_, t)| t.is_none()).map(|(n, _)| *n).collect();
        if !missing.is_empty() {
            self.diag.error(
                ident.span(),
                format!(
                    "`{name}` takes {} tensor argument{} ({}), but `{}` {} missing",
                    sig.tensors.len(),
                    plural(sig.tensors.len()),
                    sig.tensors.join(", "),
                    missing.join("`, `"),
                    if missing.len() == 1 { "is" } else { "are" }
                ),
            );
            ok = false;
        }
        let mut values = Vec::new();
        for ((attr, kind), e) in sig.attrs.iter().zip(&attrs) {
            let v = match e {
                None => None,
                Some(e) => match kind.parse(e) {
                    Some(v) => Some((v, e.span())),
                    None => {
                        let what = if *attr == "exponent" { "the exponent".to_string() } else { format!("`{attr}`") };
                        self.diag.spanned(e, format!("`{name}`: {what} must be {}", kind.expected()));
                        ok = false;
                        None
                    }
                },
            };
            values.push(v);
        }
        ok.then(|| Bound { tensors: tensors.into_iter().flatten().collect(), attrs: values })
    }

    fn axis(
        &mut self,
        op: &str,
        value: Option<(AttrValue, Span)>,
        rank: usize,
        operand: &str,
        shape: &Shape,
    ) -> Result<Option<usize>, ()> {
        let Some((AttrValue::Int(a), span)) = value else { return Ok(None) };
        match normalize_axis(a, rank) {
            Some(ax) => Ok(Some(ax)),
            None => {
                let range = if rank == 0 {
                    "a scalar has no axes".to_string()
                } else {
                    format!("valid axes are {} to {}", -(rank as i64), rank - 1)
                };
                self.diag.error(
                    span,
                    format!("`{op}`: axis {a} is out of range for `{operand}` of shape {shape} ({range})"),
                );
                Err(())
            }
        }
    }

    fn apply(&mut self, name: &str, ident: &Ident, call: &ExprCall, b: &Bound, x: &[NodeId]) -> Option<NodeId> {
        let span = ident.span();
        let d0 = describe(b.tensors[0]);
        let s0 = self.graph.shape(x[0]).clone();
        let flag = |v: &Option<(AttrValue, Span)>| matches!(v, Some((AttrValue::Bool(true), _)));
        let unary = |u: Unary| Op::Unary(u);
        let g = &mut self.graph;
        let op = match name {
            "exp" => unary(Unary::Exp),
            "ln" | "log" => unary(Unary::Ln),
            "sqrt" => unary(Unary::Sqrt),
            "square" => unary(Unary::Pow(2f32.to_bits())),
            "abs" => unary(Unary::Abs),
            "relu" => unary(Unary::Relu),
            "sigmoid" => unary(Unary::Sigmoid),
            "tanh" => unary(Unary::Tanh),
            "softplus" => unary(Unary::Softplus),
            "stop_gradient" => Op::StopGradient,
            "pow" => {
                let Some((AttrValue::Number(k), _)) = b.attrs[0] else {
                    self.diag.error(span, "`pow` takes the exponent as a number literal: `pow(x, 3)`");
                    return None;
                };
                unary(Unary::Pow((k as f32).to_bits()))
            }
            "maximum" | "minimum" | "sigmoid_cross_entropy" => {
                let s1 = g.shape(x[1]).clone();
                if let Err(why) = broadcast(&s0, &s1) {
                    self.diag.spanned(
                        b.tensors[1],
                        format!(
                            "`{name}`: shapes do not broadcast: `{d0}` is {s0} but `{}` is {s1}: {why}",
                            describe(b.tensors[1])
                        ),
                    );
                    return None;
                }
                match name {
                    "maximum" => Op::Binary(Binary::Maximum),
                    "minimum" => Op::Binary(Binary::Minimum),
                    _ => Op::SigmoidXent,
                }
            }
            "matmul" => {
                let s1 = g.shape(x[1]).clone();
                let d1 = describe(b.tensors[1]);
                for (i, (s, d)) in [(&s0, &d0), (&s1, &d1)].into_iter().enumerate() {
                    if s.rank() != 2 {
                        self.diag.spanned(
                            b.tensors[i],
                            format!("matmul: `{d}` must be a matrix [rows, columns], but it is {s}; matmul takes [m, k] x [k, n]"),
                        );
                        return None;
                    }
                }
                if s0.0[1] != s1.0[0] {
                    self.diag.spanned(
                        b.tensors[1],
                        format!(
                            "matmul: inner dimensions differ: `{d0}` is {s0} but `{d1}` is {s1} ({} != {})",
                            s0.0[1], s1.0[0]
                        ),
                    );
                    return None;
                }
                Op::MatMul { ta: false, tb: false }
            }
            "transpose" => {
                if s0.rank() != 2 {
                    self.diag.spanned(b.tensors[0], format!("transpose: `{d0}` must be a matrix, but it is {s0}"));
                    return None;
                }
                Op::Transpose
            }
            "sum" | "mean" => {
                let axis = self.axis(name, b.attrs[0], s0.rank(), &d0, &s0).ok()?;
                let keepdims = flag(&b.attrs[1]);
                let axes: Vec<usize> = match axis {
                    Some(a) => vec![a],
                    None => (0..s0.rank()).collect(),
                };
                let g = &mut self.graph;
                let sum = g.add(Op::Sum { axes: axes.clone(), keepdims }, vec![x[0]], span);
                if name == "sum" {
                    return Some(sum);
                }
                let dims: Vec<Dim> = axes.iter().map(|&a| s0.0[a].clone()).collect();
                let count = g.dim_product(&dims, span);
                let inv = g.unary(Unary::Recip, count);
                return Some(g.mul(sum, inv));
            }
            "max" | "argmax" => {
                let axis = self.axis(name, b.attrs[0], s0.rank(), &d0, &s0).ok()?;
                let axis = match axis {
                    Some(a) => a,
                    None if s0.rank() == 1 => 0,
                    None => {
                        self.diag.error(
                            call.paren_token.span.join(),
                            format!("`{name}` needs `axis = k` for `{d0}` of shape {s0}"),
                        );
                        return None;
                    }
                };
                let keepdims = flag(&b.attrs[1]);
                if name == "max" {
                    Op::Max { axis, keepdims }
                } else {
                    Op::Argmax { axis, keepdims }
                }
            }
            "softmax" | "log_softmax" => {
                if s0.rank() == 0 {
                    self.diag.spanned(
                        b.tensors[0],
                        format!("`{name}`: `{d0}` is a scalar; softmax needs an axis to normalize over"),
                    );
                    return None;
                }
                let axis = self.axis(name, b.attrs[0], s0.rank(), &d0, &s0).ok()?.unwrap_or(s0.rank() - 1);
                if name == "softmax" {
                    Op::Softmax(axis)
                } else {
                    Op::LogSoftmax(axis)
                }
            }
            "softmax_cross_entropy" => {
                let s1 = g.shape(x[1]).clone();
                if s0.rank() == 0 || s0 != s1 {
                    self.diag.spanned(
                        b.tensors[1],
                        format!(
                            "softmax_cross_entropy: logits and labels must have the same shape [.., classes]: `{d0}` is {s0} but `{}` is {s1}",
                            describe(b.tensors[1])
                        ),
                    );
                    return None;
                }
                Op::SoftmaxXent
            }
            _ => unreachable!("every op of `signature` is handled in `apply`"),
        };
        match self.graph.try_add(op, x.to_vec(), span) {
            Ok(id) => Some(id),
            Err(message) => {
                self.diag.error(span, format!("`{name}`: {message}"));
                None
            }
        }
    }

    fn init(&mut self, call: &crate::syntax::CallSyntax) -> InitSpec {
        let name = call.name.to_string();
        let (params, make): (&[Param], MakeInit) = match name.as_str() {
            "zeros" => (&[], |_| InitSpec::Zeros),
            "ones" => (&[], |_| InitSpec::Ones),
            "glorot_uniform" => (&[], |_| InitSpec::GlorotUniform),
            "glorot_normal" => (&[], |_| InitSpec::GlorotNormal),
            "he_normal" => (&[], |_| InitSpec::HeNormal),
            "constant" => (&[("value", None)], |v| InitSpec::Constant(v[0])),
            "uniform" => (&[("low", Some(-0.05)), ("high", Some(0.05))], |v| InitSpec::Uniform(v[0], v[1])),
            "normal" => (&[("mean", Some(0.0)), ("std", Some(0.05))], |v| InitSpec::Normal(v[0], v[1])),
            "truncated_normal" => {
                (&[("mean", Some(0.0)), ("std", Some(0.05))], |v| InitSpec::TruncatedNormal(v[0], v[1]))
            }
            _ => {
                let hint = suggestion(&name, INITIALIZERS.iter().copied());
                self.diag.error(
                    call.name.span(),
                    format!("unknown initializer `{name}` (the initializers are {}){hint}", INITIALIZERS.join(", ")),
                );
                return InitSpec::Zeros;
            }
        };
        let cfg = self.config_args(&name, call.args.as_deref().unwrap_or(&[]), call.span, params, &[]);
        let spec = make(&cfg.values);
        match spec {
            InitSpec::Uniform(lo, hi) if lo >= hi && cfg.valid[0] && cfg.valid[1] => {
                self.diag.error(cfg.spans[1], format!("uniform: `low` ({lo}) must be less than `high` ({hi})"));
            }
            InitSpec::Normal(_, s) | InitSpec::TruncatedNormal(_, s) if s <= 0.0 && cfg.valid[1] => {
                self.diag.error(cfg.spans[1], format!("{name}: `std` must be positive, found {s}"));
            }
            _ => {}
        }
        if cfg.ok {
            spec
        } else {
            InitSpec::Zeros
        }
    }

    /// Binds `name = number` / positional number arguments of an initializer or
    /// optimizer, plus boolean flags. Every value is returned (defaults where missing or
    /// broken), with its span and whether it is usable, so that callers can check ranges
    /// of every good value even when another one is wrong.
    fn config_args(
        &mut self,
        what: &str,
        args: &[Arg],
        span: Span,
        params: &[(&str, Option<f32>)],
        flags: &[(&str, bool)],
    ) -> ConfigArgs {
        let mut values: Vec<Option<f32>> = vec![None; params.len()];
        let mut valid = vec![true; params.len()];
        let mut spans = vec![span; params.len()];
        let mut set_flags: Vec<Option<bool>> = vec![None; flags.len()];
        let mut ok = true;
        let no_args = params.is_empty() && flags.is_empty();
        for (pos, arg) in args.iter().enumerate() {
            let key = match &arg.name {
                _ if no_args => {
                    self.diag.spanned(&arg.value, format!("`{what}` takes no arguments"));
                    ok = false;
                    continue;
                }
                Some(n) => n.to_string(),
                None if pos < params.len() && args[..pos].iter().all(|a| a.name.is_none()) => params[pos].0.to_string(),
                None => {
                    let names: Vec<&str> = params.iter().map(|p| p.0).chain(flags.iter().map(|f| f.0)).collect();
                    self.diag.spanned(
                        &arg.value,
                        format!("`{what}`: unexpected positional argument; name it, one of {}", names.join(", ")),
                    );
                    ok = false;
                    continue;
                }
            };
            let span_of = arg.name.as_ref().map_or(arg.value.span(), |n| n.span());
            if let Some(i) = params.iter().position(|p| p.0 == key) {
                if values[i].is_some() || !valid[i] {
                    self.diag.error(span_of, format!("`{what}`: argument `{key}` is given twice"));
                    ok = false;
                }
                spans[i] = arg.value.span();
                match AttrKind::Number.parse(&arg.value) {
                    Some(AttrValue::Number(v)) if v.is_finite() => values[i] = Some(v as f32),
                    _ => {
                        self.diag.spanned(&arg.value, format!("`{what}`: `{key}` must be a number literal"));
                        ok = false;
                        valid[i] = false;
                    }
                }
            } else if let Some(i) = flags.iter().position(|f| f.0 == key) {
                match AttrKind::Bool.parse(&arg.value) {
                    Some(AttrValue::Bool(v)) => set_flags[i] = Some(v),
                    _ => {
                        self.diag.spanned(&arg.value, format!("`{what}`: `{key}` must be `true` or `false`"));
                        ok = false;
                    }
                }
            } else {
                let all: Vec<&str> = params.iter().map(|p| p.0).chain(flags.iter().map(|f| f.0)).collect();
                let hint = suggestion(&key, all.iter().copied());
                let takes = if all.is_empty() {
                    "it takes no arguments".to_string()
                } else {
                    format!("it takes {}", all.join(", "))
                };
                self.diag.error(span_of, format!("`{what}` has no argument `{key}` ({takes}){hint}"));
                ok = false;
            }
        }
        let mut out = Vec::new();
        for (i, (p, default)) in params.iter().enumerate() {
            match (values[i], default) {
                (Some(v), _) | (None, &Some(v)) => out.push(v),
                (None, None) => {
                    if valid[i] {
                        self.diag.error(span, format!("`{what}` needs `{p}`, e.g. `{what}({p} = ...)`"));
                    }
                    ok = false;
                    valid[i] = false;
                    out.push(0.0);
                }
            }
        }
        let flags = flags.iter().zip(set_flags).map(|((_, d), v)| v.unwrap_or(*d)).collect();
        ConfigArgs { values: out, valid, spans, flags, ok }
    }

    fn optimizer(&mut self, o: &OptimizerItem) -> Option<OptimizerSpec> {
        let kind = o.kind.to_string();
        const COMMON: [(&str, Option<f32>); 2] = [("clip_norm", Some(f32::INFINITY)), ("weight_decay", Some(0.0))];
        let (own, flags): (Vec<Param>, Vec<Flag>) = match kind.as_str() {
            "sgd" => (vec![("learning_rate", None)], vec![]),
            "momentum" => (vec![("learning_rate", None), ("momentum", Some(0.9))], vec![("nesterov", false)]),
            "adam" => (
                vec![
                    ("learning_rate", Some(0.001)),
                    ("beta1", Some(0.9)),
                    ("beta2", Some(0.999)),
                    ("epsilon", Some(1e-8)),
                ],
                vec![],
            ),
            "rmsprop" => (
                vec![
                    ("learning_rate", Some(0.01)),
                    ("rho", Some(0.99)),
                    ("epsilon", Some(1e-8)),
                    ("momentum", Some(0.0)),
                ],
                vec![("centered", false)],
            ),
            "adagrad" => (
                vec![("learning_rate", Some(0.01)), ("initial_accumulator_value", Some(0.0)), ("epsilon", Some(1e-10))],
                vec![],
            ),
            _ => {
                let hint = suggestion(&kind, OPTIMIZERS.iter().copied());
                self.diag.error(
                    o.kind.span(),
                    format!("unknown optimizer `{kind}` (the optimizers are {}){hint}", OPTIMIZERS.join(", ")),
                );
                return None;
            }
        };
        let n_own = own.len();
        let params: Vec<(&str, Option<f32>)> = own.into_iter().chain(COMMON).collect();
        let cfg = self.config_args(&kind, &o.args, o.paren_span, &params, &flags);
        let (v, f) = (&cfg.values, &cfg.flags);
        let mut ok = cfg.ok;
        // Checks one value's range, when that value itself is usable.
        let mut check = |i: usize, good: bool, msg: String, lw: &mut Self| {
            if cfg.valid[i] && !good {
                lw.diag.error(cfg.spans[i], msg);
                ok = false;
            }
        };
        let in_unit = |x: f32| (0.0..1.0).contains(&x);
        check(0, v[0] > 0.0, format!("`{kind}`: learning_rate must be positive, found {}", v[0]), self);
        let clip = v[n_own];
        check(n_own, clip > 0.0, format!("`{kind}`: clip_norm must be positive, found {clip}"), self);
        let wd = v[n_own + 1];
        check(n_own + 1, wd >= 0.0, format!("`{kind}`: weight_decay must not be negative, found {wd}"), self);
        let kind_spec = match kind.as_str() {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => {
                check(1, in_unit(v[1]), format!("momentum: `momentum` must be in [0, 1), found {}", v[1]), self);
                OptimizerKind::Momentum { momentum: v[1], nesterov: f[0] }
            }
            "adam" => {
                check(1, in_unit(v[1]), format!("adam: beta1 must be in [0, 1), found {}", v[1]), self);
                check(2, in_unit(v[2]), format!("adam: beta2 must be in [0, 1), found {}", v[2]), self);
                check(3, v[3] > 0.0, format!("adam: epsilon must be positive, found {}", v[3]), self);
                OptimizerKind::Adam { beta1: v[1], beta2: v[2], epsilon: v[3] }
            }
            "rmsprop" => {
                check(1, in_unit(v[1]), format!("rmsprop: rho must be in [0, 1), found {}", v[1]), self);
                check(2, v[2] > 0.0, format!("rmsprop: epsilon must be positive, found {}", v[2]), self);
                check(3, in_unit(v[3]), format!("rmsprop: momentum must be in [0, 1), found {}", v[3]), self);
                OptimizerKind::RmsProp { rho: v[1], epsilon: v[2], momentum: v[3], centered: f[0] }
            }
            _ => {
                check(
                    1,
                    v[1] >= 0.0,
                    format!("adagrad: initial_accumulator_value must not be negative, found {}", v[1]),
                    self,
                );
                check(2, v[2] > 0.0, format!("adagrad: epsilon must be positive, found {}", v[2]), self);
                OptimizerKind::Adagrad { initial_accumulator_value: v[1], epsilon: v[2] }
            }
        };
        ok.then(|| OptimizerSpec {
            kind: kind_spec,
            learning_rate: v[0],
            clip_norm: clip.is_finite().then_some(clip),
            weight_decay: wd,
            span: o.keyword,
        })
    }
}

/// A numeric configuration argument and its default (`None`: required).
type Param = (&'static str, Option<f32>);
/// Builds an initializer from its bound arguments.
type MakeInit = fn(&[f32]) -> InitSpec;
/// A boolean configuration argument and its default.
type Flag = (&'static str, bool);

/// Bound configuration arguments (see `Lowerer::config_args`).
struct ConfigArgs {
    values: Vec<f32>,
    valid: Vec<bool>,
    spans: Vec<Span>,
    flags: Vec<bool>,
    ok: bool,
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[derive(Clone, Copy)]
enum AttrKind {
    Int,
    Bool,
    Number,
}

#[derive(Clone, Copy, Debug)]
enum AttrValue {
    Int(i64),
    Bool(bool),
    Number(f64),
}

impl AttrKind {
    fn expected(self) -> &'static str {
        match self {
            AttrKind::Int => "an integer literal (negative axes count from the end)",
            AttrKind::Bool => "`true` or `false`",
            AttrKind::Number => "a number literal",
        }
    }

    fn parse(self, e: &Expr) -> Option<AttrValue> {
        let (neg, inner) = match e {
            Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => (true, &*u.expr),
            other => (false, other),
        };
        let Expr::Lit(l) = inner else { return None };
        match (self, &l.lit) {
            (AttrKind::Int, Lit::Int(i)) => {
                i.base10_parse::<i64>().ok().map(|v| AttrValue::Int(if neg { -v } else { v }))
            }
            (AttrKind::Bool, Lit::Bool(b)) if !neg => Some(AttrValue::Bool(b.value)),
            (AttrKind::Number, Lit::Int(i)) => {
                i.base10_parse::<f64>().ok().map(|v| AttrValue::Number(if neg { -v } else { v }))
            }
            (AttrKind::Number, Lit::Float(f)) => {
                f.base10_parse::<f64>().ok().map(|v| AttrValue::Number(if neg { -v } else { v }))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
struct Sig {
    tensors: &'static [&'static str],
    attrs: &'static [(&'static str, AttrKind)],
}

impl Sig {
    fn arity(&self) -> usize {
        self.tensors.len() + self.attrs.len()
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.tensors.iter().map(|t| t.to_string()).collect();
        parts.extend(self.attrs.iter().map(|(a, _)| format!("{a} = ...")));
        format!("({})", parts.join(", "))
    }
}

struct Bound<'e> {
    tensors: Vec<&'e Expr>,
    attrs: Vec<Option<(AttrValue, Span)>>,
}

fn signature(name: &str) -> Option<Sig> {
    const A: &[&str] = &["a"];
    const AB: &[&str] = &["a", "b"];
    const XENT: &[&str] = &["logits", "labels"];
    const AXIS_KEEP: &[(&str, AttrKind)] = &[("axis", AttrKind::Int), ("keepdims", AttrKind::Bool)];
    Some(match name {
        "exp" | "ln" | "log" | "sqrt" | "square" | "abs" | "relu" | "sigmoid" | "tanh" | "softplus"
        | "stop_gradient" | "transpose" => Sig { tensors: A, attrs: &[] },
        "pow" => Sig { tensors: A, attrs: &[("exponent", AttrKind::Number)] },
        "matmul" | "maximum" | "minimum" => Sig { tensors: AB, attrs: &[] },
        "sum" | "mean" | "max" | "argmax" => Sig { tensors: A, attrs: AXIS_KEEP },
        "softmax" | "log_softmax" => Sig { tensors: A, attrs: &[("axis", AttrKind::Int)] },
        "softmax_cross_entropy" | "sigmoid_cross_entropy" => Sig { tensors: XENT, attrs: &[] },
        _ => return None,
    })
}

/// A short description of an expression for messages: names as written, calls as
/// `f(...)` when long.
pub fn describe(e: &Expr) -> String {
    let s = describe_full(e);
    if s.chars().count() <= 40 {
        return s;
    }
    match e {
        Expr::Call(c) => format!("{}(...)", describe_full(&c.func)),
        _ => "this expression".to_string(),
    }
}

fn describe_full(e: &Expr) -> String {
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
                _ => "?",
            };
            format!("{} {op} {}", describe_full(&b.left), describe_full(&b.right))
        }
        Expr::Call(c) => {
            let args: Vec<String> = c.args.iter().map(describe_full).collect();
            format!("{}({})", describe_full(&c.func), args.join(", "))
        }
        Expr::Assign(a) => format!("{} = {}", describe_full(&a.left), describe_full(&a.right)),
        _ => "expression".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::Diag;
    use proc_macro2::TokenStream;

    /// Checks a model given as source text; returns (message, line, column) per error.
    fn errors(src: &str) -> Vec<(String, usize, usize)> {
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

    const HEAD: &str = "struct M {\n    input x: [batch, 784];\n    input y: [batch, 10];\n";

    #[test]
    fn matmul_errors_point_at_the_offending_argument() {
        let e = errors(&format!("{HEAD}    param w: [10, 784] = zeros;\n    output o = matmul(x, w);\n}}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("matmul: inner dimensions differ: `x` is [batch, 784] but `w` is [10, 784]"), "{e:?}");
        assert_eq!((e[0].1, e[0].2), (5, 25), "{e:?}");
    }

    #[test]
    fn broadcast_errors_point_at_the_operator_and_show_both_shapes() {
        let e = errors(&format!("{HEAD}    output o = x + y;\n}}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("`x` is [batch, 784] but `y` is [batch, 10]"), "{e:?}");
        assert_eq!((e[0].1, e[0].2), (4, 17), "{e:?}");
    }

    #[test]
    fn axis_errors_point_at_the_axis() {
        let e = errors(&format!("{HEAD}    output o = sum(x, axis = -3);\n}}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("axis -3 is out of range"), "{e:?}");
        assert_eq!((e[0].1, e[0].2), (4, 29), "{e:?}");
    }

    #[test]
    fn an_unknown_op_without_a_close_match_lists_the_ops() {
        let src = format!(
            "{HEAD}    param w: [784, 10] = zeros;\n    loss l = mean(frobnicate(matmul(x, w)));\n    optimizer sgd(learning_rate = 0.1);\n}}"
        );
        let e = errors(&src);
        let messages: Vec<&str> = e.iter().map(|m| m.0.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("unknown op `frobnicate` (the ops are ") && m.contains("softmax")),
            "{messages:?}"
        );
    }

    #[test]
    fn every_independent_error_is_reported_with_suggestions() {
        let e = errors(&format!(
            "{HEAD}    let a = softmx(x);\n    let b = sum(yy);\n    param p: [batch] = zeros;\n    loss l = x;\n}}"
        ));
        let messages: Vec<&str> = e.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(e.len(), 4, "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("unknown op `softmx`; did you mean `softmax`?")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("unknown name `yy`; did you mean `y`?")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("symbolic dimension `batch`")), "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("loss `l` must be a scalar, but its shape is [batch, 784]")),
            "{messages:?}"
        );
    }

    #[test]
    fn no_gradient_errors_name_the_param_and_the_blocking_op() {
        let e = errors(&format!(
            "{HEAD}    param w: [784, 10] = zeros;\n    loss l = mean(argmax(matmul(x, w), axis = 1));\n    optimizer sgd(learning_rate = 0.1);\n}}"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("param `w` gets no gradient") && e[0].0.contains("`argmax`"), "{e:?}");
        assert_eq!((e[0].1, e[0].2), (5, 18), "{e:?}");
    }
}
