//! Program planning: which nodes one generated function computes, which elementwise
//! chains fuse into one loop, and which nodes need a buffer.
//!
//! A function computes only the cone of its roots (TensorFlow's pruned `Session.run`).
//! An elementwise node used once, by an elementwise consumer of the same shape, is
//! inlined into that consumer's loop (no buffer, no extra pass over memory); a group
//! reads at most [`MAX_PRODUCERS`] arrays.

use std::collections::BTreeSet;

use crate::ir::{Graph, NodeId};
use crate::model::Model;
use crate::ops::Op;

/// The most arrays one fused group reads. Five came from `ndarray::Zip`, which took the
/// output and five operands when the groups' loops were `Zip`'s; `kernels::map` takes
/// any number, but each operand is one more stream through memory in the loop and 1 KiB
/// more of its stack, and a larger limit has not been measured, so it stays.
pub const MAX_PRODUCERS: usize = 5;

/// The deepest a node may sit below its group's root in the fused loop's expression. The
/// emitter writes that expression recursively and rustc then parses and folds it: a
/// chain of thousands of elementwise `let`s in one loop overflowed the macro's stack
/// (5000 `let a{i+1} = a{i} * 1.0001 + 0.5` in `tests/no_panic.rs`). Past 64 the chain
/// is stored and a new group starts; a loop that deep is compute-bound anyway, so the
/// extra pass over memory costs little.
pub const MAX_FUSED_DEPTH: usize = 64;

/// How one node of a program is computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A fused elementwise group rooted at this node: one loop writing its buffer.
    Fused,
    /// A runtime kernel call writing this node's buffer.
    Kernel,
    /// A scalar leaf (constant, dimension product) or a leaf (input, param) that must be
    /// materialized in a buffer because it is a root or feeds a kernel.
    Materialize,
    /// `softmax_cross_entropy(z, y)` together with its gradient node (the payload) in
    /// one pass: the exponentials are computed once for both.
    XentWithGrad(NodeId),
    /// A fused elementwise group rooted at this node, run as the epilogue of the matrix
    /// product it reads (the payload): each finished block of the product is rewritten
    /// in place, while in cache, into this node's value (a bias add and an activation,
    /// or an activation's derivative). The product has no buffer of its own.
    MatMulThen(NodeId),
    /// The pooled value of a fused conv + bias + max pool ([`Op::ConvPool`]) together
    /// with its u8 argmax (the payload) in one kernel call: one pass per image writes
    /// both buffers.
    ConvPoolWithArgmax(NodeId),
}

/// One generated function's computation.
#[derive(Clone, Debug)]
pub struct Program {
    /// The roots it returns.
    pub roots: Vec<NodeId>,
    /// The steps in order: (node, how).
    pub steps: Vec<(NodeId, Step)>,
    /// Nodes inlined into a consumer's loop (no buffer).
    pub inlined: BTreeSet<NodeId>,
    /// The inputs the function takes (indices into `model.inputs`), in declaration order.
    pub inputs: Vec<usize>,
    /// The params it reads.
    pub params: Vec<usize>,
    /// The buffer (slot) each computed node writes; nodes whose lifetimes do not
    /// overlap share a slot.
    pub slot: std::collections::BTreeMap<NodeId, usize>,
    /// Each slot's shape.
    pub slot_shapes: Vec<crate::shape::Shape>,
    /// Each slot's element type (nodes share a slot only if shape and type agree).
    pub slot_dtypes: Vec<crate::ir::DType>,
    /// Reshapes computed as a view of their operand's buffer (no step, no copy): node ->
    /// the node whose buffer it views. Workspace buffers are contiguous, so the view is
    /// always possible; the operand's buffer lives as long as the reshape's readers.
    pub aliases: std::collections::BTreeMap<NodeId, NodeId>,
    /// Layer norms whose row statistics are saved (`ops::norm::saved_statistics`): the
    /// forward node and its gradient nodes -> the slot of their statistics (a slot of
    /// its own, after the nodes' slots).
    pub norm_stats: std::collections::BTreeMap<NodeId, usize>,
}

impl Program {
    /// The buffer of a computed node.
    pub fn slot_of(&self, id: NodeId) -> usize {
        self.slot.get(&id).copied().unwrap_or(0)
    }
}

/// The node whose buffer `id` lives in: itself, or what a view-reshape views.
fn resolve(aliases: &std::collections::BTreeMap<NodeId, NodeId>, mut id: NodeId) -> NodeId {
    while let Some(&base) = aliases.get(&id) {
        id = base;
    }
    id
}

/// The nodes whose buffers a step reads (a view-reshape's reads are its base's).
fn reads(
    g: &Graph,
    inlined: &BTreeSet<NodeId>,
    aliases: &std::collections::BTreeMap<NodeId, NodeId>,
    id: NodeId,
    step: &Step,
) -> Vec<NodeId> {
    let mut r = direct_reads(g, inlined, id, step);
    for n in &mut r {
        *n = resolve(aliases, *n);
    }
    r
}

fn direct_reads(g: &Graph, inlined: &BTreeSet<NodeId>, id: NodeId, step: &Step) -> Vec<NodeId> {
    match step {
        Step::Materialize => Vec::new(),
        Step::Kernel => g.node(id).inputs.clone(),
        Step::XentWithGrad(grad) => g.node(*grad).inputs.clone(),
        Step::ConvPoolWithArgmax(_) => g.node(id).inputs.clone(),
        Step::Fused => external_operands(g, &members_of(g, inlined, id)),
        Step::MatMulThen(product) => {
            let mut r: Vec<NodeId> = g.node(*product).inputs.clone();
            r.extend(external_operands(g, &members_of(g, inlined, id)).into_iter().filter(|&e| e != *product));
            r
        }
    }
}

/// The values step `i` of `program` reads: the buffers `reads` lists, and the leaf a
/// `Materialize` step copies (a param or an input).
pub fn step_reads(g: &Graph, program: &Program, i: usize) -> Vec<NodeId> {
    let (id, step) = &program.steps[i];
    let mut r = reads(g, &program.inlined, &program.aliases, *id, step);
    if *step == Step::Materialize {
        r.push(*id);
    }
    r
}

/// The nodes step `i` of `program` computes: its own, the gradient of an
/// `XentWithGrad`, the product of a `MatMulThen` (which only lives in its buffer).
pub fn step_writes(program: &Program, i: usize) -> Vec<NodeId> {
    let (id, step) = &program.steps[i];
    match step {
        Step::XentWithGrad(other) | Step::MatMulThen(other) | Step::ConvPoolWithArgmax(other) => vec![*id, *other],
        Step::Fused | Step::Kernel | Step::Materialize => vec![*id],
    }
}

/// The members of the fused group rooted at `root` (root included).
fn members_of(g: &Graph, inlined: &BTreeSet<NodeId>, root: NodeId) -> BTreeSet<NodeId> {
    let mut members = BTreeSet::from([root]);
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        for &i in &g.node(n).inputs {
            if inlined.contains(&i) && members.insert(i) {
                stack.push(i);
            }
        }
    }
    members
}

/// Assigns buffers from liveness: a node's slot is freed after the last step that reads
/// it (roots are never freed), and a later node of the same shape reuses it. A step
/// never writes a slot it reads, because a slot is freed only after its last reader.
fn assign_slots(
    g: &Graph,
    steps: &[(NodeId, Step)],
    inlined: &BTreeSet<NodeId>,
    aliases: &std::collections::BTreeMap<NodeId, NodeId>,
    roots: &[NodeId],
) -> (std::collections::BTreeMap<NodeId, usize>, Vec<crate::shape::Shape>, Vec<crate::ir::DType>) {
    let mut last_use: std::collections::BTreeMap<NodeId, usize> = std::collections::BTreeMap::new();
    let step_reads: Vec<Vec<NodeId>> = steps.iter().map(|(id, s)| reads(g, inlined, aliases, *id, s)).collect();
    for (i, r) in step_reads.iter().enumerate() {
        for &n in r {
            last_use.insert(n, i);
        }
    }
    let mut slot = std::collections::BTreeMap::new();
    let mut shapes: Vec<crate::shape::Shape> = Vec::new();
    let mut dtypes: Vec<crate::ir::DType> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (i, (id, step)) in steps.iter().enumerate() {
        let mut outputs = vec![*id];
        if let Step::XentWithGrad(other) | Step::ConvPoolWithArgmax(other) = step {
            outputs.push(*other);
        }
        for out in outputs {
            let (shape, dtype) = (&g.node(out).shape, g.node(out).dtype);
            let s = match free.iter().position(|&f| &shapes[f] == shape && dtypes[f] == dtype) {
                Some(k) => free.swap_remove(k),
                None => {
                    shapes.push(shape.clone());
                    dtypes.push(dtype);
                    shapes.len() - 1
                }
            };
            slot.insert(out, s);
        }
        // The product of a `MatMulThen` is computed in its group's buffer.
        if let Step::MatMulThen(product) = step {
            slot.insert(*product, slot[id]);
        }
        // Free what this step read for the last time (and its own output if nobody reads it).
        for &n in step_reads[i].iter().chain(std::iter::once(id)) {
            let dead = !roots.contains(&n) && last_use.get(&n).copied().unwrap_or(i) <= i;
            if dead {
                if let Some(&sn) = slot.get(&n) {
                    if !free.contains(&sn) {
                        free.push(sn);
                    }
                }
            }
        }
    }
    for &alias in aliases.keys() {
        if let Some(&s) = slot.get(&resolve(aliases, alias)) {
            slot.insert(alias, s);
        }
    }
    (slot, shapes, dtypes)
}

/// Whether a node is computed in a fused loop: an elementwise op on f32 (the loops are
/// f32; a `where` picking between u32 index tensors is a kernel call).
fn fuses(node: &crate::ir::Node) -> bool {
    node.op.is_elementwise() && node.dtype == crate::ir::DType::F32
}

fn is_scalar_leaf(op: &Op) -> bool {
    matches!(op, Op::Const(_) | Op::DimProduct(_))
}

fn is_leaf(op: &Op) -> bool {
    matches!(op, Op::Input(_) | Op::Param(_)) || is_scalar_leaf(op)
}

/// Plans the function computing `roots`.
pub fn plan(model: &Model, roots: &[NodeId]) -> Program {
    let g = &model.graph;
    let cone = g.cone(roots);
    let computed: Vec<NodeId> = cone.iter().copied().filter(|&id| !is_leaf(&g.node(id).op)).collect();
    let uses = g.use_counts(&computed);

    // Fusion, consumers first.
    let mut inlined: BTreeSet<NodeId> = BTreeSet::new();
    for &id in computed.iter().rev() {
        if !fuses(g.node(id)) || inlined.contains(&id) {
            continue;
        }
        let mut members: BTreeSet<NodeId> = BTreeSet::from([id]);
        // With each candidate, how deep below the root it would sit in the loop's expression.
        let mut frontier: Vec<(NodeId, usize)> = g.node(id).inputs.iter().map(|&i| (i, 1)).collect();
        while let Some((candidate, depth)) = frontier.pop() {
            let node = g.node(candidate);
            let fusable = fuses(node)
                && depth <= MAX_FUSED_DEPTH
                && uses[candidate] == 1
                && !roots.contains(&candidate)
                && node.shape == g.node(id).shape
                && !members.contains(&candidate);
            if !fusable {
                continue;
            }
            let mut trial = members.clone();
            trial.insert(candidate);
            if external_operands(g, &trial).len() <= MAX_PRODUCERS {
                members = trial;
                frontier.extend(node.inputs.iter().map(|&i| (i, depth + 1)));
            }
        }
        members.remove(&id);
        inlined.extend(members);
    }

    let mut steps = Vec::new();
    let mut materialize: BTreeSet<NodeId> = BTreeSet::new();
    for &id in &computed {
        if inlined.contains(&id) {
            continue;
        }
        let node = g.node(id);
        if fuses(node) {
            steps.push((id, Step::Fused));
        } else {
            // Kernel operands must be arrays: scalar leaves feeding a kernel get a buffer.
            for &i in &node.inputs {
                if is_scalar_leaf(&g.node(i).op) {
                    materialize.insert(i);
                }
            }
            steps.push((id, Step::Kernel));
        }
    }
    for &r in roots {
        if is_leaf(&g.node(r).op) {
            materialize.insert(r);
        }
    }
    let mut all: Vec<(NodeId, Step)> = materialize.into_iter().map(|id| (id, Step::Materialize)).collect();
    all.extend(steps);

    // Inputs: those in the cone, plus one declaring each symbolic dimension the
    // program needs but no cone input binds.
    let mut inputs: BTreeSet<usize> = BTreeSet::new();
    let mut params: BTreeSet<usize> = BTreeSet::new();
    let mut syms: BTreeSet<String> = BTreeSet::new();
    for &id in &cone {
        let node = g.node(id);
        match &node.op {
            Op::Input(i) => {
                inputs.insert(*i);
            }
            Op::Param(p) => {
                params.insert(*p);
            }
            Op::DimProduct(s) => syms.extend(s.iter().cloned()),
            _ => {}
        }
        syms.extend(node.shape.symbols());
    }
    for s in syms {
        let bound = inputs.iter().any(|&i| model.inputs[i].shape.symbols().contains(&s));
        if !bound {
            if let Some(i) = model.inputs.iter().position(|inp| inp.shape.symbols().contains(&s)) {
                inputs.insert(i);
            }
        }
    }
    let all = fuse_xent_with_grad(g, all);
    let all = pair_conv_pool(g, all);
    let all = fuse_epilogues(g, all, &inlined, roots, &uses);
    // A reshape of a computed node (a workspace buffer: contiguous) is a view of that
    // buffer, not a copy; a reshape of an input (any strides) or a param, or one that is
    // a root (returned or read by the updates), keeps its copy.
    let mut aliases = std::collections::BTreeMap::new();
    for (id, step) in &all {
        let node = g.node(*id);
        if *step == Step::Kernel && matches!(node.op, Op::Reshape(_)) && !roots.contains(id) {
            let base = node.inputs[0];
            if !matches!(g.node(base).op, Op::Input(_) | Op::Param(_)) {
                aliases.insert(*id, base);
            }
        }
    }
    let all: Vec<(NodeId, Step)> = all.into_iter().filter(|(id, _)| !aliases.contains_key(id)).collect();
    let (slot, mut slot_shapes, mut slot_dtypes) = assign_slots(g, &all, &inlined, &aliases, roots);
    let kernels: Vec<NodeId> = all.iter().filter(|(_, s)| *s == Step::Kernel).map(|(id, _)| *id).collect();
    let mut norm_stats = std::collections::BTreeMap::new();
    for (forward, grads) in crate::ops::norm::saved_statistics(g, &kernels) {
        let Op::LayerNorm { axis, .. } = g.node(forward).op else { continue };
        slot_shapes.push(crate::ops::norm::stats_shape(g.shape(forward), axis));
        slot_dtypes.push(crate::ir::DType::F32);
        for id in std::iter::once(forward).chain(grads) {
            norm_stats.insert(id, slot_shapes.len() - 1);
        }
    }
    Program {
        roots: roots.to_vec(),
        steps: all,
        inlined,
        inputs: inputs.into_iter().collect(),
        params: params.into_iter().collect(),
        slot,
        slot_shapes,
        slot_dtypes,
        aliases,
        norm_stats,
    }
}

/// The operands a fused group reads that are arrays (not inlined members, not scalars).
pub fn external_operands(g: &Graph, members: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = Vec::new();
    for &m in members {
        for &i in &g.node(m).inputs {
            if !members.contains(&i) && !is_scalar_leaf(&g.node(i).op) && !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// The members of the fused group rooted at `root` (root included).
pub fn group_members(g: &Graph, program: &Program, root: NodeId) -> BTreeSet<NodeId> {
    members_of(g, &program.inlined, root)
}

/// Runs a fused rank-2 group as the epilogue of a matrix product it reads, when the
/// product has the group's shape and nothing else reads it: bias add + activation on a
/// layer's product, an activation's derivative on a back-propagated product. The group
/// then costs no pass over memory of its own (measured on M2/M3: see the README). The
/// combined step takes the group's place, after everything it reads.
fn fuse_epilogues(
    g: &Graph,
    steps: Vec<(NodeId, Step)>,
    inlined: &BTreeSet<NodeId>,
    roots: &[NodeId],
    uses: &[usize],
) -> Vec<(NodeId, Step)> {
    let mut fused: BTreeSet<NodeId> = BTreeSet::new();
    let mut out: Vec<(NodeId, Step)> = Vec::with_capacity(steps.len());
    for (id, step) in &steps {
        if *step != Step::Fused || g.node(*id).shape.rank() != 2 {
            out.push((*id, step.clone()));
            continue;
        }
        let shape = &g.node(*id).shape;
        let product = external_operands(g, &members_of(g, inlined, *id)).into_iter().find(|&e| {
            let n = g.node(e);
            matches!(n.op, Op::MatMul { .. })
                && uses.get(e).copied() == Some(1)
                && !roots.contains(&e)
                && &n.shape == shape
                && !fused.contains(&e)
                && steps.iter().any(|(s, st)| *s == e && *st == Step::Kernel)
        });
        match product {
            Some(p) => {
                fused.insert(p);
                out.push((*id, Step::MatMulThen(p)));
            }
            None => out.push((*id, step.clone())),
        }
    }
    out.retain(|(id, step)| !(fused.contains(id) && *step == Step::Kernel));
    out
}

/// Computes `softmax_cross_entropy(z, y)` and its gradient `SoftmaxXentGrad(z, y, g)` in
/// one kernel when a program needs both (a training program does): the steps computing
/// the adjoint `g` move to just before the forward op (they never depend on it: checked),
/// and the gradient's own step disappears.
fn fuse_xent_with_grad(g: &Graph, mut steps: Vec<(NodeId, Step)>) -> Vec<(NodeId, Step)> {
    let pairs: Vec<(NodeId, NodeId)> = steps
        .iter()
        .filter(|(id, s)| *s == Step::Kernel && matches!(g.node(*id).op, Op::SoftmaxXentGrad | Op::SparseXentGrad))
        .filter_map(|(grad, _)| {
            let inputs = &g.node(*grad).inputs;
            let forward = if g.node(*grad).op == Op::SoftmaxXentGrad { Op::SoftmaxXent } else { Op::SparseXent };
            steps
                .iter()
                .find(|(l, s)| *s == Step::Kernel && g.node(*l).op == forward && g.node(*l).inputs[..] == inputs[..2])
                .map(|(l, _)| (*l, *grad))
        })
        .collect();
    for (loss, grad) in pairs {
        let adjoint = g.node(grad).inputs[2];
        let cone: BTreeSet<NodeId> = g.cone(&[adjoint]).into_iter().collect();
        if cone.contains(&loss) {
            continue;
        }
        let Some(at) = steps.iter().position(|(id, _)| *id == loss) else { continue };
        // Steps of the adjoint's cone that come after the forward op move before it.
        let (before, after): (Vec<_>, Vec<_>) = steps.split_off(at).into_iter().partition(|(id, _)| cone.contains(id));
        steps.extend(before);
        for (id, step) in after {
            if id == grad {
                continue;
            }
            let step = if id == loss { Step::XentWithGrad(grad) } else { step };
            steps.push((id, step));
        }
    }
    steps
}

/// Computes the pooled value and the argmax of a fused conv + pool ([`Op::ConvPool`],
/// the same operands) in one kernel call when a program needs both (a training program
/// does: the argmax for the scatter, the value forward): the pair's step takes the place
/// of whichever comes first (both read only the operands, computed before either), and
/// the other's step disappears.
fn pair_conv_pool(g: &Graph, mut steps: Vec<(NodeId, Step)>) -> Vec<(NodeId, Step)> {
    let conv_pool = |id: NodeId, argmax: bool| matches!(&g.node(id).op, Op::ConvPool(c) if c.argmax == argmax);
    let values: Vec<NodeId> =
        steps.iter().filter(|(id, s)| *s == Step::Kernel && conv_pool(*id, false)).map(|(id, _)| *id).collect();
    for value in values {
        let Op::ConvPool(c) = &g.node(value).op else { continue };
        let twin = Op::ConvPool(crate::ops::pool::ConvPool { argmax: true, ..c.clone() });
        let inputs = &g.node(value).inputs;
        let Some(arg) = steps
            .iter()
            .position(|(id, s)| *s == Step::Kernel && g.node(*id).op == twin && g.node(*id).inputs == *inputs)
        else {
            continue;
        };
        let Some(at) = steps.iter().position(|(id, _)| *id == value) else { continue };
        let arg_id = steps[arg].0;
        steps[at.min(arg)] = (value, Step::ConvPoolWithArgmax(arg_id));
        steps.remove(at.max(arg));
    }
    steps
}
