//! The multi-tensor SGD kernel of the CUDA optimiser step, checked on the CPU: the `.cu`
//! source's host build (nas-kernels' host emulation) runs the step's launch sequence, and the
//! parameters must equal those of the CPU optimiser (`Sgd` after `clip_grad_norm`) over several
//! steps, with and without the global-norm clip, in f64 and f32.

use candle_core::{DType, Device, Tensor, Var};
use nas_core::ops::cpu::Float;
use nas_core::ops::cuda::host;
use nas_core::ops::testing::check;
use nas_core::optim::{clip_grad_norm, Sgd, SgdConfig};
use rand::{Rng, SeedableRng};

/// `n` values uniform in [−1, 1) from `seed`, times `scale`.
fn uniform(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| scale * rng.random_range(-1.0..1.0)).collect()
}

fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn sgd_case<T: Float>(lens: &[usize], max_norm: f64, steps: usize) {
    let cfg = SgdConfig { lr: 0.05, momentum: 0.9, weight_decay: 3e-4 };
    let init: Vec<Vec<f64>> = lens.iter().enumerate().map(|(i, &n)| uniform(n, 90 + i as u64, 1.0)).collect();
    let vars: Vec<Var> = init.iter().map(|v| Var::new(v.as_slice(), &Device::Cpu).unwrap()).collect();
    let mut cpu = Sgd::new(vars.clone(), cfg);
    let mut params: Vec<Vec<T>> = init.iter().map(|v| cast::<T>(v)).collect();
    let mut moms: Vec<Vec<T>> = lens.iter().map(|&n| vec![T::zero(); n]).collect();
    for step in 0..steps {
        // Large gradients, so that the clip is active on some steps.
        let grads: Vec<Vec<f64>> =
            lens.iter().enumerate().map(|(i, &n)| uniform(n, 1000 * step as u64 + i as u64, 3.0)).collect();
        let mut cg: Vec<Option<Tensor>> =
            grads.iter().map(|g| Some(Tensor::new(g.as_slice(), &Device::Cpu).unwrap())).collect();
        if max_norm > 0.0 {
            clip_grad_norm(&mut cg, max_norm).unwrap();
        }
        cpu.step(&cg).unwrap();
        let hg: Vec<Vec<T>> = grads.iter().map(|g| cast::<T>(g)).collect();
        host::sgd_step(&mut params, &hg, &mut moms, (cfg.lr, cfg.momentum, cfg.weight_decay), max_norm).unwrap();
    }
    let tol = if T::DTYPE == DType::F64 { 1e-11 } else { 1e-4 };
    for (i, (p, v)) in params.iter().zip(&vars).enumerate() {
        let want = v.as_tensor().to_vec1::<f64>().unwrap();
        check(&format!("sgd {} tensors, clip {max_norm}, param {i}", lens.len()), p, &want, tol);
    }
}

#[test]
fn multi_tensor_sgd_equals_the_cpu_optimiser() {
    // More tensors than one launch takes, of very different sizes, with and without the clip.
    let lens: Vec<usize> = (0..250).map(|i| [1, 7, 300, 513, 33][i % 5]).collect();
    for max_norm in [0.0, 5.0, 1e6] {
        sgd_case::<f64>(&lens, max_norm, 2);
        sgd_case::<f32>(&lens[..40], max_norm, 2);
    }
}
