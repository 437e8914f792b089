//! The shape ops' surface: `reshape`, `flatten`, `concat`, `slice`, `where`/`select`,
//! and lists of axes for the reductions. Each checks its operands with a message that
//! names them and points at the offending tokens, then builds the primitives of
//! `ops/shape.rs`. `flatten` is sugar over `reshape`.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprCall, Ident};

use super::call::{AttrKind, AttrValue, Bound, DimArg, Sig};
use super::{describe, Lowerer};
use crate::diag::suggestion;
use crate::ir::{DType, NodeId};
use crate::ops::shape::{count_text, monomial};
use crate::ops::Op;
use crate::shape::{broadcast, normalize_axis, Dim, Shape};

/// The signatures of the shape ops.
pub(super) fn signature(name: &str) -> Option<Sig> {
    Some(match name {
        "reshape" => Sig { tensors: &["a"], attrs: &[("shape", AttrKind::Dims)] },
        "flatten" => Sig { tensors: &["a"], attrs: &[] },
        "concat" => Sig { tensors: &["values"], attrs: &[("axis", AttrKind::Int)] },
        "slice" => {
            Sig { tensors: &["a"], attrs: &[("axis", AttrKind::Int), ("start", AttrKind::Int), ("end", AttrKind::Int)] }
        }
        "where" | "select" => Sig { tensors: &["cond", "a", "b"], attrs: &[] },
        _ => return None,
    })
}

impl Lowerer<'_> {
    /// `axis = k` or `axis = [i, j]` for a reduction: the normalized axes, sorted; `None`
    /// when no axis is given.
    pub(super) fn axes(
        &mut self,
        op: &str,
        value: &Option<(AttrValue, Span)>,
        operand: &str,
        shape: &Shape,
    ) -> Result<Option<Vec<usize>>, ()> {
        let (list, span) = match value {
            None => return Ok(None),
            Some((AttrValue::Int(a), span)) => (vec![*a], *span),
            Some((AttrValue::Ints(v), span)) => (v.clone(), *span),
            Some(_) => return Ok(None),
        };
        let rank = shape.rank();
        let mut axes = Vec::with_capacity(list.len());
        for a in list {
            let Some(ax) = normalize_axis(a, rank) else {
                let range = if rank == 0 {
                    "a scalar has no axes".to_string()
                } else {
                    format!("valid axes are {} to {}", -(rank as i64), rank - 1)
                };
                self.diag.error(
                    span,
                    format!("`{op}`: axis {a} is out of range for `{operand}` of shape {shape} ({range})"),
                );
                return Err(());
            };
            if axes.contains(&ax) {
                self.diag.error(
                    span,
                    format!("`{op}`: axis {ax} is listed twice (axes {a} and {ax} are the same axis of {shape})"),
                );
                return Err(());
            }
            axes.push(ax);
        }
        axes.sort_unstable();
        Ok(Some(axes))
    }

    /// `concat([a, b, ..], axis = k)`.
    pub(super) fn concat(&mut self, ident: &Ident, b: &Bound) -> Option<NodeId> {
        let span = ident.span();
        let Expr::Array(list) = b.tensors[0] else {
            self.diag
                .spanned(b.tensors[0], "`concat` takes its tensors as a list in brackets: `concat([a, b], axis = 1)`");
            return None;
        };
        if list.elems.is_empty() {
            self.diag.spanned(b.tensors[0], "`concat` needs at least one tensor in its list");
            return None;
        }
        let mut operands = Vec::new();
        for e in &list.elems {
            operands.push(self.expr(e));
        }
        let operands: Vec<NodeId> = operands.into_iter().collect::<Option<_>>()?;
        let elems: Vec<&Expr> = list.elems.iter().collect();
        let s0 = self.graph.shape(operands[0]).clone();
        let d0 = describe(elems[0]);
        if b.attrs[0].is_none() {
            self.diag.error(span, "`concat` needs `axis = k`: the axis the tensors are joined along");
            return None;
        }
        if s0.rank() == 0 {
            self.diag.spanned(elems[0], format!("`concat`: `{d0}` is a scalar; concat joins tensors along an axis"));
            return None;
        }
        let axis = self.axis("concat", &b.attrs[0], s0.rank(), &d0, &s0).ok()??;
        let t0 = self.graph.dtype(operands[0]);
        for (e, &x) in elems.iter().zip(&operands).skip(1) {
            let s = self.graph.shape(x).clone();
            let d = describe(e);
            // concat([ids, x], axis = 1) with `ids` u32 and `x` f32: one tensor holds one
            // element type.
            if self.graph.dtype(x) != t0 {
                self.diag.spanned(e, mixed("concat", (&d0, t0, &s0), (&d, self.graph.dtype(x), &s), "joined"));
                return None;
            }
            if s.rank() != s0.rank() {
                self.diag.spanned(
                    e,
                    format!("`concat`: `{d}` is {s} but `{d0}` is {s0}: the tensors must have the same rank"),
                );
                return None;
            }
            if let Some(k) = (0..s.rank()).find(|&k| k != axis && s.0[k] != s0.0[k]) {
                self.diag.spanned(
                    e,
                    format!(
                        "`concat`: `{d}` is {s} but `{d0}` is {s0}: they differ in axis {k} ({} != {}), but only the concat axis {axis} may differ",
                        s.0[k], s0.0[k]
                    ),
                );
                return None;
            }
        }
        if operands.len() > 1 {
            for (e, &x) in elems.iter().zip(&operands) {
                if let Dim::Sym(n) = &self.graph.shape(x).0[axis] {
                    self.diag.spanned(
                        e,
                        format!(
                            "`concat`: axis {axis} of `{}` is the symbolic dimension `{n}`; the joined axis would be a sum such as `{n} + ...`, which is not one dimension: concatenate along a static axis",
                            describe(e)
                        ),
                    );
                    return None;
                }
            }
        }
        self.add_checked("concat", span, Op::Concat { axis }, operands)
    }

    /// `reshape`, `flatten`, `slice`, `where`/`select`.
    pub(super) fn shape_op(
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
        match name {
            "reshape" => {
                let Some((AttrValue::Dims(dims), dspan)) = &b.attrs[0] else {
                    self.diag.error(
                        call.paren_token.span.join(),
                        "`reshape` needs the target shape: `reshape(x, [batch, 28, 28])` (one `-1` is inferred)",
                    );
                    return None;
                };
                let to = self.reshape_target(&d0, &s0, dims, *dspan)?;
                let (nf, sf) = monomial(&s0);
                let (nt, st) = monomial(&to);
                if sf == st && nf != nt {
                    self.diag.error(
                        *dspan,
                        format!(
                            "`reshape`: `{d0}` is {s0}, {} elements, but {to} has {}: a reshape keeps the element count",
                            count_text(nf, &sf),
                            count_text(nt, &st)
                        ),
                    );
                    return None;
                }
                self.add_checked(name, span, Op::Reshape(to), vec![x[0]])
            }
            "flatten" => {
                let to = match s0.rank() {
                    0 => {
                        self.diag
                            .spanned(b.tensors[0], format!("`flatten`: `{d0}` is a scalar; flatten takes [n, ..]"));
                        return None;
                    }
                    1 => Shape(vec![s0.0[0].clone(), Dim::Static(1)]),
                    _ => {
                        let rest = Shape(s0.0[1..].to_vec());
                        let (n, syms) = monomial(&rest);
                        let d = match (n, syms.as_slice()) {
                            (n, []) => Dim::Static(n as usize),
                            (1, [s]) => Dim::Sym(s.clone()),
                            _ => {
                                self.diag.spanned(
                                    b.tensors[0],
                                    format!(
                                        "`flatten`: `{d0}` is {s0}; its flattened axis would be {}, which is not one dimension (a number or one symbolic name): reshape it explicitly",
                                        count_text(n, &syms)
                                    ),
                                );
                                return None;
                            }
                        };
                        Shape(vec![s0.0[0].clone(), d])
                    }
                };
                self.add_checked(name, span, Op::Reshape(to), vec![x[0]])
            }
            "slice" => self.slice(call, b, x[0], &d0, &s0),
            _ => {
                // where / select
                let (s1, s2) = (self.graph.shape(x[1]).clone(), self.graph.shape(x[2]).clone());
                let ab = match broadcast(&s1, &s2) {
                    Ok(s) => s,
                    Err(why) => {
                        self.diag.spanned(
                            b.tensors[2],
                            format!(
                                "`{name}`: the branches do not broadcast: `{}` is {s1} but `{}` is {s2}: {why}",
                                describe(b.tensors[1]),
                                describe(b.tensors[2])
                            ),
                        );
                        return None;
                    }
                };
                // where(c, ids, 0.0) with `ids` u32: the branches' element types differ.
                let (t1, t2) = (self.graph.dtype(x[1]), self.graph.dtype(x[2]));
                if t1 != t2 {
                    let (d1, d2) = (describe(b.tensors[1]), describe(b.tensors[2]));
                    self.diag.spanned(b.tensors[2], mixed(name, (&d1, t1, &s1), (&d2, t2, &s2), "picked from"));
                    return None;
                }
                if let Err(why) = broadcast(&s0, &ab) {
                    self.diag.spanned(
                        b.tensors[0],
                        format!("`{name}`: the condition `{d0}` is {s0}, which does not broadcast with the branches' {ab}: {why}"),
                    );
                    return None;
                }
                self.add_checked(name, span, Op::Select, x.to_vec())
            }
        }
    }

    /// The target of a reshape: literal and symbolic dimensions, and one `-1` inferred
    /// from the operand's element count (as a monomial: `[batch, 784] -> [-1, 28, 28]`
    /// infers `batch`).
    fn reshape_target(&mut self, d0: &str, s0: &Shape, dims: &[DimArg], dspan: Span) -> Option<Shape> {
        let mut out: Vec<Option<Dim>> = Vec::new();
        let mut infer: Option<Span> = None;
        let mut ok = true;
        for d in dims {
            match d {
                DimArg::Int(-1, sp) => {
                    if infer.is_some() {
                        self.diag
                            .error(*sp, "`reshape`: only one dimension can be `-1` (inferred); write the others out");
                        ok = false;
                    }
                    infer = Some(*sp);
                    out.push(None);
                }
                DimArg::Int(n, sp) if *n >= 1 && *n as u64 <= super::MAX_ELEMENTS as u64 => {
                    out.push(Some(Dim::Static(*n as usize)));
                    let _ = sp;
                }
                DimArg::Int(n, sp) => {
                    self.diag.error(
                        *sp,
                        format!("`reshape`: {n} is not a dimension: a dimension is at least 1, or `-1` to infer it"),
                    );
                    ok = false;
                }
                DimArg::Name(id) => {
                    let s = id.to_string();
                    if self.symbols.contains(&s) {
                        out.push(Some(Dim::Sym(s)));
                    } else {
                        let hint = suggestion(&s, self.symbols.iter().map(String::as_str));
                        self.diag.error(
                            id.span(),
                            format!("`reshape`: unknown dimension `{s}`: a symbolic dimension of a reshape must be one an input declares{hint}"),
                        );
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        let Some(at) = out.iter().position(Option::is_none) else {
            return Some(Shape(out.into_iter().flatten().collect()));
        };
        let known = Shape(out.iter().flatten().cloned().collect());
        let ((nf, mut sf), (nt, st)) = (monomial(s0), monomial(&known));
        let mut rest_ok = nt != 0 && nf % nt == 0;
        for s in &st {
            match sf.iter().position(|x| x == s) {
                Some(i) => {
                    sf.remove(i);
                }
                None => rest_ok = false,
            }
        }
        let n = nf.checked_div(nt).unwrap_or(0);
        let inferred = match (rest_ok, n, sf.as_slice()) {
            (true, n, []) => Some(Dim::Static(n as usize)),
            (true, 1, [s]) => Some(Dim::Sym(s.clone())),
            _ => None,
        };
        let Some(inferred) = inferred else {
            let what = if rest_ok {
                format!(
                    "it would be {}, which is not one dimension (a number or one symbolic name)",
                    count_text(n, &sf)
                )
            } else {
                format!("{} is not a multiple of {}", count_text(nf, &monomial(s0).1), count_text(nt, &st))
            };
            self.diag.error(
                infer.unwrap_or(dspan),
                format!(
                    "`reshape`: the `-1` cannot be inferred from `{d0}` of shape {s0}: {what}; write the dimension out"
                ),
            );
            return None;
        };
        out[at] = Some(inferred);
        Some(Shape(out.into_iter().flatten().collect()))
    }

    /// `slice(a, axis = k, start = s, end = e)`: `start` defaults to 0 and `end` to the
    /// axis' size; negative values count from the end. The axis must be static.
    fn slice(&mut self, call: &ExprCall, b: &Bound, x: NodeId, d0: &str, s0: &Shape) -> Option<NodeId> {
        let span = call.func.span();
        if s0.rank() == 0 {
            self.diag.spanned(b.tensors[0], format!("`slice`: `{d0}` is a scalar; a slice takes a range of an axis"));
            return None;
        }
        let axis = match self.axis("slice", &b.attrs[0], s0.rank(), d0, s0).ok()? {
            Some(a) => a,
            None if s0.rank() == 1 => 0,
            None => {
                self.diag
                    .error(call.paren_token.span.join(), format!("`slice` needs `axis = k` for `{d0}` of shape {s0}"));
                return None;
            }
        };
        let Dim::Static(d) = s0.0[axis] else {
            self.diag.spanned(
                b.tensors[0],
                format!(
                    "`slice`: axis {axis} of `{d0}` ({s0}) is the symbolic dimension `{}`, bound at call time; a slice needs a static axis",
                    s0.0[axis]
                ),
            );
            return None;
        };
        let bound = |v: &Option<(AttrValue, Span)>, default: i64| match v {
            Some((AttrValue::Int(i), sp)) => (*i, Some(*sp)),
            _ => (default, None),
        };
        let (start, ssp) = bound(&b.attrs[1], 0);
        let (end, esp) = bound(&b.attrs[2], d as i64);
        let norm = |v: i64| if v < 0 { v + d as i64 } else { v };
        let (s, e) = (norm(start), norm(end));
        let here = esp.or(ssp).unwrap_or(span);
        if !(0..d as i64).contains(&s) {
            self.diag.error(
                ssp.unwrap_or(here),
                format!("`slice`: start {start} is out of range for axis {axis} of `{d0}` ({s0}, size {d}; valid starts are {} to {})", -(d as i64), d - 1),
            );
            return None;
        }
        if e > d as i64 || e <= s {
            let why = if e > d as i64 {
                format!("end {end} is past the end of axis {axis} of `{d0}` ({s0}, size {d})")
            } else {
                format!("the range {start}..{end} of axis {axis} of `{d0}` ({s0}, size {d}) is empty: the end must come after the start")
            };
            self.diag.error(here, format!("`slice`: {why}"));
            return None;
        }
        self.add_checked("slice", call.func.span(), Op::Slice { axis, start: s as usize, end: e as usize }, vec![x])
    }

    fn add_checked(&mut self, name: &str, span: Span, op: Op, inputs: Vec<NodeId>) -> Option<NodeId> {
        match self.graph.try_add(op, inputs, span) {
            Ok(id) => Some(id),
            Err(message) => {
                self.diag.error(span, format!("`{name}`: {message}"));
                None
            }
        }
    }
}

/// Why an index tensor and an f32 tensor cannot meet in one `concat` or `where`.
fn mixed(op: &str, a: (&str, DType, &Shape), b: (&str, DType, &Shape), verb: &str) -> String {
    let ((da, ta, sa), (db, tb, sb)) = (a, b);
    let ids = if ta == DType::U32 { da } else { db };
    format!(
        "`{op}`: `{da}` is {ta} {sa} but `{db}` is {tb} {sb}: a tensor holds one element type, so index tensors (u32) \
         and numbers (f32; a number literal too) cannot be {verb} together; give indices on both sides, or encode \
         the indices as numbers with `one_hot({ids}, depth = N)`"
    )
}

#[cfg(test)]
mod tests {
    use crate::diag::Diag;
    use proc_macro2::TokenStream;

    /// (message, line, column) per error of a model given as source text.
    fn errors(body: &str) -> Vec<(String, usize, usize)> {
        let src = format!("struct M {{\n    input x: [batch, 784];\n    input y: [batch, 10];\n{body}\n}}");
        let tokens: TokenStream = src.parse().expect("test sources lex");
        let diag: Diag = crate::check(tokens);
        diag.errors().iter().map(|e| (e.to_string(), e.span().start().line, e.span().start().column)).collect()
    }

    fn one(body: &str, want: &str) -> (usize, usize) {
        let e = errors(body);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains(want), "{e:?}");
        (e[0].1, e[0].2)
    }

    #[test]
    fn good_shape_ops_check() {
        let e = errors(
            "    output a = reshape(x, [batch, 28, 28]);\n    output b = reshape(x, [-1, 28, 28]);\n    output c = flatten(reshape(x, [batch, 28, -1]));\n    output d = concat([x, y, x], axis = 1);\n    output s = slice(x, axis = 1, start = -10);\n    output w = where(x > 0.0, x, 0.0) + select(x != 1.0, 1.0, x);\n    output m = max(reshape(x, [batch, 28, 28]), axis = [1, 2]) + sum(y, axis = [0, 1]);",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn reshape_errors_say_why() {
        assert_eq!(
            one(
                "    output a = reshape(x, [batch, 28, 27]);",
                "784 * batch elements, but [batch, 28, 27] has 756 * batch"
            ),
            (4, 26)
        );
        one("    output a = reshape(x, [-1, -1, 28]);", "only one dimension can be `-1`");
        one("    output a = reshape(x, [-1, 30]);", "784 * batch is not a multiple of 30");
        one("    output a = reshape(x, [28, -1]);", "it would be 28 * batch, which is not one dimension");
        one("    output a = reshape(x, [bach, 784]);", "an input declares; did you mean `batch`?");
        one("    output a = reshape(x, [0, 784]);", "0 is not a dimension");
        one("    output a = reshape(x);", "`reshape` needs the target shape");
        one("    output a = reshape(x, 784);", "must be a list of dimensions");
        // [batch, 784] -> [batch, 28, batch] is checked at run time (batch = 28 holds), but
        // its flattened axis 28 * batch is not one dimension.
        one(
            "    output a = flatten(reshape(x, [batch, 28, batch]));",
            "would be 28 * batch, which is not one dimension",
        );
    }

    #[test]
    fn shape_ops_move_indices_and_keep_their_type() {
        let e = errors(
            "    input ids: [batch, 3] as u32;\n    input jd: [batch, 3] as u32;\n    param emb: [9, 2] = zeros;\n    output a = reshape(ids, [batch, 3, 1]);\n    output b = flatten(reshape(ids, [batch, 3, 1]));\n    output c = concat([ids, jd, ids], axis = 1);\n    output d = slice(ids, axis = 1, start = 1);\n    output w = where(slice(x, axis = 1, end = 3) > 0.0, ids, jd);\n    output g = gather(emb, concat([slice(ids, axis = 1, end = 2), jd], axis = 1));\n    output k = reshape(argmax(x, axis = 1), [batch, 1]) == slice(ids, axis = 1, end = 1);",
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn indices_and_numbers_do_not_mix_in_a_shape_op() {
        let ids = "    input ids: [batch, 10] as u32;\n";
        // Line 5, at `y`: the body's second line.
        assert_eq!(
            one(
                &format!("{ids}    output d = concat([ids, y], axis = 1);"),
                "`ids` is u32 [batch, 10] but `y` is f32 [batch, 10]"
            ),
            (5, 28)
        );
        one(&format!("{ids}    output d = concat([y, ids], axis = 0);"), "cannot be joined together");
        one(&format!("{ids}    output w = where(y > 0.0, ids, 0.0);"), "cannot be picked from together");
        one(&format!("{ids}    output w = where(y > 0.0, y, ids);"), "encode the indices as numbers with `one_hot(ids");
        one(&format!("{ids}    output w = where(ids, y, y);"), "the condition `ids` is an index tensor");
        one(
            &format!("{ids}    output r = reshape(ids, [batch, 10, 1]) + 1.0;"),
            "arithmetic on indices is not defined",
        );
        // An argmax over 784 columns reaching a 10-deep one_hot through a reshape.
        one(
            "    output h = one_hot(reshape(argmax(x, axis = 1), [batch, 1]), depth = 10);",
            "gives indices below 784 (argmax over an axis of size 784), but `one_hot` takes indices below 10",
        );
    }

    #[test]
    fn concat_slice_where_and_axes_errors() {
        assert_eq!(one("    output d = concat([x, y], axis = 0);", "differ in axis 1 (10 != 784)"), (4, 26));
        one("    output d = concat([x, y], axis = 2);", "axis 2 is out of range");
        one("    output d = concat([x, y]);", "`concat` needs `axis = k`");
        one("    output d = concat(x, axis = 1);", "as a list in brackets");
        one("    output d = concat([x, sum(y)], axis = 1);", "the same rank");
        one("    output d = concat([x, x], axis = 0);", "symbolic dimension `batch`");
        one("    output s = slice(x, axis = 1, start = 784);", "start 784 is out of range");
        one("    output s = slice(x, axis = 1, start = 3, end = 800);", "end 800 is past the end");
        one("    output s = slice(x, axis = 1, start = 3, end = 3);", "is empty");
        one("    output s = slice(x, axis = 0, start = 1);", "needs a static axis");
        one("    output w = where(x > 0.0, x);", "`where` takes 3 tensor arguments (cond, a, b), but `b` is missing");
        one("    output w = where(x, y, 0.0);", "does not broadcast");
        one("    output m = max(x, axis = [1, -1]);", "axis 1 is listed twice");
        one("    output m = sum(x, axis = [0, 2]);", "axis 2 is out of range");
        one("    output m = x < y;", "shapes do not broadcast");
    }
}
