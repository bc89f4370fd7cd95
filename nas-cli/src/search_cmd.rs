//! `nas search`: resolve the configuration (preset, config file, flags), prepare the run
//! directory and run the search with progress output.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nas_core::data::DataSpec;
use nas_core::DeviceSpec;
use nas_search::config::{EarlyStop, ProgressiveConfig, Resource};
use nas_search::early_stop::EarlyStopDecision;
use nas_search::{Method, Progressive, Search, SearchConfig};
use search_spaces::darts::rdarts_space;
use search_spaces::{NetKind, OpsConfig, SpaceKind};

use crate::progress::Progress;
use crate::run_setup;
use crate::Globals;

/// `--space`: a space of the registry, or one of the R-DARTS spaces S1–S4 (the darts space
/// with their op sets).
#[derive(Debug, Clone)]
enum SpaceChoice {
    Space(SpaceKind),
    Rdarts(String),
}

impl std::str::FromStr for SpaceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if rdarts_space(&lower).is_some() {
            return Ok(SpaceChoice::Rdarts(lower));
        }
        s.parse::<SpaceKind>().map(SpaceChoice::Space).map_err(|_| {
            let names: Vec<_> = SpaceKind::ALL.iter().map(|k| k.to_string()).collect();
            format!("unknown space `{s}` (expected {}, s1, s2, s3 or s4)", names.join(", "))
        })
    }
}

#[derive(Args, Debug, Default)]
#[command(allow_negative_numbers = true)]
pub struct SearchArgs {
    /// Preset: darts-1st (default), darts-2nd, pc-darts, pc-darts-imagenet (PC-DARTS' ImageNet
    /// search), p-darts, gdas (AutoDL's GDAS on nb201) or quick
    #[arg(long, value_name = "P")]
    preset: Option<String>,
    /// Search space: darts, nb201 (C=16 and 5 cells per stage by default; quick: C=8, 2), or
    /// s1, s2, s3, s4: the darts space with the op sets of R-DARTS' spaces S1–S4
    #[arg(long, value_name = "S")]
    space: Option<SpaceChoice>,
    /// Candidate ops of every edge (darts), comma-separated: a subset of none, max_pool_3x3,
    /// avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5 and
    /// noise; replaces the op sets of s1–s4. Per-edge sets: `model.ops` in a --config file
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    ops: Option<Vec<String>>,
    /// Search method. Hypergradients of the relaxation: first-order, second-order (DARTS'
    /// one-step unrolled), unrolled (K virtual steps, --unroll-steps), implicit (Neumann
    /// series), implicit-cg (conjugate gradient). Sampling: gdas (hard Gumbel-softmax), snas
    /// (relaxed concrete sample, single level), enas (LSTM controller, REINFORCE), random
    /// (uniform children, weight sharing)
    #[arg(long, value_name = "M")]
    method: Option<Method>,
    /// gdas, snas: the Gumbel-softmax temperature of the first epoch (gdas 10, snas 1)
    #[arg(long, value_name = "τ")]
    tau_max: Option<f64>,
    /// gdas, snas: the temperature of the last epoch (gdas 0.1, snas 0.03)
    #[arg(long, value_name = "τ")]
    tau_min: Option<f64>,
    /// snas: the resource penalty's cost, params or mult-adds
    #[arg(long, value_name = "R")]
    resource: Option<Resource>,
    /// snas: the resource penalty's weight λ (0: off)
    #[arg(long, value_name = "λ")]
    resource_weight: Option<f64>,
    /// enas: controller updates after every epoch (darts 30 as ENAS, nb201 50 as AutoDL)
    #[arg(long, value_name = "N")]
    controller_steps: Option<usize>,
    /// enas: children per controller update, one validation batch each (darts 10, nb201 20)
    #[arg(long, value_name = "N")]
    controller_aggregate: Option<usize>,
    /// enas, random: children sampled after every epoch, the most accurate on a validation
    /// batch being the genotype (100)
    #[arg(long, value_name = "N")]
    select_samples: Option<usize>,
    /// Neumann-series terms of the implicit hypergradient
    #[arg(long, value_name = "J")]
    neumann_steps: Option<usize>,
    /// Virtual SGD steps K the unrolled hypergradient reverses through (1: second order)
    #[arg(long, value_name = "K")]
    unroll_steps: Option<usize>,
    /// Conjugate-gradient iterations of the implicit-cg hypergradient
    #[arg(long, value_name = "J")]
    cg_steps: Option<usize>,
    /// Damping λ of implicit-cg's system (H + λI)p = ∇_w L_val (default 1)
    #[arg(long, value_name = "λ")]
    cg_damping: Option<f64>,
    /// Compute the dominant eigenvalue of the α-Hessian of the validation loss every N epochs
    /// (metrics: hessian_eig)
    #[arg(long, value_name = "N")]
    hessian_every: Option<usize>,
    /// Early stopping: none, or darts-es (R-DARTS; the eigenvalue every 2 epochs unless
    /// --hessian-every says otherwise)
    #[arg(long, value_name = "RULE")]
    early_stop: Option<EarlyStop>,
    /// Data: synthetic, cifar10:DIR, cifar100:DIR or folder:DIR
    #[arg(long, value_name = "SPEC")]
    data: Option<DataSpec>,
    /// Use only the first N training images (split 50/50 for weights and architecture)
    #[arg(long, value_name = "N")]
    subset: Option<usize>,
    /// Per class, draw these fractions of the training images for the weights and for the
    /// architecture instead of the two halves, e.g. 0.1,0.025 (PC-DARTS on ImageNet); one
    /// value uses it for both
    #[arg(long, value_name = "W[,A]", value_parser = parse_fractions)]
    subset_fraction: Option<[f64; 2]>,
    /// Side images of a folder dataset come out at: resized into memory, or random-resized
    /// crops streamed from the files with --net imagenet [default: 32]
    #[arg(long, value_name = "N")]
    image_size: Option<usize>,
    /// Number of epochs
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Micro-batch size of both the weight and the architecture step (per process with mpirun)
    #[arg(long, value_name = "B")]
    batch_size: Option<usize>,
    /// Micro-batches per optimiser step, each with its own forward and batch statistics:
    /// gradients of the mean loss over accumulate × batch size (× ranks) samples
    #[arg(long, value_name = "N")]
    accumulate: Option<usize>,
    /// Number of cells L (darts); cells per stage N (nb201)
    #[arg(long, value_name = "L")]
    layers: Option<usize>,
    /// Initial channels C
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Stem (darts): cifar (one stride-1 conv) or imagenet (PC-DARTS' ImageNet search: three
    /// stride-2 convs, image sides divisible by 32; 224×224 images reach the cells at 28×28)
    #[arg(long, value_name = "NET")]
    net: Option<NetKind>,
    /// PC-DARTS: operate on 1/K of the channels of every edge
    #[arg(long, value_name = "K")]
    partial_channels: Option<usize>,
    /// PC-DARTS edge normalisation (β weights on the edges into each node)
    #[arg(long)]
    edge_norm: bool,
    /// First epoch with architecture updates
    #[arg(long, value_name = "E")]
    arch_start_epoch: Option<usize>,
    /// Cap the skip connections of the derived normal cell
    #[arg(long, value_name = "N")]
    max_skip_connect: Option<usize>,
    /// Weight learning rate (cosine-annealed to the preset's minimum)
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// Architecture (Adam) learning rate
    #[arg(long, value_name = "LR")]
    arch_lr: Option<f64>,
    /// Progressive search (P-DARTS): cells of each stage's network, comma-separated
    #[arg(long, value_name = "L,L,…", value_delimiter = ',')]
    stage_layers: Option<Vec<usize>>,
    /// Progressive search: ops per edge in each stage (the first: the op set's size)
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    stage_ops: Option<Vec<usize>>,
    /// Progressive search: base dropout rate after skip_connect in each stage
    #[arg(long, value_name = "P,P,…", value_delimiter = ',')]
    skip_dropout: Option<Vec<f64>>,
    /// Random seed (weights, α, data order, augmentation, synthetic data)
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Device: cpu, cuda or cuda:N
    #[arg(long, value_name = "D")]
    device: Option<DeviceSpec>,
    /// Run directory (default: runs/search-<date>-<time>)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// JSON file of configuration values laid over the preset (see config.json of a run)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Overwrite an existing run directory
    #[arg(long)]
    force: bool,
}

impl SearchArgs {
    /// Lays the flags that were given over `c`.
    fn apply(&self, c: &mut SearchConfig) {
        macro_rules! set {
            ($flag:expr => $field:expr) => {
                if let Some(v) = $flag.clone() {
                    $field = v;
                }
            };
        }
        match &self.space {
            Some(SpaceChoice::Space(space)) => c.set_space(*space),
            Some(SpaceChoice::Rdarts(name)) => {
                c.set_space(SpaceKind::Darts);
                c.model.ops = rdarts_space(name).map(|s| s.to_config());
            }
            None => {}
        }
        if let Some(ops) = &self.ops {
            c.model.ops = Some(OpsConfig::Uniform(ops.clone()));
        }
        set!(self.method => c.method);
        if self.tau_max.is_some() {
            c.sampling.tau_max = self.tau_max;
        }
        if self.tau_min.is_some() {
            c.sampling.tau_min = self.tau_min;
        }
        set!(self.resource => c.sampling.resource);
        set!(self.resource_weight => c.sampling.resource_weight);
        if self.controller_steps.is_some() {
            c.sampling.controller_steps = self.controller_steps;
        }
        if self.controller_aggregate.is_some() {
            c.sampling.controller_aggregate = self.controller_aggregate;
        }
        set!(self.select_samples => c.sampling.select_samples);
        set!(self.neumann_steps => c.neumann_steps);
        set!(self.unroll_steps => c.unroll_steps);
        set!(self.cg_steps => c.cg_steps);
        set!(self.cg_damping => c.cg_damping);
        set!(self.hessian_every => c.hessian_every);
        set!(self.early_stop => c.early_stop);
        if self.early_stop == Some(EarlyStop::DartsEs) && self.hessian_every.is_none() && c.hessian_every == 0 {
            // R-DARTS computes the eigenvalue every second epoch for DARTS-ES.
            c.hessian_every = 2;
        }
        set!(self.data => c.data.spec);
        if self.subset.is_some() {
            c.data.subset = self.subset;
        }
        if self.subset_fraction.is_some() {
            c.data.subset_fraction = self.subset_fraction;
        }
        set!(self.image_size => c.data.image_size);
        set!(self.epochs => c.epochs);
        set!(self.batch_size => c.data.batch_size);
        set!(self.accumulate => c.data.accumulate);
        set!(self.layers => c.model.layers);
        set!(self.channels => c.model.channels);
        set!(self.net => c.model.net);
        set!(self.partial_channels => c.model.partial_channels);
        if self.edge_norm {
            c.model.edge_norm = true;
        }
        set!(self.arch_start_epoch => c.arch_start_epoch);
        if self.max_skip_connect.is_some() {
            c.model.max_skip_connect = self.max_skip_connect;
        }
        set!(self.lr => c.weight_optimizer.lr);
        set!(self.arch_lr => c.arch_optimizer.lr);
        set!(self.seed => c.seed);
        set!(self.device => c.device);
        if self.stage_layers.is_some() || self.stage_ops.is_some() || self.skip_dropout.is_some() {
            let p = c.progressive.get_or_insert_with(|| ProgressiveConfig {
                layers: vec![5, 11, 17],
                ops_per_edge: vec![8, 5, 3],
                skip_dropout: vec![0.0, 0.4, 0.7],
            });
            set!(self.stage_layers => p.layers);
            set!(self.stage_ops => p.ops_per_edge);
            set!(self.skip_dropout => p.skip_dropout);
        }
    }

    fn resolve(&self) -> anyhow::Result<SearchConfig> {
        let mut c = match &self.config {
            Some(path) => SearchConfig::from_file(self.preset.as_deref(), path)?,
            None => SearchConfig::preset(self.preset.as_deref().unwrap_or("darts-1st"))?,
        };
        self.apply(&mut c);
        Ok(c)
    }
}

pub fn run(args: SearchArgs, g: &Globals) -> anyhow::Result<()> {
    // Everything that can fail on bad input (flags, config file, data) fails before the run
    // directory is touched, so a bad start leaves no half-written run behind.
    let (cfg, existing) = if args.resume {
        let (cfg, dir) = run_setup::reopen(
            args.out.as_deref(),
            |v| Ok(serde_json::from_value::<SearchConfig>(v)?),
            |saved| {
                if args.config.is_some() || args.preset.is_some() {
                    return args.resolve();
                }
                let mut given = saved;
                args.apply(&mut given);
                Ok(given)
            },
        )?;
        (cfg, Some(dir))
    } else {
        (args.resolve()?, None)
    };
    if cfg.progressive.is_some() {
        return run_progressive(cfg, existing, &args, g);
    }
    let mut search = Search::new(cfg.clone().validate()?).context("cannot start the search")?;
    let mut progress = Progress::new(g.quiet);
    let dir = match existing {
        Some(dir) => run_setup::resume(dir, &mut progress, |d| search.resume(d))?,
        None => run_setup::create(args.out.clone(), "search", args.force, &cfg)?,
    };
    let stop = run_setup::stop_flag();
    let genotype = run_setup::finished("search", &dir, search.run(Some(&dir), &mut progress, &stop))?;
    drop(progress);
    report(&genotype, &dir, &dir)
}

/// Prints the genotype, the final validation accuracy recorded in `last_run` and where the
/// genotype file of `dir` is.
fn report(
    genotype: &search_spaces::Genotype,
    last_run: &nas_search::RunDir,
    dir: &nas_search::RunDir,
) -> anyhow::Result<()> {
    let last = last_run.read_metrics()?.pop();
    let acc = last.as_ref().and_then(|r| r.get("valid_acc")).and_then(|v| v.as_f64());
    let mut text = format!("{genotype}");
    if let Some(acc) = acc {
        text.push_str(&format!("final valid_acc: {acc:.4}\n"));
    }
    let early = last_run.file(nas_search::search::EARLY_STOP);
    if let Ok(stop) = std::fs::read_to_string(&early) {
        let stop: EarlyStopDecision = serde_json::from_str(&stop).with_context(|| format!("{}", early.display()))?;
        text.push_str(&format!(
            "stopped early ({}) at epoch {}: the α-Hessian's eigenvalue grew {:.2}x; genotype of epoch {}\n",
            stop.rule,
            stop.detected_epoch,
            stop.current_average / stop.previous_average,
            stop.stop_epoch
        ));
    }
    text.push_str(&format!("genotype: {}\n", dir.file(nas_search::run_dir::GENOTYPE).display()));
    crate::out(&text)
}

/// A progressive (P-DARTS) search: its stages run in `stage-<s>/` of the run directory.
fn run_progressive(
    cfg: SearchConfig,
    existing: Option<nas_search::RunDir>,
    args: &SearchArgs,
    g: &Globals,
) -> anyhow::Result<()> {
    let progressive = Progressive::new(cfg.clone().validate()?).context("cannot start the search")?;
    let fresh = existing.is_none();
    let dir = match existing {
        Some(dir) => dir,
        None => run_setup::create(args.out.clone(), "search", args.force, &cfg)?,
    };
    let mut progress = Progress::new(g.quiet);
    let stop = run_setup::stop_flag();
    let result = progressive.run(&dir, fresh, &mut progress, &stop);
    drop(progress);
    // The stage the run is in (or ended in): the last that has begun.
    let stage = match Progressive::begun_stages(&dir)?.pop() {
        Some(stage) => stage,
        None => nas_search::RunDir::open(dir.path())?,
    };
    let genotype = run_setup::finished_in("search", &dir, &stage, result)?;
    report(&genotype, &stage, &dir)
}

/// `W,A` or `W` (both parts W).
fn parse_fractions(s: &str) -> Result<[f64; 2], String> {
    let parse = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number (expected W or W,A)"));
    match s.split_once(',') {
        Some((w, a)) => Ok([parse(w)?, parse(a)?]),
        None => parse(s).map(|w| [w, w]),
    }
}
