//! `nas bench`: step timing on random data, one JSON line like shared/bench/darts_ref.py.

use clap::{Args, Subcommand};
use nas_core::bench::{bench_loader, BenchLoaderConfig};
use nas_core::data::DataSpec;
use nas_core::DeviceSpec;
use nas_eval::bench::{bench_train, BenchTrainConfig};
use nas_search::bench::{bench_search, BenchSearchConfig};
use nas_search::Method;
use search_spaces::SpaceKind;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time search steps (architecture step + weight step) of the supernet
    Search(BenchSearchArgs),
    /// Time training steps of the evaluation network of a genotype
    Train(BenchTrainArgs),
    /// Time the data loader: images per second of training (or evaluation) batches
    Loader(BenchLoaderArgs),
}

#[derive(Args, Debug)]
pub struct BenchLoaderArgs {
    /// Data: a folder:DIR of images (or any other spec)
    #[arg(long, value_name = "SPEC")]
    data: DataSpec,
    /// Side of the images batches hold
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Timed batches
    #[arg(long, default_value_t = 10)]
    batches: usize,
    /// Untimed batches first
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Evaluation transforms (resize and centre crop) instead of random resized crop, flip
    /// and colour jitter
    #[arg(long)]
    eval: bool,
    /// Decode a folder into memory first instead of streaming it (the CIFAR-size path)
    #[arg(long)]
    in_memory: bool,
}

/// The network size, batch, device and timing knobs both benchmarks take, with
/// darts_ref.py's defaults.
#[derive(Args, Debug)]
pub struct BenchCommonArgs {
    /// Initial channels C
    #[arg(long, default_value_t = 16)]
    channels: usize,
    /// Number of cells L
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Batch size
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Image height and width
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Device: cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Timed steps (the median is reported)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up steps
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Count the kernel launches, memsets and copies of the timed steps (CUDA; needs CUPTI's
    /// libcupti, found on the loader's path or named by NAS_CUPTI_LIB)
    #[arg(long)]
    count_launches: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchTrainArgs {
    /// Genotype: a genotype.json file, DARTS_V1, DARTS_V2, PC_DARTS, PC_DARTS_IMAGENET, PDARTS or an
    /// nb201 arch string
    #[arg(long, default_value = "DARTS_V2")]
    genotype: String,
    /// Drop-path probability
    #[arg(long, default_value_t = 0.2)]
    drop_path: f64,
    /// Loss weight of the auxiliary head (0 removes it)
    #[arg(long, default_value_t = 0.4)]
    auxiliary_weight: f64,
    #[command(flatten)]
    common: BenchCommonArgs,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchSearchArgs {
    /// Search space: darts or nb201
    #[arg(long, default_value = "darts")]
    space: SpaceKind,
    /// Method: first-order, second-order, unrolled, implicit, implicit-cg, gdas, snas, enas or random
    #[arg(long, default_value = "first-order")]
    method: Method,
    /// Neumann-series terms of the implicit hypergradient
    #[arg(long, default_value_t = 5)]
    neumann_steps: usize,
    /// Virtual SGD steps K of the unrolled hypergradient
    #[arg(long, default_value_t = 1)]
    unroll_steps: usize,
    /// Conjugate-gradient iterations of the implicit-cg hypergradient
    #[arg(long, default_value_t = 5)]
    cg_steps: usize,
    /// Damping λ of the implicit-cg hypergradient
    #[arg(long, default_value_t = 1.0)]
    cg_damping: f64,
    /// PC-DARTS channel fraction K
    #[arg(long, default_value_t = 1)]
    partial_channels: usize,
    /// PC-DARTS edge normalisation (always on when K > 1, as in darts_ref.py)
    #[arg(long)]
    edge_norm: bool,
    /// Time the weight step only (no architecture step)
    #[arg(long)]
    weights_only: bool,
    #[command(flatten)]
    common: BenchCommonArgs,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Search(a) => {
            let cfg = BenchSearchConfig {
                space: a.space,
                channels: a.common.channels,
                layers: a.common.layers,
                batch_size: a.common.batch_size,
                image_size: a.common.image_size,
                method: a.method,
                neumann_steps: a.neumann_steps,
                unroll_steps: a.unroll_steps,
                cg_steps: a.cg_steps,
                cg_damping: a.cg_damping,
                partial_channels: a.partial_channels,
                edge_norm: a.edge_norm || a.partial_channels > 1,
                weights_only: a.weights_only,
                device: a.common.device,
                steps: a.common.steps,
                warmup: a.common.warmup,
                count_launches: a.common.count_launches,
            };
            crate::out(&format!("{}\n", bench_search(&cfg)?))
        }
        BenchCommand::Train(a) => {
            let cfg = BenchTrainConfig {
                genotype: a.genotype,
                channels: a.common.channels,
                layers: a.common.layers,
                batch_size: a.common.batch_size,
                image_size: a.common.image_size,
                drop_path: a.drop_path,
                auxiliary_weight: a.auxiliary_weight,
                device: a.common.device,
                steps: a.common.steps,
                warmup: a.common.warmup,
                count_launches: a.common.count_launches,
            };
            crate::out(&format!("{}\n", bench_train(&cfg)?))
        }
        BenchCommand::Loader(a) => {
            let cfg = BenchLoaderConfig {
                data: a.data,
                image_size: a.image_size,
                batch_size: a.batch_size,
                batches: a.batches,
                warmup: a.warmup,
                eval: a.eval,
                stream: !a.in_memory,
            };
            crate::out(&format!("{}\n", bench_loader(&cfg)?))
        }
    }
}
