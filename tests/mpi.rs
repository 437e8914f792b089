//! Data-parallel training over MPI (`modelc::mpi`, feature `mpi`; docs/distributed.md).
//!
//! Each `#[test]` here (a *driver*) runs this same test binary under
//! `timeout -k 10 120 mpirun -n 2` with `MODELC_MPI_WORKER=<case>`, which makes the
//! `worker` test of each rank run that case (MPI initializes once per process, so every
//! case needs processes of its own), then checks the job's exit code, time and output.
//! Run directly, `worker` does nothing. The drivers take a lock, so that two jobs never
//! share the two cores at once.
//!
//! - `equivalence`: 2 ranks on shards of 8 rows vs one process on the 16-row batch, for
//!   SGD and Adam, each with and without dropout (two dropout layers: each rank's masks
//!   are the rows one process draws), 5 steps: the params agree to a measured tolerance
//!   and are bitwise identical on both ranks; no step after the first allocates. Also on
//!   3 and 4 ranks (oversubscribed), with a 1M-value field (`Big`) that takes Open MPI's
//!   large-message algorithms: the params bit for bit the same on every rank.
//! - `resume`: a checkpoint written by rank 0 at step 3 and broadcast to a fresh job
//!   resumes it bit for bit (Adam with dropout, 6 steps).
//! - `failures`: a bad shape, a NaN, an out-of-range index, gradients of the wrong
//!   shape, another model's gradients, a broadcast into another model, on rank 1 only:
//!   every rank returns the same `Err` and nothing changes; then a good step works.
//! - `panic`: rank 1 panics while rank 0 waits in the allreduce: the job ends in seconds;
//!   `panic_thread`: the same from another thread of rank 1.
//! - `singleton`: without `mpirun`, a world of one (no `mpirun` needed).
//!
//! Built without the `mpi` feature, only the trait tests run (they need no MPI) and
//! `mpi_tests_need_the_feature` says why the rest is skipped. CI: `cargo test --features
//! mpi --test mpi` (needs `libopenmpi-dev openmpi-bin libclang-dev`). About 10 s of
//! test time (each job starts in about 1 s).

use modelc::model;
use modelc::mpi::{Gradients, Replica};
use modelc::ndarray::Array2;

// Counts this thread's allocations (`tests/common`): a distributed step allocates
// nothing after its first (C allocations inside MPI are not seen).
mod common;
#[cfg(feature = "mpi")]
use common::allocations;

model! {
    /// Plain SGD, no dropout.
    pub struct SgdNet {
        input x: [batch, 8];
        input y: [batch, 4];
        param w1: [8, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// Adam, no dropout.
    pub struct AdamNet {
        input x: [batch, 8];
        input y: [batch, 4];
        param w1: [8, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.02);
    }
}

model! {
    /// SGD with two dropout layers (each rank must draw its rows of both masks).
    pub struct SgdDrop {
        input x: [batch, 8];
        input y: [batch, 4];
        param w1: [8, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = dropout(relu(matmul(dropout(x, rate = 0.2), w1) + b1), rate = 0.5);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// Adam with two dropout layers.
    pub struct AdamDrop {
        input x: [batch, 8];
        input y: [batch, 4];
        param w1: [8, 16] = glorot_uniform;
        param b1: [16] = constant(0.05);
        param w2: [16, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = dropout(relu(matmul(dropout(x, rate = 0.2), w1) + b1), rate = 0.5);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.02);
    }
}

model! {
    /// A first layer of 32,768 weights: `w1` is reduced in place (its own allreduce, its
    /// finiteness checked in the mean), the other fields packed together.
    pub struct Wide {
        input x: [batch, 256];
        input y: [batch, 4];
        param w1: [256, 128] = glorot_uniform;
        param b1: [128] = constant(0.05);
        param w2: [128, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// `Wide` with Adam. (With dropout too, 5 steps differed by 8.0e-5 from one process,
    /// with every field packed as well as with `w1` in place: Adam's division by
    /// sqrt(v) amplifies the rounding of near-zero gradients there; the same model with
    /// SGD and dropout agreed to 3.8e-8, so the masks are right.)
    pub struct WideAdam {
        input x: [batch, 256];
        input y: [batch, 4];
        param w1: [256, 128] = glorot_uniform;
        param b1: [128] = constant(0.05);
        param w2: [128, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer adam(learning_rate = 0.02);
    }
}

model! {
    /// A first layer of 1M weights (4 MB, M3's size of field): its allreduce takes Open
    /// MPI's large-message algorithms (a ring or reduce-scatter + allgather) on any
    /// number of ranks, where the small models' take recursive doubling.
    pub struct Big {
        input x: [batch, 256];
        input y: [batch, 4];
        param w1: [256, 4096] = glorot_uniform;
        param b1: [4096] = constant(0.05);
        param w2: [4096, 4] = glorot_uniform;
        param b2: [4] = zeros;
        let h = relu(matmul(x, w1) + b1);
        loss l = mean(softmax_cross_entropy(matmul(h, w2) + b2, y));
        optimizer sgd(learning_rate = 0.3);
    }
}

model! {
    /// Integer labels: an out-of-range one is an `Error::Index`.
    pub struct Sparse {
        input x: [batch, 8];
        input y: [batch] as u32;
        param w: [8, 4] = glorot_uniform;
        param b: [4] = zeros;
        loss l = mean(sparse_softmax_cross_entropy(matmul(x, w) + b, y));
        optimizer sgd(learning_rate = 0.5);
    }
}

/// The global batch of step `step`: `n` rows of 8 features in [-1, 1], one-hot labels of
/// a fixed rule (so the model can learn something).
fn batch(step: u64, n: usize) -> (Array2<f32>, Array2<f32>) {
    batch_of(step, n, 8)
}

/// [`batch`] with `width` features.
fn batch_of(step: u64, n: usize, width: usize) -> (Array2<f32>, Array2<f32>) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let x = Array2::from_shape_fn((n, width), |_| next());
    let mut y = Array2::zeros((n, 4));
    for (i, row) in x.rows().into_iter().enumerate() {
        let class = usize::from(row[0] + row[1] > 0.0) * 2 + usize::from(row[2] - row[3] > 0.0);
        y[[i, class]] = 1.0;
    }
    (x, y)
}

/// The params of any of the four `w1, b1, w2, b2` models, flattened in order.
macro_rules! params {
    ($m:expr) => {{
        let m = &$m;
        let mut v: Vec<f32> = Vec::new();
        v.extend(m.w1.iter());
        v.extend(m.b1.iter());
        v.extend(m.w2.iter());
        v.extend(m.b2.iter());
        v
    }};
}

// ---- The traits `World` reads models through (no MPI needed) ----

#[test]
fn gradients_layout_is_the_trainable_params_in_order() {
    assert_eq!(SgdNetGradients::MODEL, "SgdNet");
    let m = SgdNet::new();
    let declared: Vec<(&str, Vec<usize>)> = m.trainable_variables().iter().map(|v| (v.name, v.shape.clone())).collect();
    let layout: Vec<(&str, Vec<usize>)> = SgdNetGradients::LAYOUT.iter().map(|(n, d)| (*n, d.to_vec())).collect();
    assert_eq!(layout, declared);
    // visit / visit_mut see the fields in that order, with their values.
    let mut g = SgdNetGradients::zeros();
    g.b2.fill(2.0);
    let mut seen = Vec::new();
    g.visit(&mut |i, v| seen.push((i, v.shape().to_vec(), v.sum())));
    assert_eq!(seen, vec![(0, vec![8, 16], 0.0), (1, vec![16], 0.0), (2, vec![16, 4], 0.0), (3, vec![4], 8.0)]);
    g.visit_mut(&mut |i, mut v| v.fill(i as f32));
    assert_eq!(g.w2[[3, 1]], 2.0);
    assert_eq!(g.b2[0], 3.0);
}

#[test]
fn replica_state_round_trips_exactly_and_checks_the_model() {
    // Train a model with dropout and Adam a little, so that params, both moments, the
    // step and the stream position all differ from a fresh model's.
    let mut a = AdamDrop::with_seed(3);
    for step in 0..3 {
        let (x, y) = batch(step, 16);
        a.train_step(x.view(), y.view()).unwrap();
    }
    a.set_learning_rate(0.5);
    let bytes = a.state_bytes().unwrap();
    let mut b = AdamDrop::with_seed(99);
    b.set_learning_rate(0.25);
    b.restore_state_bytes(&bytes).unwrap();
    assert_eq!(b.global_step(), 3);
    assert_eq!(params!(b), params!(a));
    // The hyperparameters stay the receiver's (broadcast_params sends the rate itself).
    assert_eq!(b.learning_rate(), 0.25);
    b.set_learning_rate(0.5);
    // The same next step: same moments, same masks.
    let (x, y) = batch(3, 16);
    assert_eq!(a.train_step(x.view(), y.view()).unwrap(), b.train_step(x.view(), y.view()).unwrap());
    assert_eq!(params!(b), params!(a));
    // (The bytes themselves may differ: safetensors writes the metadata map in any order.)

    // Another model's bytes: an error naming both models, and nothing changed.
    let mut other = AdamNet::with_seed(5);
    let before = params!(other);
    let e = other.restore_state_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("`AdamDrop`") && e.contains("`AdamNet`"), "{e}");
    assert_eq!(params!(other), before);
    assert!(other.restore_state_bytes(&bytes[..bytes.len() / 2]).is_err());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_tests_need_the_feature() {
    println!(
        "skipped: the mpirun tests of tests/mpi.rs need `--features mpi` (and Open MPI: apt-get install \
         libopenmpi-dev openmpi-bin libclang-dev)"
    );
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::path::PathBuf;
    use std::process::{Command, Output};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use modelc::mpi::rsmpi::collective::SystemOperation;
    use modelc::mpi::rsmpi::traits::*;
    use modelc::mpi::World;
    use modelc::ndarray::{Array1, Array2};
    use modelc::Error;

    use super::*;

    /// One mpirun job at a time: two would share the two cores, and their ranks spin.
    static JOBS: Mutex<()> = Mutex::new(());

    /// Runs case `case` on `n` ranks under `timeout -k 10 <limit> mpirun`; `n == 0`
    /// runs the binary directly (no mpirun).
    fn run(case: &str, n: usize, limit_s: u32) -> (Output, Duration) {
        let _job = JOBS.lock().unwrap_or_else(|e| e.into_inner());
        let exe = std::env::current_exe().expect("the test binary's path");
        let dir = std::env::temp_dir().join(format!("modelc-mpi-{case}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let limit = limit_s.to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "10", &limit]);
        if n > 0 {
            let n = n.to_string();
            cmd.args(["mpirun", "--oversubscribe", "-n", &n]);
        }
        cmd.arg(&exe).args(["with_mpi::worker", "--exact", "--nocapture", "--test-threads=1", "-q"]);
        cmd.env("MODELC_MPI_WORKER", case)
            .env("MODELC_MPI_DIR", &dir)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
        let start = Instant::now();
        let out = cmd.output().expect("timeout and mpirun (apt-get install openmpi-bin)");
        let took = start.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        (out, took)
    }

    fn text(out: &Output) -> String {
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Runs `case` on 2 ranks and checks that both ranks finished it.
    fn passes(case: &str) -> String {
        passes_on(case, 2)
    }

    /// Runs `case` on `n` ranks (more than the 2 cores: oversubscribed) and checks that
    /// every rank finished it.
    fn passes_on(case: &str, n: usize) -> String {
        let (out, took) = run(case, n, 120);
        let all = text(&out);
        assert!(out.status.success(), "mpirun -n {n} {case} failed ({:?}, {took:?}):\n{all}", out.status);
        for rank in 0..n {
            assert!(all.contains(&format!("rank {rank}: {case} done")), "rank {rank} did not finish {case}:\n{all}");
        }
        println!("{case} on {n} ranks: {took:.1?}\n{all}");
        all
    }

    #[test]
    fn equivalence_with_one_process_on_the_doubled_batch() {
        passes("equivalence");
    }

    /// 3 and 4 ranks (oversubscribed on 2 cores): the same equivalence with one process on
    /// the whole batch, and the params bit for bit the same on every rank (Open MPI's
    /// allreduce with more than 2 ranks reduces in a tree or a ring, so whether every
    /// rank receives the same bits is not obvious, and the MPI standard does not promise
    /// it).
    #[test]
    fn equivalence_and_identical_replicas_on_3_and_4_ranks() {
        passes_on("equivalence", 4);
        passes_on("equivalence", 3);
    }

    #[test]
    fn a_checkpoint_of_rank_0_resumes_the_job_exactly() {
        passes("resume");
    }

    #[test]
    fn a_bad_batch_on_one_rank_fails_the_step_on_every_rank() {
        passes("failures");
    }

    #[test]
    fn a_bad_gradient_reduced_in_place_fails_the_step_on_every_rank() {
        passes("in_place_failures");
    }

    #[test]
    fn a_rank_that_leaves_early_makes_the_others_fail_instead_of_hanging() {
        let (out, took) = run("leave", 2, 60);
        let all = text(&out);
        println!("leave: {:?} after {took:.1?}\n{all}", out.status);
        assert!(!matches!(out.status.code(), Some(124 | 137)), "the job hung:\n{all}");
        assert!(out.status.success(), "{all}");
        assert!(took < Duration::from_secs(20), "the job took {took:?} to end:\n{all}");
        for rank in 0..2 {
            assert!(all.contains(&format!("rank {rank}: leave done")), "rank {rank} did not finish:\n{all}");
        }
    }

    #[test]
    fn a_panicking_rank_ends_the_job_in_seconds() {
        let (out, took) = run("panic", 2, 60);
        let all = text(&out);
        println!("panic: {:?} after {took:.1?}\n{all}", out.status);
        assert!(!out.status.success(), "{all}");
        // timeout's 124 (or 137 after -k) would mean a hang.
        assert!(!matches!(out.status.code(), Some(124 | 137)), "the job hung:\n{all}");
        assert!(took < Duration::from_secs(20), "the job took {took:?} to end:\n{all}");
        assert!(all.contains("rank 1 panicked"), "{all}");
        assert!(all.contains("deliberate panic on rank 1"), "{all}");
    }

    #[test]
    fn a_panic_on_another_thread_of_a_rank_ends_the_job_too() {
        let (out, took) = run("panic_thread", 2, 60);
        let all = text(&out);
        println!("panic_thread: {:?} after {took:.1?}\n{all}", out.status);
        assert!(!out.status.success(), "{all}");
        assert!(!matches!(out.status.code(), Some(124 | 137)), "the job hung:\n{all}");
        assert!(took < Duration::from_secs(20), "the job took {took:?} to end:\n{all}");
        assert!(all.contains("rank 1 panicked") && all.contains("deliberate panic on a thread of rank 1"), "{all}");
    }

    #[test]
    fn without_mpirun_a_world_of_one() {
        let (out, took) = run("singleton", 0, 60);
        let all = text(&out);
        assert!(out.status.success(), "singleton failed ({:?}, {took:?}):\n{all}", out.status);
        assert!(all.contains("rank 0: singleton done"), "{all}");
    }

    // ---- The workers: what each rank runs ----

    /// The entry of every rank; does nothing unless `MODELC_MPI_WORKER` names a case.
    #[test]
    fn worker() {
        let Ok(case) = std::env::var("MODELC_MPI_WORKER") else { return };
        let world = World::init().expect("MPI init");
        match case.as_str() {
            "equivalence" => equivalence(&world),
            "resume" => resume(&world),
            "failures" => failures(&world),
            "in_place_failures" => in_place_failures(&world),
            "leave" => return leave(world),
            "panic" => panic_on_rank_1(&world),
            "panic_thread" => {
                // A worker thread's panic (as a rayon worker's would be): the hook ends
                // the process from that thread, and mpirun the job.
                if world.rank() == 1 {
                    let _ = std::thread::spawn(|| panic!("deliberate panic on a thread of rank 1")).join();
                }
                panic_on_rank_1(&world)
            }
            "singleton" => singleton(&world),
            other => panic!("unknown case {other}"),
        }
        println!("rank {}: {case} done", world.rank());
    }

    /// Panics unless `s` is the same on every rank (compared through a hash).
    fn same_everywhere(world: &World, what: &str, s: &str) {
        let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let mine = [h, !h];
        let mut max = [0u64; 2];
        world.communicator().all_reduce_into(&mine[..], &mut max[..], SystemOperation::max());
        assert!(max[0] == h && !max[1] == h, "rank {}: {what} differs across ranks: {s}", world.rank());
    }

    fn bits(v: &[f32]) -> String {
        v.iter().map(|x| format!("{:08x}", x.to_bits())).collect()
    }

    /// Largest |a - b| / (1 + |b|).
    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
    }

    /// Measured (session 11): after 5 steps the params differed by at most 4.0e-8
    /// (relative, all four models) and the losses by 1.2e-7 (one ulp): float rounding of
    /// sums in another order. 2e-6 leaves room for the other kernels (MODELC_KERNEL) and
    /// is far below the effect of a wrong mask or a wrong mean (see the report: masks not
    /// sharded gave 9.8e-2 for SgdDrop).
    const TOLERANCE: f32 = 2e-6;
    /// `WideAdam` on 3 ranks (session 13): 2.5e-5 (the same with the mean computed as
    /// `sum / 3` instead of `sum * (1/3)`, so not the inexact 1/3): its `w1` has
    /// gradients that are near-zero sums of cancelling rows, whose rounding in another
    /// order (3 shards of 8 rows against 24 rows at once) Adam's division by sqrt(v)
    /// turns into visible differences of the update (the `WideAdam` note above). 8.4e-7
    /// on 4 ranks, and its SGD twin `Wide` agrees to 3.7e-8 on 3: the masks and the mean
    /// are right. Still far below a wrong mean or mask.
    const ADAM_CANCELLING_TOLERANCE: f32 = 1e-4;
    const STEPS: u64 = 5;
    const PER_RANK: usize = 8;

    macro_rules! equivalence_case {
        ($world:expr, $Model:ident, $Grads:ident) => {
            equivalence_case!($world, $Model, $Grads, 8, false)
        };
        ($world:expr, $Model:ident, $Grads:ident, $width:expr, $fortran:expr) => {
            equivalence_case!($world, $Model, $Grads, $width, $fortran, TOLERANCE)
        };
        // `width` features; with `fortran`, rank 1's `w1` gradient is column-major (its
        // values reach `allreduce_mean` in another memory order than rank 0's).
        ($world:expr, $Model:ident, $Grads:ident, $width:expr, $fortran:expr, $tolerance:expr) => {{
            let world: &World = $world;
            let tolerance: f32 = $tolerance;
            let fortran: bool = $fortran && world.rank() == 1;
            let n = world.size();
            // Rank 0's seed wins: the others start elsewhere to show the broadcast.
            let mut m = $Model::with_seed(if world.is_root() { 1 } else { 100 + world.rank() as u64 });
            world.broadcast_params(&mut m).unwrap();
            let mut single = $Model::with_seed(1);
            assert_eq!(params!(m), params!(single));
            // `folded` trains through `allreduce_apply` (the update scales the sums): the
            // same bits as `m`'s mean and then `apply_gradients`.
            let mut folded = $Model::with_seed(if world.is_root() { 1 } else { 200 + world.rank() as u64 });
            world.broadcast_params(&mut folded).unwrap();
            let (mut g, mut gs, mut gf) = ($Grads::zeros(), $Grads::zeros(), $Grads::zeros());
            if fortran {
                use modelc::ndarray::ShapeBuilder;
                g.w1 = Array2::zeros(g.w1.raw_dim().f());
                gf.w1 = Array2::zeros(gf.w1.raw_dim().f());
            }
            let mut max_loss_diff = 0f32;
            for step in 0..STEPS {
                let (x, y) = batch_of(step, PER_RANK * n, $width);
                let before = allocations();
                let local = m.compute_gradients_into(world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap(), &mut g);
                assert_eq!(g.w1.is_standard_layout(), !fortran);
                let loss = world.allreduce_mean(&mut g, local).unwrap();
                m.apply_gradients(&g).unwrap();
                // (apply_gradients copies a column-major gradient into standard order.)
                if step > 0 && !fortran {
                    let n = allocations() - before;
                    assert_eq!(n, 0, "{}: step {step} allocated {n} times", stringify!($Model));
                }
                let before = allocations();
                let local = folded.compute_gradients_into(world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap(), &mut gf);
                let folded_loss = world.allreduce_apply(&mut folded, &mut gf, local).unwrap();
                if step > 0 && !fortran {
                    let n = allocations() - before;
                    assert_eq!(n, 0, "{} (allreduce_apply): step {step} allocated {n} times", stringify!($Model));
                }
                assert_eq!(folded_loss.to_bits(), loss.to_bits());
                assert_eq!(bits(&params!(folded)), bits(&params!(m)), "{}: allreduce_apply's update differs", stringify!($Model));
                let single_loss = single.compute_gradients_into(x.view(), y.view(), &mut gs).unwrap();
                single.apply_gradients(&gs).unwrap();
                max_loss_diff = max_loss_diff.max((loss - single_loss).abs());
            }
            let diff = max_rel(&params!(m), &params!(single));
            println!(
                "rank {}: {}: {STEPS} steps, params differ by at most {diff:.2e} (relative), losses by {max_loss_diff:.2e}",
                world.rank(),
                stringify!($Model)
            );
            assert!(diff <= tolerance, "{}: {diff:e} > {tolerance:e}", stringify!($Model));
            assert!(max_loss_diff <= TOLERANCE, "{}: loss {max_loss_diff:e}", stringify!($Model));
            assert_eq!(m.global_step(), STEPS);
            same_everywhere(world, "the params", &bits(&params!(m)));
        }};
    }

    fn equivalence(world: &World) {
        equivalence_case!(world, SgdNet, SgdNetGradients);
        equivalence_case!(world, AdamNet, AdamNetGradients);
        equivalence_case!(world, SgdDrop, SgdDropGradients);
        equivalence_case!(world, AdamDrop, AdamDropGradients);
        // `w1` reduced in place (and through the staging buffer where it is column-major).
        equivalence_case!(world, Wide, WideGradients, 256, false);
        let wide_adam = if world.size() == 3 { ADAM_CANCELLING_TOLERANCE } else { TOLERANCE };
        equivalence_case!(world, WideAdam, WideAdamGradients, 256, false, wide_adam);
        equivalence_case!(world, Wide, WideGradients, 256, true);
        equivalence_case!(world, Big, BigGradients, 256, false);
    }

    fn step(world: &World, m: &mut AdamDrop, g: &mut AdamDropGradients) {
        let (x, y) = batch(m.global_step(), PER_RANK * world.size());
        let local = m.compute_gradients_into(world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap(), g);
        world.allreduce_mean(g, local).unwrap();
        m.apply_gradients(g).unwrap();
    }

    fn resume(world: &World) {
        let dir = PathBuf::from(std::env::var("MODELC_MPI_DIR").expect("MODELC_MPI_DIR"));
        let path = dir.join("half-way.safetensors");
        let mut g = AdamDropGradients::zeros();
        // Uninterrupted: 6 steps; rank 0 saves after 3.
        let mut m = AdamDrop::with_seed(7);
        world.broadcast_params(&mut m).unwrap();
        while m.global_step() < 6 {
            if m.global_step() == 3 && world.is_root() {
                m.save(&path).unwrap();
            }
            step(world, &mut m, &mut g);
        }
        world.barrier().unwrap();
        // A fresh job: other seeds everywhere, rank 0 loads the checkpoint, broadcast.
        let mut r = AdamDrop::with_seed(1000 + world.rank() as u64);
        if world.is_root() {
            r = AdamDrop::load(&path).unwrap();
        }
        world.broadcast_params(&mut r).unwrap();
        assert_eq!(r.global_step(), 3);
        while r.global_step() < 6 {
            step(world, &mut r, &mut g);
        }
        assert_eq!(bits(&params!(r)), bits(&params!(m)), "rank {}: the resumed run differs", world.rank());
        // One more step each: the same moments and the same stream give the same params.
        let mut g2 = AdamDropGradients::zeros();
        step(world, &mut m, &mut g);
        step(world, &mut r, &mut g2);
        assert_eq!(bits(&params!(r)), bits(&params!(m)), "rank {}: the resumed state differs", world.rank());
        println!("rank {}: resumed at step 3 of 6: params, moments and stream bit for bit", world.rank());
    }

    /// Runs `f` and checks that every rank got the same `Err`, naming `expect`, and that
    /// neither the model nor the gradients changed.
    fn fails_everywhere(world: &World, what: &str, expect: &str, result: modelc::Result<f32>) {
        let e = match result {
            Ok(_) => panic!("rank {}: {what}: Ok, expected an error", world.rank()),
            Err(e) => e,
        };
        let s = e.to_string();
        println!("rank {}: {what}: {s}", world.rank());
        assert!(s.contains(expect), "rank {}: {what}: {s}", world.rank());
        same_everywhere(world, what, &s);
    }

    fn failures(world: &World) {
        let one = world.rank() == 1;
        let mut m = SgdNet::with_seed(3);
        if world.is_root() {
            m.set_learning_rate(0.7);
        }
        world.broadcast_params(&mut m).unwrap();
        assert_eq!(m.learning_rate(), 0.7, "rank 0's learning rate is broadcast");
        let mut g = SgdNetGradients::zeros();
        let (x, y) = batch(0, 16);
        let (xs, ys) = (world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap());
        let before = (params!(m), m.global_step());

        // A batch of the wrong width on rank 1.
        let wide = Array2::<f32>::zeros((8, 9));
        let local = if one {
            m.compute_gradients_into(wide.view(), ys, &mut g)
        } else {
            m.compute_gradients_into(xs, ys, &mut g)
        };
        let g_before = g.clone();
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(
            world,
            "a bad shape",
            "rank 1 failed (1 of 2 ranks failed; no rank applied this step): input `x`",
            r,
        );
        assert_eq!(g, g_before);

        // A NaN in rank 1's batch: its gradients are not finite.
        let mut xn = xs.to_owned();
        if one {
            xn[[2, 3]] = f32::NAN;
        }
        let local = m.compute_gradients_into(xn.view(), ys, &mut g);
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(world, "a NaN", "its gradient on rank 1 has a NaN, an infinity", r);

        // Both ranks fail: the lowest is named, both are counted.
        let r = world.allreduce_mean(&mut g, Err(Error::InvalidArgument(format!("no data on rank {}", world.rank()))));
        fails_everywhere(world, "both ranks", "rank 0 failed (2 of 2 ranks failed", r);

        // Gradients whose field has another shape, on rank 1.
        let local = m.compute_gradients_into(xs, ys, &mut g);
        let saved = g.b1.clone();
        if one {
            g.b1 = Array1::zeros(15);
        }
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(world, "gradients of another shape", "`b1` expected shape [16], found [15]", r);
        g.b1 = saved;

        // Another model's gradients on rank 1: refused before any buffer moves.
        let local = m.compute_gradients_into(xs, ys, &mut g);
        let r = if one {
            let mut other = SparseGradients::zeros();
            world.allreduce_mean(&mut other, Ok(0.0))
        } else {
            world.allreduce_mean(&mut g, local)
        };
        fails_everywhere(world, "another model", "payloads differ", r);

        // An out-of-range label on rank 1 (Error::Index).
        let mut s = Sparse::with_seed(4);
        world.broadcast_params(&mut s).unwrap();
        let mut sg = SparseGradients::zeros();
        let labels = Array1::from_shape_fn(8, |i| if one && i == 5 { 9 } else { (i % 4) as u32 });
        let sparse_before = s.w.clone();
        let local = s.compute_gradients_into(xs, labels.view(), &mut sg);
        let r = world.allreduce_mean(&mut sg, local);
        fails_everywhere(world, "a bad index", "index 9 at position [5] is out of range", r);
        assert_eq!(s.w, sparse_before);

        // A broadcast into another model type on rank 1.
        let r = if one { world.broadcast_params(&mut s) } else { world.broadcast_params(&mut m) };
        fails_everywhere(
            world,
            "a broadcast into another model",
            "checkpoint of model `SgdNet`, expected model `Sparse`",
            r.map(|()| 0.0),
        );

        // agree(): a local error of one rank is every rank's.
        let r = world.agree(if one { Err(Error::InvalidArgument("disk full".into())) } else { Ok(1.0) });
        fails_everywhere(world, "agree", "invalid argument: disk full", r);

        // Nothing was applied anywhere; a good step now works and keeps the ranks equal.
        assert_eq!((params!(m), m.global_step()), before);
        let local = m.compute_gradients_into(xs, ys, &mut g);
        world.allreduce_mean(&mut g, local).unwrap();
        m.apply_gradients(&g).unwrap();
        assert_eq!(m.global_step(), 1);
        same_everywhere(world, "the params after the good step", &bits(&params!(m)));
    }

    /// A field reduced in place is checked in its mean: a NaN on one rank, or finite
    /// values whose sum overflows, fail the step with the same `NonFinite` on every rank,
    /// and nothing is applied.
    fn in_place_failures(world: &World) {
        let one = world.rank() == 1;
        let mut m = Wide::with_seed(5);
        world.broadcast_params(&mut m).unwrap();
        let mut g = WideGradients::zeros();
        let (x, y) = batch_of(0, 16, 256);
        let (xs, ys) = (world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap());
        let before = (params!(m), m.global_step());

        // A NaN in rank 1's batch: every gradient is poisoned; `w1` (in place) is the
        // first field, so the error names it, in the mean.
        let mut xn = xs.to_owned();
        if one {
            xn[[2, 3]] = f32::NAN;
        }
        let local = m.compute_gradients_into(xn.view(), ys, &mut g);
        assert!(local.is_ok());
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(world, "a NaN in an in-place field", "param `w1`: the mean of the 2 ranks' gradients", r);

        // Finite gradients whose sum overflows (the old code applied an infinite mean).
        let local = m.compute_gradients_into(xs, ys, &mut g);
        g.w1[[7, 9]] = f32::MAX;
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(world, "an overflowing in-place field", "param `w1`: the mean of the 2 ranks' gradients", r);

        // A packed field whose sum would overflow: caught before the reduction (every
        // value at most f32::MAX / 2), on both ranks, naming the lowest.
        let local = m.compute_gradients_into(xs, ys, &mut g);
        g.b1[3] = -f32::MAX;
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(
            world,
            "an overflowing packed field",
            "rank 0 failed (2 of 2 ranks failed; no rank applied this step): param `b1`: its gradient on rank 0 has \
             a NaN, an infinity or a value beyond f32::MAX / 2",
            r,
        );

        // A NaN in a packed field only (set after the gradients): caught before the
        // reduction, naming the rank.
        let local = m.compute_gradients_into(xs, ys, &mut g);
        if one {
            g.b2[1] = f32::NAN;
        }
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(world, "a NaN in a packed field", "param `b2`: its gradient on rank 1 has a NaN", r);

        // The same through `allreduce_apply`: the same `Err` everywhere, the model
        // unchanged (the verdict comes before the update writes anything).
        let local = m.compute_gradients_into(xn.view(), ys, &mut g);
        let r = world.allreduce_apply(&mut m, &mut g, local);
        fails_everywhere(
            world,
            "allreduce_apply: a NaN in an in-place field",
            "param `w1`: the mean of the 2 ranks'",
            r,
        );
        let local = m.compute_gradients_into(xs, ys, &mut g);
        g.w1[[7, 9]] = f32::MAX;
        let r = world.allreduce_apply(&mut m, &mut g, local);
        fails_everywhere(world, "allreduce_apply: an overflowing in-place field", "param `w1`: the mean of the 2", r);
        let local = m.compute_gradients_into(xs, ys, &mut g);
        if one {
            g.b2[1] = f32::NAN;
        }
        let r = world.allreduce_apply(&mut m, &mut g, local);
        fails_everywhere(world, "allreduce_apply: a NaN in a packed field", "param `b2`: its gradient on rank 1", r);

        // Nothing was applied; a good step works and keeps the ranks equal.
        assert_eq!((params!(m), m.global_step()), before);
        let local = m.compute_gradients_into(xs, ys, &mut g);
        world.allreduce_mean(&mut g, local).unwrap();
        m.apply_gradients(&g).unwrap();
        assert_eq!(m.global_step(), 1);
        same_everywhere(world, "the params after the good step", &bits(&params!(m)));

        // A field of 1M values is reduced in pieces of 128K: an infinity on rank 1 in a
        // middle piece (the fifth of eight) is found in the mean all the same.
        let mut big = Big::with_seed(5);
        world.broadcast_params(&mut big).unwrap();
        let mut g = BigGradients::zeros();
        let local = big.compute_gradients_into(xs, ys, &mut g);
        if one {
            g.w1[[128, 0]] = f32::INFINITY;
        }
        let r = world.allreduce_mean(&mut g, local);
        fails_everywhere(
            world,
            "an infinity in a middle piece of a field",
            "param `w1`: the mean of the 2 ranks' gradients",
            r,
        );
        let big_before = params!(big);
        let local = big.compute_gradients_into(xs, ys, &mut g);
        if one {
            g.w1[[128, 0]] = f32::INFINITY;
        }
        let r = world.allreduce_apply(&mut big, &mut g, local);
        fails_everywhere(world, "allreduce_apply: an infinity in a middle piece", "param `w1`: the mean of the 2", r);
        assert_eq!((params!(big), big.global_step()), (big_before, 0));
        let local = big.compute_gradients_into(xs, ys, &mut g);
        world.allreduce_mean(&mut g, local).unwrap();
        big.apply_gradients(&g).unwrap();
        same_everywhere(world, "Big's params after a good step", &bits(&params!(big)));
    }

    /// Rank 1 leaves after 2 steps (drops its `World`, as an early return would); rank 0,
    /// still training, gets an error naming it instead of hanging, and every later call
    /// fails at once.
    fn leave(world: World) {
        let mut m = SgdNet::with_seed(3);
        world.broadcast_params(&mut m).unwrap();
        let mut g = SgdNetGradients::zeros();
        for step in 0..5 {
            if step == 2 && world.rank() == 1 {
                println!("rank 1: leave done");
                drop(world);
                return;
            }
            let (x, y) = batch(step, 16);
            let local =
                m.compute_gradients_into(world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap(), &mut g);
            match world.allreduce_mean(&mut g, local) {
                Ok(_) => m.apply_gradients(&g).unwrap(),
                Err(e) => {
                    let s = e.to_string();
                    println!("rank {}: step {step}: {s}", world.rank());
                    assert_eq!(step, 2);
                    assert!(matches!(e, Error::Distributed { rank: 1, failed: 1, ranks: 2, .. }), "{s}");
                    assert!(s.contains("rank 1 left the job"), "{s}");
                    break;
                }
            }
        }
        assert_eq!(m.global_step(), 2);
        // No collective can complete now: every call fails at once.
        let e = world.agree(Ok(())).unwrap_err().to_string();
        assert!(e.contains("another rank has left the job"), "{e}");
        assert!(world.barrier().is_err());
        println!("rank {}: leave done", world.rank());
    }

    fn panic_on_rank_1(world: &World) {
        let mut m = SgdNet::with_seed(3);
        world.broadcast_params(&mut m).unwrap();
        let mut g = SgdNetGradients::zeros();
        for step in 0..5 {
            let (x, y) = batch(step, 16);
            if step == 2 && world.rank() == 1 {
                panic!("deliberate panic on rank 1");
            }
            let local =
                m.compute_gradients_into(world.shard(x.view()).unwrap(), world.shard(y.view()).unwrap(), &mut g);
            world.allreduce_mean(&mut g, local).unwrap();
            m.apply_gradients(&g).unwrap();
        }
        unreachable!("rank 0 waits in step 2's allreduce until the job is aborted");
    }

    fn singleton(world: &World) {
        assert_eq!((world.rank(), world.size()), (0, 1));
        assert!(World::init().is_err(), "MPI initializes once per process");
        let mut m = AdamDrop::with_seed(2);
        world.broadcast_params(&mut m).unwrap();
        let (x, y) = batch(0, 6);
        assert_eq!(world.shard_range(6).unwrap(), 0..6);
        let mut g = AdamDropGradients::zeros();
        let local = m.compute_gradients_into(world.shard(x.view()).unwrap(), y.view(), &mut g);
        let expected = (local.as_ref().copied().unwrap(), g.clone());
        // A world of one: the mean is the gradients themselves.
        assert_eq!(world.allreduce_mean(&mut g, local).unwrap(), expected.0);
        assert_eq!(g, expected.1);
        let e = world.allreduce_mean(&mut g, Err(Error::InvalidArgument("x".into()))).unwrap_err();
        assert!(matches!(e, Error::Distributed { rank: 0, failed: 1, ranks: 1, .. }), "{e}");
        g.w1[[0, 0]] = f32::INFINITY;
        assert!(world.allreduce_mean(&mut g, Ok(0.0)).unwrap_err().to_string().contains("`w1`"));
        // `allreduce_apply` alone: `apply_gradients` of the gradients themselves; the
        // update's own check refuses an infinity and changes nothing.
        let mut plain = m.clone();
        let mut g = expected.1.clone();
        assert_eq!(world.allreduce_apply(&mut m, &mut g, Ok(expected.0)).unwrap(), expected.0);
        plain.apply_gradients(&expected.1).unwrap();
        assert_eq!(bits(&params!(m)), bits(&params!(plain)));
        assert_eq!(m.global_step(), 1);
        g.w1[[0, 0]] = f32::INFINITY;
        let e = world.allreduce_apply(&mut m, &mut g, Ok(0.0)).unwrap_err();
        assert!(matches!(e, Error::NonFinite { param: "w1", .. }), "{e}");
        assert_eq!((bits(&params!(m)), m.global_step()), (bits(&params!(plain)), 1));
    }
}
