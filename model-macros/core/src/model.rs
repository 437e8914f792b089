//! The checked model: what the front end hands to autodiff and the emitter.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

use crate::ir::{Graph, NodeId};
use crate::shape::Shape;
use crate::syntax::NodeKind;

/// A checked model.
pub struct Model {
    /// Attributes and docs of the struct.
    pub attrs: Vec<Attribute>,
    /// The struct's visibility.
    pub vis: Visibility,
    /// The struct's name.
    pub ident: Ident,
    /// Inputs in declaration order.
    pub inputs: Vec<InputDecl>,
    /// Params in declaration order.
    pub params: Vec<ParamDecl>,
    /// Outputs, the loss and metrics, in declaration order.
    pub fetches: Vec<Fetch>,
    /// The optimizer, if declared.
    pub optimizer: Option<OptimizerSpec>,
    /// Every symbolic dimension, in order of first appearance.
    pub symbols: Vec<String>,
    /// The forward graph.
    pub graph: Graph,
    /// User names of nodes (inputs, params, lets, fetches), for `explain()`.
    pub names: Vec<(NodeId, String)>,
    /// The loss in training mode, when it differs from the `loss` fetch (which runs in
    /// inference mode): the loss with its dropout masks (see `ops::random`).
    pub train_loss: Option<NodeId>,
}

impl Model {
    /// The loss fetch, if any.
    pub fn loss(&self) -> Option<&Fetch> {
        self.fetches.iter().find(|f| f.kind == NodeKind::Loss)
    }

    /// The node training differentiates and `train_step` returns: [`Self::train_loss`],
    /// else the loss fetch's.
    pub fn train_loss_node(&self) -> Option<NodeId> {
        self.train_loss.or_else(|| self.loss().map(|l| l.node))
    }

    /// Indices of the trainable params.
    pub fn trainable(&self) -> Vec<usize> {
        (0..self.params.len()).filter(|&i| !self.params[i].frozen).collect()
    }
}

/// `input x: [batch, 784]`
pub struct InputDecl {
    /// Its name.
    pub name: Ident,
    /// Its shape.
    pub shape: Shape,
    /// Its element type (`as u32` for indices).
    pub dtype: crate::ir::DType,
    /// Its attributes (docs).
    pub attrs: Vec<Attribute>,
    /// Its node in the graph.
    pub node: NodeId,
}

/// `param w: [784, 10] = zeros`
pub struct ParamDecl {
    /// Its name.
    pub name: Ident,
    /// Its static shape.
    pub dims: Vec<usize>,
    /// Its initializer.
    pub init: InitSpec,
    /// `#[frozen]`
    pub frozen: bool,
    /// Its attributes (docs), kept on the generated field.
    pub attrs: Vec<Attribute>,
    /// Its node in the graph.
    pub node: NodeId,
}

/// An `output`, `loss` or `metric`.
pub struct Fetch {
    /// Which kind.
    pub kind: NodeKind,
    /// Its name (the generated method's name).
    pub name: Ident,
    /// Its node in the graph.
    pub node: NodeId,
    /// Its attributes (docs), kept on the generated method.
    pub attrs: Vec<Attribute>,
}

/// An initializer, as `modelc::__private::init::Init` takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InitSpec {
    /// `zeros`
    Zeros,
    /// `ones`
    Ones,
    /// `constant(v)`
    Constant(f32),
    /// `uniform(low, high)`
    Uniform(f32, f32),
    /// `normal(mean, std)`
    Normal(f32, f32),
    /// `truncated_normal(mean, std)`
    TruncatedNormal(f32, f32),
    /// `glorot_uniform`
    GlorotUniform,
    /// `glorot_normal`
    GlorotNormal,
    /// `he_normal`
    HeNormal,
}

/// The optimizer's rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// `sgd`
    Sgd,
    /// `momentum`
    Momentum {
        /// decay of the velocity
        momentum: f32,
        /// Nesterov's variant
        nesterov: bool,
    },
    /// `adam`
    Adam {
        /// first-moment decay
        beta1: f32,
        /// second-moment decay
        beta2: f32,
        /// denominator guard
        epsilon: f32,
    },
    /// `rmsprop`
    RmsProp {
        /// decay of the squared-gradient average
        rho: f32,
        /// denominator guard
        epsilon: f32,
        /// momentum
        momentum: f32,
        /// centered variant
        centered: bool,
    },
    /// `adagrad`
    Adagrad {
        /// starting value of the accumulator
        initial_accumulator_value: f32,
        /// denominator guard
        epsilon: f32,
    },
}

/// `optimizer kind(args)`, checked.
#[derive(Clone, Debug)]
pub struct OptimizerSpec {
    /// The rule.
    pub kind: OptimizerKind,
    /// The learning rate.
    pub learning_rate: f32,
    /// Clip by global norm.
    pub clip_norm: Option<f32>,
    /// L2 decay added to the gradients.
    pub weight_decay: f32,
    /// The optimizer item's span.
    pub span: Span,
}
