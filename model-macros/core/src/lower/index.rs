//! Index tensors in the front end: the element-type checks every op call goes through,
//! the index ops (`one_hot`, `gather`, `sparse_softmax_cross_entropy`), comparisons of
//! indices, and the compile-time range check of indices an `argmax` computes.
//!
//! Indices (u32) come from `input NAME: [..] as u32` and from `argmax`. No arithmetic
//! takes them: a mistake says why, and what to write instead.

use proc_macro2::Span;
use syn::{BinOp, Expr};

use super::call::{AttrValue, Bound};
use super::{describe, Lowerer};
use crate::ir::{DType, NodeId};
use crate::ops::{Binary, Op};
use crate::shape::{broadcast, Dim};

/// The element type each tensor argument of a surface op takes; `None` for the shape
/// ops that move elements of either type (`lower/shape.rs` checks that they agree).
fn wanted(name: &str, position: usize) -> Option<DType> {
    match (name, position) {
        ("one_hot", 0) | ("gather", 1) | ("sparse_softmax_cross_entropy", 1) => Some(DType::U32),
        ("reshape" | "flatten" | "slice", 0) | ("where" | "select", 1 | 2) => None,
        _ => Some(DType::F32),
    }
}

impl Lowerer<'_> {
    /// Checks that every tensor argument of `name` has the element type it takes.
    pub(super) fn check_dtypes(&mut self, name: &str, b: &Bound, x: &[NodeId]) -> Option<()> {
        let mut ok = true;
        for (i, (&id, e)) in x.iter().zip(&b.tensors).enumerate() {
            let have = self.graph.dtype(id);
            let Some(want) = wanted(name, i).filter(|&w| w != have) else { continue };
            let (d, s) = (describe(e), self.graph.shape(id).clone());
            let message = match want {
                DType::F32 if matches!(name, "where" | "select") => format!(
                    "`{name}`: the condition `{d}` is an index tensor (u32 {s}); a condition is f32, \
                     e.g. a comparison's 1.0 / 0.0: `{name}({d} == other_ids, a, b)`"
                ),
                DType::F32 if name == "softmax_cross_entropy" && i == 1 => format!(
                    "softmax_cross_entropy: `{d}` holds class indices (u32 {s}), but this op takes one-hot or \
                     probability labels: use `sparse_softmax_cross_entropy(logits, {d})` for integer labels"
                ),
                DType::F32 => format!(
                    "`{name}`: `{d}` is an index tensor (u32 {s}), and arithmetic on indices is not defined; \
                     to compute with it as numbers, encode it: `one_hot({d}, depth = N)`"
                ),
                // No user argument takes u8 (the fused pooling's internal argmax only).
                DType::U32 | DType::U8 => {
                    let arg = ["ids", "table"][usize::from(name == "gather" && i == 0)];
                    let arg = if name == "sparse_softmax_cross_entropy" { "labels" } else { arg };
                    format!(
                        "`{name}`: `{arg}` must be an index tensor (u32), but `{d}` is f32 {s}: declare an index input \
                         with `input NAME: [..] as u32;`, or take the indices of the largest values with `argmax(..)`"
                    )
                }
            };
            self.diag.spanned(e, message);
            ok = false;
        }
        ok.then_some(())
    }

    /// `one_hot`, `gather` and `sparse_softmax_cross_entropy`, operands checked.
    pub(super) fn index_op(&mut self, name: &str, span: Span, b: &Bound, x: &[NodeId]) -> Option<NodeId> {
        let (d0, s0) = (describe(b.tensors[0]), self.graph.shape(x[0]).clone());
        let (op, bound) = match name {
            "one_hot" => {
                let depth = match b.attrs[0] {
                    Some((AttrValue::Int(k), _)) if k >= 1 => k as usize,
                    Some((AttrValue::Int(k), sp)) => {
                        self.diag.error(sp, format!("one_hot: `depth` must be at least 1, found {k}"));
                        return None;
                    }
                    _ => {
                        self.diag
                            .error(span, format!("one_hot needs the number of classes: `one_hot({d0}, depth = 10)`"));
                        return None;
                    }
                };
                (Op::OneHot { depth }, (Dim::Static(depth), "`depth`"))
            }
            "gather" => {
                if s0.rank() == 0 {
                    self.diag.spanned(
                        b.tensors[0],
                        format!(
                            "gather: the table `{d0}` is a scalar; it must have a row axis, e.g. [vocabulary, width]"
                        ),
                    );
                    return None;
                }
                (Op::Gather, (s0.0[0].clone(), "the table's rows"))
            }
            _ => {
                let s1 = self.graph.shape(x[1]).clone();
                let d1 = describe(b.tensors[1]);
                if s0.rank() == 0 || s1 != s0.without_axis(s0.rank() - 1) {
                    let want = if s0.rank() == 0 {
                        "[.., classes]".to_string()
                    } else {
                        format!("{}", s0.without_axis(s0.rank() - 1))
                    };
                    self.diag.spanned(
                        b.tensors[1],
                        format!(
                            "sparse_softmax_cross_entropy: labels hold one class index per row of the logits: `{d0}` is {s0}, \
                             so `{d1}` must be {want}, but it is {s1}"
                        ),
                    );
                    return None;
                }
                (Op::SparseXent, (s0.0[s0.rank() - 1].clone(), "the classes (the logits' last axis)"))
            }
        };
        let ids_arg = usize::from(name != "one_hot");
        self.check_argmax_range(name, b.tensors[ids_arg], x[ids_arg], &bound.0, bound.1)?;
        match self.graph.try_add(op, x.to_vec(), span) {
            Ok(id) => Some(id),
            Err(message) => {
                self.diag.error(span, format!("`{name}`: {message}"));
                None
            }
        }
    }

    /// Indices computed by `argmax` over an axis of size `n` are below `n`: an op that
    /// reads them needs a bound of at least `n`, which is checked here, at compile time,
    /// also when they reach it through shape ops (`gather(emb, reshape(argmax(..), ..))`).
    /// (Index inputs are checked at run time, in the prologue.)
    fn check_argmax_range(&mut self, name: &str, e: &Expr, ids: NodeId, bound: &Dim, what: &str) -> Option<()> {
        for (source, _) in crate::ops::shape::index_sources(&self.graph, ids) {
            self.check_one_argmax(name, e, source, bound, what)?;
        }
        Some(())
    }

    fn check_one_argmax(&mut self, name: &str, e: &Expr, ids: NodeId, bound: &Dim, what: &str) -> Option<()> {
        let node = self.graph.node(ids).clone();
        let Op::Argmax { axis, .. } = node.op else { return Some(()) };
        let reduced = self.graph.shape(node.inputs[0]).0[axis].clone();
        if &reduced == bound {
            return Some(());
        }
        match (&reduced, bound) {
            (Dim::Static(n), Dim::Static(k)) if n <= k => Some(()),
            _ => {
                self.diag.spanned(
                    e,
                    format!(
                        "`{name}`: `{}` gives indices below {reduced} (argmax over an axis of size {reduced}), \
                         but `{name}` takes indices below {bound} ({what})",
                        describe(e)
                    ),
                );
                None
            }
        }
    }

    /// A binary operator with an index operand: comparisons of two index tensors, and
    /// an error that explains anything else.
    pub(super) fn index_binary(&mut self, b: &syn::ExprBinary, symbol: &str, l: NodeId, r: NodeId) -> Option<NodeId> {
        let (tl, tr) = (self.graph.dtype(l), self.graph.dtype(r));
        let (sl, sr) = (self.graph.shape(l).clone(), self.graph.shape(r).clone());
        let (dl, dr) = (describe(&b.left), describe(&b.right));
        let comparison = match b.op {
            BinOp::Eq(_) => Some((Binary::Eq, false)),
            BinOp::Ne(_) => Some((Binary::Ne, false)),
            BinOp::Gt(_) => Some((Binary::Gt, false)),
            BinOp::Ge(_) => Some((Binary::Ge, false)),
            BinOp::Lt(_) => Some((Binary::Gt, true)),
            BinOp::Le(_) => Some((Binary::Ge, true)),
            _ => None,
        };
        let Some((cmp, swap)) = comparison else {
            let (d, s) = if tl == DType::U32 { (&dl, &sl) } else { (&dr, &sr) };
            self.diag.spanned(
                b.op,
                format!(
                    "`{symbol}` on an index tensor: `{d}` is u32 {s}, and arithmetic on indices is not defined; \
                     compare indices (`==`, `!=`, `<`, ...), or encode them as numbers with `one_hot({d}, depth = N)`"
                ),
            );
            return None;
        };
        if tl != tr {
            let (i, f) = if tl == DType::U32 { (&dl, &dr) } else { (&dr, &dl) };
            self.diag.spanned(
                b.op,
                format!(
                    "`{symbol}` compares the index tensor `{i}` (u32) with the f32 value `{f}`: compare indices with \
                     indices (e.g. `argmax(logits, axis = 1) == labels`, with `input labels: [batch] as u32;`)"
                ),
            );
            return None;
        }
        if let Err(why) = broadcast(&sl, &sr) {
            self.diag.spanned(
                b.op,
                format!("`{symbol}`: shapes do not broadcast: `{dl}` is {sl} but `{dr}` is {sr}: {why}"),
            );
            return None;
        }
        let operands = if swap { vec![r, l] } else { vec![l, r] };
        Some(self.graph.add(Op::IndexCompare(cmp), operands, syn::spanned::Spanned::span(&b.op)))
    }
}
