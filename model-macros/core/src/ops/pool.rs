//! Pooling over NHWC images: `max_pool(x, size, stride, padding)` and `avg_pool(..)`.
//!
//! Both take `[n, h, w, c]` with `h`, `w` and `c` static, a window `size` and a `stride`
//! (an int or `[rows, cols]`), and TF's padding: `"valid"` (floor: `oh = (h - kh) / sh +
//! 1`, so 11 -> 5 with size 2; rows and columns no window covers get a zero gradient) or
//! `"same"` (`oh = ceil(h / sh)`, padded by `max((oh - 1) * sh + kh - h, 0)` rows, half of
//! them (rounded down) at the top and the rest at the bottom, likewise for columns).
//! Padded cells never win a max and are not counted by an average: `avg_pool` divides by
//! the window's valid cells only (TF; PyTorch's default `count_include_pad` differs).
//!
//! **Max pooling is two primitives**, so that the forward pass records its choice and the
//! backward pass reuses it: [`Op::PoolArgmax`] (u32, the offset in its window of each
//! output's *first* maximum in row-major scan order) and [`Op::PoolPick`] `(x, argmax)`
//! (the values it names). The gradient [`Op::MaxPoolGrad`] `(g, argmax)` adds each `g`
//! to exactly that one cell. The argmax node is shared (hash-consed) by the forward value
//! and the gradient, so a training step computes it once into a u32 workspace buffer of
//! the output's shape (allocated once, like every buffer) and the backward pass scatters
//! through it. Recomputing the choice in the backward pass as an equality mask
//! (`x == max_pool(x)`) would be the tie bug: whole windows are equal on MNIST-like data
//! (zero background is exactly the bias after relu), and a mask sends each of their
//! cells the full gradient (4x for 2x2). TF, PyTorch and JAX pick the first cell, as here.
//!
//! **Cost**: one flop per window cell per output element for the argmax and the average
//! (a compare or an add), as for `max`/`sum` over an axis; one per output element for the
//! scatter of max's gradient; the pick is a copy (0).

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::{Dim, Shape};

/// A pooling window fixed at compile time, with the image size it applies to (so that
/// the gradient knows its output shape and "same" its padding).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool {
    /// Window rows and columns.
    pub size: [usize; 2],
    /// Row and column strides.
    pub stride: [usize; 2],
    /// TF's "same" padding (else "valid").
    pub same: bool,
    /// The input image's rows and columns.
    pub image: [usize; 2],
}

impl Pool {
    /// Output rows and columns.
    pub fn out(&self) -> [usize; 2] {
        let f = |a: usize| {
            let (n, k, s) = (self.image[a], self.size[a], self.stride[a]);
            if self.same {
                n.div_ceil(s)
            } else {
                (n.saturating_sub(k)) / s + 1
            }
        };
        [f(0), f(1)]
    }

    /// Padding rows above and columns left of the image ("same" puts the odd one at the
    /// bottom/right, as TF).
    pub fn before(&self) -> [usize; 2] {
        if !self.same {
            return [0, 0];
        }
        let o = self.out();
        let f = |a: usize| ((o[a] - 1) * self.stride[a] + self.size[a]).saturating_sub(self.image[a]) / 2;
        [f(0), f(1)]
    }

    /// `size = 2, stride = 2, padding = "valid"` as the user would write it.
    pub fn attrs(&self) -> String {
        let pair = |p: [usize; 2]| if p[0] == p[1] { p[0].to_string() } else { format!("[{}, {}]", p[0], p[1]) };
        let pad = if self.same { "same" } else { "valid" };
        format!("size = {}, stride = {}, padding = \"{pad}\"", pair(self.size), pair(self.stride))
    }

    /// `2x2/2 valid`, for `graph_dot`.
    pub fn short(&self) -> String {
        let st = if self.stride[0] == self.stride[1] {
            self.stride[0].to_string()
        } else {
            format!("{}x{}", self.stride[0], self.stride[1])
        };
        format!("{}x{}/{st} {}", self.size[0], self.size[1], if self.same { "same" } else { "valid" })
    }

    /// Window cells: the flops of one output element of the argmax or the average.
    pub fn cells(&self) -> u64 {
        (self.size[0] * self.size[1]) as u64
    }

    fn window_tokens(&self) -> TokenStream {
        let ([kh, kw], [sh, sw], [top, left]) = (self.size, self.stride, self.before());
        quote!(::modelc::__private::pool::Window { kh: #kh, kw: #kw, sh: #sh, sw: #sw, top: #top, left: #left })
    }
}

/// The pooled shape `[n, oh, ow, c]` of an NHWC `x` (the front end has checked rank,
/// static sizes and the window, with the user's names; this is the graph's own check).
pub fn pool_shape(x: &Shape, p: &Pool) -> Result<Shape, String> {
    let [h, w] = p.image;
    if x.rank() != 4 || x.0[1] != Dim::Static(h) || x.0[2] != Dim::Static(w) {
        return Err(format!("pooling over {h}x{w} images takes [n, {h}, {w}, c], not {x}"));
    }
    if p.size.contains(&0) || p.stride.contains(&0) || (!p.same && (p.size[0] > h || p.size[1] > w)) {
        return Err(format!("the window {} does not fit a {h}x{w} image", p.short()));
    }
    let [oh, ow] = p.out();
    Ok(Shape(vec![x.0[0].clone(), Dim::Static(oh), Dim::Static(ow), x.0[3].clone()]))
}

/// `PoolPick(x, argmax)` has the argmax's shape.
pub fn pick_shape(ins: &[&Shape], p: &Pool) -> Result<Shape, String> {
    let want = pool_shape(ins[0], p)?;
    if *ins[1] != want {
        return Err(format!("the argmax {} must have the pooled shape {want}", ins[1]));
    }
    Ok(want)
}

/// A gradient `(g, ..)` of pooled shape gives the image's shape `[n, h, w, c]`.
pub fn grad_shape(ins: &[&Shape], p: &Pool) -> Result<Shape, String> {
    let g = ins[0];
    let [oh, ow] = p.out();
    if g.rank() != 4 || g.0[1] != Dim::Static(oh) || g.0[2] != Dim::Static(ow) {
        return Err(format!("the adjoint {g} must be [n, {oh}, {ow}, c]"));
    }
    if ins.len() > 1 && ins[1] != g {
        return Err(format!("the argmax {} must have the adjoint's shape {g}", ins[1]));
    }
    let [h, w] = p.image;
    Ok(Shape(vec![g.0[0].clone(), Dim::Static(h), Dim::Static(w), g.0[3].clone()]))
}

/// `max_pool(x)`: `PoolPick(x, PoolArgmax(x))`.
pub fn max_pool(g: &mut Graph, x: NodeId, p: Pool, span: proc_macro2::Span) -> Result<NodeId, String> {
    let at = g.try_add(Op::PoolArgmax(p.clone()), vec![x], span)?;
    g.try_add(Op::PoolPick(p), vec![x, at], span)
}

/// `d x = MaxPoolGrad(g, argmax)`: the argmax the forward pass stored, never a mask.
pub fn pick_vjp(g: &mut Graph, node: &Node, p: &Pool, adj: NodeId) -> Vec<Option<NodeId>> {
    let at = node.inputs[1];
    vec![Some(g.add(Op::MaxPoolGrad(p.clone()), vec![adj, at], node.span)), None]
}

/// `d x = AvgPoolGrad(g)`: `g / count` to each valid cell of each window.
pub fn avg_vjp(g: &mut Graph, node: &Node, p: &Pool, adj: NodeId) -> Vec<Option<NodeId>> {
    vec![Some(g.add(Op::AvgPoolGrad(p.clone()), vec![adj], node.span))]
}

/// The name of the relu + max_pool rewrite, as `explain()` lists it.
pub const RELU_POOL: &str =
    "max_pool(relu(a)) -> relu(max_pool(a)): the relu and its derivative's mask on the pooled output, the pre-pool relu never stored";

/// `max_pool(relu(a))` -> `relu(max_pool(a))`, before differentiation.
///
/// Exact in values and in gradients: relu is monotone, so the largest relu'd cell is the
/// relu of the largest cell; and the first maximum of `a` is the first maximum of
/// `relu(a)` whenever the window's maximum is positive, while otherwise both gradients are
/// 0 (relu's derivative at the chosen cell). What it saves: the relu runs over the
/// pooled output (a quarter of the image for 2x2), and the backward pass applies relu's
/// mask there (`step(pooled)`) before scattering, instead of a pass over the whole image
/// reading a stored relu'd image (the research note's "the ReLU mask at the chosen cell
/// equals pooled > 0"). The argmax and the pick read `a`, which a kernel writes anyway.
/// Applied whatever else reads `relu(a)`: then `relu(a)` is still computed for those
/// readers, and the rewrite costs one relu over the pooled output, no more.
pub fn rewrite(g: &mut Graph, node: &Node, x: &[NodeId], ctx: &mut crate::simplify::Ctx) -> Option<NodeId> {
    use crate::ops::Unary;
    if let Op::SumTo(to) = &node.op {
        return sum_of_scatter(g, to, x[0], ctx);
    }
    let Op::PoolPick(p) = &node.op else { return None };
    if ctx.stage != crate::simplify::Stage::Forward {
        return None;
    }
    let (r, at) = (x[0], x[1]);
    if g.node(r).op != Op::Unary(Unary::Relu) || g.node(at).op != Op::PoolArgmax(p.clone()) || g.node(at).inputs != [r]
    {
        return None;
    }
    let a = g.node(r).inputs[0];
    let pooled = max_pool(g, a, p.clone(), node.span).ok()?;
    ctx.log.note(RELU_POOL);
    Some(g.unary(Unary::Relu, pooled))
}

/// The name of the bias-gradient rewrite, as `explain()` lists it.
pub const SUM_OF_SCATTER: &str =
    "sum_to(max_pool_grad(g, argmax)) over the image -> sum_to(g): the bias gradient from the pooled gradient, a quarter of the reads for 2x2";

/// `SumTo(to)(MaxPoolGrad(g, at))` -> `SumTo(to)(g)` when `to` sums over the image's rows
/// and columns: the scatter puts each pooled gradient on exactly one cell (and nothing
/// elsewhere), so the image's sum is the pooled gradient's sum. That is a conv layer's
/// bias gradient under `max_pool(relu(conv + b))`, which then reads the pooled gradient
/// instead of the whole image's (C2's first layer: 0.7 MB instead of 2.8 MB; the
/// `sum_to_acc` pass was 6.6% of C2's step). Exact in real numbers; in f32 the sum runs
/// in another order (per channel over `n oh ow` terms instead of `n h w` with zeros).
fn sum_of_scatter(g: &mut Graph, to: &Shape, src: NodeId, ctx: &mut crate::simplify::Ctx) -> Option<NodeId> {
    let n = g.node(src);
    if !matches!(n.op, Op::MaxPoolGrad(_)) || n.shape.rank() != 4 || to.rank() > 4 {
        return None;
    }
    // `to` right-aligned against [n, h, w, c]: the h and w axes absent or 1.
    let off = 4 - to.rank();
    let reduced = |axis: usize| axis < off || to.0[axis - off] == Dim::Static(1);
    if !(reduced(1) && reduced(2)) {
        return None;
    }
    let gr = n.inputs[0];
    ctx.log.note(SUM_OF_SCATTER);
    g.try_add(Op::SumTo(to.clone()), vec![gr], n.span).ok()
}

/// `max_pool(conv2d(x, w) + bias)` as one primitive ([`Op::ConvPool`]): the conv and the
/// window it feeds, whether a bias vector is the third operand, and which of the pair's
/// two outputs this node is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvPool {
    /// The conv (`Pool::image` is its output size).
    pub conv: crate::ops::conv::Conv,
    /// The pooling window over the conv's output.
    pub pool: Pool,
    /// Operands `(x, w, bias)` with `bias` of shape `[co]`, else `(x, w)`.
    pub bias: bool,
    /// This node is the u8 argmax (each window's first maximum), else the pooled value.
    pub argmax: bool,
}

/// The name of the conv + bias + max_pool fusion, as `explain()` lists it.
pub const CONV_POOL: &str = "max_pool(conv2d(x, w) + b) -> one kernel per image writing the pooled value and a u8 argmax (the conv's output never stored)";

/// The pooled shape of `ConvPool(x, w[, bias])`.
pub fn conv_pool_shape(c: &ConvPool, ins: &[&Shape]) -> Result<Shape, String> {
    let y = crate::ops::conv::conv2d_shape(&c.conv, &ins[..2])?;
    if c.bias && ins.get(2).map(|b| b.dims()) != Some(&y.0[3..]) {
        return Err(format!("the bias must be [{}]", c.conv.channels[1]));
    }
    pool_shape(&y, &c.pool)
}

/// The value's adjoint `g` (pooled shape) back through the pool, the bias and the conv:
/// `da = MaxPoolGrad(g, argmax)` with the pair's own argmax node, then the conv's rules
/// and the bias's sum. Not reached by today's pipeline (the fusion runs after the one
/// differentiation), so no test runs it; it is the unfused ops' rules composed, kept so
/// that the op's gradient is defined rather than silently absent.
pub fn conv_pool_vjp(g: &mut Graph, node: &Node, c: &ConvPool, adj: NodeId) -> Vec<Option<NodeId>> {
    if c.argmax {
        return vec![None; node.inputs.len()];
    }
    let at = g.add(Op::ConvPool(ConvPool { argmax: true, ..c.clone() }), node.inputs.clone(), node.span);
    let da = g.add(Op::MaxPoolGrad(c.pool.clone()), vec![adj, at], node.span);
    let mut out = crate::ops::conv::conv2d_vjp(g, node, &c.conv, da);
    if c.bias {
        let b = g.shape(node.inputs[2]).clone();
        out.push(Some(g.add(Op::SumTo(b), vec![da], node.span)));
    }
    out
}

/// The kernel call of the fused conv + pool: `value` and `arg` are the outputs' mutable
/// views (either may be absent), `scratch` the workspace's `&mut Vec<f32>` conv scratch.
pub fn conv_pool_call(
    c: &ConvPool,
    args: &[TokenStream],
    value: Option<&TokenStream>,
    arg: Option<&TokenStream>,
    scratch: &TokenStream,
) -> TokenStream {
    let k = quote!(::modelc::__private::conv);
    let some = |v: Option<&TokenStream>| match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    };
    let (value, arg) = (some(value), some(arg));
    let bias = some(args.get(2).filter(|_| c.bias));
    let ([sh, sw], [dh, dw], [pt, pl]) = (c.conv.stride, c.conv.dilation, c.conv.pad_before());
    let [oh, ow] = c.pool.image;
    let s = crate::ops::conv::strategy_tokens(&Op::Conv2d(c.conv));
    let (x, w, win) = (&args[0], &args[1], c.pool.window_tokens());
    quote! {
        #k::conv2d_max_pool_with(
            #s, #x, #w, #bias,
            #k::Geometry { stride: [#sh, #sw], dilation: [#dh, #dw], pad: [#pt, #pl] },
            [#oh, #ow], #win, #value, #arg, #scratch,
        );
    }
}

/// Fuses `a = conv2d(x, w) + bias` (or the conv alone) with the max pool reading it,
/// after differentiation: `PoolArgmax(a)` becomes the argmax of a [`ConvPool`] pair and
/// `PoolPick(a, ..)` its value, so that one kernel call per image computes the conv,
/// adds the bias and pools, and `a` is never stored (C2's profile: the bias add, the
/// argmax and the pick were three passes over images past the L2). After
/// differentiation, because then the backward pass reads only the argmax (the
/// scatter) and the pooled value (relu's mask, [`RELU_POOL`]), which the pass checks:
/// it fires only where every reader of `a` in the graph is that argmax or pick, and `a`
/// is not a root (a fetched output). Left unfused (the ops as they were): a pre-pool
/// image read elsewhere, a bias that is not a `[co]` vector, windows of more than 256
/// cells (the argmax is u8), an average pool. Returns `None` when nothing fuses.
pub fn fuse_conv_pool(
    g: &Graph,
    roots: &[NodeId],
    log: &mut crate::simplify::RewriteLog,
) -> Option<(Graph, std::collections::HashMap<NodeId, NodeId>)> {
    use crate::ops::Binary;
    let cone = g.cone(roots);
    let uses = g.use_counts(&cone);
    // The pre-pool node -> (x, w, bias, conv): what each fusable `a` is made of.
    let mut fusable: std::collections::HashMap<NodeId, ConvPool> = std::collections::HashMap::new();
    for &id in &cone {
        let Op::PoolArgmax(p) = &g.node(id).op else { continue };
        let a = g.node(id).inputs[0];
        if roots.contains(&a) || p.cells() > 256 || fusable.contains_key(&a) {
            continue;
        }
        let conv_of = |n: NodeId| match g.node(n).op {
            Op::Conv2d(c) if !roots.contains(&n) => Some(c),
            _ => None,
        };
        let an = g.node(a);
        let (conv, bias) = match (&an.op, conv_of(a)) {
            (_, Some(c)) => (c, false),
            (Op::Binary(Binary::Add), None) => {
                let (l, r) = (an.inputs[0], an.inputs[1]);
                let (c, b) = match (conv_of(l), conv_of(r)) {
                    (Some(c), None) => (c, r),
                    (None, Some(c)) => (c, l),
                    _ => continue,
                };
                let conv_node = if b == r { l } else { r };
                let bn = g.node(b);
                if uses[conv_node] != 1
                    || bn.dtype != crate::ir::DType::F32
                    || bn.shape.dims() != [Dim::Static(c.channels[1])]
                {
                    continue;
                }
                (c, true)
            }
            _ => continue,
        };
        // Every reader of `a`: this argmax, or a pick through it.
        let readers = cone.iter().filter(|&&n| g.node(n).inputs.contains(&a));
        let only_pool = readers.clone().all(|&n| {
            let node = g.node(n);
            n == id || (node.op == Op::PoolPick(p.clone()) && node.inputs == [a, id])
        });
        if !only_pool || readers.count() != uses[a] {
            continue;
        }
        fusable.insert(a, ConvPool { conv, pool: p.clone(), bias, argmax: false });
    }
    if fusable.is_empty() {
        return None;
    }
    for _ in 0..fusable.len() {
        log.note(CONV_POOL);
    }
    let (fused, map) = g.rebuild(roots, |out, node, inputs| {
        let (argmax, a) = match &node.op {
            Op::PoolArgmax(_) => (true, node.inputs[0]),
            Op::PoolPick(_) => (false, node.inputs[0]),
            _ => return None,
        };
        let c = fusable.get(&a)?;
        // `inputs[0]` is `a` in the new graph: its conv's operands, and the bias.
        let an = out.node(inputs[0]).clone();
        let (conv, bias) = if c.bias {
            let l = an.inputs[0];
            if matches!(out.node(l).op, Op::Conv2d(_)) {
                (l, Some(an.inputs[1]))
            } else {
                (an.inputs[1], Some(l))
            }
        } else {
            (inputs[0], None)
        };
        let mut operands = out.node(conv).inputs.clone();
        operands.extend(bias);
        Some(out.add(Op::ConvPool(ConvPool { argmax, ..c.clone() }), operands, node.span))
    });
    // The conv and bias-add nodes the fused ops replaced are dead: drop them.
    let new_roots: Vec<NodeId> = roots.iter().map(|r| map[r]).collect();
    let (clean, map2) = fused.rebuild(&new_roots, |_, _, _| None);
    let total = map.into_iter().filter_map(|(k, v)| map2.get(&v).map(|&n| (k, n))).collect();
    Some((clean, total))
}

/// The kernel calls of the pooling ops.
pub fn kernel_call(op: &Op, args: &[TokenStream], out: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::pool);
    match op {
        Op::PoolArgmax(p) => {
            let (x, w) = (&args[0], p.window_tokens());
            quote!(#k::max_pool_argmax(#x, #w, #out);)
        }
        Op::PoolPick(p) => {
            let (x, at, w) = (&args[0], &args[1], p.window_tokens());
            quote!(#k::pool_pick(#x, #at, #w, #out);)
        }
        Op::MaxPoolGrad(p) => {
            // The offsets are u32 (`PoolArgmax`) or u8 (`ConvPool`): the kernel is generic.
            let (gr, at, w) = (&args[0], &args[1], p.window_tokens());
            quote!(#k::max_pool_grad(#gr, #at, #w, #out);)
        }
        Op::AvgPool(p) => {
            let (x, w) = (&args[0], p.window_tokens());
            quote!(#k::avg_pool(#x, #w, #out);)
        }
        Op::AvgPoolGrad(p) => {
            let (gr, w) = (&args[0], p.window_tokens());
            quote!(#k::avg_pool_grad(#gr, #w, #out);)
        }
        _ => quote!(::core::compile_error!("internal: not a pooling op")),
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use crate::ops::norm::tests::errors;

    /// The errors of `output o = <body>;` over `x: [batch, 28, 28, 3]` (line 3).
    fn errs(body: &str) -> Vec<(String, usize, usize)> {
        errors(&format!("struct M {{\n    input x: [batch, 28, 28, 3];\n    output o = {body};\n}}"))
    }

    fn one(body: &str) -> (String, usize, usize) {
        let e = errs(body);
        assert_eq!(e.len(), 1, "{body}: {e:?}");
        e.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn output_sizes_follow_tf() {
        let p = |k: usize, s: usize, same: bool, n: usize| Pool { size: [k, k], stride: [s, s], same, image: [n, n] };
        // "valid" floors (11 -> 5); "same" is ceil(n / s) with the odd row at the bottom.
        assert_eq!(p(2, 2, false, 11).out(), [5, 5]);
        assert_eq!(p(2, 2, true, 11).out(), [6, 6]);
        assert_eq!(p(2, 2, true, 11).before(), [0, 0]);
        assert_eq!(p(3, 2, true, 28).out(), [14, 14]);
        // (14 - 1) * 2 + 3 - 28 = 1 padding row: none above, one below.
        assert_eq!(p(3, 2, true, 28).before(), [0, 0]);
        // (5 - 1) * 1 + 3 - 5 = 2: one above, one below.
        assert_eq!(p(3, 1, true, 5).before(), [1, 1]);
        assert_eq!(p(3, 1, false, 5).out(), [3, 3]);
        // A window larger than the image under "same": 5 on 2 pads 2 rows above and 2 below.
        assert_eq!(p(5, 1, true, 2).out(), [2, 2]);
        assert_eq!(p(5, 1, true, 2).before(), [2, 2]);
        let q = Pool { size: [3, 2], stride: [1, 2], same: false, image: [7, 9] };
        assert_eq!(q.out(), [5, 4]);
        assert_eq!(q.attrs(), "size = [3, 2], stride = [1, 2], padding = \"valid\"");
    }

    #[test]
    fn every_valid_pooling_compiles() {
        for body in [
            "max_pool(x)",
            "avg_pool(x)",
            "max_pool(x, 3)",
            "max_pool(x, size = 3, stride = 1)",
            "max_pool(x, size = [2, 3], stride = [1, 2], padding = \"same\")",
            "avg_pool(x, 28)",
            "avg_pool(x, size = 29, padding = \"same\")",
            "max_pool(x, 2, 2, \"valid\")",
            "max_pool(relu(x), size = 2) + 1",
        ] {
            let e = errs(body);
            assert!(e.is_empty(), "{body}: {e:?}");
        }
    }

    #[test]
    fn pooling_errors_point_at_the_offending_tokens() {
        // Rank: at the operand.
        let e = errors("struct M {\n    input x: [batch, 784];\n    output o = max_pool(x);\n}");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].0.contains(
                "`max_pool`: `x` must be an NHWC image batch [n, height, width, channels], but it is [batch, 784]"
            ),
            "{e:?}"
        );
        assert_eq!((e[0].1, e[0].2), (3, 24));
        // A symbolic spatial size.
        let e = errors("struct M {\n    input x: [batch, h, 28, 1];\n    output o = avg_pool(x);\n}");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("the height of `x` must be static (a number), but it is `h`"), "{e:?}");
        let e = errors("struct M {\n    input x: [batch, 28, 28, c];\n    output o = avg_pool(x);\n}");
        assert!(e[0].0.contains("the channel count of `x` must be static"), "{e:?}");
        // The window, the stride, the padding: at the attribute.
        let (m, l, c) = one("max_pool(x, size = 29)");
        assert!(m.contains("the window 29x29 is larger than `x`'s 28x28 image; with padding = \"valid\""), "{m}");
        assert_eq!((l, c), (3, 34));
        let (m, _, _) = one("max_pool(x, size = [2, 30])");
        assert!(m.contains("the window 2x30 is larger"), "{m}");
        let (m, l, c) = one("max_pool(x, stride = 0)");
        assert!(
            m.contains("`max_pool`: `stride` must be positive, not 0 (a stride of 0 would never move the window)"),
            "{m}"
        );
        assert_eq!((l, c), (3, 36));
        let (m, _, _) = one("avg_pool(x, size = 0)");
        assert!(m.contains("`size` must be positive, not 0"), "{m}");
        let (m, _, _) = one("avg_pool(x, size = [2, -1])");
        assert!(m.contains("`size` must be positive, not -1"), "{m}");
        let (m, _, _) = one("avg_pool(x, size = [2, 2, 2])");
        assert!(m.contains("`size` takes one integer or a pair `[rows, columns]`, not 3 values"), "{m}");
        let (m, l, c) = one("max_pool(x, padding = \"vaild\")");
        assert!(m.contains("`padding` must be \"valid\" or \"same\", not \"vaild\"; did you mean \"valid\"?"), "{m}");
        assert_eq!((l, c), (3, 37));
        let (m, _, _) = one("max_pool(x, padding = \"full\")");
        assert!(m.ends_with("not \"full\""), "{m}");
        let (m, _, _) = one("max_pool(x, padding = same)");
        assert!(m.contains("`padding` must be a string literal"), "{m}");
        let (m, _, _) = one("max_pool(x, window = 2)");
        assert!(m.contains("`max_pool` has no argument `window`"), "{m}");
    }

    #[test]
    fn relu_then_max_pool_is_rewritten_before_differentiation_only() {
        use crate::ir::{DType, Graph};
        use crate::ops::{Op, Unary};
        use crate::shape::{Dim, Shape};
        use crate::simplify::{run, RewriteLog, Stage};
        use proc_macro2::Span;
        let sp = Span::call_site();
        let mut g = Graph::new();
        let x = g.leaf(
            Op::Input(0),
            Shape(vec![Dim::Sym("n".into()), Dim::Static(4), Dim::Static(4), Dim::Static(2)]),
            DType::F32,
            sp,
        );
        let p = Pool { size: [2, 2], stride: [2, 2], same: false, image: [4, 4] };
        let r = g.unary(Unary::Relu, x);
        let m = super::max_pool(&mut g, r, p.clone(), sp).expect("shapes fit");
        let a = g.add(Op::AvgPool(p.clone()), vec![r], sp);
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[m, a], Stage::Forward, &mut log);
        // relu(pick(x, argmax(x))); avg_pool(relu(x)) untouched.
        let top = out.node(map[&m]);
        assert_eq!(top.op, Op::Unary(Unary::Relu));
        let pick = out.node(top.inputs[0]);
        assert_eq!(pick.op, Op::PoolPick(p.clone()));
        assert_eq!(pick.inputs[0], map[&x]);
        assert_eq!(out.node(pick.inputs[1]).inputs, vec![map[&x]]);
        assert_eq!(out.node(map[&a]).inputs, vec![map[&r]]);
        assert_eq!(log.applied.get(super::RELU_POOL), Some(&1));
        let mut log = RewriteLog::default();
        let (out, map) = run(&g, &[m], Stage::Differentiated, &mut log);
        assert_eq!(out.node(map[&m]).op, Op::PoolPick(p));
        assert!(log.applied.is_empty());
    }

    /// `fuse_conv_pool` on hand-built graphs: the argmax and the pick of `conv + b`
    /// become the `ConvPool` pair (u8 argmax, read by the gradient's scatter), the conv
    /// and the add disappear; a pre-pool image with another reader, or fetched (a root),
    /// stays unfused; so does a bias that is not a `[co]` vector.
    #[test]
    fn conv_bias_max_pool_fuses_only_when_nothing_else_reads_the_image() {
        use super::{fuse_conv_pool, ConvPool, CONV_POOL};
        use crate::ir::{DType, Graph};
        use crate::ops::conv::Conv;
        use crate::ops::Op;
        use crate::shape::{Dim, Shape};
        use crate::simplify::RewriteLog;
        use proc_macro2::Span;
        let sp = Span::call_site();
        let st = |d: &[usize]| {
            Shape(std::iter::once(Dim::Sym("n".into())).chain(d.iter().map(|&v| Dim::Static(v))).collect())
        };
        let build = |bias_dims: &[usize], extra_reader: bool| {
            let mut g = Graph::new();
            let x = g.leaf(Op::Input(0), st(&[6, 6, 2]), DType::F32, sp);
            let w = g.leaf(
                Op::Param(0),
                Shape(vec![Dim::Static(3), Dim::Static(3), Dim::Static(2), Dim::Static(4)]),
                DType::F32,
                sp,
            );
            let b = g.leaf(Op::Param(1), Shape(bias_dims.iter().map(|&v| Dim::Static(v)).collect()), DType::F32, sp);
            let c =
                Conv { image: [6, 6], kernel: [3, 3], channels: [2, 4], stride: [1, 1], dilation: [1, 1], same: false };
            let y = g.add(Op::Conv2d(c), vec![x, w], sp);
            let a = g.add2(y, b);
            let p = Pool { size: [2, 2], stride: [2, 2], same: false, image: [4, 4] };
            let v = super::max_pool(&mut g, a, p.clone(), sp).expect("shapes fit");
            let at = g.node(v).inputs[1];
            let gr = g.add(Op::MaxPoolGrad(p.clone()), vec![v, at], sp);
            let mut roots = vec![x, w, b, v, gr];
            if extra_reader {
                roots.push(g.add(Op::AvgPool(p.clone()), vec![a], sp));
            }
            (g, roots, c, p, [x, w, b, v, gr])
        };
        let (g, roots, c, p, [x, w, b, v, gr]) = build(&[4], false);
        let mut log = RewriteLog::default();
        let (out, map) = fuse_conv_pool(&g, &roots, &mut log).expect("fuses");
        assert_eq!(log.applied.get(CONV_POOL), Some(&1));
        let value = out.node(map[&v]);
        assert_eq!(value.op, Op::ConvPool(ConvPool { conv: c, pool: p.clone(), bias: true, argmax: false }));
        assert_eq!(value.inputs, vec![map[&x], map[&w], map[&b]]);
        let arg = out.node(out.node(map[&gr]).inputs[1]);
        assert_eq!(arg.op, Op::ConvPool(ConvPool { conv: c, pool: p, bias: true, argmax: true }));
        assert_eq!((arg.dtype, arg.inputs.clone()), (DType::U8, value.inputs.clone()));
        assert!(
            out.nodes.iter().all(|n| !matches!(n.op, Op::Conv2d(_) | Op::PoolArgmax(_) | Op::PoolPick(_))),
            "{:?}",
            out.nodes
        );
        // Another reader of `conv + b`; a fetched `conv + b`; a bias of the wrong shape.
        let (g, roots, ..) = build(&[4], true);
        assert!(fuse_conv_pool(&g, &roots, &mut RewriteLog::default()).is_none());
        let (g, mut roots, ..) = build(&[4], false);
        let a = g.node(roots[3]).inputs[0];
        roots.push(a);
        assert!(fuse_conv_pool(&g, &roots, &mut RewriteLog::default()).is_none());
        let (g, roots, ..) = build(&[1], false);
        assert!(fuse_conv_pool(&g, &roots, &mut RewriteLog::default()).is_none());
    }

    #[test]
    fn a_u32_image_is_refused() {
        let e = errors("struct M {\n    input x: [batch, 4, 4, 1] as u32;\n    output o = max_pool(x);\n}");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].0.contains("index tensor"), "{e:?}");
    }
}
