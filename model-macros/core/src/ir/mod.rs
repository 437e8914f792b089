//! The graph IR: an arena of primitive-op nodes, hash-consed so that equal
//! subexpressions are one node (common-subexpression elimination by construction).
//!
//! Every node carries its shape (inferred by the op's shape rule when the node is added)
//! and the span of the user tokens it came from, so that later stages (autodiff's "no
//! gradient" check) can still point at source code.

pub mod explain;

use std::collections::HashMap;

use proc_macro2::Span;

use crate::ops::{Binary, Op, Unary};
use crate::shape::{Dim, Shape};

/// The index of a node in its [`Graph`].
pub type NodeId = usize;

/// A tensor's element type: f32 values, or u32 indices (class labels, token ids,
/// `argmax`'s result). Indices are never differentiated and no arithmetic takes them;
/// they feed `one_hot`, `gather`, `sparse_softmax_cross_entropy` and comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// `f32`
    #[default]
    F32,
    /// `u32` indices
    U32,
    /// `u8` window offsets: only the argmax of the fused conv + max pool
    /// (`ops::pool::ConvPool`), never a user-visible type.
    U8,
}

impl DType {
    /// The Rust element type's name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
            DType::U8 => "u8",
        }
    }

    /// The Rust element type.
    pub fn tokens(self) -> proc_macro2::TokenStream {
        match self {
            DType::F32 => quote::quote!(f32),
            DType::U32 => quote::quote!(u32),
            DType::U8 => quote::quote!(u8),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One node: an op applied to earlier nodes.
#[derive(Clone, Debug)]
pub struct Node {
    /// The primitive op.
    pub op: Op,
    /// Its operands (always earlier nodes: the arena is in topological order).
    pub inputs: Vec<NodeId>,
    /// Its inferred shape.
    pub shape: Shape,
    /// Its element type (inferred by the op's type rule, [`Op::dtype`]).
    pub dtype: DType,
    /// The user tokens it came from (the whole model for nodes made by the compiler).
    pub span: Span,
}

/// The arena. Nodes are only ever appended, so ids are a topological order.
#[derive(Clone, Default)]
pub struct Graph {
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    dedup: HashMap<(Op, Vec<NodeId>), NodeId>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The shape of a node.
    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.nodes[id].shape
    }

    /// The element type of a node.
    pub fn dtype(&self, id: NodeId) -> DType {
        self.nodes[id].dtype
    }

    /// Adds `op(inputs)`, or returns the existing equal node. `Err` is the shape rule's
    /// message; the front end turns it into a spanned diagnostic.
    pub fn try_add(&mut self, op: Op, inputs: Vec<NodeId>, span: Span) -> Result<NodeId, String> {
        let key = (op, inputs);
        if let Some(&id) = self.dedup.get(&key) {
            return Ok(id);
        }
        let dtypes: Vec<DType> = key.1.iter().map(|&i| self.nodes[i].dtype).collect();
        let dtype = key.0.dtype(&dtypes)?;
        let shapes: Vec<&Shape> = key.1.iter().map(|&i| &self.nodes[i].shape).collect();
        let shape = key.0.shape(&shapes)?;
        let id = self.nodes.len();
        self.nodes.push(Node { op: key.0.clone(), inputs: key.1.clone(), shape, dtype, span });
        self.dedup.insert(key, id);
        Ok(id)
    }

    /// Adds a node made by the compiler itself (autodiff, simplification), whose shapes
    /// are correct by construction: a failure here is a compiler bug, reported as an
    /// error at `span` rather than a panic.
    pub fn add(&mut self, op: Op, inputs: Vec<NodeId>, span: Span) -> NodeId {
        match self.try_add(op.clone(), inputs.clone(), span) {
            Ok(id) => id,
            Err(message) => {
                // Shapes are checked in lowering; reaching this is an internal error. Record
                // it as a poison node so the caller can surface it without panicking.
                let id = self.nodes.len();
                self.nodes.push(Node {
                    op: Op::Invalid(format!("{op:?}: {message}")),
                    inputs,
                    shape: Shape::scalar(),
                    dtype: DType::F32,
                    span,
                });
                id
            }
        }
    }

    /// Ids of nodes that are internal errors (see [`Graph::add`]).
    pub fn invalid_nodes(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match &n.op {
            Op::Invalid(m) => Some((i, m.as_str())),
            _ => None,
        })
    }

    /// Adds a leaf (input or param) of a declared shape and element type.
    pub fn leaf(&mut self, op: Op, shape: Shape, dtype: DType, span: Span) -> NodeId {
        let key = (op, Vec::new());
        if let Some(&id) = self.dedup.get(&key) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(Node { op: key.0.clone(), inputs: Vec::new(), shape, dtype, span });
        self.dedup.insert(key, id);
        id
    }

    /// A scalar constant.
    pub fn constant(&mut self, value: f32, span: Span) -> NodeId {
        self.add(Op::Const(value.to_bits()), vec![], span)
    }

    /// `op(x)` for an elementwise unary op.
    pub fn unary(&mut self, op: Unary, x: NodeId) -> NodeId {
        let span = self.nodes[x].span;
        self.add(Op::Unary(op), vec![x], span)
    }

    /// `op(a, b)` for an elementwise binary op.
    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> NodeId {
        let span = self.nodes[a].span;
        self.add(Op::Binary(op), vec![a, b], span)
    }

    /// `a * b`
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(Binary::Mul, a, b)
    }

    /// `a + b`
    pub fn add2(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(Binary::Add, a, b)
    }

    /// `-x`
    pub fn neg(&mut self, x: NodeId) -> NodeId {
        self.unary(Unary::Neg, x)
    }

    /// `x` summed down to `shape` (the adjoint of broadcasting); identity if equal.
    pub fn sum_to(&mut self, x: NodeId, shape: &Shape) -> NodeId {
        if self.shape(x) == shape {
            return x;
        }
        let span = self.nodes[x].span;
        self.add(Op::SumTo(shape.clone()), vec![x], span)
    }

    /// `x` broadcast up to `shape`; identity if equal.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &Shape) -> NodeId {
        if self.shape(x) == shape {
            return x;
        }
        let span = self.nodes[x].span;
        self.add(Op::Broadcast(shape.clone()), vec![x], span)
    }

    /// `x` with the same elements, in row-major order, in `shape`; identity if equal.
    pub fn reshape(&mut self, x: NodeId, shape: &Shape) -> NodeId {
        if self.shape(x) == shape {
            return x;
        }
        let span = self.nodes[x].span;
        self.add(Op::Reshape(shape.clone()), vec![x], span)
    }

    /// The scalar `d1 * d2 * ...` for symbolic dimensions (a constant if all static).
    pub fn dim_product(&mut self, dims: &[Dim], span: Span) -> NodeId {
        let mut n = 1usize;
        let mut syms: Vec<String> = Vec::new();
        for d in dims {
            match d {
                Dim::Static(k) => n *= k,
                Dim::Sym(s) => syms.push(s.clone()),
            }
        }
        syms.sort();
        let mut out = None;
        if !syms.is_empty() {
            out = Some(self.add(Op::DimProduct(syms), vec![], span));
        }
        match (out, n) {
            (Some(id), 1) => id,
            (Some(id), n) => {
                let k = self.constant(n as f32, span);
                self.mul(k, id)
            }
            (None, n) => self.constant(n as f32, span),
        }
    }

    /// The nodes `roots` depend on (including themselves), in topological order.
    pub fn cone(&self, roots: &[NodeId]) -> Vec<NodeId> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            stack.extend(self.nodes[id].inputs.iter().copied());
        }
        (0..self.nodes.len()).filter(|&i| seen[i]).collect()
    }

    /// How many times each node is used as an operand by the nodes in `program`.
    pub fn use_counts(&self, program: &[NodeId]) -> Vec<usize> {
        let mut counts = vec![0; self.nodes.len()];
        for &id in program {
            for &i in &self.nodes[id].inputs {
                counts[i] += 1;
            }
        }
        counts
    }

    /// Copies the nodes `roots` depend on into a new graph through `rewrite`, which may
    /// replace each node (given its already-mapped operands) by another; returns the new
    /// graph and the old-to-new id map (for the copied nodes).
    pub fn rebuild(
        &self,
        roots: &[NodeId],
        mut rewrite: impl FnMut(&mut Graph, &Node, &[NodeId]) -> Option<NodeId>,
    ) -> (Graph, HashMap<NodeId, NodeId>) {
        let mut out = Graph::new();
        let mut map: HashMap<NodeId, NodeId> = HashMap::new();
        for id in self.cone(roots) {
            let node = &self.nodes[id];
            let inputs: Vec<NodeId> = node.inputs.iter().map(|i| map[i]).collect();
            let new_id = match rewrite(&mut out, node, &inputs) {
                Some(n) => n,
                None if inputs.is_empty()
                    && matches!(node.op, Op::Input(_) | Op::Param(_) | Op::DropoutMask { .. }) =>
                {
                    out.leaf(node.op.clone(), node.shape.clone(), node.dtype, node.span)
                }
                None => out.add(node.op.clone(), inputs, node.span),
            };
            map.insert(id, new_id);
        }
        (out, map)
    }
}
