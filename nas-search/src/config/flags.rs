//! Where the search's flags come from: each section's own declarations (`nas_core::settings`),
//! mounted at the section's place in the configuration. The run's data, batch, epochs, seed
//! and device flags are nas-core's, the model's the spaces' (`--channels` and `--layers` for
//! every space, then each space's own), the method's the methods' (`method::method_flags`);
//! the flags of the search's own fields are declared here.

use nas_core::run_flags::{accumulate_flag, batch_size_flag, data_flags, device_flag, image_size_flag, run_flags};
use nas_core::settings::{self, parse, Flag, Mount};
use search_spaces::{size_flags, SpaceKind};
use serde_json::{json, Value};

use super::EarlyStop;
use crate::method::method_flags;

/// `--space`: a registered space or one of its aliases (s1–s4: darts with R-DARTS' op sets).
fn space_flag() -> Flag {
    let names: Vec<&str> = SpaceKind::ALL.iter().map(|k| k.name()).collect();
    let aliases: Vec<&str> = SpaceKind::ALL.iter().flat_map(|k| k.aliases()).map(|(a, _)| a).collect();
    Flag::one("space", "space", "S", parse_space)
        .help(format!(
            "Search space: {} (C=16 and 5 cells per stage for nb201; quick: C=8, 2), or {}: the darts space with \
             the op sets of R-DARTS' spaces S1–S4",
            names.join(", "),
            aliases.join(", ")
        ))
        .overlay()
}

fn parse_space(text: &str) -> Result<Value, String> {
    let (kind, model) = SpaceKind::choice(text)?;
    Ok(match model {
        Some(model) => json!({"space": kind.name(), "model": model}),
        None => json!({"space": kind.name()}),
    })
}

/// `W,A` or `W` (both parts W).
fn parse_fractions(s: &str) -> Result<Value, String> {
    let parse = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number (expected W or W,A)"));
    let [w, a] = match s.split_once(',') {
        Some((w, a)) => [parse(w)?, parse(a)?],
        None => [parse(s)?; 2],
    };
    Ok(json!([w, a]))
}

/// Every space's own model flags, each once.
fn model_flags() -> Vec<Flag> {
    let mut flags = size_flags();
    for kind in SpaceKind::ALL {
        for f in kind.search_model_flags() {
            if !flags.iter().any(|g| g.long == f.long) {
                flags.push(f);
            }
        }
    }
    flags
}

/// `--preset`, every preset in its help.
fn preset_flag() -> Flag {
    let list: Vec<String> = super::presets().iter().map(|p| format!("{} ({})", p.name, p.about)).collect();
    Flag::one("preset", "preset", "P", settings::text).help(format!("Preset: {}", list.join(", ")))
}

fn search_own_flags() -> Vec<Flag> {
    let mut flags = vec![
        preset_flag(),
        space_flag(),
        Flag::one("hessian-every", "hessian_every", "N", parse::<usize>).help(
            "Compute the dominant eigenvalue of the α-Hessian of the validation loss every N epochs (metrics: \
             hessian_eig)",
        ),
        Flag::one("early-stop", "early_stop", "RULE", parse::<EarlyStop>).help(
            "Early stopping: none, or darts-es (R-DARTS; the eigenvalue every 2 epochs unless --hessian-every \
             says otherwise)",
        ),
        Flag::one("arch-start-epoch", "arch_start_epoch", "E", parse::<usize>)
            .help("First epoch with architecture updates"),
    ];
    flags.extend(run_flags());
    flags
}

/// The flags of `nas search`.
pub fn search_flags() -> Vec<Mount> {
    let mut data = data_flags();
    data.extend([
        Flag::one("subset-fraction", "subset_fraction", "W[,A]", parse_fractions).help(
            "Per class, draw these fractions of the training images for the weights and for the architecture \
             instead of the two halves, e.g. 0.1,0.025 (PC-DARTS on ImageNet); one value uses it for both",
        ),
        image_size_flag(),
        batch_size_flag(),
        accumulate_flag(),
    ]);
    vec![
        Mount::new("", search_own_flags()),
        Mount::new("method", method_flags()).with_heading("Method settings"),
        Mount::new("model", model_flags()),
        Mount::new("data", data),
        Mount::new("weight_optimizer", vec![nas_core::optim::lr_flag()]),
        Mount::new(
            "arch_optimizer",
            vec![Flag::one("arch-lr", "lr", "LR", parse::<f64>).help("Architecture (Adam) learning rate")],
        ),
        Mount::new(
            "progressive",
            vec![
                Flag::one("stage-layers", "layers", "L,L,…", parse::<usize>)
                    .help("Progressive search (P-DARTS): cells of each stage's network, comma-separated")
                    .list(),
                Flag::one("stage-ops", "ops_per_edge", "N,N,…", parse::<usize>)
                    .help("Progressive search: ops per edge in each stage (the first: the op set's size)")
                    .list(),
                Flag::one("skip-dropout", "skip_dropout", "P,P,…", parse::<f64>)
                    .help("Progressive search: base dropout rate after skip_connect in each stage")
                    .list(),
                Flag::one("stage-partial-channels", "partial_channels", "K,K,…", parse::<usize>)
                    .help("Progressive search: partial channels K of each stage (DrNAS: 6,4)")
                    .list(),
                Flag::switch("net2wider", "net2wider").help(
                    "Progressive search: each stage continues the previous one's network, widened to its \
                     partial channels (DrNAS)",
                ),
            ],
        ),
    ]
}

/// The flags of one search step (`nas bench search`): the supernet, the method, the batch and
/// the device.
pub fn step_flags() -> Vec<Mount> {
    vec![
        Mount::new("", vec![space_flag(), device_flag()]),
        Mount::new("method", method_flags()).with_heading("Method settings"),
        Mount::new("model", model_flags()),
        Mount::new("data", vec![batch_size_flag(), image_size_flag()]),
    ]
}
