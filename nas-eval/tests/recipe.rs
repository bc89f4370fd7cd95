//! The retraining recipe field for field against DARTS' `cnn/train.py` (quark0/darts), the
//! values written out here rather than read from the code: batch 96, SGD lr 0.025 with
//! `CosineAnnealingLR(optimizer, epochs)` (to 0), momentum 0.9, weight decay 3e-4, 600
//! epochs, C=36, L=20, auxiliary weight 0.4, cutout 16, drop path 0.2, grad clip 5, seed 0.
//! An nb201 cell keeps the optimiser and data settings in the NAS-Bench-201 skeleton (C=16,
//! N=5) without auxiliary head or drop path.

use std::sync::atomic::AtomicBool;

use nas_core::data::DataSpec;
use nas_core::metrics::CollectSink;
use nas_core::optim::{ScheduleKind, WeightOptimConfig};
use nas_core::DeviceSpec;
use nas_eval::config::TrainDataConfig;
use nas_eval::{TrainConfig, Trainer};
use search_spaces::{EvalModelConfig, Genotype, NetKind};

fn darts_train_py(genotype: &Genotype, model: EvalModelConfig) -> TrainConfig {
    TrainConfig {
        genotype: genotype.to_json(),
        epochs: 600,
        seed: 0,
        device: DeviceSpec::Cpu,
        model,
        data: TrainDataConfig {
            spec: DataSpec::Synthetic,
            subset: None,
            batch_size: 96,
            cutout: 16,
            image_size: 32,
            accumulate: 1,
        },
        optimizer: WeightOptimConfig {
            lr: 0.025,
            lr_min: 0.0,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            nesterov: false,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0,
        },
        label_smoothing: 0.0,
    }
}

#[test]
fn the_recipe_is_darts_train_py() {
    for name in ["DARTS_V2", "PC_DARTS"] {
        let g = Genotype::load(name).unwrap();
        let model =
            EvalModelConfig { channels: 36, layers: 20, auxiliary_weight: 0.4, drop_path: 0.2, net: NetKind::Cifar };
        let c = TrainConfig::for_genotype(&g);
        assert_eq!(c, darts_train_py(&g, model), "{name}");
        c.validate().unwrap();
    }
    let nb = Genotype::load("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
        .unwrap();
    let model = EvalModelConfig { channels: 16, layers: 5, auxiliary_weight: 0.0, drop_path: 0.0, net: NetKind::Cifar };
    assert_eq!(TrainConfig::for_genotype(&nb), darts_train_py(&nb, model));
}

/// lr(e) = 0.025·(1 + cos(πe/600))/2 at the start of epoch e (from 0, as DARTS steps the
/// scheduler before each epoch's training).
#[test]
fn the_learning_rate_is_cosine_annealed_to_zero() {
    let g = Genotype::load("DARTS_V2").unwrap();
    let c = TrainConfig::for_genotype(&g);
    let s = c.optimizer.schedule(c.epochs);
    for (e, want) in [(0, 0.025), (150, 0.0125 * (1.0 + 0.5f64.sqrt())), (300, 0.0125), (600, 0.0)] {
        assert!((s.lr(e) - want).abs() < 1e-15, "epoch {e}: {} vs {want}", s.lr(e));
    }
    // A run of 2 epochs anneals over its own 2: 0.025, then 0.0125 (cos(π/2) = 0).
    let mut c = c;
    (c.epochs, c.model.channels, c.model.layers, c.data.subset, c.data.batch_size) = (2, 4, 3, Some(32), 16);
    let mut t = Trainer::new(c.validate().unwrap()).unwrap();
    let mut sink = CollectSink::default();
    t.run(None, &mut sink, &AtomicBool::new(false)).unwrap();
    let lrs: Vec<f64> = sink.epochs.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs.len(), 2);
    assert!((lrs[0] - 0.025).abs() < 1e-15 && (lrs[1] - 0.0125).abs() < 1e-15, "{lrs:?}");
}
