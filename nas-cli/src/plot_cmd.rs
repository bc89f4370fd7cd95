//! `nas plot RUN`: the run's curves (loss, accuracy and, for a search, softmax(α) per edge over
//! the epochs) as a PNG or SVG picture, by default RUN/plot.png. A progressive search's curves
//! run through its stages (`stage-0/`, `stage-1/`, …), the boundaries marked.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use nas_core::RunDir;

use crate::draw::{self, curves::RunCurves, ImageFormat};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directory of `nas search` or `nas train` (finished or not)
    #[arg(value_name = "RUN")]
    run: PathBuf,
    /// Picture file, .png or .svg [default: RUN/plot.png]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let dir = RunDir::open(&args.run)?;
    let mut records = dir.read_metrics()?;
    for stage in nas_search::Progressive::begun_stages(&dir)? {
        records.extend(stage.read_metrics()?);
    }
    let title = format!("{}", args.run.display());
    let curves = RunCurves::from_records(&title, &records).with_context(|| dir.path().display().to_string())?;
    let out = args.out.unwrap_or_else(|| dir.file("plot.png"));
    let bytes = draw::render(&curves, ImageFormat::of_path(&out)?)?;
    draw::save(&out, &bytes)?;
    crate::out(&format!("{}\n", out.display()))
}
