//! Front-end diagnostics: messages and spans.

use crate::diag::Diag;
use proc_macro2::TokenStream;

/// Checks a model given as source text; returns (message, line, column) per error.
fn errors(src: &str) -> Vec<(String, usize, usize)> {
    let tokens: TokenStream = src.parse().expect("test sources lex");
    let diag: Diag = crate::check(tokens);
    diag.errors()
        .iter()
        .map(|e| {
            let start = e.span().start();
            (e.to_string(), start.line, start.column)
        })
        .collect()
}

const HEAD: &str = "struct M {\n    input x: [batch, 784];\n    input y: [batch, 10];\n";

#[test]
fn matmul_errors_point_at_the_offending_argument() {
    let e = errors(&format!("{HEAD}    param w: [10, 784] = zeros;\n    output o = matmul(x, w);\n}}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("matmul: inner dimensions differ: `x` is [batch, 784] but `w` is [10, 784]"), "{e:?}");
    assert_eq!((e[0].1, e[0].2), (5, 25), "{e:?}");
}

#[test]
fn broadcast_errors_point_at_the_operator_and_show_both_shapes() {
    let e = errors(&format!("{HEAD}    output o = x + y;\n}}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("`x` is [batch, 784] but `y` is [batch, 10]"), "{e:?}");
    assert_eq!((e[0].1, e[0].2), (4, 17), "{e:?}");
}

#[test]
fn axis_errors_point_at_the_axis() {
    let e = errors(&format!("{HEAD}    output o = sum(x, axis = -3);\n}}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("axis -3 is out of range"), "{e:?}");
    assert_eq!((e[0].1, e[0].2), (4, 29), "{e:?}");
}

#[test]
fn an_unknown_op_without_a_close_match_lists_the_ops() {
    let src = format!(
        "{HEAD}    param w: [784, 10] = zeros;\n    loss l = mean(frobnicate(matmul(x, w)));\n    optimizer sgd(learning_rate = 0.1);\n}}"
    );
    let e = errors(&src);
    let messages: Vec<&str> = e.iter().map(|m| m.0.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("unknown op `frobnicate` (the ops are ") && m.contains("softmax")),
        "{messages:?}"
    );
}

#[test]
fn every_independent_error_is_reported_with_suggestions() {
    let e = errors(&format!(
        "{HEAD}    let a = softmx(x);\n    let b = sum(yy);\n    param p: [batch] = zeros;\n    loss l = x;\n}}"
    ));
    let messages: Vec<&str> = e.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(e.len(), 4, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("unknown op `softmx`; did you mean `softmax`?")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("unknown name `yy`; did you mean `y`?")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("symbolic dimension `batch`")), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("loss `l` must be a scalar, but its shape is [batch, 784]")),
        "{messages:?}"
    );
}

#[test]
fn no_gradient_errors_name_the_param_and_the_blocking_op() {
    let e = errors(&format!(
        "{HEAD}    param w: [784, 10] = zeros;\n    loss l = mean(argmax(matmul(x, w), axis = 1) == argmax(y, axis = 1));\n    optimizer sgd(learning_rate = 0.1);\n}}"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("param `w` gets no gradient") && e[0].0.contains("`argmax`"), "{e:?}");
    assert_eq!((e[0].1, e[0].2), (5, 18), "{e:?}");
}
