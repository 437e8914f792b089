//! Compile errors: syntax. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// bad_shape_syntax
// The dimensions of a shape are separated by commas.
model! {
    pub struct BadShapeSyntax {
        input x: [batch 784];
        output o = x;
    }
}

// every_syntax_error_is_reported
// Three independent syntax errors: all are reported, and the good items are kept.
model! {
    pub struct EverySyntaxErrorIsReported {
        input x: [batch 784];
        param w: [784, 10];
        let a: [batch, 10] = x;
        input y: [batch, 10];
        output o = y;
    }
}

// frozen_on_input
// `#[frozen]` applies to params only.
model! {
    pub struct FrozenOnInput {
        #[frozen]
        input x: [batch, 784];
        output o = x;
    }
}

// frozen_with_arguments
// `#[frozen]` takes no arguments.
model! {
    pub struct FrozenWithArguments {
        input x: [batch, 10];
        #[frozen(true)]
        param b: [10] = zeros;
        output o = x + b;
    }
}

// let_with_type
// A node's shape is inferred: no type annotation on `let`.
model! {
    pub struct LetWithType {
        input x: [batch, 784];
        let a: [batch, 784] = relu(x);
        output o = a;
    }
}

// missing_semicolon
// The `;` after `output probs = a` is missing: the error points at the next item.
model! {
    pub struct MissingSemicolon {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        let a = softmax(matmul(x, w));
        output probs = a
        metric m = mean(a);
    }
}

// not_a_struct
// A model is declared as a struct.
model! {
    pub enum NotAStruct {
        input x: [batch, 784];
        output o = x;
    }
}

// param_without_initializer
// A param needs `= initializer`.
model! {
    pub struct ParamWithoutInitializer {
        input x: [batch, 784];
        param w: [784, 10];
        output probs = matmul(x, w);
    }
}

// shape_not_bracketed
// A shape is written in brackets.
model! {
    pub struct ShapeNotBracketed {
        input x: (batch, 784);
        output o = x;
    }
}

// tokens_after_closing_brace
// One `model!` declares one model.
model! {
    pub struct TokensAfterClosingBrace {
        input x: [batch, 784];
        output o = x;
    }
    pub struct TokensAfterClosingBraceSecond {}
}

// unknown_item_keyword
// `paramm` is not an item keyword.
model! {
    pub struct UnknownItemKeyword {
        input x: [batch, 784];
        paramm w: [784, 10] = zeros;
        output probs = x;
    }
}

fn main() {}
