//! The primitive ops. Each family keeps its shape rule, its derivative (VJP) and its
//! lowering to Rust side by side, one file per family; the `match`es below have no
//! `_ =>` arm, so adding an op makes the compiler list every place it must be handled.
//!
//! Surface ops that are sugar (`sub`, `div`, `mean`, `square`, `log`, ...) never reach
//! this level: `lower.rs` rewrites them into these primitives, so only primitives need
//! derivative rules.

pub mod conv;
pub mod elementwise;
pub mod index;
pub mod linalg;
pub mod nn;
pub mod norm;
pub mod pool;
pub mod random;
pub mod reduce;
pub mod shape;

use proc_macro2::TokenStream;

use crate::ir::{DType, Graph, NodeId};
use crate::shape::Shape;

pub use elementwise::{Binary, Unary};

/// A primitive op. Attributes (axes, target shapes) are part of the op, so that
/// hash-consing treats `sum(x, axis = 0)` and `sum(x, axis = 1)` as different nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The model's input with this index (a placeholder).
    Input(usize),
    /// The model's param with this index (a variable).
    Param(usize),
    /// A scalar constant, as `f32::to_bits`.
    Const(u32),
    /// The scalar product of these symbolic dimensions, as f32 (e.g. `batch` in a mean).
    DimProduct(Vec<String>),
    /// An elementwise unary op.
    Unary(Unary),
    /// An elementwise binary op with NumPy broadcasting.
    Binary(Binary),
    /// `op(a) x op(b)` with `op` a transpose where the flag is set.
    MatMul {
        /// Transpose the left operand.
        ta: bool,
        /// Transpose the right operand.
        tb: bool,
    },
    /// Matrix transpose.
    Transpose,
    /// Sum over `axes` (sorted, distinct); all axes gives a full reduction.
    Sum {
        /// The reduced axes.
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keepdims: bool,
    },
    /// Maximum over `axes` (sorted, distinct).
    Max {
        /// The reduced axes.
        axes: Vec<usize>,
        /// Keep them as size 1.
        keepdims: bool,
    },
    /// Index of the maximum along one axis (u32); not differentiable.
    Argmax {
        /// The reduced axis.
        axis: usize,
        /// Keep it as size 1.
        keepdims: bool,
    },
    /// NumPy broadcast to this shape (the adjoint of [`Op::SumTo`]).
    Broadcast(Shape),
    /// Sum down to this shape (the adjoint of broadcasting).
    SumTo(Shape),
    /// The same elements, in row-major order, in this shape (`ops/shape.rs`). The
    /// emitter gives it a view of its operand's buffer where it can (no copy).
    Reshape(Shape),
    /// Concatenation of the operands along a static axis.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// The range `start..end` of a static axis.
    Slice {
        /// The axis.
        axis: usize,
        /// The first index kept.
        start: usize,
        /// One past the last index kept.
        end: usize,
    },
    /// Zeros around the operand along a static axis (the adjoint of [`Op::Slice`]).
    Pad {
        /// The axis.
        axis: usize,
        /// Zeros before the operand.
        before: usize,
        /// Zeros after it.
        after: usize,
    },
    /// `where(cond, a, b)`: elementwise `a` where `cond != 0`, else `b`, broadcasting.
    Select,
    /// Softmax along an axis.
    Softmax(usize),
    /// Log-softmax along an axis (stable: `z - max - ln(sum(exp(z - max)))`).
    LogSoftmax(usize),
    /// `softmax_cross_entropy(logits, labels)` along the last axis; fused and stable.
    SoftmaxXent,
    /// The fused gradient of [`Op::SoftmaxXent`] w.r.t. the logits:
    /// `(softmax(z) * sum(y, -1) - y) * g[..., None]` for operands `(z, y, g)`.
    SoftmaxXentGrad,
    /// Elementwise `sigmoid_cross_entropy(logits, labels)`; stable.
    SigmoidXent,
    /// Identity whose derivative is zero.
    StopGradient,
    /// `one_hot(ids, depth)`: u32 `[..]` to f32 `[.., depth]`.
    OneHot {
        /// The number of classes.
        depth: usize,
    },
    /// `sparse_softmax_cross_entropy(logits, labels)`: f32 `[.., c]` and u32 `[..]` to
    /// `[..]`; fused and stable.
    SparseXent,
    /// The fused gradient of [`Op::SparseXent`] w.r.t. the logits:
    /// `(softmax(z) - one_hot(y)) * g[..., None]` for operands `(z, y, g)`.
    SparseXentGrad,
    /// `gather(table, ids)`: f32 `[v, d..]` and u32 `[i..]` to `[i.., d..]`.
    Gather,
    /// The adjoint of [`Op::Gather`]: `(g, ids)` to `[rows, d..]`, each row of `g` added
    /// into the row its id names.
    ScatterAdd {
        /// The table's rows.
        rows: usize,
        /// The adjoint of [`Op::GatherSum`]: `g` is `[p.., d..]` for ids `[p.., t]`, and
        /// each bag's row is added into the rows of all its ids.
        bags: bool,
    },
    /// `sum(gather(table, ids), axis = -1)` in one pass (an embedding bag): f32
    /// `[v, d..]` and u32 `[p.., t]` to `[p.., d..]`; see [`index::gather_sum_rewrite`].
    GatherSum,
    /// A comparison (`Eq`, `Gt`, `Ge`) of two u32 tensors, with broadcasting: 1.0 / 0.0.
    IndexCompare(Binary),
    /// `layer_norm` along `axis` with `epsilon` (as `f32::to_bits`); see [`norm`].
    LayerNorm {
        /// The normalized axis.
        axis: usize,
        /// The variance guard, as `f32::to_bits`.
        epsilon: u32,
    },
    /// The fused gradient of [`Op::LayerNorm`] for operands `(x, g)`.
    LayerNormGrad {
        /// The normalized axis.
        axis: usize,
        /// The variance guard, as `f32::to_bits`.
        epsilon: u32,
    },
    /// The offset in its window of each output's first maximum (u32, the pooled shape):
    /// what `max_pool`'s forward pass records for its gradient; see [`pool`].
    PoolArgmax(pool::Pool),
    /// `max_pool`'s value for operands `(x, argmax)`: the cell each offset names.
    PoolPick(pool::Pool),
    /// `max_pool`'s gradient for operands `(g, argmax)`: each `g` added to the one cell
    /// its offset names, zeros elsewhere (the image's shape).
    MaxPoolGrad(pool::Pool),
    /// `avg_pool`: the mean over each window's valid cells.
    AvgPool(pool::Pool),
    /// `avg_pool`'s gradient for the operand `g`: `g / count` to each valid cell.
    AvgPoolGrad(pool::Pool),
    /// `max_pool(conv2d(x, w) + bias)` (operands `(x, w)` or `(x, w, bias)`) as one
    /// kernel: the pooled value (f32) or its u8 argmax, the pair computed by one call;
    /// made after differentiation by [`pool::fuse_conv_pool`].
    ConvPool(pool::ConvPool),
    /// `conv2d(x, w)` over NHWC `x` and HWIO `w`; see [`conv`].
    Conv2d(conv::Conv),
    /// The input gradient of [`Op::Conv2d`] for operands `(g, w)`.
    Conv2dGradInput(conv::Conv),
    /// The weight gradient of [`Op::Conv2d`] for operands `(x, g)`.
    Conv2dGradFilter(conv::Conv),
    /// A dropout mask (a leaf of its `a`'s shape, filled by the training programs); see
    /// [`random`].
    DropoutMask {
        /// Which `dropout` call of the model (its node count then), so that two calls
        /// never share a mask.
        index: usize,
        /// The drop rate, as `f32::to_bits`.
        rate: u32,
    },
    /// A node the compiler failed to build (an internal error, never user-visible
    /// unless there is a compiler bug; reported as an error, never a panic).
    Invalid(String),
}

impl Op {
    /// The type rule: the element type of the result for these operand types, or why
    /// they don't fit. Only the index family, `argmax` and the shape ops that move
    /// elements (reshape, concat, slice, where's branches) see u32; every other op takes
    /// and gives f32 (the front end explains a mismatch with the user's names first).
    pub fn dtype(&self, ins: &[DType]) -> Result<DType, String> {
        use DType::{F32, U32};
        let (want, out): (&[DType], DType) = match self {
            Op::Input(_) | Op::Param(_) => return Err("leaf nodes are made by `Graph::leaf`".to_string()),
            Op::Argmax { .. } => (&[F32], U32),
            Op::OneHot { .. } => (&[U32], F32),
            Op::SparseXent | Op::Gather | Op::GatherSum => (&[F32, U32], F32),
            Op::SparseXentGrad => (&[F32, U32, F32], F32),
            Op::ScatterAdd { .. } => (&[F32, U32], F32),
            Op::IndexCompare(_) => (&[U32, U32], F32),
            Op::PoolArgmax(_) => (&[F32], U32),
            Op::PoolPick(_) => (&[F32, U32], F32),
            // The offsets of `PoolArgmax` (u32) or of the fused `ConvPool` (u8).
            Op::MaxPoolGrad(_) => (if ins.get(1) == Some(&DType::U8) { &[F32, DType::U8] } else { &[F32, U32] }, F32),
            Op::ConvPool(c) => {
                (if c.bias { &[F32, F32, F32] } else { &[F32, F32] }, if c.argmax { DType::U8 } else { F32 })
            }
            Op::DropoutMask { .. } => return Err("dropout masks are made by `Graph::leaf`".to_string()),
            // The shape ops move elements: they take either type, all operands alike.
            Op::Reshape(_) | Op::Concat { .. } | Op::Slice { .. } | Op::Select => return shape::dtype(self, ins),
            Op::Invalid(_)
            | Op::Pad { .. }
            | Op::LayerNorm { .. }
            | Op::LayerNormGrad { .. }
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::Conv2d(_)
            | Op::Conv2dGradInput(_)
            | Op::Conv2dGradFilter(_)
            | Op::Const(_)
            | Op::DimProduct(_)
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::MatMul { .. }
            | Op::Transpose
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Broadcast(_)
            | Op::SumTo(_)
            | Op::Softmax(_)
            | Op::LogSoftmax(_)
            | Op::SoftmaxXent
            | Op::SoftmaxXentGrad
            | Op::SigmoidXent
            | Op::StopGradient => {
                return match ins.iter().position(|&d| d != F32) {
                    None => Ok(F32),
                    Some(i) => Err(format!("operand {} is {} but this op takes f32", i + 1, ins[i])),
                };
            }
        };
        match ins.iter().zip(want).position(|(a, b)| a != b) {
            None => Ok(out),
            Some(i) => Err(format!("operand {} is {} but must be {}", i + 1, ins[i], want[i])),
        }
    }

    /// The shape rule: the output shape for these operand shapes, or why they don't fit.
    pub fn shape(&self, ins: &[&Shape]) -> Result<Shape, String> {
        match self {
            Op::Input(_) | Op::Param(_) | Op::DropoutMask { .. } | Op::Invalid(_) => {
                Err("leaf nodes are made by `Graph::leaf`".to_string())
            }
            Op::Const(_) | Op::DimProduct(_) => Ok(Shape::scalar()),
            Op::Unary(_) | Op::StopGradient => Ok(ins[0].clone()),
            Op::Binary(_) | Op::SigmoidXent => elementwise::broadcast_shape(ins),
            Op::MatMul { ta, tb } => linalg::matmul_shape(ins, *ta, *tb),
            Op::Transpose => linalg::transpose_shape(ins),
            Op::Sum { axes, keepdims } => reduce::sum_shape(ins[0], axes, *keepdims),
            Op::Max { axes, keepdims } => reduce::sum_shape(ins[0], axes, *keepdims),
            Op::Argmax { axis, keepdims } => reduce::sum_shape(ins[0], &[*axis], *keepdims),
            Op::Broadcast(to) => reduce::broadcast_shape(ins[0], to),
            Op::SumTo(to) => reduce::sum_to_shape(ins[0], to),
            Op::Reshape(to) => shape::reshape_shape(ins[0], to),
            Op::Concat { axis } => shape::concat_shape(ins, *axis),
            Op::Slice { axis, start, end } => shape::slice_shape(ins[0], *axis, *start, *end),
            Op::Pad { axis, before, after } => shape::pad_shape(ins[0], *axis, *before, *after),
            Op::Select => shape::select_shape(ins),
            Op::Softmax(axis) | Op::LogSoftmax(axis) => nn::softmax_shape(ins[0], *axis),
            Op::SoftmaxXent => nn::xent_shape(ins),
            Op::SoftmaxXentGrad => nn::xent_grad_shape(ins),
            Op::OneHot { depth } => Ok(index::one_hot_shape(ins[0], *depth)),
            Op::SparseXent => index::sparse_xent_shape(ins),
            Op::SparseXentGrad => index::sparse_xent_grad_shape(ins),
            Op::Gather => index::gather_shape(ins),
            Op::ScatterAdd { rows, bags } => index::scatter_add_shape(ins, *rows, *bags),
            Op::GatherSum => index::gather_sum_shape(ins),
            Op::IndexCompare(_) => index::compare_shape(ins),
            Op::LayerNorm { axis, .. } => norm::layer_norm_shape(ins[0], *axis),
            Op::LayerNormGrad { axis, .. } => norm::layer_norm_grad_shape(ins, *axis),
            Op::PoolArgmax(p) | Op::AvgPool(p) => pool::pool_shape(ins[0], p),
            Op::PoolPick(p) => pool::pick_shape(ins, p),
            Op::MaxPoolGrad(p) | Op::AvgPoolGrad(p) => pool::grad_shape(ins, p),
            Op::ConvPool(c) => pool::conv_pool_shape(c, ins),
            Op::Conv2d(c) => conv::conv2d_shape(c, ins),
            Op::Conv2dGradInput(c) => conv::grad_input_shape(c, ins),
            Op::Conv2dGradFilter(c) => conv::grad_filter_shape(c, ins),
        }
    }

    /// Whether gradients flow through this op at all (`argmax`, `==` and
    /// `stop_gradient` block them; leaves have no operands).
    pub fn blocks_gradient(&self) -> bool {
        match self {
            Op::Argmax { .. } | Op::StopGradient | Op::OneHot { .. } | Op::IndexCompare(_) | Op::PoolArgmax(_) => true,
            Op::Binary(b) => b.is_comparison(),
            Op::Unary(u) => u.is_piecewise_constant(),
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::DimProduct(_)
            | Op::MatMul { .. }
            | Op::Transpose
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Broadcast(_)
            | Op::SumTo(_)
            | Op::Reshape(_)
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Select
            | Op::Softmax(_)
            | Op::LogSoftmax(_)
            | Op::SoftmaxXent
            | Op::SoftmaxXentGrad
            | Op::SigmoidXent
            | Op::SparseXent
            | Op::SparseXentGrad
            | Op::Gather
            | Op::GatherSum
            | Op::ScatterAdd { .. }
            | Op::LayerNorm { .. }
            | Op::LayerNormGrad { .. }
            | Op::PoolPick(_)
            | Op::MaxPoolGrad(_)
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::Conv2d(_)
            | Op::Conv2dGradInput(_)
            | Op::Conv2dGradFilter(_)
            | Op::DropoutMask { .. }
            | Op::Invalid(_) => false,
            // The argmax is an index; the value differentiates (`pool::conv_pool_vjp`).
            Op::ConvPool(c) => c.argmax,
        }
    }

    /// Whether the op computes each output element from the same-index (broadcast)
    /// elements of its operands only, so that chains of such ops fuse into one loop.
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::SigmoidXent | Op::StopGradient | Op::Select)
    }

    /// The vector-Jacobian product: given the adjoint `g` of node `id`, the adjoint of
    /// each operand (`None` where no gradient flows). Built from graph nodes, so the
    /// simplifier cleans the backward graph as it cleans the forward one.
    pub fn vjp(graph: &mut Graph, id: NodeId, g: NodeId) -> Vec<Option<NodeId>> {
        let node = graph.node(id).clone();
        match &node.op {
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::DimProduct(_)
            | Op::DropoutMask { .. }
            | Op::Invalid(_) => {
                vec![]
            }
            Op::StopGradient | Op::Argmax { .. } => vec![None],
            Op::Unary(u) => elementwise::unary_vjp(graph, *u, id, &node, g),
            Op::Binary(b) => elementwise::binary_vjp(graph, *b, &node, g),
            Op::SigmoidXent => nn::sigmoid_xent_vjp(graph, &node, g),
            Op::MatMul { ta, tb } => linalg::matmul_vjp(graph, &node, *ta, *tb, g),
            Op::Transpose => linalg::transpose_vjp(graph, &node, g),
            Op::Sum { axes, keepdims } => reduce::sum_vjp(graph, &node, axes, *keepdims, g),
            Op::Max { axes, keepdims } => reduce::max_vjp(graph, id, &node, axes, *keepdims, g),
            Op::Broadcast(_) => reduce::broadcast_vjp(graph, &node, g),
            Op::SumTo(_) => reduce::sum_to_vjp(graph, &node, g),
            Op::Reshape(_) => shape::reshape_vjp(graph, &node, g),
            Op::Concat { axis } => shape::concat_vjp(graph, &node, *axis, g),
            Op::Slice { axis, start, end } => shape::slice_vjp(graph, &node, *axis, *start, *end, g),
            Op::Pad { axis, before, .. } => shape::pad_vjp(graph, &node, *axis, *before, g),
            Op::Select => shape::select_vjp(graph, &node, g),
            Op::Softmax(axis) => nn::softmax_vjp(graph, id, &node, *axis, g),
            Op::LogSoftmax(axis) => nn::log_softmax_vjp(graph, id, &node, *axis, g),
            Op::SoftmaxXent => nn::xent_vjp(graph, &node, g),
            Op::SoftmaxXentGrad | Op::SparseXentGrad => vec![None, None, None],
            Op::OneHot { .. } => vec![None],
            Op::IndexCompare(_) => vec![None, None],
            Op::SparseXent => index::sparse_xent_vjp(graph, &node, g),
            Op::Gather => index::gather_vjp(graph, &node, g),
            Op::ScatterAdd { bags, .. } => index::scatter_add_vjp(graph, &node, *bags, g),
            Op::GatherSum => index::gather_sum_vjp(graph, &node, g),
            Op::LayerNorm { axis, epsilon } => norm::layer_norm_vjp(graph, &node, *axis, *epsilon, g),
            Op::LayerNormGrad { .. } => vec![None, None],
            Op::PoolArgmax(_) => vec![None],
            Op::PoolPick(p) => pool::pick_vjp(graph, &node, p, g),
            Op::AvgPool(p) => pool::avg_vjp(graph, &node, p, g),
            // Gradients are differentiated once (no second order through pooling).
            Op::MaxPoolGrad(_) => vec![None, None],
            Op::AvgPoolGrad(_) => vec![None],
            Op::ConvPool(c) => pool::conv_pool_vjp(graph, &node, c, g),
            Op::Conv2d(c) => conv::conv2d_vjp(graph, &node, c, g),
            Op::Conv2dGradInput(c) => conv::grad_input_vjp(graph, &node, c, g),
            Op::Conv2dGradFilter(c) => conv::grad_filter_vjp(graph, &node, c, g),
        }
    }

    /// For an elementwise op: the scalar expression computing one output element from
    /// its operands' scalar expressions.
    pub fn scalar_expr(&self, args: &[TokenStream]) -> TokenStream {
        match self {
            Op::Unary(u) => elementwise::unary_expr(*u, &args[0]),
            Op::Binary(b) => elementwise::binary_expr(*b, &args[0], &args[1]),
            Op::SigmoidXent => nn::sigmoid_xent_expr(&args[0], &args[1]),
            Op::StopGradient => args[0].clone(),
            Op::Select => shape::select_expr(&args[0], &args[1], &args[2]),
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::DimProduct(_)
            | Op::MatMul { .. }
            | Op::Transpose
            | Op::Sum { .. }
            | Op::Max { .. }
            | Op::Argmax { .. }
            | Op::Broadcast(_)
            | Op::SumTo(_)
            | Op::Reshape(_)
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Softmax(_)
            | Op::LogSoftmax(_)
            | Op::SoftmaxXent
            | Op::SoftmaxXentGrad
            | Op::OneHot { .. }
            | Op::SparseXent
            | Op::SparseXentGrad
            | Op::Gather
            | Op::GatherSum
            | Op::ScatterAdd { .. }
            | Op::IndexCompare(_)
            | Op::LayerNorm { .. }
            | Op::LayerNormGrad { .. }
            | Op::PoolArgmax(_)
            | Op::PoolPick(_)
            | Op::MaxPoolGrad(_)
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::Conv2d(_)
            | Op::Conv2dGradInput(_)
            | Op::Conv2dGradFilter(_)
            | Op::ConvPool(_)
            | Op::DropoutMask { .. }
            | Op::Invalid(_) => unreachable!("scalar_expr is only called for elementwise ops"),
        }
    }

    /// For a non-elementwise op: the statement that computes it into `out` (an
    /// `ArrayViewMut`) from operand views `args`, through a runtime kernel.
    pub fn kernel_call(&self, args: &[TokenStream], out: &TokenStream) -> TokenStream {
        use quote::quote;
        let k = quote!(::modelc::__private::kernels);
        match self {
            Op::MatMul { ta, tb } => {
                let (a, b) = (&args[0], &args[1]);
                quote!(#k::matmul(#a, #ta, #b, #tb, #out);)
            }
            Op::Transpose => {
                let a = &args[0];
                quote!(#k::transpose(#a, #out);)
            }
            Op::Sum { axes, .. } => {
                let a = &args[0];
                quote!(#k::sum_axes(#a.into_dyn(), &[#(#axes),*], #out.into_dyn());)
            }
            Op::Max { axes, .. } => {
                let a = &args[0];
                quote!(::modelc::__private::shape::max_axes(#a.into_dyn(), &[#(#axes),*], #out.into_dyn());)
            }
            Op::Argmax { axis, .. } => {
                let a = &args[0];
                quote!(#k::argmax_axis(#a.into_dyn(), #axis, #out.into_dyn());)
            }
            Op::Broadcast(_) => {
                let a = &args[0];
                quote!(#k::broadcast_to(#a.into_dyn(), #out.into_dyn());)
            }
            Op::SumTo(_) => {
                let a = &args[0];
                quote!(#k::sum_to(#a.into_dyn(), #out.into_dyn());)
            }
            Op::Reshape(_) => {
                let a = &args[0];
                quote!(#k::reshape(#a.into_dyn(), #out.into_dyn());)
            }
            Op::Concat { .. } | Op::Slice { .. } | Op::Pad { .. } | Op::Select => shape::kernel_call(self, args, out),
            Op::Softmax(axis) => {
                let a = &args[0];
                quote!(#k::softmax(#a.into_dyn(), #axis, #out.into_dyn());)
            }
            Op::LogSoftmax(axis) => {
                let a = &args[0];
                quote!(#k::log_softmax(#a.into_dyn(), #axis, #out.into_dyn());)
            }
            Op::SoftmaxXent => {
                let (z, y) = (&args[0], &args[1]);
                quote!(#k::softmax_xent(#z.into_dyn(), #y.into_dyn(), #out.into_dyn());)
            }
            Op::SoftmaxXentGrad => {
                let (z, y, g) = (&args[0], &args[1], &args[2]);
                quote!(#k::softmax_xent_grad(#z.into_dyn(), #y.into_dyn(), #g.into_dyn(), #out.into_dyn());)
            }
            Op::OneHot { .. }
            | Op::SparseXent
            | Op::SparseXentGrad
            | Op::Gather
            | Op::GatherSum
            | Op::ScatterAdd { .. }
            | Op::IndexCompare(_) => index::kernel_call(self, args, out),
            Op::LayerNorm { axis, epsilon } => norm::layer_norm_call(&args[0], *axis, *epsilon, out),
            Op::LayerNormGrad { axis, epsilon } => norm::layer_norm_grad_call(&args[0], &args[1], *axis, *epsilon, out),
            Op::DropoutMask { rate, .. } => random::mask_call(*rate, out),
            Op::PoolArgmax(_) | Op::PoolPick(_) | Op::MaxPoolGrad(_) | Op::AvgPool(_) | Op::AvgPoolGrad(_) => {
                pool::kernel_call(self, args, out)
            }
            // A conv kernel takes a scratch buffer: the `__conv` field that
            // `emit/program.rs` adds to the workspace of every program with a conv step.
            Op::Conv2d(_) | Op::Conv2dGradInput(_) | Op::Conv2dGradFilter(_) => {
                conv::kernel_call(self, args, out, &quote!(&mut __ws.__conv))
            }
            // One output of the pair alone (a program that needs only the value, as
            // inference); the planner computes both in one call where both are needed.
            Op::ConvPool(c) => {
                let (value, arg) = if c.argmax { (None, Some(out.clone())) } else { (Some(out.clone()), None) };
                pool::conv_pool_call(c, args, value.as_ref(), arg.as_ref(), &quote!(&mut __ws.__conv))
            }
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::DimProduct(_)
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::SigmoidXent
            | Op::StopGradient
            | Op::Invalid(_) => unreachable!("kernel_call is only called for kernel ops"),
        }
    }

    /// Floating-point operations per output element (or per input element for
    /// reductions), for `cost()`. Matrix products are counted by `linalg`.
    pub fn flops_per_element(&self) -> u64 {
        match self {
            Op::Unary(u) => u.flops(),
            Op::Binary(_) | Op::StopGradient | Op::Select => 1,
            Op::SigmoidXent => 6,
            Op::Sum { .. } | Op::Max { .. } | Op::Argmax { .. } | Op::SumTo(_) => 1,
            Op::Softmax(_) | Op::LogSoftmax(_) => 5,
            Op::SoftmaxXent | Op::SoftmaxXentGrad | Op::SparseXent | Op::SparseXentGrad => 6,
            Op::ScatterAdd { .. } | Op::IndexCompare(_) => 1,
            Op::OneHot { .. } | Op::Gather => 0,
            // Counted per id row in `cost()` (emit/api.rs), not per output element.
            Op::GatherSum => 1,
            // Two passes for the statistics, one to normalize; the gradient's two more.
            Op::LayerNorm { .. } => 5,
            Op::LayerNormGrad { .. } => 10,
            Op::DropoutMask { .. } => 1,
            // Per output element: a compare or an add per window cell; the scatter of
            // max's gradient one add; the pick a copy.
            Op::PoolArgmax(p) | Op::AvgPool(p) | Op::AvgPoolGrad(p) => p.cells(),
            Op::MaxPoolGrad(_) => 1,
            Op::PoolPick(_) => 0,
            Op::Broadcast(_)
            | Op::Reshape(_)
            | Op::Transpose
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::Pad { .. } => 0,
            Op::MatMul { .. } => 2,
            // Counted per pass by `conv::Conv::flops` (`emit/api.rs`).
            Op::Conv2d(_) | Op::Conv2dGradInput(_) | Op::Conv2dGradFilter(_) => 2,
            // The conv counted per pass (`emit/api.rs`), plus the pooling's compare per
            // window cell on the value (the argmax, computed with it, adds nothing).
            Op::ConvPool(c) => u64::from(!c.argmax) * c.pool.cells(),
            Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::DimProduct(_) | Op::Invalid(_) => 0,
        }
    }
}
