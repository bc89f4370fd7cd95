//! DARTS' `NetworkImageNet` (quark0/darts cnn/model.py): parameter counts and mult-adds in the
//! mobile setting (C=48, L=14, 1000 classes, 224×224) against the PyTorch reference, and the
//! parity of a small network's forward and backward with it. Every reference number below
//! comes from tests/fixtures/gen_imagenet_golden.py, which builds `NetworkImageNet` in PyTorch
//! (its cells are shared/bench/darts_ref.py's `EvalCell`) and prints:
//!
//! ```text
//! DARTS_V2: imagenet C=48 L=14: params 4718752, mult-adds 529911552
//! PC_DARTS: imagenet C=48 L=14: params 5270560, mult-adds 571137408
//! PDARTS: imagenet C=48 L=14: params 4944352, mult-adds 542819328
//! PC_DARTS_IMAGENET: imagenet C=48 L=14: params 5342464, mult-adds 581627328
//! DARTS_V2: cifar C=36 L=20: params 3349342, mult-adds 528359040
//! ```
//!
//! Parameters: `sum(p.numel())` over the parameters outside the auxiliary head. Mult-adds:
//! forward hooks on every `nn.Conv2d` (out_channels·H_out·W_out · in_channels/groups · k²) and
//! `nn.Linear` (in·out) outside the auxiliary head, one image.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{assert_gradients, assert_same_tensor_names, fixture, TOL};
use nas_core::nn::{cross_entropy_smoothed, Mode};
use nas_core::testing::max_rel_err;
use search_spaces::darts::{DartsGenotype, DerivedNetwork, DerivedNetworkConfig};
use search_spaces::{EvalModelConfig, Genotype, NetKind, SpaceKind, TaskShape};

const FIXTURE: &str = "imagenet_pcdarts_c8_l4.safetensors";
const AUX_CONV: &str = "auxiliary_head.features.5.weight";

fn imagenet(name: &str, channels: usize, layers: usize, num_classes: usize) -> DerivedNetwork {
    let g = DartsGenotype::builtin(name).unwrap();
    let cfg =
        DerivedNetworkConfig { channels, layers, num_classes, auxiliary: true, in_channels: 3, net: NetKind::ImageNet };
    DerivedNetwork::new(&g, cfg, 0, DType::F32, &Device::Cpu).unwrap()
}

/// The mobile-setting model sizes without the auxiliary head, as the reference counts them.
/// Published: DARTS 4.7M (DARTS_V2), PC-DARTS 5.3M (its ImageNet-searched cell), P-DARTS 4.9M.
#[test]
fn mobile_setting_parameter_counts_match_the_reference() {
    for (name, want) in
        [("DARTS_V2", 4_718_752), ("PC_DARTS", 5_270_560), ("PDARTS", 4_944_352), ("PC_DARTS_IMAGENET", 5_342_464)]
    {
        assert_eq!(imagenet(name, 48, 14, 1000).num_params_without_aux(), want, "{name}");
    }
}

/// Mult-adds of one 224×224 image equal the reference's hook count exactly, and lie within
/// 10% of the published figures: DARTS 574M (DARTS_V2), PC-DARTS 597M (PC_DARTS_IMAGENET).
/// The hook counts are 7.7% and 2.6% below them: the papers do not say how they counted.
#[test]
fn mobile_setting_mult_adds_match_the_reference_hooks_and_the_papers() {
    let hooks = [
        ("DARTS_V2", 529_911_552u128, Some(574e6)),
        ("PC_DARTS", 571_137_408, None),
        ("PDARTS", 542_819_328, None),
        ("PC_DARTS_IMAGENET", 581_627_328, Some(597e6)),
    ];
    for (name, want, published) in hooks {
        let got = imagenet(name, 48, 14, 1000).mult_adds(224, 224).unwrap();
        assert_eq!(got, want, "{name}");
        if let Some(p) = published {
            let off = (got as f64 - p).abs() / p;
            assert!(off < 0.1, "{name}: {got} mult-adds, {:.1}% off the published {p}", 100.0 * off);
        }
    }
}

/// The CIFAR network counts the same way (DARTS_V2, C=36, L=20, 32×32).
#[test]
fn cifar_mult_adds_match_the_reference_hooks() {
    let g = DartsGenotype::builtin("DARTS_V2").unwrap();
    let cfg = DerivedNetworkConfig {
        channels: 36,
        layers: 20,
        num_classes: 10,
        auxiliary: true,
        in_channels: 3,
        net: NetKind::Cifar,
    };
    let net = DerivedNetwork::new(&g, cfg, 0, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.mult_adds(32, 32).unwrap(), 528_359_040);
}

/// Sizes the network cannot take are errors naming the size and where it stops fitting.
#[test]
fn unfitting_input_sizes_are_named() {
    let net = imagenet("PC_DARTS_IMAGENET", 8, 4, 10);
    for (h, w, want) in [(104, 104, "cell 1: node 0"), (100, 100, "cell 0"), (224, 0, "side is 0"), (2, 2, "cell 0")] {
        let e = net.mult_adds(h, w).unwrap_err().to_string();
        assert!(e.contains(&format!("a {h}x{w} input does not fit")) && e.contains(want), "{h}x{w}: {e}");
    }
    let x = Tensor::zeros((1, 3, 104, 104), DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward(&x, Mode::EVAL).is_err(), "the forward pass refuses it too");
    // Through the registry: the space refuses such sizes before a run starts.
    let m = EvalModelConfig { channels: 48, layers: 14, auxiliary_weight: 0.4, drop_path: 0.0, net: NetKind::ImageNet };
    let e = SpaceKind::Darts.check_input_size(&m, 200, 200).unwrap_err().to_string();
    assert!(e.contains("divisible by 32"), "{e}");
    let e = SpaceKind::Darts.check_input_size(&m, 320, 320).unwrap_err().to_string();
    assert!(e.contains("auxiliary head needs 224x224"), "{e}");
    SpaceKind::Darts.check_input_size(&m, 224, 224).unwrap();
    let e = SpaceKind::Nb201.validate_eval(&EvalModelConfig { auxiliary_weight: 0.0, ..m }).unwrap_err().to_string();
    assert!(e.contains("model.net"), "{e}");
}

/// The registry builds the ImageNet network from `model.net`, and config.json files written
/// before the field existed read as CIFAR networks.
#[test]
fn the_registry_builds_the_network_model_net_names() {
    let m: EvalModelConfig =
        serde_json::from_str(r#"{"channels": 48, "layers": 14, "auxiliary_weight": 0.4, "drop_path": 0.0}"#).unwrap();
    assert_eq!(m.net, NetKind::Cifar);
    let m = EvalModelConfig { net: NetKind::ImageNet, ..m };
    assert_eq!(serde_json::to_value(&m).unwrap()["net"], "imagenet");
    let g = Genotype::load("DARTS_V2").unwrap();
    let net = g.build_eval_network(&m, TaskShape { num_classes: 1000, in_channels: 3 }, 0, &Device::Cpu).unwrap();
    assert_eq!(net.num_params_without_aux(), 4_718_752);
    assert_eq!(net.mult_adds(224, 224).unwrap().unwrap(), 529_911_552);
}

/// Values in [-1, 1)·scale from an integer hash of the element index, as the generator's
/// `hashed` makes them (the fixture's input images and the auxiliary head's 2×2 conv weight).
fn hashed(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let mut h = (i * 2_654_435_761 + seed * 40503) & 0xffff_ffff;
            h ^= h >> 15;
            h = (h * 2_246_822_519) & 0xffff_ffff;
            h ^= h >> 13;
            (((h >> 8) as f64 / 2f64.powi(23) - 1.0) * scale) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The fixture with the two tensors it does not store: the 2×2 conv weight, and that weight's
/// gradient from its factors (Σ_b grad_output[b]ᵀ·input[b]).
fn golden() -> HashMap<String, Tensor> {
    let mut golden = fixture(FIXTURE);
    golden.insert(AUX_CONV.into(), hashed(&[768, 128, 2, 2], 2, 2f64.powi(-5)));
    let f64_2d = |k: &str| golden[k].to_dtype(DType::F64).unwrap().flatten_from(1).unwrap();
    let (input, grad_out) = (f64_2d("aux_conv.input"), f64_2d("aux_conv.grad_output"));
    let grad = grad_out.t().unwrap().matmul(&input).unwrap().reshape((768, 128, 2, 2)).unwrap();
    golden.insert(format!("grad.{AUX_CONV}"), grad.to_dtype(DType::F32).unwrap());
    golden
}

#[test]
fn tensor_names_are_the_reference_state_dict() {
    assert_same_tensor_names(&golden(), &[imagenet("PC_DARTS_IMAGENET", 8, 4, 10).weights()], &["aux_conv."]);
}

/// PC_DARTS_IMAGENET at C=8, L=4 (reductions at cells 1 and 2, the auxiliary head after cell
/// 2), two 224×224 images, drop path off: logits, auxiliary logits, the loss
/// CE_smooth(logits) + 0.4·CE_smooth(aux) (label smoothing 0.1) and the gradient of every
/// weight agree with the reference (float64, rounded to float32) to 1e-4 relative; so do the
/// eval-mode logits after that forward.
#[test]
fn logits_aux_loss_gradients_and_eval_logits_match_pytorch() {
    let golden = golden();
    let net = imagenet("PC_DARTS_IMAGENET", 8, 4, 10);
    net.weights().load(&golden, false).unwrap();
    let x = hashed(&[2, 3, 224, 224], 1, 1.0);
    let y = golden["target"].to_dtype(DType::U32).unwrap();
    let (logits, aux) = net.forward(&x, Mode::TRAIN_WEIGHTS).unwrap();
    let aux = aux.expect("auxiliary logits in training mode");
    for (name, got) in [("logits", &logits), ("aux_logits", &aux)] {
        let e = max_rel_err(got, &golden[name]).unwrap();
        assert!(e < TOL, "{name} rel err {e}");
    }
    let smooth = |l: &Tensor| cross_entropy_smoothed(l, &y, 0.1).unwrap();
    let loss = (smooth(&logits) + (smooth(&aux) * 0.4).unwrap()).unwrap();
    let e = max_rel_err(&loss.reshape(1).unwrap(), &golden["loss"]).unwrap();
    assert!(e < TOL, "loss rel err {e}");
    assert_gradients(&golden, &loss.backward().unwrap(), &[net.weights()]);

    let (eval_logits, none) = net.forward(&x, Mode::EVAL).unwrap();
    assert!(none.is_none(), "no auxiliary logits in eval mode");
    let e = max_rel_err(&eval_logits, &golden["eval_logits"]).unwrap();
    assert!(e < TOL, "eval logits rel err {e}");
}
