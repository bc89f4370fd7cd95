//! Drop path in retraining as DARTS does it (`train.py`, `model.py`, `utils.drop_path`): epoch
//! e of E trains with p = drop_path_prob·e/E, and in training the output of every op but the
//! identity (skip_connect at stride 1) is multiplied per sample by m/keep, m ~ Bernoulli(keep),
//! keep = 1 − p. A factorized reduction (skip_connect at stride 2) is not an identity and is
//! dropped too.
//!
//! The masks are checked against that rule by building the network that drop path should be
//! equivalent to: every droppable op's last (affine) batch norm scaled by its factor, which
//! scales the op's output by it, and the identities left alone.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use nas_core::metrics::CollectSink;
use nas_core::nn::Mode;
use nas_core::testing::max_rel_err;
use nas_core::ParamKind;
use nas_eval::{EvalModel, TrainConfig, Trainer};
use search_spaces::{EvalModelConfig, Genotype, NetKind, TaskShape};

/// DARTS_V2's normal cell, and a reduction cell of convolutions and skip connections (no
/// pooling, whose output has no batch norm to scale): skip_connect from c_{k-1} there is a
/// factorized reduction, from node 0 an identity.
const GENOTYPE: &str = r#"{
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "reduce": [["sep_conv_3x3", 0], ["skip_connect", 1], ["skip_connect", 2], ["dil_conv_3x3", 1],
               ["sep_conv_5x5", 0], ["skip_connect", 2], ["skip_connect", 2], ["dil_conv_5x5", 3]]
}"#;

/// L = 3: cell 0 is normal, cells 1 and 2 (L/3, 2L/3) reduce.
const LAYERS: usize = 3;
/// 6 droppable ops in the normal cell (8 edges, two identities), 5 in each reduction cell
/// (three identities from node 0): 6 + 5 + 5.
const DROPPABLE: usize = 16;

fn genotype() -> Genotype {
    Genotype::from_json_str(GENOTYPE).unwrap()
}

fn model(seed: u64) -> EvalModel {
    let cfg =
        EvalModelConfig { channels: 4, layers: LAYERS, auxiliary_weight: 0.4, drop_path: 0.2, net: NetKind::Cifar };
    EvalModel::new(&genotype(), &cfg, TaskShape { num_classes: 10, in_channels: 3 }, seed, &Device::Cpu).unwrap()
}

/// The droppable ops in forward order, each as the state_dict prefix of its last batch norm
/// (DARTS operations.py: `SepConv.op.7`, `DilConv.op.3`, `FactorizedReduce.bn`), by DARTS'
/// rule: stride 2 on a reduction cell's edges from c_{k-2} and c_{k-1}, and skip_connect at
/// stride 1 is the identity.
fn droppable_ops() -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(GENOTYPE).unwrap();
    let mut out = Vec::new();
    for cell in 0..LAYERS {
        let reduction = cell == LAYERS / 3 || cell == 2 * LAYERS / 3;
        let edges = v[if reduction { "reduce" } else { "normal" }].as_array().unwrap();
        for (e, edge) in edges.iter().enumerate() {
            let (op, input) = (edge[0].as_str().unwrap(), edge[1].as_u64().unwrap());
            let stride = if reduction && input < 2 { 2 } else { 1 };
            let last_bn = match (op, stride) {
                ("skip_connect", 1) => continue,
                ("skip_connect", _) => "bn",
                ("sep_conv_3x3" | "sep_conv_5x5", _) => "op.7",
                ("dil_conv_3x3" | "dil_conv_5x5", _) => "op.3",
                _ => unreachable!("{op}"),
            };
            out.push(format!("cells.{cell}._ops.{e}.{last_bn}"));
        }
    }
    out
}

#[test]
fn the_probability_ramps_linearly_over_the_epochs() {
    let mut c = TrainConfig::for_genotype(&genotype());
    (c.model.channels, c.model.layers, c.data.subset, c.data.batch_size) = (4, LAYERS, Some(32), 16);
    // The recipe: 600 epochs up to 0.2.
    let t = Trainer::new(c.clone().validate().unwrap()).unwrap();
    for (epoch, want) in [(0, 0.0), (1, 0.2 / 600.0), (150, 0.05), (300, 0.1), (599, 0.2 * 599.0 / 600.0)] {
        let p = t.drop_path_prob(epoch);
        assert!((p - want).abs() < 1e-15, "epoch {epoch}: {p} vs {want}");
    }
    // A run records the rate each epoch trained with, counting epochs from 0 as DARTS'
    // `for epoch in range(args.epochs)` does.
    c.epochs = 2;
    let mut t = Trainer::new(c.validate().unwrap()).unwrap();
    let mut sink = CollectSink::default();
    t.run(None, &mut sink, &AtomicBool::new(false)).unwrap();
    let rates: Vec<f64> = sink.epochs.iter().map(|r| r["drop_path_prob"].as_f64().unwrap()).collect();
    assert_eq!(rates, [0.0, 0.1]);
}

#[test]
fn masks_hold_one_row_per_non_identity_op_of_0_or_1_over_keep() {
    let m = model(0);
    assert_eq!(droppable_ops().len(), DROPPABLE);
    assert!(m.drop_path(0.0, 8, (0, 0, 0), &Device::Cpu).unwrap().is_none(), "p = 0: no drop path");
    for (p, scale) in [(0.5, 2.0f32), (0.2, 1.25)] {
        let d = m.drop_path(p, 64, (3, 1, 2), &Device::Cpu).unwrap().unwrap();
        assert_eq!(d.masks().dims(), [DROPPABLE, 64]);
        let v: Vec<f32> = d.masks().flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&f| f == 0.0 || f == scale), "p = {p}: factors other than 0 and {scale}");
        let n = v.len() as f64;
        let dropped = v.iter().filter(|&&f| f == 0.0).count() as f64 / n;
        assert!((dropped - p).abs() < 5.0 * (p * (1.0 - p) / n).sqrt(), "p = {p}: dropped {dropped}");
    }
    let masks = |key| m.drop_path(0.5, 8, key, &Device::Cpu).unwrap().unwrap().masks().to_vec2::<f32>().unwrap();
    assert_eq!(masks((1, 2, 3)), masks((1, 2, 3)), "the masks of a step are its key's");
    assert_ne!(masks((1, 2, 3)), masks((1, 2, 4)), "another step, other masks");
}

/// Every weight of `m` with the 1-D weights (batch-norm γ and β, classifier bias) set to
/// distinct values away from their initial 1 and 0, so scaling β is visible too.
fn varied_weights(m: &EvalModel) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (k, p) in m.weights().params().into_iter().enumerate() {
        // A copy: a variable cannot be set from a view of its own storage.
        let mut t = p.value().unwrap().copy().unwrap();
        if p.kind == ParamKind::Weight && p.dims().len() == 1 {
            let n = p.dims()[0];
            let v: Vec<f32> =
                (0..n).map(|i| 0.6 + 0.05 * ((i * 7 + k * 3) % 13) as f32 - 0.3 * (k % 2) as f32).collect();
            t = Tensor::from_vec(v, n, &Device::Cpu).unwrap();
        }
        out.insert(p.name, t);
    }
    out
}

/// In training at p = 0.5, the network with drop path equals the one without it whose
/// droppable ops have their output scaled by their factor (0: dropped, 2: kept) and whose
/// identities are untouched. One sample, so the factors are the whole batch's.
#[test]
fn drop_path_scales_every_op_but_the_identity() {
    let m = model(1);
    let weights = varied_weights(&m);
    let n = 3 * 32 * 32;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect(),
        (1, 3, 32, 32),
        &Device::Cpu,
    )
    .unwrap();
    let ops = droppable_ops();
    let mut seen = [false; 2];
    for step in 0..3 {
        m.weights().load(&weights, false).unwrap();
        let d = m.drop_path(0.5, 1, (9, 4, step), &Device::Cpu).unwrap().unwrap();
        let (logits, aux) = m.forward(&x, Mode::TRAIN_WEIGHTS, Some(&d)).unwrap();

        let factors: Vec<f32> = d.masks().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(factors.len(), ops.len());
        let mut scaled = weights.clone();
        for (prefix, &f) in ops.iter().zip(&factors) {
            seen[(f > 0.0) as usize] = true;
            for what in ["weight", "bias"] {
                let name = format!("{prefix}.{what}");
                let t = (&weights[&name] * f as f64).unwrap();
                scaled.insert(name, t);
            }
        }
        m.weights().load(&scaled, false).unwrap();
        let (want, want_aux) = m.forward(&x, Mode::TRAIN_WEIGHTS, None).unwrap();
        let e = max_rel_err(&logits, &want).unwrap();
        assert!(e < 1e-5, "step {step}: logits rel err {e} (factors {factors:?})");
        let e = max_rel_err(&aux.unwrap(), &want_aux.unwrap()).unwrap();
        assert!(e < 1e-5, "step {step}: auxiliary logits rel err {e}");
    }
    assert_eq!(seen, [true, true], "both dropped and kept ops were exercised");
    // Outside training the masks are ignored.
    m.weights().load(&weights, false).unwrap();
    let d = m.drop_path(0.5, 1, (9, 4, 0), &Device::Cpu).unwrap().unwrap();
    let with = m.forward(&x, Mode::EVAL, Some(&d)).unwrap().0;
    let without = m.forward(&x, Mode::EVAL, None).unwrap().0;
    assert_eq!(with.to_vec2::<f32>().unwrap(), without.to_vec2::<f32>().unwrap());
}
