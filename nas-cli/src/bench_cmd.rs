//! `nas bench`: step timing on random data, one JSON line like shared/bench/darts_ref.py. The
//! settings of the timed search or retraining come from the same flag declarations as the
//! commands' own (`config_flags`), with darts_ref.py's sizes as defaults.

use clap::{Args, Subcommand};
use nas_core::bench::{bench_loader, bench_machine, BenchLoaderConfig};
use nas_eval::bench::{bench_train, BenchTrainConfig};
use nas_search::bench::{bench_search, BenchSearchConfig};

use crate::config_flags::{self, ConfigFlags};
use crate::train_cmd::GenotypeArg;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time search steps (architecture step + weight step) of the supernet
    Search(BenchSearchArgs),
    /// Time training steps of the evaluation network of a genotype
    Train(BenchTrainArgs),
    /// Time the data loader: images per second of training (or evaluation) batches
    Loader(BenchLoaderArgs),
    /// Measure the machine's limits: peak f32 multiply-add rate and triad memory bandwidth
    Machine,
}

#[derive(Args, Debug)]
pub struct BenchLoaderArgs {
    #[command(flatten)]
    settings: ConfigFlags<config_flags::BenchLoader>,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    genotype: GenotypeArg,
    #[command(flatten)]
    settings: ConfigFlags<config_flags::BenchTrain>,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchSearchArgs {
    #[command(flatten)]
    settings: ConfigFlags<config_flags::BenchSearch>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Search(a) => {
            let cfg = BenchSearchConfig::from_overlay(&a.settings.overlay())?;
            crate::out(&format!("{}\n", bench_search(&cfg)?))
        }
        BenchCommand::Train(a) => {
            let genotype = a.genotype.genotype.as_deref().unwrap_or("DARTS_V2");
            let cfg = BenchTrainConfig::from_overlay(genotype, &a.settings.overlay())?;
            crate::out(&format!("{}\n", bench_train(&cfg)?))
        }
        BenchCommand::Loader(a) => {
            let cfg = BenchLoaderConfig::from_overlay(&a.settings.overlay())?;
            crate::out(&format!("{}\n", bench_loader(&cfg)?))
        }
        BenchCommand::Machine => crate::out(&format!("{}\n", bench_machine())),
    }
}
