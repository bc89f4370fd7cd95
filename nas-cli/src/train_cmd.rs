//! `nas train`: retrain a genotype from scratch with the DARTS recipe, or the DARTS or PC-DARTS
//! ImageNet recipe with `--net imagenet` (flags override it), writing metrics, checkpoints and
//! the final weights to the run directory.

use anyhow::{bail, Context};
use clap::Args;
use nas_core::metrics::{Event, MetricsSink};
use nas_core::run_dir::WEIGHTS;
use nas_core::settings::get_path;
use nas_eval::{Recipe, TrainConfig, Trainer};
use search_spaces::{Genotype, NetKind};

use crate::config_flags::{self, ConfigFlags};
use crate::progress::Progress;
use crate::run_setup::{self, RunDirArgs};
use crate::tensorboard::TensorBoardArg;
use crate::Globals;

/// `--genotype`, of `nas train` and `nas bench train`.
#[derive(Args, Debug, Default)]
pub struct GenotypeArg {
    /// Genotype: a genotype.json file, a search run directory, DARTS_V1, DARTS_V2, PC_DARTS,
    /// PC_DARTS_IMAGENET, PDARTS or an nb201 arch string (nas train: not needed with --resume;
    /// nas bench train: DARTS_V2 by default)
    #[arg(long, value_name = "FILE|NAME")]
    pub genotype: Option<String>,
}

/// The network and its training as `nas train` takes them: `--genotype`, `--recipe` and the
/// training flags (also `nas export` of a weights file).
#[derive(Args, Debug, Default)]
pub struct NetworkArgs {
    #[command(flatten)]
    genotype: GenotypeArg,
    /// Whose recipe to start from: darts or pc-darts (on ImageNet: batch 1024, lr 0.5, linear
    /// decay after 5 warm-up epochs; on CIFAR the two are the same) [default: darts]
    #[arg(long, value_name = "R")]
    recipe: Option<Recipe>,
    #[command(flatten)]
    settings: ConfigFlags<config_flags::Train>,
}

impl NetworkArgs {
    /// Whether none of these flags was given.
    pub fn is_empty(&self) -> bool {
        self.genotype.genotype.is_none() && self.recipe.is_none() && self.settings.is_empty()
    }

    /// Lays the flags that were given over `c` (the genotype included).
    fn apply(&self, c: &TrainConfig) -> anyhow::Result<TrainConfig> {
        let mut c = c.clone();
        if let Some(g) = &self.genotype.genotype {
            c.genotype = Genotype::load(g)?.to_json();
        }
        if self.settings.is_empty() {
            return Ok(c);
        }
        Ok(c.with_overlay(&self.settings.overlay())?)
    }

    /// The recipe of the genotype and the network (`--net`) with the flags laid over it.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let Some(g) = &self.genotype.genotype else {
            bail!("--genotype is required (a file, a run directory or a built-in name)")
        };
        let overlay = self.settings.overlay();
        let net = match get_path(&overlay, "model.net") {
            Some(v) => serde_json::from_value(v.clone())?,
            None => NetKind::default(),
        };
        let c = TrainConfig::recipe(&Genotype::load(g)?, net, self.recipe.unwrap_or_default());
        self.apply(&c)
    }
}

#[derive(Args, Debug, Default)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    run: RunDirArgs,
    #[command(flatten)]
    tensorboard: TensorBoardArg,
}

pub fn run(args: TrainArgs, g: &Globals) -> anyhow::Result<()> {
    // Bad input fails before the run directory is touched.
    let (cfg, existing) = if args.run.resume {
        let (cfg, dir) = run_setup::reopen(
            args.run.out.as_deref(),
            |v| Ok(TrainConfig::from_json_value(v)?),
            |saved| args.network.apply(&saved),
        )?;
        (cfg, Some(dir))
    } else {
        (args.network.resolve()?, None)
    };
    let mut trainer = Trainer::new(cfg.clone().validate()?).context("cannot start training")?;
    let mut progress = Progress::new(g.quiet).with_tensorboard(args.tensorboard.open()?);
    let dir = match existing {
        Some(dir) => run_setup::resume(dir, &mut progress, |d| trainer.resume(d))?,
        None => run_setup::create(args.run.out.clone(), "train", args.run.force, &cfg)?,
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
