//! Elementwise ops: unary functions and broadcasting binary operators.
//!
//! Their lowering is a scalar expression, so that the emitter can fuse a chain of them
//! into one loop over the output.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{Graph, Node, NodeId};
use crate::ops::Op;
use crate::shape::{broadcast, Shape};

/// Elementwise unary primitives. `Sign` and `Step` only appear in derivatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    /// `-x`
    Neg,
    /// `1 / x`
    Recip,
    /// `e^x`
    Exp,
    /// natural logarithm
    Ln,
    /// square root
    Sqrt,
    /// `|x|`
    Abs,
    /// `max(x, 0)`
    Relu,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// hyperbolic tangent
    Tanh,
    /// `ln(1 + e^x)`, computed stably
    Softplus,
    /// -1, 0 or 1
    Sign,
    /// 1 where `x > 0`, else 0 (the derivative of relu)
    Step,
    /// `x^k` for a constant `k` (as `f32::to_bits`)
    Pow(u32),
}

impl Unary {
    /// The name used in `explain()` and in the model language.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Recip => "recip",
            Unary::Exp => "exp",
            Unary::Ln => "ln",
            Unary::Sqrt => "sqrt",
            Unary::Abs => "abs",
            Unary::Relu => "relu",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::Softplus => "softplus",
            Unary::Sign => "sign",
            Unary::Step => "step",
            Unary::Pow(_) => "pow",
        }
    }

    /// Whether the derivative is zero almost everywhere (so gradients stop here).
    pub fn is_piecewise_constant(self) -> bool {
        matches!(self, Unary::Sign | Unary::Step)
    }

    /// Approximate FLOPs per element, for `cost()`.
    pub fn flops(self) -> u64 {
        match self {
            Unary::Neg | Unary::Abs | Unary::Relu | Unary::Sign | Unary::Step => 1,
            Unary::Recip | Unary::Sqrt => 1,
            Unary::Exp | Unary::Ln | Unary::Tanh | Unary::Pow(_) => 4,
            Unary::Sigmoid | Unary::Softplus => 6,
        }
    }

    /// Evaluates the op on a constant (constant folding).
    pub fn eval(self, x: f32) -> f32 {
        match self {
            Unary::Neg => -x,
            Unary::Recip => 1.0 / x,
            Unary::Exp => x.exp(),
            Unary::Ln => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Abs => x.abs(),
            Unary::Relu => x.max(0.0),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Unary::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Unary::Step => f32::from(u8::from(x > 0.0)),
            Unary::Pow(k) => x.powf(f32::from_bits(k)),
        }
    }
}

/// Elementwise binary primitives (NumPy broadcasting). `sub` and `div` are sugar for
/// `a + neg(b)` and `a * recip(b)`; the comparisons give 1.0 or 0.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a * b`
    Mul,
    /// `maximum(a, b)`
    Maximum,
    /// `minimum(a, b)`
    Minimum,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a >= b` (also `b <= a`; and in the derivatives of maximum/minimum)
    Ge,
    /// `a > b` (also `b < a`; and in the derivatives of maximum/minimum)
    Gt,
}

impl Binary {
    /// The name used in `explain()`.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Mul => "mul",
            Binary::Maximum => "maximum",
            Binary::Minimum => "minimum",
            Binary::Eq => "eq",
            Binary::Ne => "ne",
            Binary::Ge => "ge",
            Binary::Gt => "gt",
        }
    }

    /// Whether it is a comparison (not differentiable).
    pub fn is_comparison(self) -> bool {
        matches!(self, Binary::Eq | Binary::Ne | Binary::Ge | Binary::Gt)
    }

    /// Evaluates the op on constants (constant folding).
    pub fn eval(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Mul => a * b,
            Binary::Maximum => a.max(b),
            Binary::Minimum => a.min(b),
            Binary::Eq => f32::from(u8::from(a == b)),
            Binary::Ne => f32::from(u8::from(a != b)),
            Binary::Ge => f32::from(u8::from(a >= b)),
            Binary::Gt => f32::from(u8::from(a > b)),
        }
    }
}

/// The shape rule of every broadcasting op.
pub fn broadcast_shape(ins: &[&Shape]) -> Result<Shape, String> {
    broadcast(ins[0], ins[1])
}

/// Derivatives of the unary ops; `y` is the node itself (its value), `x` its operand.
pub fn unary_vjp(g: &mut Graph, op: Unary, y: NodeId, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let x = node.inputs[0];
    let span = node.span;
    let local = match op {
        Unary::Neg => return vec![Some(g.neg(adj))],
        Unary::Recip => {
            let yy = g.mul(y, y);
            let t = g.mul(adj, yy);
            return vec![Some(g.neg(t))];
        }
        Unary::Exp => y,
        Unary::Ln => g.unary(Unary::Recip, x),
        Unary::Sqrt => {
            let half = g.constant(0.5, span);
            let r = g.unary(Unary::Recip, y);
            g.mul(half, r)
        }
        Unary::Abs => g.unary(Unary::Sign, x),
        // step(relu(x)) == step(x): reading the output lets the pre-activation die at
        // the relu, so bias add and relu fuse into one pass and share one buffer.
        Unary::Relu => g.unary(Unary::Step, y),
        Unary::Sigmoid => {
            let one = g.constant(1.0, span);
            let ny = g.neg(y);
            let one_minus = g.add2(one, ny);
            g.mul(y, one_minus)
        }
        Unary::Tanh => {
            let one = g.constant(1.0, span);
            let yy = g.mul(y, y);
            let nyy = g.neg(yy);
            g.add2(one, nyy)
        }
        Unary::Softplus => g.unary(Unary::Sigmoid, x),
        Unary::Sign | Unary::Step => return vec![None],
        Unary::Pow(bits) => {
            let k = f32::from_bits(bits);
            let kc = g.constant(k, span);
            let p = g.unary(Unary::Pow((k - 1.0).to_bits()), x);
            g.mul(kc, p)
        }
    };
    vec![Some(g.mul(adj, local))]
}

/// Derivatives of the binary ops, summed back over broadcast axes.
pub fn binary_vjp(g: &mut Graph, op: Binary, node: &Node, adj: NodeId) -> Vec<Option<NodeId>> {
    let (a, b) = (node.inputs[0], node.inputs[1]);
    let (sa, sb) = (g.shape(a).clone(), g.shape(b).clone());
    let (da, db) = match op {
        Binary::Add => (adj, adj),
        Binary::Mul => (g.mul(adj, b), g.mul(adj, a)),
        Binary::Maximum | Binary::Minimum => {
            // Ties go to `a`, as in TensorFlow.
            let (mask_a, mask_b) = if op == Binary::Maximum {
                (g.binary(Binary::Ge, a, b), g.binary(Binary::Gt, b, a))
            } else {
                (g.binary(Binary::Ge, b, a), g.binary(Binary::Gt, a, b))
            };
            (g.mul(adj, mask_a), g.mul(adj, mask_b))
        }
        Binary::Eq | Binary::Ne | Binary::Ge | Binary::Gt => return vec![None, None],
    };
    vec![Some(g.sum_to(da, &sa)), Some(g.sum_to(db, &sb))]
}

/// `f32` as tokens: a suffixed literal, or `f32::from_bits` for non-finite values.
pub fn f32_tokens(v: f32) -> TokenStream {
    if v.is_finite() {
        let lit = proc_macro2::Literal::f32_suffixed(v);
        quote!(#lit)
    } else {
        let bits = v.to_bits();
        quote!(f32::from_bits(#bits))
    }
}

/// The scalar expression of a unary op.
pub fn unary_expr(op: Unary, a: &TokenStream) -> TokenStream {
    let k = quote!(::modelc::__private::kernels);
    match op {
        Unary::Neg => quote!((-#a)),
        Unary::Recip => quote!((1.0f32 / #a)),
        Unary::Exp => quote!(#k::exp(#a)),
        Unary::Ln => quote!(#k::ln(#a)),
        Unary::Sqrt => quote!(f32::sqrt(#a)),
        Unary::Abs => quote!(f32::abs(#a)),
        Unary::Relu => quote!(#k::relu(#a)),
        Unary::Sigmoid => quote!(#k::sigmoid(#a)),
        Unary::Tanh => quote!(#k::tanh(#a)),
        Unary::Softplus => quote!(#k::softplus(#a)),
        Unary::Sign => quote!(#k::sign(#a)),
        Unary::Step => quote!(#k::step(#a)),
        Unary::Pow(bits) => {
            let k_val = f32::from_bits(bits);
            if k_val == 2.0 {
                quote!(#k::square(#a))
            } else if k_val.fract() == 0.0 && k_val.abs() < 64.0 {
                let n = k_val as i32;
                quote!(f32::powi(#a, #n))
            } else {
                let kt = f32_tokens(k_val);
                quote!(f32::powf(#a, #kt))
            }
        }
    }
}

/// The scalar expression of a binary op.
pub fn binary_expr(op: Binary, a: &TokenStream, b: &TokenStream) -> TokenStream {
    match op {
        Binary::Add => quote!((#a + #b)),
        Binary::Mul => quote!((#a * #b)),
        Binary::Maximum => quote!(f32::max(#a, #b)),
        Binary::Minimum => quote!(f32::min(#a, #b)),
        Binary::Eq => quote!((((#a) == (#b)) as u8 as f32)),
        Binary::Ne => quote!((((#a) != (#b)) as u8 as f32)),
        Binary::Ge => quote!((((#a) >= (#b)) as u8 as f32)),
        Binary::Gt => quote!((((#a) > (#b)) as u8 as f32)),
    }
}

/// Whether `op` is elementwise-unary `u` (a small helper for the simplifier).
pub fn is_unary(op: &Op, u: Unary) -> bool {
    *op == Op::Unary(u)
}
