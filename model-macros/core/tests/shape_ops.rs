//! The shape ops in the compiler (issue 17): a reshape of a computed node is planned as a
//! view of its operand's buffer (no step, no copy), one of an input keeps its copy;
//! `explain()` and `graph_dot()` show the new ops; and broadcasting is not simplified
//! through a reshape that moves an axis (the gradient of `sum(w, axis = 1)` for a square
//! `w` was rows instead of columns).

use modelc_core::emit::plan;
use modelc_core::ir::explain;
use modelc_core::ops::Op;
use modelc_core::shape::Shape;
use quote::quote;

fn compile(tokens: proc_macro2::TokenStream) -> modelc_core::autodiff::Compiled {
    match modelc_core::compile(tokens) {
        Ok(c) => c,
        Err(d) => panic!("{:?}", d.messages()),
    }
}

#[test]
fn a_reshape_of_a_computed_node_is_a_view_and_of_an_input_a_copy() {
    let c = compile(quote! {
        struct M {
            input x: [batch, 2, 3];
            input y: [batch, 2];
            param w: [6, 4] = glorot_uniform;
            let h = relu(matmul(flatten(x), w));
            loss l = mean(square(sum(reshape(h, [batch, 2, 2]), axis = [2]) - y));
            optimizer adam();
        }
    });
    let m = &c.model;
    let mut roots = vec![m.loss().unwrap().node];
    roots.extend(c.grads.iter().map(|g| g.1));
    let p = plan::plan(m, &roots);
    let reshapes: Vec<usize> =
        m.graph.cone(&roots).into_iter().filter(|&id| matches!(m.graph.node(id).op, Op::Reshape(_))).collect();
    let of_input: Vec<usize> = reshapes
        .iter()
        .copied()
        .filter(|&id| matches!(m.graph.node(m.graph.node(id).inputs[0]).op, Op::Input(_)))
        .collect();
    assert_eq!(of_input.len(), 1, "flatten(x)");
    assert!(!p.aliases.contains_key(&of_input[0]) && p.steps.iter().any(|s| s.0 == of_input[0]));
    let views: Vec<&usize> = reshapes.iter().filter(|id| !of_input.contains(id)).collect();
    assert!(!views.is_empty());
    for id in views {
        assert!(p.aliases.contains_key(id), "reshape {id} is copied: {:?}", p.steps);
        assert!(p.steps.iter().all(|s| s.0 != *id));
        assert_eq!(p.slot_of(*id), p.slot_of(p.aliases[id]), "a view lives in its base's buffer");
    }
    // The base's buffer is not reused while the view is read.
    for (i, (id, _)) in p.steps.iter().enumerate() {
        for r in plan::step_reads(&m.graph, &p, i) {
            if let Some(s) = p.slot.get(&r) {
                if !matches!(p.steps[i].1, plan::Step::MatMulThen(_)) {
                    assert!(*s != p.slot_of(*id) || r == *id, "step {i} writes the slot it reads");
                }
            }
        }
    }
}

#[test]
fn explain_and_graph_dot_show_the_shape_ops() {
    let c = compile(quote! {
        struct M {
            input x: [batch, 4];
            param w: [4] = zeros;
            let j = concat([x * w, slice(x * w, axis = 1, start = 1, end = 3)], axis = 1);
            loss l = mean(where(j > 0.0, j, 0.0)) + sum(max(reshape(x * w, [batch, 2, 2]), axis = [1, 2]));
            optimizer sgd(learning_rate = 0.1);
        }
    });
    let text = explain::explain_text(&c);
    for want in [
        "concat([",
        "slice(x * w, axis = 1, start = 1, end = 3)",
        "where(",
        "reshape(",
        "max(",
        "axis = [1, 2]",
        "pad(",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    let dot = explain::dot(&c).to_string();
    for want in ["concat", "slice", "select", "reshape", "pad"] {
        assert!(dot.contains(want), "{want} missing from\n{dot}");
    }
}

#[test]
fn broadcasting_is_not_simplified_through_an_axis_moving_reshape() {
    // d l / d w[i, j] = c[i]: the adjoint [3] becomes [3, 1], then broadcast along the
    // columns. Broadcasting the [3] itself to [3, 3] (the simplifier's old rule) repeats
    // it along the rows: c[j].
    let c = compile(quote! {
        struct M {
            input c: [3];
            param w: [3, 3] = zeros;
            loss l = sum(sum(w, axis = 1) * c);
            optimizer sgd(learning_rate = 0.1);
        }
    });
    let g = &c.model.graph;
    let grad = c.grads[0].1;
    let node = g.node(grad);
    assert_eq!(node.op, Op::Broadcast(Shape::of(&[3, 3])), "{:?}", node.op);
    assert_eq!(g.shape(node.inputs[0]), &Shape::of(&[3, 1]), "{}", explain::explain_text(&c));
}
