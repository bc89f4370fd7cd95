//! `nas export RUN --out model.onnx`: the trained evaluation network as an ONNX model (from a
//! `nas train` run directory, or from a weights file with the genotype and network flags).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use nas_core::checkpoint::write_atomic;
use nas_core::RunDir;
use nas_eval::Trained;

use crate::train_cmd::NetworkArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ONNX, opset 13 (float32 images in [0, 1] in, logits out)
    Onnx,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ExportArgs {
    /// Run directory of `nas train` (its final weights, else its last checkpoint)
    #[arg(value_name = "RUN")]
    run: Option<PathBuf>,
    /// A weights file (weights.safetensors or a checkpoint) instead of RUN: the network is the
    /// one `nas train` builds from --genotype and the flags below (--data for the
    /// normalisation, the image size and the classes)
    #[arg(long, value_name = "FILE", conflicts_with = "run")]
    weights: Option<PathBuf>,
    /// File format
    #[arg(long, value_name = "F", default_value = "onnx")]
    format: Format,
    /// Where to write the model
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    // The network of --weights, as `nas train` builds it.
    #[command(flatten)]
    network: NetworkArgs,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let trained = match (&args.run, &args.weights) {
        (Some(run), None) => {
            if !args.network.is_empty() {
                bail!("RUN holds the genotype and the network's settings; --genotype and its flags go with --weights")
            }
            Trained::from_run(&RunDir::open(run)?)?
        }
        (None, Some(weights)) => Trained::from_weights(args.network.resolve()?, weights)?,
        _ => bail!("give a run directory of nas train (RUN), or --weights FILE with --genotype"),
    };
    let bytes = match args.format {
        Format::Onnx => trained.onnx()?,
    };
    write_atomic(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    let (c, h, w) = trained.data.image_shape;
    crate::out(&format!(
        "onnx: {} ({:.1} MB; input `{}` (batch, {c}, {h}, {w}) in [0, 1], output `{}` (batch, {}))\n",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        nas_eval::export::INPUT,
        nas_eval::export::OUTPUT,
        trained.data.num_classes
    ))
}
