// conv2d: every mistake below is reported, each at its own tokens.
use modelc::model;

model! {
    pub struct ConvAttributes {
        input x: [batch, 28, 28, 1];
        param w: [5, 5, 1, 8] = glorot_uniform;
        output bad_padding = conv2d(x, w, padding = "full");
        output tf_spelling = conv2d(x, w, padding = "SAME");
        output not_a_string = conv2d(x, w, padding = same);
        output zero_stride = conv2d(x, w, stride = 0);
        output zero_in_pair = conv2d(x, w, stride = [2, 0]);
        output three_strides = conv2d(x, w, stride = [1, 2, 2]);
        output zero_dilation = conv2d(x, w, dilation = 0);
    }
}

model! {
    pub struct ConvShapes {
        input x: [batch, 28, 28, 1];
        input flat: [batch, 784];
        input tall: [batch, h, 28, 1];
        input any_channels: [batch, 28, 28, c];
        param rgb: [5, 5, 3, 8] = glorot_uniform;
        param big: [29, 3, 1, 8] = glorot_uniform;
        param w: [5, 5, 1, 8] = glorot_uniform;
        param flat_kernel: [25, 8] = glorot_uniform;
        output channel_mismatch = conv2d(x, rgb);
        output window_too_large = conv2d(x, big);
        output dilated_too_large = conv2d(x, w, dilation = 7);
        output not_an_image = conv2d(flat, w);
        output not_a_kernel = conv2d(x, flat_kernel);
        output symbolic_height = conv2d(tall, w);
        output symbolic_channels = conv2d(any_channels, w);
    }
}

model! {
    pub struct ConvOperands {
        input x: [batch, 28, 28, 1];
        input ids: [batch, 28, 28, 1] as u32;
        input index_kernel: [5, 5, 1, 8] as u32;
        input five: [batch, 2, 28, 28, 1];
        input wide: [batch, 28, q, 1];
        param w: [5, 5, 1, 8] = glorot_uniform;
        // index_image
        output a = conv2d(ids, w);
        // index_kernel
        output b = conv2d(x, index_kernel);
        // rank_5_image
        output c = conv2d(five, w);
        // symbolic_width
        output d = conv2d(wide, w);
        // zero_stride_in_rows
        output e = conv2d(x, w, stride = [0, 1], padding = "same");
        // zero_dilation_in_pair
        output f = conv2d(x, w, dilation = [1, 0], padding = "same");
        // empty_padding_string
        output g = conv2d(x, w, padding = "");
    }
}

fn main() {}
