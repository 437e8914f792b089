//! Compile errors: ops. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// argument_given_twice
model! {
    pub struct ArgumentGivenTwice {
        input x: [batch, 784];
        output s = sum(x, axis = 1, axis = 0);
        output t = sum(x, 1, axis = 0);
    }
}

// axis_not_integer_literal
model! {
    pub struct AxisNotIntegerLiteral {
        input x: [batch, 784];
        output s = sum(x, axis = 1.5);
        output t = mean(x, axis = batch);
    }
}

// initializer_used_as_op
model! {
    pub struct InitializerUsedAsOp {
        input x: [batch, 784];
        output o = x + glorot_uniform(x);
    }
}

// keepdims_not_bool
model! {
    pub struct KeepdimsNotBool {
        input x: [batch, 784];
        output s = sum(x, axis = 1, keepdims = 1);
    }
}

// matmul_one_argument
model! {
    pub struct MatmulOneArgument {
        input x: [batch, 784];
        output o = matmul(x);
    }
}

// method_call
model! {
    pub struct MethodCall {
        input x: [batch, 784];
        output e = x.exp();
    }
}

// pow_missing_exponent
model! {
    pub struct PowMissingExponent {
        input x: [batch, 784];
        output p = pow(x);
    }
}

// pow_non_literal_exponent
model! {
    pub struct PowNonLiteralExponent {
        input x: [batch, 784];
        input k: [];
        output p = pow(x, k);
    }
}

// too_many_arguments
model! {
    pub struct TooManyArguments {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output o = matmul(x, w, x);
        output e = exp(x, 2);
    }
}

// unknown_named_argument
model! {
    pub struct UnknownNamedArgument {
        input x: [batch, 784];
        output s = sum(x, axs = 1);
    }
}

// unknown_op_did_you_mean
model! {
    pub struct UnknownOpDidYouMean {
        input x: [batch, 784];
        param w: [784, 10] = zeros;
        output probs = softmx(matmul(x, w));
    }
}

// unsupported_expression
model! {
    pub struct UnsupportedExpression {
        input x: [batch, 784];
        output i = x[0];
        output s = "one";
    }
}

// unsupported_operator
// Every unsupported operator is reported (`x < y` is a comparison since v2: it compiles).
model! {
    pub struct UnsupportedOperator {
        input x: [batch, 784];
        input y: [batch, 784];
        output r = x % 2;
        output c = x < y;
        output n = !x;
    }
}

fn main() {}
