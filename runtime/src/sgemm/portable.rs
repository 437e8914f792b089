//! The portable micro-kernel: a plain loop the compiler vectorizes for the build's
//! target, for CPUs without AVX2 + FMA (and `MODELC_KERNEL=portable`).

use super::driver::{Tile, MR, NR};

pub(super) fn micro_portable(kc: usize, a: &[f32], b: &[f32], acc: &mut Tile) {
    let mut t = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            let av = ap[i];
            for j in 0..NR {
                t[i][j] += av * bp[j];
            }
        }
    }
    *acc = t;
}
