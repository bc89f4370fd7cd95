//! The search presets field for field against the published searches, the values written out
//! here rather than read from the code:
//!
//! - DARTS `cnn/train_search.py` (quark0/darts) defaults: batch 64, SGD lr 0.025 cosine-annealed
//!   over the epochs to `learning_rate_min` 0.001, momentum 0.9, weight decay 3e-4, 50 epochs,
//!   C=16, L=8, grad clip 5, seed 2, Adam on α lr 3e-4, betas (0.5, 0.999) (`architect.py`),
//!   weight decay 1e-3; `--unrolled` for the second order. `model_search.py`: 4 steps.
//! - PC-DARTS `train_search.py` (yuhuixu1993/PC-DARTS): batch 256, SGD lr 0.1, α/β lr 6e-4,
//!   K=4 partial channels with edge normalisation, α/β updated from epoch 15 (`if epoch>=15`),
//!   the rest as DARTS. The paper anneals the SGD lr "down to zero"; the script's
//!   `learning_rate_min` default is 0.001 — the preset follows the paper.
//! - `quick` has no published counterpart: `darts-1st` at C=8, L=5, batch 32, 5 epochs, 1000
//!   training images, as docs/methods.md documents it.

use nas_core::data::DataSpec;
use nas_core::optim::{ScheduleKind, WeightOptimConfig};
use nas_core::DeviceSpec;
use nas_search::config::{ArchOptimConfig, DataConfig, EarlyStop, Method, MethodConfig, SearchConfig};
use nas_search::method::gdas::GdasConfig;
use nas_search::method::snas::Resource;
use search_spaces::darts::DartsSearchModel;
use search_spaces::{NetKind, SearchModelConfig, SpaceKind, SpaceModel};
use serde_json::json;

/// DARTS' first-order search, every field.
fn darts_train_search() -> SearchConfig {
    SearchConfig {
        preset: "darts-1st".into(),
        method: Method::FirstOrder.into(),
        hessian_every: 0,
        early_stop: EarlyStop::None,
        epochs: 50,
        arch_start_epoch: 0,
        seed: 2,
        device: DeviceSpec::Cpu,
        model: SearchModelConfig {
            channels: 16,
            layers: 8,
            space: SpaceModel::Darts(DartsSearchModel {
                steps: 4,
                partial_channels: 1,
                edge_norm: false,
                max_skip_connect: None,
                ops: None,
                net: NetKind::Cifar,
            }),
        },
        data: DataConfig {
            spec: DataSpec::Synthetic,
            subset: None,
            batch_size: 64,
            accumulate: 1,
            image_size: 32,
            subset_fraction: None,
        },
        weight_optimizer: WeightOptimConfig {
            lr: 0.025,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            nesterov: false,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0,
        },
        arch_optimizer: ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 },
        progressive: None,
        stage: None,
        first_epoch: 0,
        end_epoch: None,
        skip_dropout: 0.0,
    }
}

/// `model` with its darts settings changed by `edit`.
fn darts_model(m: &SearchModelConfig, edit: impl FnOnce(&mut DartsSearchModel)) -> SearchModelConfig {
    let mut m = m.clone();
    let SpaceModel::Darts(d) = &mut m.space else { panic!("a darts model") };
    edit(d);
    m
}

fn preset(name: &str) -> SearchConfig {
    let c = SearchConfig::preset(name).unwrap();
    c.clone().validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    c
}

#[test]
fn darts_presets_are_darts_train_search() {
    assert_eq!(preset("darts-1st"), darts_train_search());
    let second =
        SearchConfig { preset: "darts-2nd".into(), method: Method::SecondOrder.into(), ..darts_train_search() };
    assert_eq!(preset("darts-2nd"), second);
}

/// This project's settings of the other methods, each in its own section: what a search gets
/// when it switches to the method without giving them.
#[test]
fn method_sections_start_from_their_defaults() {
    for (m, want) in [
        (Method::Unrolled, json!({"name": "unrolled", "unroll_steps": 1})),
        (Method::IapttGm, json!({"name": "iaptt-gm", "unroll_steps": 2, "iaptt_z_lr": 0.025})),
        (
            Method::Bda,
            json!({"name": "bda", "unroll_steps": 1, "bda_mu": 0.6, "bda_gamma": 1.0, "viewpoint": "optimistic"}),
        ),
        (Method::Implicit, json!({"name": "implicit", "neumann_steps": 5})),
        (Method::ImplicitCg, json!({"name": "implicit-cg", "cg_steps": 5, "cg_damping": 1.0})),
        (Method::Gdas, json!({"name": "gdas", "tau_max": 10.0, "tau_min": 0.1})),
        (
            Method::Snas,
            json!({"name": "snas", "tau_max": 1.0, "tau_min": 0.03, "resource": "params", "resource_weight": 0.0}),
        ),
        (Method::Enas, json!({"name": "enas", "select_samples": 100})),
        (Method::Random, json!({"name": "random", "select_samples": 100})),
    ] {
        assert_eq!(MethodConfig::from(m).to_json().unwrap(), want, "{m}");
    }
    assert_eq!(serde_json::to_value(Resource::Params).unwrap(), json!("params"));
}

#[test]
fn pc_darts_preset_is_pc_darts_train_search() {
    let d = darts_train_search();
    let want = SearchConfig {
        preset: "pc-darts".into(),
        arch_start_epoch: 15,
        model: darts_model(&d.model, |m| (m.partial_channels, m.edge_norm) = (4, true)),
        data: DataConfig { batch_size: 256, ..d.data.clone() },
        weight_optimizer: WeightOptimConfig { lr: 0.1, lr_min: 0.0, ..d.weight_optimizer.clone() },
        arch_optimizer: ArchOptimConfig { lr: 6e-4, ..d.arch_optimizer.clone() },
        ..d
    };
    assert_eq!(preset("pc-darts"), want);
}

/// PC-DARTS' `train_search_imagenet.py`, written out: batch 1024, SGD 0.5 cosine to 0 with the
/// warm-up `lr·(epoch + 1)/5` of the first 5 epochs (batch > 256), momentum 0.9, weight decay
/// 3e-4, 50 epochs, C=16, L=8, Adam 6e-3 (0.5, 0.999) with weight decay 1e-3 from epoch 35
/// (`--begin 35`), clip 5; the ImageNet stems, K=2 with edge normalisation
/// (`model_search_imagenet.py`), RandomResizedCrop(224); 10% and 2.5% of every class.
#[test]
fn pc_darts_imagenet_preset_is_train_search_imagenet() {
    let d = darts_train_search();
    let want = SearchConfig {
        preset: "pc-darts-imagenet".into(),
        arch_start_epoch: 35,
        model: darts_model(&d.model, |m| (m.partial_channels, m.edge_norm, m.net) = (2, true, NetKind::ImageNet)),
        data: DataConfig { batch_size: 1024, image_size: 224, subset_fraction: Some([0.1, 0.025]), ..d.data.clone() },
        weight_optimizer: WeightOptimConfig { lr: 0.5, lr_min: 0.0, warmup_epochs: 5, ..d.weight_optimizer.clone() },
        arch_optimizer: ArchOptimConfig { lr: 6e-3, ..d.arch_optimizer.clone() },
        ..d
    };
    assert_eq!(preset("pc-darts-imagenet"), want);
    let s = want.weight_optimizer.schedule(50);
    for (e, lr) in [(0, 0.1), (4, 0.5 * (1.0 + (std::f64::consts::PI * 4.0 / 50.0).cos()) / 2.0)] {
        assert!((s.lr(e) - lr).abs() < 1e-15, "epoch {e}: {} vs {lr}", s.lr(e));
    }
}

/// AutoDL-Projects' GDAS on NAS-Bench-201, written out from scripts-search/NAS-Bench-201-algos/
/// GDAS.sh and configs/nas-benchmark/algos/GDAS.config: `--tau_max 10 --tau_min 0.1
/// --arch_learning_rate 0.0003 --arch_weight_decay 0.001`, cosine LR 0.025 → eta_min 0.001 over
/// 250 epochs, SGD momentum 0.9 with Nesterov, decay 0.0005, batch 64, clip 5 (GDAS.py), Adam
/// betas (0.5, 0.999); C=16, N=5.
#[test]
fn gdas_preset_is_autodl_gdas_on_nas_bench_201() {
    let d = darts_train_search();
    let want = SearchConfig {
        preset: "gdas".into(),
        method: MethodConfig::Gdas(GdasConfig { tau_max: 10.0, tau_min: 0.1 }),
        epochs: 250,
        model: SearchModelConfig { channels: 16, layers: 5, space: SpaceKind::Nb201.default_search_model() },
        weight_optimizer: WeightOptimConfig {
            lr: 0.025,
            lr_min: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
            grad_clip: 5.0,
            nesterov: true,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0,
        },
        arch_optimizer: ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 },
        ..d
    };
    let got = preset("gdas");
    assert_eq!(got, want);
    assert_eq!(got.space(), SpaceKind::Nb201);
}

#[test]
fn quick_preset_is_a_small_darts_1st() {
    let d = darts_train_search();
    let want = SearchConfig {
        preset: "quick".into(),
        epochs: 5,
        model: SearchModelConfig { channels: 8, layers: 5, ..d.model.clone() },
        data: DataConfig { batch_size: 32, subset: Some(1000), ..d.data.clone() },
        ..d
    };
    assert_eq!(preset("quick"), want);
}

/// `CosineAnnealingLR(optimizer, epochs, eta_min)` stepped at the start of every epoch:
/// lr(e) = η_min + (lr − η_min)·(1 + cos(πe/T))/2.
#[test]
fn preset_schedules_are_cosine_annealing_over_the_epochs() {
    for (name, points) in
        [("darts-1st", [(0, 0.025), (25, 0.013), (50, 0.001)]), ("pc-darts", [(0, 0.1), (25, 0.05), (50, 0.0)])]
    {
        let c = preset(name);
        let s = c.weight_optimizer.schedule(c.epochs);
        for (e, want) in points {
            assert!((s.lr(e) - want).abs() < 1e-15, "{name} epoch {e}: {} vs {want}", s.lr(e));
        }
    }
}
