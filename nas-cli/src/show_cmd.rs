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

/// The most cells `nas show` builds to count (no network of the papers has more than ~30).
const MAX_LAYERS: usize = 10_000;

/// Parameters of the derived network without the auxiliary head. Every weight's size is a
/// polynomial of degree at most 2 in C (convolutions C_in·C_out·k², batch norms and the
/// classifier linear in C, every channel count proportional to C), so above 64 channels the
/// count comes from the networks at C = 2, 4, 6 by quadratic interpolation, without building
/// the large one (whose weights might not even fit in memory).
fn param_count(genotype: &Genotype, model: &EvalModelConfig, task: TaskShape) -> anyhow::Result<u128> {
    if model.layers > MAX_LAYERS {
        bail!("--layers {} is too many: at most {MAX_LAYERS} cells", model.layers);
    }
    let at = |channels: usize| -> anyhow::Result<i128> {
        let m = EvalModelConfig { channels, ..model.clone() };
        Ok(genotype.build_eval_network(&m, task, 0, &Device::Cpu)?.num_params_without_aux() as i128)
    };
    if model.channels <= 64 {
        return Ok(at(model.channels)? as u128);
    }
    // The network's own checks (an even C for darts, …) first.
    genotype.kind().validate_eval(model)?;
    let (p2, p4, p6) = (at(2)?, at(4)?, at(6)?);
    let c = model.channels as i128;
    let eight_p = p2 * (c - 4) * (c - 6) - 2 * p4 * (c - 2) * (c - 6) + p6 * (c - 2) * (c - 4);
    Ok((eight_p / 8) as u128)
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
            let params = param_count(&genotype, &model, task)?;
            let size = format!("params: {params} ({})", kind.describe_size(&model));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Above 64 channels the count is interpolated: it equals the count of the network built.
    #[test]
    fn interpolated_counts_equal_built_ones() {
        let nb201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
        for (name, channels, layers) in [("DARTS_V2", 72, 5), ("PC_DARTS", 66, 4), (nb201, 80, 2)] {
            let g = Genotype::load(name).unwrap();
            let model = EvalModelConfig { channels, layers, auxiliary_weight: 0.0, drop_path: 0.0 };
            let task = TaskShape { num_classes: 10, in_channels: 3 };
            let built = g.build_eval_network(&model, task, 0, &Device::Cpu).unwrap().num_params_without_aux();
            assert_eq!(param_count(&g, &model, task).unwrap(), built as u128, "{name}");
        }
    }
}
