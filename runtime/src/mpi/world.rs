//! [`World`]: MPI's world, as data-parallel training uses it.
//!
//! # Why every call starts with one small collective
//!
//! MPI collectives must be called by every rank, in the same order, with buffers of the
//! same length; a rank that skips one (an early `?` on a bad batch) leaves the others
//! waiting forever, and ranks passing different lengths corrupt memory
//! (`../shared/design/research/mpi.md`: both reproduced with Open MPI 4.1). So each
//! operation of `World` first runs one *control* allreduce of 8 `u64`s, the same size
//! for every operation: which operation this is, the payload's length, a hash of its
//! layout (model name, field names and shapes), and whether this rank failed locally,
//! each also as its bitwise complement, reduced with MAX (so every rank learns both the
//! maximum and the minimum). Every rank then takes the same decision from the same
//! reduced values: if the operations, lengths or layouts differ, or any rank failed,
//! every rank returns the same `Err` and nobody enters the big collective or changes
//! anything. Only then comes the payload: the gradients, or rank 0's state. The control
//! allreduce costs one small-message latency per step (5 us between two ranks on one
//! host), next to a 1-2 ms gradient allreduce.
//!
//! When a rank failed, two more small collectives (the lowest failing rank and how many
//! failed) and one broadcast (that rank's error message) give every rank the same
//! [`Error::Distributed`].
//!
//! # Gradients: the large ones in place, the small ones fused
//!
//! A gradient field of at least `IN_PLACE_MIN` (32,768) values is summed in place in its
//! own array (`MPI_Allreduce` with `MPI_IN_PLACE`, in pieces of `PIECE` values, 512 KB,
//! each scaled by 1/N while still in cache, in one pass that also checks that the mean
//! is finite); the small fields are copied into one buffer
//! (each value checked to be at most `f32::MAX / N` in magnitude: finite, and no sum of
//! N of them overflows), followed by one flag per in-place field (1 if this rank found
//! its mean not finite) and the loss, summed in one allreduce, and copied back scaled.
//! For M3 that is 16 allreduces (15 pieces of `w1` and `w2`, the fused rest) and no
//! copy of its 1.85M large values, where one fused
//! buffer cost a copy in, Open MPI's own copy of the send buffer into the receive
//! buffer, and a copy out (`docs/distributed.md`, "What it costs"). Which field goes
//! where depends on the layout only, so every rank makes the same calls. The flags'
//! sums are counts, exact in any order of summation, so every rank takes the same
//! verdict (the same `Err`) even with an MPI that handed ranks different bits.
//!
//! # Leaving
//!
//! Dropping a `World` of several ranks joins the next control allreduce as *leaving*: a
//! rank that returns early makes the others' current call return an `Err` naming it
//! (and every later one fail at once, with no collective), instead of hanging them.
//! When every rank leaves together (the normal end), that is one small collective.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::ops::Range;
use std::panic;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::thread::{self, ThreadId};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use ndarray::{ArrayView, Axis, Dimension, Slice};

use super::{Gradients, Replica};
use crate::support::max_abs_slice;
use crate::{Error, Result, ShapeMismatch};

/// The operations whose control allreduces must match across ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
enum Op {
    Allreduce = 1,
    Broadcast = 2,
    Agree = 3,
    Barrier = 4,
    /// A `World` being dropped: the highest code, so that every rank of a control
    /// allreduce sees whether one is leaving.
    Leave = 5,
}

impl Op {
    fn name(code: u64) -> &'static str {
        match code {
            1 => "allreduce_mean",
            2 => "broadcast_params",
            3 => "agree",
            4 => "barrier",
            5 => "leaving (its `World` dropped)",
            _ => "an unknown operation",
        }
    }
}

/// The largest count passed to one MPI call: counts are C `int`s (rsmpi panics above
/// `i32::MAX`), so bigger buffers go in pieces.
const MAX_COUNT: usize = 1 << 30;

/// The longest error message broadcast from a failing rank (longer ones are cut).
const MESSAGE_BYTES: usize = 4096;

/// The exit code of a job ended by a panicking rank (the panic hook's `MPI_Abort`).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Whether the abort-on-panic hook is armed (a `World` of more than one rank is alive).
static HOOK_ARMED: AtomicBool = AtomicBool::new(false);
static HOOK_INSTALLED: Once = Once::new();
static HOOK_RANK: AtomicUsize = AtomicUsize::new(0);
static MPI_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// MPI's world for data-parallel training: rank, size, and the collectives a training
/// loop needs, each safe against ranks that disagree (see the module documentation).
///
/// ```no_run
/// # use modelc_runtime as modelc;
/// let world = modelc::mpi::World::init()?;
/// println!("rank {} of {}", world.rank(), world.size());
/// # Ok::<(), modelc::Error>(())
/// ```
///
/// A training step (`docs/distributed.md` has the whole loop):
///
/// ```text
/// let local = model.compute_gradients_into(world.shard(x)?, world.shard(y)?, &mut g);
/// let loss = world.allreduce_mean(&mut g, local)?;   // the same Ok or Err on every rank
/// model.apply_gradients(&g)?;
/// ```
///
/// `World` is not `Send`: MPI is initialized with `Threading::Funneled`, and every MPI
/// call stays on the thread that created it (rayon's workers only compute). Dropping it
/// finalizes MPI.
pub struct World {
    // Dropped in this order: the communicator before the universe, whose drop is
    // MPI_Finalize.
    comm: SimpleCommunicator,
    _universe: Universe,
    rank: usize,
    size: usize,
    fused: RefCell<Fused>,
    /// Fields of at least this many values are reduced in place (`IN_PLACE_MIN` unless set).
    in_place_min: usize,
    /// In-place fields are reduced and scaled in pieces of this many values.
    chunk: usize,
    /// Set when another rank left the job (dropped its `World`) while this one called
    /// `World`: no collective can complete any more, so every call fails at once.
    peer_left: Cell<bool>,
}

/// The persistent buffers of `allreduce_mean`, sized for the last layout reduced (no
/// allocation per step after the first).
#[derive(Default)]
struct Fused {
    /// The layout these buffers are for (its hash).
    layout: Option<u64>,
    /// Where each field goes, in layout order.
    slots: Vec<Slot>,
    /// The number of gradient values (the control allreduce's payload length).
    total: usize,
    /// The number of fields reduced in place.
    in_place: usize,
    /// The fields reduced together (each `Slot::Packed` range), then one flag per field
    /// reduced in place (1 where this rank's mean of it is not finite), then the loss.
    small: Vec<f32>,
    /// A field reduced in place whose array is not contiguous in standard order goes
    /// through this (sized for the largest one met; empty until one is).
    staging: Vec<f32>,
}

/// How `allreduce_mean` moves one gradient field. Decided from the layout alone, so the
/// same on every rank (their layout hashes match before any payload moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// At least [`IN_PLACE_MIN`] values: its own allreduce, in place in the field.
    InPlace,
    /// Packed into `Fused::small` at this range, with the other small fields.
    Packed(usize, usize),
}

/// Gradient fields of at least this many values are reduced in place, one allreduce each;
/// smaller ones are copied into one fused buffer (with the loss) and reduced together.
/// An allreduce call costs about 8 us beyond its bytes (1M floats in 128 calls took twice
/// one call's time, `../shared/design/research/mpi.md`), while copying M3's 1.86M
/// gradients into a fused buffer and back cost 1.2-2 ms (0.65-1.1 us per 1,000 values,
/// `docs/distributed.md`): in place pays from about 7,000-12,000 values, and 32,768
/// leaves a margin. M3 (784-1024-1024-10): `w1` and `w2` in place, the 4 others (12,298 values)
/// fused: 3 allreduces.
const IN_PLACE_MIN: usize = 1 << 15;

/// An in-place field is summed and scaled in pieces of this many values (512 KB): one
/// `MPI_Allreduce` per piece, then its 1/N pass while the piece is still in L2 (2 MB per
/// core here). Interleaved in one job on M3's gradients (Xeon family 6 model 167, 2
/// ranks, session 13), `allreduce_mean` took 1.84-1.87 ms at the median against
/// 2.88-2.93 ms with whole fields (pieces of 32K: 1.96-2.00, 64K: 1.91-1.97, 256K:
/// 1.98-2.16); with both cores also busy with two spinning processes, 6.1-6.2 ms
/// against 8.1-8.3. A piece costs one more small-message latency (about 8 us), so the
/// gain is Open MPI's copy and reduction, and the scale pass, running out of cache.
const PIECE: usize = 1 << 17;

impl World {
    /// Initializes MPI (`MPI_Init_thread`, funneled) and returns its world. Under
    /// `mpirun -n N` this process is one of `N` ranks; run directly, it is a world of one
    /// (MPI's singleton mode), where every operation is local and cheap.
    ///
    /// With more than one rank it installs a panic hook that, after the usual message,
    /// aborts the whole job (`MPI_Abort`, exit code 101): a panicking rank would
    /// otherwise hang every other rank in its next collective, and itself in
    /// `MPI_Finalize` while unwinding. (So `catch_unwind` cannot recover a panic while a
    /// `World` of several ranks is alive.)
    ///
    /// Errors: [`Error::InvalidArgument`] if MPI was already initialized in this process
    /// (MPI allows one initialization per process, ever).
    pub fn init() -> Result<World> {
        let (universe, _threading) = mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
            Error::InvalidArgument(
                "MPI is already initialized (or finalized) in this process: `World::init` succeeds once per process"
                    .to_string(),
            )
        })?;
        let comm = universe.world();
        let rank = usize::try_from(comm.rank()).unwrap_or(0);
        let size = usize::try_from(comm.size()).unwrap_or(1).max(1);
        if size > 1 {
            arm_abort_on_panic(rank);
        }
        Ok(World {
            comm,
            _universe: universe,
            rank,
            size,
            fused: RefCell::new(Fused::default()),
            in_place_min: IN_PLACE_MIN,
            chunk: PIECE,
            peer_left: Cell::new(false),
        })
    }

    /// Benchmarks only (`mnist_mpi --bench-reduce`): the size from which a gradient field
    /// is reduced in place (32,768 values; `usize::MAX` packs every field into the fused
    /// buffer: 2 collectives a step, measured slower on idle and on busy cores alike,
    /// `docs/distributed.md`). Every rank must use the same setting: if they differ,
    /// every rank's `allreduce_mean` returns the same [`Error::InvalidArgument`] before
    /// any gradient moves.
    #[doc(hidden)]
    pub fn set_in_place_min(&mut self, values: usize) {
        self.in_place_min = values;
    }

    /// Benchmarks only: the current [`Self::set_in_place_min`].
    #[doc(hidden)]
    pub fn in_place_min(&self) -> usize {
        self.in_place_min
    }

    /// Benchmarks only: reduce (and scale) in-place fields in pieces of this many values
    /// (131,072; `usize::MAX` for whole fields). The same rule as
    /// [`Self::set_in_place_min`] across ranks.
    #[doc(hidden)]
    pub fn set_chunk(&mut self, values: usize) {
        self.chunk = values.clamp(1, MAX_COUNT);
    }

    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks (processes) in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that writes checkpoints and prints.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// MPI's world communicator, for collectives of one's own ([`super::rsmpi`]). Every
    /// rank must call them in the same order, also relative to `World`'s own.
    pub fn communicator(&self) -> &SimpleCommunicator {
        &self.comm
    }

    /// Waits until every rank has called it (a control allreduce: see the module
    /// documentation), so it fails like every `World` call instead of hanging when
    /// another rank calls something else or has left.
    pub fn barrier(&self) -> Result<()> {
        self.control(Op::Barrier, 0, 0, None)
    }

    /// Makes every rank's `model` rank 0's: its params, every optimizer slot, the global
    /// step and the dropout stream (exactly what a checkpoint holds: rank 0 serializes
    /// its checkpoint in memory and broadcasts the bytes), and rank 0's learning rate.
    /// Then sets each rank's dropout shard (see `modelc::random`), so that the ranks'
    /// masks together are the masks one process would draw for the whole batch: call it
    /// once before training, after creating or loading the model on rank 0.
    ///
    /// Every rank returns the same result: if rank 0 cannot serialize its model, or the
    /// bytes do not fit another rank's model (another model type, other shapes), every
    /// rank returns the same [`Error::Distributed`] and no model changes.
    pub fn broadcast_params<M: Replica>(&self, model: &mut M) -> Result<()> {
        if self.size == 1 {
            model.set_shard(0, 1);
            return Ok(());
        }
        let state = if self.rank == 0 { Some(model.state_bytes()) } else { None };
        let root_error = match &state {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        self.control(Op::Broadcast, 0, 0, root_error.as_deref())?;
        let mut bytes = match state {
            Some(Ok(b)) => b,
            _ => Vec::new(),
        };
        let mut header = [bytes.len() as u64, u64::from(model.replica_learning_rate().to_bits())];
        self.comm.process_at_rank(0).broadcast_into(&mut header[..]);
        let len = usize::try_from(header[0]).map_err(|_| {
            Error::InvalidArgument(format!("rank 0's state is {} bytes, more than this rank can address", header[0]))
        });
        let local = len.and_then(|len| {
            if self.rank != 0 {
                bytes.resize(len, 0);
            }
            for chunk in bytes.chunks_mut(MAX_COUNT) {
                self.comm.process_at_rank(0).broadcast_into(chunk);
            }
            if self.rank == 0 {
                return Ok(());
            }
            model.restore_state_bytes(&bytes)?;
            model.set_replica_learning_rate(f32::from_bits(header[1] as u32));
            Ok(())
        });
        // A rank whose address space cannot hold the bytes skipped the broadcasts, which
        // the others are in: impossible between 64-bit ranks, the only ones this runs on.
        self.agree(local)?;
        model.set_shard(self.rank, self.size);
        Ok(())
    }

    /// Averages `gradients` over the ranks and returns the mean of the ranks' losses;
    /// `local` is this rank's result of computing them (the loss, or the error), e.g.
    /// `model.compute_gradients_into(x, y, &mut gradients)`. The large fields are summed
    /// in place, the small ones (and the loss) in one fused buffer (see the module
    /// documentation).
    ///
    /// Pass the local result instead of `?`-ing it first: a rank that returned early
    /// would leave the others waiting in this collective forever. If any rank's `local`
    /// is an `Err`, or its gradients do not have the model's shapes, or a small (fused)
    /// field holds a NaN, an infinity or a value beyond `f32::MAX / N` in magnitude
    /// (whose sum over the `N` ranks could overflow), every rank returns the same
    /// [`Error::Distributed`] (naming the lowest failing rank and its error) before any
    /// gradient moves, and `gradients` is left as it was. If the ranks' gradients are of
    /// different models or layouts, every rank returns the same
    /// [`Error::InvalidArgument`], also before. If the mean of a field is not finite (a
    /// NaN or an infinity in a large field of some rank, which poisons the sum, or finite
    /// large values whose sum overflows), every rank returns the same [`Error::NonFinite`]
    /// naming the first such field, and `gradients` holds that non-finite mean. In every
    /// case no rank has applied anything (and `apply_gradients` refuses non-finite
    /// gradients too).
    ///
    /// On success `gradients` holds the mean over the ranks (identical bits on every rank:
    /// one reduction, whose result MPI distributes), so `apply_gradients` keeps the
    /// replicas identical. With equal shards of a mean loss, that is the gradient one
    /// process computes on the whole batch, to float rounding.
    ///
    /// The fused buffer lives in `World` and is reused: no allocation per step after the
    /// first (or after a change of model; or, once, the first time a large field is not
    /// contiguous in standard order, which goes through a staging buffer).
    pub fn allreduce_mean<G: Gradients>(&self, gradients: &mut G, local: Result<f32>) -> Result<f32> {
        self.reduce(gradients, local, false).map(|(loss, _)| loss)
    }

    /// [`Self::allreduce_mean`] and then `model.apply_gradients` of the mean, in one call
    /// that never stores the mean: `gradients` are left holding the ranks' *sum*, and
    /// the update multiplies each summed value by 1/N as it reads it (the same product a
    /// scaling pass stores, so the same update bits as `allreduce_mean` followed by
    /// `apply_gradients`, except with `clip_norm`, where the clip's scale and 1/N are
    /// one factor: a rounding apart). The finiteness check of the sums runs on each
    /// piece right after its allreduce, while it is in cache, and the update does not
    /// repeat it; in a world of one, only the update's check runs (nothing is reduced).
    /// That saves a pass over the gradients per step (`docs/distributed.md`, "Session
    /// 14").
    ///
    /// Returns the mean loss. Fails as `allreduce_mean` does, the same `Err` on every
    /// rank, before any rank changes its model; `Err` from the update (an overflowing
    /// update, `Error::NonFinite`) leaves the model unchanged, like `apply_gradients`.
    /// In every `Err` case `gradients` hold what they would after `allreduce_mean`'s,
    /// except that a non-finite sum is not scaled.
    ///
    /// ```text
    /// let local = model.compute_gradients_into(world.shard(x)?, world.shard(y)?, &mut g);
    /// let loss = world.allreduce_apply(&mut model, &mut g, local)?;
    /// ```
    pub fn allreduce_apply<M: Replica>(
        &self,
        model: &mut M,
        gradients: &mut M::Grads,
        local: Result<f32>,
    ) -> Result<f32> {
        let (loss, largest) = self.reduce(gradients, local, true)?;
        model.apply_scaled(gradients, 1.0 / self.size as f32, largest)?;
        Ok(loss)
    }

    /// `allreduce_mean` (`fold` false) or, with `fold`, the sums left unscaled and the
    /// largest `|sum / N|` returned (`None` in a world of one, which checks nothing).
    fn reduce<G: Gradients>(&self, gradients: &mut G, local: Result<f32>, fold: bool) -> Result<(f32, Option<f64>)> {
        // The settings decide which calls every rank makes: part of what must match.
        let hash =
            layout_hash::<G>() ^ (self.in_place_min as u64).rotate_left(17) ^ (self.chunk as u64).rotate_left(41);
        let mut fused = self.fused.borrow_mut();
        // A layout too large to address is this rank's failure, reported through the
        // control allreduce like any other (returning here would hang the others).
        let sized = if fused.layout != Some(hash) {
            fused.resize_for::<G>(hash, self.size > 1, self.in_place_min)
        } else {
            Ok(())
        };
        let chunk = self.chunk;
        let Fused { slots, total, in_place, small, staging, .. } = &mut *fused;
        let n = *total;
        // Shapes everywhere; the packed fields copied (with several ranks) and checked
        // here, so that their rank is named; the in-place ones are checked in their mean
        // below (or here, in a world of one).
        let several = self.size > 1;
        let local = sized
            .and(local)
            .and_then(|loss| check_and_pack(gradients, slots, small, self.size, self.rank, !fold).map(|()| loss));
        let failure = local.as_ref().err().map(ToString::to_string);
        self.control(Op::Allreduce, n as u64, hash, failure.as_deref())?;
        let loss = match local {
            Ok(loss) => loss,
            Err(_) => unreachable!("control() returned Err: this rank failed"),
        };
        if !several {
            return Ok((loss, None));
        }
        let scale = 1.0 / self.size as f32;
        // With `fold`: the largest |sum| seen (as bits of |x|: a NaN is above infinity).
        let mut largest = 0.0f32;
        // The large fields, each in place in its own array, scaled and checked in one
        // pass after its allreduce (its flag set if the mean is not finite); then the
        // packed ones, the flags and the loss, in one allreduce: the flags' sums (counts,
        // exact in any order) are the same on every rank, so is the verdict, with no
        // collective of its own and without trusting that MPI hands every rank the same
        // bits.
        let (flags, last) = (small.len() - 1 - *in_place, small.len() - 1);
        gradients.visit_mut(&mut |i, mut v| {
            if slots.get(i) != Some(&Slot::InPlace) {
                return;
            }
            // This field's flag: its rank among the in-place fields.
            let k = slots[..i].iter().filter(|s| **s == Slot::InPlace).count();
            let finite = match v.as_slice_mut() {
                Some(values) => {
                    let mut finite = true;
                    for piece in values.chunks_mut(chunk) {
                        sum_in_place(&self.comm, piece);
                        if fold {
                            let m = max_abs_slice(piece);
                            finite &= m.is_finite();
                            largest = largest.max(m);
                        } else {
                            finite &= scale_checked(piece, scale);
                        }
                    }
                    finite
                }
                None => {
                    // Not contiguous in standard order (a field replaced by a transposed
                    // array): through `staging`, in logical order like every rank.
                    if staging.len() < v.len() {
                        staging.resize(v.len(), 0.0);
                    }
                    let stage = &mut staging[..v.len()];
                    for (s, &x) in stage.iter_mut().zip(v.iter()) {
                        *s = x;
                    }
                    sum_in_place(&self.comm, stage);
                    let finite = if fold {
                        let m = max_abs_slice(stage);
                        largest = largest.max(m);
                        m.is_finite()
                    } else {
                        scale_checked(stage, scale)
                    };
                    for (x, &s) in v.iter_mut().zip(stage.iter()) {
                        *x = s;
                    }
                    finite
                }
            };
            if let Some(flag) = small.get_mut(flags + k) {
                *flag = if finite { 0.0 } else { 1.0 };
            }
        });
        small[last] = loss;
        sum_in_place(&self.comm, small);
        // The packed fields: every value was at most f32::MAX / N in magnitude on every
        // rank (checked before), so their sums and means are finite.
        let out = if fold { 1.0 } else { scale };
        gradients.visit_mut(&mut |i, mut v| {
            let Some(&Slot::Packed(start, end)) = slots.get(i) else { return };
            let src = &small[start..end];
            if fold {
                largest = largest.max(max_abs_slice(src));
            }
            match v.as_slice_mut() {
                Some(dst) => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = s * out;
                    }
                }
                None => {
                    for (d, &s) in v.iter_mut().zip(src) {
                        *d = s * out;
                    }
                }
            }
        });
        let in_place_fields = slots.iter().enumerate().filter(|(_, s)| **s == Slot::InPlace).map(|(i, _)| i);
        if let Some((i, _)) = in_place_fields.zip(&small[flags..last]).find(|(_, f)| **f != 0.0) {
            let param = G::LAYOUT.get(i).map_or("?", |f| f.0);
            return Err(Error::NonFinite {
                param,
                detail: format!(
                    "the mean of the {} ranks' gradients has a NaN or an infinity (a rank's gradient has, or \
                     their sum overflows), on every rank; no rank applied this step, and the gradients hold \
                     that mean (`allreduce_apply`: that sum)",
                    self.size
                ),
            });
        }
        let largest = fold.then(|| f64::from(largest) * f64::from(scale));
        Ok((small[last] * scale, largest))
    }

    /// Makes the ranks agree on a result each computed on its own (loading its data, a
    /// step of one's own): `Ok` on every rank if it is `Ok` on every rank, else the same
    /// [`Error::Distributed`] on every rank. One small collective.
    pub fn agree<T>(&self, local: Result<T>) -> Result<T> {
        let failure = local.as_ref().err().map(ToString::to_string);
        self.control(Op::Agree, 0, 0, failure.as_deref())?;
        match local {
            Ok(v) => Ok(v),
            Err(_) => unreachable!("control() returned Err: this rank failed"),
        }
    }

    /// This rank's part of `0..len`: the `rank`-th of `size` equal, contiguous shards.
    ///
    /// Errors: [`Error::InvalidArgument`] if `len` is not a multiple of the number of
    /// ranks. Equal shards are what make the mean of the ranks' mean gradients the
    /// gradient of the whole batch's mean loss, and the ranks' dropout masks those of one
    /// process; drop or pad the last batch of an epoch to a multiple.
    pub fn shard_range(&self, len: usize) -> Result<Range<usize>> {
        if !len.is_multiple_of(self.size) {
            return Err(Error::InvalidArgument(format!(
                "a batch of {len} does not split into {} equal shards (one per rank): use a multiple of {}",
                self.size, self.size
            )));
        }
        let per = len / self.size;
        Ok(self.rank * per..(self.rank + 1) * per)
    }

    /// This rank's shard of a batch: the rows [`Self::shard_range`] gives of `batch`'s
    /// first axis (a view, nothing copied).
    ///
    /// Errors: [`Error::InvalidArgument`] if `batch` has no axis or its first axis does
    /// not split into equal shards.
    pub fn shard<'a, A, D: Dimension>(&self, batch: ArrayView<'a, A, D>) -> Result<ArrayView<'a, A, D>> {
        if batch.ndim() == 0 {
            return Err(Error::InvalidArgument("a scalar has no batch axis to shard".to_string()));
        }
        let range = self.shard_range(batch.len_of(Axis(0)))?;
        Ok(batch.slice_axis_move(Axis(0), Slice::from(range)))
    }

    /// The control allreduce (see the module documentation): `Ok` if every rank runs
    /// `op` on a payload of `len` values of layout `hash` and none failed; otherwise the
    /// same `Err` on every rank.
    fn control(&self, op: Op, len: u64, hash: u64, failure: Option<&str>) -> Result<()> {
        if self.size == 1 {
            return match failure {
                None => Ok(()),
                Some(message) => Err(Error::Distributed { rank: 0, failed: 1, ranks: 1, message: message.to_string() }),
            };
        }
        if self.peer_left.get() {
            return Err(Error::InvalidArgument(format!(
                "another rank has left the job (see the earlier error), so {} cannot complete: end this rank too",
                Op::name(op as u64)
            )));
        }
        let failed = u64::from(failure.is_some());
        let mine = [op as u64, len, hash, failed, !(op as u64), !len, !hash, !failed];
        let mut max = [0u64; 8];
        self.comm.all_reduce_into(&mine[..], &mut max[..], SystemOperation::max());
        let min = |i: usize| !max[i + 4];
        if max[0] == Op::Leave as u64 {
            // Every rank leaving is the normal end of a job. Some leaving while others
            // call `World`: the leavers' message (their failure) reaches everyone through
            // the same details a failed step uses, then the others are told that the job
            // lost ranks (every later call fails at once, with no collective).
            if min(0) == Op::Leave as u64 {
                return Ok(());
            }
            let leaving = if op == Op::Leave { failure } else { None };
            let e = self.failure_details(leaving);
            if op != Op::Leave {
                self.peer_left.set(true);
            }
            return Err(e);
        }
        if max[0] != min(0) {
            return Err(Error::InvalidArgument(format!(
                "the ranks called different operations at once ({} and {}): every rank must make the same \
                 `World` calls in the same order",
                Op::name(min(0)),
                Op::name(max[0])
            )));
        }
        if max[1] != min(1) || max[2] != min(2) {
            return Err(Error::InvalidArgument(format!(
                "the ranks' {} payloads differ ({} to {} values, or another model's layout): every rank must \
                 train the same model",
                Op::name(max[0]),
                min(1),
                max[1]
            )));
        }
        if max[3] == 0 {
            return Ok(());
        }
        Err(self.failure_details(failure))
    }

    /// After a control allreduce that saw a failure: the same `Error::Distributed` on
    /// every rank (the lowest failing rank's message, and how many failed).
    fn failure_details(&self, failure: Option<&str>) -> Error {
        let size = self.size as u64;
        let mine = [if failure.is_some() { size - self.rank as u64 } else { 0 }];
        let mut first = [0u64];
        self.comm.all_reduce_into(&mine[..], &mut first[..], SystemOperation::max());
        let count = [u64::from(failure.is_some())];
        let mut failed = [0u64];
        self.comm.all_reduce_into(&count[..], &mut failed[..], SystemOperation::sum());
        let root = usize::try_from(size.saturating_sub(first[0])).unwrap_or(0).min(self.size - 1);
        let mut message = [0u8; MESSAGE_BYTES];
        if self.rank == root {
            let text = failure.unwrap_or_default();
            let mut cut = text.len().min(MESSAGE_BYTES - 4);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            message[..4].copy_from_slice(&(cut as u32).to_le_bytes());
            message[4..4 + cut].copy_from_slice(&text.as_bytes()[..cut]);
        }
        self.comm.process_at_rank(root as i32).broadcast_into(&mut message[..]);
        let len =
            (u32::from_le_bytes([message[0], message[1], message[2], message[3]]) as usize).min(MESSAGE_BYTES - 4);
        Error::Distributed {
            rank: root,
            failed: failed[0] as usize,
            ranks: self.size,
            message: String::from_utf8_lossy(&message[4..4 + len]).into_owned(),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Join the other ranks' next control allreduce as "leaving", so that a rank that
        // returns early (or ends its loop sooner) makes the others' current `World` call
        // fail instead of hanging them; when every rank leaves together, this is one
        // small collective at the end of the job. Not after a peer left (it would wait
        // for that peer forever), nor in a world of one.
        if self.size > 1 && !self.peer_left.get() {
            let message = format!(
                "rank {} left the job (its `World` was dropped: an early return, or a loop that ended sooner) \
                 while other ranks still called `World`",
                self.rank
            );
            let _ = self.control(Op::Leave, 0, 0, Some(&message));
        }
        // After MPI_Finalize a panic must unwind as usual (there is no MPI to abort).
        HOOK_ARMED.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("rank", &self.rank).field("size", &self.size).finish()
    }
}

impl Fused {
    /// Plans and sizes the buffers for `G`'s layout (once per model type in a row); a
    /// world of one copies nothing and keeps no buffers (`buffers` false).
    fn resize_for<G: Gradients>(&mut self, hash: u64, buffers: bool, in_place_min: usize) -> Result<()> {
        // Forget the old layout first: on `Err` the buffers fit no layout.
        self.layout = None;
        self.slots.clear();
        let mut slots = Vec::with_capacity(G::LAYOUT.len());
        let (mut total, mut packed) = (0usize, 0usize);
        for (name, dims) in G::LAYOUT {
            let len = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            total = len.and_then(|l| total.checked_add(l)).ok_or_else(|| {
                Error::InvalidArgument(format!("gradient `{name}` of model `{}` does not fit in memory", G::MODEL))
            })?;
            let len = len.unwrap_or(0);
            if len >= in_place_min {
                slots.push(Slot::InPlace);
            } else {
                slots.push(Slot::Packed(packed, packed + len));
                packed += len;
            }
        }
        // The packed fields, the in-place fields' flags, then the loss.
        self.in_place = slots.iter().filter(|s| **s == Slot::InPlace).count();
        self.small = if buffers { vec![0.0; packed + self.in_place + 1] } else { Vec::new() };
        self.slots = slots;
        self.total = total;
        self.layout = Some(hash);
        Ok(())
    }
}

/// Checks every field's shape; with several `ranks`, copies the packed fields into
/// `small` (logical order, whatever a field's memory layout) checking that every value
/// is at most `f32::MAX / ranks` in magnitude (so finite, and so is the sum of the
/// ranks' values: no overflow to check after the reduction); in a world of one, checks
/// every field's finiteness with `check_alone` (nothing moves; `allreduce_apply`'s update checks).
fn check_and_pack<G: Gradients>(
    g: &G,
    slots: &[Slot],
    small: &mut [f32],
    ranks: usize,
    rank: usize,
    check_alone: bool,
) -> Result<()> {
    let mut mismatches = Vec::new();
    let mut non_finite: Option<&'static str> = None;
    let mut visited = 0;
    let limit = f32::MAX / ranks as f32;
    g.visit(&mut |i, v| {
        visited += 1;
        let (Some(&(name, dims)), Some(&slot)) = (G::LAYOUT.get(i), slots.get(i)) else { return };
        if v.shape() != dims {
            mismatches.push(ShapeMismatch { name, expected: dims.to_vec(), found: v.shape().to_vec() });
            return;
        }
        let finite = match (ranks > 1, slot) {
            // Checked in its mean, after the reduction.
            (true, Slot::InPlace) => true,
            (true, Slot::Packed(start, end)) => match v.as_slice() {
                Some(src) => copy_bounded(src, &mut small[start..end], limit),
                None => {
                    let mut ok = true;
                    for (d, &s) in small[start..end].iter_mut().zip(v.iter()) {
                        *d = s;
                        ok &= s.abs() <= limit;
                    }
                    ok
                }
            },
            // Alone, with nothing reduced: checked by the update (`allreduce_apply`).
            (false, _) if !check_alone => true,
            (false, _) => match v.as_slice() {
                Some(src) => all_finite(src),
                None => v.iter().all(|x| x.is_finite()),
            },
        };
        if !finite && non_finite.is_none() {
            non_finite = Some(name);
        }
    });
    if !mismatches.is_empty() {
        return Err(Error::GradientShape { mismatches });
    }
    if visited != G::LAYOUT.len() {
        return Err(Error::InvalidArgument(format!(
            "gradients of model `{}` visited {visited} fields, its layout has {}",
            G::MODEL,
            G::LAYOUT.len()
        )));
    }
    if let Some(param) = non_finite {
        let detail = if ranks > 1 {
            format!(
                "its gradient on rank {rank} has a NaN, an infinity or a value beyond f32::MAX / {ranks} (whose sum \
                 over the ranks could overflow)"
            )
        } else {
            format!("its gradient on rank {rank} has a NaN or an infinity")
        };
        return Err(Error::NonFinite { param, detail });
    }
    Ok(())
}

/// Whether a value is a NaN or an infinity (exponent all ones), as a 0 or 1 to OR into
/// an accumulator: no branch per value, so the loops below vectorize.
#[inline(always)]
fn non_finite(x: f32) -> u32 {
    u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000)
}

/// Copies `src` into `dst`; whether every value is at most `limit` in magnitude (NaN is
/// not), in one pass without a branch per value.
fn copy_bounded(src: &[f32], dst: &mut [f32], limit: f32) -> bool {
    let mut good = 1u32;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s;
        good &= u32::from(s.abs() <= limit);
    }
    good == 1
}

/// Multiplies `values` by `scale` in place; whether every result is finite (one pass:
/// the finiteness check of an in-place field costs no pass of its own).
fn scale_checked(values: &mut [f32], scale: f32) -> bool {
    let mut bad = 0u32;
    for v in values.iter_mut() {
        let x = *v * scale;
        *v = x;
        bad |= non_finite(x);
    }
    bad == 0
}

fn all_finite(src: &[f32]) -> bool {
    src.iter().fold(0u32, |bad, &s| bad | non_finite(s)) == 0
}

unsafe extern "C" {
    /// `MPI_IN_PLACE` of the MPI this is built against (`in_place.c`, compiled by
    /// `build.rs`).
    fn modelc_mpi_in_place() -> *mut c_void;
}

/// Sums `values` over the ranks, in place (`MPI_Allreduce` with `MPI_IN_PLACE`): no
/// receive buffer, and no copy of the send buffer into it inside MPI (Open MPI's
/// algorithms start with one when the buffers differ).
fn sum_in_place(comm: &SimpleCommunicator, values: &mut [f32]) {
    // SAFETY: a function of no arguments returning a constant of mpi.h.
    let in_place = unsafe { modelc_mpi_in_place() };
    for chunk in values.chunks_mut(MAX_COUNT) {
        // SAFETY: `chunk` is a valid, exclusively borrowed buffer of `chunk.len()` f32s
        // (at most MAX_COUNT, so the count fits a C int), described by MPI's float type;
        // with MPI_IN_PLACE as the send buffer MPI reads and writes only `chunk`, and it
        // returns only when done (a blocking call). Every rank makes the same calls with
        // the same counts: the control allreduce checked the layouts first. An MPI error
        // aborts the job (the default MPI_ERRORS_ARE_FATAL handler), so the return code
        // carries nothing to handle.
        unsafe {
            ffi::MPI_Allreduce(
                in_place.cast_const(),
                chunk.as_mut_ptr().cast(),
                chunk.len() as c_int,
                f32::equivalent_datatype().as_raw(),
                SystemOperation::sum().as_raw(),
                comm.as_raw(),
            );
        }
    }
}

/// FNV-1a of the model name and every field's name and shape.
fn layout_hash<G: Gradients>() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(G::MODEL.as_bytes());
    for (name, dims) in G::LAYOUT {
        eat(&[0xff]);
        eat(name.as_bytes());
        for d in *dims {
            eat(&(*d as u64).to_le_bytes());
        }
    }
    h
}

/// Installs (once) and arms the hook that ends the whole job when this rank panics.
fn arm_abort_on_panic(rank: usize) {
    HOOK_RANK.store(rank, Ordering::SeqCst);
    let _ = MPI_THREAD.set(thread::current().id());
    HOOK_INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            previous(info);
            if !HOOK_ARMED.load(Ordering::SeqCst) {
                return;
            }
            let rank = HOOK_RANK.load(Ordering::SeqCst);
            eprintln!(
                "modelc::mpi: rank {rank} panicked; aborting the whole job so that no other rank waits for it forever"
            );
            if MPI_THREAD.get() == Some(&thread::current().id()) {
                SimpleCommunicator::world().abort(PANIC_EXIT_CODE);
            }
            // MPI calls belong to the thread that initialized it (funneled): from any other
            // thread, end the process; mpirun then ends the job (about a second).
            std::process::abort();
        }));
    });
    HOOK_ARMED.store(true, Ordering::SeqCst);
}
