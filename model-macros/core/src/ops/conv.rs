//! Convolution: `conv2d(x, w, stride, padding, dilation)` over an NHWC image batch
//! `[n, h, w, ci]` and an HWIO kernel `[kh, kw, ci, co]`, giving `[n, oh, ow, co]`.
//!
//! Three primitives, all linear in each operand: [`Op::Conv2d`] `(x, w)`, its input
//! gradient [`Op::Conv2dGradInput`] `(g, w) -> dx` and its weight gradient
//! [`Op::Conv2dGradFilter`] `(x, g) -> dw`. Each carries the whole [`Conv`] geometry
//! (every size but the batch is static, checked by the front end in `lower/call.rs`), so
//! the gradients know the shapes they produce and the kernels get their padding as
//! numbers. Since each op is bilinear, the VJPs of the gradients are the other two ops
//! (second derivatives need nothing more).
//!
//! The kernels are `runtime::conv`: a tiled im2col onto the matrix product, or direct
//! AVX-512 kernels; [`strategy`] picks one per layer and pass from the static shape, by
//! a rule measured on issue 18's layers (docs/conv.md). Each takes a scratch buffer from the program's workspace (the `__conv` field `emit/program.rs`
//! adds to a workspace whose program has a conv step), so a step allocates nothing after
//! the first.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::{Dim, Shape};

/// The geometry of one convolution: everything but the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    /// The image's height and width `[h, w]`.
    pub image: [usize; 2],
    /// The kernel's height and width `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Input and output channels `[ci, co]`.
    pub channels: [usize; 2],
    /// Rows and columns between two output pixels' windows.
    pub stride: [usize; 2],
    /// Rows and columns between two taps of a window.
    pub dilation: [usize; 2],
    /// `padding = "same"` (else `"valid"`).
    pub same: bool,
}

impl Conv {
    /// The dilated window's extent along spatial axis `a`: `(k - 1) * d + 1`.
    pub fn window(&self, a: usize) -> usize {
        (self.kernel[a].max(1) - 1) * self.dilation[a] + 1
    }

    /// The output's `[oh, ow]`, or `None` for `"valid"` with a window larger than the
    /// image. TensorFlow's rule: `"same"` gives `ceil(h / s)`, `"valid"`
    /// `floor((h - window) / s) + 1`.
    pub fn output(&self) -> Option<[usize; 2]> {
        let one = |a: usize| {
            let (h, s) = (self.image[a], self.stride[a].max(1));
            if self.same {
                Some(h.div_ceil(s))
            } else {
                h.checked_sub(self.window(a)).map(|r| r / s + 1)
            }
        };
        Some([one(0)?, one(1)?])
    }

    /// The zero rows above and columns left of the image: for `"same"`, half the total
    /// padding rounded down, so that the extra row/column goes at the bottom/right as in
    /// TensorFlow (`max((o - 1) * s + window - h, 0)` in total).
    pub fn pad_before(&self) -> [usize; 2] {
        let Some(out) = self.output().filter(|_| self.same) else { return [0, 0] };
        let one = |a: usize| ((out[a].max(1) - 1) * self.stride[a] + self.window(a)).saturating_sub(self.image[a]) / 2;
        [one(0), one(1)]
    }

    /// FLOPs of one pass (forward, input gradient or weight gradient) for a batch of
    /// `n`: `2 * n * oh * ow * co * kh * kw * ci`, as a `u64` expression.
    pub fn flops(&self, n: TokenStream) -> TokenStream {
        let [oh, ow] = self.output().unwrap_or([0, 0]);
        let per = 2 * (oh * ow * self.channels[1] * self.kernel[0] * self.kernel[1] * self.channels[0]) as u64;
        quote!((#n as u64).saturating_mul(#per))
    }

    fn x_shape(&self, n: Dim) -> Shape {
        Shape(vec![n, Dim::Static(self.image[0]), Dim::Static(self.image[1]), Dim::Static(self.channels[0])])
    }

    fn w_shape(&self) -> Shape {
        let [kh, kw] = self.kernel;
        let [ci, co] = self.channels;
        Shape(vec![Dim::Static(kh), Dim::Static(kw), Dim::Static(ci), Dim::Static(co)])
    }

    fn y_shape(&self, n: Dim) -> Result<Shape, String> {
        let [oh, ow] = self.output().ok_or_else(|| "the window is larger than the image".to_string())?;
        Ok(Shape(vec![n, Dim::Static(oh), Dim::Static(ow), Dim::Static(self.channels[1])]))
    }
}

/// The batch dimension of a rank-4 operand, after checking it is `want` but for it.
fn batch_of(s: &Shape, want: impl Fn(Dim) -> Result<Shape, String>, what: &str) -> Result<Dim, String> {
    let n = s.0.first().cloned().ok_or_else(|| format!("{what} must have rank 4, found {s}"))?;
    let expected = want(n.clone())?;
    if *s != expected {
        return Err(format!("{what} must be {expected}, found {s}"));
    }
    Ok(n)
}

/// `conv2d(x, w)`: `[n, h, w, ci]` and `[kh, kw, ci, co]` give `[n, oh, ow, co]`.
pub fn conv2d_shape(c: &Conv, ins: &[&Shape]) -> Result<Shape, String> {
    let n = batch_of(ins[0], |n| Ok(c.x_shape(n)), "the image")?;
    if *ins[1] != c.w_shape() {
        return Err(format!("the kernel must be {}, found {}", c.w_shape(), ins[1]));
    }
    c.y_shape(n)
}

/// The input gradient `(g, w) -> dx`.
pub fn grad_input_shape(c: &Conv, ins: &[&Shape]) -> Result<Shape, String> {
    let n = batch_of(ins[0], |n| c.y_shape(n), "the output gradient")?;
    if *ins[1] != c.w_shape() {
        return Err(format!("the kernel must be {}, found {}", c.w_shape(), ins[1]));
    }
    Ok(c.x_shape(n))
}

/// The weight gradient `(x, g) -> dw`.
pub fn grad_filter_shape(c: &Conv, ins: &[&Shape]) -> Result<Shape, String> {
    let n = batch_of(ins[0], |n| Ok(c.x_shape(n)), "the image")?;
    batch_of(ins[1], |_| c.y_shape(n.clone()), "the output gradient")?;
    Ok(c.w_shape())
}

/// `y = conv2d(x, w)`: `dx = Conv2dGradInput(g, w)`, `dw = Conv2dGradFilter(x, g)`.
pub fn conv2d_vjp(g: &mut Graph, node: &Node, c: &Conv, adj: NodeId) -> Vec<Option<NodeId>> {
    let (x, w) = (node.inputs[0], node.inputs[1]);
    let dx = g.add(Op::Conv2dGradInput(*c), vec![adj, w], node.span);
    let dw = g.add(Op::Conv2dGradFilter(*c), vec![x, adj], node.span);
    vec![Some(dx), Some(dw)]
}

/// `dx = GradInput(g, w)` is linear in `g` (its adjoint is `conv2d(a, w)`) and in `w`
/// (`GradFilter(a, g)`). Only second derivatives reach this.
pub fn grad_input_vjp(g: &mut Graph, node: &Node, c: &Conv, adj: NodeId) -> Vec<Option<NodeId>> {
    let (gy, w) = (node.inputs[0], node.inputs[1]);
    let dg = g.add(Op::Conv2d(*c), vec![adj, w], node.span);
    let dw = g.add(Op::Conv2dGradFilter(*c), vec![adj, gy], node.span);
    vec![Some(dg), Some(dw)]
}

/// `dw = GradFilter(x, g)`: its adjoint w.r.t. `x` is `GradInput(g, a)`, w.r.t. `g`
/// `conv2d(x, a)`.
pub fn grad_filter_vjp(g: &mut Graph, node: &Node, c: &Conv, adj: NodeId) -> Vec<Option<NodeId>> {
    let (x, gy) = (node.inputs[0], node.inputs[1]);
    let dx = g.add(Op::Conv2dGradInput(*c), vec![gy, adj], node.span);
    let dg = g.add(Op::Conv2d(*c), vec![x, adj], node.span);
    vec![Some(dx), Some(dg)]
}

/// The kernel strategy the compiler picks for one pass of a conv layer (the runtime's
/// `conv::Strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// A tiled im2col onto sgemm.
    Im2col,
    /// The register-blocked AVX-512 kernels on a zero-padded copy of each image.
    Direct,
}

/// Kernel matrices up to this many floats (`kh kw ci x co`, 256 KiB) are read in place
/// by the direct kernels from L2 for each block of output pixels; the largest measured,
/// C1's second conv, is 51200. Beyond it im2col (whose sgemm packs the kernel in L2-sized
/// blocks) until a measurement says otherwise.
const DIRECT_MAX_KERNEL: usize = 1 << 16;

/// Output-gradient images up to this many floats (`oh ow co`, 256 KiB) stay in L2 while
/// the direct weight gradient walks them once per block of taps; the largest measured,
/// C1's first conv, is 25088.
const DIRECT_MAX_GRAD_IMAGE: usize = 1 << 16;

/// The direct input gradient writes `ci` channels a pixel, 16 to a vector: with one
/// (C1's and C2's first layers, `ci = 1`, whose input gradient is never computed) it
/// lost 3x to im2col; with 16 (C2's second conv) it won by 8-15%, with 32 (C1's second)
/// by 41%. Figures in CPU ms per call, docs/conv.md.
const DIRECT_MIN_GRAD_INPUT_CI: usize = 16;

/// The strategy of `op`'s pass, a rule over the static shape measured on C1's and C2's
/// layers (`bench/benches/conv.rs`, docs/conv.md): the direct kernels for the forward
/// pass and the weight gradient (4-6x on first layers, whose depth `kh kw ci` of 9-25
/// is too shallow for sgemm's packing to pay; 15-45% on the second layers), and for the
/// input gradient at stride 1 with at least 16 input channels; im2col otherwise.
pub fn strategy(op: &Op) -> Strategy {
    let (c, pass_ok) = match op {
        Op::Conv2d(c) => (c, true),
        Op::Conv2dGradFilter(c) => {
            let [oh, ow] = c.output().unwrap_or([0, 0]);
            (c, oh * ow * c.channels[1] <= DIRECT_MAX_GRAD_IMAGE)
        }
        Op::Conv2dGradInput(c) => (c, c.stride == [1, 1] && c.channels[0] >= DIRECT_MIN_GRAD_INPUT_CI),
        _ => return Strategy::Im2col,
    };
    let k = c.kernel[0] * c.kernel[1] * c.channels[0];
    if pass_ok && k * c.channels[1] <= DIRECT_MAX_KERNEL {
        Strategy::Direct
    } else {
        Strategy::Im2col
    }
}

/// `op`'s strategy as a runtime path.
pub fn strategy_tokens(op: &Op) -> TokenStream {
    let k = quote!(::modelc::__private::conv);
    match strategy(op) {
        Strategy::Im2col => quote!(#k::Strategy::Im2col),
        Strategy::Direct => quote!(#k::Strategy::Direct),
    }
}

/// The scratch floats of a fused conv + pool call ([`Op::ConvPool`]) for a batch of `n`,
/// as a `u64` expression: `runtime::conv::fused_scratch_len`.
pub fn fused_scratch_tokens(c: &Conv, n: TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::conv);
    let [oh, ow] = c.output().unwrap_or([0, 0]);
    let ([h, w], [kh, kw], [ci, co]) = (c.image, c.kernel, c.channels);
    let ([sh, sw], [dh, dw], [pt, pl]) = (c.stride, c.dilation, c.pad_before());
    let s = strategy_tokens(&Op::Conv2d(*c));
    quote!((#k::fused_scratch_len(
        #s,
        #k::Sizes { n: #n, h: #h, w: #w, ci: #ci, kh: #kh, kw: #kw, co: #co, oh: #oh, ow: #ow },
        #k::Geometry { stride: [#sh, #sw], dilation: [#dh, #dw], pad: [#pt, #pl] },
    ) as u64))
}

/// `op`'s strategy and pass as runtime paths.
fn runtime_names(op: &Op) -> (TokenStream, TokenStream) {
    let k = quote!(::modelc::__private::conv);
    let s = strategy_tokens(op);
    let p = match op {
        Op::Conv2dGradInput(_) => quote!(#k::Pass::GradInput),
        Op::Conv2dGradFilter(_) => quote!(#k::Pass::GradFilter),
        _ => quote!(#k::Pass::Forward),
    };
    (s, p)
}

/// The scratch floats of conv op `op`'s kernel call for a batch of `n` (a `usize`
/// expression), as a `u64` expression: what `runtime::conv::scratch_len_for` gives for
/// its strategy and pass.
pub fn scratch_tokens(op: &Op, c: &Conv, n: TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::conv);
    let [oh, ow] = c.output().unwrap_or([0, 0]);
    let ([h, w], [kh, kw], [ci, co]) = (c.image, c.kernel, c.channels);
    let ([sh, sw], [dh, dw], [pt, pl]) = (c.stride, c.dilation, c.pad_before());
    let (s, p) = runtime_names(op);
    quote!((#k::scratch_len_for(
        #s, #p,
        #k::Sizes { n: #n, h: #h, w: #w, ci: #ci, kh: #kh, kw: #kw, co: #co, oh: #oh, ow: #ow },
        #k::Geometry { stride: [#sh, #sw], dilation: [#dh, #dw], pad: [#pt, #pl] },
    ) as u64))
}

/// Whether `op` is one of the three conv primitives (their kernel calls take the
/// workspace's scratch buffer).
pub fn is_conv(op: &Op) -> bool {
    matches!(op, Op::Conv2d(_) | Op::Conv2dGradInput(_) | Op::Conv2dGradFilter(_))
}

/// The kernel call of a conv primitive writing `out`, with `scratch` a `&mut Vec<f32>`.
pub fn kernel_call(op: &Op, args: &[TokenStream], out: &TokenStream, scratch: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::conv);
    let (c, f) = match op {
        Op::Conv2d(c) => (c, quote!(conv2d_with)),
        Op::Conv2dGradInput(c) => (c, quote!(conv2d_grad_input_with)),
        Op::Conv2dGradFilter(c) => (c, quote!(conv2d_grad_filter_with)),
        _ => return quote!(::core::compile_error!("internal: not a conv op");),
    };
    let ([sh, sw], [dh, dw], [pt, pl]) = (c.stride, c.dilation, c.pad_before());
    let (a, b) = (&args[0], &args[1]);
    let (s, _) = runtime_names(op);
    quote! {
        #k::#f(
            #s, #a, #b,
            #k::Geometry { stride: [#sh, #sw], dilation: [#dh, #dw], pad: [#pt, #pl] },
            #out, #scratch,
        );
    }
}

/// The attributes as written, for `explain()` (defaults left out).
pub fn attrs_text(c: &Conv) -> String {
    let pair = |v: [usize; 2]| if v[0] == v[1] { v[0].to_string() } else { format!("[{}, {}]", v[0], v[1]) };
    let mut s = String::new();
    if c.stride != [1, 1] {
        s += &format!(", stride = {}", pair(c.stride));
    }
    if c.same {
        s += ", padding = \"same\"";
    }
    if c.dilation != [1, 1] {
        s += &format!(", dilation = {}", pair(c.dilation));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(image: [usize; 2], kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], same: bool) -> Conv {
        Conv { image, kernel, channels: [3, 4], stride, dilation, same }
    }

    #[test]
    fn output_sizes_and_padding_follow_tensorflow() {
        // TF: "same" -> ceil(h / s); total pad max((o - 1) s + window - h, 0), top = total / 2.
        let c = conv([28, 28], [5, 5], [1, 1], [1, 1], true);
        assert_eq!((c.output(), c.pad_before()), (Some([28, 28]), [2, 2]));
        // An even kernel: total 1, the extra row at the bottom (top 0).
        let c = conv([7, 6], [2, 4], [1, 1], [1, 1], true);
        assert_eq!((c.output(), c.pad_before()), (Some([7, 6]), [0, 1]));
        // Stride 2 on an odd image: out 4, total (4 - 1) * 2 + 3 - 7 = 2 -> top 1.
        let c = conv([7, 8], [3, 3], [2, 2], [1, 1], true);
        assert_eq!((c.output(), c.pad_before()), (Some([4, 4]), [1, 0]));
        // Dilation 2: window 5.
        let c = conv([9, 9], [3, 3], [1, 1], [2, 2], false);
        assert_eq!((c.output(), c.pad_before()), (Some([5, 5]), [0, 0]));
        let c = conv([8, 11], [3, 3], [2, 3], [1, 1], false);
        assert_eq!(c.output(), Some([3, 3]));
        let c = conv([4, 9], [3, 3], [1, 1], [2, 2], false);
        assert_eq!(c.output(), None);
    }

    #[test]
    fn the_strategy_rule_on_issue_18s_layers() {
        let layer = |image: [usize; 2], kernel: [usize; 2], channels: [usize; 2], same: bool| Conv {
            image,
            kernel,
            channels,
            stride: [1, 1],
            dilation: [1, 1],
            same,
        };
        let passes = |c: Conv| [Op::Conv2d(c), Op::Conv2dGradInput(c), Op::Conv2dGradFilter(c)].map(|op| strategy(&op));
        use Strategy::{Direct, Im2col};
        // C1: conv 5x5x32 same on 28x28x1, conv 5x5x64 same on 14x14x32.
        assert_eq!(passes(layer([28, 28], [5, 5], [1, 32], true)), [Direct, Im2col, Direct]);
        assert_eq!(passes(layer([14, 14], [5, 5], [32, 64], true)), [Direct, Direct, Direct]);
        // C2: conv 3x3x16 valid on 28x28x1, conv 3x3x32 valid on 13x13x16.
        assert_eq!(passes(layer([28, 28], [3, 3], [1, 16], false)), [Direct, Im2col, Direct]);
        assert_eq!(passes(layer([13, 13], [3, 3], [16, 32], false)), [Direct, Direct, Direct]);
        assert_eq!(passes(layer([13, 13], [3, 3], [15, 32], false)), [Direct, Im2col, Direct]);
        // Strided: no direct input gradient; a kernel matrix past 256 KiB: im2col.
        let c = Conv { stride: [2, 2], ..layer([14, 14], [5, 5], [32, 64], true) };
        assert_eq!(passes(c), [Direct, Im2col, Direct]);
        assert_eq!(passes(layer([14, 14], [3, 3], [256, 256], true)), [Im2col, Im2col, Im2col]);
        // A large output-gradient image (224 x 224 x 64 floats): im2col's weight gradient.
        assert_eq!(passes(layer([224, 224], [3, 3], [3, 64], true))[2], Im2col);
    }

    #[test]
    fn gradient_shapes_are_the_operands_shapes() {
        let c = conv([9, 7], [3, 2], [2, 1], [1, 1], false);
        let n = Dim::Sym("batch".into());
        let (x, w, y) = (c.x_shape(n.clone()), c.w_shape(), c.y_shape(n).expect("fits"));
        assert_eq!(y.to_string(), "[batch, 4, 6, 4]");
        assert_eq!(conv2d_shape(&c, &[&x, &w]), Ok(y.clone()));
        assert_eq!(grad_input_shape(&c, &[&y, &w]), Ok(x.clone()));
        assert_eq!(grad_filter_shape(&c, &[&x, &y]), Ok(w.clone()));
        assert!(conv2d_shape(&c, &[&y, &w]).is_err());
        assert!(grad_filter_shape(&c, &[&x, &x]).is_err());
    }

    /// The errors of `output o = {call};` in a model with `x: [batch, 28, 28, 1]` and
    /// `w: [5, 5, 1, 8]` (plus `extra` items): (message, line, column of the token at fault).
    fn errors_of(extra: &str, call: &str) -> Vec<(String, usize, usize)> {
        crate::ops::norm::tests::errors(&format!(
            "struct M {{\n    input x: [batch, 28, 28, 1];\n    param w: [5, 5, 1, 8] = zeros;\n{extra}    output o = {call};\n}}"
        ))
    }

    /// The one error, after checking it is on the first `at` among the arguments (the
    /// call starts at column 15).
    fn one(extra: &str, call: &str, at: &str) -> String {
        let e = errors_of(extra, call);
        assert_eq!(e.len(), 1, "{call}: {e:?}");
        let (m, _, col) = e.into_iter().next().unwrap_or_default();
        // The first `at` among the arguments (after `conv2d(`).
        let want = 22 + call[7..].find(at).unwrap_or(usize::MAX - 22);
        assert_eq!(col, want, "{call}: the error is not on `{at}`: {m}");
        m
    }

    #[test]
    fn every_valid_conv2d_compiles() {
        for call in [
            "conv2d(x, w)",
            "conv2d(x, w, 2)",
            "conv2d(x, w, stride = [2, 1], padding = \"same\")",
            "conv2d(x, w, padding = \"valid\", dilation = 2)",
            "conv2d(x, w, 3, \"same\", [1, 2])",
            "relu(conv2d(conv2d(x, w, padding = \"same\"), v))",
        ] {
            let e = errors_of("    param v: [3, 3, 8, 4] = zeros;\n", call);
            assert!(e.is_empty(), "{call}: {e:?}");
        }
    }

    #[test]
    fn conv2d_errors_point_at_the_argument_at_fault() {
        let m = one("    param v: [3, 3, 2, 4] = zeros;\n", "conv2d(x, v)", "v");
        assert!(m.contains("channel mismatch: `x` [batch, 28, 28, 1] has 1 channel (its last axis) but the kernel `v` [3, 3, 2, 4] takes 2 (its third axis)"), "{m}");
        let m = one("    param v: [29, 3, 1, 4] = zeros;\n", "conv2d(x, v)", "v");
        assert!(
            m.contains("the 29x3 window of `v` is larger than the 28x28 image of `x` with padding \"valid\""),
            "{m}"
        );
        // Dilation 7 makes the 5x5 window 29x29.
        let m = one("", "conv2d(x, w, dilation = 7)", "w");
        assert!(m.contains("window of `w` (dilated by 7: 29x29) is larger"), "{m}");
        // With "same" the same window fits (the padding grows).
        assert!(errors_of("", "conv2d(x, w, padding = \"same\", dilation = 7)").is_empty());
        let m = one("", "conv2d(x, w, padding = \"full\")", "\"full\"");
        assert!(m.contains("`padding` must be \"same\" or \"valid\""), "{m}");
        assert!(m.contains("not \"full\""), "{m}");
        let m = one("", "conv2d(x, w, padding = \"SAME\")", "\"SAME\"");
        assert!(m.contains("did you mean \"same\"?"), "{m}");
        let m = one("", "conv2d(x, w, padding = same)", "same");
        assert!(m.contains("`padding` must be a string literal"), "{m}");
        let m = one("", "conv2d(x, w, stride = 0)", "0");
        assert!(m.contains("`stride` must be at least 1 (a stride of 0 never moves the window), not 0"), "{m}");
        let m = one("", "conv2d(x, w, stride = [1, 0])", "[1, 0]");
        assert!(m.contains("not 0"), "{m}");
        let m = one("", "conv2d(x, w, dilation = 0)", "0");
        assert!(m.contains("`dilation` must be at least 1"), "{m}");
        let m = one("", "conv2d(x, w, stride = [1, 2, 2])", "[1, 2, 2]");
        assert!(m.contains("one integer or a pair `[rows, columns]`, not a list of 3"), "{m}");
        let m = one("    input f: [batch, 784];\n", "conv2d(f, w)", "f");
        assert!(
            m.contains("`f` must be a batch of NHWC images [n, height, width, channels], but it is [batch, 784]"),
            "{m}"
        );
        let m = one("    param v: [5, 5, 8] = zeros;\n", "conv2d(x, v)", "v");
        assert!(m.contains("must be HWIO [height, width, in_channels, out_channels], but it is [5, 5, 8]"), "{m}");
        let m = one("    input z: [batch, h, 28, 1];\n", "conv2d(z, w)", "z");
        assert!(m.contains("the height of `z` [batch, h, 28, 1] must be a number, not the symbolic `h`"), "{m}");
        let m = one("    input z: [batch, 28, 28, c];\n", "conv2d(z, w)", "z");
        assert!(m.contains("the channels (its last axis) of `z`"), "{m}");
    }
}
