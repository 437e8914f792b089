//! The model's own random stream, and the dropout mask drawn from it.
//!
//! A model with `dropout` keeps one [`DropoutStream`] in its state: a ChaCha8 generator
//! keyed by the model's seed (`with_seed`), on a stream number of its own
//! ([`DropoutStream::STREAM`]) so that it never overlaps the initializers' streams (see
//! [`crate::init::stream`]: those are keyed by seed and param name, on stream 0). Its
//! whole state is the seed and the word position (a `u128`), so a checkpoint saves it
//! exactly ([`DropoutStream::to_words`]) and a resumed run draws the very masks an
//! uninterrupted one would.
//!
//! **The mask.** Each element draws one `u32` `u` and is kept when `u >= t`, with
//! `t = round(rate * 2^32)`: the keep probability is `1 - t / 2^32`, within `2^-33` of
//! `1 - rate` for every rate (a resolution of 8 bits, four elements per `u32`, would round
//! a rate such as 0.3 to 77/256). A kept element is scaled by `1 / (1 - rate)`. The
//! words are drawn 256 at a time into a stack buffer (ChaCha's block fill), and the
//! comparison loop has no branch, so a mask costs about as much as writing it.
//!
//! **Shards** (data-parallel training, `modelc::mpi`). Rank `r` of `n`, training on the
//! `r`-th of `n` equal shards of a batch, must draw the rows the single process would
//! draw for those samples. [`DropoutStream::set_shard`] makes each mask skip the `r` shards
//! before its own and the `n - 1 - r` after it: with the batch as the mask's first axis
//! (the usual case: `[batch, ..]` activations), rank `r`'s mask is exactly rows
//! `r * b .. (r + 1) * b` of the mask one process draws for the whole batch, and every rank
//! ends each step at the same stream position (so rank 0's checkpoint resumes them all).

use ndarray::ArrayViewMutD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The random stream of one model (see the module documentation).
#[derive(Clone, Debug)]
pub struct DropoutStream {
    seed: u64,
    rng: ChaCha8Rng,
    /// `(rank, ranks)`: this process draws shard `rank` of `ranks` of every mask
    /// ([`Self::set_shard`]); `(0, 1)` outside data-parallel training. Not saved: it is a
    /// property of the job, not of the model.
    shard: (u64, u64),
}

/// The number of `f32` words [`DropoutStream::to_words`] writes.
pub const STATE_WORDS: usize = 12;

impl DropoutStream {
    /// The ChaCha stream number of dropout masks ("dropout!" in ASCII); the initializers
    /// use stream 0.
    pub const STREAM: u64 = 0x6472_6f70_6f75_7421;

    /// The stream of a model created with `with_seed(seed)`, at its start.
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(Self::STREAM);
        Self { seed, rng, shard: (0, 1) }
    }

    /// Draws shard `rank` of `ranks` of every mask from now on (see the module
    /// documentation); `set_shard(0, 1)` is the whole mask again. `rank >= ranks` is
    /// taken as the whole mask too.
    pub fn set_shard(&mut self, rank: usize, ranks: usize) {
        self.shard = if rank < ranks { (rank as u64, ranks as u64) } else { (0, 1) };
    }

    /// `(rank, ranks)` as given to [`Self::set_shard`].
    pub fn shard(&self) -> (usize, usize) {
        (self.shard.0 as usize, self.shard.1 as usize)
    }

    /// Moves `words` words ahead (another rank's part of a mask).
    fn skip(&mut self, words: u128) {
        if words > 0 {
            self.rng.set_word_pos(self.rng.get_word_pos().wrapping_add(words));
        }
    }

    /// How many 32-bit words have been drawn (the position to [`Self::rewind`] to).
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Goes back (or forward) to `position`: a training step that fails after drawing
    /// its masks rewinds, so that a failed call changes nothing.
    pub fn rewind(&mut self, position: u128) {
        self.rng.set_word_pos(position);
    }

    /// The state as 12 floats for a checkpoint: the seed and the word position in 16-bit
    /// pieces, least significant first (each exactly representable as an `f32`).
    pub fn to_words(&self) -> [f32; STATE_WORDS] {
        let mut out = [0f32; STATE_WORDS];
        let pos = self.position();
        for (i, o) in out.iter_mut().enumerate() {
            let piece = if i < 4 { (self.seed >> (16 * i)) as u128 } else { pos >> (16 * (i - 4)) };
            *o = (piece & 0xffff) as f32;
        }
        out
    }

    /// The stream [`Self::to_words`] saved; `Err` says why `words` is not one.
    pub fn from_words(words: &[f32]) -> Result<Self, String> {
        if words.len() != STATE_WORDS {
            return Err(format!("the dropout stream state has {} values, expected {STATE_WORDS}", words.len()));
        }
        let mut pieces = [0u128; STATE_WORDS];
        for (i, (&w, p)) in words.iter().zip(&mut pieces).enumerate() {
            if !(0.0..=65535.0).contains(&w) || w.fract() != 0.0 {
                return Err(format!("the dropout stream state's value {i} is {w}, not an integer in 0..=65535"));
            }
            *p = w as u128;
        }
        let seed = (0..4).fold(0u64, |s, i| s | (pieces[i] as u64) << (16 * i));
        let pos = (0..8).fold(0u128, |s, i| s | pieces[4 + i] << (16 * i));
        let mut stream = Self::new(seed);
        stream.rewind(pos);
        Ok(stream)
    }
}

/// The `u32` threshold below which an element is dropped, for `0 <= rate < 1`.
fn threshold(rate: f32) -> u32 {
    let t = (f64::from(rate) * 4_294_967_296.0).round();
    t.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Fills `out` with a dropout mask: in training mode each element is `1 / (1 - rate)`
/// with probability `1 - rate` and 0 otherwise, drawn from `stream`; otherwise (a
/// gradient check, which runs in inference mode) every element is 1 and nothing is drawn.
pub fn dropout_mask(stream: &mut DropoutStream, train: bool, rate: f32, mut out: ArrayViewMutD<'_, f32>) {
    if !train {
        out.fill(1.0);
        return;
    }
    let t = threshold(rate);
    let scale = 1.0 / (1.0 - rate);
    let (rank, ranks) = stream.shard;
    let len = out.len() as u128;
    stream.skip(u128::from(rank) * len);
    let mut words = [0u32; 256];
    let mut fill = |chunk: &mut [f32], rng: &mut ChaCha8Rng| {
        let w = &mut words[..chunk.len()];
        rng.fill(w);
        for (o, &u) in chunk.iter_mut().zip(w.iter()) {
            *o = if u >= t { scale } else { 0.0 };
        }
    };
    match out.as_slice_mut() {
        Some(all) => {
            for chunk in all.chunks_mut(256) {
                fill(chunk, &mut stream.rng);
            }
        }
        None => {
            // Workspace buffers are contiguous; any other view goes element by element,
            // in logical order, with the same draws.
            let mut one = [0f32; 1];
            for o in out.iter_mut() {
                fill(&mut one, &mut stream.rng);
                *o = one[0];
            }
        }
    }
    stream.skip(u128::from(ranks - 1 - rank) * len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn the_state_round_trips_through_words() {
        let mut s = DropoutStream::new(0xdead_beef_1234_5678);
        let mut buf = ArrayD::zeros(IxDyn(&[1001]));
        dropout_mask(&mut s, true, 0.3, buf.view_mut());
        let mut r = DropoutStream::from_words(&s.to_words()).unwrap();
        let (mut a, mut b) = (ArrayD::zeros(IxDyn(&[77])), ArrayD::zeros(IxDyn(&[77])));
        dropout_mask(&mut s, true, 0.3, a.view_mut());
        dropout_mask(&mut r, true, 0.3, b.view_mut());
        assert_eq!(a, b);
        assert!(DropoutStream::from_words(&[0.5; 12]).is_err());
        assert!(DropoutStream::from_words(&[0.0; 11]).is_err());
    }

    #[test]
    fn shards_draw_the_rows_of_the_whole_mask() {
        // Two ranks, each with 3 of the batch's 6 rows: their masks are the halves of the
        // one the single process draws, and all three streams end at the same position.
        let mut whole = DropoutStream::new(7);
        let mut all = ArrayD::zeros(IxDyn(&[6, 5]));
        dropout_mask(&mut whole, true, 0.5, all.view_mut());
        for rank in 0..2 {
            let mut s = DropoutStream::new(7);
            s.set_shard(rank, 2);
            let mut part = ArrayD::zeros(IxDyn(&[3, 5]));
            dropout_mask(&mut s, true, 0.5, part.view_mut());
            let rows = all.slice_axis(ndarray::Axis(0), ndarray::Slice::from(3 * rank..3 * rank + 3));
            assert_eq!(part.view(), rows);
            assert_eq!(s.position(), whole.position());
        }
    }

    #[test]
    fn thresholds_are_exact_at_the_ends() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(0.5), 1 << 31);
        assert!(threshold(0.999_999_9) > u32::MAX - 1000);
    }
}
