//! The NAS-Bench-201 space: arch strings, derivation by arg-max (none included), the JSON
//! form, parameter counts of the benchmark's skeleton, and a forward/backward pass.

use candle_core::{DType, Device, Tensor};
use nas_core::nn::{cross_entropy, Mode};
use search_spaces::nb201::{Nb201Config, Nb201Genotype, Nb201Network, Nb201Op};
use search_spaces::Genotype;

const RESNET: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";

#[test]
fn arch_strings_round_trip() {
    let g = Nb201Genotype::parse(RESNET).unwrap();
    assert_eq!(g.edges[0], Nb201Op::NorConv3x3);
    assert_eq!(g.edges[3], Nb201Op::SkipConnect);
    assert_eq!(g.arch_string(), RESNET);
    let json = Genotype::Nb201(g).to_json();
    assert_eq!(json["space"], "nb201");
    assert_eq!(Genotype::from_json_value(&json).unwrap(), Genotype::Nb201(g));
    assert_eq!(Genotype::load(RESNET).unwrap(), Genotype::Nb201(g));
}

#[test]
fn malformed_arch_strings_are_rejected() {
    for (bad, why) in [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "3 nodes"),
        ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
        ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "input 0 is written as 1"),
        ("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op `sep_conv_3x3` for the nb201"),
        ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "is not op~input"),
    ] {
        let e = Nb201Genotype::parse(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
    let e = Genotype::from_json_str(r#"{"space":"nb201","normal":[]}"#).unwrap_err().to_string();
    assert!(e.contains("unknown field `normal`"), "{e}");
}

#[test]
fn derivation_is_argmax_per_edge_with_none() {
    // Columns: none, skip, conv1, conv3, pool.
    let rows = vec![
        vec![0.1, 0.2, 0.3, 0.9, 0.0], // conv3
        vec![0.9, 0.2, 0.3, 0.1, 0.0], // none strongest: kept
        vec![0.2, 0.2, 0.2, 0.2, 0.2], // tie: lowest column (none)
        vec![0.0, 0.5, 0.1, 0.1, 0.3], // skip
        vec![0.0, 0.1, 0.6, 0.1, 0.2], // conv1
        vec![0.0, 0.1, 0.1, 0.1, 0.7], // pool
    ];
    let g = Nb201Genotype::derive(&rows);
    assert_eq!(g.arch_string(), "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|");
}

/// Parameter counts of the benchmark's CIFAR-10 networks (C = 16, N = 5): the smallest
/// (no convolutions) 0.073 M, the ResNet-like cell 1.289 M, all 3×3 convolutions 1.532 M.
#[test]
fn parameter_counts_match_the_benchmark() {
    let count = |arch: &str| {
        let g = Nb201Genotype::parse(arch).unwrap();
        let net = Nb201Network::derived(Nb201Config::default(), &g, 0, DType::F32, &Device::Cpu).unwrap();
        net.weights().num_weight_elements()
    };
    assert_eq!(count("|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"), 73_306);
    assert_eq!(count(RESNET), 1_288_506);
    let all3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    assert_eq!(count(all3), 1_531_546);
}

#[test]
fn search_network_trains_alpha_and_weights() {
    let cfg = Nb201Config { channels: 4, cells_per_stage: 1, ..Default::default() };
    let net = Nb201Network::search(cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1., (2, 3, 16, 16), &Device::Cpu).unwrap();
    let y = Tensor::new(&[1u32, 7], &Device::Cpu).unwrap();
    let logits = net.forward(&x, Mode::TRAIN_ALL).unwrap();
    assert_eq!(logits.dims(), [2, 10]);
    let grads = cross_entropy(&logits, &y).unwrap().backward().unwrap();
    let alpha = net.arch().params().into_iter().find(|p| p.name == "arch_parameters").unwrap();
    let ga = alpha.grad(&grads).unwrap().expect("α gradient");
    assert_eq!(ga.dims(), [6, 5]);
    assert!(ga.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    for p in net.weights().params().into_iter().filter(|p| p.name.contains("conv") || p.name.starts_with("stem")) {
        if p.name.ends_with("weight") && !p.name.contains("running") {
            assert!(p.grad(&grads).unwrap().is_some(), "no gradient for {}", p.name);
        }
    }
    let g = net.genotype().unwrap();
    assert_eq!(g.arch_string().matches('~').count(), 6);
}
