//! The presets: `darts-1st` (default) and `darts-2nd` with the settings of DARTS'
//! `train_search.py`, `pc-darts` and `pc-darts-imagenet` with those of PC-DARTS'
//! `train_search.py` and `train_search_imagenet.py`, `p-darts` with P-DARTS' stages, `quick`, a
//! small demo, and the methods' own (`MethodSpec::presets`: `gdas`, AutoDL-Projects' GDAS on
//! NAS-Bench-201, …). Each preset is `darts-1st` with a JSON overlay laid over it the way flags
//! are (`SearchConfig::with_overlay`), so a preset names the settings of a space or a method by
//! their config.json fields, as a user's config file would.

use nas_core::data::DataSpec;
use nas_core::optim::WeightOptimConfig;
use nas_core::DeviceSpec;
use search_spaces::{SearchModelConfig, SpaceKind};
use serde_json::{json, Value};

use super::{ArchOptimConfig, DataConfig, EarlyStop, Method, SearchConfig};
use crate::method::Preset;
use crate::{Error, Result};

/// Every preset: the searches of the papers of the darts space, then the methods' own.
pub fn presets() -> Vec<Preset> {
    let mut all: Vec<Preset> = BUILT_IN
        .iter()
        .filter_map(|&(name, about)| overlay(name).map(|overlay| Preset { name, about, overlay }))
        .collect();
    all.extend(Method::ALL.iter().flat_map(|m| m.presets()));
    all
}

/// The presets of the darts space's papers and the demo, with a line about each.
const BUILT_IN: [(&str, &str); 6] = [
    ("darts-1st", "DARTS' first-order search (the default)"),
    ("darts-2nd", "DARTS' second-order search"),
    ("pc-darts", "PC-DARTS"),
    ("pc-darts-imagenet", "PC-DARTS' ImageNet search"),
    ("p-darts", "P-DARTS' progressive search"),
    ("quick", "a small darts-1st for a demo"),
];

/// What each built-in preset changes of `darts-1st`.
fn overlay(name: &str) -> Option<Value> {
    Some(match name {
        "darts-1st" => json!({}),
        "darts-2nd" => json!({"method": {"name": "second-order"}}),
        "pc-darts" => json!({
            "data": {"batch_size": 256},
            "weight_optimizer": {"lr": 0.1, "lr_min": 0.0},
            "arch_optimizer": {"lr": 6e-4},
            "model": {"partial_channels": 4, "edge_norm": true},
            "arch_start_epoch": 15,
        }),
        // PC-DARTS' `train_search_imagenet.py`: the ImageNet stems at 224, K=2, edge
        // normalisation, 10% of each class for the weights and 2.5% for α, batch 1024, SGD 0.5
        // cosine to 0 with 5 warm-up epochs (batches over 256), weight decay 3e-4, Adam 6e-3
        // (0.5, 0.999) with weight decay 1e-3 from epoch 35 of 50.
        "pc-darts-imagenet" => json!({
            "model": {"net": "imagenet", "partial_channels": 2, "edge_norm": true},
            "data": {"image_size": 224, "subset_fraction": [0.1, 0.025], "batch_size": 1024},
            "weight_optimizer": {"lr": 0.5, "lr_min": 0.0, "warmup_epochs": 5},
            "arch_optimizer": {"lr": 6e-3},
            "arch_start_epoch": 35,
        }),
        "p-darts" => json!({
            "epochs": 25,
            "arch_start_epoch": 10,
            "data": {"batch_size": 96},
            "weight_optimizer": {"lr_min": 0.0},
            "arch_optimizer": {"lr": 6e-4},
            "model": {"layers": 5, "max_skip_connect": 2},
            "progressive": {"layers": [5, 11, 17], "ops_per_edge": [8, 5, 3], "skip_dropout": [0.0, 0.4, 0.7]},
        }),
        "quick" => json!({"data": {"batch_size": 32, "subset": 1000}, "epochs": 5}),
        _ => return None,
    })
}

impl SearchConfig {
    /// The settings of a named preset.
    pub fn preset(name: &str) -> Result<SearchConfig> {
        let all = presets();
        let Some(preset) = all.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = all.iter().map(|p| p.name).collect();
            return Err(Error::config(format!("unknown preset `{name}` (expected {})", names.join(", "))));
        };
        darts_1st(name).with_overlay(&preset.overlay)
    }
}

/// DARTS' first-order search (`train_search.py`), under the name `preset`; at the demo's size
/// for `quick`.
fn darts_1st(preset: &str) -> SearchConfig {
    SearchConfig {
        preset: preset.to_string(),
        method: Method::FirstOrder.into(),
        hessian_every: 0,
        early_stop: EarlyStop::None,
        epochs: 50,
        arch_start_epoch: 0,
        seed: 2,
        device: DeviceSpec::Cpu,
        model: SearchModelConfig::default_for(SpaceKind::Darts, preset == "quick"),
        data: DataConfig {
            spec: DataSpec::Synthetic,
            subset: None,
            batch_size: 64,
            accumulate: 1,
            image_size: 32,
            subset_fraction: None,
        },
        weight_optimizer: WeightOptimConfig::darts(0.001),
        arch_optimizer: ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 },
        progressive: None,
        stage: None,
        first_epoch: 0,
        end_epoch: None,
        skip_dropout: 0.0,
    }
}
