//! The pooling ops' surface: `max_pool(x, size = 2, stride = size, padding = "valid")` and
//! `avg_pool(..)` on NHWC images. Every attribute is checked with a message naming the
//! bad value at its tokens; the primitives and their geometry are in `ops/pool.rs`.

use proc_macro2::Span;
use syn::{ExprCall, Ident};

use super::call::{AttrKind, AttrValue, Bound, Sig};
use super::{describe, Lowerer};
use crate::diag::suggestion;
use crate::ir::NodeId;
use crate::ops::pool::{self, Pool};
use crate::ops::Op;

/// The signatures of the pooling ops.
pub(super) fn signature(name: &str) -> Option<Sig> {
    const POOL: &[(&str, AttrKind)] =
        &[("size", AttrKind::Pair), ("stride", AttrKind::Pair), ("padding", AttrKind::Str)];
    matches!(name, "max_pool" | "avg_pool").then_some(Sig { tensors: &["x"], attrs: POOL })
}

impl Lowerer<'_> {
    /// `size = k` or `size = [kh, kw]` (likewise `stride`): two positive integers, or
    /// `None` when absent. Rejects `size = 0`, `stride = [2, -1]`, `size = [2, 2, 2]`.
    fn pair(&mut self, op: &str, attr: &str, value: &Option<(AttrValue, Span)>) -> Result<Option<[usize; 2]>, ()> {
        let (list, span) = match value {
            None => return Ok(None),
            Some((AttrValue::Int(k), span)) => (vec![*k, *k], *span),
            Some((AttrValue::Ints(v), span)) => (v.clone(), *span),
            Some(_) => return Err(()),
        };
        if list.len() != 2 {
            self.diag.error(
                span,
                format!("`{op}`: `{attr}` takes one integer or a pair `[rows, columns]`, not {} values", list.len()),
            );
            return Err(());
        }
        let mut out = [0usize; 2];
        for (o, &k) in out.iter_mut().zip(&list) {
            match usize::try_from(k) {
                Ok(k) if k > 0 => *o = k,
                _ => {
                    let why = if attr == "stride" {
                        "a stride of 0 would never move the window"
                    } else {
                        "a window needs at least one cell"
                    };
                    self.diag.error(span, format!("`{op}`: `{attr}` must be positive, not {k} ({why})"));
                    return Err(());
                }
            }
        }
        Ok(Some(out))
    }

    /// `max_pool(x, ..)` / `avg_pool(x, ..)`.
    pub(super) fn pool_op(
        &mut self,
        name: &str,
        ident: &Ident,
        call: &ExprCall,
        b: &Bound,
        x: &[NodeId],
    ) -> Option<NodeId> {
        let span = ident.span();
        let (d, s) = (describe(b.tensors[0]), self.graph.shape(x[0]).clone());
        // `max_pool(h)` with `h: [batch, 784]`: pooling needs the image axes.
        if s.rank() != 4 {
            self.diag.spanned(
                b.tensors[0],
                format!(
                    "`{name}`: `{d}` must be an NHWC image batch [n, height, width, channels], but it is {s} \
                     (reshape a flat batch first: `reshape({d}, [batch, 28, 28, 1])`)"
                ),
            );
            return None;
        }
        // `max_pool(x)` with `x: [batch, h, 28, 1]`: the window's geometry (padding,
        // output size, the kernels' loops) is fixed at compile time.
        let mut hwc = [0usize; 3];
        for (k, what) in ["height", "width", "channel count"].into_iter().enumerate() {
            match s.0[k + 1].as_static() {
                Some(v) => hwc[k] = v,
                None => {
                    self.diag.spanned(
                        b.tensors[0],
                        format!(
                            "`{name}`: the {what} of `{d}` must be static (a number), but it is `{}` in {s}: \
                             pooling fixes its window geometry at compile time; only the batch may be symbolic",
                            s.0[k + 1]
                        ),
                    );
                    return None;
                }
            }
        }
        let size = self.pair(name, "size", &b.attrs[0]);
        let stride = self.pair(name, "stride", &b.attrs[1]);
        let same = match &b.attrs[2] {
            None => Some(false),
            Some((AttrValue::Str(p), _)) if p == "valid" => Some(false),
            Some((AttrValue::Str(p), _)) if p == "same" => Some(true),
            Some((AttrValue::Str(p), sp)) => {
                // `; did you mean "valid"?`, quoted as the string it suggests.
                let hint = suggestion(&p.to_lowercase(), ["valid", "same"]).replace('`', "\"");
                self.diag.error(*sp, format!("`{name}`: `padding` must be \"valid\" or \"same\", not \"{p}\"{hint}"));
                None
            }
            Some(_) => None,
        };
        let (Ok(size), Ok(stride), Some(same)) = (size, stride, same) else { return None };
        let size = size.unwrap_or([2, 2]);
        let stride = stride.unwrap_or(size);
        let [h, w, _] = hwc;
        if h == 0 || w == 0 {
            self.diag.spanned(b.tensors[0], format!("`{name}`: `{d}` has an empty image ({h}x{w}) in {s}"));
            return None;
        }
        // `max_pool(x, size = 5)` with `x: [batch, 4, 4, 1]`: under "valid" no window fits.
        // ("same" pads the image up to whole windows, as TF, so any window is allowed.)
        if !same && (size[0] > h || size[1] > w) {
            let at = b.attrs[0].as_ref().map_or(call.paren_token.span.join(), |v| v.1);
            self.diag.error(
                at,
                format!(
                    "`{name}`: the window {}x{} is larger than `{d}`'s {h}x{w} image; with padding = \"valid\" \
                     every window must fit (use a smaller `size`, or padding = \"same\")",
                    size[0], size[1]
                ),
            );
            return None;
        }
        let p = Pool { size, stride, same, image: [h, w] };
        let made = if name == "max_pool" {
            pool::max_pool(&mut self.graph, x[0], p, span)
        } else {
            self.graph.try_add(Op::AvgPool(p), vec![x[0]], span)
        };
        match made {
            Ok(id) => Some(id),
            Err(message) => {
                self.diag.error(span, format!("`{name}`: {message}"));
                None
            }
        }
    }
}
