//! Epilogues: what runs on each finished block of `c` while it is in cache, either a
//! caller's closure ([`Then`]) or the bias add, relu and relu's derivative the kernels
//! know ([`Act`]), and where those blocks sit in the caller's `c` ([`Epi`]).

use super::dispatch::widest;
use crate::ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut2, Zip};

/// An epilogue: called on finished blocks of `c` as `then(block, i0, j0)`, where the
/// block's element `(r, s)` is `c[i0 + r, j0 + s]`; it may rewrite the block in place.
pub type Then<'f> = &'f (dyn Fn(ArrayViewMut2<'_, f32>, usize, usize) + Sync);

/// The epilogue of a layer's product that the kernels know: `c = relu(c + bias) *
/// step(mask)`, each part optional, on `c`'s final values (`bias`: one value per column
/// of `c`; `mask`: `c`'s shape; `relu(x)` is `x` where `x > 0`, else 0, and `step(x)` 1
/// where `x > 0`, else 0, as in [`kernels`](crate::kernels)). A layer's bias add + relu is then
/// no pass over memory at all; relu's derivative from relu's output is one pass over
/// each finished block while it is in cache.
#[derive(Clone, Copy, Debug)]
pub struct Act<'a> {
    /// Added to every row of `c`.
    pub bias: Option<ArrayView1<'a, f32>>,
    /// `relu` after the bias.
    pub relu: bool,
    /// Multiplies `c` by `step(mask)`, last.
    pub mask: Option<ArrayView2<'a, f32>>,
}

impl Act<'_> {
    /// The block of `c` whose element `(0, 0)` is `c[i0, j0]`, in place: the reference
    /// the kernels' own application of it matches to the bit.
    pub(crate) fn apply(&self, block: ArrayViewMut2<'_, f32>, i0: usize, j0: usize) {
        if self.relu {
            self.apply_with::<true>(block, i0, j0);
        } else {
            self.apply_with::<false>(block, i0, j0);
        }
    }

    /// [`Act::apply`] with `relu` a constant, so that no loop tests it (a test in the
    /// loop made the mask's pass 15% slower). Rows that are contiguous, in the block and
    /// the mask, go through plain slice loops compiled for the widest vectors
    /// ([`widest`]); others through ndarray's `Zip`.
    fn apply_with<const RELU: bool>(&self, mut block: ArrayViewMut2<'_, f32>, i0: usize, j0: usize) {
        let (rows, cols) = block.dim();
        if !RELU && self.bias.is_none() && self.mask.is_none() {
            return;
        }
        let bias = self.bias.map(|b| b.slice_move(s![j0..j0 + cols]));
        let mask = self.mask.map(|m| m.slice_move(s![i0..i0 + rows, j0..j0 + cols]));
        let relu = |x: f32| if !RELU || x > 0.0 { x } else { 0.0 };
        let step = |x: f32| if x > 0.0 { 1.0 } else { 0.0 };
        let contiguous = block.strides()[1] == 1
            && bias.is_none_or(|b| b.strides()[0] == 1)
            && mask.is_none_or(|m| m.strides()[1] == 1);
        if contiguous {
            widest(
                #[inline(always)]
                || {
                    for (r, mut row) in block.rows_mut().into_iter().enumerate() {
                        // Unit strides, checked above.
                        let o = row.as_slice_mut().expect("a row with a unit stride");
                        let b = bias.as_ref().map(|b| b.as_slice().expect("a bias with a unit stride"));
                        let h = mask.as_ref().map(|m| m.row(r).to_slice().expect("a mask row with a unit stride"));
                        match (b, h) {
                            (Some(b), None) => o.iter_mut().zip(b).for_each(|(v, &b)| *v = relu(*v + b)),
                            (None, None) => o.iter_mut().for_each(|v| *v = relu(*v)),
                            (None, Some(h)) => o.iter_mut().zip(h).for_each(|(v, &h)| *v = relu(*v) * step(h)),
                            (Some(b), Some(h)) => {
                                o.iter_mut().zip(b).zip(h).for_each(|((v, &b), &h)| *v = relu(*v + b) * step(h))
                            }
                        }
                    }
                },
            );
            return;
        }
        match (bias, mask) {
            (Some(b), None) => Zip::from(&mut block).and_broadcast(&b).for_each(|v, &b| *v = relu(*v + b)),
            (None, None) => block.map_inplace(|v| *v = relu(*v)),
            (None, Some(m)) => Zip::from(&mut block).and(&m).for_each(|v, &h| *v = relu(*v) * step(h)),
            (Some(b), Some(m)) => {
                Zip::from(&mut block).and_broadcast(&b).and(&m).for_each(|v, &b, &h| *v = relu(*v + b) * step(h))
            }
        }
    }
}

/// An epilogue with where its blocks sit: `c` may be computed transposed (`c^T = b^T
/// a^T`) or as a block of the caller's `c` starting at `(i0, j0)` (in the caller's
/// coordinates).
#[derive(Clone, Copy)]
pub(super) struct Epi<'f> {
    pub(super) f: EpiFn<'f>,
    pub(super) transposed: bool,
    pub(super) i0: usize,
    pub(super) j0: usize,
}

/// The two kinds of epilogue.
#[derive(Clone, Copy)]
pub(super) enum EpiFn<'f> {
    Then(Then<'f>),
    Act(Act<'f>),
}

impl Epi<'_> {
    /// Calls the epilogue on `block`, which starts at `(i, j)` of the `c` this `Epi`
    /// was handed with.
    pub(super) fn apply(&self, block: ArrayViewMut2<'_, f32>, i: usize, j: usize) {
        let (block, i, j) = if self.transposed {
            (block.reversed_axes(), self.i0 + j, self.j0 + i)
        } else {
            (block, self.i0 + i, self.j0 + j)
        };
        match &self.f {
            EpiFn::Then(f) => f(block, i, j),
            EpiFn::Act(act) => act.apply(block, i, j),
        }
    }

    /// Where the AVX-512 kernel finds the [`Act`] for a block of `c` starting at column
    /// `j` (not transposed), if it can apply it itself: a bias add and relu, the bias
    /// contiguous. A mask is applied to each finished block instead: read in the
    /// kernel's write-back, its rows (as far apart as c's, often 4 KiB, and at the same
    /// offset within a page) fell in the same L1 sets as c's and evicted them. M3's
    /// `dz2 w2^T` took 2.1-4.4% longer than the product alone that way, 1.3-1.6% as a
    /// pass over the finished block (alternating runs, against the hand-written step's
    /// product and its own pass).
    pub(super) fn kernel_act(&self, j: usize) -> Option<ActPtrs> {
        let EpiFn::Act(act) = &self.f else { return None };
        if self.transposed || act.mask.is_some() {
            return None;
        }
        let bias = match &act.bias {
            Some(b) => b.as_slice()?[self.j0 + j..].as_ptr(),
            None => std::ptr::null(),
        };
        Some(ActPtrs { bias, relu: act.relu })
    }

    /// The same epilogue for the transposed product (the offsets stay in the
    /// coordinates of the `c` the caller handed in).
    pub(super) fn transposed(self) -> Self {
        Epi { transposed: !self.transposed, ..self }
    }

    /// The same epilogue for the block of `c` at `(i, j)`.
    #[cfg(feature = "parallel")]
    pub(super) fn offset(self, i: usize, j: usize) -> Self {
        if self.transposed {
            Epi { i0: self.i0 + j, j0: self.j0 + i, ..self }
        } else {
            Epi { i0: self.i0 + i, j0: self.j0 + j, ..self }
        }
    }
}

/// The part of an [`Act`] the AVX-512 kernel applies itself, for the block of `c` it
/// writes: `bias` at the block's first column (null where absent) and `relu`. A mask is
/// applied to the finished block instead (see [`Epi::kernel_act`]).
#[derive(Clone, Copy)]
pub(super) struct ActPtrs {
    pub(super) bias: *const f32,
    pub(super) relu: bool,
}

impl ActPtrs {
    /// The same for the part of the block `cols` columns right.
    pub(super) fn offset(self, cols: usize) -> Self {
        let bias = if self.bias.is_null() { self.bias } else { self.bias.wrapping_add(cols) };
        ActPtrs { bias, ..self }
    }
}
