//! Retraining steps on CUDA against the CPU: DARTS_V2 with the auxiliary head and drop path,
//! two clipped SGD steps from the same weights and batch leave every weight and running
//! statistic within 1e-3 of the CPU's, relative to the size of the updates, and the losses
//! within 1e-3. Runs only with NAS_TEST_DEVICE=cuda.
#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor};
use nas_core::optim::{Sgd, SgdConfig};
use nas_core::testing::{cuda_test_device, update_rel_err};
use nas_eval::{train_step, EvalModel, LossConfig};
use search_spaces::{EvalModelConfig, Genotype, NetKind, TaskShape};

fn run(dev: &Device) -> (EvalModel, Vec<f32>) {
    let g = Genotype::load("DARTS_V2").unwrap();
    let cfg = EvalModelConfig { channels: 8, layers: 5, auxiliary_weight: 0.4, drop_path: 0.2, net: NetKind::Cifar };
    let model = EvalModel::new(&g, &cfg, TaskShape { num_classes: 10, in_channels: 3 }, 4, dev).unwrap();
    let mut opt = Sgd::new(model.weights().weights(), SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 });
    let n = 8 * 3 * 32 * 32;
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let x = Tensor::from_vec(v, (8, 3, 32, 32), dev).unwrap();
    let y = Tensor::from_vec((0..8u32).map(|i| i % 10).collect::<Vec<_>>(), 8, dev).unwrap();
    let mut losses = Vec::new();
    for step in 0..2 {
        let drop = model.drop_path(0.2, 8, (4, 0, step), dev).unwrap();
        let (loss, _) = train_step(
            &model,
            &mut opt,
            &x,
            &y,
            LossConfig { aux_weight: 0.4, label_smoothing: 0.0 },
            5.0,
            drop.as_ref(),
        )
        .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
    }
    (model, losses)
}

#[test]
fn retrain_step_on_cuda() {
    let Some(dev) = cuda_test_device() else { return };
    let g = Genotype::load("DARTS_V2").unwrap();
    let cfg = EvalModelConfig { channels: 8, layers: 5, auxiliary_weight: 0.4, drop_path: 0.2, net: NetKind::Cifar };
    let init = EvalModel::new(&g, &cfg, TaskShape { num_classes: 10, in_channels: 3 }, 4, &Device::Cpu).unwrap();
    let (cpu, lc) = run(&Device::Cpu);
    let (gpu, lg) = run(&dev);
    for (a, b) in lc.iter().zip(&lg) {
        assert!(((a - b) / a).abs() < 1e-3, "losses {lc:?} vs {lg:?}");
    }
    let all = |m: &EvalModel| m.weights().named_tensors("");
    for (((name, b), (_, c)), (_, g)) in all(&init).into_iter().zip(all(&cpu)).zip(all(&gpu)) {
        let e = update_rel_err(&b, &c, &g).unwrap();
        assert!(e < 1e-3, "{name} differs by {e:e} of its update");
    }
}
