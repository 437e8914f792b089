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

/// The CNN ops' operand and attribute rules that tests/ui/fail/v2_conv.rs and v2_pool.rs
/// list, each on its own: exactly one error, on the token at fault (the call starts at
/// column 15). u32 images and kernels, a rank-5 image, a symbolic width, negative and
/// zero strides and dilations, non-integer sizes, an empty padding string.
#[test]
fn cnn_operand_and_attribute_errors_point_at_the_argument_at_fault() {
    let head = "struct M {\n    input x: [batch, 28, 28, 1];\n    input ids: [batch, 28, 28, 1] as u32;\n    \
                input kids: [5, 5, 1, 8] as u32;\n    input five: [batch, 2, 28, 28, 1];\n    \
                input wide: [batch, 28, q, 1];\n    param w: [5, 5, 1, 8] = zeros;\n";
    for (call, at, want) in [
        ("conv2d(ids, w)", "ids", "`conv2d`: `ids` is an index tensor (u32 [batch, 28, 28, 1])"),
        ("conv2d(x, kids)", "kids", "`conv2d`: `kids` is an index tensor (u32 [5, 5, 1, 8])"),
        (
            "conv2d(five, w)",
            "five",
            "must be a batch of NHWC images [n, height, width, channels], but it is [batch, 2, 28, 28, 1]",
        ),
        ("conv2d(wide, w)", "wide", "the width of `wide` [batch, 28, q, 1] must be a number, not the symbolic `q`"),
        ("conv2d(x, w, stride = -1)", "-1", "`stride` must be at least 1"),
        ("conv2d(x, w, stride = 1.5)", "1.5", "`stride` must be an integer literal or a pair of them"),
        (
            "conv2d(x, w, dilation = [1, -2])",
            "[1, -2]",
            "`dilation` must be at least 1 (1 means adjacent taps), not -2",
        ),
        ("conv2d(x, w, padding = \"\")", "\"\"", "`padding` must be \"same\" or \"valid\""),
        ("max_pool(x, stride = -1)", "-1", "`stride` must be positive, not -1"),
        ("max_pool(x, size = 1.5)", "1.5", "`size` must be an integer literal or a pair of them"),
        ("avg_pool(x, stride = 0)", "0", "`avg_pool`: `stride` must be positive, not 0"),
        ("avg_pool(ids)", "ids", "`avg_pool`: `ids` is an index tensor"),
        (
            "avg_pool(five)",
            "five",
            "must be an NHWC image batch [n, height, width, channels], but it is [batch, 2, 28, 28, 1]",
        ),
        ("max_pool(wide)", "wide", "the width of `wide` must be static (a number), but it is `q`"),
        ("max_pool(x, dilation = 2)", "dilation", "`max_pool` has no argument `dilation`"),
        ("max_pool(x, size = [], stride = 1)", "[]", "`size` must be an integer literal or a pair of them"),
    ] {
        let e = errors(&format!("{head}    output o = {call};\n}}"));
        assert_eq!(e.len(), 1, "{call}: {e:?}");
        let (m, line, col) = &e[0];
        assert!(m.contains(want), "{call}: {m}");
        // The first `at` after the op's name.
        let open = call.find('(').unwrap_or(0);
        assert_eq!((*line, *col), (8, 15 + open + call[open..].find(at).unwrap_or(0)), "{call}: {m}");
    }
    // Calls that fit: a stride beyond the image, a dilated window larger than the image
    // under "same", pooling windows that skip cells, positional attributes.
    for call in [
        "conv2d(x, w, stride = 100)",
        "conv2d(x, w, padding = \"same\", dilation = 100)",
        "max_pool(x, size = 2, stride = 3, padding = \"same\")",
        "max_pool(x, size = 100, stride = 100, padding = \"same\")",
        "avg_pool(x, 2, 2, \"same\")",
    ] {
        let e = errors(&format!("{head}    output o = {call};\n}}"));
        assert!(e.is_empty(), "{call}: {e:?}");
    }
}
