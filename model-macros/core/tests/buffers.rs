//! The buffer plan: nodes with disjoint lifetimes share workspace memory.

use modelc_core::emit::plan;
use modelc_core::shape::Dim;
use quote::quote;

fn bytes(shapes: &[&modelc_core::shape::Shape], batch: usize) -> usize {
    shapes
        .iter()
        .map(|s| s.0.iter().map(|d| if let Dim::Static(n) = d { *n } else { batch }).product::<usize>() * 4)
        .sum()
}

#[test]
fn an_mlp_training_program_shares_buffers() {
    let c = modelc_core::compile(quote! {
        struct M2 {
            input x: [batch, 784];
            input y: [batch, 10];
            param w1: [784, 256] = glorot_uniform;
            param b1: [256] = zeros;
            param w2: [256, 128] = glorot_uniform;
            param b2: [128] = zeros;
            param w3: [128, 10] = glorot_uniform;
            param b3: [10] = zeros;
            let h1 = relu(matmul(x, w1) + b1);
            let h2 = relu(matmul(h1, w2) + b2);
            loss l = mean(softmax_cross_entropy(matmul(h2, w3) + b3, y));
            optimizer adam();
        }
    })
    .ok()
    .expect("valid model");
    let m = &c.model;
    let mut roots = vec![m.loss().unwrap().node];
    roots.extend(c.grads.iter().map(|g| g.1));
    let p = plan::plan(m, &roots);
    // Without sharing, every computed node would have a buffer of its own: each step's
    // node, plus a fused cross-entropy's gradient and an epilogue's product.
    let mut computed: Vec<usize> = p.steps.iter().map(|(id, _)| *id).collect();
    computed.extend(p.steps.iter().filter_map(|(_, s)| match s {
        plan::Step::XentWithGrad(other) | plan::Step::MatMulThen(other) => Some(*other),
        _ => None,
    }));
    let per_node: Vec<&modelc_core::shape::Shape> = computed.iter().map(|id| m.graph.shape(*id)).collect();
    let per_slot: Vec<&modelc_core::shape::Shape> = p.slot_shapes.iter().collect();
    let (before, after) = (bytes(&per_node, 128), bytes(&per_slot, 128));
    println!("{} buffers -> {} slots; {before} -> {after} bytes at batch 128", per_node.len(), per_slot.len());
    assert!(per_slot.len() < per_node.len());
    assert!(after < before);
    // No step writes a slot it reads (but a product with an epilogue is rewritten in
    // place by design).
    for (id, step) in &p.steps {
        let node = m.graph.node(*id);
        for i in &node.inputs {
            if *step == plan::Step::MatMulThen(*i) {
                continue;
            }
            if let Some(s) = p.slot.get(i) {
                assert_ne!(*s, p.slot_of(*id), "node {id} writes the slot of its operand {i}");
            }
        }
    }
}
