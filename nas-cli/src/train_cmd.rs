//! `nas train`: retrain a genotype from scratch with the DARTS recipe, or the DARTS or PC-DARTS
//! ImageNet recipe with `--net imagenet` (flags override it), writing metrics, checkpoints and
//! the final weights to the run directory.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use nas_core::data::DataSpec;
use nas_core::metrics::{Event, MetricsSink};
use nas_core::optim::ScheduleKind;
use nas_core::run_dir::WEIGHTS;
use nas_core::DeviceSpec;
use nas_eval::{Recipe, TrainConfig, Trainer};
use search_spaces::{Genotype, NetKind};

use crate::progress::Progress;
use crate::run_setup;
use crate::Globals;

#[derive(Args, Debug, Default)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Genotype: a genotype.json file, a search run directory, DARTS_V1, DARTS_V2, PC_DARTS,
    /// PC_DARTS_IMAGENET, PDARTS or an nb201 arch string (not needed with --resume)
    #[arg(long, value_name = "FILE|NAME")]
    genotype: Option<String>,
    /// The network around the cells: cifar (NetworkCIFAR, 32×32) or imagenet (NetworkImageNet
    /// at 224×224, the mobile-setting recipe; folder datasets are streamed from their files)
    #[arg(long, value_name = "NET")]
    net: Option<NetKind>,
    /// Whose recipe to start from: darts or pc-darts (on ImageNet: batch 1024, lr 0.5, linear
    /// decay after 5 warm-up epochs; on CIFAR the two are the same) [default: darts]
    #[arg(long, value_name = "R")]
    recipe: Option<Recipe>,
    /// Data: synthetic, cifar10:DIR, cifar100:DIR or folder:DIR
    #[arg(long, value_name = "SPEC")]
    data: Option<DataSpec>,
    /// Use only the first N training images
    #[arg(long, value_name = "N")]
    subset: Option<usize>,
    /// Number of epochs [default: 600]
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Micro-batch size [default: 96] (per process with mpirun)
    #[arg(long, value_name = "B")]
    batch_size: Option<usize>,
    /// Micro-batches per optimiser step, each with its own forward and batch statistics:
    /// gradients of the mean loss over accumulate × batch size (× ranks) samples
    #[arg(long, value_name = "N")]
    accumulate: Option<usize>,
    /// Number of cells L (darts) [default: 20]; cells per stage (nb201) [default: 5]
    #[arg(long, value_name = "L")]
    layers: Option<usize>,
    /// Initial channels C [default: 36 for darts, 16 for nb201]
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Loss weight of the auxiliary head; 0 removes the head [default: 0.4]
    #[arg(long, value_name = "W")]
    auxiliary_weight: Option<f64>,
    /// Side of the cutout square; 0 turns cutout off [default: 16]
    #[arg(long, value_name = "N")]
    cutout: Option<usize>,
    /// Final drop-path probability, ramped linearly over the epochs [default: 0.2]
    #[arg(long, value_name = "P")]
    drop_path: Option<f64>,
    /// Initial learning rate [default: 0.025; imagenet 0.1, pc-darts 0.5]
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// Learning-rate schedule: cosine (to 0), step:GAMMA (×GAMMA every epoch) or linear
    /// (PC-DARTS) [default: cosine; imagenet step:0.97, pc-darts linear]
    #[arg(long, value_name = "S", value_parser = parse_schedule)]
    lr_schedule: Option<ScheduleKind>,
    /// Epochs of linear learning-rate warm-up [default: 0; pc-darts imagenet 5]
    #[arg(long, value_name = "N")]
    warmup_epochs: Option<usize>,
    /// Label smoothing ε of the training loss [default: 0; imagenet 0.1]
    #[arg(long, value_name = "E")]
    label_smoothing: Option<f64>,
    /// Side images of a folder dataset come out at [default: 32; imagenet 224]
    #[arg(long, value_name = "N")]
    image_size: Option<usize>,
    /// Random seed (weights, data order, augmentation, drop path, synthetic data)
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Device: cpu, cuda or cuda:N
    #[arg(long, value_name = "D")]
    device: Option<DeviceSpec>,
    /// Run directory (default: runs/train-<date>-<time>)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Overwrite an existing run directory
    #[arg(long)]
    force: bool,
}

impl TrainArgs {
    /// Lays the flags that were given over `c` (the genotype included).
    fn apply(&self, c: &mut TrainConfig) -> anyhow::Result<()> {
        macro_rules! set {
            ($flag:expr => $field:expr) => {
                if let Some(v) = $flag.clone() {
                    $field = v;
                }
            };
        }
        if let Some(g) = &self.genotype {
            c.genotype = Genotype::load(g)?.to_json();
        }
        set!(self.data => c.data.spec);
        if self.subset.is_some() {
            c.data.subset = self.subset;
        }
        set!(self.epochs => c.epochs);
        set!(self.batch_size => c.data.batch_size);
        set!(self.accumulate => c.data.accumulate);
        set!(self.layers => c.model.layers);
        set!(self.channels => c.model.channels);
        set!(self.auxiliary_weight => c.model.auxiliary_weight);
        set!(self.cutout => c.data.cutout);
        set!(self.drop_path => c.model.drop_path);
        set!(self.lr => c.optimizer.lr);
        set!(self.lr_schedule => c.optimizer.schedule);
        set!(self.warmup_epochs => c.optimizer.warmup_epochs);
        set!(self.label_smoothing => c.label_smoothing);
        set!(self.net => c.model.net);
        set!(self.image_size => c.data.image_size);
        set!(self.seed => c.seed);
        set!(self.device => c.device);
        Ok(())
    }

    fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let Some(g) = &self.genotype else {
            bail!("--genotype is required (a file, a run directory or a built-in name)")
        };
        let net = self.net.unwrap_or_default();
        let mut c = TrainConfig::recipe(&Genotype::load(g)?, net, self.recipe.unwrap_or_default());
        self.apply(&mut c)?;
        Ok(c)
    }
}

/// `cosine`, `linear` or `step:GAMMA`.
fn parse_schedule(s: &str) -> Result<ScheduleKind, String> {
    match s.split_once(':') {
        None if s == "cosine" => Ok(ScheduleKind::Cosine),
        None if s == "linear" => Ok(ScheduleKind::Linear),
        Some(("step", g)) => g
            .parse()
            .map(|gamma| ScheduleKind::Step { gamma })
            .map_err(|_| format!("`{g}` is not a number (step:GAMMA)")),
        _ => Err(format!("unknown schedule `{s}` (expected cosine, linear or step:GAMMA)")),
    }
}

pub fn run(args: TrainArgs, g: &Globals) -> anyhow::Result<()> {
    // Bad input fails before the run directory is touched.
    let (cfg, existing) = if args.resume {
        let (cfg, dir) = run_setup::reopen(
            args.out.as_deref(),
            |v| Ok(TrainConfig::from_json_value(v)?),
            |saved| {
                let mut given = saved;
                args.apply(&mut given)?;
                Ok(given)
            },
        )?;
        (cfg, Some(dir))
    } else {
        (args.resolve()?, None)
    };
    let mut trainer = Trainer::new(cfg.clone().validate()?).context("cannot start training")?;
    let mut progress = Progress::new(g.quiet);
    let dir = match existing {
        Some(dir) => run_setup::resume(dir, &mut progress, |d| trainer.resume(d))?,
        None => run_setup::create(args.out.clone(), "train", args.force, &cfg)?,
    };
    let (height, width) = trainer.image_size();
    let mult_adds = match trainer.model().mult_adds(height, width).transpose()? {
        Some(m) => format!(", {:.1}M mult-adds per {height}x{width} image", m as f64 / 1e6),
        None => String::new(),
    };
    progress.event(Event::Message(&format!(
        "{} {} network: {} parameters without the auxiliary head{mult_adds}",
        trainer.config().genotype.space(),
        trainer.config().model.net,
        trainer.model().num_params_without_aux()
    )));
    let stop = run_setup::stop_flag();
    let result = run_setup::finished("train", &dir, trainer.run(Some(&dir), &mut progress, &stop))?;
    drop(progress);
    let top5 = result.test_top5.map(|a| format!("test_top5: {a:.4}\n")).unwrap_or_default();
    crate::out(&format!(
        "test_acc: {:.4}\n{top5}test_loss: {:.4}\nweights: {}\n",
        result.test_acc,
        result.test_loss,
        dir.file(WEIGHTS).display()
    ))
}
