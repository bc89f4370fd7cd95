//! `nas show`: print a genotype as text (with the derived network's parameter count) or JSON,
//! or draw its cells (Graphviz DOT, SVG, PNG).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;

use candle_core::Device;
use clap::{Args, ValueEnum};
use search_spaces::{EvalModelConfig, Genotype, TaskShape};

use crate::draw;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// Graphviz DOT of both cells (`dot -Tpdf`)
    Dot,
    Svg,
    Png,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ShowArgs {
    /// Genotype: a genotype.json file, a run directory, DARTS_V1, DARTS_V2, PC_DARTS, PDARTS, or an
    /// nb201 arch string such as '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|…|'
    #[arg(value_name = "GENOTYPE")]
    genotype: String,
    /// Initial channels of the derived network whose size is reported [default: 36 for darts,
    /// 16 for nb201]
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Cells of the derived network whose size is reported: L for darts [default: 20], cells
    /// per stage for nb201 [default: 5]
    #[arg(long, value_name = "L")]
    layers: Option<usize>,
    /// Number of classes of the derived network
    #[arg(long, value_name = "N", default_value_t = 10)]
    classes: usize,
    /// Output format [default: text, or what --out's extension says]
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write to FILE instead of standard output (needed for png on a terminal)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: ShowArgs) -> anyhow::Result<()> {
    for (flag, v) in [("--channels", args.channels), ("--layers", args.layers), ("--classes", Some(args.classes))] {
        if v == Some(0) {
            anyhow::bail!("{flag} must be positive, got 0");
        }
    }
    let genotype = Genotype::load(&args.genotype)?;
    let format = match (args.format, &args.out) {
        (Some(f), _) => f,
        (None, Some(out)) => match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Format::Json,
            Some("dot" | "gv") => Format::Dot,
            Some("svg") => Format::Svg,
            Some("png") => Format::Png,
            _ => Format::Text,
        },
        (None, None) => Format::Text,
    };
    let bytes = match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&genotype.to_json())?).into_bytes(),
        Format::Dot => draw::cell::dot(&genotype.cell_graphs()).into_bytes(),
        Format::Svg | Format::Png => {
            let picture = draw::cell::CellPicture { graphs: genotype.cell_graphs() };
            let f = if format == Format::Svg { draw::ImageFormat::Svg } else { draw::ImageFormat::Png };
            draw::render(&picture, f)?
        }
        Format::Text => {
            let kind = genotype.kind();
            let defaults = kind.eval_defaults();
            let model = EvalModelConfig {
                channels: args.channels.unwrap_or(defaults.channels),
                layers: args.layers.unwrap_or(defaults.layers),
                auxiliary_weight: 0.0,
                drop_path: 0.0,
            };
            let task = TaskShape { num_classes: args.classes, in_channels: 3 };
            let net = genotype.build_eval_network(&model, task, 0, &Device::Cpu)?;
            let size = format!("params: {} ({})", net.num_params_without_aux(), kind.describe_size(&model));
            format!("space: {}\n{genotype}{size}\n", genotype.space()).into_bytes()
        }
    };
    match &args.out {
        Some(path) => draw::save(path, &bytes),
        None if format == Format::Png && std::io::stdout().is_terminal() => {
            bail!("--format png writes a binary file: give --out FILE.png or redirect standard output")
        }
        None => crate::out_bytes(&bytes),
    }
}
