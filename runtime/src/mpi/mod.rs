//! Data-parallel training over MPI: each process (rank) computes the gradients of its
//! shard of the batch, one allreduce averages them, and every rank applies the same
//! update, so the model stays identical everywhere (Horovod, PyTorch DDP).
//!
//! - `World` (feature `mpi`): MPI's world (init, rank, size), `broadcast_params`,
//!   `allreduce_mean` (one fused allreduce per step, every rank agreeing on the step's
//!   fate), and the shard helpers. A program run without `mpirun` is a world of one.
//! - [`Gradients`] and [`Replica`] (always built, no MPI needed): what `World` needs of
//!   a generated model. `model!` implements them for every model, so the runtime has no
//!   per-model code; nothing else should need them.
//!
//! `docs/distributed.md` says how to run it (one machine and several), how batch size
//! and learning rate scale, what is guaranteed, and what it costs.

#[cfg(feature = "mpi")]
mod world;
/// The `mpi` crate (rsmpi) `World` is built on, for collectives of one's own on
/// [`World::communicator`].
#[cfg(feature = "mpi")]
pub use ::mpi as rsmpi;
#[cfg(feature = "mpi")]
pub use world::World;

use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::Result;

/// A generated gradients struct (`<Model>Gradients`): its tensors, in declaration order,
/// as `World::allreduce_mean` packs them into one buffer. Implemented by `model!`.
pub trait Gradients {
    /// The model's struct name.
    const MODEL: &'static str;
    /// Every field's name and declared shape (the trainable params'), in declaration
    /// order: the layout of the fused buffer, the same on every rank of one model.
    const LAYOUT: &'static [(&'static str, &'static [usize])];

    /// Calls `f(i, field)` for each field `i` of [`Self::LAYOUT`], in order. A field's
    /// actual shape may differ from its declared one (the fields are public); the caller
    /// checks.
    fn visit(&self, f: &mut dyn FnMut(usize, ArrayViewD<'_, f32>));

    /// [`Self::visit`], mutably.
    fn visit_mut(&mut self, f: &mut dyn FnMut(usize, ArrayViewMutD<'_, f32>));
}

/// A generated model, as `World::broadcast_params` copies it from rank 0. Implemented by
/// `model!`.
pub trait Replica {
    /// The model's gradients struct (`<Model>Gradients`).
    type Grads: Gradients;

    /// The model's state as the bytes of its checkpoint (`save`'s file, in memory): the
    /// params, every optimizer slot, the global step and the dropout stream.
    fn state_bytes(&self) -> Result<Vec<u8>>;

    /// Replaces the state by the one `bytes` ([`Self::state_bytes`]) holds, checked as
    /// `load` checks a file (model name, every tensor's name and shape); `Err` changes
    /// nothing. The optimizer's hyperparameters (learning rate included) stay.
    fn restore_state_bytes(&mut self, bytes: &[u8]) -> Result<()>;

    /// The learning rate the optimizer uses now (0 without an optimizer).
    fn replica_learning_rate(&self) -> f32;

    /// Sets the learning rate (no effect without an optimizer).
    fn set_replica_learning_rate(&mut self, learning_rate: f32);

    /// Makes the dropout masks those of shard `rank` of `ranks` of each batch
    /// (`modelc::random::DropoutStream::set_shard`); no effect without dropout.
    fn set_shard(&mut self, rank: usize, ranks: usize);

    /// `apply_gradients` of `sum` times `scale` (the ranks' summed gradients and 1/N:
    /// `World::allreduce_apply`), the same update bits as scaling first; `largest` is
    /// the largest `|scale * g|` when the caller has checked every gradient finite (no
    /// check pass here), `None` to check here. `Err`, changing nothing, as
    /// `apply_gradients`.
    #[doc(hidden)]
    fn apply_scaled(&mut self, sum: &Self::Grads, scale: f32, largest: Option<f64>) -> Result<()>;
}
