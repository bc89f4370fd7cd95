//! `nas show`: print a genotype as text (with the derived network's parameter count and, with
//! `--flops`, its mult-adds) or JSON, or draw its cells (Graphviz DOT, SVG, PNG).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail};

use candle_core::Device;
use clap::{Args, ValueEnum};
use search_spaces::{EvalModelConfig, Genotype, NetKind, TaskShape};

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

/// The skeleton of a darts network (DARTS `model.py`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Net {
    /// NetworkCIFAR (32×32 images)
    Cifar,
    /// NetworkImageNet (224×224 images, the mobile setting)
    Imagenet,
}

impl From<Net> for NetKind {
    fn from(n: Net) -> Self {
        match n {
            Net::Cifar => NetKind::Cifar,
            Net::Imagenet => NetKind::ImageNet,
        }
    }
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ShowArgs {
    /// Genotype: a genotype.json file, a run directory, DARTS_V1, DARTS_V2, PC_DARTS,
    /// PC_DARTS_IMAGENET, PDARTS, or an nb201 arch string such as
    /// '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|…|'
    #[arg(value_name = "GENOTYPE")]
    genotype: String,
    /// Initial channels of the derived network whose size is reported [default: 36 for darts,
    /// 48 for --net imagenet, 16 for nb201]
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Cells of the derived network whose size is reported: L for darts [default: 20, 14 for
    /// --net imagenet], cells per stage for nb201 [default: 5]
    #[arg(long, value_name = "L")]
    layers: Option<usize>,
    /// Number of classes of the derived network [default: 10, 1000 for --net imagenet]
    #[arg(long, value_name = "N")]
    classes: Option<usize>,
    /// Skeleton of the darts network whose size is reported
    #[arg(long, value_enum, default_value_t = Net::Cifar)]
    net: Net,
    /// Also report the mult-adds of one image (convolutions and classifier, auxiliary head
    /// excluded), and both sizes in millions
    #[arg(long)]
    flops: bool,
    /// Image height and width for --flops [default: 32, 224 for --net imagenet]
    #[arg(long, value_name = "S", requires = "flops")]
    image_size: Option<usize>,
    /// Output format [default: text, or what --out's extension says]
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write to FILE instead of standard output (needed for png on a terminal)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The most cells `nas show` builds to count (no network of the papers has more than ~30).
const MAX_LAYERS: usize = 10_000;

/// The size of a derived network: its parameters without the auxiliary head and, when asked
/// for, the mult-adds of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetworkSize {
    params: u128,
    mult_adds: Option<u128>,
}

/// The size of the derived network, auxiliary head excluded, with the mult-adds of one
/// `image`×`image` picture when `image` is given. Every weight's size and every layer's
/// mult-adds is a polynomial of degree at most 2 in C (convolutions C_in·C_out·k², depthwise
/// ones, batch norms and the classifier linear in C, every channel count proportional to C),
/// so above 64 channels both come from the networks at C = 2, 4, 6 by quadratic
/// interpolation, without building the large one (whose weights might not even fit in memory).
fn network_size(
    genotype: &Genotype,
    model: &EvalModelConfig,
    task: TaskShape,
    image: Option<usize>,
) -> anyhow::Result<NetworkSize> {
    if model.layers > MAX_LAYERS {
        bail!("--layers {} is too many: at most {MAX_LAYERS} cells", model.layers);
    }
    // The network's own checks (an even C for darts, the skeletons a space has, …) first.
    let kind = genotype.kind();
    kind.validate_eval(model)?;
    if let Some(side) = image {
        kind.check_input_size(model, side, side)?;
    }
    let at = |channels: usize| -> anyhow::Result<(i128, Option<i128>)> {
        let m = EvalModelConfig { channels, ..model.clone() };
        let net = genotype.build_eval_network(&m, task, 0, &Device::Cpu)?;
        let mult_adds = match image {
            None => None,
            Some(side) => {
                let count = net
                    .mult_adds(side, side)
                    .ok_or_else(|| anyhow!("--flops: mult-adds are counted for darts networks only"))??;
                Some(i128::try_from(count).map_err(|_| anyhow!("--flops: too many mult-adds to count"))?)
            }
        };
        Ok((net.num_params_without_aux() as i128, mult_adds))
    };
    let unsigned = |v: i128| u128::try_from(v).map_err(|_| anyhow!("a negative size: the count is broken"));
    if model.channels <= 64 {
        let (params, mult_adds) = at(model.channels)?;
        return Ok(NetworkSize { params: unsigned(params)?, mult_adds: mult_adds.map(unsigned).transpose()? });
    }
    let (p2, m2) = at(2)?;
    let (p4, m4) = at(4)?;
    let (p6, m6) = at(6)?;
    let c = model.channels as i128;
    let interpolate = |v2: i128, v4: i128, v6: i128| -> anyhow::Result<u128> {
        let too_large = || anyhow!("--channels {c} is too many to count");
        let term = |v: i128, a: i128, b: i128| v.checked_mul(c - a).and_then(|x| x.checked_mul(c - b));
        let eight_v = term(v2, 4, 6)
            .zip(term(v4, 2, 6).and_then(|x| x.checked_mul(2)))
            .zip(term(v6, 2, 4))
            .and_then(|((a, b), d)| a.checked_sub(b)?.checked_add(d))
            .ok_or_else(too_large)?;
        unsigned(eight_v / 8)
    };
    let mult_adds = match (m2, m4, m6) {
        (Some(a), Some(b), Some(d)) => Some(interpolate(a, b, d)?),
        _ => None,
    };
    Ok(NetworkSize { params: interpolate(p2, p4, p6)?, mult_adds })
}

/// `n` in millions, rounded to two decimals.
fn millions(n: u128) -> String {
    let hundredths = n.saturating_add(5_000) / 10_000;
    format!("{}.{:02}M", hundredths / 100, hundredths % 100)
}

pub fn run(args: ShowArgs) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--channels", args.channels),
        ("--layers", args.layers),
        ("--classes", args.classes),
        ("--image-size", args.image_size),
    ] {
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
    if args.flops && format != Format::Text {
        bail!("--flops adds lines to the text output and goes with no other --format (nor --out extension)");
    }
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
            let net = NetKind::from(args.net);
            // The mobile setting of the papers (C=48, L=14, 1000 classes, 224×224).
            let imagenet = net == NetKind::ImageNet;
            let model = EvalModelConfig {
                channels: args.channels.unwrap_or(if imagenet { 48 } else { defaults.channels }),
                layers: args.layers.unwrap_or(if imagenet { 14 } else { defaults.layers }),
                auxiliary_weight: 0.0,
                drop_path: 0.0,
                net,
            };
            let classes = args.classes.unwrap_or(if imagenet { 1000 } else { 10 });
            let task = TaskShape { num_classes: classes, in_channels: 3 };
            let side = args.image_size.unwrap_or(if imagenet { 224 } else { 32 });
            let size = network_size(&genotype, &model, task, args.flops.then_some(side))?;
            let described = kind.describe_size(&model);
            let lines = match size.mult_adds {
                None => format!("params: {} ({described})\n", size.params),
                Some(m) => format!(
                    "params: {} = {} ({described})\nmult-adds: {m} = {} (one {side}x{side} image, without auxiliary head)\n",
                    size.params,
                    millions(size.params),
                    millions(m)
                ),
            };
            format!("space: {}\n{genotype}{lines}", genotype.space()).into_bytes()
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

    #[test]
    fn millions_round_to_two_decimals() {
        assert_eq!(millions(529_911_552), "529.91M");
        assert_eq!(millions(4_718_752), "4.72M");
        assert_eq!(millions(4_995_000), "5.00M");
        assert_eq!(millions(0), "0.00M");
    }

    /// Above 64 channels the counts are interpolated: they equal the counts of the network
    /// built.
    #[test]
    fn interpolated_counts_equal_built_ones() {
        let nb201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
        let cases = [
            ("DARTS_V2", 72, 5, NetKind::Cifar, true),
            ("PC_DARTS", 66, 4, NetKind::ImageNet, true),
            (nb201, 80, 2, NetKind::Cifar, false),
        ];
        for (name, channels, layers, net, flops) in cases {
            let g = Genotype::load(name).unwrap();
            let model = EvalModelConfig { channels, layers, auxiliary_weight: 0.0, drop_path: 0.0, net };
            let task = TaskShape { num_classes: 10, in_channels: 3 };
            let built = g.build_eval_network(&model, task, 0, &Device::Cpu).unwrap();
            let side = if net == NetKind::ImageNet { 64 } else { 32 };
            let want = NetworkSize {
                params: built.num_params_without_aux() as u128,
                mult_adds: flops.then(|| built.mult_adds(side, side).unwrap().unwrap()),
            };
            assert_eq!(network_size(&g, &model, task, flops.then_some(side)).unwrap(), want, "{name}");
        }
    }
}
