//! `nas show`: print a genotype as text (with the derived network's parameter count) or JSON.

use std::path::Path;

use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use search_spaces::darts::{DerivedNetwork, DerivedNetworkConfig};
use search_spaces::Genotype;

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Genotype: a genotype.json file, a run directory, or DARTS_V1, DARTS_V2, PC_DARTS
    #[arg(value_name = "GENOTYPE")]
    genotype: String,
    /// Initial channels of the derived network whose size is reported
    #[arg(long, value_name = "C", default_value_t = 36)]
    channels: usize,
    /// Cells of the derived network whose size is reported
    #[arg(long, value_name = "L", default_value_t = 20)]
    layers: usize,
    /// Number of classes of the derived network
    #[arg(long, value_name = "N", default_value_t = 10)]
    classes: usize,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// A genotype from a file, a run directory (its genotype.json) or a built-in name.
pub fn load_genotype(spec: &str) -> anyhow::Result<Genotype> {
    let p = Path::new(spec);
    if p.is_dir() {
        let f = p.join("genotype.json");
        return Ok(Genotype::load(&f.to_string_lossy())?);
    }
    Ok(Genotype::load(spec)?)
}

pub fn run(args: ShowArgs) -> anyhow::Result<()> {
    let genotype = load_genotype(&args.genotype)?;
    match args.format {
        Format::Json => crate::out(&format!("{}\n", serde_json::to_string_pretty(&genotype.to_json())?)),
        Format::Text => {
            let Genotype::Darts(g) = &genotype;
            let cfg = DerivedNetworkConfig {
                channels: args.channels,
                layers: args.layers,
                num_classes: args.classes,
                auxiliary: false,
                in_channels: 3,
            };
            let net = DerivedNetwork::new(g, cfg, 0, DType::F32, &Device::Cpu)?;
            crate::out(&format!(
                "space: {}\n{genotype}params: {} (C={}, L={}, without auxiliary head)\n",
                genotype.space(),
                net.num_params_without_aux(),
                args.channels,
                args.layers
            ))
        }
    }
}
