//! Op calls: binding positional and named arguments to an op's signature, and applying
//! each surface op's shape checks and lowering (sugar such as `mean` becomes primitives
//! here). Each op family's shape rule, gradient and emission live in `ops/`.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprCall, Ident, Lit, UnOp};

use super::{describe, Lowerer, INITIALIZERS, OPS};
use crate::diag::suggestion;
use crate::ir::NodeId;
use crate::ops::{Binary, Op, Unary};
use crate::shape::{broadcast, normalize_axis, Dim, Shape};
use crate::syntax::{arg_from_expr, Arg};

impl Lowerer<'_> {
    pub(super) fn call(&mut self, c: &ExprCall) -> Option<NodeId> {
        let ident = match &*c.func {
            Expr::Path(p) if p.path.get_ident().is_some() => p.path.get_ident().cloned()?,
            other => {
                self.diag.spanned(other, "expected an op name, e.g. `matmul`");
                return None;
            }
        };
        // `where` is a Rust keyword: the parser hands it over as the raw `r#where`.
        let name = ident.to_string().trim_start_matches("r#").to_string();
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
        if name == "concat" {
            return self.concat(&ident, &bound);
        }
        // Lower tensor operands (all of them, to report every error).
        let mut operands = Vec::new();
        for e in &bound.tensors {
            operands.push(self.expr(e));
        }
        let operands: Vec<NodeId> = operands.into_iter().collect::<Option<_>>()?;
        self.apply(&name, &ident, c, &bound, &operands)
    }

    pub(super) fn bind<'e>(&mut self, name: &str, ident: &Ident, sig: Sig, args: &'e [Arg]) -> Option<Bound<'e>> {
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

    pub(super) fn axis(
        &mut self,
        op: &str,
        value: &Option<(AttrValue, Span)>,
        rank: usize,
        operand: &str,
        shape: &Shape,
    ) -> Result<Option<usize>, ()> {
        let Some((AttrValue::Int(a), span)) = value else { return Ok(None) };
        let (a, span) = (*a, *span);
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

    pub(super) fn apply(
        &mut self,
        name: &str,
        ident: &Ident,
        call: &ExprCall,
        b: &Bound,
        x: &[NodeId],
    ) -> Option<NodeId> {
        let span = ident.span();
        let d0 = describe(b.tensors[0]);
        let s0 = self.graph.shape(x[0]).clone();
        let flag = |v: &Option<(AttrValue, Span)>| matches!(v, Some((AttrValue::Bool(true), _)));
        let unary = |u: Unary| Op::Unary(u);
        self.check_dtypes(name, b, x)?;
        if matches!(name, "one_hot" | "gather" | "sparse_softmax_cross_entropy") {
            return self.index_op(name, span, b, x);
        }
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
                let axes = self.axes(name, &b.attrs[0], &d0, &s0).ok()?;
                let keepdims = flag(&b.attrs[1]);
                let axes: Vec<usize> = axes.unwrap_or_else(|| (0..s0.rank()).collect());
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
            "max" if matches!(b.attrs[0], Some((AttrValue::Ints(_), _))) => {
                let axes = self.axes(name, &b.attrs[0], &d0, &s0).ok()??;
                Op::Max { axes, keepdims: flag(&b.attrs[1]) }
            }
            "max" | "argmax" => {
                let axis = self.axis(name, &b.attrs[0], s0.rank(), &d0, &s0).ok()?;
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
                    Op::Max { axes: vec![axis], keepdims }
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
                let axis = self.axis(name, &b.attrs[0], s0.rank(), &d0, &s0).ok()?.unwrap_or(s0.rank() - 1);
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
            "layer_norm" => {
                if s0.rank() == 0 {
                    self.diag.spanned(
                        b.tensors[0],
                        format!("`layer_norm`: `{d0}` is a scalar; it needs an axis to normalize over"),
                    );
                    return None;
                }
                let axis = self.axis(name, &b.attrs[0], s0.rank(), &d0, &s0).ok()?.unwrap_or(s0.rank() - 1);
                let epsilon = match b.attrs[1] {
                    None => 1e-5f32,
                    Some((AttrValue::Number(e), sp)) => {
                        let e32 = e as f32;
                        if !(e32 > 0.0 && e32.is_finite()) {
                            self.diag.error(
                                sp,
                                format!("`layer_norm`: `epsilon` must be a positive number (it keeps `1 / sqrt(var + epsilon)` finite for a constant row), not {e}"),
                            );
                            return None;
                        }
                        e32
                    }
                    Some(_) => return None,
                };
                Op::LayerNorm { axis, epsilon: epsilon.to_bits() }
            }
            "dropout" => {
                let Some((AttrValue::Number(r), sp)) = b.attrs[0] else {
                    self.diag
                        .error(call.paren_token.span.join(), "`dropout` needs its drop rate: `dropout(a, rate = 0.5)`");
                    return None;
                };
                let rate = r as f32;
                if !(0.0..1.0).contains(&r) || rate >= 1.0 {
                    self.diag.error(
                        sp,
                        format!(
                            "`dropout`: `rate` is the probability of dropping an element, 0 <= rate < 1, not {r}{}",
                            if r >= 1.0 {
                                " (rate 1 would drop every element and scale the rest by 1 / 0)"
                            } else {
                                ""
                            }
                        ),
                    );
                    return None;
                }
                if rate == 0.0 {
                    return Some(x[0]);
                }
                let g = &mut self.graph;
                let index = g.nodes.len();
                let mask =
                    g.leaf(Op::DropoutMask { index, rate: rate.to_bits() }, s0.clone(), crate::ir::DType::F32, span);
                return Some(g.add(Op::Binary(Binary::Mul), vec![x[0], mask], span));
            }
            "reshape" | "flatten" | "slice" | "where" | "select" => return self.shape_op(name, ident, call, b, x),
            "max_pool" | "avg_pool" => return self.pool_op(name, ident, call, b, x),
            "conv2d" => return self.conv2d(span, b, x),
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
}

impl Lowerer<'_> {
    /// `conv2d(x, w, stride, padding, dilation)`: every check of the contract's row, each
    /// error on the argument at fault. E.g. `conv2d(x, w)` with `x: [batch, 28, 28, 1]`
    /// and `w: [5, 5, 3, 32]` is a channel mismatch pointing at `w`.
    fn conv2d(&mut self, span: Span, b: &Bound, x: &[NodeId]) -> Option<NodeId> {
        let (dx, dw) = (describe(b.tensors[0]), describe(b.tensors[1]));
        let (sx, sw) = (self.graph.shape(x[0]).clone(), self.graph.shape(x[1]).clone());
        let stride = self.conv_pair("stride", &b.attrs[0]);
        let dilation = self.conv_pair("dilation", &b.attrs[2]);
        let same = match &b.attrs[1] {
            None => Some(false),
            Some((AttrValue::Str(v), _)) if v == "same" || v == "valid" => Some(v == "same"),
            Some((AttrValue::Str(v), sp)) => {
                // TensorFlow's `tf.nn.conv2d` spells them "SAME" / "VALID"; Keras lowercase.
                let hint = match v.to_lowercase().as_str() {
                    l @ ("same" | "valid") => format!("; did you mean \"{l}\"?"),
                    _ => String::new(),
                };
                self.diag.error(
                    *sp,
                    format!("`conv2d`: `padding` must be \"same\" or \"valid\" (padded as TensorFlow pads), not {v:?}{hint}"),
                );
                None
            }
            Some(_) => None,
        };
        // The image must be NHWC with static spatial sizes and channels: the kernels and
        // their buffers are chosen for them at compile time; only the batch may vary.
        // E.g. `input x: [batch, 784]` (flat images) or `[batch, h, 28, 1]`.
        let image = if sx.rank() != 4 {
            self.diag.spanned(
                b.tensors[0],
                format!("`conv2d`: `{dx}` must be a batch of NHWC images [n, height, width, channels], but it is {sx}"),
            );
            None
        } else {
            self.conv_static(b.tensors[0], &dx, &sx, &[(1, "height"), (2, "width"), (3, "channels (its last axis)")])
        };
        // The kernel is HWIO: `[kh, kw, in_channels, out_channels]`, all static.
        let kernel = if sw.rank() != 4 {
            self.diag.spanned(
                b.tensors[1],
                format!("`conv2d`: the kernel `{dw}` must be HWIO [height, width, in_channels, out_channels], but it is {sw}"),
            );
            None
        } else {
            self.conv_static(
                b.tensors[1],
                &dw,
                &sw,
                &[(0, "height"), (1, "width"), (2, "input channels"), (3, "output channels")],
            )
        };
        let (image, kernel, stride, dilation, same) = (image?, kernel?, stride?, dilation?, same?);
        if image[2] != kernel[2] {
            self.diag.spanned(
                b.tensors[1],
                format!(
                    "`conv2d`: channel mismatch: `{dx}` {sx} has {} channel{} (its last axis) but the kernel `{dw}` {sw} takes {} (its third axis)",
                    image[2],
                    plural(image[2]),
                    kernel[2]
                ),
            );
            return None;
        }
        if kernel[0] == 0 || kernel[1] == 0 {
            self.diag.spanned(b.tensors[1], format!("`conv2d`: the kernel `{dw}` {sw} has an empty window"));
            return None;
        }
        let c = crate::ops::conv::Conv {
            image: [image[0], image[1]],
            kernel: [kernel[0], kernel[1]],
            channels: [image[2], kernel[3]],
            stride,
            dilation,
            same,
        };
        // "valid" keeps only windows inside the image: e.g. a 5x5 kernel on a 4x4 image,
        // or a 3x3 kernel with dilation 3 (a 7x7 window) on a 6x6 one, has none.
        if c.output().is_none() {
            let dilated = if dilation == [1, 1] {
                String::new()
            } else {
                format!(" (dilated by {}: {}x{})", pair_text(dilation), c.window(0), c.window(1))
            };
            self.diag.spanned(
                b.tensors[1],
                format!(
                    "`conv2d`: the {}x{} window of `{dw}`{dilated} is larger than the {}x{} image of `{dx}` with padding \"valid\" (no output pixel); pad with `padding = \"same\"` or use a smaller kernel",
                    kernel[0], kernel[1], image[0], image[1]
                ),
            );
            return None;
        }
        match self.graph.try_add(Op::Conv2d(c), x.to_vec(), span) {
            Ok(id) => Some(id),
            Err(message) => {
                self.diag.error(span, format!("`conv2d`: {message}"));
                None
            }
        }
    }

    /// `stride` or `dilation`: one integer for both axes or `[rows, columns]`, each at
    /// least 1 (e.g. `stride = 0` is rejected: the window would never move).
    fn conv_pair(&mut self, what: &str, v: &Option<(AttrValue, Span)>) -> Option<[usize; 2]> {
        let (vals, sp) = match v {
            None => return Some([1, 1]),
            Some((AttrValue::Int(i), sp)) => (vec![*i, *i], *sp),
            Some((AttrValue::Ints(v), sp)) => (v.clone(), *sp),
            Some(_) => return None,
        };
        if vals.len() != 2 {
            self.diag.error(
                sp,
                format!("`conv2d`: `{what}` is one integer or a pair `[rows, columns]`, not a list of {}", vals.len()),
            );
            return None;
        }
        if let Some(bad) = vals.iter().find(|&&v| v < 1) {
            let why = if what == "stride" { "a stride of 0 never moves the window" } else { "1 means adjacent taps" };
            self.diag.error(sp, format!("`conv2d`: `{what}` must be at least 1 ({why}), not {bad}"));
            return None;
        }
        Some([vals[0] as usize, vals[1] as usize])
    }

    /// The static sizes of `axes` of a rank-4 operand, or an error naming the first
    /// symbolic one (e.g. `input x: [batch, h, 28, 1]`: "the height of `x` ...").
    fn conv_static(&mut self, e: &Expr, d: &str, s: &Shape, axes: &[(usize, &str)]) -> Option<Vec<usize>> {
        let mut out = Vec::new();
        for &(a, what) in axes {
            match &s.0[a] {
                Dim::Static(v) => out.push(*v),
                Dim::Sym(n) => {
                    self.diag.spanned(
                        e,
                        format!("`conv2d`: the {what} of `{d}` {s} must be a number, not the symbolic `{n}`: only the batch may vary"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn pair_text(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("[{}, {}]", v[0], v[1])
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[derive(Clone, Copy)]
pub(super) enum AttrKind {
    Int,
    Bool,
    Number,
    /// An axis or a list of axes: `axis = 1`, `axis = [1, 2]`.
    Axes,
    /// A reshape's target: `[batch, 28, 28]`, `[-1, 784]`.
    Dims,
    /// A size for both spatial axes or one per axis: `size = 2`, `stride = [2, 1]`
    /// (parsed as [`AttrValue::Int`] or [`AttrValue::Ints`]; the op checks the count).
    Pair,
    /// A string literal: `padding = "same"`.
    Str,
}

/// One dimension of a reshape's target as written.
#[derive(Clone, Debug)]
pub(super) enum DimArg {
    /// An integer (`-1`: inferred).
    Int(i64, Span),
    /// A symbolic dimension's name.
    Name(Ident),
}

#[derive(Clone, Debug)]
pub(super) enum AttrValue {
    Int(i64),
    Bool(bool),
    Number(f64),
    /// A list of axes (`axis = [1, 2]`; a single axis is [`AttrValue::Int`]).
    Ints(Vec<i64>),
    Dims(Vec<DimArg>),
    Str(String),
}

impl AttrKind {
    pub(super) fn expected(self) -> &'static str {
        match self {
            AttrKind::Int => "an integer literal (negative axes count from the end)",
            AttrKind::Bool => "`true` or `false`",
            AttrKind::Number => "a number literal",
            AttrKind::Axes => "an integer literal or a list of them, e.g. `axis = [1, 2]` (negative axes count from the end)",
            AttrKind::Pair => "an integer literal or a pair of them `[rows, columns]`, e.g. `size = 2` or `size = [2, 3]`",
            AttrKind::Str => "a string literal, e.g. `padding = \"same\"`",
            AttrKind::Dims => "a list of dimensions in brackets: integers, symbolic names, or one `-1` to infer, e.g. `[batch, 28, 28]`",
        }
    }

    pub(super) fn parse(self, e: &Expr) -> Option<AttrValue> {
        match (self, e) {
            (AttrKind::Axes, Expr::Array(list)) => {
                let ints: Option<Vec<i64>> = list
                    .elems
                    .iter()
                    .map(|e| match AttrKind::Int.parse(e) {
                        Some(AttrValue::Int(i)) => Some(i),
                        _ => None,
                    })
                    .collect();
                return ints.filter(|v| !v.is_empty()).map(AttrValue::Ints);
            }
            (AttrKind::Axes, e) => return AttrKind::Int.parse(e),
            (AttrKind::Pair, e) => return AttrKind::Axes.parse(e),
            (AttrKind::Str, Expr::Lit(l)) => {
                return match &l.lit {
                    Lit::Str(v) => Some(AttrValue::Str(v.value())),
                    _ => None,
                }
            }
            (AttrKind::Str, _) => return None,
            (AttrKind::Dims, Expr::Array(list)) => {
                let dims: Option<Vec<DimArg>> = list
                    .elems
                    .iter()
                    .map(|e| match e {
                        Expr::Path(p) if p.qself.is_none() => p.path.get_ident().cloned().map(DimArg::Name),
                        e => match AttrKind::Int.parse(e) {
                            Some(AttrValue::Int(i)) => Some(DimArg::Int(i, e.span())),
                            _ => None,
                        },
                    })
                    .collect();
                return dims.map(AttrValue::Dims);
            }
            (AttrKind::Dims, _) => return None,
            _ => {}
        }
        let (neg, inner) = match e {
            Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => (true, &*u.expr),
            other => (false, other),
        };
        let Expr::Lit(l) = inner else { return None };
        match (self, &l.lit) {
            (AttrKind::Axes | AttrKind::Dims | AttrKind::Pair | AttrKind::Str, _) => None,
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
pub(super) struct Sig {
    pub(super) tensors: &'static [&'static str],
    pub(super) attrs: &'static [(&'static str, AttrKind)],
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

pub(super) struct Bound<'e> {
    pub(super) tensors: Vec<&'e Expr>,
    pub(super) attrs: Vec<Option<(AttrValue, Span)>>,
}

pub(super) fn signature(name: &str) -> Option<Sig> {
    const A: &[&str] = &["a"];
    const AB: &[&str] = &["a", "b"];
    const XENT: &[&str] = &["logits", "labels"];
    const AXIS_KEEP: &[(&str, AttrKind)] = &[("axis", AttrKind::Int), ("keepdims", AttrKind::Bool)];
    const AXES_KEEP: &[(&str, AttrKind)] = &[("axis", AttrKind::Axes), ("keepdims", AttrKind::Bool)];
    Some(match name {
        "exp" | "ln" | "log" | "sqrt" | "square" | "abs" | "relu" | "sigmoid" | "tanh" | "softplus"
        | "stop_gradient" | "transpose" => Sig { tensors: A, attrs: &[] },
        "pow" => Sig { tensors: A, attrs: &[("exponent", AttrKind::Number)] },
        "matmul" | "maximum" | "minimum" => Sig { tensors: AB, attrs: &[] },
        "sum" | "mean" | "max" => Sig { tensors: A, attrs: AXES_KEEP },
        "argmax" => Sig { tensors: A, attrs: AXIS_KEEP },
        "reshape" | "flatten" | "concat" | "slice" | "where" | "select" => return super::shape::signature(name),
        "max_pool" | "avg_pool" => return super::pool::signature(name),
        "softmax" | "log_softmax" => Sig { tensors: A, attrs: &[("axis", AttrKind::Int)] },
        "softmax_cross_entropy" | "sigmoid_cross_entropy" | "sparse_softmax_cross_entropy" => {
            Sig { tensors: XENT, attrs: &[] }
        }
        "one_hot" => Sig { tensors: &["ids"], attrs: &[("depth", AttrKind::Int)] },
        "gather" => Sig { tensors: &["table", "ids"], attrs: &[] },
        "layer_norm" => Sig { tensors: A, attrs: &[("axis", AttrKind::Int), ("epsilon", AttrKind::Number)] },
        "dropout" => Sig { tensors: A, attrs: &[("rate", AttrKind::Number)] },
        "conv2d" => Sig {
            tensors: &["x", "w"],
            attrs: &[("stride", AttrKind::Pair), ("padding", AttrKind::Str), ("dilation", AttrKind::Pair)],
        },
        _ => return None,
    })
}
