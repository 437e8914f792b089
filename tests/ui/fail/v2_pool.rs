// Pooling (max_pool / avg_pool on NHWC images): every mistake below is reported, each at
// its own tokens.
use modelc::model;

model! {
    pub struct PoolOperands {
        input flat: [batch, 784];
        input tall: [batch, h, 28, 1];
        input deep: [batch, 28, 28, c];
        input ids: [batch, 28, 28, 1] as u32;
        input wide: [batch, 28, q, 1];
        // rank_not_4
        output a = max_pool(flat);
        // symbolic_height
        output b = avg_pool(tall);
        // symbolic_channels
        output c2 = max_pool(deep);
        // index_image
        output d = max_pool(ids);
        // avg_rank_not_4
        output e = avg_pool(flat);
        // avg_index_image
        output f = avg_pool(ids);
        // max_symbolic_width
        output g = max_pool(wide);
    }
}

model! {
    pub struct PoolAttributes {
        input x: [batch, 28, 28, 3];
        // window_larger_than_image
        output a = max_pool(x, size = 29);
        // window_larger_in_one_axis
        output b = avg_pool(x, size = [2, 30]);
        // stride_zero
        output c = max_pool(x, stride = 0);
        // size_zero
        output d = avg_pool(x, size = [0, 2]);
        // three_sizes
        output e = max_pool(x, size = [2, 2, 2]);
        // bad_padding_string
        output f = max_pool(x, padding = "vaild");
        // padding_not_a_string
        output g = avg_pool(x, padding = same);
        // unknown_argument
        output h = max_pool(x, window = 2);
        // avg_stride_zero
        output i = avg_pool(x, stride = [2, 0]);
        // avg_bad_padding_string
        output j = avg_pool(x, padding = "SAME");
        // avg_window_larger_than_image
        output k = avg_pool(x, size = [29, 2]);
        // dilation_is_not_a_pooling_argument
        output l = max_pool(x, dilation = 2);
    }
}

fn main() {}
