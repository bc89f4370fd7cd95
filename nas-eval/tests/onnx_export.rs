//! ONNX export against our own evaluation forward: the darts CIFAR and ImageNet networks and
//! the nb201 network, each with weights and batch-norm statistics moved away from their
//! initial values, written as ONNX, read back by an independent runtime (tract) with its
//! symbolic batch, and run on images in [0, 1]: the logits agree with `EvalModel::forward`
//! on the normalised images to 1e-4 relative, for two batch sizes. The file's metadata
//! (class names, genotype, normalisation) decodes with tract's own ONNX protobuf types.

use candle_core::{Device, Tensor};
use nas_core::data::Normalize;
use nas_core::nn::Mode;
use nas_eval::{DataInfo, EvalModel, Recipe, TrainConfig, Trained};
use prost::Message as _;
use search_spaces::{Genotype, NetKind, TaskShape};
use tract_onnx::prelude::*;

/// A small trained-looking network: the recipe's network of `genotype` at `channels` and
/// `layers`, its weights perturbed and its running statistics moved by training-mode passes.
/// The ImageNet network's auxiliary head needs 224×224 images, so it goes without one.
fn trained(genotype: &str, net: NetKind, channels: usize, layers: usize, image: (usize, usize, usize)) -> Trained {
    let g = Genotype::load(genotype).unwrap();
    let mut cfg = TrainConfig::recipe(&g, net, Recipe::Darts);
    if net == NetKind::ImageNet {
        cfg.model.auxiliary_weight = 0.0;
    }
    cfg.model.channels = channels;
    cfg.model.layers = layers;
    cfg.data.image_size = image.1;
    let cfg = cfg.validate().unwrap();
    let data = DataInfo {
        normalize: Normalize { mean: vec![0.49, 0.48, 0.45], std: vec![0.25, 0.24, 0.26] },
        image_shape: image,
        num_classes: 7,
        class_names: (0..7).map(|i| format!("class {i}")).collect(),
    };
    let task = TaskShape { num_classes: 7, in_channels: image.0 };
    let model = EvalModel::new(&cfg.genotype, &cfg.model, task, 3, &Device::Cpu).unwrap();
    // Every weight (BN γ and β included) perturbed, so that no op is an identity by accident.
    for (i, p) in model.weights().params().iter().enumerate() {
        if p.kind == nas_core::ParamKind::Weight {
            let v = &p.var;
            let noise = (Tensor::randn(0f32, 0.1, v.dims(), &Device::Cpu).unwrap() * (1.0 + i as f64 % 3.0)).unwrap();
            v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
        }
    }
    let (c, h, w) = image;
    for _ in 0..3 {
        let x = Tensor::randn(0.5f32, 1.0, (4, c, h, w), &Device::Cpu).unwrap();
        model.forward(&x, Mode::TRAIN_WEIGHTS, None).unwrap();
    }
    Trained { cfg, model, data }
}

/// Images in [0, 1] of batch `b` (a fixed pattern per batch size).
fn images(b: usize, (c, h, w): (usize, usize, usize)) -> Vec<f32> {
    (0..b * c * h * w).map(|i| ((i * 7919 + b * 31) % 1000) as f32 / 999.0).collect()
}

/// Our logits: `forward` in evaluation mode on the normalised images.
fn ours(t: &Trained, pixels: &[f32], b: usize) -> Vec<f32> {
    let (c, h, w) = t.data.image_shape;
    let x = Tensor::from_slice(pixels, (b, c, h, w), &Device::Cpu).unwrap();
    let mean = Tensor::from_slice(&t.data.normalize.mean, (1, c, 1, 1), &Device::Cpu).unwrap();
    let std = Tensor::from_slice(&t.data.normalize.std, (1, c, 1, 1), &Device::Cpu).unwrap();
    let x = x.broadcast_sub(&mean).unwrap().broadcast_div(&std).unwrap();
    let (logits, aux) = t.model.forward(&x, Mode::EVAL, None).unwrap();
    assert!(aux.is_none());
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn check_round_trip(t: &Trained) {
    let bytes = t.onnx().unwrap();
    let runnable = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let (c, h, w) = t.data.image_shape;
    for b in [3, 1] {
        let pixels = images(b, t.data.image_shape);
        let want = ours(t, &pixels, b);
        let input: tract_onnx::prelude::Tensor =
            tract_ndarray::Array4::from_shape_vec((b, c, h, w), pixels).unwrap().into();
        let out = runnable.run(tvec!(input.into())).unwrap();
        let got = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(got.shape(), [b, t.data.num_classes]);
        let got: Vec<f32> = got.iter().copied().collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 1e-3, "degenerate logits {want:?}");
        assert!(err <= 1e-4 * scale, "batch {b}: max |onnx − ours| {err} for logits up to {scale}\n{got:?}\n{want:?}");
    }
    // The metadata, read with the ONNX runtime's own protobuf types.
    let m = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    assert!(m.opset_import.iter().any(|o| o.domain.is_empty() && o.version >= 13));
    let meta: std::collections::HashMap<_, _> =
        m.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    let names: Vec<String> = serde_json::from_str(meta["class_names"]).unwrap();
    assert_eq!(names, t.data.class_names);
    let genotype: serde_json::Value = serde_json::from_str(meta["genotype"]).unwrap();
    assert_eq!(genotype, t.cfg.config.genotype);
    let mean: Vec<f32> = serde_json::from_str(meta["normalize_mean"]).unwrap();
    assert_eq!(mean, t.data.normalize.mean);
    // No auxiliary head in the graph, whatever the network trains with.
    let graph = m.graph.unwrap();
    assert!(graph.initializer.iter().all(|i| !i.name.starts_with("auxiliary_head")));
    assert!(graph.initializer.iter().any(|i| i.name.ends_with("running_var")));
}

#[test]
fn darts_cifar_network_round_trips() {
    // DARTS_V2 has every op kind of the derived cells but noise: separable and dilated
    // convolutions, max pooling, skip connections (identity and factorized reduce).
    let t = trained("DARTS_V2", NetKind::Cifar, 8, 5, (3, 32, 32));
    assert!(t.cfg.model.auxiliary_weight > 0.0);
    check_round_trip(&t);
}

#[test]
fn darts_imagenet_network_round_trips() {
    // PC_DARTS adds average pooling.
    let t = trained("PC_DARTS", NetKind::ImageNet, 8, 3, (3, 64, 64));
    check_round_trip(&t);
}

#[test]
fn nb201_network_round_trips() {
    // Every nb201 op, `none` included; in the second cell node 1 has no incoming op (zeros).
    for genotype in [
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
        "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    ] {
        check_round_trip(&trained(genotype, NetKind::Cifar, 8, 1, (3, 16, 16)));
    }
}
