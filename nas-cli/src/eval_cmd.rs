//! `nas eval --run DIR`: test accuracy and loss of a trained network as one JSON line.

use std::path::PathBuf;

use clap::Args;
use nas_core::data::DataSpec;
use nas_core::metrics::NullSink;
use nas_core::{DeviceSpec, RunDir};
use nas_eval::evaluate_run;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory of `nas train` (its final weights, else its last checkpoint)
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Evaluate on this dataset's test split instead of the run's
    #[arg(long, value_name = "SPEC")]
    data: Option<DataSpec>,
    /// Device: cpu, cuda or cuda:N [default: the run's]
    #[arg(long, value_name = "D")]
    device: Option<DeviceSpec>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let dir = RunDir::open(&args.run)?;
    let r = evaluate_run(&dir, args.data.as_ref(), args.device, &mut NullSink)?;
    crate::out(&format!("{}\n", serde_json::to_string(&r)?))
}
