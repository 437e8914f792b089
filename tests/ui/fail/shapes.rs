//! Compile errors: shapes. One `model!` per case, each under a comment naming it; the
//! .stderr beside this file is every message with its span (docs/testing.md, "Compile errors").

use modelc::model;

// argmax_matrix_without_axis
model! {
    pub struct ArgmaxMatrixWithoutAxis {
        input x: [batch, 784];
        output o = argmax(x);
    }
}

// axis_out_of_range
// Both the positive and the negative out-of-range axis are reported.
model! {
    pub struct AxisOutOfRange {
        input x: [batch, 784];
        output s = sum(x, axis = 2);
        output t = mean(x, axis = -3);
        output u = softmax(x, axis = 5);
    }
}

// broadcast_clash
model! {
    pub struct BroadcastClash {
        input x: [batch, 784];
        param b: [10] = zeros;
        output o = x + b;
    }
}

// different_symbolic_dims
model! {
    pub struct DifferentSymbolicDims {
        input a: [n, 3];
        input b: [m, 3];
        output o = a + b;
    }
}

// every_shape_error_is_reported
// Independent shape errors in different items are all reported.
model! {
    pub struct EveryShapeErrorIsReported {
        input x: [batch, 784];
        param w: [10, 784] = zeros;
        param b: [7] = zeros;
        output o = matmul(x, w);
        output p = x * b;
        output q = sum(x, axis = 3);
    }
}

// matmul_inner_dimensions
model! {
    pub struct MatmulInnerDimensions {
        input x: [batch, 784];
        param w: [10, 784] = zeros;
        output o = matmul(x, w);
    }
}

// matmul_inner_symbolic
model! {
    pub struct MatmulInnerSymbolic {
        input x: [batch, features];
        param w: [784, 10] = zeros;
        output o = matmul(x, w);
    }
}

// matmul_not_a_matrix
// The contract's example: `b` is a vector.
model! {
    pub struct MatmulNotAMatrix {
        input x: [batch, 784];
        param b: [10] = zeros;
        let a = softmax(matmul(x, b));
        output o = a;
    }
}

// maximum_broadcast
model! {
    pub struct MaximumBroadcast {
        input x: [batch, 784];
        input y: [batch, 10];
        output o = maximum(x, y);
    }
}

// param_symbolic_dimension
model! {
    pub struct ParamSymbolicDimension {
        input x: [batch, 784];
        param w: [784, classes] = zeros;
        output o = matmul(x, w);
    }
}

// softmax_cross_entropy_shapes
model! {
    pub struct SoftmaxCrossEntropyShapes {
        input x: [batch, 784];
        input y: [batch, 5];
        param w: [784, 10] = zeros;
        loss l = mean(softmax_cross_entropy(matmul(x, w), y));
        optimizer sgd(learning_rate = 0.1);
    }
}

// softmax_of_scalar
model! {
    pub struct SoftmaxOfScalar {
        input x: [batch, 10];
        output o = softmax(sum(x));
    }
}

// transpose_of_vector
model! {
    pub struct TransposeOfVector {
        input v: [10];
        output o = transpose(v);
    }
}

// zero_dimension
model! {
    pub struct ZeroDimension {
        input x: [batch, 0];
        param b: [0] = zeros;
        output o = x + b;
    }
}

fn main() {}
